//! A job started from the console: its targets, each agent's output as lines, their outcomes and the
//! summary. Memory is bounded whatever the command prints: lines are cut at [`MAX_LINE_CHARS`], each
//! agent keeps its last [`PANE_LINES`], the merged view its last [`MERGED_LINES`].

use flotilla_wire::IdentityId;
use flotilla_wire::exec::{
    AgentEvent, ExecEvent, ExecFailure, ExitReport, JobId, JobSummary, OutputStream,
};
use std::collections::{HashMap, VecDeque};

/// Lines kept per agent.
pub const PANE_LINES: usize = 1000;
/// Lines kept in the merged view.
pub const MERGED_LINES: usize = 5000;
/// Longest line kept; the rest of a longer one starts a new line, as `flotilla exec` does.
pub const MAX_LINE_CHARS: usize = 4096;

/// Where one agent's execution stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaneState {
    /// Not started yet (batch) or no news yet.
    Waiting,
    /// Running with this pid.
    Running(u32),
    /// Ended.
    Exited(ExitReport),
    /// Did not run, or was lost.
    Failed(ExecFailure),
}

impl PaneState {
    /// Whether nothing more will come from this agent.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Exited(_) | Self::Failed(_))
    }

    /// `exit 0`, `exit 2`, `signal 9`, `timed out`, `cancelled`, `refused`, `running`…
    pub fn label(&self) -> String {
        match self {
            Self::Waiting => "waiting".into(),
            Self::Running(_) => "running".into(),
            Self::Exited(r) if r.timed_out => "timed out".into(),
            Self::Exited(r) if r.cancelled => "cancelled".into(),
            Self::Exited(r) => match (r.code, r.signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("signal {s}"),
                (None, None) => "ended".into(),
            },
            Self::Failed(f) => f.kind.as_str().replace('_', " "),
        }
    }

    /// Whether this is a success (exit 0).
    pub fn ok(&self) -> bool {
        matches!(self, Self::Exited(r) if r.code == Some(0) && !r.timed_out && !r.cancelled)
    }
}

/// One line of output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutLine {
    /// Which pipe (`None` for the console's own notes: exit codes, failures).
    pub stream: Option<OutputStream>,
    /// The text, without its newline.
    pub text: String,
}

/// One agent's pane.
#[derive(Clone, Debug)]
pub struct Pane {
    /// Agent id.
    pub id: IdentityId,
    /// Agent name.
    pub name: String,
    /// Its lines, oldest first.
    pub lines: VecDeque<OutLine>,
    /// Bytes after the last newline, per pipe.
    partial: [Vec<u8>; 2],
    /// Where it stands.
    pub state: PaneState,
}

/// A job run from the console.
#[derive(Clone, Debug)]
pub struct ExecRun {
    /// The console's number for it.
    pub run: u64,
    /// The command as typed.
    pub command: String,
    /// The selector it was sent with (to run again on the same agents).
    pub selector: String,
    /// The hub's job id, once accepted.
    pub job: Option<JobId>,
    /// Targets in the hub's order.
    pub panes: Vec<Pane>,
    index: HashMap<IdentityId, usize>,
    /// Every agent's lines interleaved as they came, with the pane they belong to.
    pub merged: VecDeque<(usize, OutLine)>,
    /// The hub's summary, once every target has an outcome.
    pub summary: Option<JobSummary>,
    /// Why the job did not run or its stream broke.
    pub error: Option<String>,
    /// A cancel was sent.
    pub cancelling: bool,
}

impl ExecRun {
    /// A run just sent to the hub.
    pub fn new(run: u64, command: String, selector: String) -> Self {
        Self {
            run,
            command,
            selector,
            job: None,
            panes: Vec::new(),
            index: HashMap::new(),
            merged: VecDeque::new(),
            summary: None,
            error: None,
            cancelling: false,
        }
    }

    /// Whether the job still runs (no summary, no error).
    pub fn running(&self) -> bool {
        self.summary.is_none() && self.error.is_none()
    }

    /// How many panes have an outcome, and how many of those exited 0.
    pub fn progress(&self) -> (usize, usize) {
        let done = self.panes.iter().filter(|p| p.state.is_final()).count();
        let ok = self.panes.iter().filter(|p| p.state.ok()).count();
        (done, ok)
    }

    /// Applies one event from the hub.
    pub fn apply(&mut self, ev: ExecEvent) {
        match ev {
            ExecEvent::Accepted { job, .. } => self.job = Some(job),
            ExecEvent::Targets(targets) => {
                for t in targets {
                    self.index.insert(t.id.clone(), self.panes.len());
                    self.panes.push(Pane {
                        id: t.id,
                        name: t.name,
                        lines: VecDeque::new(),
                        partial: [Vec::new(), Vec::new()],
                        state: PaneState::Waiting,
                    });
                }
            }
            ExecEvent::Agent { agent, event } => {
                let Some(&i) = self.index.get(&agent) else {
                    return;
                };
                self.agent_event(i, event);
            }
            ExecEvent::Done(summary) => {
                for i in 0..self.panes.len() {
                    self.flush(i);
                }
                self.summary = Some(summary);
            }
            ExecEvent::Refused(r) => self.error = Some(r.message),
        }
    }

    /// The stream broke before the summary.
    pub fn fail(&mut self, reason: String) {
        if self.summary.is_none() {
            self.error = Some(reason);
        }
    }

    fn agent_event(&mut self, i: usize, event: AgentEvent) {
        match event {
            AgentEvent::Started { pid } => self.panes[i].state = PaneState::Running(pid),
            AgentEvent::Output { stream, data } => {
                let slot = usize::from(stream == OutputStream::Stderr);
                let mut rest = data.0.as_slice();
                while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                    let mut line = std::mem::take(&mut self.panes[i].partial[slot]);
                    line.extend_from_slice(&rest[..nl]);
                    self.push_bytes(i, Some(stream), &line);
                    rest = &rest[nl + 1..];
                }
                self.panes[i].partial[slot].extend_from_slice(rest);
                while self.panes[i].partial[slot].len() > MAX_LINE_CHARS {
                    let tail = self.panes[i].partial[slot].split_off(MAX_LINE_CHARS);
                    let head = std::mem::replace(&mut self.panes[i].partial[slot], tail);
                    self.push_bytes(i, Some(stream), &head);
                }
            }
            AgentEvent::Exited(report) => {
                self.flush(i);
                let state = PaneState::Exited(report);
                let note = format!(
                    "[{} after {}]",
                    state.label(),
                    duration(match &state {
                        PaneState::Exited(r) => r.duration_ms,
                        _ => 0,
                    })
                );
                self.panes[i].state = state;
                self.push(i, None, note);
            }
            AgentEvent::Failed(failure) => {
                self.flush(i);
                let note = format!(
                    "[{}: {}]",
                    failure.kind.as_str(),
                    crate::util::Escaped(&failure.message)
                );
                self.panes[i].state = PaneState::Failed(failure);
                self.push(i, None, note);
            }
        }
    }

    fn flush(&mut self, i: usize) {
        for slot in 0..2 {
            let rest = std::mem::take(&mut self.panes[i].partial[slot]);
            if !rest.is_empty() {
                let stream = if slot == 0 {
                    OutputStream::Stdout
                } else {
                    OutputStream::Stderr
                };
                self.push_bytes(i, Some(stream), &rest);
            }
        }
    }

    fn push_bytes(&mut self, i: usize, stream: Option<OutputStream>, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        // Terminal control characters would move the console's own cursor and bidi controls
        // reorder the line: show them escaped (`\x1b`, `\u{202e}`), and tabs as spaces (ratatui
        // does not expand them). Backslashes stay single: this is a command's output, not a name.
        let clean = crate::util::escaped_controls(&text.trim_end_matches('\r').replace('\t', " "))
            .into_owned();
        self.push(i, stream, clean);
    }

    fn push(&mut self, i: usize, stream: Option<OutputStream>, text: String) {
        let line = OutLine { stream, text };
        let pane = &mut self.panes[i];
        if pane.lines.len() == PANE_LINES {
            pane.lines.pop_front();
        }
        pane.lines.push_back(line.clone());
        if self.merged.len() == MERGED_LINES {
            self.merged.pop_front();
        }
        self.merged.push_back((i, line));
    }
}

/// `12ms`, `3.4s`, `2m05s`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// Splits what was typed at the `:` prompt into the command to send. Plain words (quotes
/// respected) run directly, which an agent's allowlist can permit; anything with shell syntax
/// (pipes, redirects, `;`, `&&`, `$VAR`, globs, backquotes) runs through `/bin/sh -c`, which needs
/// `exec = "any"` on the agent.
pub fn parse_command(line: &str) -> Result<flotilla_wire::exec::ExecCommand, String> {
    let line = line.trim();
    if line.is_empty() {
        return Err("type a command to run".into());
    }
    const SHELL: &[char] = &[
        '|', '&', ';', '<', '>', '$', '`', '*', '?', '[', '(', ')', '~', '{', '}', '\\', '#',
    ];
    if line.contains(SHELL) {
        return Ok(flotilla_wire::exec::ExecCommand::Argv {
            argv: vec![line.to_owned()],
            shell: true,
        });
    }
    let mut argv = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    argv.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unclosed {q} quote"));
    }
    if in_word {
        argv.push(word);
    }
    Ok(flotilla_wire::exec::ExecCommand::Argv { argv, shell: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::Role;
    use flotilla_wire::exec::{Chunk, ExecCommand, FailureKind, JobCounts, Target};

    fn id(i: u8) -> IdentityId {
        IdentityId::from_random(Role::Agent, [i; 8])
    }

    fn run_with_two() -> ExecRun {
        let mut run = ExecRun::new(1, "uptime".into(), "all".into());
        run.apply(ExecEvent::Accepted {
            job: JobId(7),
            targets: 2,
        });
        run.apply(ExecEvent::Targets(vec![
            Target {
                id: id(1),
                name: "web-1".into(),
                online: true,
            },
            Target {
                id: id(2),
                name: "db-1".into(),
                online: true,
            },
        ]));
        run
    }

    fn out(run: &mut ExecRun, i: u8, s: &str) {
        run.apply(ExecEvent::Agent {
            agent: id(i),
            event: AgentEvent::Output {
                stream: OutputStream::Stdout,
                data: Chunk(s.as_bytes().to_vec()),
            },
        });
    }

    #[test]
    fn lines_join_across_chunks_and_never_mix_agents() {
        let mut run = run_with_two();
        out(&mut run, 1, "hel");
        out(&mut run, 2, "db says\nhi");
        out(&mut run, 1, "lo\n");
        let merged: Vec<_> = run
            .merged
            .iter()
            .map(|(i, l)| format!("{}:{}", run.panes[*i].name, l.text))
            .collect();
        assert_eq!(merged, ["db-1:db says", "web-1:hello"]);
        run.apply(ExecEvent::Agent {
            agent: id(2),
            event: AgentEvent::Exited(ExitReport {
                code: Some(3),
                duration_ms: 1500,
                ..ExitReport::default()
            }),
        });
        let db: Vec<_> = run.panes[1].lines.iter().map(|l| l.text.clone()).collect();
        assert_eq!(
            db,
            ["db says", "hi", "[exit 3 after 1.5s]"],
            "the partial line is flushed at exit"
        );
        assert_eq!(run.progress(), (1, 0));
        assert!(run.running());
        run.apply(ExecEvent::Done(JobSummary {
            job: JobId(7),
            targets: 2,
            counts: JobCounts::default(),
            duration_ms: 5,
        }));
        assert!(!run.running());
    }

    #[test]
    fn memory_is_bounded_and_control_characters_are_defused() {
        let mut run = run_with_two();
        out(&mut run, 1, &"x".repeat(MAX_LINE_CHARS * 2 + 10));
        out(&mut run, 1, "\n");
        assert_eq!(run.panes[0].lines.len(), 3, "a long line is cut");
        for _ in 0..PANE_LINES + 50 {
            out(&mut run, 2, "a\tb\x1b[2J\n");
        }
        assert_eq!(run.panes[1].lines.len(), PANE_LINES);
        assert_eq!(run.panes[1].lines[0].text, "a b\\x1b[2J");
        out(&mut run, 2, "x\u{202e}y\u{9b}z\\\n");
        assert_eq!(
            run.panes[1].lines.back().map(|l| l.text.as_str()),
            Some("x\\u{202e}y\\u{9b}z\\")
        );
        run.apply(ExecEvent::Agent {
            agent: id(1),
            event: AgentEvent::Failed(ExecFailure {
                kind: FailureKind::Refused,
                message: "exec is off".into(),
            }),
        });
        assert_eq!(run.panes[0].state.label(), "refused");
    }

    #[test]
    fn commands_split_into_words_or_go_to_the_shell() {
        assert_eq!(
            parse_command("  ls -l 'my dir' \"a b\"").expect("words"),
            ExecCommand::Argv {
                argv: vec!["ls".into(), "-l".into(), "my dir".into(), "a b".into()],
                shell: false
            }
        );
        assert_eq!(
            parse_command("df -h | tail -1").expect("shell"),
            ExecCommand::Argv {
                argv: vec!["df -h | tail -1".into()],
                shell: true
            }
        );
        assert!(parse_command("   ").is_err());
        assert_eq!(
            parse_command("echo 'oops").expect_err("unclosed"),
            "unclosed ' quote"
        );
    }
}
