//! Shared folders and transfers on the hub: every agent's latest tree (from its snapshot stream), the
//! file event feed operators watch, and the relay that moves a file from one end to the other.
//!
//! The hub never holds a file: a relayed chunk is forwarded as the same bytes it arrived as, one frame
//! at a time per transfer, and QUIC flow control carries the destination's pace back to the source.

mod transfer;
pub(crate) mod tree;

pub(crate) use transfer::copy;

use deploy::sync::lock;
use flotilla_wire::IdentityId;
use flotilla_wire::files::{Change, FileEvent, TransferId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tree::AgentTree;

/// Marks the transfers a previous hub process left running as interrupted (call once at start):
/// a hub killed mid-copy never wrote their end.
pub(crate) async fn recover(ctx: &crate::HubCtx) {
    match ctx
        .store
        .call(|c| {
            Ok(crate::store::transfers::mark_interrupted(
                c,
                crate::store::now_ms(),
            )?)
        })
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            transfers = n,
            "transfers interrupted by the previous hub stop marked as such"
        ),
        Err(e) => tracing::error!(error = %e, "could not mark interrupted transfers"),
    }
}

/// File events buffered per watcher. Events carry up to [`EVENT_CHANGES`] changes, so a watcher that
/// lags by the whole buffer holds a few tens of MB at worst before it gets `Lagged`.
const FILE_EVENT_BUFFER: usize = 1024;
/// Changes per published event: a large delta becomes several events rather than one huge one.
const EVENT_CHANGES: usize = 256;
/// Transfers relayed at once; more wait for a slot. Each holds about a megabyte of stream buffers,
/// so the relay's memory stays bounded whatever operators ask for.
pub(crate) const MAX_TRANSFERS: usize = 64;

/// Trees, file events and transfers in flight.
pub struct Files {
    trees: Mutex<HashMap<IdentityId, Arc<Mutex<AgentTree>>>>,
    events: broadcast::Sender<FileEvent>,
    /// Each transfer in flight, with the token that interrupts it and its attempt number.
    active: Mutex<HashMap<TransferId, (u64, CancellationToken)>>,
    next_attempt: AtomicU64,
    pub(crate) slots: Arc<Semaphore>,
}

impl Default for Files {
    fn default() -> Self {
        Self::new()
    }
}

impl Files {
    /// No trees, no transfers.
    pub fn new() -> Self {
        Self {
            trees: Mutex::default(),
            events: broadcast::channel(FILE_EVENT_BUFFER).0,
            active: Mutex::default(),
            next_attempt: AtomicU64::new(1),
            slots: Arc::new(Semaphore::new(MAX_TRANSFERS)),
        }
    }

    /// The tree of agent `id`, created empty if the hub has none (its name is refreshed).
    pub(crate) fn tree_for(&self, id: &IdentityId, name: &str) -> Arc<Mutex<AgentTree>> {
        let tree = lock(&self.trees)
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Mutex::new(AgentTree::new(name.to_owned()))))
            .clone();
        lock(&tree).name = name.to_owned();
        tree
    }

    /// The tree of agent `id`, if it ever sent one.
    pub(crate) fn tree(&self, id: &IdentityId) -> Option<Arc<Mutex<AgentTree>>> {
        lock(&self.trees).get(id).cloned()
    }

    /// Every tree that holds a complete snapshot: (agent, name, entries).
    pub(crate) fn ready_trees(&self) -> Vec<(IdentityId, String, u64)> {
        let trees: Vec<_> = lock(&self.trees)
            .iter()
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        trees
            .into_iter()
            .filter_map(|(id, t)| {
                let t = lock(&t);
                t.ready().then(|| (id, t.name.clone(), t.len() as u64))
            })
            .collect()
    }

    /// Publishes an event to every watcher (none is fine).
    pub fn publish(&self, event: FileEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event);
        }
    }

    /// Publishes changes of agent `id` in events of at most [`EVENT_CHANGES`].
    pub(crate) fn publish_changes(&self, id: &IdentityId, name: &str, changes: Vec<Change>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        for part in changes.chunks(EVENT_CHANGES) {
            self.publish(FileEvent::Changed {
                agent: id.clone(),
                name: name.to_owned(),
                changes: part.to_vec(),
            });
        }
    }

    /// A new subscription to file events.
    pub fn subscribe(&self) -> broadcast::Receiver<FileEvent> {
        self.events.subscribe()
    }

    /// Registers an attempt of `transfer`, interrupting an older attempt still running (a console
    /// that retried after losing its connection). The guard unregisters it.
    pub(crate) fn register(self: &Arc<Self>, transfer: TransferId) -> ActiveGuard {
        let attempt = self.next_attempt.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        if let Some((_, old)) = lock(&self.active).insert(transfer, (attempt, token.clone())) {
            old.cancel();
        }
        ActiveGuard {
            files: self.clone(),
            transfer,
            attempt,
            token,
        }
    }

    /// Number of transfers being relayed now.
    pub fn active_transfers(&self) -> usize {
        lock(&self.active).len()
    }
}

/// Keeps a transfer attempt registered; removes it on drop unless a newer attempt replaced it.
pub(crate) struct ActiveGuard {
    files: Arc<Files>,
    transfer: TransferId,
    attempt: u64,
    /// Cancelled when a newer attempt of the same transfer starts.
    pub(crate) token: CancellationToken,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut active = lock(&self.files.active);
        if active
            .get(&self.transfer)
            .is_some_and(|(a, _)| *a == self.attempt)
        {
            active.remove(&self.transfer);
        }
    }
}
