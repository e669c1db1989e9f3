//! A userspace UDP proxy that stands between QUIC peers and the hub and loses, delays, duplicates
//! and reorders datagrams, or cuts the path entirely (this machine's kernel has no `netem`).
//!
//! Each client address gets its own upstream socket, as a NAT would, so the hub sees one peer per
//! client. Delayed datagrams are sent by tracked tasks; at most [`MAX_IN_FLIGHT`] wait at once and
//! the rest count as lost, so a burst never grows memory without bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
}

impl Faults {
    /// A bad path: `loss` lost, `rtt` round trip with a tenth of it as jitter, 1 % duplicated.
    pub(crate) fn lossy(loss: f64, rtt: Duration) -> Self {
        Self {
            loss,
            delay: rtt / 2,
            jitter: rtt / 10,
            duplicate: 0.01,
            cut: false,
        }
    }
}

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
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Shared {
    fn faults(&self) -> Faults {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `data` to `to` through `sock` after the faults have had their say.
    fn pass(self: &Arc<Self>, sock: &Arc<UdpSocket>, to: Option<SocketAddr>, data: Vec<u8>) {
        let f = self.faults();
        if f.cut || fastrand::f64() < f.loss {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
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
            let wait = f.delay + extra;
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
        let shared = Arc::new(Shared {
            faults: faults.clone(),
            counts: counts.clone(),
            in_flight: AtomicUsize::new(0),
            tracker: TaskTracker::new(),
            cancel: cancel.clone(),
        });
        tokio::spawn(front_loop(front, upstream, shared));
        Self {
            addr,
            faults,
            counts,
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
