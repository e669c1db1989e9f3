//! The hub's QUIC endpoint: a UDP socket with large buffers and the transport settings that decide
//! how fast a dead peer is noticed and how much memory each connection may take.

use crate::{HubError, HubPaths};
use quinn::{Endpoint, IdleTimeout, TransportConfig, VarInt};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Receive buffer the hub asks the kernel for. A reconnect burst of 5,000 agents overflowed 4 MiB by
/// thousands of datagrams (the kernel charges each 1,200-byte Initial a few KiB of skb), and every
/// lost handshake packet waits out a backed-off retransmission timer: the stragglers of a restart.
/// The buffer is a limit, not an allocation: memory is only taken while datagrams queue.
pub(crate) const RECV_BUFFER: usize = 32 * 1024 * 1024;
/// Send buffer: replies are paced by the hub itself, so the common 4 MiB cap is plenty.
const SEND_BUFFER: usize = 4 * 1024 * 1024;
/// Per-stream receive window: enough for a metrics back-fill batch or exec output chunk in flight;
/// memory is only taken when data actually waits, so idle agents cost nothing here.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Whole-connection receive window: bounds what one peer can make the hub buffer.
const CONN_WINDOW: u32 = 1024 * 1024;
/// Per-stream receive window of a bulk lane: a transfer's source may have this much unread at the
/// hub. At 256 KiB the source ran dry whenever the round trip under load passed about 0.8 ms (256
/// KiB at 300 MB/s); 1 MiB measured 9 % faster in interleaved runs (docs/benchmarks.md). The hub
/// reads a transfer only as fast as its destination takes it, so this is also what one stalled
/// destination can leave buffered here: 64 MiB at `MAX_TRANSFERS` (64) all stalled at once.
const BULK_STREAM_WINDOW: u32 = 1024 * 1024;
/// Whole-connection receive and send window of a bulk lane: one transfer at full window and room
/// for a second.
const BULK_CONN_WINDOW: u32 = 2 * 1024 * 1024;
/// Streams a peer may have open at once: one per exec and transfer plus the long-lived ones.
const MAX_BIDI_STREAMS: u32 = 64;
/// Unidirectional streams (metrics, snapshots) a peer may have open at once.
const MAX_UNI_STREAMS: u32 = 8;

/// Settings every connection shares.
fn common(idle_timeout_s: u32) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
        idle_timeout_s * 1000,
    ))));
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(VarInt::from_u32(CONN_WINDOW));
    t.send_window(u64::from(CONN_WINDOW));
    t.max_concurrent_bidi_streams(VarInt::from_u32(MAX_BIDI_STREAMS));
    t.max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS));
    t.datagram_receive_buffer_size(None);
    // Clients send keep-alives; the hub only listens, so 20,000 idle agents cost it no timers' worth
    // of packets of its own.
    t.keep_alive_interval(None);
    t.initial_rtt(Duration::from_millis(10));
    t.congestion_controller_factory(flotilla_certs::dial::congestion_control());
    t
}

/// Transport settings of control connections, the one every agent and operator keeps open: small
/// packets, no path MTU discovery. Discovery pays only for bulk data, and on tens of thousands of
/// idle connections it cost a jumbo send buffer each (quinn keeps the largest batch it ever built)
/// and a burst of probes per connect, which turned a hub restart into a minute-long reconnect
/// storm. Segmentation offload stays: an idle connection never builds more than a small batch,
/// and exec output streams several times faster with it.
pub(crate) fn transport(idle_timeout_s: u32) -> Arc<TransportConfig> {
    let mut t = common(idle_timeout_s);
    t.mtu_discovery_config(None);
    Arc::new(t)
}

/// Transport settings of bulk lanes (told apart by their initial connection ID, see
/// [`flotilla_certs::dial::is_bulk_cid`]): path MTU discovery to jumbo packets, segmentation
/// offload, larger flow-control windows and fewer acknowledgements from the peer, for transfers.
pub(crate) fn bulk_transport(idle_timeout_s: u32) -> Arc<TransportConfig> {
    let mut t = common(idle_timeout_s);
    t.mtu_discovery_config(Some(flotilla_certs::dial::mtu_discovery()));
    t.stream_receive_window(VarInt::from_u32(BULK_STREAM_WINDOW));
    t.receive_window(VarInt::from_u32(BULK_CONN_WINDOW));
    t.send_window(u64::from(BULK_CONN_WINDOW));
    t.ack_frequency_config(Some(flotilla_certs::dial::bulk_ack_frequency()));
    Arc::new(t)
}

/// Sets the receive buffer to [`RECV_BUFFER`]: past `net.core.rmem_max` where the process may
/// (`SO_RCVBUFFORCE` needs `CAP_NET_ADMIN`, which a root hub has and a least-privilege service does
/// not), else up to that cap, with a warning that says how to raise it.
fn enlarge_recv_buffer(socket: &socket2::Socket) {
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
        tracing::warn!(error = %e, "could not enlarge the UDP receive buffer");
    }
    #[cfg(target_os = "linux")]
    if usable_recv_buffer(socket) < RECV_BUFFER {
        use std::os::fd::AsRawFd;
        let size = libc::c_int::try_from(RECV_BUFFER).unwrap_or(libc::c_int::MAX);
        // SAFETY: a valid socket descriptor and a pointer to an int that outlives the call.
        let _ = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                std::ptr::addr_of!(size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    let got = usable_recv_buffer(socket);
    if got < RECV_BUFFER {
        tracing::warn!(
            wanted_kib = RECV_BUFFER / 1024,
            got_kib = got / 1024,
            "UDP receive buffer capped by the kernel: a reconnect burst of thousands of agents will \
             lose handshake packets; raise it with `sysctl -w net.core.rmem_max={}` (see docs/deploy.md)",
            RECV_BUFFER
        );
    }
}

/// The receive buffer as set: Linux reports twice the size asked for (the other half is its
/// allowance for bookkeeping), other systems report it as is.
fn usable_recv_buffer(socket: &socket2::Socket) -> usize {
    let reported = socket.recv_buffer_size().unwrap_or(0);
    if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    }
}

/// Bytes of the stateless reset secret: a full-strength HMAC-SHA256 key.
const RESET_SECRET_LEN: usize = 32;

/// The secret that keys the hub's stateless resets, from `paths.reset_key()` (0600), made there on
/// first use: `hubd init` makes it, and a hub initialised before resets existed makes it at its
/// next start. It must outlive the process: a hub restarted with another secret sends resets its
/// former peers cannot recognise, and they sit out their idle timeout.
pub(crate) fn reset_secret(paths: &HubPaths) -> Result<Vec<u8>, HubError> {
    kept_secret::<RESET_SECRET_LEN>(
        &paths.reset_key(),
        "stateless reset key",
        "agents of the running hub then wait out their idle timeout once",
    )
}

/// The key that seals the hub's TLS session tickets, from `paths.ticket_key()` (0600), made there
/// on first use like the reset key. It must outlive the process, or a restarted hub cannot open
/// the tickets its agents hold and each of them runs a full handshake (see
/// [`flotilla_certs::tickets`]).
pub(crate) fn session_tickets(
    paths: &HubPaths,
) -> Result<Arc<flotilla_certs::tickets::SessionTickets>, HubError> {
    let key = kept_secret::<{ flotilla_certs::tickets::TICKET_KEY_LEN }>(
        &paths.ticket_key(),
        "session ticket key",
        "agents then run one full handshake each at their next connect",
    )?;
    let tickets = flotilla_certs::tickets::SessionTickets::new(
        &key[..flotilla_certs::tickets::TICKET_KEY_LEN],
    )?;
    Ok(Arc::new(tickets))
}

/// Reads a secret of at least `LEN` bytes the hub keeps across restarts at `path`, making it
/// (0600, from the system RNG) if it is missing. `cost` says what replacing a bad one costs.
fn kept_secret<const LEN: usize>(path: &Path, what: &str, cost: &str) -> Result<Vec<u8>, HubError> {
    if !path.exists() {
        let secret: [u8; LEN] = flotilla_certs::random_bytes();
        flotilla_certs::write_private(path, &secret)?;
        tracing::info!(path = %path.display(), "created the {what}");
    }
    let secret = flotilla_certs::read_private(path)?;
    if secret.len() < LEN {
        return Err(HubError::Config(format!(
            "{} holds {} bytes, not {LEN}: delete it and restart ({cost})",
            path.display(),
            secret.len()
        )));
    }
    Ok(secret)
}

/// Binds the UDP socket and starts the endpoint, with stateless resets keyed by `reset_secret`.
pub(crate) fn bind(
    listen: SocketAddr,
    server: quinn::ServerConfig,
    reset_secret: &[u8],
) -> Result<Endpoint, HubError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let ctx = || format!("bind UDP {listen}");
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(|e| HubError::io(ctx(), e))?;
    if let Err(e) = socket.set_send_buffer_size(SEND_BUFFER) {
        tracing::warn!(error = %e, "could not enlarge the UDP send buffer");
    }
    enlarge_recv_buffer(&socket);
    socket
        .bind(&listen.into())
        .map_err(|e| HubError::io(ctx(), e))?;
    let std_socket: std::net::UdpSocket = socket.into();
    Endpoint::new(
        flotilla_certs::dial::hub_endpoint_config(reset_secret),
        Some(server),
        std_socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| HubError::io(ctx(), e))
}
