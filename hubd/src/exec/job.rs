//! Running one job: a task per target, at most `batch` of them talking to agents at once, all
//! forwarding into one bounded queue that a single writer drains onto the operator's stream.
//!
//! Back-pressure: when the operator reads slowly the queue fills, the agent tasks wait to enqueue,
//! stop reading their agent streams, and QUIC flow control stops the agents, whose pipes then fill
//! and block the commands. Nothing in the hub grows with a command's output.
//!
//! Cancel: Ctrl-C (an [`ExecControl::Cancel`] from the operator), the operator disconnecting, or the
//! hub shutting down cancels the job: running agents are sent a cancel, waiting ones never start.

use super::{Planned, Prepared, audit};
use crate::HubCtx;
use crate::session::describe_close;
use crate::stats::{Direction, Stats, StreamKind};
use crate::store::{self, now_ms};
use bytes::{Bytes, BytesMut};
use flotilla_wire::exec::{
    AgentEvent, AgentResult, Chunk, ExecCommand, ExecControl, ExecEvent, ExecFailure, ExecStart,
    FailureKind, HubStreamOpen, JobCounts, JobId, JobSummary, OUTPUT_TAIL, Outcome, OutputStream,
    TARGETS_PER_FRAME,
};
use flotilla_wire::exec::{MAX_CHUNK, encode_forward, peek_output};
use flotilla_wire::io::{read_frame, read_frame_body, write_frame};
use flotilla_wire::limits::MAX_EXEC_FRAME;
use flotilla_wire::{ErrorCode, IdentityId};
use flotilla_wire::{decode_body, encode};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Operator-bound events queued per job. With chunks of at most 64 KiB this holds at most 2 MiB per
/// job, and is deep enough that small events from many agents do not wait on one another.
const EVENT_QUEUE: usize = 32;
/// Time to open a stream on an agent's connection and send the opener.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// After a cancel, how long an agent gets to report the kill: its SIGTERM grace is seconds.
const CANCEL_CONFIRM: Duration = Duration::from_secs(60);
/// How far past the job's timeout the hub waits for an agent that has not reported, before it
/// calls the agent lost (the agent enforces the timeout itself; this only catches a hung agent).
const TIMEOUT_SLACK: Duration = Duration::from_secs(60);

/// Outcome message of agents a cancel reached before their turn.
const BEFORE_TURN: &str = "job cancelled before this agent's turn";

/// How the operator's half of the exec stream ended.
enum ControlEnd {
    /// Ctrl-C.
    Cancel,
    /// The operator finished its side: no more controls, keep going.
    Eof,
    /// Reset, malformed, or the connection went away.
    Gone,
}

/// Not cancel-safe; it is pinned for the life of the job and dropped only at its end.
async fn read_control(recv: &mut quinn::RecvStream) -> ControlEnd {
    match read_frame::<ExecControl, _>(recv, MAX_EXEC_FRAME).await {
        Ok(Some(ExecControl::Cancel)) => ControlEnd::Cancel,
        Ok(None) => ControlEnd::Eof,
        Err(_) => ControlEnd::Gone,
    }
}

/// Runs a prepared job to its end: every target gets an outcome, stored and sent to the operator.
pub(super) async fn run(
    ctx: Arc<HubCtx>,
    p: Prepared,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!("job", job = %p.job, actor = %p.actor_name);
    run_inner(ctx, p, send, recv, cancel).instrument(span).await
}

async fn run_inner(
    ctx: Arc<HubCtx>,
    p: Prepared,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    cancel: CancellationToken,
) {
    let job = p.job;
    let job_cancel = cancel.child_token();
    let total = p.targets.len() as u32;
    let selector = &p.selector_kept;
    tracing::info!(targets = total, selector = ?selector, command = ?p.req.command.display().to_string(), "job started");
    let mut operator_alive = write_frame(
        &mut ctx.stats.writer(StreamKind::Exec, &mut send),
        &ExecEvent::Accepted {
            job,
            targets: total,
        },
        MAX_EXEC_FRAME,
    )
    .await
    .is_ok();
    for chunk in p.targets.chunks(TARGETS_PER_FRAME) {
        if operator_alive {
            let targets = chunk.iter().map(|t| t.target.clone()).collect();
            operator_alive = write_frame(
                &mut ctx.stats.writer(StreamKind::Exec, &mut send),
                &ExecEvent::Targets(targets),
                MAX_EXEC_FRAME,
            )
            .await
            .is_ok();
        }
    }
    let mut cancelled_by: Option<&'static str> = None;
    if !operator_alive {
        let actor = p.actor.name.as_str();
        note_cancel(
            &ctx,
            job,
            actor,
            "disconnect",
            &mut cancelled_by,
            &job_cancel,
        )
        .await;
    }

    let online = p.targets.iter().filter(|t| t.target.online).count();
    let permits = (p.req.batch > 0 && (p.req.batch as usize) < online)
        .then(|| Arc::new(Semaphore::new(p.req.batch as usize)));
    let (tx, mut rx) = mpsc::channel::<ToOperator>(EVENT_QUEUE);
    let (records, records_rx) = mpsc::channel::<Record>(RECORD_QUEUE);
    let recorder = ctx
        .jobs
        .tracker
        .spawn(record_results(ctx.clone(), job, records_rx));
    let mut agents = JoinSet::new();
    for plan in p.targets {
        let spec = AgentSpec {
            job,
            command: p.req.command.clone(),
            timeout_ms: p.req.timeout_ms,
            actor_name: p.actor_name.clone(),
            records: records.clone(),
        };
        let span = tracing::info_span!("exec", agent = %plan.target.name);
        agents.spawn(
            run_agent(
                ctx.clone(),
                spec,
                plan,
                tx.clone(),
                permits.clone(),
                job_cancel.clone(),
            )
            .instrument(span),
        );
    }
    drop(tx);
    drop(records);

    let control = read_control(&mut recv);
    tokio::pin!(control);
    let mut control_done = false;
    let mut finals = 0usize;
    let mut job_last: Option<Bytes> = None;
    loop {
        let reason = tokio::select! {
            end = &mut control, if !control_done => {
                control_done = true;
                match end {
                    ControlEnd::Cancel => Some("operator"),
                    ControlEnd::Eof => None,
                    ControlEnd::Gone => Some("disconnect"),
                }
            }
            _ = cancel.cancelled(), if cancelled_by.is_none() => Some("shutdown"),
            forwarded = rx.recv() => match forwarded {
                Some(ToOperator { frame, last }) => {
                    finals += usize::from(last);
                    if !operator_alive {
                        None
                    } else if last && finals == total as usize {
                        // The job's last event goes out with `Done`, in one write and so one
                        // packet: the operator (and a mux) is woken once at the end, not twice.
                        job_last = Some(frame);
                        None
                    } else if send.write_all(&frame).await.is_err() {
                        operator_alive = false;
                        Some("disconnect")
                    } else {
                        // Counted here, not through `Stats::writer`: the frame is already encoded
                        // and quinn takes it in one call.
                        ctx.stats.message(StreamKind::Exec, Direction::Out, frame.len() as u64);
                        None
                    }
                }
                None => break,
            },
        };
        if let Some(reason) = reason {
            let actor = p.actor.name.as_str();
            note_cancel(&ctx, job, actor, reason, &mut cancelled_by, &job_cancel).await;
        }
    }

    let mut counts = JobCounts::default();
    while let Some(joined) = agents.join_next().await {
        match joined {
            Ok((outcome, code)) => counts.add(outcome, code),
            Err(e) => {
                tracing::error!(error = %e, "agent task failed");
                counts.failed += 1;
            }
        }
    }
    let Recorded { in_flight, left } = recorder.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "result recorder failed");
        Recorded::default()
    });
    let ended = now_ms();
    let stored_counts = counts;
    let left_rows = left.len();
    // Queued behind the last results and not waited for before `Done`: a `flotilla job` the
    // operator runs next is queued after both, so it reads them (see `Store::queue`). The rows
    // the recorder still held go in the same transaction as the job's end.
    let end = ctx
        .store
        .queue(move |c| {
            let tx = c.transaction()?;
            write_records(&tx, job, &left)?;
            store::jobs::finish(&tx, job, ended, &stored_counts, cancelled_by)?;
            tx.commit()?;
            Ok(())
        })
        .await;
    let summary = JobSummary {
        job,
        targets: total,
        counts,
        duration_ms: p.accepted_at.elapsed().as_millis() as u64,
    };
    tracing::info!(
        succeeded = counts.succeeded,
        failed = counts.failed,
        timed_out = counts.timed_out,
        cancelled = counts.cancelled,
        refused = counts.refused,
        unreachable = counts.unreachable,
        duration_ms = summary.duration_ms,
        "job done"
    );
    if operator_alive {
        let mut end = BytesMut::new();
        if let Some(frame) = job_last {
            ctx.stats
                .message(StreamKind::Exec, Direction::Out, frame.len() as u64);
            end.extend_from_slice(&frame);
        }
        let before = end.len();
        match encode(&ExecEvent::Done(summary), &mut end, MAX_EXEC_FRAME) {
            Ok(()) => ctx.stats.message(
                StreamKind::Exec,
                Direction::Out,
                (end.len() - before) as u64,
            ),
            Err(e) => tracing::error!(error = %e, "could not encode the job's summary"),
        }
        if send.write_all(&end).await.is_ok() {
            let _ = send.finish();
        }
    }
    if let Some((pending, n)) = in_flight {
        log_results(pending.wait().await, n);
    }
    if let Err(e) = async { end?.wait().await }.await {
        tracing::error!(error = %e, rows = left_rows, "could not store the job's end");
    }
}

/// Cancels the job for `reason` unless it already was, and audits it once.
async fn note_cancel(
    ctx: &HubCtx,
    job: JobId,
    operator: &str,
    reason: &'static str,
    cancelled_by: &mut Option<&'static str>,
    token: &CancellationToken,
) {
    if cancelled_by.is_some() {
        return;
    }
    *cancelled_by = Some(reason);
    token.cancel();
    tracing::info!(reason, "job cancelled");
    let actor = if reason == "shutdown" {
        "hub"
    } else {
        operator
    };
    audit(
        ctx,
        actor,
        "exec.cancel".to_string(),
        format!("job:{job}"),
        format!("reason={reason}"),
    )
    .await;
}

/// Agent frames may be this large: the envelope of `ExecEvent::Agent` must still fit the operator's
/// limit when the hub wraps one.
const MAX_AGENT_FRAME: usize = MAX_EXEC_FRAME - 256;

/// An encoded event for the operator, and whether it is an agent's final one.
struct ToOperator {
    frame: Bytes,
    last: bool,
}

/// One agent event for the operator, encoded. An event too large to encode (a failure message of
/// 100 KiB) is replaced by a short failure rather than dropped.
fn frame_of(agent: IdentityId, event: AgentEvent) -> Bytes {
    let mut buf = BytesMut::new();
    let ev = ExecEvent::Agent { agent, event };
    if let Err(e) = encode(&ev, &mut buf, MAX_EXEC_FRAME) {
        tracing::warn!(error = %e, "agent event too large to forward");
        let ExecEvent::Agent { agent, .. } = ev else {
            return buf.freeze();
        };
        let short = ExecEvent::Agent {
            agent,
            event: failed(
                FailureKind::Internal,
                "agent reported an event too large to forward",
            ),
        };
        buf.clear();
        let _ = encode(&short, &mut buf, MAX_EXEC_FRAME);
    }
    buf.freeze()
}

/// What every agent of a job is asked.
struct AgentSpec {
    job: JobId,
    command: ExecCommand,
    timeout_ms: u64,
    actor_name: String,
    records: mpsc::Sender<Record>,
}

/// A change to one agent's row of the job.
enum Record {
    /// Its command started.
    Running { agent: IdentityId, at_ms: u64 },
    /// Its final result.
    Done(Box<AgentResult>),
}

/// Row changes waiting for the recorder; agents wait when it falls this far behind.
const RECORD_QUEUE: usize = 1024;
/// Row changes written per transaction: one commit for a burst of a fan-out instead of one each.
const RECORD_BATCH: usize = 512;

/// How long the recorder waits for more row changes before it commits what it has: a short
/// command's "running" and its result then share one transaction, and when the job ends meanwhile
/// they go with the job's end (one commit per job instead of three). Only what `flotilla job`
/// reads from the database lags, by at most this; the operator's stream never waits on it.
const RECORD_LINGER: Duration = Duration::from_millis(20);

/// What the recorder leaves to the job's end.
#[derive(Default)]
struct Recorded {
    /// The last batch it queued and how many rows, not waited for.
    in_flight: Option<(store::Pending<()>, usize)>,
    /// Rows it had not queued when the last agent finished.
    left: Vec<Record>,
}

/// Writes the job's row changes in batches, one transaction each, until every agent is done. One
/// batch is in flight at a time; a batch is queued once [`RECORD_BATCH`] rows are in, or no row
/// came for [`RECORD_LINGER`]. What is left when the last agent finishes is handed back unqueued,
/// with the last batch queued but not waited for, so the job's end can take the rows and the
/// operator be told without waiting for any commit.
async fn record_results(ctx: Arc<HubCtx>, job: JobId, mut rx: mpsc::Receiver<Record>) -> Recorded {
    let mut in_flight: Option<(store::Pending<()>, usize)> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < RECORD_BATCH {
            match tokio::time::timeout(RECORD_LINGER, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) => {
                    return Recorded {
                        in_flight,
                        left: batch,
                    };
                }
                Err(_) => break,
            }
        }
        if let Some((pending, n)) = in_flight.take() {
            log_results(pending.wait().await, n);
        }
        let n = batch.len();
        let queued = ctx
            .store
            .queue(move |c| {
                let tx = c.transaction()?;
                write_records(&tx, job, &batch)?;
                tx.commit()?;
                Ok(())
            })
            .await;
        match queued {
            Ok(pending) => in_flight = Some((pending, n)),
            Err(e) => log_results(Err(e), n),
        }
    }
    Recorded {
        in_flight,
        left: Vec::new(),
    }
}

/// Applies row changes in order, inside the caller's transaction.
fn write_records(
    tx: &rusqlite::Transaction<'_>,
    job: JobId,
    records: &[Record],
) -> rusqlite::Result<()> {
    for r in records {
        match r {
            Record::Running { agent, at_ms } => store::jobs::set_running(tx, job, agent, *at_ms)?,
            Record::Done(result) => store::jobs::record(tx, job, result)?,
        }
    }
    Ok(())
}

fn log_results(written: Result<(), crate::HubError>, rows: usize) {
    if let Err(e) = written {
        tracing::error!(error = %e, rows, "could not store results");
    }
}

/// The last [`OUTPUT_TAIL`] bytes of one output stream, and its total size.
#[derive(Default)]
struct Tail {
    bytes: VecDeque<u8>,
    total: u64,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let keep = &data[data.len().saturating_sub(OUTPUT_TAIL)..];
        let overflow = (self.bytes.len() + keep.len()).saturating_sub(OUTPUT_TAIL);
        self.bytes.drain(..overflow.min(self.bytes.len()));
        self.bytes.extend(keep);
    }

    fn chunk(&self) -> Chunk {
        Chunk(self.bytes.iter().copied().collect())
    }
}

fn failed(kind: FailureKind, message: impl Into<String>) -> AgentEvent {
    AgentEvent::Failed(ExecFailure {
        kind,
        message: message.into(),
    })
}

fn offline_message(last_seen_ms: u64) -> String {
    if last_seen_ms == 0 {
        return "offline: never connected".into();
    }
    let s = now_ms().saturating_sub(last_seen_ms) / 1000;
    let ago = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    };
    format!("offline (last seen {ago} ago)")
}

/// Runs one target to its outcome, stores the result, forwards the final event.
async fn run_agent(
    ctx: Arc<HubCtx>,
    spec: AgentSpec,
    plan: Planned,
    tx: mpsc::Sender<ToOperator>,
    permits: Option<Arc<Semaphore>>,
    cancel: CancellationToken,
) -> (Outcome, Option<i32>) {
    let agent = plan.target.id.clone();
    let mut out = Tails::default();
    let mut started: Option<(u64, Instant)> = None;
    // The batch slot is held until the final event is forwarded, so that with `--batch 1` the
    // operator sees one agent end before the next starts.
    let (last, _slot) = drive(
        &ctx,
        &spec,
        &plan,
        &tx,
        permits,
        &cancel,
        &mut out,
        &mut started,
    )
    .await;
    if started.is_some() {
        ctx.stats.exec_run(false);
    }
    let outcome = Outcome::of_event(&last).unwrap_or(Outcome::Failed);
    let (code, signal, duration_ms, message) = match &last {
        AgentEvent::Exited(r) => (r.code, r.signal, Some(r.duration_ms), String::new()),
        AgentEvent::Failed(f) => (
            None,
            None,
            started.map(|(_, at)| at.elapsed().as_millis() as u64),
            f.message.clone(),
        ),
        _ => (None, None, None, String::new()),
    };
    match &last {
        AgentEvent::Failed(f) => {
            tracing::info!(outcome = outcome.as_str(), reason = ?f.message, "agent done")
        }
        _ => tracing::debug!(outcome = outcome.as_str(), ?code, ?signal, "agent done"),
    }
    let result = AgentResult {
        agent: agent.clone(),
        name: plan.target.name.clone(),
        outcome,
        code,
        signal,
        started_ms: started.map(|(ms, _)| ms),
        duration_ms,
        message,
        stdout_tail: out.stdout.chunk(),
        stderr_tail: out.stderr.chunk(),
        stdout_bytes: out.stdout.total,
        stderr_bytes: out.stderr.total,
    };
    // Cancelled, unreachable or refused runs say nothing about the agent's health either way.
    let verdict = match outcome {
        Outcome::Exited => Some(code != Some(0)),
        Outcome::TimedOut | Outcome::Failed | Outcome::Lost => Some(true),
        _ => None,
    };
    if let Some(failed) = verdict {
        ctx.alerts.job_result(&ctx, &agent, failed, code);
    }
    let _ = spec.records.send(Record::Done(Box::new(result))).await;
    let _ = tx
        .send(ToOperator {
            frame: frame_of(agent, last),
            last: true,
        })
        .await;
    (outcome, code)
}

#[derive(Default)]
struct Tails {
    stdout: Tail,
    stderr: Tail,
}

/// Everything between "this agent's turn" and its final event. Events before the final one are
/// forwarded from here; the final one is returned.
#[allow(clippy::too_many_arguments)]
async fn drive(
    ctx: &HubCtx,
    spec: &AgentSpec,
    plan: &Planned,
    tx: &mpsc::Sender<ToOperator>,
    permits: Option<Arc<Semaphore>>,
    cancel: &CancellationToken,
    out: &mut Tails,
    started: &mut Option<(u64, Instant)>,
) -> (AgentEvent, Option<OwnedSemaphorePermit>) {
    if !plan.target.online {
        let last = failed(FailureKind::Unreachable, offline_message(plan.last_seen_ms));
        return (last, None);
    }
    let permit = match permits {
        Some(sem) => tokio::select! {
            p = sem.acquire_owned() => p.ok(),
            _ = cancel.cancelled() => return (failed(FailureKind::Cancelled, BEFORE_TURN), None),
        },
        None => None,
    };
    (
        execute(ctx, spec, plan, tx, cancel, out, started).await,
        permit,
    )
}

/// One execution on the agent, from opening its stream to its final event.
async fn execute(
    ctx: &HubCtx,
    spec: &AgentSpec,
    plan: &Planned,
    tx: &mpsc::Sender<ToOperator>,
    cancel: &CancellationToken,
    out: &mut Tails,
    started: &mut Option<(u64, Instant)>,
) -> AgentEvent {
    let before_turn = BEFORE_TURN;
    if cancel.is_cancelled() {
        return failed(FailureKind::Cancelled, before_turn);
    }
    let Some(conn) = ctx.registry.connection(&plan.target.id) else {
        return failed(
            FailureKind::Unreachable,
            "went offline before its turn came",
        );
    };
    let start = HubStreamOpen::Exec(ExecStart {
        job: spec.job,
        command: spec.command.clone(),
        timeout_ms: spec.timeout_ms,
        hub_time_ms: now_ms(),
        actor: spec.actor_name.clone(),
    });
    let open = async {
        let (mut s, r) = conn.open_bi().await.map_err(|e| describe_close(&e))?;
        write_frame(
            &mut ctx.stats.writer(StreamKind::Exec, &mut s),
            &start,
            MAX_EXEC_FRAME,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok::<_, String>((s, r))
    };
    let opened = tokio::select! {
        r = tokio::time::timeout(OPEN_TIMEOUT, open) => r,
        _ = cancel.cancelled() => return failed(FailureKind::Cancelled, before_turn),
    };
    let (mut agent_send, mut agent_recv) = match opened {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            return failed(
                FailureKind::Unreachable,
                format!("could not reach the agent: {e}"),
            );
        }
        Err(_) => {
            return failed(
                FailureKind::Unreachable,
                format!(
                    "agent did not take the command within {} s",
                    OPEN_TIMEOUT.as_secs()
                ),
            );
        }
    };
    let started_ms = now_ms();
    *started = Some((started_ms, Instant::now()));
    ctx.stats.exec_run(true);
    let running = Record::Running {
        agent: plan.target.id.clone(),
        at_ms: started_ms,
    };
    let _ = spec.records.send(running).await;

    // The canceller owns the send half for the life of the execution: dropping it would finish the
    // stream, which the agent takes as a cancel.
    let canceller = async {
        cancel.cancelled().await;
        let _ = write_frame(
            &mut ctx.stats.writer(StreamKind::Exec, &mut agent_send),
            &ExecControl::Cancel,
            MAX_EXEC_FRAME,
        )
        .await;
        tokio::time::sleep(CANCEL_CONFIRM).await;
    };
    let backstop = async {
        if spec.timeout_ms == 0 {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(spec.timeout_ms) + TIMEOUT_SLACK).await;
    };
    let last = tokio::select! {
        last = forward(&conn, &mut agent_recv, &plan.target.id, tx, out, &ctx.stats) => return last,
        _ = canceller => failed(
            FailureKind::Lost,
            format!("agent did not confirm the cancel within {} s", CANCEL_CONFIRM.as_secs()),
        ),
        _ = backstop => failed(
            FailureKind::Lost,
            format!("agent did not report within {} s of the timeout", TIMEOUT_SLACK.as_secs()),
        ),
    };
    let _ = agent_recv.stop(ErrorCode::Timeout.as_u32().into());
    last
}

/// Why an agent's connection ended, in words; a plain close (code 0) is the agent going away.
fn lost_reason(err: &quinn::ConnectionError) -> String {
    match err {
        quinn::ConnectionError::ApplicationClosed(close)
            if ErrorCode::from_u32(close.error_code.into_inner()) == Some(ErrorCode::Ok) =>
        {
            "the agent closed its connection".into()
        }
        other => describe_close(other),
    }
}

/// Reads one agent stream, forwarding every event before the final one. Not cancel-safe (a frame
/// half-read is lost); `drive` drops it only when giving up on the agent.
async fn forward(
    conn: &quinn::Connection,
    recv: &mut quinn::RecvStream,
    agent: &IdentityId,
    tx: &mpsc::Sender<ToOperator>,
    out: &mut Tails,
    stats: &Stats,
) -> AgentEvent {
    let gone = |detail: String| match conn.close_reason() {
        Some(reason) => failed(
            FailureKind::Lost,
            format!("connection lost mid-run: {}", lost_reason(&reason)),
        ),
        None => failed(
            FailureKind::Internal,
            format!("agent stream failed: {detail}"),
        ),
    };
    loop {
        let read =
            read_frame_body(&mut stats.reader(StreamKind::Exec, recv), MAX_AGENT_FRAME).await;
        let body = match read {
            Ok(Some(body)) => body,
            Ok(None) => return gone("agent ended the stream without a result".into()),
            Err(e) => return gone(e.to_string()),
        };
        // Output, nearly all the traffic, is forwarded as the agent encoded it.
        let frame = if let Some((stream, data)) = peek_output(&body) {
            if data.len() > MAX_CHUNK {
                let message = format!(
                    "agent sent an output chunk of {} bytes, over the {MAX_CHUNK}-byte limit",
                    data.len()
                );
                tracing::warn!(message = ?message, "agent broke the exec protocol");
                return failed(FailureKind::Internal, message);
            }
            match stream {
                OutputStream::Stdout => out.stdout.push(data),
                OutputStream::Stderr => out.stderr.push(data),
            }
            let mut frame = BytesMut::new();
            encode_forward(agent, &body, &mut frame);
            frame.freeze()
        } else {
            let ev = match decode_body::<AgentEvent>(&body) {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "agent sent a malformed exec event");
                    return failed(
                        FailureKind::Internal,
                        format!("agent sent a malformed event: {e}"),
                    );
                }
            };
            if Outcome::of_event(&ev).is_some() {
                return ev;
            }
            frame_of(agent.clone(), ev)
        };
        if tx.send(ToOperator { frame, last: false }).await.is_err() {
            return failed(FailureKind::Internal, "job ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_last_bytes_only() {
        let mut t = Tail::default();
        t.push(b"hello ");
        t.push(b"world");
        assert_eq!(t.chunk().0, b"hello world");
        t.push(&vec![b'x'; OUTPUT_TAIL - 3]);
        let c = t.chunk().0;
        assert_eq!(c.len(), OUTPUT_TAIL);
        assert_eq!(&c[..3], b"rld");
        t.push(&vec![b'y'; OUTPUT_TAIL * 2]);
        assert_eq!(t.chunk().0, vec![b'y'; OUTPUT_TAIL]);
        assert_eq!(
            t.total,
            11 + (OUTPUT_TAIL as u64 - 3) + OUTPUT_TAIL as u64 * 2
        );
    }

    #[test]
    fn offline_agents_say_when_they_were_last_seen() {
        assert_eq!(offline_message(0), "offline: never connected");
        assert_eq!(
            offline_message(now_ms() - 125_000),
            "offline (last seen 2m ago)"
        );
    }
}
