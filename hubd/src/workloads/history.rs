//! Container history writer: finished container minutes go to one task that stores them in batched
//! transactions and prunes what is past `container_history_days` (by default the host history's
//! minute retention).

use super::MinuteRow;
use crate::history::Retention;
use crate::store::{self, Store, now_ms};
use deploy::sync::lock;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Batches waiting for the writer. One batch is what one delta closed (usually one agent's running
/// containers at a minute's turn): 1,000 agents × 20 containers close 20,000 minutes a minute, in
/// about 1,000 batches; this holds several minutes of them, and a full queue makes metrics streams
/// wait (back-pressure to the agents) instead of growing memory.
const WRITE_QUEUE: usize = 8192;

/// Front of the container history writer.
pub struct ContainerHistory {
    tx: mpsc::Sender<Vec<MinuteRow>>,
    stop: CancellationToken,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ContainerHistory {
    /// Prunes, then starts the writer; `retention` is read at each prune, so a reload applies.
    pub async fn start(store: Store, retention: watch::Receiver<Retention>) -> Self {
        let now = *retention.borrow();
        prune(&store, now).await;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let stop = CancellationToken::new();
        let task = tokio::spawn(writer(rx, store, retention, stop.clone()));
        Self {
            tx,
            stop,
            writer: Mutex::new(Some(task)),
        }
    }

    /// Queues minutes for the store; waits while the queue is full. Cancel-safe (nothing is queued
    /// if cancelled).
    pub async fn record(&self, rows: Vec<MinuteRow>) {
        if !rows.is_empty() && self.tx.send(rows).await.is_err() {
            tracing::warn!("container history writer gone; minutes dropped");
        }
    }

    /// Writes `last` (the minutes in progress), stops the writer once its queue is stored and waits
    /// for it, at most `deadline`. Returns whether it finished in time.
    pub async fn close(&self, last: Vec<MinuteRow>, deadline: Duration) -> bool {
        self.record(last).await;
        self.stop.cancel();
        let task = lock(&self.writer).take();
        match task {
            Some(task) => tokio::time::timeout(deadline, task).await.is_ok(),
            None => true,
        }
    }
}

async fn prune(store: &Store, retention: Retention) {
    let cut = now_ms().saturating_sub(u64::from(retention.container_days) * 86_400_000);
    match store
        .call(move |c| Ok(store::workloads::prune(c, cut)?))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(minutes = n, "pruned container history"),
        Err(e) => tracing::warn!(error = %e, "pruning container history failed"),
    }
}

async fn write_batch(store: &Store, batch: Vec<MinuteRow>) {
    let n = batch.len();
    let res = store
        .call(move |c| {
            let tx = c.transaction()?;
            store::workloads::upsert_minutes(&tx, &batch)?;
            tx.commit()?;
            Ok(())
        })
        .await;
    if let Err(e) = res {
        tracing::error!(rows = n, error = %e, "could not store container history");
    }
}

async fn writer(
    rx: mpsc::Receiver<Vec<MinuteRow>>,
    store: Store,
    retention: watch::Receiver<Retention>,
    stop: CancellationToken,
) {
    crate::history::batch_writer(
        rx,
        store,
        retention,
        stop,
        |store, batch| async move { write_batch(&store, batch).await },
        |store, now| async move { prune(&store, now).await },
    )
    .await
}
