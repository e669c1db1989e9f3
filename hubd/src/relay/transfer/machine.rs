//! The relay of one copy as a sans-IO state machine: stream events and decoded control frames go in
//! through `handle_*` (with the time they happened), and what to write, reset, record and report
//! comes out of [`Relay::poll_action`]. It never touches a socket, the store or a clock; the async
//! driver in `transfer.rs` only moves bytes and feeds it.
//!
//! Chunks never pass through here: while [`Relay::forwards`] says so, the driver hands the source's
//! chunk frames to the destination as they are and gives the machine only the other frames.

use crate::store::TransferOutcome;
use flotilla_wire::ErrorCode;
use flotilla_wire::files::{
    FileMeta, HubStreamOpen, ReadOpen, ResumeKey, TransferDone, TransferError, TransferErrorKind,
    TransferFrame, TransferId, TransferStarted, TransferState, WriteKind, WriteOpen,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Time for an end to open, stat, and hash what an earlier attempt left (a few GB at disk speed).
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Time for a source agent to open and stat the file and offer it. Nothing is hashed before the
/// offer, so only a wedged open (a FIFO, a hung network mount) takes longer; retrying it would only
/// pile up more stuck opens on the agent, so running out of it is final.
pub(crate) const OFFER_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for the destination to confirm a cancel (remove its partial file).
pub(crate) const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a destination that stopped taking data to say why (a `Failed` frame such as "no
/// space"), before the hub takes it for a dropped party.
pub(crate) const VERDICT_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two progress frames to the operator: a terminal redraws at 10 Hz.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Least time between two progress events to watchers.
pub(crate) const EVENT_EVERY: Duration = Duration::from_secs(1);

/// The three streams of a relay, by their part in it. The operator's copy stream is the source in
/// an upload and the destination in a download; it is [`Leg::Operator`] only when it watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Leg {
    /// Where the data comes from.
    Source,
    /// Where it goes.
    Destination,
    /// The operator's stream of an agent-to-agent copy: reports out, a cancel in.
    Operator,
}

/// Which leg the operator's stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpRole {
    /// Agent to agent: the operator watches and may cancel.
    Watcher,
    /// Upload: the operator sends the data.
    Source,
    /// Download: the operator receives the data.
    Destination,
}

/// One end as the machine needs it.
#[derive(Clone, Debug)]
pub(crate) enum EndPlan {
    /// An agent's shared folder.
    Agent {
        /// `name:path`, for messages.
        label: String,
        /// Path relative to the shared folder, already normalised.
        path: String,
    },
    /// The operator's machine; a local source says its size.
    Local {
        /// `local:path`, for messages.
        label: String,
        /// The source's size, time and mode (none for a destination).
        meta: Option<FileMeta>,
    },
}

impl EndPlan {
    fn label(&self) -> &str {
        match self {
            Self::Agent { label, .. } | Self::Local { label, .. } => label,
        }
    }

    fn is_agent(&self) -> bool {
        matches!(self, Self::Agent { .. })
    }
}

/// What a relay is asked to do.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The console's id for the copy, the same on every attempt.
    pub(crate) transfer: TransferId,
    /// Where the data comes from.
    pub(crate) src: EndPlan,
    /// Where it goes.
    pub(crate) dst: EndPlan,
    /// What names the source in the resume key (stable across attempts and consoles).
    pub(crate) src_key: String,
    /// What names the destination in the resume key.
    pub(crate) dst_key: String,
}

impl Plan {
    /// Which leg the operator's stream is, or `None` when both ends are local.
    pub(crate) fn role(&self) -> Option<OpRole> {
        match (self.src.is_agent(), self.dst.is_agent()) {
            (false, false) => None,
            (false, true) => Some(OpRole::Source),
            (true, false) => Some(OpRole::Destination),
            (true, true) => Some(OpRole::Watcher),
        }
    }
}

/// What the driver must do next, in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    /// Open a stream to the leg's agent and send this opening frame; then feed
    /// [`Relay::handle_opened`] or [`Relay::handle_open_failed`].
    Open(Leg, HubStreamOpen),
    /// Write this frame whole to the leg, after anything queued before it.
    Send(Leg, TransferFrame),
    /// Write what is queued to the leg, then finish its send side.
    Finish(Leg),
    /// Reset the leg's send side with the code, dropping what is queued (the data stream may be
    /// mid-frame, so a reset rather than a frame).
    ResetSend(Leg, ErrorCode),
    /// Reset the leg's send side and stop its receive side with the code.
    Reset(Leg, ErrorCode),
    /// Record an attempt that starts with data flowing from this offset.
    RecordBegin {
        /// Bytes the destination already holds.
        resumed_from: u64,
        /// The source's size.
        size: u64,
    },
    /// Record how the attempt ended (written before its final event is published).
    RecordFinish {
        /// The row's new state.
        outcome: TransferOutcome,
        /// Empty on success.
        error: String,
        /// The verified BLAKE3 (hex), empty unless done.
        digest: String,
        /// Bytes verified at the destination.
        written: u64,
    },
    /// Publish a transfer event to watchers with the bytes written so far.
    Publish(TransferState, u64),
    /// Queue a frame to the operator. `Progress` may be dropped when the operator reads slowly.
    Report(TransferFrame),
    /// Everything is said: flush the operator's stream, finish it and let it go.
    Close,
}

/// How the data phase ended.
#[derive(Clone, Debug, PartialEq)]
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

#[derive(Clone, Debug, PartialEq)]
enum State {
    /// Waiting for the source agent's stream to open.
    OpenSource { deadline: Instant },
    /// Waiting for the source's `Offer`.
    AwaitOffer { deadline: Instant },
    /// Waiting for the destination agent's stream to open.
    OpenDestination { meta: FileMeta, deadline: Instant },
    /// Waiting for the destination's `Ready`.
    AwaitReady { meta: FileMeta, deadline: Instant },
    /// Waiting for the source's `Begin`, after `ReadFrom { offset }`.
    AwaitBegin {
        meta: FileMeta,
        offset: u64,
        deadline: Instant,
    },
    /// Data flows. `source_done`: `End` went to the destination. `stopped`: the destination stopped
    /// taking data; its verdict is awaited until the deadline.
    Data {
        source_done: bool,
        stopped: Option<(Instant, String)>,
    },
    /// Cancel sent to the destination; waiting for it to finish its stream.
    AwaitCancelConfirm { deadline: Instant },
    /// Nothing more to do.
    Closed,
}

/// One copy's relay. See the module doc.
#[derive(Debug)]
pub(crate) struct Relay {
    plan: Plan,
    role: OpRole,
    state: State,
    actions: VecDeque<Action>,
    /// Agent legs opened so far (reset on a failed setup).
    opened: Vec<Leg>,
    /// Bytes written at the destination, from its last `Ack`.
    written: u64,
    /// The attempt's start, once data flows.
    started: Option<TransferStarted>,
    last_progress: Option<Instant>,
    last_event: Option<Instant>,
}

/// The resume key of a source file going to a destination: the same copy asked again names the
/// same partial file, a changed source another.
pub(crate) fn resume_key(src_key: &str, meta: &FileMeta, dst_key: &str) -> ResumeKey {
    let mut h = blake3::Hasher::new();
    h.update(src_key.as_bytes());
    h.update(&[0]);
    h.update(&meta.size.to_le_bytes());
    h.update(&meta.mtime_ms.to_le_bytes());
    h.update(dst_key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    ResumeKey(u64::from_le_bytes(first))
}

fn fail(kind: TransferErrorKind, message: impl Into<String>) -> TransferError {
    TransferError::new(kind, message)
}

/// The error a party dropping during setup gives.
fn dropped(who: &str) -> TransferError {
    fail(
        TransferErrorKind::Interrupted,
        format!("{who} dropped the transfer"),
    )
}

impl Relay {
    /// A relay for `plan`, starting at `now`. Both ends local is refused at once.
    pub(crate) fn new(plan: Plan, now: Instant) -> Self {
        let role = plan.role().unwrap_or(OpRole::Watcher);
        let mut relay = Self {
            role,
            state: State::Closed,
            actions: VecDeque::new(),
            opened: Vec::new(),
            written: 0,
            started: None,
            last_progress: None,
            last_event: None,
            plan,
        };
        if relay.plan.role().is_none() {
            let err = fail(TransferErrorKind::BadRequest, "both ends are local: use cp");
            relay.setup_failed(err);
            return relay;
        }
        match relay.plan.src.clone() {
            EndPlan::Agent { path, .. } => {
                relay.push(Action::Open(
                    Leg::Source,
                    HubStreamOpen::Read(ReadOpen {
                        transfer: relay.plan.transfer,
                        path,
                    }),
                ));
                relay.state = State::OpenSource {
                    deadline: now + SETUP_TIMEOUT,
                };
            }
            EndPlan::Local { meta: Some(m), .. } => relay.offer(m, now),
            EndPlan::Local { meta: None, .. } => relay.setup_failed(fail(
                TransferErrorKind::BadRequest,
                "a local source must say its size",
            )),
        }
        relay
    }

    /// Which leg the operator's stream is.
    pub(crate) fn role(&self) -> OpRole {
        self.role
    }

    /// The next thing to do, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Relay::handle_timeout`] is due, if anything waits.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::OpenSource { deadline }
            | State::AwaitOffer { deadline }
            | State::OpenDestination { deadline, .. }
            | State::AwaitReady { deadline, .. }
            | State::AwaitBegin { deadline, .. }
            | State::AwaitCancelConfirm { deadline } => Some(*deadline),
            State::Data {
                stopped: Some((deadline, _)),
                ..
            } => Some(*deadline),
            State::Data { stopped: None, .. } | State::Closed => None,
        }
    }

    /// Whether every action is out and nothing more will come.
    pub(crate) fn is_closed(&self) -> bool {
        self.state == State::Closed && self.actions.is_empty()
    }

    /// Whether the driver should read frames from `leg` now.
    pub(crate) fn reads(&self, leg: Leg) -> bool {
        match &self.state {
            State::AwaitOffer { .. } | State::AwaitBegin { .. } => leg == Leg::Source,
            State::AwaitReady { .. } | State::AwaitCancelConfirm { .. } => leg == Leg::Destination,
            // A destination that stopped taking data is read for its reason, nobody else.
            State::Data {
                stopped: Some(_), ..
            } => leg == Leg::Destination,
            State::Data {
                source_done,
                stopped: None,
            } => leg != Leg::Source || !source_done,
            State::OpenSource { .. } | State::OpenDestination { .. } | State::Closed => false,
        }
    }

    /// Whether the source's chunk frames go straight to the destination (data phase, before `End`).
    pub(crate) fn forwards(&self) -> bool {
        matches!(
            self.state,
            State::Data {
                source_done: false,
                stopped: None
            }
        )
    }

    /// The attempt's start, once data flows.
    pub(crate) fn started(&self) -> Option<TransferStarted> {
        self.started.clone()
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn who(&self, leg: Leg) -> String {
        match leg {
            Leg::Source => self.plan.src.label().to_owned(),
            Leg::Destination => self.plan.dst.label().to_owned(),
            Leg::Operator => "the operator".to_owned(),
        }
    }

    fn is_agent(&self, leg: Leg) -> bool {
        match leg {
            Leg::Source => self.plan.src.is_agent(),
            Leg::Destination => self.plan.dst.is_agent(),
            Leg::Operator => false,
        }
    }

    /// The source's file is known: get the destination ready for it.
    fn offer(&mut self, meta: FileMeta, now: Instant) {
        let key = resume_key(&self.plan.src_key, &meta, &self.plan.dst_key);
        match self.plan.dst.clone() {
            EndPlan::Agent { path, .. } => {
                self.push(Action::Open(
                    Leg::Destination,
                    HubStreamOpen::Write(WriteOpen {
                        transfer: self.plan.transfer,
                        path,
                        kind: WriteKind::File,
                        meta,
                        resume_key: key,
                    }),
                ));
                self.state = State::OpenDestination {
                    meta,
                    deadline: now + SETUP_TIMEOUT,
                };
            }
            EndPlan::Local { .. } => {
                self.push(Action::Send(
                    Leg::Destination,
                    TransferFrame::Prepare {
                        meta,
                        resume_key: key,
                    },
                ));
                self.state = State::AwaitReady {
                    meta,
                    deadline: now + SETUP_TIMEOUT,
                };
            }
        }
    }

    /// Setup cannot go on: reset every agent leg opened (the destination keeps its bytes) and tell
    /// the operator.
    fn setup_failed(&mut self, err: TransferError) {
        for leg in std::mem::take(&mut self.opened) {
            self.push(Action::Reset(leg, ErrorCode::Internal));
        }
        self.push(Action::Report(TransferFrame::Failed(err)));
        self.push(Action::Close);
        self.state = State::Closed;
    }

    /// The leg's agent stream is open and its opening frame sent.
    pub(crate) fn handle_opened(&mut self, leg: Leg, now: Instant) {
        self.opened.push(leg);
        match (&self.state, leg) {
            (State::OpenSource { .. }, Leg::Source) => {
                self.state = State::AwaitOffer {
                    deadline: now + OFFER_TIMEOUT,
                };
            }
            (State::OpenDestination { meta, .. }, Leg::Destination) => {
                self.state = State::AwaitReady {
                    meta: *meta,
                    deadline: now + SETUP_TIMEOUT,
                };
            }
            _ => {}
        }
    }

    /// The leg's agent stream could not be opened.
    pub(crate) fn handle_open_failed(&mut self, leg: Leg, detail: &str, _now: Instant) {
        if matches!(
            self.state,
            State::OpenSource { .. } | State::OpenDestination { .. }
        ) {
            let name = match (leg, &self.plan.src, &self.plan.dst) {
                (Leg::Source, EndPlan::Agent { label, .. }, _)
                | (Leg::Destination, _, EndPlan::Agent { label, .. }) => {
                    label.split(':').next().unwrap_or(label).to_owned()
                }
                _ => self.who(leg),
            };
            self.setup_failed(fail(
                TransferErrorKind::Offline,
                format!("agent {name}: {detail}"),
            ));
        }
    }

    /// A whole control frame arrived from `leg`.
    pub(crate) fn handle_frame(&mut self, leg: Leg, frame: TransferFrame, now: Instant) {
        match self.state.clone() {
            State::AwaitOffer { .. } if leg == Leg::Source => match frame {
                TransferFrame::Offer(meta) => self.offer(meta, now),
                TransferFrame::Failed(e) => self.setup_failed(e),
                other => self.setup_failed(fail(
                    TransferErrorKind::Protocol,
                    format!("{} answered {other:?} to a read", self.who(leg)),
                )),
            },
            State::AwaitReady { meta, .. } if leg == Leg::Destination => match frame {
                TransferFrame::Ready { offset, prefix } => {
                    self.push(Action::Send(
                        Leg::Source,
                        TransferFrame::ReadFrom { offset, prefix },
                    ));
                    self.state = State::AwaitBegin {
                        meta,
                        offset,
                        deadline: now + SETUP_TIMEOUT,
                    };
                }
                TransferFrame::Failed(e) => self.setup_failed(e),
                TransferFrame::Cancel => {
                    self.setup_failed(fail(TransferErrorKind::Cancelled, "cancelled"));
                }
                other => self.setup_failed(fail(
                    TransferErrorKind::Protocol,
                    format!("{} answered {other:?} to a write", self.who(leg)),
                )),
            },
            State::AwaitBegin { meta, offset, .. } if leg == Leg::Source => match frame {
                TransferFrame::Begin { offset: start } if start == 0 || start == offset => {
                    self.begin(meta, offset, start, now);
                }
                TransferFrame::Cancel => {
                    self.setup_failed(fail(TransferErrorKind::Cancelled, "cancelled"));
                }
                TransferFrame::Failed(e) => {
                    // A source that failed for good (gone, changed) makes the partial file useless.
                    if !e.kind.retryable() {
                        self.push(Action::Send(
                            Leg::Destination,
                            TransferFrame::Failed(e.clone()),
                        ));
                        self.push(Action::Finish(Leg::Destination));
                        // Told in-band and finished: a reset now could overtake the frame.
                        self.opened.retain(|l| *l != Leg::Destination);
                    }
                    self.setup_failed(e);
                }
                other => self.setup_failed(fail(
                    TransferErrorKind::Protocol,
                    format!("{} answered {other:?} to a read", self.who(leg)),
                )),
            },
            State::Data { .. } => self.data_frame(leg, frame, now),
            // The destination's last frames before it confirms a cancel mean nothing now.
            State::AwaitCancelConfirm { .. } => {}
            _ => {}
        }
    }

    fn begin(&mut self, meta: FileMeta, offset: u64, start: u64, now: Instant) {
        self.push(Action::Send(
            Leg::Destination,
            TransferFrame::Begin { offset: start },
        ));
        let started = TransferStarted {
            size: meta.size,
            offset: start,
            discarded: if start < offset { offset } else { 0 },
        };
        self.started = Some(started.clone());
        self.written = start;
        self.push(Action::RecordBegin {
            resumed_from: start,
            size: meta.size,
        });
        self.push(Action::Publish(TransferState::Started, start));
        self.last_event = Some(now);
        if self.role != OpRole::Destination {
            self.push(Action::Report(TransferFrame::Started(started)));
        }
        self.state = State::Data {
            source_done: false,
            stopped: None,
        };
    }

    fn data_frame(&mut self, leg: Leg, frame: TransferFrame, now: Instant) {
        match (leg, frame) {
            (Leg::Source, TransferFrame::End { digest }) => {
                self.push(Action::Send(
                    Leg::Destination,
                    TransferFrame::End { digest },
                ));
                if let State::Data { source_done, .. } = &mut self.state {
                    *source_done = true;
                }
            }
            (Leg::Source, TransferFrame::Failed(e)) => {
                // Only whole frames went out, so the destination can read this one.
                self.push(Action::Send(
                    Leg::Destination,
                    TransferFrame::Failed(e.clone()),
                ));
                self.push(Action::Finish(Leg::Destination));
                self.conclude(Outcome::SourceFailed(e), now);
            }
            (Leg::Source, TransferFrame::Cancel) => self.conclude(Outcome::Cancel, now),
            (Leg::Source, other) => self.conclude(
                Outcome::SourceFailed(fail(
                    TransferErrorKind::Protocol,
                    format!("the source sent {other:?} during data"),
                )),
                now,
            ),
            (Leg::Destination, TransferFrame::Ack { written }) => {
                self.written = written;
                let due = self
                    .last_progress
                    .is_none_or(|t| now.saturating_duration_since(t) >= PROGRESS_EVERY);
                if due && self.role != OpRole::Destination {
                    self.last_progress = Some(now);
                    self.push(Action::Report(TransferFrame::Progress { written }));
                }
                if self
                    .last_event
                    .is_none_or(|t| now.saturating_duration_since(t) >= EVENT_EVERY)
                {
                    self.last_event = Some(now);
                    self.push(Action::Publish(TransferState::Progress, written));
                }
            }
            (Leg::Destination, TransferFrame::Done(d)) => self.conclude(Outcome::Done(d), now),
            (Leg::Destination, TransferFrame::Failed(e)) => {
                self.conclude(Outcome::DestFailed(e), now);
            }
            (Leg::Destination, TransferFrame::Cancel) => self.conclude(Outcome::Cancel, now),
            (Leg::Destination, other) => self.conclude(
                Outcome::DestFailed(fail(
                    TransferErrorKind::Protocol,
                    format!("the destination sent {other:?}"),
                )),
                now,
            ),
            (Leg::Operator, TransferFrame::Cancel) => self.conclude(Outcome::Cancel, now),
            (Leg::Operator, other) => self.conclude(
                Outcome::Interrupted(fail(
                    TransferErrorKind::Protocol,
                    format!("the operator sent {other:?} during a copy"),
                )),
                now,
            ),
        }
    }

    /// A frame from `leg` could not be decoded (or its length exceeds the limit).
    pub(crate) fn handle_bad_frame(&mut self, leg: Leg, detail: &str, now: Instant) {
        let who = self.who(leg);
        match (&self.state, leg) {
            (State::Data { .. }, Leg::Source) => self.conclude(
                Outcome::SourceFailed(fail(
                    TransferErrorKind::Protocol,
                    format!("source: {detail}"),
                )),
                now,
            ),
            (State::Data { .. }, _) | (State::AwaitCancelConfirm { .. }, _) => {
                self.handle_recv_ended(leg, false, detail, now);
            }
            (State::Closed, _) => {}
            _ => self.setup_failed(fail(
                TransferErrorKind::Protocol,
                format!("{who}: {detail}"),
            )),
        }
    }

    /// The leg's receive side ended: `clean` when the peer finished it, else reset or lost.
    pub(crate) fn handle_recv_ended(&mut self, leg: Leg, clean: bool, detail: &str, now: Instant) {
        match self.state.clone() {
            State::AwaitCancelConfirm { .. } if leg == Leg::Destination => {
                self.cancelled(clean);
            }
            State::Data { stopped, .. } => {
                let err = match leg {
                    Leg::Source => fail(
                        TransferErrorKind::Interrupted,
                        format!("the source dropped the transfer ({detail})"),
                    ),
                    Leg::Destination => match stopped {
                        Some((_, why)) => fail(
                            TransferErrorKind::Interrupted,
                            format!("the destination dropped the transfer ({why})"),
                        ),
                        None => fail(
                            TransferErrorKind::Interrupted,
                            "the destination dropped the transfer",
                        ),
                    },
                    Leg::Operator => fail(
                        TransferErrorKind::Interrupted,
                        "the operator's console went away",
                    ),
                };
                self.conclude(Outcome::Interrupted(err), now);
            }
            State::Closed => {}
            _ => {
                let who = self.who(leg);
                self.setup_failed(dropped(&who));
            }
        }
    }

    /// Writing to the leg failed: its peer stopped reading, or the link is gone.
    pub(crate) fn handle_send_failed(&mut self, leg: Leg, detail: &str, now: Instant) {
        match (self.state.clone(), leg) {
            (
                State::Data {
                    source_done,
                    stopped: None,
                },
                Leg::Destination,
            ) => {
                // A destination that failed (no space, say) stops reading and sends its reason on
                // its own stream: wait a bounded time for it rather than calling it a drop.
                self.state = State::Data {
                    source_done,
                    stopped: Some((now + VERDICT_TIMEOUT, detail.to_owned())),
                };
            }
            // Only reports go to the other legs now; the driver drops those it cannot write.
            (State::Data { .. } | State::AwaitCancelConfirm { .. } | State::Closed, _) => {}
            (_, _) => {
                let who = self.who(leg);
                self.setup_failed(dropped(&who));
            }
        }
    }

    /// A newer attempt of the same transfer took over.
    pub(crate) fn handle_superseded(&mut self, now: Instant) {
        self.interrupt(
            fail(
                TransferErrorKind::Interrupted,
                "a newer attempt of this transfer took over",
            ),
            now,
        );
    }

    /// The hub is shutting down.
    pub(crate) fn handle_shutdown(&mut self, now: Instant) {
        self.interrupt(shutting_down(), now);
    }

    fn interrupt(&mut self, err: TransferError, now: Instant) {
        match self.state {
            State::Data { .. } => self.conclude(Outcome::Interrupted(err), now),
            State::AwaitCancelConfirm { .. } | State::Closed => {}
            _ => self.setup_failed(err),
        }
    }

    /// Time passed: fires whatever [`Relay::poll_timeout`] named, if it is due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.poll_timeout() else {
            return;
        };
        if now < deadline {
            return;
        }
        match self.state.clone() {
            State::AwaitOffer { .. } => {
                let (who, path) = match &self.plan.src {
                    EndPlan::Agent { label, path } => (
                        label.split(':').next().unwrap_or(label).to_owned(),
                        path.clone(),
                    ),
                    EndPlan::Local { label, .. } => (label.clone(), String::new()),
                };
                self.setup_failed(fail(
                    TransferErrorKind::Io,
                    format!(
                        "{who} did not offer {path} within {} s: its agent may be stuck opening it \
                         (a FIFO or a hung mount)",
                        OFFER_TIMEOUT.as_secs()
                    ),
                ));
            }
            State::OpenSource { .. } | State::OpenDestination { .. } => {
                let leg = if matches!(self.state, State::OpenSource { .. }) {
                    Leg::Source
                } else {
                    Leg::Destination
                };
                self.handle_open_failed(leg, "no stream within the setup timeout", now);
            }
            State::AwaitReady { .. } | State::AwaitBegin { .. } => {
                let leg = if matches!(self.state, State::AwaitReady { .. }) {
                    Leg::Destination
                } else {
                    Leg::Source
                };
                let who = self.who(leg);
                self.setup_failed(fail(
                    TransferErrorKind::Interrupted,
                    format!("{who} did not answer within {} s", SETUP_TIMEOUT.as_secs()),
                ));
            }
            State::Data {
                stopped: Some((_, why)),
                ..
            } => self.conclude(
                Outcome::Interrupted(fail(
                    TransferErrorKind::Interrupted,
                    format!("the destination dropped the transfer ({why})"),
                )),
                now,
            ),
            State::AwaitCancelConfirm { .. } => self.cancelled(false),
            State::Data { stopped: None, .. } | State::Closed => {}
        }
    }

    /// Tells each party how it ended and records it.
    fn conclude(&mut self, outcome: Outcome, now: Instant) {
        let src_agent = self.is_agent(Leg::Source);
        let reports = self.role != OpRole::Destination;
        match outcome {
            Outcome::Done(done) => {
                self.written = done.size;
                if src_agent {
                    self.push(Action::Finish(Leg::Source));
                }
                self.push(Action::Finish(Leg::Destination));
                self.push(Action::RecordFinish {
                    outcome: TransferOutcome::Done,
                    error: String::new(),
                    digest: done.digest.to_string(),
                    written: done.size,
                });
                self.push(Action::Publish(TransferState::Done, done.size));
                if reports {
                    self.push(Action::Report(TransferFrame::Done(done)));
                }
                self.close();
            }
            Outcome::DestFailed(err) | Outcome::SourceFailed(err) if !err.kind.retryable() => {
                if src_agent {
                    self.push(Action::ResetSend(Leg::Source, ErrorCode::Internal));
                }
                self.push(Action::Finish(Leg::Destination));
                self.finish_failed(TransferOutcome::Failed, err, reports);
            }
            Outcome::DestFailed(err) | Outcome::SourceFailed(err) | Outcome::Interrupted(err) => {
                if src_agent {
                    self.push(Action::ResetSend(Leg::Source, ErrorCode::Internal));
                }
                // A reset, not a frame: the data stream may be mid-frame.
                self.push(Action::Reset(Leg::Destination, ErrorCode::Internal));
                self.finish_failed(TransferOutcome::Interrupted, err, reports);
            }
            Outcome::Cancel if self.role == OpRole::Destination => {
                // The operator is the destination and removes its own partial file; it waits for
                // this reset, sent once the record is written, before it disconnects.
                if src_agent {
                    self.push(Action::ResetSend(Leg::Source, ErrorCode::Cancelled));
                }
                self.push_cancel_record();
                self.push(Action::Reset(Leg::Destination, ErrorCode::Cancelled));
                self.close();
            }
            Outcome::Cancel => {
                if src_agent {
                    self.push(Action::ResetSend(Leg::Source, ErrorCode::Cancelled));
                }
                self.push(Action::ResetSend(Leg::Destination, ErrorCode::Cancelled));
                self.state = State::AwaitCancelConfirm {
                    deadline: now + CANCEL_TIMEOUT,
                };
            }
        }
    }

    fn finish_failed(&mut self, outcome: TransferOutcome, err: TransferError, reports: bool) {
        self.push(Action::RecordFinish {
            outcome,
            error: err.message.clone(),
            digest: String::new(),
            written: self.written,
        });
        self.push(Action::Publish(
            TransferState::Failed(err.clone()),
            self.written,
        ));
        if reports {
            self.push(Action::Report(TransferFrame::Failed(err)));
        }
        self.close();
    }

    fn push_cancel_record(&mut self) {
        self.push(Action::RecordFinish {
            outcome: TransferOutcome::Cancelled,
            error: "cancelled by the operator".to_owned(),
            digest: String::new(),
            written: self.written,
        });
        self.push(Action::Publish(TransferState::Cancelled, self.written));
    }

    /// The destination confirmed the cancel (`clean`) or did not in time.
    fn cancelled(&mut self, clean: bool) {
        self.push_cancel_record();
        let reply = if clean {
            TransferFrame::Cancelled
        } else {
            TransferFrame::Failed(fail(
                TransferErrorKind::Cancelled,
                format!(
                    "cancelled, but {} did not confirm removing its partial file",
                    self.plan.dst.label()
                ),
            ))
        };
        self.push(Action::Report(reply));
        self.close();
    }

    fn close(&mut self) {
        self.push(Action::Close);
        self.state = State::Closed;
    }
}

/// The error every party gets when the hub stops.
pub(crate) fn shutting_down() -> TransferError {
    fail(TransferErrorKind::Interrupted, "hub shutting down")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::files::Digest;

    const META: FileMeta = FileMeta {
        size: 4096,
        mtime_ms: 1_700_000_000_000,
        mode: 0o644,
    };

    fn agent(name: &str, path: &str) -> EndPlan {
        EndPlan::Agent {
            label: format!("{name}:{path}"),
            path: path.to_owned(),
        }
    }

    fn local(meta: Option<FileMeta>) -> EndPlan {
        EndPlan::Local {
            label: "local:big.bin".to_owned(),
            meta,
        }
    }

    fn plan(src: EndPlan, dst: EndPlan) -> Plan {
        Plan {
            transfer: TransferId(7),
            src_key: format!("{src:?}"),
            dst_key: format!("{dst:?}"),
            src,
            dst,
        }
    }

    fn drain(r: &mut Relay) -> Vec<Action> {
        std::iter::from_fn(|| r.poll_action()).take(100).collect()
    }

    fn failed(kind: TransferErrorKind, message: &str) -> TransferError {
        TransferError::new(kind, message)
    }

    fn key(p: &Plan) -> ResumeKey {
        resume_key(&p.src_key, &META, &p.dst_key)
    }

    /// An agent-to-agent relay brought to the data phase with the destination holding `held` bytes
    /// and the source agreeing to start at `start`.
    fn flowing(t0: Instant, held: u64, start: u64) -> Relay {
        let p = plan(agent("web-1", "a.bin"), agent("web-2", "b.bin"));
        let mut r = Relay::new(p, t0);
        r.handle_opened(Leg::Source, t0);
        r.handle_frame(Leg::Source, TransferFrame::Offer(META), t0);
        r.handle_opened(Leg::Destination, t0);
        let prefix = (held > 0).then_some(Digest([1; 32]));
        r.handle_frame(
            Leg::Destination,
            TransferFrame::Ready {
                offset: held,
                prefix,
            },
            t0,
        );
        r.handle_frame(Leg::Source, TransferFrame::Begin { offset: start }, t0);
        drain(&mut r);
        assert!(r.forwards(), "data flows");
        r
    }

    #[test]
    fn agent_to_agent_runs_open_offer_ready_begin_data_done() {
        let t0 = Instant::now();
        let p = plan(agent("web-1", "a.bin"), agent("web-2", "b.bin"));
        let k = key(&p);
        let mut r = Relay::new(p, t0);
        assert_eq!(
            drain(&mut r),
            [Action::Open(
                Leg::Source,
                HubStreamOpen::Read(ReadOpen {
                    transfer: TransferId(7),
                    path: "a.bin".into()
                })
            )]
        );
        assert!(
            !r.reads(Leg::Source),
            "nothing to read before the stream opens"
        );
        r.handle_opened(Leg::Source, t0);
        assert!(r.reads(Leg::Source));
        r.handle_frame(Leg::Source, TransferFrame::Offer(META), t0);
        assert_eq!(
            drain(&mut r),
            [Action::Open(
                Leg::Destination,
                HubStreamOpen::Write(WriteOpen {
                    transfer: TransferId(7),
                    path: "b.bin".into(),
                    kind: WriteKind::File,
                    meta: META,
                    resume_key: k,
                })
            )]
        );
        r.handle_opened(Leg::Destination, t0);
        assert!(r.reads(Leg::Destination) && !r.reads(Leg::Source));
        r.handle_frame(
            Leg::Destination,
            TransferFrame::Ready {
                offset: 0,
                prefix: None,
            },
            t0,
        );
        assert_eq!(
            drain(&mut r),
            [Action::Send(
                Leg::Source,
                TransferFrame::ReadFrom {
                    offset: 0,
                    prefix: None
                }
            )]
        );
        r.handle_frame(Leg::Source, TransferFrame::Begin { offset: 0 }, t0);
        let started = TransferStarted {
            size: 4096,
            offset: 0,
            discarded: 0,
        };
        assert_eq!(
            drain(&mut r),
            [
                Action::Send(Leg::Destination, TransferFrame::Begin { offset: 0 }),
                Action::RecordBegin {
                    resumed_from: 0,
                    size: 4096
                },
                Action::Publish(TransferState::Started, 0),
                Action::Report(TransferFrame::Started(started)),
            ]
        );
        assert!(r.forwards());
        assert!(r.reads(Leg::Source) && r.reads(Leg::Destination) && r.reads(Leg::Operator));
        assert_eq!(r.poll_timeout(), None, "data may take as long as it takes");

        let digest = Digest([9; 32]);
        r.handle_frame(Leg::Source, TransferFrame::End { digest }, t0);
        assert_eq!(
            drain(&mut r),
            [Action::Send(
                Leg::Destination,
                TransferFrame::End { digest }
            )]
        );
        assert!(
            !r.forwards() && !r.reads(Leg::Source),
            "the source said all"
        );
        let done = TransferDone {
            size: 4096,
            digest,
            resumed_from: 0,
        };
        r.handle_frame(Leg::Destination, TransferFrame::Done(done.clone()), t0);
        assert_eq!(
            drain(&mut r),
            [
                Action::Finish(Leg::Source),
                Action::Finish(Leg::Destination),
                Action::RecordFinish {
                    outcome: TransferOutcome::Done,
                    error: String::new(),
                    digest: digest.to_string(),
                    written: 4096,
                },
                Action::Publish(TransferState::Done, 4096),
                Action::Report(TransferFrame::Done(done)),
                Action::Close,
            ]
        );
        assert!(r.is_closed());
    }

    #[test]
    fn the_resume_key_names_the_same_copy_and_changes_with_the_source() {
        let p = plan(agent("web-1", "a.bin"), agent("web-2", "b.bin"));
        assert_eq!(key(&p), key(&p.clone()));
        let newer = FileMeta {
            mtime_ms: META.mtime_ms + 1,
            ..META
        };
        assert_ne!(key(&p), resume_key(&p.src_key, &newer, &p.dst_key));
        let other_dst = plan(agent("web-1", "a.bin"), agent("web-3", "b.bin"));
        assert_ne!(key(&p), key(&other_dst));
    }

    #[test]
    fn a_verified_prefix_resumes_at_its_offset() {
        let t0 = Instant::now();
        let r = flowing(t0, 1024, 1024);
        assert_eq!(
            r.started(),
            Some(TransferStarted {
                size: 4096,
                offset: 1024,
                discarded: 0
            })
        );
    }

    #[test]
    fn after_a_hub_restart_the_new_attempt_resumes_where_the_destination_stands() {
        // The first attempt ends when the hub stops: the destination keeps its bytes.
        let t0 = Instant::now();
        let mut first = flowing(t0, 0, 0);
        first.handle_frame(Leg::Destination, TransferFrame::Ack { written: 2048 }, t0);
        drain(&mut first);
        first.handle_shutdown(t0);
        let actions = drain(&mut first);
        assert!(actions.contains(&Action::Reset(Leg::Destination, ErrorCode::Internal)));
        assert!(actions.contains(&Action::RecordFinish {
            outcome: TransferOutcome::Interrupted,
            error: "hub shutting down".into(),
            digest: String::new(),
            written: 2048,
        }));
        let report = actions.iter().find_map(|a| match a {
            Action::Report(TransferFrame::Failed(e)) => Some(e.clone()),
            _ => None,
        });
        assert_eq!(
            report.map(|e| e.kind.retryable()),
            Some(true),
            "the console retries"
        );
        // The next hub asks the same destination, which reports the 2048 bytes it kept.
        let mut second = Relay::new(plan(agent("web-1", "a.bin"), agent("web-2", "b.bin")), t0);
        second.handle_opened(Leg::Source, t0);
        second.handle_frame(Leg::Source, TransferFrame::Offer(META), t0);
        second.handle_opened(Leg::Destination, t0);
        drain(&mut second);
        let prefix = Some(Digest([3; 32]));
        second.handle_frame(
            Leg::Destination,
            TransferFrame::Ready {
                offset: 2048,
                prefix,
            },
            t0,
        );
        assert_eq!(
            drain(&mut second),
            [Action::Send(
                Leg::Source,
                TransferFrame::ReadFrom {
                    offset: 2048,
                    prefix
                }
            )]
        );
        second.handle_frame(Leg::Source, TransferFrame::Begin { offset: 2048 }, t0);
        let actions = drain(&mut second);
        assert_eq!(
            actions[..2],
            [
                Action::Send(Leg::Destination, TransferFrame::Begin { offset: 2048 }),
                Action::RecordBegin {
                    resumed_from: 2048,
                    size: 4096
                },
            ]
        );
    }

    #[test]
    fn a_prefix_the_source_does_not_match_starts_over_and_says_what_was_discarded() {
        let t0 = Instant::now();
        let r = flowing(t0, 1024, 0);
        assert_eq!(
            r.started(),
            Some(TransferStarted {
                size: 4096,
                offset: 0,
                discarded: 1024
            })
        );
    }

    #[test]
    fn a_source_starting_anywhere_else_breaks_the_protocol_and_resets_the_agents() {
        let t0 = Instant::now();
        let mut r = Relay::new(plan(agent("web-1", "a.bin"), agent("web-2", "b.bin")), t0);
        r.handle_opened(Leg::Source, t0);
        r.handle_frame(Leg::Source, TransferFrame::Offer(META), t0);
        r.handle_opened(Leg::Destination, t0);
        r.handle_frame(
            Leg::Destination,
            TransferFrame::Ready {
                offset: 1024,
                prefix: Some(Digest([1; 32])),
            },
            t0,
        );
        drain(&mut r);
        r.handle_frame(Leg::Source, TransferFrame::Begin { offset: 512 }, t0);
        assert_eq!(
            drain(&mut r),
            [
                Action::Reset(Leg::Source, ErrorCode::Internal),
                Action::Reset(Leg::Destination, ErrorCode::Internal),
                Action::Report(TransferFrame::Failed(failed(
                    TransferErrorKind::Protocol,
                    "web-1:a.bin answered Begin { offset: 512 } to a read"
                ))),
                Action::Close,
            ]
        );
        assert!(r.is_closed());
    }

    fn report_of(actions: &[Action]) -> Option<TransferFrame> {
        actions.iter().rev().find_map(|a| match a {
            Action::Report(f) => Some(f.clone()),
            _ => None,
        })
    }

    #[test]
    fn the_source_agent_gone_mid_data_interrupts_and_the_destination_keeps_its_bytes() {
        let t0 = Instant::now();
        let mut r = flowing(t0, 0, 0);
        r.handle_recv_ended(Leg::Source, false, "connection lost", t0);
        let err = failed(
            TransferErrorKind::Interrupted,
            "the source dropped the transfer (connection lost)",
        );
        assert_eq!(
            drain(&mut r),
            [
                Action::ResetSend(Leg::Source, ErrorCode::Internal),
                Action::Reset(Leg::Destination, ErrorCode::Internal),
                Action::RecordFinish {
                    outcome: TransferOutcome::Interrupted,
                    error: err.message.clone(),
                    digest: String::new(),
                    written: 0,
                },
                Action::Publish(TransferState::Failed(err.clone()), 0),
                Action::Report(TransferFrame::Failed(err)),
                Action::Close,
            ]
        );
    }

    #[test]
    fn the_destination_agent_gone_mid_data_interrupts() {
        let t0 = Instant::now();
        let mut r = flowing(t0, 0, 0);
        r.handle_recv_ended(Leg::Destination, false, "connection lost", t0);
        let actions = drain(&mut r);
        assert!(actions.contains(&Action::Reset(Leg::Destination, ErrorCode::Internal)));
        assert_eq!(
            report_of(&actions),
            Some(TransferFrame::Failed(failed(
                TransferErrorKind::Interrupted,
                "the destination dropped the transfer"
            )))
        );
    }

    #[test]
    fn the_source_gone_during_setup_resets_what_was_opened() {
        let t0 = Instant::now();
        let mut r = Relay::new(plan(agent("web-1", "a.bin"), agent("web-2", "b.bin")), t0);
        r.handle_opened(Leg::Source, t0);
        r.handle_frame(Leg::Source, TransferFrame::Offer(META), t0);
        r.handle_opened(Leg::Destination, t0);
        r.handle_frame(
            Leg::Destination,
            TransferFrame::Ready {
                offset: 0,
                prefix: None,
            },
            t0,
        );
        drain(&mut r);
        r.handle_recv_ended(Leg::Source, false, "connection lost", t0);
        assert_eq!(
            drain(&mut r),
            [
                Action::Reset(Leg::Source, ErrorCode::Internal),
                Action::Reset(Leg::Destination, ErrorCode::Internal),
                Action::Report(TransferFrame::Failed(failed(
                    TransferErrorKind::Interrupted,
                    "web-1:a.bin dropped the transfer"
                ))),
                Action::Close,
            ]
        );
    }

    #[test]
    fn a_source_that_failed_for_good_before_data_tells_the_destination_to_drop_its_bytes() {
        let t0 = Instant::now();
        let mut r = Relay::new(plan(agent("web-1", "a.bin"), agent("web-2", "b.bin")), t0);
        r.handle_opened(Leg::Source, t0);
        r.handle_frame(Leg::Source, TransferFrame::Offer(META), t0);
        r.handle_opened(Leg::Destination, t0);
        r.handle_frame(
            Leg::Destination,
            TransferFrame::Ready {
                offset: 10,
                prefix: Some(Digest([1; 32])),
            },
            t0,
        );
        drain(&mut r);
        let e = failed(TransferErrorKind::SourceChanged, "a.bin changed");
        r.handle_frame(Leg::Source, TransferFrame::Failed(e.clone()), t0);
        assert_eq!(
            drain(&mut r),
            [
                Action::Send(Leg::Destination, TransferFrame::Failed(e.clone())),
                Action::Finish(Leg::Destination),
                // The destination was finished, not reset: the frame must reach it.
                Action::Reset(Leg::Source, ErrorCode::Internal),
                Action::Report(TransferFrame::Failed(e)),
                Action::Close,
            ]
        );
    }

    #[test]
    fn a_source_failing_mid_data_is_final_and_forwarded() {
        let t0 = Instant::now();
        let mut r = flowing(t0, 0, 0);
        let e = failed(TransferErrorKind::SourceChanged, "a.bin changed");
        r.handle_frame(Leg::Source, TransferFrame::Failed(e.clone()), t0);
        let actions = drain(&mut r);
        assert_eq!(
            actions[..3],
            [
                Action::Send(Leg::Destination, TransferFrame::Failed(e.clone())),
                Action::Finish(Leg::Destination),
                Action::ResetSend(Leg::Source, ErrorCode::Internal),
            ]
        );
        assert!(actions.contains(&Action::RecordFinish {
            outcome: TransferOutcome::Failed,
            error: "a.bin changed".into(),
            digest: String::new(),
            written: 0,
        }));
        assert_eq!(report_of(&actions), Some(TransferFrame::Failed(e)));
    }

    #[test]
    fn an_operator_cancel_resets_both_agents_and_waits_for_the_destination_to_confirm() {
        let t0 = Instant::now();
        let mut r = flowing(t0, 0, 0);
        r.handle_frame(Leg::Operator, TransferFrame::Cancel, t0);
        assert_eq!(
            drain(&mut r),
            [
                Action::ResetSend(Leg::Source, ErrorCode::Cancelled),
                Action::ResetSend(Leg::Destination, ErrorCode::Cancelled),
            ]
        );
        assert!(r.reads(Leg::Destination) && !r.reads(Leg::Source) && !r.reads(Leg::Operator));
        assert_eq!(r.poll_timeout(), Some(t0 + CANCEL_TIMEOUT));
        // Frames already on their way mean nothing now.
        r.handle_frame(Leg::Destination, TransferFrame::Ack { written: 10 }, t0);
        assert_eq!(drain(&mut r), []);
        r.handle_recv_ended(Leg::Destination, true, "stream finished", t0);
        assert_eq!(
            drain(&mut r),
            [
                Action::RecordFinish {
                    outcome: TransferOutcome::Cancelled,
                    error: "cancelled by the operator".into(),
                    digest: String::new(),
                    written: 0,
                },
                Action::Publish(TransferState::Cancelled, 0),
                Action::Report(TransferFrame::Cancelled),
                Action::Close,
            ]
        );
    }

    #[test]
    fn a_cancel_the_destination_never_confirms_says_so_after_the_timeout() {
        let t0 = Instant::now();
        let mut r = flowing(t0, 0, 0);
        r.handle_frame(Leg::Operator, TransferFrame::Cancel, t0);
        drain(&mut r);
        r.handle_timeout(t0 + CANCEL_TIMEOUT - Duration::from_millis(1));
        assert_eq!(drain(&mut r), [], "not yet");
        r.handle_timeout(t0 + CANCEL_TIMEOUT);
        assert_eq!(
            report_of(&drain(&mut r)),
            Some(TransferFrame::Failed(failed(
                TransferErrorKind::Cancelled,
                "cancelled, but web-2:b.bin did not confirm removing its partial file"
            )))
        );
        assert!(r.is_closed());
    }

    #[test]
    fn a_downloading_console_that_cancels_gets_a_reset_after_the_record() {
        let t0 = Instant::now();
        let mut r = Relay::new(plan(agent("web-1", "a.bin"), local(None)), t0);
        assert_eq!(r.role(), OpRole::Destination);
        r.handle_opened(Leg::Source, t0);
        r.handle_frame(Leg::Source, TransferFrame::Offer(META), t0);
        let p = plan(agent("web-1", "a.bin"), local(None));
        assert_eq!(
            drain(&mut r)[1..],
            [Action::Send(
                Leg::Destination,
                TransferFrame::Prepare {
                    meta: META,
                    resume_key: key(&p)
                }
            )]
        );
        r.handle_frame(
            Leg::Destination,
            TransferFrame::Ready {
                offset: 0,
                prefix: None,
            },
            t0,
        );
        r.handle_frame(Leg::Source, TransferFrame::Begin { offset: 0 }, t0);
        let actions = drain(&mut r);
        assert!(
            report_of(&actions).is_none(),
            "the downloading console is the destination: no reports"
        );
        r.handle_frame(Leg::Destination, TransferFrame::Cancel, t0);
        assert_eq!(
            drain(&mut r),
            [
                Action::ResetSend(Leg::Source, ErrorCode::Cancelled),
                Action::RecordFinish {
                    outcome: TransferOutcome::Cancelled,
                    error: "cancelled by the operator".into(),
                    digest: String::new(),
                    written: 0,
                },
                Action::Publish(TransferState::Cancelled, 0),
                Action::Reset(Leg::Destination, ErrorCode::Cancelled),
                Action::Close,
            ]
        );
    }

    #[test]
    fn an_offer_that_never_arrives_ends_the_wait_for_good() {
        let t0 = Instant::now();
        let mut r = Relay::new(plan(agent("web-1", "pipe"), agent("web-2", "b.bin")), t0);
        drain(&mut r);
        r.handle_opened(Leg::Source, t0);
        assert_eq!(r.poll_timeout(), Some(t0 + OFFER_TIMEOUT));
        r.handle_timeout(t0 + OFFER_TIMEOUT - Duration::from_millis(1));
        assert_eq!(drain(&mut r), []);
        r.handle_timeout(t0 + OFFER_TIMEOUT);
        let actions = drain(&mut r);
        assert_eq!(actions[0], Action::Reset(Leg::Source, ErrorCode::Internal));
        let Some(TransferFrame::Failed(e)) = report_of(&actions) else {
            panic!("expected a failure, got {actions:?}");
        };
        assert_eq!(e.kind, TransferErrorKind::Io);
        assert!(!e.kind.retryable(), "retrying would pile up stuck opens");
        assert_eq!(
            e.message,
            "web-1 did not offer pipe within 30 s: its agent may be stuck opening it (a FIFO or a hung mount)"
        );
        assert!(r.is_closed());
    }

    #[test]
    fn a_destination_that_never_says_ready_times_out_as_retryable() {
        let t0 = Instant::now();
        let mut r = Relay::new(plan(agent("web-1", "a.bin"), agent("web-2", "b.bin")), t0);
        r.handle_opened(Leg::Source, t0);
        r.handle_frame(Leg::Source, TransferFrame::Offer(META), t0);
        r.handle_opened(Leg::Destination, t0);
        drain(&mut r);
        r.handle_timeout(t0 + SETUP_TIMEOUT);
        assert_eq!(
            report_of(&drain(&mut r)),
            Some(TransferFrame::Failed(failed(
                TransferErrorKind::Interrupted,
                "web-2:b.bin did not answer within 120 s"
            )))
        );
    }

    #[test]
    fn an_agent_stream_that_cannot_open_says_the_agent_is_offline() {
        let t0 = Instant::now();
        let mut r = Relay::new(plan(agent("web-1", "a.bin"), agent("web-2", "b.bin")), t0);
        drain(&mut r);
        r.handle_open_failed(Leg::Source, "connection lost", t0);
        assert_eq!(
            drain(&mut r),
            [
                Action::Report(TransferFrame::Failed(failed(
                    TransferErrorKind::Offline,
                    "agent web-1: connection lost"
                ))),
                Action::Close,
            ]
        );
    }

    #[test]
    fn no_space_at_the_destination_is_final_even_when_it_stops_reading_first() {
        // The destination stops its receive side and then sends its reason: the write failure
        // arrives first and must not be taken for a drop (which the console would retry).
        let t0 = Instant::now();
        let mut r = flowing(t0, 0, 0);
        r.handle_send_failed(Leg::Destination, "sending stopped by peer: error 0", t0);
        assert_eq!(drain(&mut r), [], "waits for the destination's reason");
        assert!(!r.forwards() && !r.reads(Leg::Source) && r.reads(Leg::Destination));
        assert_eq!(r.poll_timeout(), Some(t0 + VERDICT_TIMEOUT));
        let e = failed(
            TransferErrorKind::NoSpace,
            "no space left on web-2 (write b.bin: No space left on device)",
        );
        r.handle_frame(
            Leg::Destination,
            TransferFrame::Failed(e.clone()),
            t0 + Duration::from_millis(5),
        );
        let actions = drain(&mut r);
        assert_eq!(
            actions,
            [
                Action::ResetSend(Leg::Source, ErrorCode::Internal),
                Action::Finish(Leg::Destination),
                Action::RecordFinish {
                    outcome: TransferOutcome::Failed,
                    error: e.message.clone(),
                    digest: String::new(),
                    written: 0,
                },
                Action::Publish(TransferState::Failed(e.clone()), 0),
                Action::Report(TransferFrame::Failed(e)),
                Action::Close,
            ]
        );
    }

    #[test]
    fn a_destination_that_stops_reading_and_says_nothing_is_a_drop_after_the_verdict_timeout() {
        let t0 = Instant::now();
        let mut r = flowing(t0, 0, 0);
        r.handle_send_failed(Leg::Destination, "connection lost", t0);
        r.handle_timeout(t0 + VERDICT_TIMEOUT);
        assert_eq!(
            report_of(&drain(&mut r)),
            Some(TransferFrame::Failed(failed(
                TransferErrorKind::Interrupted,
                "the destination dropped the transfer (connection lost)"
            )))
        );
        let mut r = flowing(t0, 0, 0);
        r.handle_send_failed(Leg::Destination, "connection lost", t0);
        r.handle_recv_ended(Leg::Destination, false, "connection lost", t0);
        assert!(matches!(
            report_of(&drain(&mut r)),
            Some(TransferFrame::Failed(TransferError {
                kind: TransferErrorKind::Interrupted,
                ..
            }))
        ));
    }

    #[test]
    fn no_space_before_data_reaches_the_operator() {
        let t0 = Instant::now();
        let mut r = Relay::new(plan(local(Some(META)), agent("web-2", "b.bin")), t0);
        assert_eq!(r.role(), OpRole::Source);
        assert!(matches!(
            drain(&mut r)[..],
            [Action::Open(Leg::Destination, _)]
        ));
        r.handle_opened(Leg::Destination, t0);
        let e = failed(TransferErrorKind::NoSpace, "no space left on web-2");
        r.handle_frame(Leg::Destination, TransferFrame::Failed(e.clone()), t0);
        assert_eq!(
            drain(&mut r),
            [
                Action::Reset(Leg::Destination, ErrorCode::Internal),
                Action::Report(TransferFrame::Failed(e)),
                Action::Close,
            ]
        );
    }

    #[test]
    fn progress_reaches_the_operator_at_most_every_100_ms_and_watchers_every_second() {
        let t0 = Instant::now();
        let mut r = flowing(t0, 0, 0);
        let ms = Duration::from_millis;
        let mut reports = 0;
        let mut events = 0;
        for i in 0..30u64 {
            r.handle_frame(
                Leg::Destination,
                TransferFrame::Ack { written: i * 100 },
                t0 + ms(i * 50),
            );
            for a in drain(&mut r) {
                match a {
                    Action::Report(TransferFrame::Progress { .. }) => reports += 1,
                    Action::Publish(TransferState::Progress, _) => events += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        // 1.45 s of acks every 50 ms: a report every other ack, one event after a second.
        assert_eq!((reports, events), (15, 1));
    }

    #[test]
    fn a_newer_attempt_or_a_stopping_hub_interrupts() {
        let t0 = Instant::now();
        let mut r = flowing(t0, 0, 0);
        r.handle_superseded(t0);
        assert_eq!(
            report_of(&drain(&mut r)),
            Some(TransferFrame::Failed(failed(
                TransferErrorKind::Interrupted,
                "a newer attempt of this transfer took over"
            )))
        );
        // During setup it ends the setup.
        let mut r = Relay::new(plan(agent("web-1", "a.bin"), agent("web-2", "b.bin")), t0);
        r.handle_opened(Leg::Source, t0);
        drain(&mut r);
        r.handle_shutdown(t0);
        assert_eq!(
            drain(&mut r),
            [
                Action::Reset(Leg::Source, ErrorCode::Internal),
                Action::Report(TransferFrame::Failed(shutting_down())),
                Action::Close,
            ]
        );
    }

    #[test]
    fn the_operator_going_away_interrupts_an_agent_to_agent_copy() {
        let t0 = Instant::now();
        let mut r = flowing(t0, 0, 0);
        r.handle_recv_ended(Leg::Operator, true, "stream finished", t0);
        assert_eq!(
            report_of(&drain(&mut r)),
            Some(TransferFrame::Failed(failed(
                TransferErrorKind::Interrupted,
                "the operator's console went away"
            )))
        );
    }

    #[test]
    fn a_garbled_source_frame_during_data_is_a_protocol_failure() {
        let t0 = Instant::now();
        let mut r = flowing(t0, 0, 0);
        r.handle_bad_frame(Leg::Source, "frame of 9000000 bytes exceeds limit", t0);
        let e = failed(
            TransferErrorKind::Protocol,
            "source: frame of 9000000 bytes exceeds limit",
        );
        let actions = drain(&mut r);
        assert!(actions.contains(&Action::Finish(Leg::Destination)));
        assert_eq!(report_of(&actions), Some(TransferFrame::Failed(e)));
    }

    #[test]
    fn requests_that_cannot_work_are_refused_before_any_agent_is_asked() {
        let t0 = Instant::now();
        let mut r = Relay::new(plan(local(Some(META)), local(None)), t0);
        assert_eq!(
            drain(&mut r),
            [
                Action::Report(TransferFrame::Failed(failed(
                    TransferErrorKind::BadRequest,
                    "both ends are local: use cp"
                ))),
                Action::Close,
            ]
        );
        let mut r = Relay::new(plan(local(None), agent("web-2", "b.bin")), t0);
        assert_eq!(
            drain(&mut r),
            [
                Action::Report(TransferFrame::Failed(failed(
                    TransferErrorKind::BadRequest,
                    "a local source must say its size"
                ))),
                Action::Close,
            ]
        );
    }

    #[test]
    fn a_download_reports_nothing_to_the_console_it_writes_to() {
        let t0 = Instant::now();
        let mut r = Relay::new(plan(agent("web-1", "a.bin"), local(None)), t0);
        r.handle_opened(Leg::Source, t0);
        r.handle_frame(Leg::Source, TransferFrame::Offer(META), t0);
        r.handle_frame(
            Leg::Destination,
            TransferFrame::Ready {
                offset: 0,
                prefix: None,
            },
            t0,
        );
        r.handle_frame(Leg::Source, TransferFrame::Begin { offset: 0 }, t0);
        r.handle_frame(Leg::Destination, TransferFrame::Ack { written: 4096 }, t0);
        let digest = Digest([9; 32]);
        r.handle_frame(Leg::Source, TransferFrame::End { digest }, t0);
        r.handle_frame(
            Leg::Destination,
            TransferFrame::Done(TransferDone {
                size: 4096,
                digest,
                resumed_from: 0,
            }),
            t0,
        );
        let actions = drain(&mut r);
        assert!(report_of(&actions).is_none(), "{actions:?}");
        assert!(actions.contains(&Action::Finish(Leg::Destination)));
        assert!(r.is_closed());
    }
}
