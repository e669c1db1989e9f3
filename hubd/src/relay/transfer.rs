//! One copy, relayed: the hub opens a read stream to the source and a write stream to the
//! destination (or uses the operator's copy stream for a local end), lets the destination say how
//! much it already holds, lets the source check those bytes against its own, then forwards chunks
//! until the destination has verified the whole file.
//!
//! Endings: a cancel resets both legs with [`ErrorCode::Cancelled`] (the destination removes its
//! partial file and confirms); a party dropping resets the others with another code (the
//! destination keeps the bytes for a resume); a failure at one end is told to the other.

use crate::HubCtx;
use crate::admin::Actor;
use crate::stats::{Direction, Stats, StreamKind};
use crate::store::{self, TransferOutcome, now_ms};
use bytes::BytesMut;
use flotilla_wire::files::{
    CHUNK_VARIANT, CopyEnd, CopyRequest, FileEvent, FileMeta, HubStreamOpen, ReadOpen, ResumeKey,
    TransferDone, TransferError, TransferErrorKind, TransferEvent, TransferFrame, TransferId,
    TransferStarted, TransferState, WriteKind, WriteOpen, normalize_rel_path,
};
use flotilla_wire::frame::{HEADER_LEN, peek_len};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_TRANSFER_FRAME};
use flotilla_wire::{ErrorCode, IdentityId, Role};
use quinn::{RecvStream, SendStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Time for an end to open, stat, and hash what an earlier attempt left (a few GB at disk speed).
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Time for the destination to confirm a cancel (remove its partial file).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two progress frames to the operator: a terminal redraws at 10 Hz.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Least time between two progress events to watchers.
const EVENT_EVERY: Duration = Duration::from_secs(1);
/// Reports queued for the operator: a console that reads slowly loses progress frames, never the
/// outcome (the queue drains as the writer times out).
const REPORT_QUEUE: usize = 8;
/// Time to write one report to the operator before giving up on it.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// One end, resolved.
enum End {
    Agent {
        id: IdentityId,
        name: String,
        path: String,
        conn: quinn::Connection,
    },
    Local {
        path: String,
        meta: Option<FileMeta>,
    },
}

impl End {
    fn label(&self) -> String {
        match self {
            Self::Agent { name, path, .. } => format!("{name}:{path}"),
            Self::Local { path, .. } => format!("local:{path}"),
        }
    }

    /// What names this end in the resume key: stable across attempts and consoles.
    fn key_part(&self, actor: &str) -> String {
        match self {
            Self::Agent { id, path, .. } => format!("agent\0{id}\0{path}"),
            Self::Local { path, .. } => format!("local\0{actor}\0{path}"),
        }
    }
}

fn fail(kind: TransferErrorKind, message: impl Into<String>) -> TransferError {
    TransferError::new(kind, message)
}

async fn resolve(ctx: &HubCtx, end: CopyEnd) -> Result<End, TransferError> {
    match end {
        CopyEnd::Local { path, meta } => Ok(End::Local { path, meta }),
        CopyEnd::Agent { agent, path } => {
            let path = normalize_rel_path(&path)
                .map_err(|e| fail(TransferErrorKind::Escapes, e.to_string()))?;
            let q = agent.clone();
            let row = ctx
                .store
                .call(move |c| Ok(store::identities::find(c, &q)?))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "agent lookup failed");
                    fail(TransferErrorKind::Io, "hub could not look the agent up")
                })?;
            let row = row
                .filter(|r| r.role == Role::Agent && r.revoked_ms.is_none())
                .ok_or_else(|| {
                    fail(
                        TransferErrorKind::NotFound,
                        format!("no agent named or with id {agent:?}"),
                    )
                })?;
            let conn = ctx
                .registry
                .transfer_connection(&row.id)
                .await
                .ok_or_else(|| {
                    fail(
                        TransferErrorKind::Offline,
                        format!("agent {} is offline", row.name),
                    )
                })?;
            Ok(End::Agent {
                id: row.id,
                name: row.name,
                path,
                conn,
            })
        }
    }
}

fn resume_key(src: &End, meta: &FileMeta, dst: &End, actor: &str) -> ResumeKey {
    let mut h = blake3::Hasher::new();
    h.update(src.key_part(actor).as_bytes());
    h.update(&[0]);
    h.update(&meta.size.to_le_bytes());
    h.update(&meta.mtime_ms.to_le_bytes());
    h.update(dst.key_part(actor).as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    ResumeKey(u64::from_le_bytes(first))
}

/// Opens a stream to an agent and sends its opening frame.
async fn open_leg(
    conn: &quinn::Connection,
    name: &str,
    open: &HubStreamOpen,
) -> Result<Leg, TransferError> {
    let gone = |e: String| fail(TransferErrorKind::Offline, format!("agent {name}: {e}"));
    let (mut send, recv) = tokio::time::timeout(SETUP_TIMEOUT, conn.open_bi())
        .await
        .map_err(|_| gone("no stream within the setup timeout".into()))?
        .map_err(|e| gone(e.to_string()))?;
    // Bulk data yields to control and metrics on the same connection.
    let _ = send.set_priority(-1);
    write_frame(&mut send, open, MAX_CONTROL_FRAME)
        .await
        .map_err(|e| gone(e.to_string()))?;
    Ok(Leg { send, recv })
}

/// Reads the next frame of a setup exchange under [`SETUP_TIMEOUT`].
async fn setup_read(recv: &mut RecvStream, who: &str) -> Result<TransferFrame, TransferError> {
    match tokio::time::timeout(
        SETUP_TIMEOUT,
        read_frame::<TransferFrame, _>(recv, MAX_TRANSFER_FRAME),
    )
    .await
    {
        Err(_) => Err(fail(
            TransferErrorKind::Interrupted,
            format!("{who} did not answer within {} s", SETUP_TIMEOUT.as_secs()),
        )),
        Ok(Ok(Some(TransferFrame::Failed(e)))) => Err(e),
        Ok(Ok(Some(f))) => Ok(f),
        Ok(Ok(None)) | Ok(Err(_)) => Err(fail(
            TransferErrorKind::Interrupted,
            format!("{who} dropped the transfer"),
        )),
    }
}

async fn send_to(
    send: &mut SendStream,
    frame: &TransferFrame,
    who: &str,
) -> Result<(), TransferError> {
    write_frame(send, frame, MAX_TRANSFER_FRAME)
        .await
        .map_err(|_| {
            fail(
                TransferErrorKind::Interrupted,
                format!("{who} dropped the transfer"),
            )
        })
}

/// How the data phase ended.
enum Outcome {
    /// The destination verified the file and moved it into place.
    Done(TransferDone),
    /// The destination failed (it already cleaned up as the failure requires).
    DestFailed(TransferError),
    /// The source failed; the destination was told in-band.
    SourceFailed(TransferError),
    /// A party dropped, the hub is stopping, or a newer attempt took over: the destination keeps
    /// its bytes for a resume.
    Interrupted(TransferError),
    /// The operator asked to cancel.
    Cancel,
}

/// Facts about a transfer for its events and row. A final event is published after the row is
/// written, so a watcher that sees it can read the record.
struct Record {
    ctx: Arc<HubCtx>,
    transfer: TransferId,
    actor: String,
    src: String,
    dst: String,
    size: u64,
    written: u64,
    last_event: Instant,
}

impl Record {
    fn event(&mut self, state: TransferState) {
        self.last_event = Instant::now();
        self.ctx.files.publish(FileEvent::Transfer(TransferEvent {
            transfer: self.transfer,
            actor: self.actor.clone(),
            src: self.src.clone(),
            dst: self.dst.clone(),
            state,
            bytes: self.written,
            size: self.size,
            at_ms: now_ms(),
        }));
    }

    async fn begin(&self, resumed_from: u64) {
        self.ctx.stats.transfer_started();
        let (id, actor, src, dst, size) = (
            self.transfer.to_string(),
            self.actor.clone(),
            self.src.clone(),
            self.dst.clone(),
            self.size,
        );
        let r = self
            .ctx
            .store
            .call(move |c| {
                let now = now_ms();
                let tx = c.transaction()?;
                let attempt =
                    store::transfers::begin(&tx, &id, &actor, &src, &dst, size, resumed_from, now)?;
                let detail = format!(
                    "{src} -> {dst} size={size} attempt={attempt} resumed_from={resumed_from}"
                );
                store::audit::append(&tx, now, &actor, "transfer.start", &id, &detail)?;
                tx.commit()?;
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not record the transfer");
        }
    }

    async fn finish(&self, outcome: TransferOutcome, error: &str, digest: String) {
        self.ctx
            .stats
            .transfer_finished(outcome == TransferOutcome::Done);
        let (id, actor, bytes, error) = (
            self.transfer.to_string(),
            self.actor.clone(),
            self.written,
            error.to_owned(),
        );
        let action = match outcome {
            TransferOutcome::Done => "transfer.done",
            TransferOutcome::Cancelled => "transfer.cancel",
            TransferOutcome::Interrupted => "transfer.interrupt",
            TransferOutcome::Failed | TransferOutcome::Running => "transfer.fail",
        };
        let r = self
            .ctx
            .store
            .call(move |c| {
                let now = now_ms();
                let tx = c.transaction()?;
                store::transfers::finish(&tx, &id, outcome, bytes, &error, &digest, now)?;
                let detail = if error.is_empty() {
                    format!("bytes={bytes} blake3={digest}")
                } else {
                    format!("bytes={bytes} error={error}")
                };
                store::audit::append(&tx, now, &actor, action, &id, &detail)?;
                tx.commit()?;
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not record the end of the transfer");
        }
    }
}

/// A bidirectional stream: to an agent, or the operator's copy stream.
struct Leg {
    send: SendStream,
    recv: RecvStream,
}

impl Leg {
    fn reset(&mut self, code: ErrorCode) {
        let _ = self.send.reset(code.as_u32().into());
        let _ = self.recv.stop(code.as_u32().into());
    }
}

/// Which leg the operator's stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpRole {
    /// Agent to agent: the operator watches and may cancel.
    Watcher,
    /// Upload: the operator sends the data.
    Source,
    /// Download: the operator receives the data.
    Destination,
}

/// Serves one operator copy stream to its end.
pub(crate) async fn copy(
    ctx: Arc<HubCtx>,
    actor: Actor,
    send: SendStream,
    recv: RecvStream,
    cancel: CancellationToken,
) {
    let mut op = Leg { send, recv };
    let req = match read_frame::<CopyRequest, _>(&mut op.recv, MAX_CONTROL_FRAME).await {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "bad copy request");
            return op.reset(crate::session::frame_error_code(&e));
        }
    };
    let span = tracing::info_span!("copy", transfer_id = %req.transfer, actor = %actor.name);
    run(ctx, actor, req, op, cancel).instrument(span).await
}

async fn run(
    ctx: Arc<HubCtx>,
    actor: Actor,
    req: CopyRequest,
    mut op: Leg,
    cancel: CancellationToken,
) {
    if !actor.role.can_act() {
        tracing::info!(role = %actor.role, "copy refused for this role");
        let err = fail(
            TransferErrorKind::Forbidden,
            format!("copying needs the operator role; you are {}", actor.role),
        );
        return refuse(op, err).await;
    }
    let src = match resolve(&ctx, req.src.clone()).await {
        Ok(e) => e,
        Err(err) => return refuse(op, err).await,
    };
    let dst = match resolve(&ctx, req.dst.clone()).await {
        Ok(e) => e,
        Err(err) => return refuse(op, err).await,
    };
    let role = match (&src, &dst) {
        (End::Local { .. }, End::Local { .. }) => {
            let err = fail(TransferErrorKind::BadRequest, "both ends are local: use cp");
            return refuse(op, err).await;
        }
        (End::Local { .. }, _) => OpRole::Source,
        (_, End::Local { .. }) => OpRole::Destination,
        _ => OpRole::Watcher,
    };
    let _slot = tokio::select! {
        _ = cancel.cancelled() => return refuse(op, shutting_down()).await,
        permit = ctx.files.slots.clone().acquire_owned() => match permit {
            Ok(p) => p,
            Err(_) => return refuse(op, shutting_down()).await,
        },
    };
    let active = ctx.files.register(req.transfer);
    tracing::info!(src = %src.label(), dst = %dst.label(), kind = ?req.kind, "copy requested");
    if req.kind == WriteKind::Dir {
        return make_dir(req, &dst, op).await;
    }
    let setup = Setup {
        actor: &actor,
        transfer: req.transfer,
        src: &src,
        dst: &dst,
    };
    let (legs, started, offset) = match setup.run(&mut op).await {
        Ok(parts) => parts,
        Err(err) => return refuse(op, err).await,
    };
    let mut rec = Record {
        ctx: ctx.clone(),
        transfer: req.transfer,
        actor: actor.name.clone(),
        src: src.label(),
        dst: dst.label(),
        size: started.size,
        written: started.offset,
        last_event: Instant::now(),
    };
    if started.discarded > 0 {
        tracing::warn!(
            discarded = offset,
            "the partial file did not match the source: starting over"
        );
    }
    tracing::info!(
        size = started.size,
        resumed_from = started.offset,
        "data flowing"
    );
    rec.begin(started.offset).await;
    rec.event(TransferState::Started);
    relay(legs, op, role, started, &mut rec, &active.token, &cancel).await;
    for end in [&src, &dst] {
        if let End::Agent { conn, name, .. } = end {
            let path = conn.stats().path;
            tracing::debug!(agent = %name, rtt_us = path.rtt.as_micros() as u64, cwnd = path.cwnd,
                mtu = path.current_mtu, lost_packets = path.lost_packets,
                sent_packets = path.sent_packets, black_holes = path.black_holes_detected,
                "link after the transfer");
        }
    }
}

/// Tells the operator why the copy cannot go ahead, and lets it read that before the stream goes.
async fn refuse(mut op: Leg, err: TransferError) {
    tracing::info!(kind = ?err.kind, error = %err.message, "copy refused");
    let _ = write_frame(
        &mut op.send,
        &TransferFrame::Failed(err),
        MAX_TRANSFER_FRAME,
    )
    .await;
    let _ = op.send.finish();
    let _ = tokio::time::timeout(CANCEL_TIMEOUT, op.send.stopped()).await;
}

/// `cp -r` of an empty directory: one write of kind `Dir`.
async fn make_dir(req: CopyRequest, dst: &End, op: Leg) {
    let End::Agent {
        conn, name, path, ..
    } = dst
    else {
        let err = fail(
            TransferErrorKind::BadRequest,
            "a local directory is made by the console, not through the hub",
        );
        return refuse(op, err).await;
    };
    let open = HubStreamOpen::Write(WriteOpen {
        transfer: req.transfer,
        path: path.clone(),
        kind: WriteKind::Dir,
        meta: FileMeta::default(),
        resume_key: ResumeKey(0),
    });
    let result = async {
        let mut leg = open_leg(conn, name, &open).await?;
        let frame = setup_read(&mut leg.recv, &dst.label()).await?;
        let _ = leg.send.finish();
        match frame {
            TransferFrame::Done(d) => Ok(d),
            other => Err(fail(
                TransferErrorKind::Protocol,
                format!("{} answered {other:?} to a directory", dst.label()),
            )),
        }
    }
    .await;
    match result {
        Ok(done) => {
            let mut op = op;
            let _ = write_frame(&mut op.send, &TransferFrame::Done(done), MAX_TRANSFER_FRAME).await;
            let _ = op.send.finish();
            let _ = tokio::time::timeout(CANCEL_TIMEOUT, op.send.stopped()).await;
        }
        Err(err) => refuse(op, err).await,
    }
}

/// Everything before the first chunk.
struct Setup<'a> {
    actor: &'a Actor,
    transfer: TransferId,
    src: &'a End,
    dst: &'a End,
}

/// The agent legs of a transfer (none for the operator's side).
struct AgentLegs {
    src: Option<Leg>,
    dst: Option<Leg>,
}

impl Setup<'_> {
    /// Opens the legs, agrees on where the data starts, and sends `Begin`. On error every leg it
    /// opened is reset (the destination keeps its bytes) and the caller tells the operator.
    async fn run(&self, op: &mut Leg) -> Result<(AgentLegs, TransferStarted, u64), TransferError> {
        let mut legs = AgentLegs {
            src: None,
            dst: None,
        };
        let result = self.exchange(op, &mut legs).await;
        if result.is_err() {
            for leg in [legs.src.as_mut(), legs.dst.as_mut()].into_iter().flatten() {
                leg.reset(ErrorCode::Internal);
            }
        }
        result.map(|(started, offset)| (legs, started, offset))
    }

    async fn exchange(
        &self,
        op: &mut Leg,
        legs: &mut AgentLegs,
    ) -> Result<(TransferStarted, u64), TransferError> {
        let (who_src, who_dst) = (self.src.label(), self.dst.label());
        // The source: open it, learn its size.
        let meta = match self.src {
            End::Agent {
                conn, name, path, ..
            } => {
                let open = HubStreamOpen::Read(ReadOpen {
                    transfer: self.transfer,
                    path: path.clone(),
                });
                let leg = legs.src.insert(open_leg(conn, name, &open).await?);
                match setup_read(&mut leg.recv, &who_src).await? {
                    TransferFrame::Offer(meta) => meta,
                    other => {
                        return Err(fail(
                            TransferErrorKind::Protocol,
                            format!("{who_src} answered {other:?} to a read"),
                        ));
                    }
                }
            }
            End::Local { meta, .. } => meta.ok_or_else(|| {
                fail(
                    TransferErrorKind::BadRequest,
                    "a local source must say its size",
                )
            })?,
        };
        let key = resume_key(self.src, &meta, self.dst, &self.actor.name);
        // The destination: what it holds already.
        let dst = match self.dst {
            End::Agent {
                conn, name, path, ..
            } => {
                let open = HubStreamOpen::Write(WriteOpen {
                    transfer: self.transfer,
                    path: path.clone(),
                    kind: WriteKind::File,
                    meta,
                    resume_key: key,
                });
                legs.dst.insert(open_leg(conn, name, &open).await?)
            }
            End::Local { .. } => {
                let prepare = TransferFrame::Prepare {
                    meta,
                    resume_key: key,
                };
                send_to(&mut op.send, &prepare, "the operator").await?;
                &mut *op
            }
        };
        let (offset, prefix) = match setup_read(&mut dst.recv, &who_dst).await? {
            TransferFrame::Ready { offset, prefix } => (offset, prefix),
            TransferFrame::Cancel => return Err(fail(TransferErrorKind::Cancelled, "cancelled")),
            other => {
                return Err(fail(
                    TransferErrorKind::Protocol,
                    format!("{who_dst} answered {other:?} to a write"),
                ));
            }
        };
        // The source checks what the destination holds and says where the data starts.
        let src = match legs.src.as_mut() {
            Some(leg) => leg,
            None => &mut *op,
        };
        send_to(
            &mut src.send,
            &TransferFrame::ReadFrom { offset, prefix },
            &who_src,
        )
        .await?;
        let start = match setup_read(&mut src.recv, &who_src).await {
            Ok(TransferFrame::Begin { offset: start }) if start == 0 || start == offset => start,
            Ok(TransferFrame::Cancel) => {
                return Err(fail(TransferErrorKind::Cancelled, "cancelled"));
            }
            Ok(other) => {
                return Err(fail(
                    TransferErrorKind::Protocol,
                    format!("{who_src} answered {other:?} to a read"),
                ));
            }
            Err(e) => {
                // A source that failed for good (gone, changed) makes the partial file useless.
                if !e.kind.retryable() {
                    let dst = match legs.dst.as_mut() {
                        Some(leg) => leg,
                        None => &mut *op,
                    };
                    let _ =
                        send_to(&mut dst.send, &TransferFrame::Failed(e.clone()), &who_dst).await;
                    let _ = dst.send.finish();
                }
                return Err(e);
            }
        };
        let dst = match legs.dst.as_mut() {
            Some(leg) => leg,
            None => &mut *op,
        };
        send_to(
            &mut dst.send,
            &TransferFrame::Begin { offset: start },
            &who_dst,
        )
        .await?;
        let started = TransferStarted {
            size: meta.size,
            offset: start,
            discarded: if start < offset { offset } else { 0 },
        };
        Ok((started, offset))
    }
}

fn shutting_down() -> TransferError {
    fail(TransferErrorKind::Interrupted, "hub shutting down")
}

/// Writes the operator's frames whole, in order, each under a timeout: a console that stops
/// reading loses its reports, never stalls the relay or leaves a half frame on its stream.
async fn report_writer(out: Option<&mut SendStream>, mut rx: mpsc::Receiver<TransferFrame>) {
    let Some(out) = out else {
        while rx.recv().await.is_some() {}
        return;
    };
    while let Some(frame) = rx.recv().await {
        let write = write_frame(out, &frame, MAX_TRANSFER_FRAME);
        if !matches!(
            tokio::time::timeout(REPORT_TIMEOUT, write).await,
            Ok(Ok(()))
        ) {
            tracing::debug!("operator stopped reading its copy stream");
            while rx.recv().await.is_some() {}
            return;
        }
    }
    let _ = out.finish();
}

/// Moves the data and tells everyone how it ended.
async fn relay(
    agents: AgentLegs,
    op: Leg,
    role: OpRole,
    started: TransferStarted,
    rec: &mut Record,
    superseded: &CancellationToken,
    cancel: &CancellationToken,
) {
    let AgentLegs { src, dst } = agents;
    let mut op = Some(op);
    // Assign each stream its one job: the borrow checker then proves nobody writes half a frame
    // into another's stream.
    let (mut src, mut dst) = match role {
        OpRole::Watcher => (src, dst),
        OpRole::Source => (op.take(), dst),
        OpRole::Destination => (src, op.take()),
    };
    let (Some(src), Some(dst)) = (src.as_mut(), dst.as_mut()) else {
        tracing::error!("relay without both legs");
        return;
    };
    let (report_tx, report_rx) = mpsc::channel::<TransferFrame>(REPORT_QUEUE);
    let (op_out, op_in, src_send) = match (role, op.as_mut()) {
        (OpRole::Watcher, Some(op)) => {
            (Some(&mut op.send), Some(&mut op.recv), Some(&mut src.send))
        }
        (OpRole::Source, _) => (Some(&mut src.send), None, None),
        (_, _) => (None, None, Some(&mut src.send)),
    };
    let work = async {
        if role != OpRole::Destination {
            let _ = report_tx.send(TransferFrame::Started(started)).await;
        }
        let outcome = pump(
            &mut src.recv,
            &mut dst.send,
            &mut dst.recv,
            op_in,
            rec,
            &report_tx,
            superseded,
            cancel,
        )
        .await;
        conclude(outcome, src_send, dst, role, rec, &report_tx).await;
        drop(report_tx);
    };
    tokio::join!(work, report_writer(op_out, report_rx));
    if let Some(op) = op.as_mut() {
        let _ = tokio::time::timeout(CANCEL_TIMEOUT, op.send.stopped()).await;
    }
}

/// Reads one frame from a source and forwards it: a chunk goes on undecoded, gathered into one
/// buffer, and anything else is decoded and returned. Not cancel-safe: a frame half forwarded when
/// this is dropped leaves the destination mid-frame, so callers then reset it.
///
/// Gathering costs one memory copy, and it is cheaper than forwarding the received pieces as they
/// are: each piece is one incoming packet's payload, and quinn-proto (0.11) looks a send offset up
/// by walking the stream's unacknowledged pieces from the front, once per packet it builds. A
/// window's worth of packet-sized pieces made that walk the hub's largest cost (15 % of its CPU
/// in a 1 GiB relay); a few frame-sized pieces make it nothing. It also lets go of the receive
/// buffers at once instead of when the destination acknowledges.
async fn forward(
    from: &mut RecvStream,
    to: &mut SendStream,
    stats: &Stats,
) -> Result<Option<TransferFrame>, Outcome> {
    let src_gone = |what: String| {
        Outcome::Interrupted(fail(
            TransferErrorKind::Interrupted,
            format!("the source dropped the transfer ({what})"),
        ))
    };
    let mut header = [0u8; HEADER_LEN];
    if let Err(e) = from.read_exact(&mut header).await {
        return Err(src_gone(e.to_string()));
    }
    let len = match peek_len(&header, MAX_TRANSFER_FRAME) {
        Ok(len) => len.unwrap_or(0),
        Err(e) => {
            return Err(Outcome::SourceFailed(fail(
                TransferErrorKind::Protocol,
                format!("source: {e}"),
            )));
        }
    };
    let mut frame = BytesMut::with_capacity(HEADER_LEN + len);
    frame.extend_from_slice(&header);
    while frame.len() < HEADER_LEN + len {
        let left = HEADER_LEN + len - frame.len();
        match from.read_chunk(left, true).await {
            Ok(Some(c)) => frame.extend_from_slice(&c.bytes),
            Ok(None) => return Err(src_gone("stream ended inside a frame".into())),
            Err(e) => return Err(src_gone(e.to_string())),
        }
    }
    let frame_len = frame.len() as u64;
    stats.message(StreamKind::Transfer, Direction::In, frame_len);
    if frame.get(HEADER_LEN) == Some(&CHUNK_VARIANT) {
        to.write_chunk(frame.freeze()).await.map_err(|e| {
            Outcome::Interrupted(fail(
                TransferErrorKind::Interrupted,
                format!("the destination dropped the transfer ({e})"),
            ))
        })?;
        stats.message(StreamKind::Transfer, Direction::Out, frame_len);
        return Ok(None);
    }
    flotilla_wire::decode_body::<TransferFrame>(&frame[HEADER_LEN..])
        .map(Some)
        .map_err(|e| {
            Outcome::SourceFailed(fail(TransferErrorKind::Protocol, format!("source: {e}")))
        })
}

/// Source to destination until `End`; Ok once it is forwarded.
async fn pump_data(
    src_recv: &mut RecvStream,
    dst_send: &mut SendStream,
    stats: &Stats,
) -> Result<(), Outcome> {
    loop {
        match forward(src_recv, dst_send, stats).await? {
            None => {}
            Some(end @ TransferFrame::End { .. }) => {
                write_frame(
                    &mut stats.writer(StreamKind::Transfer, dst_send),
                    &end,
                    MAX_TRANSFER_FRAME,
                )
                .await
                .map_err(|e| {
                    Outcome::Interrupted(fail(
                        TransferErrorKind::Interrupted,
                        format!("the destination dropped the transfer ({e})"),
                    ))
                })?;
                return Ok(());
            }
            Some(TransferFrame::Failed(e)) => {
                // Only whole frames went out, so the destination can read this one.
                let _ = write_frame(
                    dst_send,
                    &TransferFrame::Failed(e.clone()),
                    MAX_TRANSFER_FRAME,
                )
                .await;
                let _ = dst_send.finish();
                return Err(Outcome::SourceFailed(e));
            }
            Some(TransferFrame::Cancel) => return Err(Outcome::Cancel),
            Some(other) => {
                return Err(Outcome::SourceFailed(fail(
                    TransferErrorKind::Protocol,
                    format!("the source sent {other:?} during data"),
                )));
            }
        }
    }
}

/// Destination to hub until `Done` or a failure, reporting progress.
async fn watch_dest(
    dst_recv: &mut RecvStream,
    rec: &mut Record,
    report: &mpsc::Sender<TransferFrame>,
) -> Outcome {
    let mut last = Instant::now() - PROGRESS_EVERY;
    loop {
        match read_frame::<TransferFrame, _>(dst_recv, MAX_TRANSFER_FRAME).await {
            Ok(Some(TransferFrame::Ack { written })) => {
                rec.written = written;
                if last.elapsed() >= PROGRESS_EVERY {
                    last = Instant::now();
                    // A console that is behind skips updates.
                    let _ = report.try_send(TransferFrame::Progress { written });
                }
                if rec.last_event.elapsed() >= EVENT_EVERY {
                    rec.event(TransferState::Progress);
                }
            }
            Ok(Some(TransferFrame::Done(d))) => return Outcome::Done(d),
            Ok(Some(TransferFrame::Failed(e))) => return Outcome::DestFailed(e),
            Ok(Some(TransferFrame::Cancel)) => return Outcome::Cancel,
            Ok(Some(other)) => {
                return Outcome::DestFailed(fail(
                    TransferErrorKind::Protocol,
                    format!("the destination sent {other:?}"),
                ));
            }
            Ok(None) | Err(_) => {
                return Outcome::Interrupted(fail(
                    TransferErrorKind::Interrupted,
                    "the destination dropped the transfer",
                ));
            }
        }
    }
}

/// The operator's stream while it only watches: a `Cancel`, or the operator going away.
async fn watch_operator(op_recv: Option<&mut RecvStream>) -> Outcome {
    let Some(op_recv) = op_recv else {
        return std::future::pending().await;
    };
    match read_frame::<TransferFrame, _>(op_recv, MAX_TRANSFER_FRAME).await {
        Ok(Some(TransferFrame::Cancel)) => Outcome::Cancel,
        Ok(Some(other)) => Outcome::Interrupted(fail(
            TransferErrorKind::Protocol,
            format!("the operator sent {other:?} during a copy"),
        )),
        Ok(None) | Err(_) => Outcome::Interrupted(fail(
            TransferErrorKind::Interrupted,
            "the operator's console went away",
        )),
    }
}

/// Relays data while watching the destination, the operator, a newer attempt and shutdown.
#[allow(clippy::too_many_arguments)]
async fn pump(
    src_recv: &mut RecvStream,
    dst_send: &mut SendStream,
    dst_recv: &mut RecvStream,
    op_recv: Option<&mut RecvStream>,
    rec: &mut Record,
    report: &mpsc::Sender<TransferFrame>,
    superseded: &CancellationToken,
    cancel: &CancellationToken,
) -> Outcome {
    let ctx = rec.ctx.clone();
    let data = pump_data(src_recv, dst_send, &ctx.stats);
    let dest = watch_dest(dst_recv, rec, report);
    let op = watch_operator(op_recv);
    tokio::pin!(data, dest, op);
    let mut data_done = false;
    loop {
        tokio::select! {
            r = &mut data, if !data_done => match r {
                Ok(()) => data_done = true,
                Err(o) => return o,
            },
            o = &mut dest => return o,
            o = &mut op => return o,
            _ = superseded.cancelled() => {
                return Outcome::Interrupted(fail(
                    TransferErrorKind::Interrupted,
                    "a newer attempt of this transfer took over",
                ));
            }
            _ = cancel.cancelled() => return Outcome::Interrupted(shutting_down()),
        }
    }
}

/// Waits for the destination to confirm a cancel: it finishes its stream cleanly once its partial
/// file is gone.
async fn confirmed(dst_recv: &mut RecvStream) -> bool {
    let drain = async {
        loop {
            match dst_recv.read_chunk(MAX_TRANSFER_FRAME, true).await {
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(CANCEL_TIMEOUT, drain)
        .await
        .unwrap_or(false)
}

/// Tells each party how it ended and records it.
async fn conclude(
    outcome: Outcome,
    src_send: Option<&mut SendStream>,
    dst: &mut Leg,
    role: OpRole,
    rec: &mut Record,
    report: &mpsc::Sender<TransferFrame>,
) {
    // The source agent's stream, when the source is an agent.
    let end_source = |src_send: Option<&mut SendStream>, code: Option<ErrorCode>| {
        if let Some(s) = src_send {
            match code {
                Some(code) => {
                    let _ = s.reset(code.as_u32().into());
                }
                None => {
                    let _ = s.finish();
                }
            }
        }
    };
    match outcome {
        Outcome::Done(done) => {
            rec.written = done.size;
            tracing::info!(bytes = done.size, resumed_from = done.resumed_from, blake3 = %done.digest, "copy verified");
            end_source(src_send, None);
            let _ = dst.send.finish();
            rec.finish(TransferOutcome::Done, "", done.digest.to_string())
                .await;
            rec.event(TransferState::Done);
            if role != OpRole::Destination {
                let _ = report.send(TransferFrame::Done(done)).await;
            }
        }
        Outcome::DestFailed(err) | Outcome::SourceFailed(err) if !err.kind.retryable() => {
            tracing::warn!(kind = ?err.kind, error = %err.message, "copy failed");
            end_source(src_send, Some(ErrorCode::Internal));
            let _ = dst.send.finish();
            rec.finish(TransferOutcome::Failed, &err.message, String::new())
                .await;
            rec.event(TransferState::Failed(err.clone()));
            let _ = report.send(TransferFrame::Failed(err)).await;
        }
        Outcome::DestFailed(err) | Outcome::SourceFailed(err) | Outcome::Interrupted(err) => {
            tracing::info!(error = %err.message, written = rec.written, "copy interrupted; the destination keeps its bytes");
            end_source(src_send, Some(ErrorCode::Internal));
            // A reset, not a frame: the data stream may be mid-frame.
            dst.reset(ErrorCode::Internal);
            rec.finish(TransferOutcome::Interrupted, &err.message, String::new())
                .await;
            rec.event(TransferState::Failed(err.clone()));
            let _ = report.send(TransferFrame::Failed(err)).await;
        }
        Outcome::Cancel if role == OpRole::Destination => {
            // The operator is the destination and removes its own partial file; it waits for this
            // reset, sent once the record is written, before it disconnects.
            end_source(src_send, Some(ErrorCode::Cancelled));
            tracing::info!("copy cancelled by the receiving console");
            rec.finish(
                TransferOutcome::Cancelled,
                "cancelled by the operator",
                String::new(),
            )
            .await;
            rec.event(TransferState::Cancelled);
            dst.reset(ErrorCode::Cancelled);
        }
        Outcome::Cancel => {
            end_source(src_send, Some(ErrorCode::Cancelled));
            let _ = dst.send.reset(ErrorCode::Cancelled.as_u32().into());
            let clean = confirmed(&mut dst.recv).await;
            tracing::info!(confirmed = clean, "copy cancelled");
            rec.finish(
                TransferOutcome::Cancelled,
                "cancelled by the operator",
                String::new(),
            )
            .await;
            rec.event(TransferState::Cancelled);
            {
                let reply = if clean {
                    TransferFrame::Cancelled
                } else {
                    TransferFrame::Failed(fail(
                        TransferErrorKind::Cancelled,
                        format!(
                            "cancelled, but {} did not confirm removing its partial file",
                            rec.dst
                        ),
                    ))
                };
                let _ = report.send(reply).await;
            }
        }
    }
}
