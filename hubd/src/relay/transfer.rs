//! One copy, relayed: the hub opens a read stream to the source and a write stream to the
//! destination (or uses the operator's copy stream for a local end), lets the destination say how
//! much it already holds, lets the source check those bytes against its own, then forwards chunks
//! until the destination has verified the whole file.
//!
//! Endings: a cancel resets both legs with [`ErrorCode::Cancelled`] (the destination removes its
//! partial file and confirms); a party dropping resets the others with another code (the
//! destination keeps the bytes for a resume); a failure at one end is told to the other.
//!
//! Every decision lives in the sans-IO [`machine::Relay`]; this file resolves the ends, opens the
//! streams, moves bytes, writes records and feeds the machine what happened ([`Driver`]).

use crate::HubCtx;
use crate::admin::Actor;
use crate::stats::{Direction, Stats, StreamKind};
use crate::store::{self, TransferOutcome, now_ms};
use bytes::{Bytes, BytesMut};
use flotilla_wire::files::{
    CHUNK_VARIANT, CopyEnd, CopyRequest, FileEvent, FileMeta, HubStreamOpen, ResumeKey,
    TransferError, TransferErrorKind, TransferEvent, TransferFrame, TransferId, TransferState,
    WriteKind, WriteOpen, normalize_rel_path,
};
use flotilla_wire::frame::{HEADER_LEN, peek_len};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_TRANSFER_FRAME};
use flotilla_wire::{ErrorCode, IdentityId, Role};
use futures::FutureExt;
use quinn::{RecvStream, SendStream};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod machine;

use machine::{
    Action, CANCEL_TIMEOUT, EndPlan, Leg, OpRole, Plan, Relay, SETUP_TIMEOUT, shutting_down,
};

/// Reports queued for the operator: a console that reads slowly loses progress frames, never the
/// outcome.
const REPORT_QUEUE: usize = 8;
/// Time to write one report to the operator before giving up on it (and on its later reports).
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

    /// This end as the relay's state machine sees it.
    fn plan(&self) -> EndPlan {
        match self {
            Self::Agent { path, .. } => EndPlan::Agent {
                label: self.label(),
                path: path.clone(),
            },
            Self::Local { meta, .. } => EndPlan::Local {
                label: self.label(),
                meta: *meta,
            },
        }
    }

    fn conn(&self) -> Option<(quinn::Connection, String)> {
        match self {
            Self::Agent { conn, name, .. } => Some((conn.clone(), name.clone())),
            Self::Local { .. } => None,
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

/// Opens a stream to an agent and sends its opening frame.
async fn open_leg(
    conn: &quinn::Connection,
    name: &str,
    open: &HubStreamOpen,
) -> Result<Bi, TransferError> {
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
    Ok(Bi { send, recv })
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
}

impl Record {
    fn event(&self, state: TransferState) {
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
struct Bi {
    send: SendStream,
    recv: RecvStream,
}

impl Bi {
    fn reset(&mut self, code: ErrorCode) {
        let _ = self.send.reset(code.as_u32().into());
        let _ = self.recv.stop(code.as_u32().into());
    }
}

/// Serves one operator copy stream to its end.
pub(crate) async fn copy(
    ctx: Arc<HubCtx>,
    actor: Actor,
    send: SendStream,
    recv: RecvStream,
    cancel: CancellationToken,
) {
    let mut op = Bi { send, recv };
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

async fn run(ctx: Arc<HubCtx>, actor: Actor, req: CopyRequest, op: Bi, cancel: CancellationToken) {
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
    if let (End::Local { .. }, End::Local { .. }) = (&src, &dst) {
        let err = fail(TransferErrorKind::BadRequest, "both ends are local: use cp");
        return refuse(op, err).await;
    }
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
    let plan = Plan {
        transfer: req.transfer,
        src: src.plan(),
        dst: dst.plan(),
        src_key: src.key_part(&actor.name),
        dst_key: dst.key_part(&actor.name),
    };
    let mut rec = Record {
        ctx: ctx.clone(),
        transfer: req.transfer,
        actor: actor.name.clone(),
        src: src.label(),
        dst: dst.label(),
        size: 0,
        written: 0,
    };
    let relay = Relay::new(plan, Instant::now());
    let conns = [src.conn(), dst.conn()];
    Driver::new(relay, op, conns, &ctx.stats)
        .run(&mut rec, &active.token, &cancel)
        .await;
}

/// Tells the operator why the copy cannot go ahead, and lets it read that before the stream goes.
async fn refuse(mut op: Bi, err: TransferError) {
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
async fn make_dir(req: CopyRequest, dst: &End, op: Bi) {
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

/// Which stream of the driver a leg is: the operator's, or an agent's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Op = 0,
    Src = 1,
    Dst = 2,
}

/// The receive side of a stream, with the frame being read (never more than one).
struct Rx {
    recv: RecvStream,
    buf: BytesMut,
    ended: bool,
}

impl Rx {
    fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            buf: BytesMut::new(),
            ended: false,
        }
    }

    /// Bytes to read to complete the current frame's header, or else its body: reading no further
    /// keeps one frame at most in memory and leaves the next frame's bytes in quinn's window.
    fn want(&self) -> Result<usize, String> {
        if self.buf.len() < HEADER_LEN {
            return Ok(HEADER_LEN - self.buf.len());
        }
        let len = peek_len(&self.buf, MAX_TRANSFER_FRAME)
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        Ok(HEADER_LEN + len - self.buf.len())
    }

    /// The whole frame, once it is all here.
    fn take_frame(&mut self) -> Option<BytesMut> {
        match self.want() {
            Ok(0) if self.buf.len() >= HEADER_LEN => Some(self.buf.split()),
            _ => None,
        }
    }
}

/// The send side of a stream, with the frames queued for it.
struct Tx {
    send: SendStream,
    out: VecDeque<Bytes>,
    /// Reset, or a write failed: nothing more is written.
    dead: bool,
    /// Since when the head of `out` has waited without a byte written.
    stalled_since: Option<Instant>,
}

impl Tx {
    fn new(send: SendStream) -> Self {
        Self {
            send,
            out: VecDeque::new(),
            dead: false,
            stalled_since: None,
        }
    }

    /// Writes what is queued, whole, under [`REPORT_TIMEOUT`]. Not cancel-safe.
    async fn flush(&mut self) {
        if self.dead {
            return;
        }
        let mut bufs: Vec<Bytes> = self.out.drain(..).collect();
        let write = self.send.write_all_chunks(&mut bufs);
        if !matches!(
            tokio::time::timeout(REPORT_TIMEOUT, write).await,
            Ok(Ok(()))
        ) {
            self.dead = true;
        }
    }

    fn reset(&mut self, code: ErrorCode) {
        self.out.clear();
        self.dead = true;
        let _ = self.send.reset(code.as_u32().into());
    }
}

/// What woke the driver.
enum Wake {
    Read(Slot, Result<Option<Bytes>, quinn::ReadError>),
    Wrote(Slot, Result<(), quinn::WriteError>),
    Timer,
    Superseded,
    Shutdown,
}

/// Reads up to `want` bytes of the stream if `on`; never resolves otherwise. Cancel-safe.
async fn read_some(
    rx: Option<&mut Rx>,
    on: bool,
    want: usize,
) -> Result<Option<Bytes>, quinn::ReadError> {
    match rx {
        Some(rx) if on => rx
            .recv
            .read_chunk(want, true)
            .await
            .map(|c| c.map(|c| c.bytes)),
        _ => std::future::pending().await,
    }
}

/// Writes some of the head of the queue; never resolves while there is none. Cancel-safe: the
/// head is advanced by what was written.
async fn write_some(tx: Option<&mut Tx>) -> Result<(), quinn::WriteError> {
    let Some(tx) = tx.filter(|t| !t.dead) else {
        return std::future::pending().await;
    };
    let Some(head) = tx.out.front_mut() else {
        return std::future::pending().await;
    };
    tx.send.write_chunks(std::slice::from_mut(head)).await?;
    if head.is_empty() {
        tx.out.pop_front();
    }
    Ok(())
}

/// Moves the bytes of one copy and feeds its [`Relay`]: the only code here that does IO.
struct Driver<'a> {
    relay: Relay,
    rx: [Option<Rx>; 3],
    tx: [Option<Tx>; 3],
    /// The agent of the source and of the destination, when that end is an agent.
    conns: [Option<(quinn::Connection, String)>; 2],
    stats: &'a Stats,
}

impl<'a> Driver<'a> {
    fn new(
        relay: Relay,
        op: Bi,
        conns: [Option<(quinn::Connection, String)>; 2],
        stats: &'a Stats,
    ) -> Self {
        Self {
            relay,
            rx: [Some(Rx::new(op.recv)), None, None],
            tx: [Some(Tx::new(op.send)), None, None],
            conns,
            stats,
        }
    }

    fn slot(&self, leg: Leg) -> Slot {
        match (leg, self.relay.role()) {
            (Leg::Source, OpRole::Source) | (Leg::Destination, OpRole::Destination) => Slot::Op,
            (Leg::Operator, _) => Slot::Op,
            (Leg::Source, _) => Slot::Src,
            (Leg::Destination, _) => Slot::Dst,
        }
    }

    fn leg(&self, slot: Slot) -> Leg {
        match (slot, self.relay.role()) {
            (Slot::Src, _) | (Slot::Op, OpRole::Source) => Leg::Source,
            (Slot::Dst, _) | (Slot::Op, OpRole::Destination) => Leg::Destination,
            (Slot::Op, OpRole::Watcher) => Leg::Operator,
        }
    }

    fn tx(&mut self, leg: Leg) -> Option<&mut Tx> {
        let slot = self.slot(leg);
        self.tx[slot as usize].as_mut()
    }

    /// Runs the relay to its end.
    async fn run(
        mut self,
        rec: &mut Record,
        superseded: &CancellationToken,
        cancel: &CancellationToken,
    ) {
        let (mut superseded_seen, mut shutdown_seen) = (false, false);
        loop {
            if self.act(rec).await {
                break;
            }
            if self.relay.is_closed() {
                // Closed without saying so cannot happen; leave rather than wait forever.
                break;
            }
            let wake = self
                .wait(superseded, cancel, superseded_seen, shutdown_seen)
                .await;
            let now = Instant::now();
            match wake {
                Wake::Read(slot, r) => self.on_read(slot, r, now),
                Wake::Wrote(slot, r) => self.on_wrote(slot, r, now),
                Wake::Timer => {
                    self.relay.handle_timeout(now);
                    self.check_report_stall(now);
                }
                Wake::Superseded => {
                    superseded_seen = true;
                    self.relay.handle_superseded(now);
                }
                Wake::Shutdown => {
                    shutdown_seen = true;
                    self.relay.handle_shutdown(now);
                }
            }
        }
        self.close().await;
    }

    /// Waits for the next thing to happen. Every branch is cancel-safe.
    async fn wait(
        &mut self,
        superseded: &CancellationToken,
        cancel: &CancellationToken,
        superseded_seen: bool,
        shutdown_seen: bool,
    ) -> Wake {
        let dst_slot = self.slot(Leg::Destination) as usize;
        let forwarding = self.relay.forwards();
        let dst_free = self.tx[dst_slot].as_ref().is_none_or(|t| t.out.is_empty());
        let mut on = [false; 3];
        let mut want = [0usize; 3];
        for slot in [Slot::Op, Slot::Src, Slot::Dst] {
            let leg = self.leg(slot);
            let i = slot as usize;
            let Some(rx) = self.rx[i].as_ref() else {
                continue;
            };
            // The source is read only once the destination took the previous frame.
            let paced = !(forwarding && leg == Leg::Source) || dst_free;
            on[i] = !rx.ended && self.relay.reads(leg) && paced;
            want[i] = rx.want().unwrap_or(HEADER_LEN).max(1);
        }
        let stall = self.report_stall_deadline();
        let deadline = match (self.relay.poll_timeout(), stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let [r0, r1, r2] = &mut self.rx;
        let [t0, t1, t2] = &mut self.tx;
        tokio::select! {
            r = read_some(r0.as_mut(), on[0], want[0]) => Wake::Read(Slot::Op, r),
            r = read_some(r1.as_mut(), on[1], want[1]) => Wake::Read(Slot::Src, r),
            r = read_some(r2.as_mut(), on[2], want[2]) => Wake::Read(Slot::Dst, r),
            r = write_some(t0.as_mut()) => Wake::Wrote(Slot::Op, r),
            r = write_some(t1.as_mut()) => Wake::Wrote(Slot::Src, r),
            r = write_some(t2.as_mut()) => Wake::Wrote(Slot::Dst, r),
            () = timer => Wake::Timer,
            () = superseded.cancelled(), if !superseded_seen => Wake::Superseded,
            () = cancel.cancelled(), if !shutdown_seen => Wake::Shutdown,
        }
    }

    /// When the operator's reports have waited too long, unless the operator is the destination
    /// (then its stream carries data, paced by flow control).
    fn report_stall_deadline(&self) -> Option<Instant> {
        if self.relay.role() == OpRole::Destination {
            return None;
        }
        let since = self.tx[Slot::Op as usize]
            .as_ref()
            .filter(|t| !t.dead)?
            .stalled_since?;
        Some(since + REPORT_TIMEOUT)
    }

    fn check_report_stall(&mut self, now: Instant) {
        if self.report_stall_deadline().is_some_and(|d| now >= d)
            && let Some(tx) = self.tx[Slot::Op as usize].as_mut()
        {
            tracing::debug!("operator stopped reading its copy stream");
            tx.out.clear();
            tx.dead = true;
            tx.stalled_since = None;
        }
    }

    fn on_read(&mut self, slot: Slot, r: Result<Option<Bytes>, quinn::ReadError>, now: Instant) {
        let leg = self.leg(slot);
        let i = slot as usize;
        let Some(rx) = self.rx[i].as_mut() else {
            return;
        };
        let bytes = match r {
            Ok(Some(b)) => b,
            Ok(None) => {
                rx.ended = true;
                if rx.buf.is_empty() {
                    self.relay
                        .handle_recv_ended(leg, true, "stream finished", now);
                } else {
                    self.relay
                        .handle_recv_ended(leg, false, "stream ended inside a frame", now);
                }
                return;
            }
            Err(e) => {
                rx.ended = true;
                self.relay
                    .handle_recv_ended(leg, false, &e.to_string(), now);
                return;
            }
        };
        rx.buf.extend_from_slice(&bytes);
        // The rest of a frame that is already here is taken at once rather than one wake-up of
        // the whole loop per packet (`read_chunk` is cancel-safe, so asking costs nothing).
        while let Ok(want) = rx.want()
            && want > 0
        {
            match rx.recv.read_chunk(want, true).now_or_never() {
                Some(Ok(Some(c))) => rx.buf.extend_from_slice(&c.bytes),
                // The stream ended or failed inside the frame.
                Some(r) => return self.on_read(slot, r.map(|c| c.map(|c| c.bytes)), now),
                // Not here yet: the next wake-up reads it.
                None => break,
            }
        }
        if let Err(e) = rx.want() {
            rx.ended = true;
            let _ = rx.recv.stop(ErrorCode::TooLarge.as_u32().into());
            self.relay.handle_bad_frame(leg, &e, now);
            return;
        }
        let Some(frame) = rx.take_frame() else {
            return;
        };
        let forwarding = leg == Leg::Source && self.relay.forwards();
        let len = frame.len() as u64;
        if forwarding {
            self.stats.message(StreamKind::Transfer, Direction::In, len);
            if frame.get(HEADER_LEN) == Some(&CHUNK_VARIANT) {
                // Forwarded as it came: no decode, no copy.
                self.stats
                    .message(StreamKind::Transfer, Direction::Out, len);
                let dst = self.slot(Leg::Destination) as usize;
                if let Some(tx) = self.tx[dst].as_mut().filter(|t| !t.dead) {
                    tx.out.push_back(frame.freeze());
                    tx.stalled_since.get_or_insert(now);
                }
                return;
            }
        }
        match flotilla_wire::decode_body::<TransferFrame>(&frame[HEADER_LEN..]) {
            Ok(f) => self.relay.handle_frame(leg, f, now),
            Err(e) => self.relay.handle_bad_frame(leg, &e.to_string(), now),
        }
    }

    fn on_wrote(&mut self, slot: Slot, r: Result<(), quinn::WriteError>, now: Instant) {
        let leg = self.leg(slot);
        let Some(tx) = self.tx[slot as usize].as_mut() else {
            return;
        };
        match r {
            Ok(()) => tx.stalled_since = (!tx.out.is_empty()).then_some(now),
            Err(e) => {
                tx.out.clear();
                tx.dead = true;
                self.relay.handle_send_failed(leg, &e.to_string(), now);
            }
        }
    }

    /// Carries out the relay's actions; true once it said `Close`.
    async fn act(&mut self, rec: &mut Record) -> bool {
        let mut closing = false;
        while let Some(action) = self.relay.poll_action() {
            let now = Instant::now();
            match action {
                Action::Open(leg, open) => self.open(leg, &open, now).await,
                Action::Send(leg, frame) => {
                    let mut buf = BytesMut::new();
                    if let Err(e) =
                        flotilla_wire::frame::encode(&frame, &mut buf, MAX_TRANSFER_FRAME)
                    {
                        tracing::error!(error = %e, "could not encode a transfer frame");
                        continue;
                    }
                    if leg == Leg::Destination {
                        self.stats
                            .message(StreamKind::Transfer, Direction::Out, buf.len() as u64);
                    }
                    if let Some(tx) = self.tx(leg).filter(|t| !t.dead) {
                        tx.out.push_back(buf.freeze());
                        tx.stalled_since.get_or_insert(now);
                    }
                }
                Action::Finish(leg) => {
                    if let Some(tx) = self.tx(leg) {
                        tx.flush().await;
                        let _ = tx.send.finish();
                    }
                }
                Action::ResetSend(leg, code) => {
                    if let Some(tx) = self.tx(leg) {
                        tx.reset(code);
                    }
                }
                Action::Reset(leg, code) => {
                    if let Some(tx) = self.tx(leg) {
                        tx.reset(code);
                    }
                    let slot = self.slot(leg) as usize;
                    if let Some(rx) = self.rx[slot].as_mut() {
                        rx.ended = true;
                        let _ = rx.recv.stop(code.as_u32().into());
                    }
                }
                Action::RecordBegin { resumed_from, size } => {
                    if let Some(started) = self.relay.started()
                        && started.discarded > 0
                    {
                        tracing::warn!(
                            discarded = started.discarded,
                            "the partial file did not match the source: starting over"
                        );
                    }
                    tracing::info!(size, resumed_from, "data flowing");
                    rec.size = size;
                    rec.written = resumed_from;
                    rec.begin(resumed_from).await;
                }
                Action::RecordFinish {
                    outcome,
                    error,
                    digest,
                    written,
                } => {
                    match outcome {
                        TransferOutcome::Done => {
                            tracing::info!(bytes = written, blake3 = %digest, "copy verified");
                        }
                        TransferOutcome::Failed => {
                            tracing::warn!(error = %error, "copy failed");
                        }
                        TransferOutcome::Interrupted => tracing::info!(
                            error = %error, written,
                            "copy interrupted; the destination keeps its bytes"
                        ),
                        TransferOutcome::Cancelled | TransferOutcome::Running => {
                            tracing::info!("copy cancelled");
                        }
                    }
                    rec.written = written;
                    rec.finish(outcome, &error, digest).await;
                }
                Action::Publish(state, bytes) => {
                    rec.written = bytes;
                    rec.event(state);
                }
                Action::Report(frame) => {
                    let droppable = matches!(frame, TransferFrame::Progress { .. });
                    if let Some(tx) = self.tx[Slot::Op as usize].as_mut().filter(|t| !t.dead) {
                        if droppable && tx.out.len() >= REPORT_QUEUE {
                            // A console that is behind skips updates.
                            continue;
                        }
                        if let TransferFrame::Failed(e) = &frame
                            && self.relay.started().is_none()
                        {
                            tracing::info!(kind = ?e.kind, error = %e.message, "copy refused");
                        }
                        let mut buf = BytesMut::new();
                        if flotilla_wire::frame::encode(&frame, &mut buf, MAX_TRANSFER_FRAME)
                            .is_ok()
                        {
                            tx.out.push_back(buf.freeze());
                            tx.stalled_since.get_or_insert(now);
                        }
                    }
                }
                Action::Close => closing = true,
            }
        }
        closing
    }

    /// Opens the leg's agent stream and tells the relay how that went.
    async fn open(&mut self, leg: Leg, open: &HubStreamOpen, now: Instant) {
        let slot = self.slot(leg);
        let conn = match slot {
            Slot::Src => self.conns[0].as_ref(),
            Slot::Dst => self.conns[1].as_ref(),
            Slot::Op => None,
        };
        let Some((conn, name)) = conn else {
            self.relay.handle_open_failed(leg, "not an agent", now);
            return;
        };
        match open_leg(conn, name, open).await {
            Ok(bi) => {
                self.rx[slot as usize] = Some(Rx::new(bi.recv));
                self.tx[slot as usize] = Some(Tx::new(bi.send));
                self.relay.handle_opened(leg, Instant::now());
            }
            Err(e) => self
                .relay
                .handle_open_failed(leg, &e.message, Instant::now()),
        }
    }

    /// Says the last word to the operator and lets it read it before the stream goes; agent streams
    /// not finished or reset by now finish as they drop.
    async fn close(mut self) {
        if let Some(tx) = self.tx[Slot::Op as usize].as_mut()
            && !tx.dead
        {
            tx.flush().await;
            let _ = tx.send.finish();
            let _ = tokio::time::timeout(CANCEL_TIMEOUT, tx.send.stopped()).await;
        }
        for (conn, name) in self.conns.iter().flatten() {
            let path = conn.stats().path;
            tracing::debug!(agent = %name, rtt_us = path.rtt.as_micros() as u64, cwnd = path.cwnd,
                mtu = path.current_mtu, lost_packets = path.lost_packets,
                sent_packets = path.sent_packets, black_holes = path.black_holes_detected,
                "link after the transfer");
        }
    }
}
