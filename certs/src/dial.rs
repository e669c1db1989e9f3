//! Dialling the hub: a client endpoint, trying each hub address in turn, and the opening exchange,
//! with every failure turned into words a sysadmin can act on.
//!
//! Under TLS 1.3 the server's verdict on our certificate arrives after our side of the handshake, so
//! `connect` can succeed for a revoked or foreign client; a client counts itself connected only when
//! the hub's `Welcome` arrives.

use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::MAX_CONTROL_FRAME;
use flotilla_wire::msg::{ClientOpen, Hello, Refusal, ServerOpen, Welcome};
use flotilla_wire::{ErrorCode, HUB_SERVER_NAME};
use quinn::{ClientConfig, Endpoint, IdleTimeout, TransportConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Idle timeout on the client side; matches the hub's default so both notice a dead link together.
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Keep-alive: a ping after 2.5 s without a packet from the hub. Besides holding the connection
/// open (six chances within the idle timeout), it bounds how long an agent takes to learn that a
/// crashed hub restarted: a restarted hub can only answer a packet with its stateless reset, and
/// an idle agent sends one at its next sample or ping. At half the hub's default metrics interval
/// (5 s) an agent sends one ping between two samples: 0.4 packets a second each way per idle
/// agent instead of 0.2 at 5 s (40,000 a second each way at 100,000 agents; docs/benchmarks.md
/// has the measured hub CPU). A longer metrics interval adds pings: 23 a minute at a 60 s interval.
const KEEP_ALIVE: Duration = Duration::from_millis(2500);
/// Time for one address's handshake and welcome.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the hub could not be reached or refused us.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// No address could be resolved or reached.
    #[error("hub unreachable: {0}")]
    Unreachable(String),
    /// The hub refused at the application level (revoked, version, token…).
    #[error("hub refused: {}", .0.message)]
    Refused(Refusal),
    /// TLS failed: the hub presented another CA, or refused our certificate.
    #[error("{0}")]
    Tls(String),
    /// The hub broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The hub answered with a stateless reset: it restarted and lost this connection.
    #[error("hub restarted: it no longer knows this connection (stateless reset)")]
    HubRestarted,
    /// A local failure (socket, TLS configuration).
    #[error("local error: {0}")]
    Local(String),
}

impl DialError {
    /// The refusal code, if the hub refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused(r) => Some(r.code),
            _ => None,
        }
    }
}

/// Transport settings of a client's control connection (agents' and operators' alike): keep-alives
/// so the hub sees us, an idle timeout to notice it die, and small packets. No path MTU discovery:
/// it only pays for bulk data, which travels on a bulk lane ([`bulk_transport`]); on a control
/// connection it costs a probe burst per connect (a reconnect storm of thousands) and a send
/// buffer of a full jumbo batch that quinn never gives back.
pub fn client_transport() -> Arc<TransportConfig> {
    let mut t = client_common();
    t.mtu_discovery_config(None);
    Arc::new(t)
}

/// Settings every client connection shares: keep-alives, idle timeout, congestion control.
fn client_common() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(IdleTimeout::try_from(CLIENT_IDLE_TIMEOUT).ok());
    t.datagram_receive_buffer_size(None);
    t.initial_rtt(Duration::from_millis(10));
    t.congestion_controller_factory(congestion_control());
    t
}

/// Transport settings of a bulk lane: path MTU discovery up to jumbo frames, segmentation offload
/// and fewer acknowledgements ([`bulk_ack_frequency`]), for fewer, larger packets and fewer
/// syscalls per byte. Keep-alives only hold the lane while a transfer waits on a slow party; the
/// owner closes it when idle.
pub fn bulk_transport() -> Arc<TransportConfig> {
    let mut t = client_common();
    t.mtu_discovery_config(Some(mtu_discovery()));
    t.ack_frequency_config(Some(bulk_ack_frequency()));
    Arc::new(t)
}

/// First bytes of a bulk lane's initial destination connection ID. The hub reads them before the
/// handshake (the only point where quinn lets it choose transport settings per connection) to give
/// the connection [`bulk_transport`]'s counterpart. The remaining 18 bytes are random, well above
/// RFC 9000's 8 unpredictable bytes. A control connection whose random ID happens to start with
/// the tag (1 in 65,536) merely gets bulk settings; the tag grants nothing else.
pub const BULK_CID_TAG: [u8; 2] = [0xfb, 0x17];
/// Length of the connection IDs clients choose for their first packet (QUIC's maximum).
const INITIAL_CID_LEN: usize = 20;

/// Whether a client's initial destination connection ID marks a bulk lane.
pub fn is_bulk_cid(cid: &[u8]) -> bool {
    cid.len() == INITIAL_CID_LEN && cid[..BULK_CID_TAG.len()] == BULK_CID_TAG
}

/// A fresh initial connection ID with [`BULK_CID_TAG`].
fn bulk_cid() -> quinn::ConnectionId {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; INITIAL_CID_LEN];
    bytes[..BULK_CID_TAG.len()].copy_from_slice(&BULK_CID_TAG);
    // The system RNG does not fail on the platforms we build for; if it did, the tag still makes
    // a valid (if predictable) ID, and the handshake's keys do not depend on it for secrecy.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes[BULK_CID_TAG.len()..]);
    quinn::ConnectionId::new(&bytes)
}

/// Datagrams quinn (0.11) puts in one segmentation-offload batch: its `MAX_TRANSMIT_SEGMENTS`.
const GSO_BATCH: u16 = 10;

/// Largest UDP payload the kernel sends in one datagram, segmentation offload batches included:
/// 65,535 less the IPv4 and UDP headers.
const MAX_UDP_DATAGRAM: u16 = 65_507;

/// Linux hands a segmentation-offload batch on as one buffer only while the whole buffer, with a
/// 14-byte link header and the IP and UDP headers, stays under the device's GSO limit (65,536 on
/// loopback and most NICs: `gso_max_size`, `gso_ipv4_max_size`). A batch at or past it is cut into
/// single datagrams in software at transmit, so the receiver's GRO never sees a batch either.
const GSO_MAX_SIZE: u32 = 65_536;
/// Link, IPv6 (the larger IP header) and UDP headers the GSO limit counts.
const GSO_HEADERS: u32 = 14 + 40 + 8;

/// Largest UDP payload path MTU discovery probes for: as large as a whole offload batch of
/// [`GSO_BATCH`] packets still fits one datagram *and* the kernel's GSO limit (6,547 bytes; a
/// jumbo frame would allow 8,952).
/// - The datagram limit: quinn-proto 0.11 does not cap a batch at it, and quinn-udp drops a batch
///   the kernel refuses with EMSGSIZE without a word (it expects that only of MTU probes): at
///   8,952-byte packets, batches of ten went nowhere, quinn counted them lost, took the losses
///   for an MTU black hole and fell back to 1,200-byte packets for the rest of the transfer, at
///   half the speed.
/// - The GSO limit: at 6,550 bytes (the datagram limit alone) a batch of ten was 65,542 bytes to
///   the kernel, which segmented every batch in software, and every receiver (the hub, the
///   destination agent) took ten datagrams per batch, each with its own receive path and
///   `recvmmsg` slot; at 6,547 it arrives as one 65,470-byte datagram (measured on loopback with
///   a UDP_GRO socket, IPv4 and IPv6; see docs/benchmarks.md).
///
/// On 1500-byte paths discovery settles at quinn's usual 1452; on jumbo LANs and loopback fewer,
/// larger packets cut per-packet crypto and syscalls for bulk transfers.
pub const MAX_UDP_PAYLOAD: u16 = ((GSO_MAX_SIZE - 1 - GSO_HEADERS) / GSO_BATCH as u32) as u16;

// A full offload batch at the largest packet size must fit one datagram and stay under the
// kernel's GSO limit with its headers.
const _: () = assert!(MAX_UDP_PAYLOAD as u32 * GSO_BATCH as u32 <= MAX_UDP_DATAGRAM as u32);
const _: () = assert!(MAX_UDP_PAYLOAD as u32 * GSO_BATCH as u32 + GSO_HEADERS < GSO_MAX_SIZE);
const _: () = assert!(MAX_UDP_PAYLOAD == 6_547);

/// Wait before probing again after quinn took losses of large packets for a black hole: losses
/// on a busy host are usually a full socket buffer, not the path, so try again soon rather than
/// quinn's default minute at 1200-byte packets.
const BLACK_HOLE_COOLDOWN: Duration = Duration::from_secs(10);

/// Path MTU discovery up to [`MAX_UDP_PAYLOAD`]; the hub uses the same.
pub fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD)
        .black_hole_cooldown(BLACK_HOLE_COOLDOWN);
    mtu
}

/// Initial congestion window: RFC 9002's ten packets, counted at [`MAX_UDP_PAYLOAD`] instead of
/// quinn's 1200-byte start (12,000 bytes). In that smaller window one path-MTU probe in flight and
/// one full packet leave no room, and quinn-proto 0.11.19 holds a CONNECTION_CLOSE back while the
/// window is full, for good, since a closed connection processes no more acks (quinn-rs/quinn#2785,
/// fixed upstream by #2787, not yet released): a hub stopping just after an agent connected never
/// told it, and the agent held the dead link until its 15 s idle timeout. A close while a bulk
/// transfer fills the window can still be held back until quinn ships that fix.
pub const INITIAL_WINDOW: u64 = 10 * MAX_UDP_PAYLOAD as u64;

// A probe of the largest size in flight, plus one full packet and the one being built, must fit.
const _: () = assert!(INITIAL_WINDOW > 3 * MAX_UDP_PAYLOAD as u64);

/// Congestion control of hub and clients alike: quinn's CUBIC with [`INITIAL_WINDOW`].
pub fn congestion_control() -> Arc<quinn::congestion::CubicConfig> {
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window(INITIAL_WINDOW);
    Arc::new(cubic)
}

/// A client endpoint on an ephemeral port of the right address family.
pub fn client_endpoint(ipv6: bool) -> Result<Endpoint, DialError> {
    let bind: SocketAddr = if ipv6 { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(|_| DialError::Local("bind address".into()))?;
    let socket =
        udp_socket(bind).map_err(|e| DialError::Local(format!("cannot open UDP socket: {e}")))?;
    Endpoint::new(
        endpoint_config(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| DialError::Local(format!("cannot open UDP socket: {e}")))
}

/// Kernel buffers of a client's UDP socket: the default 208 KiB overflows while a transfer
/// arrives at a few hundred MB/s, and the losses make quinn's black-hole detection fall back to
/// 1200-byte packets. The kernel takes memory for them only while data waits.
const CLIENT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// A UDP socket bound to `bind` with [`CLIENT_SOCKET_BUFFER`]-byte buffers where the kernel allows.
fn udp_socket(bind: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    // Smaller buffers only cost speed: carry on if the kernel refuses.
    let _ = socket.set_recv_buffer_size(CLIENT_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(CLIENT_SOCKET_BUFFER);
    socket.bind(&bind.into())?;
    Ok(socket.into())
}

/// Endpoint settings of hub and clients alike: accept datagrams up to [`MAX_UDP_PAYLOAD`], so
/// path MTU discovery may use them where the path allows (quinn's default stops at 1480).
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    // MAX_UDP_PAYLOAD is within the range quinn accepts (1200..=65527), so this cannot fail.
    let _ = config.max_udp_payload_size(MAX_UDP_PAYLOAD);
    config
}

/// Endpoint settings of a hub: [`endpoint_config`], plus stateless resets keyed by
/// `reset_secret`, a secret the hub keeps across restarts. A hub restarted after a crash (or
/// `kill -9`) has lost every connection; with the same secret it answers the first packet of each
/// of its former peers with a reset they recognise (RFC 9000 §10.3), so they reconnect at once
/// instead of waiting out their idle timeout.
pub fn hub_endpoint_config(reset_secret: &[u8]) -> quinn::EndpointConfig {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_secret);
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    // MAX_UDP_PAYLOAD is within the range quinn accepts (1200..=65527), so this cannot fail.
    let _ = config.max_udp_payload_size(MAX_UDP_PAYLOAD);
    // quinn's default generator signs its IDs with a key drawn per process, and drops packets for
    // IDs the new process did not sign before it would reset them: a restarted hub would reset
    // nobody. Plain random IDs are valid to any process.
    config.cid_generator(|| Box::new(RandomCids));
    // quinn sends at most one reset per 20 ms by default, endpoint-wide: 50 agents a second, so
    // 5,000 agents would learn of a restart over 100 s. A reset is always smaller than the packet
    // that prompted it, so it amplifies nothing; the limit only saved CPU, and an HMAC is cheap.
    config.min_reset_interval(Duration::ZERO);
    config
}

/// Length of the connection IDs a hub issues: quinn's default, 64 random bits.
const HUB_CID_LEN: usize = 8;

/// Connection IDs of [`HUB_CID_LEN`] random bytes from the system RNG.
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; HUB_CID_LEN];
        // The system RNG does not fail on the platforms we build for (see `bulk_cid`).
        let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        HUB_CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Turns a connection error into a dial error with advice.
pub fn explain(err: &quinn::ConnectionError) -> DialError {
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let message = String::from_utf8_lossy(&close.reason).into_owned();
            match ErrorCode::from_u32(close.error_code.into_inner()) {
                // Code 0 without a reason: the hub dropped the connection (it timed out on us).
                Some(ErrorCode::Ok) if message.is_empty() => {
                    DialError::Unreachable("hub dropped the connection".into())
                }
                Some(code) => DialError::Refused(Refusal {
                    code,
                    message: if message.is_empty() {
                        code.describe().into()
                    } else {
                        message
                    },
                }),
                None => DialError::Protocol(format!(
                    "closed with unknown code {}: {message}",
                    close.error_code
                )),
            }
        }
        quinn::ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            // QUIC carries TLS alerts as 0x100 + alert number (RFC 9001 §4.8).
            if (0x100..0x200).contains(&code) {
                DialError::Tls(tls_alert_advice((code - 0x100) as u8))
            } else if code == 0x2 {
                DialError::Unreachable(
                    "hub busy: it refused the connection (too many handshakes in flight)".into(),
                )
            } else {
                DialError::Protocol(format!("connection closed by hub: {close}"))
            }
        }
        quinn::ConnectionError::TransportError(e) => {
            DialError::Tls(format!("TLS handshake failed: {e}"))
        }
        quinn::ConnectionError::Reset => DialError::HubRestarted,
        quinn::ConnectionError::TimedOut => {
            DialError::Unreachable("timed out (hub down, wrong address, or UDP blocked)".into())
        }
        other => DialError::Unreachable(other.to_string()),
    }
}

/// What a TLS alert from the hub means for us.
fn tls_alert_advice(alert: u8) -> String {
    let what = match alert {
        // Every fleet CA has the same subject, so a certificate from another fleet finds an issuer
        // by name and fails its signature check: decrypt_error (51) rather than unknown_ca (48).
        42 | 46 | 48 | 51 => {
            "the hub does not trust our certificate: it was issued by another fleet's CA"
        }
        44 => "the hub says our certificate is revoked",
        45 => "our certificate has expired (or a clock is wrong)",
        116 => "the hub wants a client certificate: enrol first",
        120 => {
            "the server does not speak the Flotilla protocol (ALPN mismatch): wrong address or port?"
        }
        _ => "the TLS handshake failed",
    };
    format!("{what} (TLS alert {alert})")
}

/// Resolves `host:port`.
async fn resolve(hub: &str) -> Result<Vec<SocketAddr>, DialError> {
    tokio::net::lookup_host(hub)
        .await
        .map(|it| it.collect())
        .map_err(|e| DialError::Unreachable(format!("cannot resolve {hub}: {e}")))
}

/// Connects to the first hub address that answers.
pub async fn connect(
    endpoint: &Endpoint,
    hubs: &[String],
    config: ClientConfig,
) -> Result<quinn::Connection, DialError> {
    let mut last = DialError::Unreachable("no hub address configured".into());
    for hub in hubs {
        let addrs = match resolve(hub).await {
            Ok(a) => a,
            Err(e) => {
                last = e;
                continue;
            }
        };
        for addr in addrs {
            let connecting = match endpoint.connect_with(config.clone(), addr, HUB_SERVER_NAME) {
                Ok(c) => c,
                Err(e) => {
                    last = DialError::Unreachable(format!("{addr}: {e}"));
                    continue;
                }
            };
            match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) => last = explain(&e),
                Err(_) => {
                    last = DialError::Unreachable(format!(
                        "{addr}: no answer within {} s",
                        DIAL_TIMEOUT.as_secs()
                    ))
                }
            }
            if matches!(last, DialError::Tls(_)) {
                return Err(last);
            }
        }
    }
    Err(last)
}

/// Sends `open` on a new control stream and reads the hub's answer.
pub async fn open(
    conn: &quinn::Connection,
    open: &ClientOpen,
) -> Result<(quinn::SendStream, quinn::RecvStream, ServerOpen), DialError> {
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| explain(&e))?;
        write_frame(&mut send, open, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| lost(conn, e))?;
        match read_frame::<ServerOpen, _>(&mut recv, MAX_CONTROL_FRAME).await {
            Ok(Some(ServerOpen::Refused(r))) => Err(DialError::Refused(r)),
            Ok(Some(answer)) => Ok((send, recv, answer)),
            Ok(None) => Err(conn
                .close_reason()
                .map(|e| explain(&e))
                .unwrap_or_else(|| DialError::Protocol("hub closed the control stream".into()))),
            Err(e) => Err(lost(conn, e)),
        }
    };
    match tokio::time::timeout(DIAL_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(DialError::Unreachable(
            "hub accepted the connection but did not answer in time".into(),
        )),
    }
}

fn lost(conn: &quinn::Connection, e: flotilla_wire::io::FrameError) -> DialError {
    match conn.close_reason() {
        Some(reason) => explain(&reason),
        None => DialError::Protocol(e.to_string()),
    }
}

/// Connects and says hello; returns the connection, the control stream and the welcome.
pub async fn hello(
    endpoint: &Endpoint,
    hubs: &[String],
    config: ClientConfig,
    hello: Hello,
) -> Result<
    (
        quinn::Connection,
        quinn::SendStream,
        quinn::RecvStream,
        Welcome,
    ),
    DialError,
> {
    welcomed(endpoint, hubs, config, ClientOpen::Hello(hello)).await
}

/// Connects, sends `opening` and expects a welcome.
async fn welcomed(
    endpoint: &Endpoint,
    hubs: &[String],
    config: ClientConfig,
    opening: ClientOpen,
) -> Result<
    (
        quinn::Connection,
        quinn::SendStream,
        quinn::RecvStream,
        Welcome,
    ),
    DialError,
> {
    let conn = connect(endpoint, hubs, config).await?;
    match open(&conn, &opening).await? {
        (send, recv, ServerOpen::Welcome(w)) => Ok((conn, send, recv, w)),
        _ => Err(DialError::Protocol(
            "hub answered with something other than welcome".into(),
        )),
    }
}

/// A quinn client configuration for an enrolled identity's control connection.
pub fn identity_config(identity: &crate::Identity) -> Result<ClientConfig, crate::CertError> {
    let mut cfg = ClientConfig::new(crate::tls::client_config(identity)?);
    cfg.transport_config(client_transport());
    Ok(cfg)
}

/// A quinn client configuration for an enrolled identity's bulk connections: [`bulk_transport`],
/// and the initial connection ID that tells the hub so.
pub fn identity_bulk_config(identity: &crate::Identity) -> Result<ClientConfig, crate::CertError> {
    let mut cfg = ClientConfig::new(crate::tls::client_config(identity)?);
    cfg.transport_config(bulk_transport());
    cfg.initial_dst_cid_provider(Arc::new(bulk_cid));
    Ok(cfg)
}

/// Opens an agent's bulk lane: connects with `config` (from [`identity_bulk_config`]) and sends
/// [`ClientOpen::Bulk`]; the control connection must be up, or the hub refuses.
pub async fn bulk_lane(
    endpoint: &Endpoint,
    hubs: &[String],
    config: ClientConfig,
    hello: Hello,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), DialError> {
    let (conn, send, recv, _) = welcomed(endpoint, hubs, config, ClientOpen::Bulk(hello)).await?;
    Ok((conn, send, recv))
}

/// Whether any hub address is IPv6 (to bind the client socket in the right family).
pub fn wants_ipv6(hubs: &[String]) -> bool {
    hubs.first().is_some_and(|h| h.starts_with('['))
}

/// Ack-eliciting packets a bulk lane's receiver may take before it must acknowledge, and the
/// longest it may wait: asked of the peer with the ACK frequency extension (which quinn speaks on
/// both ends). By default a receiver acknowledges every second ack-eliciting packet (in practice
/// about once per batch it reads), and every ACK is a datagram the source or the hub must
/// receive, decrypt and process; at most one per twenty packets or 2 ms measured 4.5 % faster over
/// seven interleaved rounds (docs/benchmarks.md). Only bulk lanes ask for it: control connections
/// carry small exchanges whose latency an ACK delay would add to.
pub fn bulk_ack_frequency() -> quinn::AckFrequencyConfig {
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(BULK_ACK_THRESHOLD))
        .max_ack_delay(Some(BULK_MAX_ACK_DELAY));
    ack
}

/// See [`bulk_ack_frequency`].
const BULK_ACK_THRESHOLD: u32 = 19;
/// See [`bulk_ack_frequency`].
const BULK_MAX_ACK_DELAY: Duration = Duration::from_millis(2);

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
    use std::io::IoSliceMut;

    /// One offload batch of full-size packets reaches a GRO receiver as one buffer, over IPv4 and
    /// IPv6 loopback, through the same quinn-udp calls the endpoints use. At 6,550-byte packets
    /// the kernel split every batch in software (see [`MAX_UDP_PAYLOAD`]); this fails then.
    #[test]
    fn a_full_offload_batch_reaches_the_receiver_whole() {
        let mut bound = 0;
        for local in ["127.0.0.1:0", "[::1]:0"] {
            // A host without IPv6 loopback checks IPv4 only.
            let (Ok(rx), Ok(tx)) = (
                std::net::UdpSocket::bind(local),
                std::net::UdpSocket::bind(local),
            ) else {
                continue;
            };
            bound += 1;
            let rx_state = UdpSocketState::new((&rx).into()).expect("receiver state");
            let tx_state = UdpSocketState::new((&tx).into()).expect("sender state");
            if tx_state.max_gso_segments() < usize::from(GSO_BATCH)
                || rx_state.gro_segments() < usize::from(GSO_BATCH)
            {
                continue; // no segmentation offload on this kernel: nothing to split
            }
            let batch = vec![7u8; usize::from(MAX_UDP_PAYLOAD) * usize::from(GSO_BATCH)];
            let transmit = Transmit {
                destination: rx.local_addr().expect("address"),
                ecn: None,
                contents: &batch,
                segment_size: Some(usize::from(MAX_UDP_PAYLOAD)),
                src_ip: None,
            };
            tx_state.send((&tx).into(), &transmit).expect("send");
            rx.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut buf = vec![0u8; usize::from(MAX_UDP_DATAGRAM) + 1024];
            let mut meta = [RecvMeta::default()];
            let n = rx_state
                .recv((&rx).into(), &mut [IoSliceMut::new(&mut buf)], &mut meta)
                .expect("receive");
            assert_eq!(n, 1);
            assert_eq!(
                meta[0].len,
                batch.len(),
                "{local}: the batch arrived split into {}-byte datagrams",
                meta[0].stride
            );
            assert_eq!(meta[0].stride, usize::from(MAX_UDP_PAYLOAD));
        }
        assert!(bound > 0, "no loopback address to test on");
    }
}
