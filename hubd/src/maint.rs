//! The maintenance socket, `<data-dir>/maint.sock` (0600, like the admin socket): what the hub's
//! own CLI asks a running hub that is not an operator request — its status (for `hubd status`)
//! and a backup (for `hubd backup`). Local only, so one JSON line each way rather than a wire
//! message: nothing here ever crosses the network.

use crate::backup;
use crate::local_socket::{self, LocalListener, LocalStream};
use crate::{HubCtx, HubError, HubPaths};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// File name of the socket in the data directory.
pub const SOCKET: &str = "maint.sock";
/// Longest request line: requests are a few words.
const MAX_REQUEST: u64 = 4096;
/// Longest response line a client accepts: a status is a few hundred bytes.
const MAX_RESPONSE: u64 = 1024 * 1024;
/// A client must send its request within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A backup may take this long (a multi-GiB database on a slow disk) before the client gives up.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

/// What the CLI asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MaintRequest {
    /// The hub's status.
    Status,
    /// A consistent copy of the database, written into the data directory's `backups/`.
    Backup,
    /// A test alert transition through the hub's notifier (`hubd notify test`).
    NotifyTest(crate::notify::test::NotifyTestSpec),
    /// The newest messages of the alert outbox (`hubd notify list`).
    NotifyList {
        /// How many, newest first.
        limit: u32,
    },
}

/// The hub's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum MaintResponse {
    /// The status.
    Status(HubStatus),
    /// A backup was made.
    Backup(backup::BackupInfo),
    /// A test transition was queued for these receivers.
    Notified {
        /// The receivers it was routed to.
        receivers: Vec<String>,
    },
    /// Messages of the alert outbox.
    Outbox {
        /// Newest first.
        messages: Vec<crate::store::outbox::OutboxRow>,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// A running hub as `hubd status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HubStatus {
    /// Process id.
    pub pid: u32,
    /// hubd version.
    pub version: String,
    /// When it started, ms since the epoch.
    pub started_ms: u64,
    /// Bound QUIC address.
    pub listen: SocketAddr,
    /// Bound Prometheus address, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Connected agents.
    pub agents_online: u64,
    /// Connected operators.
    pub operators_online: u64,
    /// The metrics interval in force (SIGHUP may have changed it).
    pub metrics_interval_ms: u32,
    /// Days of 1-minute history kept, in force.
    pub history_minute_days: u32,
    /// Days of 10-minute history kept, in force.
    pub history_ten_minute_days: u32,
}

/// Facts about this hub process the socket reports.
#[derive(Clone, Debug)]
pub(crate) struct Facts {
    pub(crate) paths: HubPaths,
    pub(crate) listen: SocketAddr,
    pub(crate) metrics_listen: Option<SocketAddr>,
    pub(crate) started_ms: u64,
}

/// Binds the socket (the data-dir lock proves a leftover one is stale).
pub(crate) fn bind(path: &Path) -> Result<LocalListener, HubError> {
    LocalListener::bind(path).map_err(|e| HubError::io(format!("bind {}", path.display()), e))
}

/// Serves the socket until cancelled.
pub(crate) async fn serve(
    ctx: Arc<HubCtx>,
    facts: Facts,
    mut listener: LocalListener,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let facts = Arc::new(facts);
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "maintenance socket accept failed");
                    continue;
                }
            },
        };
        let (ctx, facts) = (ctx.clone(), facts.clone());
        tracker.spawn(async move { serve_one(&ctx, &facts, stream).await });
    }
}

async fn serve_one(ctx: &HubCtx, facts: &Facts, stream: LocalStream) {
    let (read, mut write) = tokio::io::split(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        BufReader::new(read.take(MAX_REQUEST)).read_line(&mut line),
    )
    .await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let resp = match serde_json::from_str::<MaintRequest>(line.trim()) {
        Ok(req) => answer(ctx, facts, req).await,
        Err(e) => MaintResponse::Error {
            message: format!("bad request: {e}"),
        },
    };
    let Ok(mut out) = serde_json::to_vec(&resp) else {
        return;
    };
    out.push(b'\n');
    let _ = write.write_all(&out).await;
    let _ = write.shutdown().await;
}

async fn answer(ctx: &HubCtx, facts: &Facts, req: MaintRequest) -> MaintResponse {
    match req {
        MaintRequest::Status => {
            let retention = ctx.history.retention();
            MaintResponse::Status(HubStatus {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").into(),
                started_ms: facts.started_ms,
                listen: facts.listen,
                metrics_listen: facts.metrics_listen,
                agents_online: ctx.registry.online_count() as u64,
                operators_online: ctx.registry.operator_count() as u64,
                metrics_interval_ms: ctx.registry.default_interval_ms(),
                history_minute_days: retention.minute_days,
                history_ten_minute_days: retention.ten_minute_days,
            })
        }
        MaintRequest::Backup => {
            let paths = facts.paths.clone();
            let made = tokio::task::spawn_blocking(move || backup::online(&paths)).await;
            match made {
                Ok(Ok(info)) => {
                    let (target, detail) = (
                        info.path.display().to_string(),
                        format!("bytes={} schema={}", info.bytes, info.schema_version),
                    );
                    let now = crate::store::now_ms();
                    let _ = ctx
                        .store
                        .call(move |c| {
                            Ok(crate::store::audit::append(
                                c,
                                now,
                                "local-admin",
                                "backup",
                                &target,
                                &detail,
                            )?)
                        })
                        .await;
                    tracing::info!(path = %info.path.display(), bytes = info.bytes, "backup made");
                    MaintResponse::Backup(info)
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "backup failed");
                    MaintResponse::Error {
                        message: e.to_string(),
                    }
                }
                Err(e) => MaintResponse::Error {
                    message: format!("backup task: {e}"),
                },
            }
        }
        MaintRequest::NotifyTest(spec) => crate::notify::test::answer(ctx, spec).await,
        MaintRequest::NotifyList { limit } => crate::notify::test::list(ctx, limit).await,
    }
}

/// Asks the hub serving `data_dir`; `Ok(None)` if none listens there.
pub async fn request(
    data_dir: &Path,
    req: &MaintRequest,
) -> Result<Option<MaintResponse>, HubError> {
    let path: PathBuf = data_dir.join(SOCKET);
    let ctx = |what: &str, e: std::io::Error| HubError::io(format!("{what} {}", path.display()), e);
    let Some(stream) = local_socket::connect(&path)
        .await
        .map_err(|e| ctx("connect", e))?
    else {
        return Ok(None);
    };
    let (read, mut write) = tokio::io::split(stream);
    let mut line = serde_json::to_vec(req).map_err(|e| HubError::Config(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(|e| ctx("write", e))?;
    let limit = match req {
        MaintRequest::Backup => BACKUP_TIMEOUT,
        _ => REQUEST_TIMEOUT,
    };
    let mut answer = String::new();
    tokio::time::timeout(
        limit,
        BufReader::new(read.take(MAX_RESPONSE)).read_line(&mut answer),
    )
    .await
    .map_err(|_| {
        ctx(
            "no answer within the deadline on",
            std::io::ErrorKind::TimedOut.into(),
        )
    })?
    .map_err(|e| ctx("read", e))?;
    serde_json::from_str(answer.trim())
        .map(Some)
        .map_err(|e| HubError::Config(format!("{}: bad answer: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_word() {
        assert_eq!(
            serde_json::to_string(&MaintRequest::Backup).expect("json"),
            r#"{"op":"backup"}"#
        );
        let r: MaintRequest = serde_json::from_str(r#"{"op":"status"}"#).expect("de");
        assert_eq!(r, MaintRequest::Status);
    }

    #[test]
    fn notify_requests_and_answers_serialise() {
        let answer = MaintResponse::Outbox {
            messages: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&answer).expect("json"),
            r#"{"result":"outbox","messages":[]}"#
        );
        let req: MaintRequest =
            serde_json::from_str(r#"{"op":"notify_list","limit":5}"#).expect("de");
        assert_eq!(req, MaintRequest::NotifyList { limit: 5 });
        let spec = crate::notify::test::NotifyTestSpec {
            receivers: vec!["ops".into()],
            severity: crate::notify::Severity::Critical,
            state: crate::notify::TransitionState::Firing,
            rule: "disk".into(),
            agent: "web-1".into(),
            subject: None,
            summary: "s".into(),
        };
        let text = serde_json::to_string(&MaintRequest::NotifyTest(spec.clone())).expect("json");
        assert_eq!(
            serde_json::from_str::<MaintRequest>(&text).expect("de"),
            MaintRequest::NotifyTest(spec)
        );
    }
}
