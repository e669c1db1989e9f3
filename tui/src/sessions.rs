//! Recorded shell sessions: `flotilla sessions` (the list), `flotilla replay ID` (a recording
//! played in the terminal, or dumped exactly with `--raw`) and `flotilla shell --join ID` (an
//! admin watching a live session, read-only).

use crate::client::{Client, ClientError};
use crate::exec::stream_query;
use crate::util::{Escaped, utc};
use flotilla_wire::exec::{Query, QueryReply};
use flotilla_wire::io::read_frame;
use flotilla_wire::limits::{MAX_REQUEST_FRAME, MAX_SHELL_FRAME};
use flotilla_wire::msg::StreamOpen;
use flotilla_wire::sessions::{CastData, RecordingFrame, SessionRow, SessionState};
use flotilla_wire::shell::{ShellFrame, ShellJoin, ShellSessionId};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

/// Longest pause a timed replay keeps: a session left idle for an hour replays its next output
/// after this, as asciinema's idle limit does, instead of making the viewer wait the hour.
pub const MAX_REPLAY_PAUSE: Duration = Duration::from_secs(2);

/// Frames of a replay read before giving up on a hub that never sends `End`: at 256 KiB a frame,
/// far more than any recording retention keeps.
const MAX_REPLAY_FRAMES: usize = 10_000_000;

/// How to play a recording.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplayOptions {
    /// Playback speed: 2 plays twice as fast.
    pub speed: f64,
    /// Write the output bytes at once, exactly as recorded, without timing.
    pub raw: bool,
}

/// Parses a session id as printed (`s-` and 16 hex digits).
pub fn parse_session_id(s: &str) -> Result<ShellSessionId, String> {
    ShellSessionId::parse(s).ok_or_else(|| {
        format!(
            "{s:?} is not a session id (s- and 16 hex digits, as `flotilla sessions` lists them)"
        )
    })
}

/// Parses `--speed`: a positive number.
pub fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1000.0 => Ok(v),
        _ => Err(format!(
            "speed {s:?} is not a number above 0 and at most 1000"
        )),
    }
}

/// The newest `limit` sessions the hub shows this login.
pub async fn sessions(client: &Client, limit: u32) -> Result<Vec<SessionRow>, ClientError> {
    let mut rows = Vec::new();
    stream_query(client, &Query::Sessions { limit }, |reply| {
        if let QueryReply::Sessions(page) = reply {
            rows.extend(page);
        }
        Ok(())
    })
    .await?;
    Ok(rows)
}

/// One session as `--json` prints it.
pub fn session_json(s: &SessionRow) -> Value {
    json!({
        "id": s.id.to_string(),
        "operator": s.operator,
        "operator_name": s.operator_name,
        "agent": s.agent,
        "container": s.container,
        "command": s.command,
        "started_ms": s.started_ms,
        "ended_ms": s.ended_ms,
        "exit": s.exit,
        "reason": s.reason,
        "bytes": s.bytes,
        "size": s.size,
        "recorded": s.recorded,
        "state": s.state.as_str(),
    })
}

/// How long a session ran, as a table shows it.
pub(crate) fn duration(s: &SessionRow) -> String {
    match (s.state, s.ended_ms) {
        (SessionState::Live, _) => "live".into(),
        (_, Some(end)) => {
            let secs = end.saturating_sub(s.started_ms) / 1000;
            format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
        }
        (_, None) => "?".into(),
    }
}

/// The `flotilla sessions` table.
pub fn sessions_table(rows: &[SessionRow]) -> String {
    let mut out = format!(
        "{:<18}  {:<20}  {:<11}  {:<14}  {:<20}  {:>8}  {:>4}  {:>9}  {:>9}  COMMAND\n",
        "ID", "STARTED", "STATE", "OPERATOR", "WHERE", "TIME", "EXIT", "OUTPUT", "RECORDING"
    );
    for s in rows {
        let place = if s.container.is_empty() {
            s.agent.clone()
        } else {
            format!("{}/{}", s.agent, s.container)
        };
        let recording = if s.recorded {
            crate::format::bytes(s.size)
        } else {
            "pruned".into()
        };
        let command = if s.command.is_empty() {
            "(login shell)"
        } else {
            &s.command
        };
        out.push_str(&format!(
            "{:<18}  {:<20}  {:<11}  {:<14}  {:<20}  {:>8}  {:>4}  {:>9}  {:>9}  {}\n",
            s.id.to_string(),
            utc(s.started_ms),
            s.state.as_str(),
            Escaped(&s.operator_name),
            Escaped(&place),
            duration(s),
            s.exit.map_or_else(|| "-".to_string(), |c| c.to_string()),
            crate::format::bytes(s.bytes),
            recording,
            Escaped(command),
        ));
    }
    out
}

/// Runs `flotilla sessions`.
pub async fn sessions_command(client: &Client, limit: u32, json: bool) -> Result<u8, ClientError> {
    let rows = sessions(client, limit).await?;
    if json {
        let all: Vec<Value> = rows.iter().map(session_json).collect();
        crate::util::outln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default())
            .map_err(ClientError::Output)?;
    } else {
        crate::util::out!("{}", sessions_table(&rows)).map_err(ClientError::Output)?;
    }
    Ok(0)
}

/// Plays one recording to `out`: with its timing (pauses capped at [`MAX_REPLAY_PAUSE`], scaled
/// by the speed), or all at once with `raw`. Only output is written: what the session's client
/// saw, byte for byte. Returns whether the recording stopped early (the hub was stopped during
/// the session, or it is still live).
pub async fn replay<W: Write>(
    client: &Client,
    id: ShellSessionId,
    opts: ReplayOptions,
    out: &mut W,
) -> Result<bool, ClientError> {
    let link = client.link();
    let (mut send, mut recv) = client.open_bi().await?;
    send.write_opening(
        &StreamOpen::Query,
        &Query::Replay { session: id },
        MAX_REQUEST_FRAME,
    )
    .await
    .map_err(|e| link.stream_error(e))?;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut send).await;
    let mut played_ms = 0u64;
    let mut last_at = 0u64;
    let started = tokio::time::Instant::now();
    let mut truncated = false;
    for _ in 0..MAX_REPLAY_FRAMES {
        let frame = match read_frame::<QueryReply, _>(&mut recv, MAX_REQUEST_FRAME).await {
            Ok(Some(QueryReply::Recording(frame))) => frame,
            Ok(Some(QueryReply::End)) => return Ok(truncated),
            Ok(Some(QueryReply::Error(r))) => return Err(ClientError::Refused(r)),
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => return Err(link.stream_error(e)),
        };
        match frame {
            RecordingFrame::Header(_) => {}
            RecordingFrame::Events(events) => {
                for ev in events {
                    let CastData::Output(chunk) = ev.data else {
                        continue;
                    };
                    if !opts.raw {
                        let gap = Duration::from_millis(ev.at_ms.saturating_sub(last_at));
                        played_ms += gap.min(MAX_REPLAY_PAUSE).as_millis() as u64;
                        last_at = ev.at_ms;
                        let due = Duration::from_secs_f64(played_ms as f64 / 1000.0 / opts.speed);
                        out.flush().map_err(ClientError::Output)?;
                        tokio::time::sleep_until(started + due).await;
                    }
                    out.write_all(&chunk.0).map_err(ClientError::Output)?;
                }
            }
            RecordingFrame::End { truncated: t } => truncated = t,
        }
    }
    out.flush().map_err(ClientError::Output)?;
    Err(ClientError::Stream(
        "hub ended the replay without its end marker".into(),
    ))
}

/// Runs `flotilla replay ID`.
pub async fn replay_command(
    client: &Client,
    id: ShellSessionId,
    opts: ReplayOptions,
) -> Result<u8, ClientError> {
    let mut stdout = std::io::stdout();
    let truncated = replay(client, id, opts, &mut stdout).await?;
    stdout.flush().map_err(ClientError::Output)?;
    if truncated {
        eprintln!(
            "\r\n[recording of {id} stops here: the session is live, or the hub stopped during it]"
        );
    }
    Ok(0)
}

/// Runs `flotilla shell --join ID`: prints the live session's output as it comes, read-only
/// (nothing typed is sent), with the hub's notices on stderr, until the session ends or Ctrl-C.
pub async fn join_command(client: &Client, id: ShellSessionId) -> Result<u8, ClientError> {
    let link = client.link();
    let (mut send, mut recv) = client.open_bi().await?;
    send.write_opening(
        &StreamOpen::ShellJoin,
        &ShellJoin { session_id: id },
        MAX_SHELL_FRAME,
    )
    .await
    .map_err(|e| link.stream_error(e))?;
    let mut stdout = std::io::stdout();
    loop {
        let frame = tokio::select! {
            read = read_frame::<ShellFrame, _>(&mut recv, MAX_SHELL_FRAME) => read,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\r\n[left {id}]");
                return Ok(130);
            }
        };
        match frame {
            Ok(Some(ShellFrame::Started { session_id })) => {
                eprintln!("[watching {session_id}, read-only; Ctrl-C leaves]\r");
            }
            Ok(Some(ShellFrame::Data(chunk))) => {
                stdout.write_all(&chunk.0).map_err(ClientError::Output)?;
                stdout.flush().map_err(ClientError::Output)?;
            }
            Ok(Some(ShellFrame::Resize(size))) => {
                eprintln!(
                    "\r\n[the session's terminal is now {}x{}]\r",
                    size.cols, size.rows
                );
            }
            Ok(Some(ShellFrame::Notice(text))) => eprintln!("\r\n[{}]\r", Escaped(&text)),
            Ok(Some(ShellFrame::Exit(exit))) => {
                eprintln!(
                    "\r\n[session {id} ended: the program exited with {}]",
                    exit.status()
                );
                return Ok(0);
            }
            Ok(Some(ShellFrame::Closed { reason, message })) => {
                eprintln!(
                    "\r\n[session {id} ended: {}{}{}]",
                    reason.describe(),
                    if message.is_empty() { "" } else { ": " },
                    Escaped(&message)
                );
                return Ok(0);
            }
            Ok(Some(ShellFrame::Refused(r))) => return Err(ClientError::Refused(r)),
            Ok(None) => {
                eprintln!("\r\n[the hub ended the join]");
                return Ok(1);
            }
            Err(e) => return Err(link.stream_error(e)),
        }
    }
}

/// How often the key watcher of a console replay looks for a key, and so how soon it stops
/// once the replay is over.
const KEY_POLL: Duration = Duration::from_millis(100);

/// Watches the keyboard (raw mode) on its own thread while the console has stepped aside for a
/// replay or a join: any key press ends it.
struct KeyWatch {
    pressed: tokio::sync::mpsc::Receiver<()>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeyWatch {
    fn start() -> Self {
        use crossterm::event::{self, Event as Term, KeyEventKind};
        use std::sync::atomic::Ordering;
        let (tx, pressed) = tokio::sync::mpsc::channel(1);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match event::poll(KEY_POLL) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => return,
                }
                match event::read() {
                    Ok(Term::Key(k)) if k.kind == KeyEventKind::Press => {
                        let _ = tx.try_send(());
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        Self {
            pressed,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits for a key press (at once if the keyboard cannot be read). Cancel-safe.
    async fn pressed(&mut self) {
        let _ = self.pressed.recv().await;
    }

    /// Stops the thread and waits for it, so that no key meant for the console is eaten here.
    async fn finish(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Runs a replay (or, with `join`, a read-only watch of a live session) for the console, on the
/// real terminal: the screen is cleared, the recording plays with its timing, and any key ends
/// it. Returns how it ended, for the console's notice.
pub async fn play_for_console(
    login: &crate::client::Login,
    play: &crate::app::sessions::SessionPlay,
) -> String {
    let client = match Client::connect(login).await {
        Ok(c) => c,
        Err(e) => return format!("cannot reach the hub: {e}"),
    };
    let _ = crossterm::terminal::enable_raw_mode();
    let mut keys = KeyWatch::start();
    let mut stdout = std::io::stdout();
    let what = if play.join { "watching" } else { "replay of" };
    let _ = write!(
        stdout,
        "\x1b[2J\x1b[H[{what} {}: any key or q ends it]\r\n",
        play.id
    );
    let _ = stdout.flush();
    let finished = if play.join {
        tokio::select! {
            r = watch_live(&client, play.id, &mut stdout) => Some(r.unwrap_or_else(|e| e.to_string())),
            () = keys.pressed() => None,
        }
    } else {
        let opts = ReplayOptions {
            speed: 1.0,
            raw: false,
        };
        tokio::select! {
            r = replay(&client, play.id, opts, &mut stdout) => Some(match r {
                Ok(false) => "end of recording".to_string(),
                Ok(true) => "the recording stops there (live, or the hub stopped during it)".into(),
                Err(e) => e.to_string(),
            }),
            () = keys.pressed() => None,
        }
    };
    let how = match finished {
        Some(how) => {
            // Leave the last screen up until the viewer has read it.
            let _ = write!(stdout, "\r\n[{how}; any key returns to the console]");
            let _ = stdout.flush();
            keys.pressed().await;
            how
        }
        None => "stopped".into(),
    };
    keys.finish().await;
    client.close_within(CONSOLE_CLOSE_WAIT).await;
    how
}

/// Long enough for the close to reach the hub, short enough that the console is back at once.
const CONSOLE_CLOSE_WAIT: Duration = Duration::from_millis(200);

/// Writes a live session's output to `out` as it comes, with the hub's notices on their own
/// lines, until it ends. Returns how it ended, in words.
async fn watch_live<W: Write>(
    client: &Client,
    id: ShellSessionId,
    out: &mut W,
) -> Result<String, ClientError> {
    let link = client.link();
    let (mut send, mut recv) = client.open_bi().await?;
    send.write_opening(
        &StreamOpen::ShellJoin,
        &ShellJoin { session_id: id },
        MAX_SHELL_FRAME,
    )
    .await
    .map_err(|e| link.stream_error(e))?;
    loop {
        let line = match read_frame::<ShellFrame, _>(&mut recv, MAX_SHELL_FRAME).await {
            Ok(Some(ShellFrame::Started { .. })) => continue,
            Ok(Some(ShellFrame::Data(chunk))) => {
                out.write_all(&chunk.0).map_err(ClientError::Output)?;
                out.flush().map_err(ClientError::Output)?;
                continue;
            }
            Ok(Some(ShellFrame::Resize(size))) => {
                format!("the session's terminal is now {}x{}", size.cols, size.rows)
            }
            Ok(Some(ShellFrame::Notice(text))) => Escaped(&text).to_string(),
            Ok(Some(ShellFrame::Exit(exit))) => {
                return Ok(format!("the program exited with {}", exit.status()));
            }
            Ok(Some(ShellFrame::Closed { reason, message })) => {
                let sep = if message.is_empty() { "" } else { ": " };
                return Ok(format!("{}{sep}{}", reason.describe(), Escaped(&message)));
            }
            Ok(Some(ShellFrame::Refused(r))) => return Err(ClientError::Refused(r)),
            Ok(None) => return Ok("the hub ended the join".into()),
            Err(e) => return Err(link.stream_error(e)),
        };
        write!(out, "\r\n[{line}]\r\n").map_err(ClientError::Output)?;
        out.flush().map_err(ClientError::Output)?;
    }
}
