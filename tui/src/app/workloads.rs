//! Containers and systemd units in the console: the lists the hub answers `Query::Containers` and
//! `Query::Services` with (one agent's or the whole fleet's), their sort, filter and selection, CPU
//! and memory trends built from successive answers, the logs pane, and who may act on what.

use super::Fetched;
use flotilla_wire::IdentityId;
use flotilla_wire::exec::OutputStream;
use flotilla_wire::workloads::{
    Access, ContainerAction, ContainerRow, ContainerState, Health, LogFrame, LogSource,
    ServiceAction, UnitRow, WorkloadCounts, WorkloadPolicy,
};
use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};

/// Sort columns of the containers list, in the order `s` cycles through them. Trouble first
/// (unhealthy, restarting, dead): that is what an operator opens the list for.
pub const CONTAINER_SORTS: [&str; 5] = ["trouble", "name", "cpu", "mem", "host"];
/// Sort columns of the units list; failed units first by default, as `systemctl --failed` would.
pub const UNIT_SORTS: [&str; 5] = ["trouble", "name", "cpu", "mem", "host"];
/// Points kept per container or unit for its sparklines: at the 2 s refresh, about 40 s.
pub const TREND_POINTS: usize = 20;
/// Lines the logs pane keeps: enough to scroll back through a burst, bounded whatever the
/// container prints.
pub const LOG_LINES: usize = 5000;
/// Longest log line kept; the rest of a longer one starts a new line, as the output view does.
pub const LOG_LINE_CHARS: usize = 4096;
/// Minutes of history shown for the selected container (`Query::ContainerHistory`).
pub const HISTORY_MINUTES: u32 = 60;
/// The selected container's history is asked for again after this many ticks (seconds): minute
/// points change once a minute.
pub const HISTORY_REFRESH_TICKS: u64 = 30;

/// The selected container's minutes, as the hub keeps them.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerHistory {
    /// Agent id.
    pub agent: String,
    /// Full container id.
    pub container: String,
    /// The tick it was asked at.
    pub asked_tick: u64,
    /// The minutes, oldest first.
    pub minutes: Fetched<Vec<flotilla_wire::workloads::ContainerMinute>>,
}

/// Lines of history a logs pane asks for when it opens: a screenful or two of context.
pub const LOG_TAIL: u32 = 200;

/// Which kind of workload a list shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkKind {
    /// Containers (Docker Engine API).
    Containers,
    /// systemd units.
    Services,
}

impl WorkKind {
    /// The word in titles and the header.
    pub fn title(self) -> &'static str {
        match self {
            Self::Containers => "containers",
            Self::Services => "services",
        }
    }

    /// Sort columns of this kind.
    pub fn sorts(self) -> &'static [&'static str] {
        match self {
            Self::Containers => &CONTAINER_SORTS,
            Self::Services => &UNIT_SORTS,
        }
    }
}

/// What a row of either list offers the list machinery.
pub trait WorkRow {
    /// The agent it runs on.
    fn agent(&self) -> &IdentityId;
    /// The agent's name.
    fn agent_name(&self) -> &str;
    /// What an operator calls it: the container's or unit's name.
    fn name(&self) -> &str;
    /// Stable identity across answers: agent plus container id or unit name.
    fn key(&self) -> String;
    /// Whether a filter word matches (name, image, state, host, compose project…).
    fn matches(&self, term: &str) -> bool;
    /// Needs a look: unhealthy, restarting or dead containers; failed units.
    fn troubled(&self) -> bool;
    /// CPU percent of one core, if measured.
    fn cpu(&self) -> Option<f32>;
    /// Memory used, bytes, if measured.
    fn mem(&self) -> Option<u64>;
    /// Memory as percent of the container's limit, for its sparkline (units have no limit).
    fn mem_pct(&self) -> Option<f32>;
}

impl WorkRow for ContainerRow {
    fn agent(&self) -> &IdentityId {
        &self.agent
    }
    fn agent_name(&self) -> &str {
        &self.agent_name
    }
    fn name(&self) -> &str {
        &self.info.name
    }
    fn key(&self) -> String {
        format!("{}/{}", self.agent, self.info.id)
    }
    fn matches(&self, term: &str) -> bool {
        match term.split_once('=') {
            Some(("host", v)) => self.agent_name.contains(v),
            Some(("state", v)) => self.info.state.as_str() == v,
            Some(("image", v)) => self.info.image.contains(v),
            Some(("project", v)) => self.info.compose_project.as_deref() == Some(v),
            _ => {
                self.info.name.contains(term)
                    || self.info.image.contains(term)
                    || self.info.id.starts_with(term)
                    || self.agent_name.contains(term)
                    || self.info.state.as_str() == term
                    || self.info.health.as_str() == term
                    || self.info.compose_project.as_deref() == Some(term)
            }
        }
    }
    fn troubled(&self) -> bool {
        self.info.troubled()
    }
    fn cpu(&self) -> Option<f32> {
        self.stats.as_ref().map(|s| s.cpu_pct)
    }
    fn mem(&self) -> Option<u64> {
        self.stats.as_ref().map(|s| s.mem_used)
    }
    fn mem_pct(&self) -> Option<f32> {
        self.stats
            .as_ref()
            .filter(|s| s.mem_limit > 0)
            .map(|s| (s.mem_used as f64 * 100.0 / s.mem_limit as f64) as f32)
    }
}

impl WorkRow for UnitRow {
    fn agent(&self) -> &IdentityId {
        &self.agent
    }
    fn agent_name(&self) -> &str {
        &self.agent_name
    }
    fn name(&self) -> &str {
        &self.info.name
    }
    fn key(&self) -> String {
        format!("{}/{}", self.agent, self.info.name)
    }
    fn matches(&self, term: &str) -> bool {
        match term.split_once('=') {
            Some(("host", v)) => self.agent_name.contains(v),
            Some(("state", v)) => self.info.active_state == v || self.info.sub_state == v,
            _ => {
                self.info.name.contains(term)
                    || self.info.description.contains(term)
                    || self.agent_name.contains(term)
                    || self.info.active_state == term
                    || self.info.sub_state == term
                    || self.info.unit_file_state == term
            }
        }
    }
    fn troubled(&self) -> bool {
        self.info.failed()
    }
    fn cpu(&self) -> Option<f32> {
        self.stats.as_ref().and_then(|s| s.cpu_pct)
    }
    fn mem(&self) -> Option<u64> {
        self.stats.as_ref().and_then(|s| s.memory_bytes)
    }
    fn mem_pct(&self) -> Option<f32> {
        None
    }
}

/// Orders two rows by `sort`; ties by name, then host, so the order is stable between answers.
fn compare<R: WorkRow>(a: &R, b: &R, sort: &str) -> Ordering {
    // Largest first; unmeasured (stopped) last.
    let desc = |x: Option<f64>, y: Option<f64>| y.unwrap_or(-1.0).total_cmp(&x.unwrap_or(-1.0));
    let first = match sort {
        "trouble" => b.troubled().cmp(&a.troubled()),
        "cpu" => desc(a.cpu().map(f64::from), b.cpu().map(f64::from)),
        "mem" => desc(a.mem().map(|m| m as f64), b.mem().map(|m| m as f64)),
        "host" => a.agent_name().cmp(b.agent_name()),
        _ => Ordering::Equal,
    };
    first
        .then_with(|| a.name().cmp(b.name()))
        .then_with(|| a.agent_name().cmp(b.agent_name()))
}

/// CPU and memory of one container or unit over its last [`TREND_POINTS`] answers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trend {
    /// CPU percent of one core, oldest first.
    pub cpu: VecDeque<f32>,
    /// Memory: percent of the limit for containers, bytes for units (scaled when drawn).
    pub mem: VecDeque<f32>,
}

impl Trend {
    fn push(&mut self, cpu: Option<f32>, mem: Option<f32>) {
        for (series, v) in [(&mut self.cpu, cpu), (&mut self.mem, mem)] {
            if let Some(v) = v {
                if series.len() == TREND_POINTS {
                    series.pop_front();
                }
                series.push_back(v);
            }
        }
    }
}

/// One list of containers or units: the hub's last answer, filtered and sorted for display.
#[derive(Clone, Debug)]
pub struct WorkList<R> {
    /// Whose: one agent, or `None` for the whole fleet.
    pub scope: Option<IdentityId>,
    /// The last answer.
    pub rows: Fetched<Vec<R>>,
    /// Indices into the rows in display order.
    visible: Vec<usize>,
    /// Index into the visible rows.
    pub selected: usize,
    /// Index into the kind's sorts.
    pub sort: usize,
    /// Filter words, as typed after `/`.
    pub filter: String,
    /// A query is out: the next refresh waits for it, so a slow hub gets one query at a time.
    pub in_flight: bool,
    /// Trends by [`WorkRow::key`], kept for rows of the last answer only.
    pub trends: HashMap<String, Trend>,
}

impl<R: WorkRow> WorkList<R> {
    /// An empty list of `scope`, loading.
    pub fn new(scope: Option<IdentityId>) -> Self {
        Self {
            scope,
            rows: Fetched::Loading,
            visible: Vec::new(),
            selected: 0,
            sort: 0,
            filter: String::new(),
            in_flight: false,
            trends: HashMap::new(),
        }
    }

    /// The selector of the query: the agent's id, or `all`.
    pub fn selector(&self) -> String {
        self.scope
            .as_ref()
            .map_or_else(|| "all".to_string(), ToString::to_string)
    }

    /// Takes an answer: keeps the selected row selected, extends the trends.
    pub fn set_rows(&mut self, result: Result<Vec<R>, String>, sorts: &[&str]) {
        self.in_flight = false;
        let selected_key = self.selected_row().map(WorkRow::key);
        match result {
            Ok(rows) => {
                let mut trends = std::mem::take(&mut self.trends);
                for r in &rows {
                    let mem = r.mem_pct().or_else(|| r.mem().map(|m| m as f32));
                    let mut t = trends.remove(&r.key()).unwrap_or_default();
                    t.push(r.cpu(), mem);
                    self.trends.insert(r.key(), t);
                }
                self.rows = Fetched::Ready(rows);
            }
            // The reason replaces the rows: stale rows would look live.
            Err(e) => self.rows = Fetched::Failed(e),
        }
        self.refresh(sorts);
        let pos = selected_key.and_then(|key| self.visible_rows().position(|r| r.key() == key));
        if let Some(pos) = pos {
            self.selected = pos;
        }
        self.clamp();
    }

    /// Recomputes the display order after the rows, the filter or the sort changed.
    pub fn refresh(&mut self, sorts: &[&str]) {
        let Fetched::Ready(rows) = &self.rows else {
            self.visible.clear();
            return;
        };
        let words: Vec<&str> = self.filter.split_whitespace().collect();
        let mut visible: Vec<usize> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| words.iter().all(|w| r.matches(w)))
            .map(|(i, _)| i)
            .collect();
        let sort = sorts[self.sort % sorts.len()];
        visible.sort_by(|&a, &b| compare(&rows[a], &rows[b], sort));
        self.visible = visible;
        self.clamp();
    }

    fn clamp(&mut self) {
        self.selected = self.selected.min(self.visible.len().saturating_sub(1));
    }

    /// Rows in display order after the filter.
    pub fn visible_rows(&self) -> impl Iterator<Item = &R> {
        let rows: &[R] = match &self.rows {
            Fetched::Ready(r) => r,
            _ => &[],
        };
        self.visible.iter().filter_map(move |&i| rows.get(i))
    }

    /// Number of rows shown.
    pub fn visible_len(&self) -> usize {
        self.visible.len()
    }

    /// The row under the cursor.
    pub fn selected_row(&self) -> Option<&R> {
        self.visible_rows().nth(self.selected)
    }

    /// Moves the cursor by `delta` rows, clamped.
    pub fn move_by(&mut self, delta: i32) {
        let max = self.visible.len().saturating_sub(1) as i64;
        self.selected = (self.selected as i64 + i64::from(delta)).clamp(0, max) as usize;
    }

    /// Rows counted as trouble, of those received.
    pub fn troubled(&self) -> usize {
        match &self.rows {
            Fetched::Ready(r) => r.iter().filter(|r| r.troubled()).count(),
            _ => 0,
        }
    }
}

/// Whether a unit matches one of the policy's `services_allow` globs (`*` any run, `?` one
/// character); an empty list allows every unit. The agent checks again: this only hides keys.
pub fn unit_allowed(policy: &WorkloadPolicy, unit: &str) -> bool {
    policy.services_allow.is_empty() || policy.services_allow.iter().any(|g| glob(g, unit))
}

fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative wildcard match with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether the agent's policy lets the hub act on this kind at all.
pub fn manages(counts: Option<&WorkloadCounts>, kind: WorkKind) -> bool {
    counts.is_some_and(|c| match kind {
        WorkKind::Containers => c.policy.containers == Access::Manage,
        WorkKind::Services => c.policy.services == Access::Manage,
    })
}

/// An action on a workload, from its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkAction {
    /// On the selected container.
    Container(ContainerAction),
    /// On the selected unit.
    Service(ServiceAction),
}

impl WorkAction {
    /// The verb as typed.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Container(a) => a.as_str(),
            Self::Service(a) => a.as_str(),
        }
    }

    /// Loses state or interrupts service: asks first.
    pub fn destructive(self) -> bool {
        match self {
            Self::Container(a) => a.destructive(),
            Self::Service(a) => a.destructive(),
        }
    }

    /// Which kind of workload it acts on.
    pub fn kind(self) -> WorkKind {
        match self {
            Self::Container(_) => WorkKind::Containers,
            Self::Service(_) => WorkKind::Services,
        }
    }
}

/// A destructive action waiting for `y`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// The question, in words (`stop web on db-1? y/N`), names already escaped.
    pub question: String,
    /// What `y` runs.
    pub request: flotilla_wire::exec::ExecRequest,
    /// The command as the output view titles it.
    pub label: String,
}

/// Where a logs pane stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogState {
    /// Asked, no answer yet.
    Opening,
    /// Lines flow; the source resolved to this (container id, unit name).
    Streaming(String),
    /// Nothing more will come (not following, or the source went away).
    Ended,
    /// Refused or broken, in words.
    Failed(String),
}

/// One log line as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Standard error (or a journal entry of priority ≤ 3).
    pub stderr: bool,
    /// The text, without its newline.
    pub text: String,
}

/// The logs pane: one container's or unit's log, followed.
#[derive(Clone, Debug)]
pub struct LogView {
    /// The console's number for the stream (answers of a closed pane are dropped).
    pub id: u64,
    /// The agent.
    pub agent: IdentityId,
    /// Its name.
    pub agent_name: String,
    /// What is read.
    pub source: LogSource,
    /// Where the stream stands.
    pub state: LogState,
    /// The last [`LOG_LINES`] lines, oldest first.
    pub lines: VecDeque<LogLine>,
    /// Lines dropped off the front since the pane opened.
    pub dropped: u64,
    partial: [Vec<u8>; 2],
    /// Paused: the screen stays where it is while lines keep arriving below.
    pub paused: bool,
    /// Lines scrolled up from the newest (0 follows).
    pub scroll: usize,
    /// Only lines containing this are shown (`/`), the match highlighted.
    pub search: String,
}

impl LogView {
    /// A pane for `source` on `agent`, waiting for the stream.
    pub fn new(id: u64, agent: IdentityId, agent_name: String, source: LogSource) -> Self {
        Self {
            id,
            agent,
            agent_name,
            source,
            state: LogState::Opening,
            lines: VecDeque::new(),
            dropped: 0,
            partial: [Vec::new(), Vec::new()],
            paused: false,
            scroll: 0,
            search: String::new(),
        }
    }

    /// The container's or unit's name as asked.
    pub fn what(&self) -> &str {
        match &self.source {
            LogSource::Container(n) | LogSource::Unit(n) => n,
        }
    }

    /// Applies one frame of the stream.
    pub fn apply(&mut self, frame: LogFrame) {
        match frame {
            LogFrame::Started { resolved } => self.state = LogState::Streaming(resolved),
            LogFrame::Data { stream, data, .. } => {
                let slot = usize::from(stream == OutputStream::Stderr);
                let mut rest = data.0.as_slice();
                while let Some(nl) = memchr::memchr(b'\n', rest) {
                    let mut line = std::mem::take(&mut self.partial[slot]);
                    line.extend_from_slice(&rest[..nl]);
                    self.push(slot == 1, &line);
                    rest = &rest[nl + 1..];
                }
                self.partial[slot].extend_from_slice(rest);
                while self.partial[slot].len() > LOG_LINE_CHARS {
                    let tail = self.partial[slot].split_off(LOG_LINE_CHARS);
                    let head = std::mem::replace(&mut self.partial[slot], tail);
                    self.push(slot == 1, &head);
                }
            }
            LogFrame::End => {
                self.flush();
                self.state = LogState::Ended;
            }
            LogFrame::Error(r) => {
                self.flush();
                self.state = LogState::Failed(r.message);
            }
        }
    }

    /// The stream broke before its end.
    pub fn fail(&mut self, reason: String) {
        self.flush();
        if !matches!(self.state, LogState::Ended | LogState::Failed(_)) {
            self.state = LogState::Failed(reason);
        }
    }

    fn flush(&mut self) {
        for slot in 0..2 {
            if !self.partial[slot].is_empty() {
                let line = std::mem::take(&mut self.partial[slot]);
                self.push(slot == 1, &line);
            }
        }
    }

    fn push(&mut self, stderr: bool, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        // Shown escaped, tabs as spaces, as the output view does: a container chooses these bytes.
        let text = crate::util::escaped_controls(&text.trim_end_matches('\r').replace('\t', " "))
            .into_owned();
        if self.lines.len() == LOG_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        let shown = self.search.is_empty() || text.contains(&self.search);
        self.lines.push_back(LogLine { stderr, text });
        // Paused or scrolled back: the same lines stay on screen while new ones arrive below.
        if (self.paused || self.scroll > 0) && shown {
            self.scroll += 1;
        }
    }

    /// The lines the search shows, oldest first.
    pub fn shown(&self) -> impl DoubleEndedIterator<Item = &LogLine> {
        self.lines
            .iter()
            .filter(|l| self.search.is_empty() || l.text.contains(&self.search))
    }

    /// Scrolls by `delta` rows (negative: back in time), clamped; back at the newest line it
    /// follows again unless paused.
    pub fn scroll_by(&mut self, delta: i32) {
        let max = self.shown().count() as i64;
        self.scroll = (self.scroll as i64 - i64::from(delta)).clamp(0, max) as usize;
    }
}

/// Short words for a container's state as the lists show it: `running`, `unhealthy`,
/// `restarting`, `exited`…; health wins over a plain `running`.
pub fn container_status(state: ContainerState, health: Health) -> &'static str {
    match (state, health) {
        (ContainerState::Running, Health::Unhealthy) => "unhealthy",
        (ContainerState::Running, Health::Starting) => "starting",
        (s, _) => s.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_globs_match_whole_unit_names() {
        let policy = WorkloadPolicy {
            services_allow: vec!["nginx*.service".into(), "app@?.service".into()],
            ..WorkloadPolicy::default()
        };
        assert!(unit_allowed(&policy, "nginx.service"));
        assert!(unit_allowed(&policy, "nginx-edge.service"));
        assert!(unit_allowed(&policy, "app@1.service"));
        assert!(!unit_allowed(&policy, "app@12.service"));
        assert!(!unit_allowed(&policy, "sshd.service"));
        assert!(!unit_allowed(&policy, "nginx.socket"));
        assert!(unit_allowed(&WorkloadPolicy::default(), "sshd.service"));
    }

    #[test]
    fn a_log_pane_splits_lines_keeps_partials_per_stream_and_stays_put_while_paused() {
        let mut v = LogView::new(
            1,
            IdentityId::from_random(flotilla_wire::Role::Agent, [1; 8]),
            "db-1".into(),
            LogSource::Container("web".into()),
        );
        let data = |s: &str, err: bool| LogFrame::Data {
            stream: if err {
                OutputStream::Stderr
            } else {
                OutputStream::Stdout
            },
            at_ms: None,
            data: flotilla_wire::Chunk(s.as_bytes().to_vec()),
        };
        v.apply(LogFrame::Started {
            resolved: "abc".into(),
        });
        v.apply(data("one\ntw", false));
        v.apply(data("oops\n", true));
        v.apply(data("o\r\n", false));
        let texts: Vec<_> = v
            .lines
            .iter()
            .map(|l| (l.stderr, l.text.as_str()))
            .collect();
        assert_eq!(texts, [(false, "one"), (true, "oops"), (false, "two")]);
        v.paused = true;
        v.apply(data("three\nfour\n", false));
        assert_eq!(v.scroll, 2, "paused: the screen keeps its lines");
        v.search = "o".into();
        assert_eq!(v.shown().count(), 4, "one, oops, two, four");
        v.apply(data("tail without newline", false));
        v.apply(LogFrame::End);
        assert_eq!(v.state, LogState::Ended);
        assert_eq!(
            v.lines.back().map(|l| l.text.as_str()),
            Some("tail without newline")
        );
    }

    #[test]
    fn a_log_pane_keeps_its_last_lines_only() {
        let mut v = LogView::new(
            1,
            IdentityId::from_random(flotilla_wire::Role::Agent, [1; 8]),
            "db-1".into(),
            LogSource::Unit("nginx.service".into()),
        );
        let text: String = (0..LOG_LINES + 10).map(|i| format!("{i}\n")).collect();
        v.apply(LogFrame::Data {
            stream: OutputStream::Stdout,
            at_ms: None,
            data: flotilla_wire::Chunk(text.into_bytes()),
        });
        assert_eq!(v.lines.len(), LOG_LINES);
        assert_eq!(v.dropped, 10);
        assert_eq!(v.lines.front().map(|l| l.text.as_str()), Some("10"));
    }
}
