//! A userspace UDP proxy that stands between QUIC peers and the hub and loses, delays, duplicates
//! and reorders datagrams, limits the bandwidth, or cuts the path entirely (this machine's kernel
//! has no `netem`); it can also let a client's request through and drop the hub's answer
//! ([`FaultProxy::mute_hub_after_request`]), the moment an enrolment commits without its client
//! hearing of it.
//!
//! Each client address gets its own upstream socket, as a NAT would, so the hub sees one peer per
//! client. Delayed datagrams are sent by tracked tasks; at most [`MAX_IN_FLIGHT`] wait at once and
//! the rest count as lost, so a burst never grows memory without bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Datagrams waiting out their delay at once: a few seconds of a test's traffic at 200 ms.
pub(crate) const MAX_IN_FLIGHT: usize = 20_000;

/// What happens to each datagram, in both directions.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Faults {
    /// Chance that a datagram is dropped, 0.0 to 1.0.
    pub(crate) loss: f64,
    /// Delay each way (a round trip is twice this).
    pub(crate) delay: Duration,
    /// Extra delay, uniform in `0..jitter`: datagrams overtake each other (reordering).
    pub(crate) jitter: Duration,
    /// Chance that a datagram is sent twice.
    pub(crate) duplicate: f64,
    /// Drop everything: the path is cut.
    pub(crate) cut: bool,
    /// Bytes per second through the path, both directions together (0: unlimited). Datagrams
    /// over the rate queue behind each other for up to [`MAX_QUEUE_DELAY`], and are dropped past
    /// it as a router's full buffer drops them, so the peers' congestion control finds the rate.
    pub(crate) rate_bps: u64,
}

/// Longest a datagram waits for its turn under [`Faults::rate_bps`]: a router's buffer, short
/// enough that the queue never looks like a dead path to QUIC's loss detection.
pub(crate) const MAX_QUEUE_DELAY: Duration = Duration::from_millis(200);

impl Faults {
    /// A bad path: `loss` lost, `rtt` round trip with a tenth of it as jitter, 1 % duplicated.
    pub(crate) fn lossy(loss: f64, rtt: Duration) -> Self {
        Self {
            loss,
            delay: rtt / 2,
            jitter: rtt / 10,
            duplicate: 0.01,
            cut: false,
            rate_bps: 0,
        }
    }

    /// A clean path limited to `rate_bps` bytes per second.
    pub(crate) fn rate(rate_bps: u64) -> Self {
        Self {
            rate_bps,
            ..Self::default()
        }
    }
}

/// Where [`FaultProxy::mute_hub_after_request`] stands.
const MUTE_OFF: u8 = 0;
/// Armed: the next client datagram carrying a 1-RTT packet mutes the hub.
const MUTE_ARMED: u8 = 1;
/// Everything from the hub to its clients is dropped.
const MUTE_ON: u8 = 2;

/// Counters, for a test to check that the faults happened.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) forwarded: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) duplicated: AtomicU64,
}

/// The running proxy; stops when dropped.
pub(crate) struct FaultProxy {
    pub(crate) addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    pub(crate) counts: Arc<Counts>,
    mute: Arc<AtomicU8>,
    cancel: CancellationToken,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Shared {
    faults: Arc<Mutex<Faults>>,
    counts: Arc<Counts>,
    in_flight: AtomicUsize,
    /// When the rate-limited path is free for the next datagram.
    next_free: Mutex<Instant>,
    mute: Arc<AtomicU8>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Shared {
    fn faults(&self) -> Faults {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a datagram of `len` bytes waits for its turn at `rate_bps`; `None` when the
    /// queue is full and it is dropped.
    fn queue_delay(&self, len: usize, rate_bps: u64) -> Option<Duration> {
        if rate_bps == 0 {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut next_free = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*next_free).max(now);
        let wait = start - now;
        if wait > MAX_QUEUE_DELAY {
            return None;
        }
        *next_free = start + Duration::from_secs_f64(len as f64 / rate_bps as f64);
        Some(wait)
    }

    /// Sends `data` to `to` through `sock` after the faults have had their say. `to` is the
    /// client for the hub's datagrams and `None` for a client's.
    fn pass(self: &Arc<Self>, sock: &Arc<UdpSocket>, to: Option<SocketAddr>, data: Vec<u8>) {
        let f = self.faults();
        let muted = match to {
            Some(_) => self.mute.load(Ordering::SeqCst) == MUTE_ON,
            None => false,
        };
        if f.cut || muted || fastrand::f64() < f.loss {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if to.is_none() && carries_1rtt(&data) {
            // The client has its 1-RTT keys: whatever it sends from here on (its request) reaches
            // the hub, and nothing the hub says back reaches the client.
            let _ =
                self.mute
                    .compare_exchange(MUTE_ARMED, MUTE_ON, Ordering::SeqCst, Ordering::SeqCst);
        }
        let Some(queued) = self.queue_delay(data.len(), f.rate_bps) else {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let copies = if fastrand::f64() < f.duplicate {
            self.counts.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        for _ in 0..copies {
            let extra = if f.jitter.is_zero() {
                Duration::ZERO
            } else {
                f.jitter.mul_f64(fastrand::f64())
            };
            let wait = f.delay + extra + queued;
            if wait.is_zero() {
                send(sock, to, &data);
                self.counts.forwarded.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let (me, sock, data, cancel) = (
                self.clone(),
                sock.clone(),
                data.clone(),
                self.cancel.clone(),
            );
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    // The delay is the fault itself: this sleep is the event.
                    _ = tokio::time::sleep(wait) => {
                        send(&sock, to, &data);
                        me.counts.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
                me.in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

/// Whether a UDP datagram holds a QUIC 1-RTT (short header) packet: long-header packets are walked
/// by their length fields (RFC 9000 §17.2); a short-header packet is always the last one.
fn carries_1rtt(mut d: &[u8]) -> bool {
    fn varint(d: &[u8]) -> Option<(u64, usize)> {
        let first = *d.first()?;
        let len = 1usize << (first >> 6);
        let bytes = d.get(..len)?;
        let mut v = u64::from(first & 0x3f);
        for b in &bytes[1..] {
            v = (v << 8) | u64::from(*b);
        }
        Some((v, len))
    }
    fn skip_long(d: &[u8]) -> Option<usize> {
        let kind = (d[0] >> 4) & 0x3;
        let mut at = 5;
        let dcid = usize::from(*d.get(at)?);
        at += 1 + dcid;
        let scid = usize::from(*d.get(at)?);
        at += 1 + scid;
        if kind == 0 {
            let (token, n) = varint(d.get(at..)?)?;
            at += n + usize::try_from(token).ok()?;
        }
        if kind == 3 {
            return None;
        }
        let (len, n) = varint(d.get(at..)?)?;
        Some(at + n + usize::try_from(len).ok()?)
    }
    while let Some(&first) = d.first() {
        if first & 0x80 == 0 {
            return true;
        }
        match skip_long(d) {
            Some(n) if n <= d.len() => d = &d[n..],
            _ => return false,
        }
    }
    false
}

/// A datagram that cannot be sent at once is lost, as on a real path.
fn send(sock: &UdpSocket, to: Option<SocketAddr>, data: &[u8]) {
    let _ = match to {
        Some(to) => sock.try_send_to(data, to),
        None => sock.try_send(data),
    };
}

impl FaultProxy {
    /// Listens on 127.0.0.1 and forwards to `upstream`, without faults until [`FaultProxy::set`].
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("proxy bind"));
        let addr = front.local_addr().expect("proxy address");
        let faults = Arc::new(Mutex::new(Faults::default()));
        let counts = Arc::new(Counts::default());
        let cancel = CancellationToken::new();
        let mute = Arc::new(AtomicU8::new(MUTE_OFF));
        let shared = Arc::new(Shared {
            faults: faults.clone(),
            counts: counts.clone(),
            in_flight: AtomicUsize::new(0),
            next_free: Mutex::new(Instant::now()),
            mute: mute.clone(),
            tracker: TaskTracker::new(),
            cancel: cancel.clone(),
        });
        tokio::spawn(front_loop(front, upstream, shared));
        Self {
            addr,
            faults,
            counts,
            mute,
            cancel,
        }
    }

    /// The address as a hub address string, for a login or an agent's saved hubs.
    pub(crate) fn hub(&self) -> String {
        self.addr.to_string()
    }

    /// Changes the faults from the next datagram on.
    pub(crate) fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// From the next client datagram that carries a 1-RTT packet (the first the client may send
    /// a request in) on, drops everything the hub sends to its clients: the request arrives, the
    /// answer never does, until [`FaultProxy::unmute`].
    pub(crate) fn mute_hub_after_request(&self) {
        self.mute.store(MUTE_ARMED, Ordering::SeqCst);
    }

    /// Whether the hub is muted (a client sent its request since [`FaultProxy::mute_hub_after_request`]).
    pub(crate) fn hub_muted(&self) -> bool {
        self.mute.load(Ordering::SeqCst) == MUTE_ON
    }

    /// Lets the hub's datagrams through again.
    pub(crate) fn unmute(&self) {
        self.mute.store(MUTE_OFF, Ordering::SeqCst);
    }

    /// Cuts the path (`true`) or restores it with the faults it had.
    pub(crate) fn cut(&self, cut: bool) {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).cut = cut;
    }
}

/// Reads from clients; the first datagram of a new client address opens its upstream socket and
/// the task that carries the hub's answers back.
async fn front_loop(front: Arc<UdpSocket>, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            r = front.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let up = match clients.get(&from) {
            Some(up) => up.clone(),
            None => {
                let up = UdpSocket::bind("127.0.0.1:0").await.expect("upstream bind");
                up.connect(upstream).await.expect("upstream connect");
                let up = Arc::new(up);
                clients.insert(from, up.clone());
                shared
                    .tracker
                    .spawn(back_loop(up.clone(), front.clone(), from, shared.clone()));
                up
            }
        };
        shared.pass(&up, None, buf[..n].to_vec());
    }
    shared.tracker.close();
}

async fn back_loop(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = up.recv(&mut buf) => match r {
                Ok(n) => n,
                // An ICMP unreachable from a hub that is down: keep listening for the next one.
                Err(_) => continue,
            },
        };
        shared.pass(&front, Some(client), buf[..n].to_vec());
    }
}
