//! Unit actions as exec jobs: start, stop, restart and reload queue a systemd job (mode `replace`)
//! and wait for its `JobRemoved` signal; enable and disable change the unit files, then reload the
//! manager. One line per unit on stdout, errors on stderr, exit 0 when every unit succeeded, 1
//! otherwise. The exec timeout and cancel stop the waiting; a job systemd already queued runs on.
//!
//! Generic over the stream halves so tests drive it through in-memory pipes.

use super::services::{Bus, ManagerProxy, get_all, manager};
use flotilla_wire::exec::{
    AgentEvent, Chunk, ExecControl, ExecFailure, ExecStart, ExitReport, FailureKind, OutputStream,
};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::MAX_EXEC_FRAME;
use flotilla_wire::workloads::ServiceAction;
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use zbus::OwnedObjectPath;

/// Job mode of start, stop, restart and reload: as `systemctl` does, a new job replaces a
/// conflicting queued one.
const JOB_MODE: &str = "replace";

/// Writes one line of output; false when the hub stream is gone.
async fn line<W: AsyncWrite + Unpin>(send: &mut W, stream: OutputStream, text: &str) -> bool {
    let ev = AgentEvent::Output {
        stream,
        data: Chunk(format!("{text}\n").into_bytes()),
    };
    write_frame(send, &ev, MAX_EXEC_FRAME).await.is_ok()
}

/// The text of a D-Bus error: systemd's own message for a method error (`Unit x.service not
/// found.`), else zbus's description.
fn explain(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(_, Some(message), _) => message.clone(),
        other => other.to_string(),
    }
}

/// Runs `action` on `units` for `start` and reports on `send`; `recv` carries cancels.
pub async fn run<W, R>(
    bus: Bus,
    action: ServiceAction,
    units: &[String],
    start: &ExecStart,
    mut send: W,
    mut recv: R,
) where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    let began = Instant::now();
    let conn = match bus.connect().await {
        Ok(c) => c,
        Err(e) => {
            let ev = AgentEvent::Failed(ExecFailure {
                kind: FailureKind::Spawn,
                message: format!("systemd is not reachable over D-Bus ({bus:?} bus): {e}"),
            });
            let _ = write_frame(&mut send, &ev, MAX_EXEC_FRAME).await;
            let _ = send.shutdown().await;
            return;
        }
    };
    let timeout = (start.timeout_ms > 0).then(|| Duration::from_millis(start.timeout_ms));
    let far = Duration::from_secs(100 * 365 * 86_400);
    let (mut timed_out, mut cancelled) = (false, false);
    let mut all_ok = false;
    {
        let work = act(&conn, action, units, &mut send);
        // Cancel, end of stream and a broken stream all mean the hub no longer wants this.
        let control = read_frame::<ExecControl, _>(&mut recv, MAX_EXEC_FRAME);
        tokio::select! {
            ok = work => all_ok = ok,
            _ = control => {
                tracing::info!("cancelled: no longer waiting for systemd");
                cancelled = true;
            }
            _ = tokio::time::sleep(timeout.unwrap_or(far)) => {
                tracing::info!("timed out waiting for systemd");
                timed_out = true;
            }
        }
    }
    let report = ExitReport {
        code: (!timed_out && !cancelled).then_some(if all_ok { 0 } else { 1 }),
        signal: None,
        duration_ms: began.elapsed().as_millis() as u64,
        timed_out,
        cancelled,
    };
    let _ = write_frame(&mut send, &AgentEvent::Exited(report), MAX_EXEC_FRAME).await;
    let _ = send.shutdown().await;
}

/// Does the work; true when every unit succeeded. Lines go out as each unit finishes.
async fn act<W: AsyncWrite + Unpin>(
    conn: &zbus::Connection,
    action: ServiceAction,
    units: &[String],
    send: &mut W,
) -> bool {
    let manager = match manager(conn).await {
        Ok(m) => m,
        Err(e) => {
            let _ = line(
                send,
                OutputStream::Stderr,
                &format!("systemd: {}", explain(&e)),
            )
            .await;
            return false;
        }
    };
    match action {
        ServiceAction::Enable | ServiceAction::Disable => {
            unit_files(&manager, action, units, send).await
        }
        _ => jobs(conn, &manager, action, units, send).await,
    }
}

/// Start, stop, restart or reload each unit in turn, each waited for before the next.
async fn jobs<W: AsyncWrite + Unpin>(
    conn: &zbus::Connection,
    manager: &ManagerProxy<'static>,
    action: ServiceAction,
    units: &[String],
    send: &mut W,
) -> bool {
    // The signal stream exists before the first job is queued, so no JobRemoved is missed.
    let mut removed = match manager.receive_job_removed().await {
        Ok(s) => s,
        Err(e) => {
            let _ = line(
                send,
                OutputStream::Stderr,
                &format!("systemd: {}", explain(&e)),
            )
            .await;
            return false;
        }
    };
    if let Err(e) = manager.subscribe().await {
        tracing::debug!(error = %e, "subscribe (already subscribed?)");
    }
    let verb = action.as_str();
    let mut all_ok = true;
    for unit in units {
        let queued = match action {
            ServiceAction::Start => manager.start_unit(unit, JOB_MODE).await,
            ServiceAction::Stop => manager.stop_unit(unit, JOB_MODE).await,
            ServiceAction::Restart => manager.restart_unit(unit, JOB_MODE).await,
            _ => manager.reload_unit(unit, JOB_MODE).await,
        };
        let job: OwnedObjectPath = match queued {
            Ok(j) => j,
            Err(e) => {
                all_ok = false;
                let text = format!("{unit}: {verb} failed: {}", explain(&e));
                if !line(send, OutputStream::Stderr, &text).await {
                    return false;
                }
                continue;
            }
        };
        let mut result = None;
        while let Some(signal) = removed.next().await {
            if let Ok(args) = signal.args()
                && args.job == job
            {
                result = Some(args.result.clone());
                break;
            }
        }
        let result = result.unwrap_or_else(|| "lost (the bus closed)".into());
        let now = unit_state(conn, manager, unit).await;
        let (stream, text) = if result == "done" {
            (OutputStream::Stdout, format!("{unit}: {verb} done{now}"))
        } else {
            all_ok = false;
            (
                OutputStream::Stderr,
                format!(
                    "{unit}: {verb} {result}{now}; see its journal: flotilla logs AGENT --unit {unit}"
                ),
            )
        };
        if !line(send, stream, &text).await {
            return false;
        }
    }
    all_ok
}

/// `, now active (running)`, or nothing when the unit is no longer loaded.
async fn unit_state(
    conn: &zbus::Connection,
    manager: &ManagerProxy<'static>,
    unit: &str,
) -> String {
    let Ok(path) = manager.get_unit(unit).await else {
        return String::new();
    };
    match get_all(conn, &path, super::services::UNIT_IFACE).await {
        Ok(props) => {
            let word = |k: &str| {
                props
                    .get(k)
                    .and_then(|v| <&str>::try_from(v).ok())
                    .unwrap_or("?")
                    .to_string()
            };
            format!(", now {} ({})", word("ActiveState"), word("SubState"))
        }
        Err(_) => String::new(),
    }
}

/// Enable or disable each unit's file, then one daemon reload if anything changed.
async fn unit_files<W: AsyncWrite + Unpin>(
    manager: &ManagerProxy<'static>,
    action: ServiceAction,
    units: &[String],
    send: &mut W,
) -> bool {
    let mut all_ok = true;
    let mut changed = false;
    for unit in units {
        let files = [unit.as_str()];
        let outcome = if action == ServiceAction::Enable {
            manager
                .enable_unit_files(&files, false, false)
                .await
                .map(|(install_info, changes)| (Some(install_info), changes))
        } else {
            manager
                .disable_unit_files(&files, false)
                .await
                .map(|changes| (None, changes))
        };
        let mut lines = Vec::new();
        match outcome {
            Ok((install_info, changes)) => {
                changed |= !changes.is_empty();
                let done = if action == ServiceAction::Enable {
                    "enabled"
                } else {
                    "disabled"
                };
                lines.push((OutputStream::Stdout, format!("{unit}: {done}")));
                for (kind, link, target) in changes {
                    let text = if kind == "symlink" {
                        format!("  created symlink {link} -> {target}")
                    } else {
                        format!("  {kind} {link}")
                    };
                    lines.push((OutputStream::Stdout, text));
                }
                if install_info == Some(false) {
                    lines.push((
                        OutputStream::Stderr,
                        format!(
                            "{unit}: the unit file has no [Install] section: nothing to enable"
                        ),
                    ));
                }
            }
            Err(e) => {
                all_ok = false;
                lines.push((
                    OutputStream::Stderr,
                    format!("{unit}: {} failed: {}", action.as_str(), explain(&e)),
                ));
            }
        }
        for (stream, text) in lines {
            if !line(send, stream, &text).await {
                return false;
            }
        }
    }
    if changed && let Err(e) = manager.reload().await {
        all_ok = false;
        let _ = line(
            send,
            OutputStream::Stderr,
            &format!("daemon reload failed: {}", explain(&e)),
        )
        .await;
    }
    all_ok
}
