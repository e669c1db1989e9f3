//! Metrics history: folds live samples into minutes in memory and hands finished minutes (and
//! back-filled ones) to one writer task that stores them in batched transactions, rolls them up into
//! ten-minute buckets and prunes both tables by itself.

use crate::store::{self, Store, now_ms};
use deploy::sync::lock;
use flotilla_wire::IdentityId;
use flotilla_wire::aggregate::{MinuteFolder, TEN_MINUTES_MS, bucket_start};
use flotilla_wire::msg::{MetricsSample, MinuteAggregate};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Minute rows waiting for the writer. At 20,000 agents about 333 minutes close per second; this holds
/// a minute of them, and a full queue makes metrics streams wait (back-pressure to the agents) instead
/// of growing memory.
const WRITE_QUEUE: usize = 20_000;
/// Rows per transaction: big enough to amortise the commit, small enough to keep the store thread
/// responsive to enrolments and operator queries.
const MAX_BATCH: usize = 5_000;
/// How often old buckets are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

type Row = (IdentityId, MinuteAggregate);

/// Retention of the two resolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Days of 1-minute buckets.
    pub minute_days: u32,
    /// Days of 10-minute buckets.
    pub ten_minute_days: u32,
    /// Days of container minutes (`container_history_days`).
    pub container_days: u32,
}

/// Front of the history writer, and its owner: [`History::close`] flushes the minutes in progress
/// and waits for the writer to store them.
pub struct History {
    tx: mpsc::Sender<Vec<Row>>,
    /// Tells the writer to stop taking rows once what is queued is written.
    stop: CancellationToken,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    folders: Mutex<HashMap<IdentityId, MinuteFolder>>,
    /// Read by the writer at each prune, so a reload takes effect at the next one.
    retention: watch::Sender<Retention>,
    /// Per-series history and top processes, fed from the same samples.
    pub host: crate::host_history::HostHistory,
}

impl History {
    /// Prunes what is past retention, then starts the writer task; it ends at [`History::close`] (or
    /// once every `History` is dropped) after its queue is written. Pruning first means no query ever
    /// sees expired buckets.
    pub async fn start(store: Store, retention: Retention) -> Self {
        prune(&store, retention).await;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (retention, retention_rx) = watch::channel(retention);
        let host =
            crate::host_history::HostHistory::start(store.clone(), retention_rx.clone()).await;
        let stop = CancellationToken::new();
        let task = tokio::spawn(writer(rx, store, retention_rx, stop.clone()));
        Self {
            tx,
            stop,
            writer: Mutex::new(Some(task)),
            folders: Mutex::default(),
            retention,
            host,
        }
    }

    /// Writes every minute in progress, then stops the writer once its queue is stored and waits
    /// for it, at most `deadline` (shutdown). Returns whether the writer finished in time.
    pub async fn close(&self, deadline: Duration) -> bool {
        let host = self.host.close(deadline).await;
        self.flush_all().await;
        self.stop.cancel();
        let task = lock(&self.writer).take();
        match task {
            Some(task) => tokio::time::timeout(deadline, task).await.is_ok() && host,
            None => host,
        }
    }

    /// Changes retention from the next prune on (SIGHUP).
    pub fn set_retention(&self, retention: Retention) {
        self.retention.send_replace(retention);
    }

    /// Follows retention changes (the container history prunes by its own days, set here too).
    pub fn retention_watch(&self) -> watch::Receiver<Retention> {
        self.retention.subscribe()
    }

    /// Retention now.
    pub fn retention(&self) -> Retention {
        *self.retention.borrow()
    }

    fn folders(&self) -> std::sync::MutexGuard<'_, HashMap<IdentityId, MinuteFolder>> {
        lock(&self.folders)
    }

    async fn send(&self, rows: Vec<Row>) {
        if !rows.is_empty() && self.tx.send(rows).await.is_err() {
            tracing::warn!("history writer gone; minute dropped");
        }
    }

    /// Folds a live sample; a finished minute goes to the writer.
    pub async fn record(&self, id: &IdentityId, sample: &MetricsSample) {
        let done = self.folders().entry(id.clone()).or_default().push(sample);
        if let Some(minute) = done {
            self.send(vec![(id.clone(), minute)]).await;
        }
        self.host
            .record(id, crate::host_history::Observation::from_sample(sample))
            .await;
    }

    /// The minute in progress of `id`, not yet written: a history query adds it so that an agent's
    /// first minute, and the current one, show before they close.
    pub fn in_progress(&self, id: &IdentityId) -> Option<MinuteAggregate> {
        self.folders().get(id).and_then(MinuteFolder::peek)
    }

    /// Stores minutes an agent buffered while the hub was unreachable.
    pub async fn record_backfill(&self, id: &IdentityId, minutes: Vec<MinuteAggregate>) {
        self.send(minutes.into_iter().map(|m| (id.clone(), m)).collect())
            .await;
    }

    /// Writes the minute in progress of `id` (it disconnected; a reconnect in the same minute merges).
    pub async fn flush_agent(&self, id: &IdentityId) {
        let partial = self.folders().remove(id).and_then(|mut f| f.take());
        if let Some(m) = partial {
            self.send(vec![(id.clone(), m)]).await;
        }
        self.host.flush_agent(id).await;
    }

    /// Writes every minute in progress (shutdown).
    pub async fn flush_all(&self) {
        let rows: Vec<Row> = self
            .folders()
            .drain()
            .filter_map(|(id, mut f)| f.take().map(|m| (id, m)))
            .collect();
        self.send(rows).await;
    }
}

async fn prune(store: &Store, retention: Retention) {
    let day = 86_400_000u64;
    let now = now_ms();
    let minute_cut = now.saturating_sub(u64::from(retention.minute_days) * day);
    let ten_cut = now.saturating_sub(u64::from(retention.ten_minute_days) * day);
    match store
        .call(move |c| Ok(store::metrics::prune(c, minute_cut, ten_cut)?))
        .await
    {
        Ok((a, b)) if a + b > 0 => {
            tracing::info!(minutes = a, ten_minutes = b, "pruned metrics history")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "pruning metrics history failed"),
    }
}

async fn write_batch(store: &Store, batch: Vec<Row>) {
    let n = batch.len();
    let windows: BTreeSet<(IdentityId, u64)> = batch
        .iter()
        .map(|(id, m)| (id.clone(), bucket_start(m.start_ms, TEN_MINUTES_MS)))
        .collect();
    let res = store
        .call(move |c| {
            let tx = c.transaction()?;
            store::metrics::upsert_minutes(&tx, &batch)?;
            for (id, start) in &windows {
                store::metrics::rollup(&tx, id, *start)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await;
    if let Err(e) = res {
        tracing::error!(rows = n, error = %e, "could not store metrics history");
    }
}

async fn writer(
    rx: mpsc::Receiver<Vec<Row>>,
    store: Store,
    retention: watch::Receiver<Retention>,
    stop: CancellationToken,
) {
    batch_writer(
        rx,
        store,
        retention,
        stop,
        |store, batch| async move { write_batch(&store, batch).await },
        |store, now| async move { prune(&store, now).await },
    )
    .await
}

/// The loop of a history writer: takes queued rows in batches of up to [`MAX_BATCH`] and hands
/// them to `write`, prunes with `prune` every [`PRUNE_EVERY`], and on `stop` refuses new rows but
/// writes every row already queued before it returns. Host minutes and container minutes share it.
pub(crate) async fn batch_writer<R, W, WF, P, PF>(
    mut rx: mpsc::Receiver<Vec<R>>,
    store: Store,
    retention: watch::Receiver<Retention>,
    stop: CancellationToken,
    write: W,
    prune: P,
) where
    W: Fn(Store, Vec<R>) -> WF,
    WF: Future<Output = ()>,
    P: Fn(Store, Retention) -> PF,
    PF: Future<Output = ()>,
{
    let mut prune_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
    loop {
        let mut batch = tokio::select! {
            biased;
            rows = rx.recv() => match rows {
                Some(rows) => rows,
                None => return,
            },
            // Closing the queue refuses new rows; `recv` still hands out what is queued, then None.
            _ = stop.cancelled(), if !rx.is_closed() => {
                rx.close();
                continue;
            }
            _ = prune_tick.tick(), if !stop.is_cancelled() => {
                let now = *retention.borrow();
                prune(store.clone(), now).await;
                continue;
            }
        };
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(rows) => batch.extend(rows),
                Err(_) => break,
            }
        }
        write(store.clone(), batch).await;
    }
}
