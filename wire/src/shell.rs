//! Interactive shells: a pseudo-terminal on an agent (or in one of its containers), relayed by the
//! hub to one operator, recorded, and watched live by admins who join.
//!
//! Flow of one session:
//!
//! 1. The operator opens a bidirectional stream with [`crate::msg::StreamOpen::Shell`] and sends
//!    one [`ShellRequest`].
//! 2. The hub checks the role (viewers never get a shell), picks a [`ShellSessionId`] and opens a
//!    bidirectional stream on the agent's connection with [`crate::msg::HubStreamOpen::Shell`]
//!    carrying a [`ShellOpen`]. The agent checks its own policy, starts the PTY and answers
//!    [`ShellFrame::Started`] (or [`ShellFrame::Refused`] and nothing else); the hub forwards it.
//! 3. Then both ways: the operator sends [`ShellFrame::Data`] (keystrokes) and
//!    [`ShellFrame::Resize`]; the agent sends [`ShellFrame::Data`] (terminal output). The hub may
//!    add [`ShellFrame::Notice`]s for the operator.
//! 4. The session ends with exactly one of [`ShellFrame::Exit`] (the program ended) or
//!    [`ShellFrame::Closed`] (something else ended it, with the reason), then the stream finishes.
//!    An operator that finishes or resets its stream hangs up: the agent ends the program.
//!
//! Output is never buffered without bound: the agent reads the PTY only as fast as the hub reads
//! the agent stream, and the hub reads it only as fast as the operator reads, so QUIC flow control
//! carries back-pressure from the operator's terminal to the program.
//!
//! [`crate::msg::StreamOpen::ShellJoin`] opens a read-only view of a live session: one
//! [`ShellJoin`], then the hub sends the session's [`ShellFrame`]s from that moment on.

use crate::msg::Refusal;
use crate::{Chunk, ErrorCode};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest [`ShellFrame::Data`] chunk either side sends: a few screens of output, small enough
/// that a keystroke's echo never waits behind a large frame and a frame stays well within
/// [`crate::limits::MAX_SHELL_FRAME`] with its envelope.
pub const MAX_SHELL_CHUNK: usize = 16 * 1024;
/// Most bytes of command line (argv, a byte after each) a [`ShellRequest`] may carry: a shell
/// command typed by a person, not a script (that is what exec and copy are for).
pub const MAX_SHELL_COMMAND_BYTES: usize = 16 * 1024;
/// Longest terminal name (`TERM`): terminfo names are short; the bound only keeps junk out.
pub const MAX_TERM_NAME: usize = 64;

/// Id of one shell session, chosen at random by the hub: it names the recording and what
/// `flotilla shell --join` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShellSessionId(pub u64);

impl fmt::Display for ShellSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s-{:016x}", self.0)
    }
}

impl ShellSessionId {
    /// Parses [`ShellSessionId`]'s `Display` form.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("s-")?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(Self)
    }
}

/// A terminal's size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WindowSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

impl WindowSize {
    /// Both sides at least one cell: a zero size is what a client without a terminal reports, and
    /// programs misbehave on it.
    pub fn valid(self) -> bool {
        self.cols > 0 && self.rows > 0
    }
}

/// Operator to hub: first frame after [`crate::msg::StreamOpen::Shell`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellRequest {
    /// Agent name or id: exactly one agent.
    pub agent: String,
    /// A container on that agent (name or unique id prefix); `None` for the agent's own host.
    pub container: Option<String>,
    /// Program and arguments; empty for the login shell of the agent's shell account (or the
    /// container's `/bin/sh`).
    pub command: Vec<String>,
    /// The operator's `TERM`: the only environment variable passed on.
    pub term: String,
    /// The operator's terminal size at the start.
    pub size: WindowSize,
}

impl ShellRequest {
    /// Checks what the hub can check without the agent: a specific message for each problem.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(c) = &self.container
            && !crate::workloads::valid_workload_name(c)
        {
            return Err(format!(
                "{c:?} is not a container name (1-255 bytes, no '/', no control characters, not starting with '-')"
            ));
        }
        let command_bytes: usize = self.command.iter().map(|a| a.len() + 1).sum();
        if command_bytes > MAX_SHELL_COMMAND_BYTES {
            return Err(format!(
                "command of {command_bytes} bytes exceeds the {MAX_SHELL_COMMAND_BYTES}-byte limit"
            ));
        }
        if self.command.first().is_some_and(|p| p.is_empty()) {
            return Err("empty program name".into());
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err("command contains a NUL byte".into());
        }
        if !valid_term(&self.term) {
            return Err(format!(
                "{:?} is not a terminal name (1-{MAX_TERM_NAME} of A-Z a-z 0-9 . _ + -)",
                self.term
            ));
        }
        if !self.size.valid() {
            return Err(format!(
                "window size {}x{} has a zero side",
                self.size.cols, self.size.rows
            ));
        }
        Ok(())
    }
}

/// Whether `term` may be passed on as `TERM`: a terminfo-style name, nothing a shell could
/// interpret.
pub fn valid_term(term: &str) -> bool {
    !term.is_empty()
        && term.len() <= MAX_TERM_NAME
        && term
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// Hub to agent: what [`crate::msg::HubStreamOpen::Shell`] asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellOpen {
    /// The session, for the agent's log.
    pub session_id: ShellSessionId,
    /// A container on the agent; `None` for the host.
    pub container: Option<String>,
    /// Program and arguments; empty for the login shell.
    pub command: Vec<String>,
    /// `TERM` for the program.
    pub term: String,
    /// Initial terminal size.
    pub size: WindowSize,
    /// Who asked: the operator's name, for the agent's log.
    pub actor: String,
}

/// Operator to hub: first frame after [`crate::msg::StreamOpen::ShellJoin`]. Admins only; the
/// hub answers [`ShellFrame`]s of the live session, read-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellJoin {
    /// The live session to watch.
    pub session_id: ShellSessionId,
}

/// How the program on the PTY ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShellExit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it (the number on the agent's platform).
    Signal(i32),
}

impl ShellExit {
    /// The exit status a shell would report for it: the code, or 128 + the signal number.
    pub fn status(self) -> i32 {
        match self {
            Self::Code(c) => c,
            Self::Signal(s) => 128 + s,
        }
    }
}

/// Why a session ended without the program's exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ShellEnd {
    /// Nothing was typed or printed for the agent's `shell_idle_timeout`.
    IdleTimeout,
    /// The session ran for the agent's `shell_max_session`.
    MaxLength,
    /// A policy ended it (the agent's shell policy was turned off, or a role changed).
    Policy,
    /// The hub is shutting down.
    HubShuttingDown,
    /// The hub could not write the session's recording.
    RecordingFailed,
    /// The agent went away (disconnected, killed, or its stream failed).
    AgentGone,
    /// The agent is shutting down.
    AgentShuttingDown,
    /// Anything else; the message says what.
    Error,
}

impl ShellEnd {
    /// Words for the line the client prints.
    pub fn describe(self) -> &'static str {
        match self {
            Self::IdleTimeout => "idle timeout",
            Self::MaxLength => "maximum session length reached",
            Self::Policy => "ended by policy",
            Self::HubShuttingDown => "hub shutting down",
            Self::RecordingFailed => "recording failed",
            Self::AgentGone => "agent went away",
            Self::AgentShuttingDown => "agent shutting down",
            Self::Error => "error",
        }
    }
}

/// Frames of a shell stream, in both directions (see the module doc for who sends which).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ShellFrame {
    /// The PTY is up (agent to hub), or the session is live (hub to operator).
    Started {
        /// The session: what a recording and a join name.
        session_id: ShellSessionId,
    },
    /// Terminal bytes: keystrokes towards the agent, output towards the operator. At most
    /// [`MAX_SHELL_CHUNK`] bytes.
    Data(Chunk),
    /// The operator's terminal changed size (towards the agent); forwarded to joiners too.
    Resize(WindowSize),
    /// The program ended; nothing follows.
    Exit(ShellExit),
    /// The session ended for another reason; nothing follows.
    Closed {
        /// Why.
        reason: ShellEnd,
        /// Detail for the user (`idle for 600 s`).
        message: String,
    },
    /// A line for the person at the terminal, printed by the client outside the program's output
    /// (`alice joined (read-only)`).
    Notice(String),
    /// Refused before a PTY was started; nothing follows.
    Refused(Refusal),
}

impl ShellFrame {
    /// A refusal frame.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Refused(Refusal {
            code,
            message: message.into(),
        })
    }

    /// Nothing follows this frame on its stream.
    pub fn is_last(&self) -> bool {
        matches!(self, Self::Exit(_) | Self::Closed { .. } | Self::Refused(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::StreamKind;
    use crate::msg::{HubStreamOpen, StreamOpen};
    use bytes::BytesMut;

    fn enc<T: Serialize>(msg: &T) -> Vec<u8> {
        postcard::to_stdvec(msg).expect("encode")
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug>(msg: &T) {
        let mut buf = BytesMut::new();
        let max = StreamKind::Shell.max_frame();
        crate::encode(msg, &mut buf, max).expect("encode");
        let back: T = crate::decode(&mut buf, max)
            .expect("decode")
            .expect("complete");
        assert_eq!(&back, msg);
        assert!(buf.is_empty());
    }

    fn request() -> ShellRequest {
        ShellRequest {
            agent: "web-1".into(),
            container: None,
            command: Vec::new(),
            term: "xterm-256color".into(),
            size: WindowSize { cols: 80, rows: 24 },
        }
    }

    #[test]
    fn every_frame_round_trips() {
        round_trip(&request());
        round_trip(&ShellOpen {
            session_id: ShellSessionId(7),
            container: Some("db".into()),
            command: vec!["sh".into(), "-c".into(), "id".into()],
            term: "xterm".into(),
            size: WindowSize { cols: 1, rows: 1 },
            actor: "alice".into(),
        });
        round_trip(&ShellJoin {
            session_id: ShellSessionId(u64::MAX),
        });
        for f in [
            ShellFrame::Started {
                session_id: ShellSessionId(1),
            },
            ShellFrame::Data(Chunk(vec![0xff; MAX_SHELL_CHUNK])),
            ShellFrame::Resize(WindowSize {
                cols: 200,
                rows: 50,
            }),
            ShellFrame::Exit(ShellExit::Code(3)),
            ShellFrame::Exit(ShellExit::Signal(9)),
            ShellFrame::Closed {
                reason: ShellEnd::IdleTimeout,
                message: "idle for 60 s".into(),
            },
            ShellFrame::Notice("alice joined (read-only)".into()),
            ShellFrame::refused(ErrorCode::Forbidden, "shell is off"),
        ] {
            round_trip(&f);
        }
    }

    /// Golden bytes: a change here breaks deployed peers and needs a protocol version bump.
    #[test]
    fn golden_bytes_are_pinned() {
        assert_eq!(enc(&StreamOpen::Shell), [11]);
        assert_eq!(enc(&StreamOpen::ShellJoin), [12]);
        assert_eq!(
            enc(&HubStreamOpen::Shell(ShellOpen {
                session_id: ShellSessionId(1),
                container: None,
                command: vec!["id".into()],
                term: "t".into(),
                size: WindowSize { cols: 80, rows: 24 },
                actor: "a".into(),
            })),
            [7, 1, 0, 1, 2, b'i', b'd', 1, b't', 80, 24, 1, b'a']
        );
        assert_eq!(
            enc(&ShellFrame::Data(Chunk(b"ls\r".to_vec()))),
            [1, 3, b'l', b's', b'\r']
        );
        assert_eq!(
            enc(&ShellFrame::Resize(WindowSize {
                cols: 132,
                rows: 43
            })),
            [2, 0x84, 0x01, 43]
        );
        assert_eq!(enc(&ShellFrame::Exit(ShellExit::Signal(2))), [3, 1, 4]);
        assert_eq!(
            enc(&ShellFrame::Closed {
                reason: ShellEnd::RecordingFailed,
                message: String::new()
            }),
            [4, 4, 0]
        );
        assert_eq!(
            enc(&ShellJoin {
                session_id: ShellSessionId(5)
            }),
            [5]
        );
    }

    #[test]
    fn session_ids_print_and_parse() {
        let id = ShellSessionId(0xabc);
        assert_eq!(id.to_string(), "s-0000000000000abc");
        assert_eq!(ShellSessionId::parse(&id.to_string()), Some(id));
        for bad in [
            "",
            "s-",
            "s-abc",
            "t-0000000000000abc",
            "s-000000000000zabc",
        ] {
            assert_eq!(ShellSessionId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn requests_are_checked_with_specific_messages() {
        assert_eq!(request().validate(), Ok(()));
        let mut r = request();
        r.term = "xterm; rm -rf /".into();
        assert!(
            r.validate()
                .expect_err("term")
                .contains("not a terminal name")
        );
        let mut r = request();
        r.size.cols = 0;
        assert_eq!(
            r.validate().expect_err("size"),
            "window size 0x24 has a zero side"
        );
        let mut r = request();
        r.container = Some("../x".into());
        assert!(
            r.validate()
                .expect_err("container")
                .contains("not a container name")
        );
        let mut r = request();
        r.command = vec!["x".repeat(MAX_SHELL_COMMAND_BYTES)];
        assert!(
            r.validate()
                .expect_err("long")
                .contains("exceeds the 16384-byte limit")
        );
        let mut r = request();
        r.command = vec![String::new()];
        assert_eq!(r.validate().expect_err("empty"), "empty program name");
    }

    #[test]
    fn exit_status_is_what_a_shell_reports() {
        assert_eq!(ShellExit::Code(3).status(), 3);
        assert_eq!(ShellExit::Signal(2).status(), 130);
    }
}
