//! The hub's SQLite store: one thread owns the connection (WAL, single writer) and runs jobs sent to
//! it over a bounded channel, so async tasks never block on SQLite and writes never contend.

pub mod alerts;
pub mod audit;
pub mod identities;
pub mod jobs;
pub mod metrics;
pub(crate) mod migrate;
pub mod outbox;
pub mod series;
pub mod sessions;
pub mod tokens;
pub mod transfers;
pub mod workloads;

pub use audit::AuditRecord;
pub use identities::{IdentityRow, Selectable};
pub use tokens::{EnrolGrant, TokenRow};
pub use transfers::{TransferOutcome, TransferRow};

use crate::HubError;
use rusqlite::Connection;
use std::path::Path;
use tokio::sync::{mpsc, oneshot};

/// The steps of SQLite's plan for `sql` with `params` (its `EXPLAIN QUERY PLAN` details): what
/// tests read to check a query walks the index meant for it.
#[cfg(test)]
pub(crate) fn query_plan(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Vec<String> {
    conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("plan")
        .query_map(params, |row| row.get::<_, String>(3))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("read")
}

/// Jobs waiting for the store thread. Bounded: a burst of enrolments waits instead of growing memory.
const STORE_QUEUE: usize = 4096;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Cloneable front of the store thread.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
    /// Time from queueing a job to its result (queue wait included): what callers feel.
    latency: std::sync::Arc<crate::stats::Histogram>,
}

/// A job [`Store::queue`]d on the store thread; [`Pending::wait`] for its result.
#[must_use = "wait for the result, or errors go unseen"]
pub struct Pending<T> {
    reply: oneshot::Receiver<Result<T, HubError>>,
    started: std::time::Instant,
    latency: std::sync::Arc<crate::stats::Histogram>,
}

impl<T> Pending<T> {
    /// The job's result, once the store thread ran it.
    pub async fn wait(self) -> Result<T, HubError> {
        let result = self.reply.await.map_err(|_| HubError::StoreClosed)?;
        self.latency.observe(self.started.elapsed());
        result
    }
}

/// Milliseconds since the Unix epoch, the time every row records.
pub use flotilla_certs::clock::now_ms;

/// Creates the database file 0600 before SQLite opens it, or tightens an existing one (and its WAL
/// and shared-memory files), whatever the umask: it holds job output and the audit log. SQLite
/// creates a new database 0644 but gives `-wal` and `-shm` the database's own mode, so the file
/// made here is what keeps all three private.
fn make_private(path: &Path) -> Result<(), HubError> {
    crate::open_with_mode(path, crate::PRIVATE_FILE_MODE, false)
        .map_err(|e| HubError::io(format!("open {}", path.display()), e))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = std::path::PathBuf::from(side);
        if side.exists() {
            deploy::files::set_mode(&side, crate::PRIVATE_FILE_MODE)
                .map_err(|e| HubError::io(format!("chmod {}", side.display()), e.source))?;
        }
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database at `path`, migrates it, and starts the store thread.
    /// The returned join handle finishes once every `Store` clone is dropped and the queue is drained.
    pub fn open(path: &Path) -> Result<(Self, std::thread::JoinHandle<()>), HubError> {
        make_private(path)?;
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL with WAL survives a process kill -9 (only power loss can drop the last commits).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Every store function prepares its statements through this cache: compiling the SQL of
        // a job's five statements anew each time was part of every command's latency.
        conn.set_prepared_statement_cache_capacity(64);
        migrate::migrate(&mut conn)?;
        let (tx, mut rx) = mpsc::channel::<Job>(STORE_QUEUE);
        let handle = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job(&mut conn);
                }
                // Fold the WAL back so a backup of the file alone is complete.
                let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
            })
            .map_err(|e| HubError::io("spawn store thread", e))?;
        Ok((
            Self {
                tx,
                latency: std::sync::Arc::default(),
            },
            handle,
        ))
    }

    /// Runs `f` on the store thread and returns its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, HubError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, HubError> + Send + 'static,
    {
        self.queue(f).await?.wait().await
    }

    /// Queues `f` for the store thread and returns as soon as it is queued. The thread runs jobs in
    /// queue order, so every job queued later (any caller's) sees what `f` wrote: a task may tell
    /// its client the outcome before the commit lands, and a query the client sends next still
    /// reads it.
    pub async fn queue<T, F>(&self, f: F) -> Result<Pending<T>, HubError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, HubError> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply_tx.send(f(conn));
        });
        self.tx.send(job).await.map_err(|_| HubError::StoreClosed)?;
        Ok(Pending {
            reply: reply_rx,
            started,
            latency: self.latency.clone(),
        })
    }

    /// Queues `f` without waiting, for a caller that cannot await (a synchronous callback):
    /// gives `f` back when the queue is full or the store closed.
    pub fn try_run<F>(&self, f: F) -> Result<(), F>
    where
        F: FnOnce(&mut Connection) + Send + 'static,
    {
        use mpsc::error::TrySendError;
        // A permit first, so that a refusal can hand back `f` itself rather than a boxed job.
        match self.tx.try_reserve() {
            Ok(permit) => {
                permit.send(Box::new(f));
                Ok(())
            }
            Err(TrySendError::Full(()) | TrySendError::Closed(())) => Err(f),
        }
    }

    /// Queues `f` and waits for room, not for `f` to run; `Err` once the store is closed.
    pub async fn run<F>(&self, f: F) -> Result<(), HubError>
    where
        F: FnOnce(&mut Connection) + Send + 'static,
    {
        self.tx
            .send(Box::new(f))
            .await
            .map_err(|_| HubError::StoreClosed)
    }

    /// Latency of [`Store::call`], queue wait included.
    pub fn latency(&self) -> &crate::stats::Histogram {
        &self.latency
    }
}
