//! Container actions as a job: one line per container on stdout when done, the engine's reason on
//! stderr when not; exit 0 when every container did it, 1 otherwise. Containers are acted on one
//! after another; a cancel or the job's timeout stops before the next one.

use super::Engine;
use flotilla_wire::Chunk;
use flotilla_wire::exec::{AgentEvent, ExecControl, ExecStart, ExitReport, OutputStream};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::MAX_EXEC_FRAME;
use flotilla_wire::workloads::ContainerAction;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

fn done_word(action: ContainerAction) -> &'static str {
    match action {
        ContainerAction::Start => "started",
        ContainerAction::Stop => "stopped",
        ContainerAction::Restart => "restarted",
        ContainerAction::Kill => "killed",
        ContainerAction::Remove => "removed",
    }
}

/// Runs `action` on each of `containers` and reports on `send`; `recv` carries the cancel.
pub async fn run<W, R>(
    engine: &Engine,
    action: ContainerAction,
    containers: &[String],
    stop_timeout_s: Option<u32>,
    start: &ExecStart,
    mut send: W,
    mut recv: R,
) where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    let began = Instant::now();
    let deadline = (start.timeout_ms > 0)
        .then(|| tokio::time::Instant::now() + Duration::from_millis(start.timeout_ms));
    let cancel = read_frame::<ExecControl, _>(&mut recv, MAX_EXEC_FRAME);
    tokio::pin!(cancel);
    let (mut failures, mut cancelled, mut timed_out) = (0usize, false, false);
    for name in containers {
        let act = engine.act(action, name, stop_timeout_s);
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            r = act => r,
            _ = &mut cancel => { cancelled = true; break }
            () = expired => { timed_out = true; break }
        };
        let (stream, line) = match outcome {
            Ok(()) => (
                OutputStream::Stdout,
                format!("{name}: {}\n", done_word(action)),
            ),
            Err(e) => {
                failures += 1;
                (OutputStream::Stderr, format!("{name}: {e}\n"))
            }
        };
        tracing::info!(actor = %start.actor, container = %name, action = action.as_str(), ok = stream == OutputStream::Stdout, "container action");
        let ev = AgentEvent::Output {
            stream,
            data: Chunk(line.into_bytes()),
        };
        if write_frame(&mut send, &ev, MAX_EXEC_FRAME).await.is_err() {
            return;
        }
    }
    let ok = failures == 0 && !cancelled && !timed_out;
    let report = AgentEvent::Exited(ExitReport {
        code: Some(if ok { 0 } else { 1 }),
        signal: None,
        duration_ms: began.elapsed().as_millis() as u64,
        timed_out,
        cancelled,
    });
    let _ = write_frame(&mut send, &report, MAX_EXEC_FRAME).await;
    let _ = send.shutdown().await;
}
