//! Interactive shells: a PTY running the login shell of the configured account (or a command), or
//! an exec with a TTY in a container, relayed to the hub on a `HubStreamOpen::Shell` stream.
//!
//! Policy: `shell = "on"` in agent.toml (default off), `shell_user` (default agentd's own account;
//! a root shell only when `shell_user = "root"` is written), `shell_idle_timeout` and
//! `shell_max_session`. Container shells also need `containers = "manage"`: a shell in a
//! container can do anything the container's processes can.
//!
//! The session loop reads the PTY only when the last output frame was written to the hub, so a
//! program that prints gigabytes is held back by QUIC flow control; keystrokes are read from the
//! hub only when the last ones were written to the PTY. Nothing is buffered beyond one chunk each
//! way.

mod container;
mod pty;

use crate::config::{AgentConfig, ShellMode};
use crate::exec::ExecContext;
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::MAX_SHELL_FRAME;
use flotilla_wire::shell::{MAX_SHELL_CHUNK, ShellEnd, ShellExit, ShellFrame, ShellOpen};
use flotilla_wire::workloads::Access;
use flotilla_wire::{Chunk, ErrorCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long output still drains after the program exited, for what a background process that
/// keeps the terminal open prints: the exit is reported after this at the latest.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
/// How long a hung-up program has to exit after SIGHUP before it gets SIGKILL: shells save their
/// history on SIGHUP, which takes milliseconds.
const HANGUP_GRACE: Duration = Duration::from_secs(3);

/// Whose shell a session runs, resolved at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShellAccount {
    /// agentd's own account (not root): no switch.
    Own(Login),
    /// Another account (`shell_user`): the child switches to it before exec.
    Switch {
        /// Ids and groups.
        run_as: crate::exec::account::RunAs,
        /// Its login shell and home.
        login: Login,
    },
    /// agentd runs as root and `shell_user` is unset: refused, so that a root shell is always
    /// a written decision.
    RootNotChosen,
}

/// What a login needs from an account's passwd entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// Account name, for `USER` and `LOGNAME`.
    pub name: String,
    /// Home directory: `HOME` and the working directory.
    pub home: String,
    /// Login shell (`/bin/sh` when the entry has none).
    pub shell: String,
}

/// The shell keys of agent.toml, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellPolicy {
    /// `shell`.
    pub mode: ShellMode,
    /// `shell_user`, resolved (only when `shell = "on"`).
    pub account: Option<ShellAccount>,
    /// `shell_idle_timeout`; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// `shell_max_session`; `None`: never.
    pub max_session: Option<Duration>,
    /// `containers`: container shells need `manage`.
    pub containers: Access,
}

impl ShellPolicy {
    /// Resolves the shell keys. `shell_user` is looked up only when shells are on, so an agent
    /// with shells off never fails to start over it.
    pub fn from_config(cfg: &AgentConfig) -> Result<Self, crate::AgentError> {
        let limit = |key: &str, text: &str| {
            flotilla_wire::text::parse_duration(text)
                .map(|d| (!d.is_zero()).then_some(d))
                .map_err(|e| crate::AgentError::Config(format!("{key}: {e}")))
        };
        let account = if cfg.shell == ShellMode::On {
            Some(resolve_account(cfg.shell_user.as_deref())?)
        } else {
            None
        };
        Ok(Self {
            mode: cfg.shell,
            account,
            idle_timeout: limit("shell_idle_timeout", &cfg.shell_idle_timeout)?,
            max_session: limit("shell_max_session", &cfg.shell_max_session)?,
            containers: cfg.containers,
        })
    }

    /// Why `open` is refused, in words naming the policy key; `None` when it may run.
    fn refusal(&self, open: &ShellOpen) -> Option<String> {
        if self.mode == ShellMode::Off {
            return Some(
                "shells are off on this agent (shell = \"off\" in agent.toml; set shell = \"on\" to allow them)"
                    .into(),
            );
        }
        if open.container.is_some() {
            if self.containers != Access::Manage {
                return Some(format!(
                    "container shells need containers = \"manage\" in agent.toml (it is \"{}\")",
                    self.containers.as_str()
                ));
            }
            return None;
        }
        match &self.account {
            Some(ShellAccount::RootNotChosen) => Some(
                "agentd runs as root and shell_user is unset: set shell_user = \"root\" in agent.toml to allow root shells, or name another account"
                    .into(),
            ),
            Some(_) => None,
            None => Some("shells are off on this agent".into()),
        }
    }
}

#[cfg(unix)]
fn resolve_account(user: Option<&str>) -> Result<ShellAccount, crate::AgentError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    match user {
        Some(name) => {
            let run_as = crate::exec::account::resolve(name, euid).map_err(|e| match e {
                crate::AgentError::Config(m) => {
                    crate::AgentError::Config(m.replace("run_as", "shell_user"))
                }
                other => other,
            })?;
            let login = pty::login_of(run_as.uid).unwrap_or_else(|| Login {
                name: name.to_string(),
                home: run_as.home.clone(),
                shell: pty::DEFAULT_SHELL.into(),
            });
            if run_as.uid == euid {
                Ok(ShellAccount::Own(login))
            } else {
                Ok(ShellAccount::Switch { run_as, login })
            }
        }
        None if euid == 0 => Ok(ShellAccount::RootNotChosen),
        None => pty::login_of(euid).map(ShellAccount::Own).ok_or_else(|| {
            crate::AgentError::Config(format!(
                "shell = \"on\": agentd's own account (uid {euid}) has no passwd entry; set shell_user"
            ))
        }),
    }
}

#[cfg(not(unix))]
fn resolve_account(_user: Option<&str>) -> Result<ShellAccount, crate::AgentError> {
    Err(crate::AgentError::Config(
        "shell = \"on\" is only supported on Unix agents".into(),
    ))
}

/// One running program behind a terminal, in three parts so that one `select!` can read output,
/// write keystrokes and wait for the exit at once.
struct Terminal {
    reader: Reader,
    writer: Writer,
    control: Control,
}

enum Reader {
    Host(Arc<pty::PtyFd>),
    Container(container::Output),
}

enum Writer {
    Host(Arc<pty::PtyFd>),
    Container(container::Input),
}

enum Control {
    Host(pty::HostChild),
    Container(container::ExecControl),
}

impl Reader {
    /// Next output; `Ok(None)` once the terminal has no writer left. Cancel-safe.
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<Option<Vec<u8>>> {
        match self {
            Self::Host(p) => p.read(buf).await,
            Self::Container(c) => c.read().await,
        }
    }
}

impl Writer {
    /// Writes some of `data`, returning how much. Cancel-safe: nothing is written when dropped.
    async fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Host(p) => p.write(data).await,
            Self::Container(c) => c.write(data).await,
        }
    }
}

impl Control {
    async fn resize(&mut self, cols: u16, rows: u16) {
        match self {
            Self::Host(p) => p.resize(cols, rows),
            Self::Container(c) => c.resize(cols, rows).await,
        }
    }

    /// Waits for the program to end. Cancel-safe.
    async fn wait(&mut self) -> ShellExit {
        match self {
            Self::Host(p) => p.wait().await,
            Self::Container(c) => c.wait().await,
        }
    }
}

impl Terminal {
    /// Ends the program: SIGHUP, then SIGKILL after a grace (host); the engine's exec ends when
    /// its TTY closes (container).
    async fn hang_up(self) {
        drop(self.reader);
        drop(self.writer);
        match self.control {
            Control::Host(p) => p.hang_up(HANGUP_GRACE).await,
            Control::Container(c) => c.hang_up().await,
        }
    }
}

/// Serves one shell stream the hub opened.
pub async fn serve(
    exec: Arc<ExecContext>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    open: ShellOpen,
) {
    let policy = &exec.policy.shell;
    if let Some(reason) = policy.refusal(&open) {
        tracing::info!(actor = %open.actor, %reason, "shell refused");
        let _ = write_frame(
            &mut send,
            &ShellFrame::refused(ErrorCode::Forbidden, reason),
            MAX_SHELL_FRAME,
        )
        .await;
        let _ = send.finish();
        return;
    }
    let started = match &open.container {
        None => match &policy.account {
            Some(account) => {
                pty::spawn(account, &exec.policy.env, &open).map(|(fd, child)| Terminal {
                    reader: Reader::Host(fd.clone()),
                    writer: Writer::Host(fd),
                    control: Control::Host(child),
                })
            }
            None => Err("shells are off on this agent".into()),
        },
        Some(name) => container::start(&exec.workloads.engine, name, &open)
            .await
            .map(|(output, input, control)| Terminal {
                reader: Reader::Container(output),
                writer: Writer::Container(input),
                control: Control::Container(control),
            }),
    };
    let term = match started {
        Ok(t) => t,
        Err(message) => {
            tracing::info!(actor = %open.actor, error = %message, "shell failed to start");
            let _ = write_frame(
                &mut send,
                &ShellFrame::refused(ErrorCode::NotFound, message),
                MAX_SHELL_FRAME,
            )
            .await;
            let _ = send.finish();
            return;
        }
    };
    tracing::info!(actor = %open.actor, container = ?open.container, command = ?open.command, "shell started");
    let started = ShellFrame::Started {
        session_id: open.session_id,
    };
    if write_frame(&mut send, &started, MAX_SHELL_FRAME)
        .await
        .is_err()
    {
        term.hang_up().await;
        return;
    }
    let end = relay(term, &mut send, &mut recv, policy).await;
    tracing::info!(actor = %open.actor, end = ?end, "shell ended");
    if let Some(frame) = end {
        let _ = write_frame(&mut send, &frame, MAX_SHELL_FRAME).await;
        let _ = send.finish();
    }
}

/// Moves bytes both ways until the session ends; the last frame to send, or `None` when the hub
/// hung up (nothing more to say).
async fn relay(
    mut term: Terminal,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    policy: &ShellPolicy,
) -> Option<ShellFrame> {
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let at = |d: Option<Duration>| d.map_or(far, |d| Instant::now() + d);
    let idle = tokio::time::sleep_until(at(policy.idle_timeout));
    let max = tokio::time::sleep_until(at(policy.max_session));
    let drain = tokio::time::sleep_until(far);
    tokio::pin!(idle, max, drain);
    let mut buf = vec![0u8; MAX_SHELL_CHUNK];
    let mut input: Vec<u8> = Vec::new();
    let mut exit: Option<ShellExit> = None;
    let closed = |reason: ShellEnd, d: Duration, what: &str| ShellFrame::Closed {
        reason,
        message: format!("{what} {} s", d.as_secs()),
    };
    loop {
        tokio::select! {
            () = &mut idle => {
                let d = policy.idle_timeout.unwrap_or_default();
                term.hang_up().await;
                return Some(closed(ShellEnd::IdleTimeout, d, "no input or output for"));
            }
            () = &mut max => {
                let d = policy.max_session.unwrap_or_default();
                term.hang_up().await;
                return Some(closed(ShellEnd::MaxLength, d, "the session reached shell_max_session of"));
            }
            status = term.control.wait(), if exit.is_none() => {
                exit = Some(status);
                drain.as_mut().reset(Instant::now() + DRAIN_AFTER_EXIT);
            }
            () = &mut drain, if exit.is_some() => break,
            out = term.reader.read(&mut buf) => match out {
                Ok(Some(data)) => {
                    idle.as_mut().reset(at(policy.idle_timeout));
                    let frame = ShellFrame::Data(Chunk(data));
                    if write_frame(send, &frame, MAX_SHELL_FRAME).await.is_err() {
                        term.hang_up().await;
                        return None;
                    }
                }
                Ok(None) | Err(_) => {
                    if exit.is_none() {
                        let waited = tokio::time::timeout(HANGUP_GRACE, term.control.wait()).await;
                        exit = waited.ok();
                    }
                    break;
                }
            },
            w = term.writer.write(&input), if !input.is_empty() => match w {
                Ok(n) => { input.drain(..n); }
                Err(e) => {
                    tracing::debug!(error = %e, "shell input failed");
                    input.clear();
                }
            },
            frame = read_frame::<ShellFrame, _>(recv, MAX_SHELL_FRAME), if input.is_empty() => match frame {
                Ok(Some(ShellFrame::Data(Chunk(data)))) => {
                    idle.as_mut().reset(at(policy.idle_timeout));
                    input = data;
                }
                Ok(Some(ShellFrame::Resize(size))) if size.valid() => {
                    term.control.resize(size.cols, size.rows).await;
                }
                Ok(Some(other)) => {
                    tracing::debug!(frame = ?other, "unexpected shell frame from the hub");
                }
                Ok(None) | Err(_) => {
                    // The hub hung up (the operator left) or the connection is gone.
                    term.hang_up().await;
                    return None;
                }
            },
        }
    }
    match exit {
        Some(status) => {
            term.hang_up().await;
            Some(ShellFrame::Exit(status))
        }
        None => {
            term.hang_up().await;
            Some(ShellFrame::Closed {
                reason: ShellEnd::Error,
                message: "the terminal closed but the program did not exit".into(),
            })
        }
    }
}
