//! The interactive console: a network task feeding hub events, an input thread feeding keys, a tick,
//! and one loop that applies events to the `App` and redraws only when something changed.

use crate::app::App;
use crate::client::{Client, Login};
use crate::event::Event;
use crate::ui::{self, Theme};
use flotilla_wire::IdentityId;
use flotilla_wire::msg::{OpRequest, OpResponse};
use ratatui::Terminal;
use ratatui::backend::Backend;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

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
/// History shown in the agent view.
const HISTORY_SPAN_S: u64 = 3600;

/// Feeds hub events to the UI, reconnecting by itself.
async fn network(
    login: Login,
    tx: mpsc::Sender<Event>,
    focus: watch::Receiver<Option<IdentityId>>,
    cancel: CancellationToken,
) {
    let mut delay = Duration::from_millis(500);
    loop {
        let reason = tokio::select! {
            _ = cancel.cancelled() => return,
            r = session(&login, &tx, focus.clone()) => match r {
                Ok(()) => return,
                Err(reason) => reason,
            },
        };
        if tx.send(Event::Disconnected(reason)).await.is_err() {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// One attached session; `Ok` when the UI went away, `Err(reason)` when the hub did.
async fn session(
    login: &Login,
    tx: &mpsc::Sender<Event>,
    mut focus: watch::Receiver<Option<IdentityId>>,
) -> Result<(), String> {
    let client = Arc::new(Client::connect(login).await.map_err(|e| e.to_string())?);
    if tx
        .send(Event::Connected(Box::new(client.welcome.clone())))
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut events = client.subscribe().await.map_err(|e| e.to_string())?;
    // Reading frames is not cancel-safe, so the subscription gets a task of its own.
    let reader_tx = tx.clone();
    let mut reader = tokio::spawn(async move {
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
    });
    let mut detail_tick = tokio::time::interval(DETAIL_EVERY);
    let mut history_due = tokio::time::Instant::now();
    let mut watching: Option<(IdentityId, quinn::SendStream)> = None;
    let result = loop {
        tokio::select! {
            r = &mut reader => break r.unwrap_or_else(|e| Err(e.to_string())),
            changed = focus.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
                let want = focus.borrow_and_update().clone();
                if watching.as_ref().map(|w| &w.0) != want.as_ref() {
                    // Dropping the old stream ends that watch on the hub.
                    watching = match want {
                        Some(id) => client.watch(id.as_str()).await.ok().map(|s| (id, s)),
                        None => None,
                    };
                    history_due = tokio::time::Instant::now();
                    detail_tick.reset_immediately();
                }
            }
            _ = detail_tick.tick() => {
                let Some((id, _)) = &watching else { continue };
                if let Ok(OpResponse::Agent(info)) = client.request(&OpRequest::Agent { query: id.to_string() }).await {
                    let _ = tx.send(Event::Detail(Box::new(info))).await;
                }
                if tokio::time::Instant::now() >= history_due {
                    history_due = tokio::time::Instant::now() + HISTORY_EVERY;
                    let req = OpRequest::Metrics { query: id.to_string(), since_s: HISTORY_SPAN_S };
                    if let Ok(OpResponse::Series(series)) = client.request(&req).await {
                        let _ = tx.send(Event::History(Box::new(series))).await;
                    }
                }
            }
        }
    };
    reader.abort();
    result
}

/// Reads keys on a plain thread (crossterm's reader blocks) until the UI is gone.
fn spawn_input(tx: mpsc::Sender<Event>, cancel: CancellationToken) {
    std::thread::spawn(move || {
        use crossterm::event::{self, Event as Term, KeyEventKind};
        while !cancel.is_cancelled() {
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

/// Applies events and redraws until the user quits. Generic over the backend so tests can drive it.
pub async fn run_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    theme: Theme,
    rx: &mut mpsc::Receiver<Event>,
    focus: &watch::Sender<Option<IdentityId>>,
) -> Result<(), B::Error> {
    terminal.draw(|f| ui::render(app, theme, f))?;
    while !app.quit {
        let Some(ev) = rx.recv().await else { break };
        let mut dirty = app.update(ev);
        for _ in 0..MAX_BATCH {
            match rx.try_recv() {
                Ok(ev) => dirty |= app.update(ev),
                Err(_) => break,
            }
        }
        focus.send_if_modified(|f| {
            let now = app.focused();
            let changed = *f != now;
            *f = now;
            changed
        });
        if dirty && !app.quit {
            app.prepare();
            terminal.draw(|f| ui::render(app, theme, f))?;
        }
    }
    Ok(())
}

/// Opens the console attached to the hub of `login`.
pub async fn run_attached(login: Login) -> anyhow::Result<ExitCode> {
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
    let (focus_tx, focus_rx) = watch::channel(None);
    tokio::spawn(network(login, tx.clone(), focus_rx, cancel.clone()));
    let tick_tx = tx.clone();
    let tick_cancel = cancel.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick_cancel.cancelled() => return,
                _ = tick.tick() => {
                    if tick_tx.send(Event::Tick).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut terminal = ratatui::init();
    spawn_input(tx, cancel.clone());
    let mut app = App::new(crate::cli::now_ms());
    let result = run_loop(
        &mut terminal,
        &mut app,
        Theme::from_env(),
        &mut rx,
        &focus_tx,
    )
    .await;
    ratatui::restore();
    cancel.cancel();
    result?;
    Ok(ExitCode::SUCCESS)
}
