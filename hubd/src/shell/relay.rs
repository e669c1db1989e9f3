//! One shell session on the hub: checks, the agent's stream, the recording, and the relay both
//! ways.
//!
//! Output: the hub reads the next frame from the agent only once the last was recorded and
//! written to the operator, so it holds one chunk per session and QUIC flow control slows the
//! program on the agent to the operator's pace. Keystrokes travel on their own path, so a
//! keystroke (Ctrl-C) never waits behind a flood of output.

use super::{LiveEvent, LiveSession};
use crate::HubCtx;
use crate::admin::Actor;
use crate::shell::recording::{Recording, RecordingMeta};
use crate::store::{self, now_ms};
use flotilla_wire::frame;
use flotilla_wire::io::{FrameError, read_frame, write_frame};
use flotilla_wire::limits::MAX_SHELL_FRAME;
use flotilla_wire::msg::HubStreamOpen;
use flotilla_wire::shell::{
    MAX_SHELL_CHUNK, ShellEnd, ShellExit, ShellFrame, ShellOpen, ShellRequest, ShellSessionId,
};
use flotilla_wire::{Chunk, ErrorCode, Role};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Longest wait for the operator's request, for the agent to take the stream and for it to
/// answer `Started`: a peer that says nothing must not hold a stream for ever.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

async fn refuse(send: &mut quinn::SendStream, code: ErrorCode, message: impl Into<String>) {
    let _ = write_frame(send, &ShellFrame::refused(code, message), MAX_SHELL_FRAME).await;
    let _ = send.finish();
}

async fn audit(ctx: &HubCtx, actor: &Actor, action: &'static str, target: String, detail: String) {
    let who = actor.name.clone();
    let written = ctx
        .store
        .call(move |c| {
            Ok(store::audit::append(
                c,
                now_ms(),
                &who,
                action,
                &target,
                &detail,
            )?)
        })
        .await;
    if let Err(e) = written {
        tracing::error!(error = %e, "could not write audit record");
    }
}

/// Closes and removes the recording of a session that never started (the agent refused or
/// could not be reached): nothing ran, and the audit log says why.
async fn discard(recording: Option<Recording>) {
    if let Some(rec) = recording {
        let path = rec.path().to_path_buf();
        let _ = rec.finish(None, "never started").await;
        if let Err(e) = tokio::fs::remove_file(&path).await {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an unused recording");
        }
    }
}

/// How a session ended, from the hub's point of view.
enum Outcome {
    /// The agent sent the last frame (`Exit` or `Closed`); it was forwarded.
    Agent(ShellFrame),
    /// The hub ends it: this frame goes to the operator, the agent stream is reset.
    Hub(ShellFrame),
    /// The operator hung up: the agent stream is reset, nothing more to send.
    HungUp,
}

/// Serves one operator shell stream.
pub(super) async fn serve(
    ctx: Arc<HubCtx>,
    actor: Actor,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    cancel: CancellationToken,
) {
    let read = read_frame::<ShellRequest, _>(&mut recv, MAX_SHELL_FRAME);
    let req = match tokio::time::timeout(SETUP_TIMEOUT, read).await {
        Ok(Ok(Some(req))) => req,
        Ok(Ok(None)) => return,
        Err(_) => {
            let code = ErrorCode::Timeout.as_u32().into();
            let _ = send.reset(code);
            let _ = recv.stop(code);
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "bad shell request");
            let code = crate::session::frame_error_code(&e);
            let _ = send.reset(code.as_u32().into());
            let _ = recv.stop(code.as_u32().into());
            return;
        }
    };
    let target = match &req.container {
        Some(c) => format!("{}/{c}", req.agent),
        None => req.agent.clone(),
    };
    if let Err(message) = req.validate() {
        return refuse(&mut send, ErrorCode::BadRequest, message).await;
    }
    if !actor.role.can_act() {
        let reason = format!(
            "shells need the operator or admin role; you are {}",
            actor.role
        );
        crate::admin::audit_denied(&ctx, &actor, "shell", target, &reason).await;
        return refuse(&mut send, ErrorCode::Forbidden, reason).await;
    }
    let q = req.agent.clone();
    let row = match ctx
        .store
        .call(move |c| Ok(store::identities::find(c, &q)?))
        .await
    {
        Ok(Some(row)) if row.role == Role::Agent => row,
        Ok(_) => {
            let message = format!("no agent named {:?}", req.agent);
            return refuse(&mut send, ErrorCode::NotFound, message).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "shell lookup failed");
            return refuse(&mut send, ErrorCode::Internal, "lookup failed").await;
        }
    };
    let Some(conn) = ctx.registry.connection(&row.id) else {
        let message = format!("agent {} is offline", row.name);
        return refuse(&mut send, ErrorCode::NotFound, message).await;
    };
    let shells = ctx.shells.clone();
    let session_id = ShellSessionId(u64::from_le_bytes(flotilla_certs::random_bytes()));
    let started_ms = now_ms();
    let meta = RecordingMeta {
        id: session_id.to_string(),
        started_ms,
        cols: req.size.cols,
        rows: req.size.rows,
        command: req.command.join(" "),
        title: format!("{}@{target}", actor.name),
        term: req.term.clone(),
        record_input: shells.record_input,
    };
    let recording = match Recording::create(&shells.recordings_dir, meta).await {
        Ok(r) => Some(r),
        Err(e) if shells.recording_required => {
            tracing::error!(error = %e, "cannot record a shell session; refusing it");
            let message =
                "the hub cannot record shell sessions (see its log), and recordings are required";
            return refuse(&mut send, ErrorCode::Internal, message).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "shell session not recorded (recordings_required = false)");
            None
        }
    };
    let open = HubStreamOpen::Shell(ShellOpen {
        session_id,
        container: req.container.clone(),
        command: req.command.clone(),
        term: req.term.clone(),
        size: req.size,
        actor: actor.name.clone(),
    });
    let opened = tokio::time::timeout(SETUP_TIMEOUT, async {
        let (mut s, mut r) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut s, &open, MAX_SHELL_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        let first = read_frame::<ShellFrame, _>(&mut r, MAX_SHELL_FRAME)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((s, r, first))
    })
    .await;
    let (mut agent_send, mut agent_recv) = match opened {
        Ok(Ok((s, r, Some(ShellFrame::Started { .. })))) => (s, r),
        Ok(Ok((_, _, Some(ShellFrame::Refused(refusal))))) => {
            discard(recording).await;
            audit(
                &ctx,
                &actor,
                "shell.open",
                target,
                format!("session={session_id} refused: {}", refusal.message),
            )
            .await;
            return refuse(&mut send, refusal.code, refusal.message).await;
        }
        Ok(Ok((_, _, other))) => {
            tracing::info!(agent = %row.name, frame = ?other, "shell: unexpected first frame");
            let message = format!("agent {} did not start the shell", row.name);
            discard(recording).await;
            return refuse(&mut send, ErrorCode::Internal, message).await;
        }
        Ok(Err(e)) => {
            tracing::info!(agent = %row.name, error = %e, "shell: agent unreachable");
            let message = format!("could not reach agent {}", row.name);
            discard(recording).await;
            return refuse(&mut send, ErrorCode::NotFound, message).await;
        }
        Err(_) => {
            let message = format!(
                "agent {} did not start the shell within {} s",
                row.name,
                SETUP_TIMEOUT.as_secs()
            );
            discard(recording).await;
            return refuse(&mut send, ErrorCode::Timeout, message).await;
        }
    };
    let command = if req.command.is_empty() {
        "login shell".to_string()
    } else {
        req.command.join(" ")
    };
    audit(
        &ctx,
        &actor,
        "shell.open",
        target.clone(),
        format!(
            "session={session_id} command={command:?} size={}x{}",
            req.size.cols, req.size.rows
        ),
    )
    .await;
    tracing::info!(actor = %actor.name, %target, %session_id, "shell started");
    super::sessions::opened(
        &ctx,
        super::sessions::NewSession {
            id: session_id,
            operator: actor.name.clone(),
            operator_name: String::new(),
            agent: row.id.to_string(),
            agent_name: row.name.clone(),
            container: req.container.clone().unwrap_or_default(),
            command: req.command.join(" "),
            started_ms,
            file: super::sessions::file_name(recording.as_ref().map(Recording::path)),
        },
    )
    .await;
    let (notice_tx, notice_rx) = mpsc::channel(super::NOTICE_QUEUE);
    let (output, _) = broadcast::channel(super::LIVE_BACKLOG);
    let (live, _guard) = shells.register(LiveSession {
        id: session_id,
        operator: actor.name.clone(),
        agent: row.name.clone(),
        container: req.container.clone(),
        command: req.command.clone(),
        started_ms,
        size: std::sync::Mutex::new(req.size),
        output,
        notices: notice_tx,
    });
    let started = ShellFrame::Started { session_id };
    let counts = Counts::default();
    let mut recording = recording;
    let outcome = if write_frame(&mut send, &started, MAX_SHELL_FRAME)
        .await
        .is_err()
    {
        Outcome::HungUp
    } else {
        let pipes = Pipes {
            operator_send: &mut send,
            operator_recv: &mut recv,
            agent_send: &mut agent_send,
            agent_recv: &mut agent_recv,
        };
        relay(
            pipes,
            &live,
            &mut recording,
            shells.recording_required,
            notice_rx,
            &counts,
            &cancel,
            &conn,
            &row.name,
        )
        .await
    };
    let last = match &outcome {
        Outcome::Agent(f) | Outcome::Hub(f) => Some(f.clone()),
        Outcome::HungUp => None,
    };
    match &outcome {
        Outcome::Agent(_) => {
            let _ = send.finish();
            let _ = agent_send.finish();
        }
        Outcome::Hub(frame) => {
            let code = ErrorCode::Cancelled.as_u32().into();
            let _ = agent_send.reset(code);
            let _ = agent_recv.stop(code);
            let _ = write_frame(&mut send, frame, MAX_SHELL_FRAME).await;
            let _ = send.finish();
        }
        Outcome::HungUp => {
            let code = ErrorCode::Cancelled.as_u32().into();
            let _ = agent_send.reset(code);
            let _ = agent_recv.stop(code);
        }
    }
    let (exit, reason) = describe(last.as_ref());
    live.publish(LiveEvent::Ended(last.unwrap_or(ShellFrame::Closed {
        reason: ShellEnd::Error,
        message: "the operator hung up".into(),
    })));
    let finished = match recording {
        Some(rec) => Some(rec.finish(exit, &reason).await),
        None => None,
    };
    super::sessions::ended(
        &ctx,
        session_id,
        exit,
        &reason,
        counts.output.load(Ordering::Relaxed),
        finished.as_ref().and_then(|f| f.as_ref().ok()),
    )
    .await;
    let recorded = match finished {
        Some(finished) => match finished {
            Ok(summary) => format!(
                "recording={} size={}",
                summary
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                summary.size
            ),
            Err(e) => {
                tracing::error!(error = %e, %session_id, "shell recording incomplete");
                "recording=failed".into()
            }
        },
        None => "recording=none".into(),
    };
    let duration_ms = now_ms().saturating_sub(started_ms);
    let exit_text = exit.map_or("-".to_string(), |c| c.to_string());
    audit(
        &ctx,
        &actor,
        "shell.end",
        target.clone(),
        format!(
            "session={session_id} exit={exit_text} reason={reason:?} duration_ms={duration_ms} bytes_out={} bytes_in={} {recorded}",
            counts.output.load(Ordering::Relaxed),
            counts.input.load(Ordering::Relaxed),
        ),
    )
    .await;
    tracing::info!(actor = %actor.name, %target, %session_id, exit = %exit_text, %reason, duration_ms, "shell ended");
}

/// Exit status (code, or 128 + signal) and words for the audit and the recording.
fn describe(last: Option<&ShellFrame>) -> (Option<i32>, String) {
    match last {
        Some(ShellFrame::Exit(e)) => {
            let words = match e {
                ShellExit::Code(c) => format!("exited with status {c}"),
                ShellExit::Signal(s) => format!("killed by signal {s}"),
            };
            (Some(e.status()), words)
        }
        Some(ShellFrame::Closed { reason, message }) => {
            (None, format!("{}: {message}", reason.describe()))
        }
        Some(other) => (None, format!("{other:?}")),
        None => (None, "the operator hung up".into()),
    }
}

/// Bytes relayed each way, for the audit.
#[derive(Default)]
struct Counts {
    output: AtomicU64,
    input: AtomicU64,
}

struct Pipes<'a> {
    operator_send: &'a mut quinn::SendStream,
    operator_recv: &'a mut quinn::RecvStream,
    agent_send: &'a mut quinn::SendStream,
    agent_recv: &'a mut quinn::RecvStream,
}

/// Relays until the agent ends the session, the operator hangs up, the hub shuts down, the agent
/// goes away or (when required) the recording fails.
#[allow(clippy::too_many_arguments)]
async fn relay(
    pipes: Pipes<'_>,
    live: &LiveSession,
    recording: &mut Option<Recording>,
    recording_required: bool,
    mut notices: mpsc::Receiver<String>,
    counts: &Counts,
    cancel: &CancellationToken,
    conn: &quinn::Connection,
    agent: &str,
) -> Outcome {
    let Pipes {
        operator_send,
        operator_recv,
        agent_send,
        agent_recv,
    } = pipes;
    let agent_gone = |detail: String| {
        let reason = match conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(c))
                if ErrorCode::from_u32(c.error_code.into_inner()) == Some(ErrorCode::Goodbye) =>
            {
                ShellEnd::AgentShuttingDown
            }
            _ => ShellEnd::AgentGone,
        };
        Outcome::Hub(ShellFrame::Closed {
            reason,
            message: format!("agent {agent}: {detail}"),
        })
    };
    let rec = recording.as_ref();
    let down = async {
        let mut frames = AgentFrames::default();
        loop {
            let frame = tokio::select! {
                f = frames.next(agent_recv) => f,
                Some(text) = notices.recv() => {
                    let notice = ShellFrame::Notice(text);
                    if write_frame(operator_send, &notice, MAX_SHELL_FRAME).await.is_err() {
                        return Outcome::HungUp;
                    }
                    continue;
                }
            };
            let frame = match frame {
                Ok(Some(f)) => f,
                Ok(None) => return agent_gone("ended the stream early".into()),
                Err(e) => {
                    let detail = conn
                        .close_reason()
                        .map(|r| crate::session::describe_close(&r))
                        .unwrap_or_else(|| e.to_string());
                    return agent_gone(detail);
                }
            };
            match frame {
                ShellFrame::Data(Chunk(data)) => {
                    if let Some(rec) = rec
                        && let Err(e) = rec.output(now_ms(), &data).await
                        && recording_required
                    {
                        tracing::error!(error = %e, "shell recording failed");
                        return recording_failed();
                    }
                    counts
                        .output
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    let frame = ShellFrame::Data(Chunk(data));
                    if write_frame(operator_send, &frame, MAX_SHELL_FRAME)
                        .await
                        .is_err()
                    {
                        return Outcome::HungUp;
                    }
                    if let ShellFrame::Data(Chunk(data)) = frame {
                        live.publish(LiveEvent::Output(bytes::Bytes::from(data)));
                    }
                }
                f @ (ShellFrame::Exit(_) | ShellFrame::Closed { .. }) => {
                    let _ = write_frame(operator_send, &f, MAX_SHELL_FRAME).await;
                    return Outcome::Agent(f);
                }
                other => {
                    tracing::debug!(frame = ?other, "unexpected shell frame from the agent");
                }
            }
        }
    };
    let up = async {
        loop {
            let Ok(Some(frame)) = read_frame::<ShellFrame, _>(operator_recv, MAX_SHELL_FRAME).await
            else {
                return Outcome::HungUp;
            };
            match &frame {
                ShellFrame::Data(Chunk(data)) => {
                    counts.input.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if let Some(rec) = rec
                        && let Err(e) = rec.input(now_ms(), data).await
                        && recording_required
                    {
                        tracing::error!(error = %e, "shell recording failed");
                        return recording_failed();
                    }
                }
                ShellFrame::Resize(size) if size.valid() => {
                    live.set_size(*size);
                    live.publish(LiveEvent::Resize(*size));
                    if let Some(rec) = rec
                        && let Err(e) = rec.resize(now_ms(), size.cols, size.rows).await
                        && recording_required
                    {
                        tracing::error!(error = %e, "shell recording failed");
                        return recording_failed();
                    }
                }
                _ => continue,
            }
            if write_frame(agent_send, &frame, MAX_SHELL_FRAME)
                .await
                .is_err()
            {
                return agent_gone("stopped reading keystrokes".into());
            }
        }
    };
    let rec_failed = async {
        match rec {
            Some(r) if recording_required => r.failed().await,
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        o = down => o,
        o = up => o,
        () = rec_failed => recording_failed(),
        () = cancel.cancelled() => Outcome::Hub(ShellFrame::Closed {
            reason: ShellEnd::HubShuttingDown,
            message: "the hub is shutting down".into(),
        }),
    }
}

fn recording_failed() -> Outcome {
    Outcome::Hub(ShellFrame::Closed {
        reason: ShellEnd::RecordingFailed,
        message: "the hub could not write the session's recording (see its log), and recordings are required".into(),
    })
}

/// Bytes asked of the agent's stream at a time: one full output chunk and its frame envelope.
const AGENT_READ: usize = MAX_SHELL_CHUNK + 64;

/// Frames from the agent's stream, read so that waiting for the next one can be abandoned
/// (cancel-safe: what was read stays buffered). The output loop can then wait for the agent and
/// for notices in one `select!` of the session's task, instead of a reader in the same task
/// handing each frame over a channel, which woke the task a second time per chunk and, on the
/// multi-thread runtime, woke another worker thread for nothing (shell keystroke bench in
/// docs/benchmarks.md). More is read only when no whole frame is buffered, and at most one
/// chunk's worth, so the hub still holds about one chunk per session and QUIC flow control keeps
/// the program on the agent at the operator's pace.
#[derive(Default)]
struct AgentFrames {
    buf: bytes::BytesMut,
}

impl AgentFrames {
    /// The next frame; `Ok(None)` at a clean end of the stream. Cancel-safe.
    async fn next(
        &mut self,
        recv: &mut quinn::RecvStream,
    ) -> Result<Option<ShellFrame>, FrameError> {
        use bytes::BufMut;
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(frame) = frame::decode(&mut self.buf, MAX_SHELL_FRAME)? {
                return Ok(Some(frame));
            }
            self.buf.reserve(AGENT_READ);
            if recv
                .read_buf(&mut (&mut self.buf).limit(AGENT_READ))
                .await?
                == 0
            {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }
}
