//! Live state in memory: who is connected now, on which connection, with their latest sample, and
//! the fleet event feed operators subscribe to.

use flotilla_wire::msg::{FleetEvent, HubControl, MetricsSample};
use flotilla_wire::{ErrorCode, IdentityId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, mpsc};

/// Events buffered per subscriber; a console that falls further behind gets `Lagged` and re-lists,
/// so a slow operator never slows the hub or other operators.
const EVENT_BUFFER: usize = 8192;

/// Id of one connection, so a stale connection's cleanup cannot remove its replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

struct Live {
    conn_id: ConnId,
    conn: quinn::Connection,
    latest: Option<MetricsSample>,
    control: Option<mpsc::Sender<HubControl>>,
}

/// Cloneable handle to the live registry.
#[derive(Clone)]
pub struct Registry {
    live: Arc<Mutex<HashMap<IdentityId, Live>>>,
    events: broadcast::Sender<FleetEvent>,
    next_conn: Arc<AtomicU64>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            live: Arc::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            next_conn: Arc::new(AtomicU64::new(1)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IdentityId, Live>> {
        // A panic while holding this lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still safe to use.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
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
        let old = self.lock().insert(
            id.clone(),
            Live {
                conn_id,
                conn,
                latest: None,
                control,
            },
        );
        if let Some(old) = old {
            old.conn.close(
                ErrorCode::Replaced.as_u32().into(),
                ErrorCode::Replaced.describe().as_bytes(),
            );
        }
        conn_id
    }

    /// Removes `id` if its live connection is still `conn_id`. Returns whether it did.
    pub fn disconnect(&self, id: &IdentityId, conn_id: ConnId) -> bool {
        let mut live = self.lock();
        if live.get(id).is_some_and(|l| l.conn_id == conn_id) {
            live.remove(id);
            true
        } else {
            false
        }
    }

    /// Whether `id` is connected now.
    pub fn is_online(&self, id: &IdentityId) -> bool {
        self.lock().contains_key(id)
    }

    /// The live connection of `id`, to open streams to it (transfers, resync requests).
    pub fn connection(&self, id: &IdentityId) -> Option<quinn::Connection> {
        self.lock().get(id).map(|l| l.conn.clone())
    }

    /// Number of live connections.
    pub fn online_count(&self) -> usize {
        self.lock().len()
    }

    /// Closes `id`'s live connection with `code`; returns whether there was one.
    pub fn kick(&self, id: &IdentityId, code: ErrorCode) -> bool {
        match self.lock().remove(id) {
            Some(live) => {
                live.conn
                    .close(code.as_u32().into(), code.describe().as_bytes());
                true
            }
            None => false,
        }
    }

    /// Closes every connection with `code` (shutdown).
    pub fn close_all(&self, code: ErrorCode) {
        for (_, live) in self.lock().drain() {
            live.conn
                .close(code.as_u32().into(), code.describe().as_bytes());
        }
    }

    /// Records the latest sample of `id` and publishes it.
    pub fn set_latest(&self, id: &IdentityId, sample: MetricsSample) {
        if let Some(live) = self.lock().get_mut(id) {
            live.latest = Some(sample.clone());
        }
        self.publish(FleetEvent::Metrics {
            id: id.clone(),
            sample,
        });
    }

    /// The latest sample of `id`, if connected and reporting.
    pub fn latest(&self, id: &IdentityId) -> Option<MetricsSample> {
        self.lock().get(id).and_then(|l| l.latest.clone())
    }

    /// Sends a control message to `id` without waiting; false if it is offline or its queue is full.
    pub fn send_control(&self, id: &IdentityId, msg: HubControl) -> bool {
        self.lock()
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
