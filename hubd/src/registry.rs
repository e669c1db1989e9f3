//! Live state in memory: who is connected now, on which connection, with their latest sample, and
//! the fleet event feed operators subscribe to.

use deploy::sync::lock;
use flotilla_wire::msg::{FleetEvent, HubControl, MetricsSample};
use flotilla_wire::{ErrorCode, IdentityId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc};

/// Events buffered per subscriber; a console that falls further behind gets `Lagged` and re-lists,
/// so a slow operator never slows the hub or other operators.
const EVENT_BUFFER: usize = 8192;

/// Id of one connection, so a stale connection's cleanup cannot remove its replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

struct Live {
    conn_id: ConnId,
    conn: quinn::Connection,
    /// The agent's bulk lane, while it has one open.
    bulk: Option<quinn::Connection>,
    latest: Option<MetricsSample>,
    control: Option<mpsc::Sender<HubControl>>,
}

impl Live {
    /// Closes the agent's connections, its bulk lane with them.
    fn close(&self, code: ErrorCode) {
        for conn in self.bulk.iter().chain([&self.conn]) {
            conn.close(code.as_u32().into(), code.describe().as_bytes());
        }
    }
}

/// How long a transfer waits for an agent to open its bulk lane before it uses the control
/// connection instead (slower, but the transfer goes ahead).
pub const BULK_LANE_WAIT: Duration = Duration::from_secs(3);

/// Metrics interval while an operator watches an agent: live charts want one point a second.
pub const WATCHED_INTERVAL_MS: u32 = 1000;

/// Cloneable handle to the live registry.
#[derive(Clone)]
pub struct Registry {
    live: Arc<Mutex<HashMap<IdentityId, Live>>>,
    /// Operator connections: several per identity are normal (console plus scripts), so no
    /// newest-wins here; kept only so a revocation can close them all.
    operators: Arc<Mutex<HashMap<ConnId, (IdentityId, quinn::Connection)>>>,
    /// Identities revoked while this hub runs. Every operator request checks it, so a connection
    /// whose close was lost (or that registered while the revocation committed) is refused anyway;
    /// identities revoked before the start never get past the handshake's registry lookup.
    revoked: Arc<Mutex<HashSet<IdentityId>>>,
    watchers: Arc<Mutex<HashMap<IdentityId, usize>>>,
    events: broadcast::Sender<FleetEvent>,
    next_conn: Arc<AtomicU64>,
    /// The hub's metrics interval; SIGHUP may change it (see `reload`).
    default_interval_ms: Arc<AtomicU32>,
    /// Woken whenever a bulk lane attaches, for transfers waiting on one.
    bulk_attached: Arc<Notify>,
    /// The reconnect window told to every agent when the hub stops, fixed by the first session to
    /// close so that all agents hear the same one (the online count falls as they go).
    restart_window_ms: Arc<std::sync::OnceLock<u32>>,
}

/// Counts one operator watching an agent; dropping it uncounts, and the last one leaving puts the
/// agent back on its normal interval.
pub struct WatchGuard {
    registry: Registry,
    id: IdentityId,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let last = {
            let mut w = lock(&self.registry.watchers);
            let n = w.entry(self.id.clone()).or_insert(1);
            *n -= 1;
            let last = *n == 0;
            if last {
                w.remove(&self.id);
            }
            last
        };
        if last {
            let interval_ms = self.registry.default_interval_ms();
            self.registry
                .send_control(&self.id, HubControl::SetMetricsInterval { interval_ms });
        }
    }
}

impl Registry {
    /// An empty registry; agents nobody watches sample every `default_interval_ms`.
    pub fn new(default_interval_ms: u32) -> Self {
        Self {
            live: Arc::default(),
            operators: Arc::default(),
            revoked: Arc::default(),
            watchers: Arc::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            next_conn: Arc::new(AtomicU64::new(1)),
            default_interval_ms: Arc::new(AtomicU32::new(default_interval_ms)),
            bulk_attached: Arc::default(),
            restart_window_ms: Arc::default(),
        }
    }

    /// The metrics interval agents are told when nobody watches them.
    pub fn default_interval_ms(&self) -> u32 {
        self.default_interval_ms.load(Ordering::Relaxed)
    }

    /// Changes the default metrics interval and tells connected agents nobody watches. Agents take
    /// a shorter interval at once; a longer one from their next connection (they never sample
    /// slower than the interval their welcome gave).
    pub fn set_default_interval_ms(&self, interval_ms: u32) {
        self.default_interval_ms
            .store(interval_ms, Ordering::Relaxed);
        let ids: Vec<IdentityId> = lock(&self.live).keys().cloned().collect();
        for id in ids {
            if !self.is_watched(&id) {
                self.send_control(&id, HubControl::SetMetricsInterval { interval_ms });
            }
        }
    }

    /// Number of operator connections.
    pub fn operator_count(&self) -> usize {
        lock(&self.operators).len()
    }

    /// Starts watching `id`: it samples every second until the guard is dropped.
    pub fn watch(&self, id: &IdentityId) -> WatchGuard {
        let first = {
            let mut w = lock(&self.watchers);
            let n = w.entry(id.clone()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            self.send_control(
                id,
                HubControl::SetMetricsInterval {
                    interval_ms: WATCHED_INTERVAL_MS,
                },
            );
        }
        WatchGuard {
            registry: self.clone(),
            id: id.clone(),
        }
    }

    /// Whether an operator watches `id` now.
    pub fn is_watched(&self, id: &IdentityId) -> bool {
        lock(&self.watchers).contains_key(id)
    }

    /// Registers `conn` as the live connection of `id`. The newest connection wins: an older one is
    /// closed with [`ErrorCode::Replaced`].
    pub fn connect(
        &self,
        id: &IdentityId,
        conn: quinn::Connection,
        control: Option<mpsc::Sender<HubControl>>,
    ) -> ConnId {
        let conn_id = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let old = lock(&self.live).insert(
            id.clone(),
            Live {
                conn_id,
                conn,
                bulk: None,
                latest: None,
                control,
            },
        );
        if let Some(old) = old {
            old.close(ErrorCode::Replaced);
        }
        conn_id
    }

    /// Registers an operator connection (any number per identity).
    pub fn connect_operator(&self, id: &IdentityId, conn: quinn::Connection) -> ConnId {
        let conn_id = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        lock(&self.operators).insert(conn_id, (id.clone(), conn));
        conn_id
    }

    /// Forgets an operator connection.
    pub fn disconnect_operator(&self, conn_id: ConnId) {
        lock(&self.operators).remove(&conn_id);
    }

    /// Removes `id` if its live connection is still `conn_id`. Returns whether it did.
    pub fn disconnect(&self, id: &IdentityId, conn_id: ConnId) -> bool {
        let mut live = lock(&self.live);
        if live.get(id).is_some_and(|l| l.conn_id == conn_id) {
            live.remove(id);
            true
        } else {
            false
        }
    }

    /// Whether `id` is connected now.
    pub fn is_online(&self, id: &IdentityId) -> bool {
        lock(&self.live).contains_key(id)
    }

    /// The live connection of `id`, to open streams on (exec, ping); `None` when offline.
    pub fn connection(&self, id: &IdentityId) -> Option<quinn::Connection> {
        lock(&self.live).get(id).map(|l| l.conn.clone())
    }

    /// Attaches `conn` as the bulk lane of connected agent `id`, closing a previous lane. False if
    /// the agent has no control connection: a lane only serves a live session.
    pub fn attach_bulk(&self, id: &IdentityId, conn: quinn::Connection) -> bool {
        let old = match lock(&self.live).get_mut(id) {
            Some(live) => live.bulk.replace(conn),
            None => return false,
        };
        if let Some(old) = old {
            old.close(
                ErrorCode::Replaced.as_u32().into(),
                ErrorCode::Replaced.describe().as_bytes(),
            );
        }
        self.bulk_attached.notify_waiters();
        true
    }

    /// Forgets `id`'s bulk lane if it is still `conn`.
    pub fn detach_bulk(&self, id: &IdentityId, conn: &quinn::Connection) {
        if let Some(live) = lock(&self.live).get_mut(id)
            && live
                .bulk
                .as_ref()
                .is_some_and(|b| b.stable_id() == conn.stable_id())
        {
            live.bulk = None;
        }
    }

    /// The connection to open transfer streams on: `id`'s bulk lane, asking the agent to open one
    /// and waiting up to [`BULK_LANE_WAIT`] if it has none, else its control connection. `None`
    /// when offline.
    pub async fn transfer_connection(&self, id: &IdentityId) -> Option<quinn::Connection> {
        let deadline = tokio::time::Instant::now() + BULK_LANE_WAIT;
        let mut asked = false;
        loop {
            // Register for the wake-up before looking, so an attach in between is not missed.
            let attached = self.bulk_attached.notified();
            tokio::pin!(attached);
            attached.as_mut().enable();
            let control = {
                let live = lock(&self.live);
                let live = live.get(id)?;
                if let Some(bulk) = live.bulk.as_ref().filter(|b| b.close_reason().is_none()) {
                    return Some(bulk.clone());
                }
                live.conn.clone()
            };
            if !asked {
                asked = true;
                if !self.send_control(id, HubControl::OpenBulk) {
                    return Some(control);
                }
            }
            if tokio::time::timeout_at(deadline, attached).await.is_err() {
                tracing::debug!(%id, "no bulk lane in time; transferring on the control connection");
                return Some(control);
            }
        }
    }

    /// The reconnect window for a stopping hub: `window(agents online)` at the first call, the same
    /// value afterwards.
    pub fn restart_window_ms(&self, window: impl FnOnce(usize) -> u32) -> u32 {
        *self
            .restart_window_ms
            .get_or_init(|| window(self.online_count()))
    }

    /// Number of bulk lanes open now.
    pub fn bulk_count(&self) -> usize {
        lock(&self.live)
            .values()
            .filter(|l| l.bulk.is_some())
            .count()
    }

    /// Number of live connections.
    pub fn online_count(&self) -> usize {
        lock(&self.live).len()
    }

    /// Closes `id`'s live connection with `code`; returns whether there was one.
    pub fn kick(&self, id: &IdentityId, code: ErrorCode) -> bool {
        match lock(&self.live).remove(id) {
            Some(live) => {
                live.close(code);
                true
            }
            None => false,
        }
    }

    /// Records `id` as revoked and closes every live connection it holds: its agent connection and
    /// bulk lane, or each of its operator connections (console, scripts, mux). Returns how many
    /// connections it closed.
    pub fn revoke(&self, id: &IdentityId) -> usize {
        self.mark_revoked(id);
        let closed_agent = usize::from(self.kick(id, ErrorCode::Revoked));
        // Taken out of the map at once (their sessions' own cleanup then finds nothing), so the
        // operator count is right as soon as this returns.
        let mut operators = Vec::new();
        lock(&self.operators).retain(|_, (op, conn)| {
            let keep = op != id;
            if !keep {
                operators.push(conn.clone());
            }
            keep
        });
        for conn in &operators {
            let code = ErrorCode::Revoked;
            conn.close(code.as_u32().into(), code.describe().as_bytes());
        }
        closed_agent + operators.len()
    }

    /// Records `id` as revoked without closing anything: its requests are refused from now on.
    pub fn mark_revoked(&self, id: &IdentityId) {
        lock(&self.revoked).insert(id.clone());
    }

    /// Whether `id` was revoked while this hub runs (one lock and a hash lookup: cheap enough for
    /// every request).
    pub fn is_revoked(&self, id: &IdentityId) -> bool {
        lock(&self.revoked).contains(id)
    }

    /// Closes every connection with `code` (shutdown).
    pub fn close_all(&self, code: ErrorCode) {
        for (_, live) in lock(&self.live).drain() {
            live.close(code);
        }
    }

    /// Records the latest sample of `id` and publishes it.
    pub fn set_latest(&self, id: &IdentityId, sample: MetricsSample) {
        if let Some(live) = lock(&self.live).get_mut(id) {
            live.latest = Some(sample.clone());
        }
        self.publish(FleetEvent::Metrics {
            id: id.clone(),
            sample,
        });
    }

    /// The latest sample of `id`, if connected and reporting.
    pub fn latest(&self, id: &IdentityId) -> Option<MetricsSample> {
        lock(&self.live).get(id).and_then(|l| l.latest.clone())
    }

    /// Sends a control message to `id` without waiting; false if it is offline or its queue is full.
    pub fn send_control(&self, id: &IdentityId, msg: HubControl) -> bool {
        lock(&self.live)
            .get(id)
            .and_then(|l| l.control.as_ref())
            .is_some_and(|tx| tx.try_send(msg).is_ok())
    }

    /// Publishes an event to every subscriber (none is fine).
    pub fn publish(&self, event: FleetEvent) {
        let _ = self.events.send(event);
    }

    /// A new subscription to fleet events.
    pub fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        self.events.subscribe()
    }
}
