//! `flotilla shell AGENT[/CONTAINER] [-- CMD ARGS]`: a terminal on an agent through the hub.
//!
//! Our terminal goes to raw mode, so every key (Ctrl-C, Ctrl-Z, Ctrl-\ included) travels as bytes
//! to the program on the agent, whose terminal does with them what a local one would. The window
//! size is sent at the start and on every SIGWINCH. The terminal is restored on every way out:
//! the end of the session, a refusal, a lost hub, SIGTERM or SIGHUP, and a panic (a hook); then
//! a line says why the session ended unless the program simply exited.
//!
//! Exit status: the program's (128 + N when signal N killed it); 2 for a malformed request; 1 when
//! the hub or agent refused; [`EXIT_SESSION_LOST`] when the session ended without the program's
//! status (idle timeout, hub gone, recording failed…).

use crate::client::{Client, ClientError};
use crate::exec::EXIT_USAGE;
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::MAX_SHELL_FRAME;
use flotilla_wire::msg::StreamOpen;
use flotilla_wire::shell::{
    MAX_SHELL_CHUNK, ShellExit, ShellFrame, ShellRequest, ShellSessionId, WindowSize,
};
use flotilla_wire::{Chunk, ErrorCode};
use std::io::IsTerminal;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::unix::AsyncFd;

/// Exit status when the session ended without the program's own (as ssh uses 255).
pub const EXIT_SESSION_LOST: u8 = 255;
/// Terminal name sent when `TERM` is unset or not a plain terminfo name.
const DEFAULT_TERM: &str = "xterm-256color";
/// Size assumed when ours cannot be read (not a terminal).
const DEFAULT_SIZE: WindowSize = WindowSize { cols: 80, rows: 24 };

/// `flotilla shell`.
#[derive(clap::Args, Debug)]
pub struct ShellArgs {
    /// AGENT, or AGENT/CONTAINER for a shell in one of its containers.
    #[arg(required_unless_present = "join", default_value = "")]
    pub target: String,
    /// Watch a live session read-only instead (admins; `flotilla sessions` lists the ids): its
    /// operator is told you joined.
    #[arg(long, value_name = "SESSION", value_parser = crate::sessions::parse_session_id, conflicts_with_all = ["target", "command"])]
    pub join: Option<ShellSessionId>,
    /// Program and arguments to run instead of the login shell (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl ShellArgs {
    /// The request this command line makes, for a terminal named `term` of `size`.
    pub fn request(&self, term: &str, size: WindowSize) -> Result<ShellRequest, String> {
        let (agent, container) = match self.target.split_once('/') {
            Some((a, c)) if !a.is_empty() && !c.is_empty() => (a.to_string(), Some(c.to_string())),
            Some(_) => {
                return Err(format!("{:?}: give AGENT or AGENT/CONTAINER", self.target));
            }
            None if self.target.is_empty() => return Err("no agent given".into()),
            None => (self.target.clone(), None),
        };
        let req = ShellRequest {
            agent,
            container,
            command: self.command.clone(),
            term: term.to_string(),
            size,
        };
        req.validate()?;
        Ok(req)
    }
}

/// Our `TERM`, when it is a name the hub accepts.
pub fn local_term() -> String {
    std::env::var("TERM")
        .ok()
        .filter(|t| flotilla_wire::shell::valid_term(t))
        .unwrap_or_else(|| DEFAULT_TERM.to_string())
}

/// Our terminal's size, or 80x24 when it has none.
pub fn local_size() -> WindowSize {
    match crossterm::terminal::size() {
        Ok((cols, rows)) if cols > 0 && rows > 0 => WindowSize { cols, rows },
        _ => DEFAULT_SIZE,
    }
}

/// Raw mode while it lives; dropping it restores the terminal.
struct RawGuard {
    active: bool,
}

impl RawGuard {
    fn enter() -> Self {
        if !std::io::stdin().is_terminal() {
            return Self { active: false };
        }
        install_panic_hook();
        Self {
            active: crossterm::terminal::enable_raw_mode().is_ok(),
        }
    }
}

impl Drop for RawGuard {
    fn drop(&mut self) {
        if self.active {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// Restores the terminal before a panic message prints, once per process.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = crossterm::terminal::disable_raw_mode();
            previous(info);
        }));
    });
}

/// How a session ended, for the exit status and the last line.
#[derive(Debug, PartialEq, Eq)]
pub enum ShellOutcome {
    /// The program exited.
    Exited(ShellExit),
    /// The session ended for another reason, in words.
    Ended(String),
    /// The hub or agent refused.
    Refused {
        /// The refusal's code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// A signal to us ended it (SIGTERM, SIGHUP).
    Signalled(i32),
}

impl ShellOutcome {
    /// The exit status `flotilla` returns.
    pub fn status(&self) -> u8 {
        match self {
            Self::Exited(e) => u8::try_from(e.status().clamp(0, 255)).unwrap_or(1),
            Self::Ended(_) => EXIT_SESSION_LOST,
            Self::Refused { code, .. } if *code == ErrorCode::BadRequest => EXIT_USAGE,
            Self::Refused { .. } => 1,
            Self::Signalled(n) => u8::try_from(128 + n).unwrap_or(1),
        }
    }

    /// The line printed after the terminal is restored, if any.
    pub fn message(&self) -> Option<String> {
        match self {
            Self::Exited(ShellExit::Code(_)) => None,
            Self::Exited(ShellExit::Signal(n)) => Some(format!("shell killed by signal {n}")),
            Self::Ended(why) => Some(format!("shell ended: {why}")),
            Self::Refused { message, .. } => Some(message.clone()),
            Self::Signalled(n) => Some(format!("shell hung up on signal {n}")),
        }
    }
}

/// Runs `flotilla shell` on the real terminal and prints why it ended.
pub async fn shell_command(client: &Client, req: &ShellRequest) -> Result<u8, ClientError> {
    let outcome = run_shell(client, req).await?;
    if let Some(line) = outcome.message() {
        eprintln!("flotilla: {line}");
    }
    Ok(outcome.status())
}

/// Runs one session on our terminal (raw mode for its duration) and says how it ended. The
/// terminal is restored before this returns, whatever happened.
pub async fn run_shell(client: &Client, req: &ShellRequest) -> Result<ShellOutcome, ClientError> {
    let link = client.link();
    let (mut send, mut recv) = client.open_bi().await?;
    send.write_opening(&StreamOpen::Shell, req, MAX_SHELL_FRAME)
        .await
        .map_err(|e| link.stream_error(e))?;
    let _session: ShellSessionId =
        match read_frame::<ShellFrame, _>(&mut recv, MAX_SHELL_FRAME).await {
            Ok(Some(ShellFrame::Started { session_id })) => session_id,
            Ok(Some(ShellFrame::Refused(r))) => {
                return Ok(ShellOutcome::Refused {
                    code: r.code,
                    message: r.message,
                });
            }
            Ok(Some(other)) => {
                return Err(link.stream_error(format!("unexpected first frame {other:?}")));
            }
            Ok(None) => return Err(link.stream_error("hub closed the shell stream")),
            Err(e) => return Err(link.stream_error(e)),
        };
    let raw = RawGuard::enter();
    let result = relay(link, &mut send, &mut recv, Keyboard::new()).await;
    drop(raw);
    match result {
        Ok(outcome) => Ok(outcome),
        Err(e) => Ok(ShellOutcome::Ended(format!(
            "connection to the hub lost: {e}"
        ))),
    }
}

/// Our standard input, read on the runtime's own thread: its readiness comes from the runtime's
/// reactor, so a key goes out to the hub from the thread that wakes for it, with no reading thread
/// and channel to hand it over first (one thread wake-up less per keystroke; the shell keystroke
/// bench in docs/benchmarks.md). The descriptor's flags are left as they are (the shell that
/// started us shares them, and nothing would restore them after a SIGKILL): a read is only made
/// once `poll` without a timeout has said it will not wait. Dropping it stops the reading at once,
/// so a console that ran the shell gets every later key back.
enum Keyboard {
    /// A terminal, pipe or socket, watched by the reactor.
    Watched(AsyncFd<StdinFd>),
    /// Input the reactor cannot watch because it is always ready (a file, `/dev/null`): a read
    /// never waits.
    Direct,
    /// No input to read (standard input is closed or cannot be watched).
    Closed,
}

/// Descriptor 0, borrowed: the reactor watches it, and dropping this neither closes it nor
/// changes its flags.
struct StdinFd;

impl AsRawFd for StdinFd {
    fn as_raw_fd(&self) -> RawFd {
        libc::STDIN_FILENO
    }
}

impl Keyboard {
    fn new() -> Self {
        // SAFETY: descriptor 0 stays open, on the same file description, while a session runs:
        // nothing in this process closes or replaces it.
        match unsafe { AsyncFd::register_with_interest(StdinFd, tokio::io::Interest::READABLE) } {
            Ok(fd) => Self::Watched(fd),
            Err(e) => match e.into_parts().1 {
                // epoll refuses what never blocks (regular files, /dev/null).
                e if e.raw_os_error() == Some(libc::EPERM) => Self::Direct,
                e => {
                    tracing::warn!(error = %e, "cannot read the terminal");
                    Self::Closed
                }
            },
        }
    }

    /// The next bytes typed; `Ok(0)` at the end of our input. Cancel-safe: nothing is read
    /// unless it returns.
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self {
                Self::Watched(fd) => {
                    let mut guard = fd.readable().await?;
                    if !input_waiting() {
                        guard.clear_ready();
                        continue;
                    }
                }
                Self::Direct => {}
                Self::Closed => return Ok(0),
            }
            // SAFETY: reads at most `buf.len()` bytes into `buf` from standard input.
            let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            match usize::try_from(n) {
                Ok(n) => return Ok(n),
                Err(_) => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Whether a read of standard input would return at once (bytes, end of input or an error).
fn input_waiting() -> bool {
    let mut fds = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut fds, 1, 0) };
        if ready >= 0 {
            return ready > 0;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // The read reports what is wrong.
            return true;
        }
    }
}

/// Runs a shell for the console on `agent` (or `agent/container`), which has stepped aside:
/// connects with `login`, runs the session on the real terminal and says how it ended.
pub async fn run_for_console(
    login: &crate::client::Login,
    agent: &str,
    container: Option<&str>,
) -> String {
    let client = match Client::connect(login).await {
        Ok(c) => c,
        Err(e) => return format!("cannot reach the hub: {e}"),
    };
    let req = ShellRequest {
        agent: agent.to_string(),
        container: container.map(str::to_string),
        command: Vec::new(),
        term: local_term(),
        size: local_size(),
    };
    let how = match run_shell(&client, &req).await {
        Ok(outcome) => outcome
            .message()
            .unwrap_or_else(|| format!("exited with status {}", outcome.status())),
        Err(e) => e.to_string(),
    };
    client.close_within(CONSOLE_CLOSE_WAIT).await;
    how
}

/// Long enough for the close to reach the hub, short enough that the console is back at once.
const CONSOLE_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

async fn relay(
    link: &crate::client::Link,
    send: &mut crate::client::SendHalf,
    recv: &mut crate::client::RecvHalf,
    keyboard: Keyboard,
) -> Result<ShellOutcome, ClientError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut winch = signal(SignalKind::window_change()).map_err(ClientError::Output)?;
    let mut term = signal(SignalKind::terminate()).map_err(ClientError::Output)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ClientError::Output)?;
    let up = async {
        let mut keys_open = true;
        let mut buf = vec![0u8; MAX_SHELL_CHUNK];
        loop {
            let frame = tokio::select! {
                n = keyboard.read(&mut buf), if keys_open => match n {
                    Ok(n) if n > 0 => ShellFrame::Data(Chunk(buf[..n].to_vec())),
                    // End of our input (or a terminal gone): the session goes on until the
                    // program ends.
                    _ => { keys_open = false; continue; }
                },
                _ = winch.recv() => ShellFrame::Resize(local_size()),
                _ = term.recv() => return Ok(ShellOutcome::Signalled(libc::SIGTERM)),
                _ = hup.recv() => return Ok(ShellOutcome::Signalled(libc::SIGHUP)),
            };
            if let Err(e) = write_frame(send, &frame, MAX_SHELL_FRAME).await {
                return Err(link.stream_error(e));
            }
        }
    };
    let down = async {
        loop {
            let frame = match read_frame::<ShellFrame, _>(recv, MAX_SHELL_FRAME).await {
                Ok(Some(f)) => f,
                Ok(None) => return Err(link.stream_error("the hub closed the shell stream")),
                Err(e) => return Err(link.stream_error(e)),
            };
            match frame {
                ShellFrame::Data(Chunk(data)) => {
                    // Written here, on the runtime's one thread: a terminal takes a chunk in
                    // microseconds, and handing each echo to a blocking thread would add two
                    // thread wake-ups to every keystroke's round trip.
                    let mut out = std::io::stdout().lock();
                    out.write_all(&data)
                        .and_then(|()| out.flush())
                        .map_err(ClientError::Output)?;
                }
                ShellFrame::Notice(text) => {
                    let line = format!("\r\n[flotilla: {text}]\r\n");
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(line.as_bytes()).and_then(|()| err.flush());
                }
                ShellFrame::Exit(e) => return Ok(ShellOutcome::Exited(e)),
                ShellFrame::Closed { reason, message } => {
                    return Ok(ShellOutcome::Ended(format!(
                        "{} ({message})",
                        reason.describe()
                    )));
                }
                ShellFrame::Refused(r) => {
                    return Ok(ShellOutcome::Refused {
                        code: r.code,
                        message: r.message,
                    });
                }
                ShellFrame::Started { .. } | ShellFrame::Resize(_) => {}
            }
        }
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: &str, command: &[&str]) -> ShellArgs {
        ShellArgs {
            target: target.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            join: None,
        }
    }

    #[test]
    fn targets_name_an_agent_and_maybe_a_container() {
        let size = WindowSize { cols: 80, rows: 24 };
        let r = args("web-1", &[]).request("xterm", size).expect("agent");
        assert_eq!((r.agent.as_str(), r.container), ("web-1", None));
        let r = args("web-1/db", &["psql"])
            .request("xterm", size)
            .expect("container");
        assert_eq!(r.container.as_deref(), Some("db"));
        assert_eq!(r.command, vec!["psql".to_string()]);
        for bad in ["", "/db", "web-1/"] {
            assert!(args(bad, &[]).request("xterm", size).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn exit_status_is_the_programs_or_says_why_not() {
        assert_eq!(ShellOutcome::Exited(ShellExit::Code(3)).status(), 3);
        assert_eq!(ShellOutcome::Exited(ShellExit::Code(3)).message(), None);
        assert_eq!(ShellOutcome::Exited(ShellExit::Signal(9)).status(), 137);
        assert_eq!(ShellOutcome::Ended("idle timeout".into()).status(), 255);
        let refused = ShellOutcome::Refused {
            code: ErrorCode::Forbidden,
            message: "no".into(),
        };
        assert_eq!(refused.status(), 1);
        assert_eq!(ShellOutcome::Signalled(15).status(), 143);
    }
}
