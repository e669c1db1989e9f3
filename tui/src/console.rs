//! The interactive console: a network task feeding hub events, an input thread feeding keys, a tick,
//! and one loop that applies events to the `App` and redraws only when something changed.
//!
//! The console owns its tasks: each is spawned on its [`TaskTracker`] and ends when its
//! [`CancellationToken`] (or a child of it) is cancelled; quitting cancels them all and waits for
//! them under [`QUIT_WAIT`]. Queues are bounded: commands wait in [`COMMAND_QUEUE`], and a copy's
//! progress reaches a busy screen only if there is room (the copy's end always arrives).

use crate::app::host::charts::ChartAnswer;
use crate::app::sessions::Handoff;
use crate::app::{App, RECORDS_LIMIT};
use crate::client::{Client, Login};
use crate::command::Command;
use crate::event::{CopyUpdate, Event, ExecUpdate, LogUpdate};
use crate::exec::{ExecSession, query, split_job};
use crate::files::{CopyEvent, CopyOptions};
use crate::history::HistoryFile;
use crate::ui::{self, Theme};
use flotilla_wire::IdentityId;
use flotilla_wire::exec::{ExecEvent, Query};
use flotilla_wire::io::read_frame;
use flotilla_wire::limits::MAX_LOGS_FRAME;
use flotilla_wire::msg::{OpRequest, OpResponse, StreamOpen};
use flotilla_wire::workloads::{LogFrame, LogsRequest};
use ratatui::Terminal;
use ratatui::backend::Backend;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Events waiting for the UI loop. Bounded: a burst of metrics waits in QUIC flow control instead.
const EVENT_QUEUE: usize = 1024;
/// Most events applied between two frames, so a flood cannot starve the screen.
const MAX_BATCH: usize = 4096;
/// Longest pause between reconnect attempts: the console should recover quickly once the hub is back.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// How often the agent in view is re-read: the issue asks for live values at 1 s.
const DETAIL_EVERY: Duration = Duration::from_secs(1);
/// How often its history is re-read: minute buckets change once a minute.
const HISTORY_EVERY: Duration = Duration::from_secs(30);
/// History shown in the agent view until its span is chosen.
const HISTORY_SPAN_S: u64 = 3600;
/// The agent view's host depth is re-read every this many detail ticks.
const HOST_EVERY_TICKS: u64 = 3;
/// The agent in view, if any, and the span of its charts in seconds.
type Focus = (Option<IdentityId>, u64);
/// Progress reports of one transfer passed to the screen at most this often.
const PROGRESS_EVERY_MS: u64 = 250;
/// Commands from keys waiting for the network task: a key makes at most a few, and the task takes
/// them at once except while it dials, so a full queue means the console is stuck, not busy.
const COMMAND_QUEUE: usize = 256;
/// How long quitting waits for the console's tasks: long enough for running jobs and copies to be
/// cancelled on the hub, short enough that a hub gone silent does not hold the terminal.
pub const QUIT_WAIT: Duration = Duration::from_secs(5);
/// What a command that needs the hub answers while it is away.
const NOT_CONNECTED: &str = "not connected to the hub (reconnecting)";

/// Transfers in flight: they dial on their own (and retry across hub restarts), so they outlive
/// the console's own sessions.
struct Copies {
    login: Login,
    tx: mpsc::Sender<Event>,
    cancels: HashMap<u64, CancellationToken>,
    tracker: TaskTracker,
    /// The console's token: each copy's is a child, so quitting cancels every copy.
    cancel: CancellationToken,
}

impl Copies {
    fn start(
        &mut self,
        id: u64,
        src: crate::files::Place,
        dst: crate::files::Place,
        recursive: bool,
    ) {
        self.cancels.retain(|_, t| !t.is_cancelled());
        let cancel = self.cancel.child_token();
        self.cancels.insert(id, cancel.clone());
        let login = self.login.clone();
        let tx = self.tx.clone();
        self.tracker.spawn(async move {
            let opts = CopyOptions {
                recursive,
                ..CopyOptions::default()
            };
            let mut last_progress = 0u64;
            // The copy cannot wait on the UI queue from its callback: an event finds room there
            // or is dropped (a busy screen skips stale progress). The result below always arrives.
            let progress_tx = tx.clone();
            let mut on_event = move |ev: &CopyEvent| {
                let now = crate::util::now_ms();
                let progress = matches!(ev, CopyEvent::Progress { .. });
                if matches!(ev, CopyEvent::Progress { written, size, .. } if written < size)
                    && now.saturating_sub(last_progress) < PROGRESS_EVERY_MS
                {
                    return;
                }
                last_progress = now;
                let update = CopyUpdate::Event(ev.clone());
                if let Err(mpsc::error::TrySendError::Full(_)) = progress_tx.try_send(Event::Copy {
                    id,
                    at_ms: now,
                    update,
                }) && !progress
                {
                    tracing::debug!(copy = id, "screen busy: a copy event was dropped");
                }
            };
            let result =
                crate::files::copy(&login, &src, &dst, &opts, &cancel, &mut on_event).await;
            cancel.cancel();
            let update = CopyUpdate::Finished(result.map_err(|e| e.to_string()));
            let _ = tx
                .send(Event::Copy {
                    id,
                    at_ms: crate::util::now_ms(),
                    update,
                })
                .await;
        });
    }

    fn cancel(&mut self, id: u64) {
        if let Some(t) = self.cancels.remove(&id) {
            t.cancel();
        }
    }
}

/// Answers a command that needs a live session while there is none.
async fn refuse(cmd: Command, tx: &mpsc::Sender<Event>) {
    let reason = || NOT_CONNECTED.to_string();
    let ev = match cmd {
        Command::Exec { run, .. } => Event::Exec {
            run,
            update: ExecUpdate::Failed(reason()),
        },
        Command::List { agent } => Event::Listing {
            agent,
            result: Err(reason()),
        },
        Command::Jobs => Event::Jobs(Err(reason())),
        Command::Job(_) => Event::Job(Err(reason())),
        Command::Audit => Event::Audit(Err(reason())),
        Command::Sessions => Event::Sessions(Err(reason())),
        Command::Containers { selector } => Event::Containers {
            selector,
            result: Err(reason()),
        },
        Command::Services { selector } => Event::Services {
            selector,
            result: Err(reason()),
        },
        Command::ContainerHistory { agent, container } => Event::ContainerHistory {
            agent,
            container,
            result: Err(reason()),
        },
        Command::Logs { id, .. } => Event::Log {
            id,
            update: LogUpdate::Failed(reason()),
        },
        cmd @ (Command::Alerts | Command::AckAlert { .. } | Command::SilenceAlert { .. }) => {
            match crate::alerts::console::refused(cmd, reason()) {
                Some(ev) => ev,
                None => return,
            }
        }
        Command::HostTop { from_ms, .. } => Event::HostTop {
            from_ms,
            result: Err(reason()),
        },
        Command::HostSeries {
            agent,
            series,
            since_s,
        } => Event::HostSeries {
            agent,
            answer: Box::new(ChartAnswer {
                series,
                since_s,
                result: Err(reason()),
            }),
        },
        Command::CancelExec { .. }
        | Command::Copy { .. }
        | Command::CancelCopy { .. }
        | Command::CloseLogs { .. } => return,
    };
    let _ = tx.send(ev).await;
}

/// Runs one job, forwarding its events, until its summary; cancels it when `cancel` fires. When
/// `quit` (the console's token, of which `cancel` is a child) fires, the cancel is sent and the task
/// ends without waiting for the summary.
async fn run_exec(
    client: Arc<Client>,
    run: u64,
    request: flotilla_wire::exec::ExecRequest,
    tx: mpsc::Sender<Event>,
    cancel: CancellationToken,
    quit: CancellationToken,
) {
    let failed = |reason: String| Event::Exec {
        run,
        update: ExecUpdate::Failed(reason),
    };
    let mut session = match ExecSession::open(&client, &request).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(failed(e.to_string())).await;
            return;
        }
    };
    let mut cancelled = false;
    loop {
        tokio::select! {
            ev = session.next() => {
                let ev = match ev {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => {
                        let _ = tx.send(failed(e.to_string())).await;
                        return;
                    }
                    None => {
                        let _ = tx.send(failed("hub ended the job stream before its summary".into())).await;
                        return;
                    }
                };
                let last = matches!(ev, ExecEvent::Done(_) | ExecEvent::Refused(_));
                let update = ExecUpdate::Event(Box::new(ev));
                if tx.send(Event::Exec { run, update }).await.is_err() || last {
                    return;
                }
            }
            _ = cancel.cancelled(), if !cancelled => {
                cancelled = true;
                session.cancel().await;
                if quit.is_cancelled() {
                    return;
                }
            }
        }
    }
}

/// Follows one log, forwarding its frames, until its end, until `close` fires (the pane closed),
/// or until the session ends (said to the pane). The UI queue's back-pressure holds the stream, so
/// a container that logs fast waits in QUIC flow control, not in memory.
async fn follow_logs(
    client: Arc<Client>,
    id: u64,
    request: LogsRequest,
    tx: mpsc::Sender<Event>,
    close: CancellationToken,
    session: CancellationToken,
) {
    let link = client.link().clone();
    let work = async {
        let (mut send, mut recv) = client.open_bi().await.map_err(|e| e.to_string())?;
        send.write_opening(&StreamOpen::Logs, &request, MAX_LOGS_FRAME)
            .await
            .map_err(|e| link.stream_error(e).to_string())?;
        // Our side stays open while following: closing it would tell the hub we are done.
        loop {
            match read_frame::<LogFrame, _>(&mut recv, MAX_LOGS_FRAME).await {
                Ok(Some(frame)) => {
                    let last = matches!(frame, LogFrame::End | LogFrame::Error(_));
                    let update = LogUpdate::Frame(Box::new(frame));
                    if tx.send(Event::Log { id, update }).await.is_err() || last {
                        return Ok(());
                    }
                }
                Ok(None) => return Err("hub ended the log stream".to_string()),
                Err(e) => return Err(link.stream_error(e).to_string()),
            }
        }
    };
    let failed = |reason: String| Event::Log {
        id,
        update: LogUpdate::Failed(reason),
    };
    tokio::select! {
        _ = close.cancelled() => {}
        _ = session.cancelled() => {
            // The console may be quitting: the pane hears of it only if there is room.
            let _ = tx.try_send(failed(NOT_CONNECTED.into()));
        }
        r = work => {
            if let Err(e) = r {
                let _ = tx.send(failed(e)).await;
            }
        }
    }
}

/// What a session's command tasks need: where to spawn, and the token that ends them.
struct Spawner {
    tracker: TaskTracker,
    /// The console's token: jobs are cancelled on the hub when it fires.
    quit: CancellationToken,
    /// The session's token (a child of `quit`): requests end with the session.
    session: CancellationToken,
}

impl Spawner {
    /// Runs a request on a tracked task that ends with the session, and queues the event it gives.
    fn request<F>(&self, tx: mpsc::Sender<Event>, work: F)
    where
        F: Future<Output = Event> + Send + 'static,
    {
        let session = self.session.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = session.cancelled() => {}
                ev = work => {
                    let _ = tx.send(ev).await;
                }
            }
        });
    }
}

/// Starts the work of one command on its own task (the session loop never waits on it).
fn handle(
    cmd: Command,
    client: &Arc<Client>,
    tx: &mpsc::Sender<Event>,
    jobs: &mut HashMap<u64, CancellationToken>,
    logs: &mut HashMap<u64, CancellationToken>,
    copies: &mut Copies,
    spawner: &Spawner,
) {
    let client = client.clone();
    let tx = tx.clone();
    match cmd {
        Command::Exec { run, request } => {
            jobs.retain(|_, t| !t.is_cancelled());
            let cancel = spawner.quit.child_token();
            jobs.insert(run, cancel.clone());
            spawner.tracker.spawn(run_exec(
                client,
                run,
                request,
                tx,
                cancel,
                spawner.quit.clone(),
            ));
        }
        Command::CancelExec { run } => {
            if let Some(t) = jobs.get(&run) {
                t.cancel();
            }
        }
        Command::Copy {
            id,
            src,
            dst,
            recursive,
        } => copies.start(id, src, dst, recursive),
        Command::CancelCopy { id } => copies.cancel(id),
        Command::List { agent } => spawner.request(tx, async move {
            let result = crate::files::list(&client, &agent, "", true)
                .await
                .map(Box::new)
                .map_err(|e| e.to_string());
            Event::Listing { agent, result }
        }),
        Command::Jobs => spawner.request(tx, async move {
            let result = crate::exec::jobs(&client, RECORDS_LIMIT)
                .await
                .map_err(|e| e.to_string());
            Event::Jobs(result)
        }),
        Command::Job(job) => spawner.request(tx, async move {
            let result = match query(&client, &Query::Job { job }).await {
                Ok(replies) => split_job(replies)
                    .map(Box::new)
                    .ok_or_else(|| format!("hub has no job {job}")),
                Err(e) => Err(e.to_string()),
            };
            Event::Job(result)
        }),
        Command::Sessions => spawner.request(tx, async move {
            let result = crate::sessions::sessions(&client, RECORDS_LIMIT)
                .await
                .map_err(|e| e.to_string());
            Event::Sessions(result)
        }),
        Command::Audit => spawner.request(tx, async move {
            let result = crate::exec::audit(&client, RECORDS_LIMIT)
                .await
                .map_err(|e| e.to_string());
            Event::Audit(result)
        }),
        Command::Containers { selector } => spawner.request(tx, async move {
            let result = crate::workloads::containers(&client, selector.clone(), true)
                .await
                .map_err(|e| e.to_string());
            Event::Containers { selector, result }
        }),
        Command::Services { selector } => spawner.request(tx, async move {
            let result = crate::workloads::services(&client, selector.clone(), false)
                .await
                .map_err(|e| e.to_string());
            Event::Services { selector, result }
        }),
        Command::ContainerHistory { agent, container } => spawner.request(tx, async move {
            let result = crate::workloads::container_history(
                &client,
                agent.clone(),
                container.clone(),
                crate::app::workloads::HISTORY_MINUTES,
            )
            .await
            .map_err(|e| e.to_string());
            Event::ContainerHistory {
                agent,
                container,
                result,
            }
        }),
        Command::HostTop {
            agent,
            from_ms,
            to_ms,
        } => spawner.request(tx, async move {
            let result = crate::host::cli::top(&client, &agent, from_ms, to_ms)
                .await
                .map_err(|e| e.to_string());
            Event::HostTop { from_ms, result }
        }),
        Command::HostSeries {
            agent,
            series,
            since_s,
        } => spawner.request(tx, async move {
            let spec = crate::host::cli::SeriesSpec(vec![series.selector.clone()]);
            let result = crate::host::cli::series(&client, &agent, &spec, since_s)
                .await
                .map_err(|e| e.to_string());
            Event::HostSeries {
                agent,
                answer: Box::new(ChartAnswer {
                    series,
                    since_s,
                    result,
                }),
            }
        }),
        Command::Logs { id, request } => {
            logs.retain(|_, t| !t.is_cancelled());
            let close = spawner.quit.child_token();
            logs.insert(id, close.clone());
            spawner.tracker.spawn(follow_logs(
                client,
                id,
                request,
                tx,
                close,
                spawner.session.clone(),
            ));
        }
        Command::CloseLogs { id } => {
            if let Some(t) = logs.remove(&id) {
                t.cancel();
            }
        }
        cmd @ (Command::Alerts | Command::AckAlert { .. } | Command::SilenceAlert { .. }) => {
            spawner.request(tx, crate::alerts::console::answer(client, cmd));
        }
    }
}

/// Feeds hub events to the UI, reconnecting by itself.
async fn network(
    login: Login,
    tx: mpsc::Sender<Event>,
    focus: watch::Receiver<Focus>,
    mut commands: mpsc::Receiver<Command>,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let mut delay = Duration::from_millis(500);
    let mut copies = Copies {
        login: login.clone(),
        tx: tx.clone(),
        cancels: HashMap::new(),
        tracker: tracker.clone(),
        cancel: cancel.clone(),
    };
    loop {
        let reason = tokio::select! {
            _ = cancel.cancelled() => return,
            r = session(&login, &tx, focus.clone(), &mut commands, &mut copies, &tracker, &cancel) => match r {
                Ok(()) => return,
                Err(reason) => reason,
            },
        };
        let told = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tx.send(Event::Disconnected(reason)) => r,
        };
        if told.is_err() {
            return;
        }
        let retry = tokio::time::sleep(delay);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut retry => break,
                cmd = commands.recv() => match cmd {
                    Some(Command::Copy { id, src, dst, recursive }) => copies.start(id, src, dst, recursive),
                    Some(Command::CancelCopy { id }) => copies.cancel(id),
                    Some(cmd) => tokio::select! {
                        _ = cancel.cancelled() => return,
                        () = refuse(cmd, &tx) => {}
                    },
                    None => return,
                },
            }
        }
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// One attached session; `Ok` when the UI went away, `Err(reason)` when the hub did. Not
/// cancel-safe as a whole, but dropping it ends its tasks: they stop on the session's token, which
/// a guard cancels.
async fn session(
    login: &Login,
    tx: &mpsc::Sender<Event>,
    mut focus: watch::Receiver<Focus>,
    commands: &mut mpsc::Receiver<Command>,
    copies: &mut Copies,
    tracker: &TaskTracker,
    quit: &CancellationToken,
) -> Result<(), String> {
    let session_cancel = quit.child_token();
    let _session_guard = session_cancel.clone().drop_guard();
    let spawner = Spawner {
        tracker: tracker.clone(),
        quit: quit.clone(),
        session: session_cancel.clone(),
    };
    let client = Arc::new(Client::connect(login).await.map_err(|e| e.to_string())?);
    if tx
        .send(Event::Connected(Box::new(client.welcome.clone())))
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut events = client.subscribe().await.map_err(|e| e.to_string())?;
    // The header counts firing alerts from the start; the subscription's pushes keep them current.
    spawner.request(
        tx.clone(),
        crate::alerts::console::answer(client.clone(), Command::Alerts),
    );
    // Reading frames is not cancel-safe, so the subscription gets a task of its own, which the
    // session's end abandons with the stream.
    let reader_tx = tx.clone();
    let reader_cancel = session_cancel.clone();
    let mut reader = tracker.spawn(async move {
        let read = async {
            loop {
                match events.next().await {
                    Ok(Some(ev)) => {
                        if reader_tx.send(Event::Fleet(Box::new(ev))).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Err("hub ended the subscription".to_string()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        tokio::select! {
            _ = reader_cancel.cancelled() => Ok(()),
            r = read => r,
        }
    });
    let mut detail_tick = tokio::time::interval(DETAIL_EVERY);
    let mut history_due = tokio::time::Instant::now();
    let mut watching: Option<(IdentityId, quinn::SendStream)> = None;
    let mut span_s = HISTORY_SPAN_S;
    let mut host_tick = 0u64;
    let mut jobs = HashMap::new();
    let mut logs = HashMap::new();
    let result = loop {
        tokio::select! {
            r = &mut reader => break r.unwrap_or_else(|e| Err(e.to_string())),
            cmd = commands.recv() => match cmd {
                Some(cmd) => handle(cmd, &client, tx, &mut jobs, &mut logs, copies, &spawner),
                None => break Ok(()),
            },
            changed = focus.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
                let (want, want_span) = focus.borrow_and_update().clone();
                if want_span != span_s {
                    span_s = want_span;
                    history_due = tokio::time::Instant::now();
                    host_tick = 0;
                    detail_tick.reset_immediately();
                }
                if watching.as_ref().map(|w| &w.0) != want.as_ref() {
                    // Dropping the old stream ends that watch on the hub.
                    watching = match want {
                        Some(id) => client.watch(id.as_str()).await.ok().map(|s| (id, s)),
                        None => None,
                    };
                    history_due = tokio::time::Instant::now();
                    host_tick = 0;
                    detail_tick.reset_immediately();
                }
            }
            _ = detail_tick.tick() => {
                let Some((id, _)) = &watching else { continue };
                if let Ok(OpResponse::Agent(info)) = client.request(&OpRequest::Agent { query: id.to_string() }).await {
                    let _ = tx.send(Event::Detail(Box::new(info))).await;
                }
                // Host depth changes with each sample (5 s unwatched); SMART hourly.
                if host_tick.is_multiple_of(HOST_EVERY_TICKS)
                    && let Ok(Some(view)) = crate::hostdetail::host_view(&client, id.to_string(), false).await
                {
                    let _ = tx.send(Event::HostView(Box::new(view))).await;
                }
                host_tick += 1;
                if tokio::time::Instant::now() >= history_due {
                    history_due = tokio::time::Instant::now() + HISTORY_EVERY;
                    let req = OpRequest::Metrics { query: id.to_string(), since_s: span_s };
                    if let Ok(OpResponse::Series(series)) = client.request(&req).await {
                        let _ = tx.send(Event::History(Box::new(series))).await;
                    }
                }
            }
        }
    };
    session_cancel.cancel();
    result
}

/// Reads keys on a blocking task (crossterm's reader blocks) until the console is cancelled; it
/// looks at the token between polls of at most 200 ms.
fn spawn_input(
    tracker: &TaskTracker,
    tx: mpsc::Sender<Event>,
    cancel: CancellationToken,
    gate: Arc<InputGate>,
) {
    tracker.spawn_blocking(move || {
        use crossterm::event::{self, Event as Term, KeyEventKind};
        while !cancel.is_cancelled() {
            if gate.paused.load(Ordering::SeqCst) {
                gate.parked.store(true, Ordering::SeqCst);
                std::thread::sleep(INPUT_GATE_PAUSE);
                continue;
            }
            gate.parked.store(false, Ordering::SeqCst);
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => return,
            }
            let ev = match event::read() {
                Ok(Term::Key(k)) if k.kind == KeyEventKind::Press => Event::Key(k),
                Ok(Term::Resize(..)) => Event::Resize,
                Ok(_) => continue,
                Err(_) => return,
            };
            if tx.blocking_send(ev).is_err() {
                return;
            }
        }
    });
}

/// Pause of the keyboard thread while a shell has the terminal: short, so the console answers
/// keys again at once when the shell ends.
const INPUT_GATE_PAUSE: Duration = Duration::from_millis(20);
/// Longest wait for the keyboard thread to step aside (it polls for 200 ms at a time).
const INPUT_GATE_WAIT: Duration = Duration::from_secs(1);

/// Lets the terminal loop take the keyboard from the input thread (to hand it to a shell) and
/// give it back, so that no key typed into the shell reaches the console.
#[derive(Debug, Default)]
struct InputGate {
    paused: AtomicBool,
    parked: AtomicBool,
}

impl InputGate {
    /// Asks the input thread to stop reading and waits until it has (bounded).
    async fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        let started = std::time::Instant::now();
        while !self.parked.load(Ordering::SeqCst) && started.elapsed() < INPUT_GATE_WAIT {
            tokio::time::sleep(INPUT_GATE_PAUSE).await;
        }
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

/// The console without its terminal: the network task, the event queue and the state. The
/// terminal loop and the tests drive the same thing, so a test sees what a user would.
pub struct Console {
    /// The state drawn on screen.
    pub app: App,
    events: mpsc::Receiver<Event>,
    sender: mpsc::Sender<Event>,
    commands: mpsc::Sender<Command>,
    focus: watch::Sender<Focus>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Where commands run at the prompt are remembered across consoles, if anywhere.
    history: Option<HistoryFile>,
}

impl Console {
    /// Starts the network task for `login` (it dials, and redials, by itself).
    pub fn attach(login: Login, now_ms: u64) -> Self {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (sender, events) = mpsc::channel(EVENT_QUEUE);
        let (focus, focus_rx) = watch::channel((None, 0));
        let (commands, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        tracker.spawn(network(
            login,
            sender.clone(),
            focus_rx,
            cmd_rx,
            tracker.clone(),
            cancel.clone(),
        ));
        Self {
            app: App::new(now_ms),
            events,
            sender,
            commands,
            focus,
            cancel,
            tracker,
            history: None,
        }
    }

    /// Recalls the commands of earlier consoles from `file` and appends the ones run in this one.
    /// A file that cannot be read costs the old commands only (logged).
    pub fn with_history(mut self, file: HistoryFile) -> Self {
        match file.load(crate::app::HISTORY_LEN) {
            Ok(lines) => self.app.exec_history = lines,
            Err(e) => {
                tracing::warn!(file = %file.path().display(), error = %e, "cannot read the command history")
            }
        }
        self.history = Some(file);
        self
    }

    /// Where keys and ticks go in.
    pub fn sender(&self) -> mpsc::Sender<Event> {
        self.sender.clone()
    }

    /// Cancelled when the console closes; the input thread and the tick stop on it.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Spawns `task` among the console's own: it must end once [`Console::cancel_token`] fires.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// How many of the console's tasks are still running.
    pub fn tasks(&self) -> usize {
        self.tracker.len()
    }

    /// Quits: cancels every task (running jobs and copies are cancelled on the hub), stops taking
    /// events, and waits up to `wait` for the tasks to end. Returns whether they all did.
    pub async fn shutdown(&mut self, wait: Duration) -> bool {
        self.cancel.cancel();
        // Nobody reads events any more: a task sending one must not wait for room.
        self.events.close();
        self.tracker.close();
        let ended = tokio::time::timeout(wait, self.tracker.wait())
            .await
            .is_ok();
        if !ended {
            tracing::warn!(
                tasks = self.tracker.len(),
                "console tasks still running after quit"
            );
        }
        ended
    }

    /// Applies an event (a key, say) at once, as if it had come through the queue.
    pub fn apply(&mut self, ev: Event) -> bool {
        let dirty = self.app.update(ev);
        self.pass_on();
        dirty
    }

    /// Waits for the next event, applies it and whatever queued behind it (up to a batch), and
    /// passes on what they asked for. Returns whether to redraw; `None` once nothing can come.
    pub async fn step(&mut self) -> Option<bool> {
        let ev = self.events.recv().await?;
        let mut dirty = self.app.update(ev);
        for _ in 0..MAX_BATCH {
            match self.events.try_recv() {
                Ok(ev) => dirty |= self.app.update(ev),
                Err(_) => break,
            }
        }
        self.pass_on();
        Some(dirty)
    }

    fn pass_on(&mut self) {
        for cmd in self.app.take_commands() {
            match self.commands.try_send(cmd) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(cmd)) => {
                    tracing::warn!(?cmd, "command queue full: command dropped");
                    // A list waits for its query's answer before asking again: there will be none.
                    match cmd {
                        Command::Containers { .. } => self.app.containers.in_flight = false,
                        Command::Services { .. } => self.app.services.in_flight = false,
                        Command::Alerts => self.app.alerts.in_flight = false,
                        _ => {}
                    }
                    self.app.notice = Some(crate::strings::COMMAND_DROPPED.into());
                }
                // The network task is gone: the console is closing.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        for line in self.app.take_remembered() {
            if let Some(file) = &self.history
                && let Err(e) = file.append(&line)
            {
                tracing::warn!(file = %file.path().display(), error = %e, "cannot save to the command history");
            }
        }
        let app = &self.app;
        self.focus.send_if_modified(|f| {
            let now = (app.focused(), app.history_span_s());
            let changed = *f != now;
            *f = now;
            changed
        });
    }

    /// Applies events and redraws until the user quits.
    pub async fn run<B: Backend>(
        &mut self,
        terminal: &mut Terminal<B>,
        theme: Theme,
    ) -> Result<(), B::Error> {
        while self.run_until_shell(terminal, theme).await?.is_some() {
            self.app.notice = Some("no terminal to hand a shell to".into());
        }
        Ok(())
    }

    /// As [`Console::run`], but returns when a shell (`s`, `!`), a replay or a join (sessions
    /// view) is asked for, so that the caller can hand it the real terminal and then call this
    /// again; `None` when the console quits.
    pub async fn run_until_shell<B: Backend>(
        &mut self,
        terminal: &mut Terminal<B>,
        theme: Theme,
    ) -> Result<Option<Handoff>, B::Error> {
        self.app.prepare();
        terminal.draw(|f| ui::render(&self.app, theme, f))?;
        while !self.app.quit {
            let Some(dirty) = self.step().await else {
                break;
            };
            if let Some(handoff) = self.app.take_handoff() {
                return Ok(Some(handoff));
            }
            if dirty && !self.app.quit {
                self.app.prepare();
                terminal.draw(|f| ui::render(&self.app, theme, f))?;
            }
        }
        Ok(None)
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Opens the console attached to the hub of `login`, remembering commands in `history` if given.
pub async fn run_attached(login: Login, history: Option<HistoryFile>) -> anyhow::Result<u8> {
    let shell_login = login.clone();
    let mut console = Console::attach(login, crate::util::now_ms());
    if let Some(file) = history {
        console = console.with_history(file);
    }
    let cancel = console.cancel_token();
    let tick_tx = console.sender();
    let tick_cancel = cancel.clone();
    console.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick_cancel.cancelled() => return,
                _ = tick.tick() => {
                    let sent = tokio::select! {
                        _ = tick_cancel.cancelled() => return,
                        r = tick_tx.send(Event::Tick) => r,
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut terminal = ratatui::init();
    let gate = Arc::new(InputGate::default());
    spawn_input(
        &console.tracker,
        console.sender(),
        cancel.clone(),
        gate.clone(),
    );
    let theme = Theme::from_env();
    let result = loop {
        match console.run_until_shell(&mut terminal, theme).await {
            Ok(Some(handoff)) => {
                // The console steps aside: the shell gets the keyboard and the normal screen.
                gate.pause().await;
                ratatui::restore();
                match handoff {
                    Handoff::Shell(target) => {
                        let how = crate::shell::run_for_console(
                            &shell_login,
                            &target.agent,
                            target.container.as_deref(),
                        )
                        .await;
                        console.app.shell_ended(&target, &how);
                    }
                    Handoff::Session(play) => {
                        let how = crate::sessions::play_for_console(&shell_login, &play).await;
                        console.app.session_play_ended(&play, &how);
                    }
                }
                let _ = crossterm::terminal::enable_raw_mode();
                let _ = crossterm::execute!(
                    std::io::stdout(),
                    crossterm::terminal::EnterAlternateScreen
                );
                let _ = terminal.clear();
                gate.resume();
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    ratatui::restore();
    console.shutdown(QUIT_WAIT).await;
    result?;
    Ok(0)
}
