//! Console state and how events change it. Rendering reads `&App` only (see `ui`); network work is
//! queued as [`Command`]s that the console's network task picks up (see [`App::take_commands`]).

pub mod alerts;
pub mod host;
pub mod output;
pub mod sessions;
pub mod shell;
pub mod tree;
#[cfg(test)]
pub(crate) mod workload_tests;
pub mod workloads;

use crate::action::Action;
use crate::command::Command;
use crate::event::{CopyUpdate, Event, ExecUpdate, LogUpdate};
use crate::files::Place;
use crate::keymap;
use alerts::AlertBoard;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use flotilla_wire::exec::{AgentResult, AuditEntry, ExecRequest, JobInfo};
use flotilla_wire::files::EntryKind;
use flotilla_wire::msg::{AgentInfo, FleetEvent, MetricsSeries, Status};
use flotilla_wire::workloads::{
    ContainerRow, LogSource, LogsRequest, UnitRow, WorkloadCounts, valid_workload_name,
};
use flotilla_wire::{IdentityId, Role};
use output::ExecRun;
use std::collections::{HashMap, HashSet, VecDeque};
use tree::{FolderTree, Transfer, TransferState};
use workloads::{Confirm, ContainerHistory, LogView, WorkAction, WorkKind, WorkList};

/// CPU points kept per agent for the fleet sparkline: a minute at 1 s, or several at 5 s.
pub const SPARK_POINTS: usize = 12;

/// Sort columns, in the order `s` cycles through them.
/// `<` and `>` step through them both ways; every column with a value to order by is here.
pub const SORTS: [&str; 7] = ["name", "cpu", "mem", "disk", "last-seen", "net", "uptime"];

/// Commands typed at the `:` prompt that Up and Down recall.
pub const HISTORY_LEN: usize = 100;
/// Jobs and audit entries fetched per refresh.
pub const RECORDS_LIMIT: u32 = 200;
/// Open jobs, audit and files views refresh this often, in ticks (seconds).
const REFRESH_TICKS: u64 = 5;
/// Views remembered for `Esc`.
const BACK_DEPTH: usize = 8;
/// Open containers and services lists are asked for again this often, in ticks (seconds): live
/// enough for stats, and a list waits for its last answer before asking again.
const WORKLOAD_REFRESH_TICKS: u64 = 2;

/// The hub connection as the header shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conn {
    /// First dial in progress.
    Connecting,
    /// Attached.
    Connected {
        /// Our name.
        name: String,
        /// Our role.
        role: Role,
        /// hubd version.
        hub_version: String,
    },
    /// Lost; retrying.
    Reconnecting(String),
}

/// Which screen is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum View {
    /// The agents table.
    Fleet,
    /// One agent.
    Agent(IdentityId),
    /// Output of the last command run from the console.
    Output,
    /// One agent's shared folder (see [`App::tree`]).
    Files,
    /// Transfers started from the console.
    Transfers,
    /// Past jobs, and one job's results.
    Jobs,
    /// The audit log.
    Audit,
    /// Containers or units of one agent (a tab of its view) or of the whole fleet (`agent: None`).
    Workloads {
        /// Whose: one agent, or the fleet.
        agent: Option<IdentityId>,
        /// Containers or units.
        kind: WorkKind,
    },
    /// A container's or unit's log (see [`App::logs`]).
    Logs,
    /// The fleet's alerts: firing, pending, silenced, recently resolved (see [`App::alerts`]).
    Alerts,
    /// Recorded shell sessions (see [`App::sessions`]).
    Sessions,
}

impl View {
    /// Title in the header's view list.
    pub fn title(&self) -> &'static str {
        match self {
            Self::Fleet => "fleet",
            Self::Agent(_) => "agent",
            Self::Output => "output",
            Self::Files => "files",
            Self::Transfers => "transfers",
            Self::Jobs => "jobs",
            Self::Audit => "audit",
            Self::Workloads { kind, .. } => kind.title(),
            Self::Logs => "logs",
            Self::Alerts => "alerts",
            Self::Sessions => "sessions",
        }
    }
}

/// What the one-line prompt at the bottom is asking for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptKind {
    /// A command to run on `selector`.
    Exec {
        /// Agents, as sent to the hub.
        selector: String,
        /// Who, in words (`web-1`, `3 marked agents`).
        who: String,
    },
    /// The destination path of a copy to `agent`.
    CopyTo {
        /// Source agent id.
        src_agent: String,
        /// Source agent name.
        src_name: String,
        /// Source path.
        src_path: String,
        /// Copy a directory tree.
        recursive: bool,
        /// Destination agent id.
        agent: String,
        /// Destination agent name.
        name: String,
    },
    /// How long to silence an alert's rule on its agent, and why (`2h deploying db`).
    Silence {
        /// Rule name.
        rule: String,
        /// Agent id, the silence's selector.
        agent: String,
        /// Who, in words (the agent's name).
        who: String,
    },
}

/// The line being typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// What for.
    pub kind: PromptKind,
    /// The text so far.
    pub text: String,
    /// Position in the history while recalling (Up/Down).
    recall: Option<usize>,
}

/// A list to pick a copy's destination agent from, filtered as you type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picker {
    /// Source agent id.
    pub src_agent: String,
    /// Source agent name.
    pub src_name: String,
    /// Source path.
    pub src_path: String,
    /// Copy a directory tree.
    pub recursive: bool,
    /// Filter text.
    pub filter: String,
    /// Index into [`Picker::items`] after filtering.
    pub selected: usize,
    /// Online agents other than the source: id and name, by name.
    pub agents: Vec<(IdentityId, String)>,
}

impl Picker {
    /// Agents matching the filter.
    pub fn items(&self) -> impl Iterator<Item = &(IdentityId, String)> {
        self.agents
            .iter()
            .filter(|(_, name)| name.contains(self.filter.trim()))
    }
}

/// A list fetched from the hub: not yet, the rows, or why not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fetched<T> {
    /// Asked for, no answer yet.
    #[default]
    Loading,
    /// The answer.
    Ready(T),
    /// Why there is none (a viewer may not read jobs, say).
    Failed(String),
}

/// Everything the console shows.
pub struct App {
    /// Hub connection.
    pub conn: Conn,
    /// Every agent by id.
    pub agents: HashMap<IdentityId, AgentInfo>,
    /// Recent CPU per agent, oldest first.
    pub cpu_history: HashMap<IdentityId, VecDeque<f32>>,
    /// Filter text.
    pub filter: String,
    /// Whether keys go to the filter prompt.
    pub filtering: bool,
    /// Index into [`App::visible`].
    pub selected: usize,
    /// Index into [`SORTS`].
    pub sort: usize,
    /// Marked agents.
    pub marks: HashSet<IdentityId>,
    /// Current screen.
    pub view: View,
    /// Help overlay shown.
    pub help: bool,
    /// Set when the user quits.
    pub quit: bool,
    /// Wall clock of the last tick, ms (relative times are computed against it, so renders are
    /// deterministic in tests).
    pub now_ms: u64,
    /// Full detail of the agent in view, polled while its view is open.
    pub detail: Option<AgentInfo>,
    /// History of the agent in view.
    pub history: Option<MetricsSeries>,
    /// The agent view's chart span and the minute its top tables show.
    pub host_time: host::HostTime,
    /// The prompt being typed, if any.
    pub prompt: Option<Prompt>,
    /// The destination picker of a copy, if open.
    pub picker: Option<Picker>,
    /// Commands run from the prompt, oldest first.
    pub exec_history: Vec<String>,
    /// Commands run since the console last looked, for its history file (a command typed with a
    /// leading space is left out, as bash's `ignorespace` does).
    remembered: Vec<String>,
    /// The last command run from the console.
    pub run: Option<ExecRun>,
    /// Output view: every agent's lines together (true) or one agent at a time.
    pub merged: bool,
    /// Output view: the agent shown when not merged.
    pub pane: usize,
    /// Output view: lines scrolled up from the newest (0 follows the output).
    pub scroll: usize,
    /// The shared folder in the files view.
    pub tree: Option<FolderTree>,
    /// Transfers started here, oldest first.
    pub transfers: Vec<Transfer>,
    /// Index into [`App::transfers`].
    pub transfer_selected: usize,
    /// The newest jobs.
    pub jobs: Fetched<Vec<JobInfo>>,
    /// Index into the jobs.
    pub job_selected: usize,
    /// The job opened from the jobs view, with its results.
    pub job_detail: Option<Fetched<(JobInfo, Vec<AgentResult>)>>,
    /// Job detail: lines scrolled down from the top.
    pub detail_scroll: usize,
    /// The newest audit entries, oldest first.
    pub audit: Fetched<Vec<AuditEntry>>,
    /// Audit view: entries scrolled up from the newest.
    pub audit_scroll: usize,
    /// A one-line message for the footer (a refused key, a bad command line).
    pub notice: Option<String>,
    /// Workload counts and policy per agent, from the hub's fleet events.
    pub workload_counts: HashMap<IdentityId, WorkloadCounts>,
    /// GPUs and failed disks per agent that has any, from the hub's fleet events.
    pub host_summaries: HashMap<IdentityId, flotilla_wire::host::HostSummary>,
    /// The containers list (an agent's tab or the fleet's).
    pub containers: WorkList<ContainerRow>,
    /// The units list (an agent's tab or the fleet's).
    pub services: WorkList<UnitRow>,
    /// The logs pane, while open.
    pub logs: Option<LogView>,
    /// The selected container's last hour, shown under the list where there is room.
    pub container_history: Option<ContainerHistory>,
    /// A destructive action waiting for `y`.
    pub confirm: Option<Confirm>,
    /// The fleet's alerts, for the header, the fleet view's markers and the alerts view.
    pub alerts: AlertBoard,
    /// A shell asked for with `s` or `!`, for the terminal loop to run.
    pub shell: Option<shell::ShellTarget>,
    /// The sessions view's list.
    pub sessions: sessions::SessionsList,
    /// A replay or join asked for in the sessions view, for the terminal loop to run.
    pub session_play: Option<sessions::SessionPlay>,
    /// The run started by an action key: its end is reported in the footer.
    action_run: Option<u64>,
    next_logs: u64,
    /// Ids in display order, recomputed when agents, filter or sort change.
    visible: Vec<IdentityId>,
    /// Metrics changed the order of a metric sort; re-sorted once before the next frame rather than
    /// once per event (20,000 agents send 4,000 samples a second).
    order_stale: bool,
    /// Views to return to with `Esc`.
    back: Vec<View>,
    /// Commands for the network task.
    commands: Vec<Command>,
    next_run: u64,
    next_transfer: u64,
    ticks: u64,
}

impl Default for App {
    fn default() -> Self {
        Self::new(0)
    }
}

impl App {
    /// An empty console at time `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            conn: Conn::Connecting,
            agents: HashMap::new(),
            cpu_history: HashMap::new(),
            filter: String::new(),
            filtering: false,
            selected: 0,
            sort: 0,
            marks: HashSet::new(),
            view: View::Fleet,
            help: false,
            quit: false,
            now_ms,
            detail: None,
            history: None,
            host_time: host::HostTime::default(),
            prompt: None,
            picker: None,
            exec_history: Vec::new(),
            remembered: Vec::new(),
            run: None,
            merged: true,
            pane: 0,
            scroll: 0,
            tree: None,
            transfers: Vec::new(),
            transfer_selected: 0,
            jobs: Fetched::Loading,
            job_selected: 0,
            job_detail: None,
            detail_scroll: 0,
            audit: Fetched::Loading,
            audit_scroll: 0,
            notice: None,
            workload_counts: HashMap::new(),
            host_summaries: HashMap::new(),
            containers: WorkList::new(None),
            services: WorkList::new(None),
            logs: None,
            container_history: None,
            confirm: None,
            alerts: AlertBoard::default(),
            shell: None,
            sessions: sessions::SessionsList::default(),
            session_play: None,
            action_run: None,
            next_logs: 1,
            visible: Vec::new(),
            order_stale: false,
            back: Vec::new(),
            commands: Vec::new(),
            next_run: 1,
            next_transfer: 1,
            ticks: 0,
        }
    }

    /// Agents in display order after the filter.
    pub fn visible(&self) -> impl Iterator<Item = &AgentInfo> {
        self.visible.iter().filter_map(|id| self.agents.get(id))
    }

    /// Number of agents shown.
    pub fn visible_len(&self) -> usize {
        self.visible.len()
    }

    /// The selected agent.
    pub fn selected_agent(&self) -> Option<&AgentInfo> {
        self.visible
            .get(self.selected)
            .and_then(|id| self.agents.get(id))
    }

    /// Our role, once attached.
    pub fn role(&self) -> Option<Role> {
        match &self.conn {
            Conn::Connected { role, .. } => Some(*role),
            _ => None,
        }
    }

    /// Whether we may run commands and copy files: operators and admins; viewers only look.
    pub fn can_act(&self) -> bool {
        matches!(self.role(), Some(Role::Operator | Role::Admin))
    }

    /// Brings derived state up to date before a frame is drawn.
    pub fn prepare(&mut self) {
        if self.order_stale {
            self.refresh_visible();
        }
    }

    /// Commands queued since the last call, for the network task.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Commands to write to the history file, oldest first.
    pub fn take_remembered(&mut self) -> Vec<String> {
        std::mem::take(&mut self.remembered)
    }

    /// The agent whose view is open: the network task watches it (1 s samples, detail, history).
    pub fn focused(&self) -> Option<IdentityId> {
        match &self.view {
            View::Agent(id)
            | View::Workloads {
                agent: Some(id), ..
            } => Some(id.clone()),
            _ => None,
        }
    }

    /// What the keys of the current view may do for us: acting at all (operators and admins), and
    /// acting on the selected container or unit (its agent's policy manages that kind, and a unit
    /// is in its allowlist). The agent decides in the end; this hides what it would refuse.
    pub fn grants(&self) -> keymap::Grants {
        let act = self.can_act();
        let mut grants = keymap::Grants {
            act,
            admin: self.can_join(),
            ..keymap::Grants::default()
        };
        if let View::Workloads { kind, .. } = &self.view
            && act
        {
            match kind {
                WorkKind::Containers => {
                    grants.containers = self.containers.selected_row().is_some_and(|r| {
                        workloads::manages(self.workload_counts.get(&r.agent), *kind)
                    });
                }
                WorkKind::Services => {
                    grants.services = self.services.selected_row().is_some_and(|r| {
                        let counts = self.workload_counts.get(&r.agent);
                        workloads::manages(counts, *kind)
                            && counts
                                .is_some_and(|c| workloads::unit_allowed(&c.policy, &r.info.name))
                    });
                }
            }
        }
        grants
    }

    /// Online and total agent counts.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.agents
                .values()
                .filter(|a| a.status == Status::Online)
                .count(),
            self.agents.len(),
        )
    }

    fn matches(&self, a: &AgentInfo) -> bool {
        let f = self.filter.trim();
        if f.is_empty() {
            return true;
        }
        f.split_whitespace().all(|term| match term.split_once('=') {
            Some((k, v)) => a.labels.iter().any(|(lk, lv)| lk == k && lv.contains(v)),
            None => {
                a.name.contains(term)
                    || a.id.as_str().starts_with(term)
                    || a.labels.iter().any(|(_, v)| v == term)
            }
        })
    }

    fn refresh_visible(&mut self) {
        self.order_stale = false;
        let selected_id = self.visible.get(self.selected).cloned();
        let mut list: Vec<&AgentInfo> = self.agents.values().filter(|a| self.matches(a)).collect();
        crate::format::sort_agents(&mut list, SORTS[self.sort]);
        let visible = list.into_iter().map(|a| a.id.clone()).collect();
        self.visible = visible;
        if let Some(id) = selected_id
            && let Some(pos) = self.visible.iter().position(|v| *v == id)
        {
            self.selected = pos;
        }
        self.selected = self.selected.min(self.visible.len().saturating_sub(1));
    }

    fn record_cpu(&mut self, id: &IdentityId, cpu: f32) {
        let h = self.cpu_history.entry(id.clone()).or_default();
        if h.len() == SPARK_POINTS {
            h.pop_front();
        }
        h.push_back(cpu);
    }

    fn name_of(&self, id: &IdentityId) -> String {
        self.agents
            .get(id)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// Applies one event. Returns whether the screen needs redrawing.
    pub fn update(&mut self, event: Event) -> bool {
        match event {
            Event::Key(key) => {
                self.handle_key(key);
                true
            }
            Event::Resize => true,
            Event::Tick => {
                self.now_ms = crate::util::now_ms();
                self.ticks += 1;
                let every = if matches!(self.view, View::Workloads { .. }) {
                    WORKLOAD_REFRESH_TICKS
                } else {
                    REFRESH_TICKS
                };
                if self.ticks.is_multiple_of(every) {
                    self.refresh_view();
                }
                self.ask_chart();
                true
            }
            Event::Connected(w) => {
                // Queries of the last session ended unanswered with it.
                self.containers.in_flight = false;
                self.services.in_flight = false;
                self.conn = Conn::Connected {
                    name: w.name,
                    role: w.role,
                    hub_version: w.hub_version,
                };
                // The session asks for the alerts itself (see `console::session`).
                self.alerts.in_flight = true;
                true
            }
            Event::Disconnected(reason) => {
                self.conn = Conn::Reconnecting(reason);
                for a in self.agents.values_mut() {
                    if a.status == Status::Online {
                        a.status = Status::Offline;
                    }
                }
                true
            }
            Event::Fleet(ev) => self.apply_fleet(*ev),
            Event::Detail(info) => {
                let fresh = self.focused().as_ref() == Some(&info.id);
                if fresh {
                    self.detail = Some(*info);
                }
                fresh
            }
            Event::HostTop { from_ms, result } => self.apply_host_top(from_ms, result),
            Event::HostView(view) => self.apply_host_view(*view),
            Event::HostSeries { agent, answer } => self.apply_host_series(&agent, *answer),
            Event::History(series) => {
                let fresh = self.focused().as_ref() == Some(&series.id);
                if fresh {
                    self.history = Some(*series);
                }
                fresh
            }
            Event::Exec { run, update } => {
                let Some(current) = self.run.as_mut().filter(|r| r.run == run) else {
                    return false;
                };
                match update {
                    ExecUpdate::Event(ev) => current.apply(*ev),
                    ExecUpdate::Failed(reason) => current.fail(reason),
                }
                if self.action_run == Some(run) && !current.running() {
                    self.action_run = None;
                    self.notice = Some(action_outcome(current));
                    // The list shows the action's effect without waiting for the next refresh.
                    self.refresh_view();
                    return true;
                }
                self.view == View::Output
            }
            Event::Containers { selector, result } => {
                if self.containers.selector() != selector {
                    return false;
                }
                self.containers
                    .set_rows(result, WorkKind::Containers.sorts());
                let shown = matches!(
                    self.view,
                    View::Workloads {
                        kind: WorkKind::Containers,
                        ..
                    }
                );
                if shown {
                    self.ask_history();
                }
                shown
            }
            Event::Services { selector, result } => {
                if self.services.selector() != selector {
                    return false;
                }
                self.services.set_rows(result, WorkKind::Services.sorts());
                matches!(
                    self.view,
                    View::Workloads {
                        kind: WorkKind::Services,
                        ..
                    }
                )
            }
            Event::ContainerHistory {
                agent,
                container,
                result,
            } => {
                let Some(h) = self
                    .container_history
                    .as_mut()
                    .filter(|h| h.agent == agent && h.container == container)
                else {
                    return false;
                };
                h.minutes = fetched(result);
                matches!(
                    self.view,
                    View::Workloads {
                        kind: WorkKind::Containers,
                        ..
                    }
                )
            }
            Event::Log { id, update } => {
                let Some(logs) = self.logs.as_mut().filter(|l| l.id == id) else {
                    return false;
                };
                match update {
                    LogUpdate::Frame(frame) => logs.apply(*frame),
                    LogUpdate::Failed(reason) => logs.fail(reason),
                }
                self.view == View::Logs
            }
            Event::Listing { agent, result } => {
                let Some(tree) = self.tree.as_mut().filter(|t| t.agent.as_str() == agent) else {
                    return false;
                };
                match result {
                    Ok(listing) => tree.set_listing(listing.entries, listing.end.truncated),
                    Err(e) => tree.set_error(e),
                }
                self.view == View::Files
            }
            Event::Copy { id, at_ms, update } => {
                let Some(t) = self.transfers.iter_mut().find(|t| t.id == id) else {
                    return false;
                };
                match update {
                    CopyUpdate::Event(ev) => t.apply(&ev, at_ms),
                    CopyUpdate::Finished(result) => t.finish(result),
                }
                self.view == View::Transfers
            }
            Event::Jobs(result) => {
                self.jobs = fetched(result);
                if let Fetched::Ready(jobs) = &self.jobs {
                    self.job_selected = self.job_selected.min(jobs.len().saturating_sub(1));
                }
                self.view == View::Jobs
            }
            Event::Job(result) => {
                if self.job_detail.is_some() {
                    self.job_detail = Some(fetched(result.map(|b| *b)));
                }
                self.view == View::Jobs
            }
            Event::Audit(result) => {
                self.audit = fetched(result);
                self.view == View::Audit
            }
            Event::Alerts(result) => {
                self.alerts.set_list(result);
                true
            }
            Event::AlertDone(result) => {
                match result {
                    Ok((notice, alert)) => {
                        self.notice = Some(notice);
                        match alert {
                            Some(a) => self.alerts.apply(*a),
                            // A silence mutes alerts the hub picks: ask for them as they stand.
                            None => self.ask_alerts(),
                        }
                    }
                    Err(e) => self.notice = Some(e),
                }
                true
            }
            Event::Sessions(result) => self.sessions_listed(result),
        }
    }

    /// Applies a fleet event.
    pub fn apply_fleet(&mut self, ev: FleetEvent) -> bool {
        match ev {
            FleetEvent::Snapshot(list) => {
                // Counts follow the snapshot again, once per agent that has workloads.
                self.workload_counts.clear();
                self.host_summaries.clear();
                self.agents = list.into_iter().map(|a| (a.id.clone(), a)).collect();
                let ids: Vec<(IdentityId, Option<f32>)> = self
                    .agents
                    .values()
                    .map(|a| (a.id.clone(), a.latest.as_ref().map(|s| s.cpu_pct)))
                    .collect();
                for (id, cpu) in ids {
                    if let Some(cpu) = cpu {
                        self.record_cpu(&id, cpu);
                    }
                }
            }
            FleetEvent::SnapshotMore(list) => {
                for a in list {
                    if let Some(cpu) = a.latest.as_ref().map(|s| s.cpu_pct) {
                        self.record_cpu(&a.id, cpu);
                    }
                    self.agents.insert(a.id.clone(), a);
                }
            }
            FleetEvent::Online(a) => {
                self.agents.insert(a.id.clone(), a);
            }
            FleetEvent::Offline { id, at_ms, .. } => {
                if let Some(a) = self.agents.get_mut(&id) {
                    a.status = Status::Offline;
                    a.last_seen_ms = at_ms;
                }
            }
            FleetEvent::Revoked { id } => {
                if let Some(a) = self.agents.get_mut(&id) {
                    a.status = Status::Revoked;
                }
            }
            FleetEvent::Metrics { id, sample } => {
                let cpu = sample.cpu_pct;
                let Some(a) = self.agents.get_mut(&id) else {
                    return false;
                };
                // The subscription's snapshot may already carry this sample: count it once.
                let repeat = a.latest.as_ref().is_some_and(|l| l.at_ms == sample.at_ms);
                a.latest = Some(sample);
                if !repeat {
                    self.record_cpu(&id, cpu);
                }
                // Metrics change values, not order, unless sorted by a metric.
                self.order_stale |= SORTS[self.sort] != "name";
                return true;
            }
            FleetEvent::Workloads { id, counts } => {
                self.workload_counts.insert(id, counts);
                return matches!(
                    self.view,
                    View::Fleet | View::Agent(_) | View::Workloads { .. }
                );
            }
            FleetEvent::Host { id, summary } => {
                if summary.is_empty() {
                    self.host_summaries.remove(&id);
                } else {
                    self.host_summaries.insert(id, summary);
                }
                return matches!(self.view, View::Fleet);
            }
            FleetEvent::Lagged { .. } => {
                // Alert pushes may be among the missed: the header's count is asked for again.
                self.ask_alerts();
                return false;
            }
            FleetEvent::Alert(alert) => {
                // The header's count and the fleet's markers may change, whatever the view.
                self.alerts.apply(alert);
                return true;
            }
        }
        self.refresh_visible();
        true
    }

    fn handle_key(&mut self, key: KeyEvent) {
        self.notice = None;
        if self.help {
            self.help = false;
            return;
        }
        if self.picker.is_some() {
            self.picker_key(key);
            return;
        }
        if let Some(confirm) = self.confirm.take() {
            if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                self.launch(confirm.label, confirm.request);
            } else {
                self.notice = Some(format!("not run: {}", confirm.label));
            }
            return;
        }
        if self.prompt.is_some() {
            self.prompt_key(key);
            return;
        }
        if self.filtering {
            let Some(filter) = self.filter_text() else {
                self.filtering = false;
                return;
            };
            let done = match key.code {
                KeyCode::Esc => {
                    filter.clear();
                    true
                }
                KeyCode::Enter => true,
                KeyCode::Backspace => {
                    filter.pop();
                    false
                }
                KeyCode::Char(c) => {
                    filter.push(c);
                    false
                }
                _ => return,
            };
            if done {
                self.filtering = false;
            }
            self.filter_changed();
            return;
        }
        if let Some(action) = keymap::action(&self.view, key, self.grants()) {
            self.apply(action);
        }
    }

    /// The filter text of the current view: agents, containers, units, or the logs search.
    fn filter_text(&mut self) -> Option<&mut String> {
        match &self.view {
            View::Fleet => Some(&mut self.filter),
            View::Workloads {
                kind: WorkKind::Containers,
                ..
            } => Some(&mut self.containers.filter),
            View::Workloads {
                kind: WorkKind::Services,
                ..
            } => Some(&mut self.services.filter),
            View::Logs => self.logs.as_mut().map(|l| &mut l.search),
            _ => None,
        }
    }

    fn filter_changed(&mut self) {
        match &self.view {
            View::Fleet => {
                self.selected = 0;
                self.refresh_visible();
            }
            View::Workloads {
                kind: WorkKind::Containers,
                ..
            } => {
                self.containers.selected = 0;
                self.containers.refresh(WorkKind::Containers.sorts());
            }
            View::Workloads {
                kind: WorkKind::Services,
                ..
            } => {
                self.services.selected = 0;
                self.services.refresh(WorkKind::Services.sorts());
            }
            View::Logs => {
                if let Some(l) = self.logs.as_mut() {
                    l.scroll = 0;
                }
            }
            _ => {}
        }
    }

    fn prompt_key(&mut self, key: KeyEvent) {
        let Some(prompt) = self.prompt.as_mut() else {
            return;
        };
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Esc => self.prompt = None,
            KeyCode::Char('c') if ctrl => self.prompt = None,
            KeyCode::Char('u') if ctrl => prompt.text.clear(),
            KeyCode::Enter => {
                if let Some(prompt) = self.prompt.take() {
                    self.submit(prompt);
                }
            }
            KeyCode::Backspace => {
                prompt.text.pop();
            }
            KeyCode::Up if matches!(prompt.kind, PromptKind::Exec { .. }) => {
                let pos = match prompt.recall {
                    Some(p) => p.saturating_sub(1),
                    None => self.exec_history.len().saturating_sub(1),
                };
                if let Some(line) = self.exec_history.get(pos) {
                    prompt.text = line.clone();
                    prompt.recall = Some(pos);
                }
            }
            KeyCode::Down if matches!(prompt.kind, PromptKind::Exec { .. }) => {
                if let Some(p) = prompt.recall {
                    if let Some(line) = self.exec_history.get(p + 1) {
                        prompt.text = line.clone();
                        prompt.recall = Some(p + 1);
                    } else {
                        prompt.text.clear();
                        prompt.recall = None;
                    }
                }
            }
            KeyCode::Char(c) if !ctrl => prompt.text.push(c),
            _ => {}
        }
    }

    fn picker_key(&mut self, key: KeyEvent) {
        let Some(picker) = self.picker.as_mut() else {
            return;
        };
        let count = picker.items().count();
        match key.code {
            KeyCode::Esc => self.picker = None,
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.picker = None;
            }
            KeyCode::Up => picker.selected = picker.selected.saturating_sub(1),
            KeyCode::Down => picker.selected = (picker.selected + 1).min(count.saturating_sub(1)),
            KeyCode::Backspace => {
                picker.filter.pop();
                picker.selected = 0;
            }
            KeyCode::Char(c) => {
                picker.filter.push(c);
                picker.selected = 0;
            }
            KeyCode::Enter => {
                let Some(picker) = self.picker.take() else {
                    return;
                };
                let Some((id, name)) = picker.items().nth(picker.selected).cloned() else {
                    self.notice = Some("no agent matches".into());
                    self.picker = Some(picker);
                    return;
                };
                // The same path on the destination: the common case, edited when not.
                self.prompt = Some(Prompt {
                    text: picker.src_path.clone(),
                    kind: PromptKind::CopyTo {
                        src_agent: picker.src_agent,
                        src_name: picker.src_name,
                        src_path: picker.src_path,
                        recursive: picker.recursive,
                        agent: id.to_string(),
                        name,
                    },
                    recall: None,
                });
            }
            _ => {}
        }
    }

    fn submit(&mut self, prompt: Prompt) {
        match prompt.kind {
            PromptKind::Exec { selector, .. } => {
                let line = prompt.text.trim().to_owned();
                let command = match output::parse_command(&line) {
                    Ok(c) => c,
                    Err(e) => {
                        self.notice = Some(e);
                        return;
                    }
                };
                if self.exec_history.last() != Some(&line) {
                    self.exec_history.push(line.clone());
                    if self.exec_history.len() > HISTORY_LEN {
                        self.exec_history.remove(0);
                    }
                    if !prompt.text.starts_with(' ') {
                        self.remembered.push(line.clone());
                    }
                }
                let run = self.next_run;
                self.next_run += 1;
                self.run = Some(ExecRun::new(run, line, selector.clone()));
                self.commands.push(Command::Exec {
                    run,
                    request: ExecRequest {
                        selector,
                        command,
                        timeout_ms: 0,
                        batch: 0,
                    },
                });
                self.pane = 0;
                self.scroll = 0;
                self.open(View::Output);
            }
            PromptKind::CopyTo {
                src_agent,
                src_name,
                src_path,
                recursive,
                agent,
                name,
            } => {
                let path = prompt.text.trim().to_owned();
                let id = self.next_transfer;
                self.next_transfer += 1;
                self.transfers.push(Transfer::new(
                    id,
                    format!("{src_name}:{src_path}"),
                    format!("{name}:{path}"),
                ));
                self.transfer_selected = self.transfers.len() - 1;
                self.commands.push(Command::Copy {
                    id,
                    src: Place::Agent {
                        agent: src_agent,
                        path: src_path,
                    },
                    dst: Place::Agent { agent, path },
                    recursive,
                });
                self.open(View::Transfers);
            }
            PromptKind::Silence { rule, agent, who } => {
                self.submit_silence(rule, agent, &who, &prompt.text);
            }
        }
    }

    /// Opens `view`, remembering where we were for `Esc`.
    fn open(&mut self, view: View) {
        if self.view == view {
            return;
        }
        let from = std::mem::replace(&mut self.view, view);
        if from == View::Logs {
            self.close_logs();
        }
        self.back.push(from);
        if self.back.len() > BACK_DEPTH {
            self.back.remove(0);
        }
        self.refresh_view();
    }

    /// Asks for what the current view shows.
    fn refresh_view(&mut self) {
        match &self.view {
            View::Jobs => {
                self.commands.push(Command::Jobs);
                if let Some(Fetched::Ready((info, _))) = &self.job_detail {
                    self.commands.push(Command::Job(info.job));
                }
            }
            View::Audit => self.commands.push(Command::Audit),
            View::Alerts => self.ask_alerts(),
            View::Sessions => self.commands.push(Command::Sessions),
            View::Workloads { agent, kind } => {
                let agent = agent.clone();
                match kind {
                    WorkKind::Containers => {
                        if self.containers.scope != agent {
                            self.containers = WorkList::new(agent);
                        }
                        if !self.containers.in_flight {
                            self.containers.in_flight = true;
                            self.commands.push(Command::Containers {
                                selector: self.containers.selector(),
                            });
                        }
                        self.ask_history();
                    }
                    WorkKind::Services => {
                        if self.services.scope != agent {
                            self.services = WorkList::new(agent);
                        }
                        if !self.services.in_flight {
                            self.services.in_flight = true;
                            self.commands.push(Command::Services {
                                selector: self.services.selector(),
                            });
                        }
                    }
                }
            }
            View::Files => {
                if let Some(t) = &self.tree {
                    self.commands.push(Command::List {
                        agent: t.agent.to_string(),
                    });
                }
            }
            _ => {}
        }
    }

    /// Who a command would run on: the marked agents, else the one in view or under the cursor.
    fn exec_targets(&self) -> Option<(String, String)> {
        // In a containers or units list: the agent of the row under the cursor, marks aside.
        if let View::Workloads { kind, .. } = &self.view {
            let id = match kind {
                WorkKind::Containers => self.containers.selected_row().map(|r| r.agent.clone()),
                WorkKind::Services => self.services.selected_row().map(|r| r.agent.clone()),
            }?;
            return Some((id.to_string(), self.name_of(&id)));
        }
        if !self.marks.is_empty() {
            if self.marks.len() == self.agents.len() {
                return Some(("all".into(), format!("all {} agents", self.marks.len())));
            }
            // By name, so the selector (and the jobs view) reads in fleet order.
            let mut ids: Vec<&IdentityId> = self.marks.iter().collect();
            ids.sort_by_cached_key(|id| (self.name_of(id), (*id).clone()));
            let selector = ids
                .iter()
                .map(|id| id.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let who = if ids.len() == 1 {
                self.name_of(ids[0])
            } else {
                format!("{} marked agents", ids.len())
            };
            return Some((selector, who));
        }
        let id = match &self.view {
            View::Agent(id) => id.clone(),
            _ => self.selected_agent()?.id.clone(),
        };
        Some((id.to_string(), self.name_of(&id)))
    }

    /// Applies an action.
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Move(delta) => match &self.view {
                View::Fleet => {
                    let max = self.visible.len().saturating_sub(1) as i64;
                    self.selected =
                        (self.selected as i64 + i64::from(delta)).clamp(0, max) as usize;
                }
                View::Output => {
                    // Up scrolls back; down returns toward the newest line.
                    let lines = self.output_len() as i64;
                    self.scroll = (self.scroll as i64 - i64::from(delta)).clamp(0, lines) as usize;
                }
                View::Files => {
                    if let Some(t) = self.tree.as_mut() {
                        t.move_by(delta);
                    }
                }
                View::Transfers => {
                    let max = self.transfers.len().saturating_sub(1) as i64;
                    self.transfer_selected =
                        (self.transfer_selected as i64 + i64::from(delta)).clamp(0, max) as usize;
                }
                View::Jobs if self.job_detail.is_some() => {
                    self.detail_scroll =
                        (self.detail_scroll as i64 + i64::from(delta)).clamp(0, 100_000) as usize;
                }
                View::Jobs => {
                    let len = match &self.jobs {
                        Fetched::Ready(j) => j.len(),
                        _ => 0,
                    };
                    let max = len.saturating_sub(1) as i64;
                    self.job_selected =
                        (self.job_selected as i64 + i64::from(delta)).clamp(0, max) as usize;
                }
                View::Sessions => self.sessions.move_by(delta),
                View::Audit => {
                    let len = match &self.audit {
                        Fetched::Ready(a) => a.len(),
                        _ => 0,
                    } as i64;
                    self.audit_scroll =
                        (self.audit_scroll as i64 - i64::from(delta)).clamp(0, len) as usize;
                }
                View::Workloads {
                    kind: WorkKind::Containers,
                    ..
                } => self.containers.move_by(delta),
                View::Workloads {
                    kind: WorkKind::Services,
                    ..
                } => self.services.move_by(delta),
                View::Logs => {
                    if let Some(l) = self.logs.as_mut() {
                        l.scroll_by(delta);
                        // `G` (End) means "follow": it ends a pause too.
                        if delta == i32::MAX / 2 {
                            l.paused = false;
                        }
                    }
                }
                View::Alerts => self.alerts.move_by(delta),
                View::Agent(_) => self.scroll_host(delta),
            },
            Action::Open => match &self.view {
                View::Sessions => self.replay_selected(),
                View::Fleet => {
                    if let Some(a) = self.selected_agent() {
                        let id = a.id.clone();
                        self.detail = None;
                        self.history = None;
                        self.reset_host_time();
                        self.open(View::Agent(id));
                    }
                }
                View::Files => {
                    if let Some(t) = self.tree.as_mut() {
                        t.toggle();
                    }
                }
                View::Alerts => {
                    if let Some(a) = self.alerts.selected_alert() {
                        let id = a.agent.clone();
                        self.detail = None;
                        self.history = None;
                        self.open(View::Agent(id));
                    }
                }
                View::Jobs => {
                    if let Fetched::Ready(jobs) = &self.jobs
                        && let Some(job) = jobs.get(self.job_selected)
                    {
                        let id = job.job;
                        self.job_detail = Some(Fetched::Loading);
                        self.detail_scroll = 0;
                        self.commands.push(Command::Job(id));
                    }
                }
                _ => {}
            },
            Action::Collapse => {
                if let Some(t) = self.tree.as_mut() {
                    t.collapse();
                }
            }
            Action::StartFilter => self.filtering = true,
            Action::NextSort => match &self.view {
                View::Workloads {
                    kind: WorkKind::Containers,
                    ..
                } => {
                    self.containers.sort = (self.containers.sort + 1) % CONTAINER_SORTS_LEN;
                    self.containers.refresh(WorkKind::Containers.sorts());
                }
                View::Workloads {
                    kind: WorkKind::Services,
                    ..
                } => {
                    self.services.sort = (self.services.sort + 1) % UNIT_SORTS_LEN;
                    self.services.refresh(WorkKind::Services.sorts());
                }
                _ => {
                    self.sort = (self.sort + 1) % SORTS.len();
                    self.refresh_visible();
                }
            },
            Action::PrevSort => {
                self.sort = (self.sort + SORTS.len() - 1) % SORTS.len();
                self.refresh_visible();
            }
            Action::Range(delta) => self.step_range(delta),
            Action::TopStep(delta) => self.step_top(delta),
            Action::Charts => self.toggle_charts(),
            Action::NextTab(delta) => self.next_tab(delta),
            Action::OpenLogs => self.open_logs(),
            Action::Shell => self.open_shell(),
            Action::Join => self.join_selected(),
            Action::TogglePause => {
                if let Some(l) = self.logs.as_mut() {
                    l.paused = !l.paused;
                    if !l.paused {
                        l.scroll = 0;
                    }
                }
            }
            Action::Work(action) => self.work(action),
            Action::AckAlert => self.ack_alert(),
            Action::SilenceAlert => self.silence_prompt(),
            Action::ToggleMark => {
                if let Some(id) = self.visible.get(self.selected).cloned()
                    && !self.marks.remove(&id)
                {
                    self.marks.insert(id);
                }
                self.apply(Action::Move(1));
            }
            Action::MarkAllFiltered => self.marks.extend(self.visible.iter().cloned()),
            Action::ClearMarks => self.marks.clear(),
            Action::ExecPrompt => {
                let target = if self.view == View::Output {
                    self.run
                        .as_ref()
                        .map(|r| (r.selector.clone(), "the same agents".to_string()))
                } else {
                    self.exec_targets()
                };
                match target {
                    Some((selector, who)) => {
                        self.prompt = Some(Prompt {
                            kind: PromptKind::Exec { selector, who },
                            text: String::new(),
                            recall: None,
                        });
                    }
                    None => self.notice = Some("no agent selected".into()),
                }
            }
            Action::OpenFiles => {
                let id = match &self.view {
                    View::Agent(id) => Some(id.clone()),
                    _ => self.selected_agent().map(|a| a.id.clone()),
                };
                let Some(id) = id else {
                    self.notice = Some("no agent selected".into());
                    return;
                };
                if self.tree.as_ref().is_none_or(|t| t.agent != id) {
                    self.tree = Some(FolderTree::new(id.clone(), self.name_of(&id)));
                }
                if self.view == View::Files {
                    self.refresh_view();
                } else {
                    self.open(View::Files);
                }
            }
            Action::Copy => self.start_copy(),
            Action::Cancel => match &self.view {
                View::Output => {
                    if let Some(run) = self.run.as_mut().filter(|r| r.running()) {
                        run.cancelling = true;
                        self.commands.push(Command::CancelExec { run: run.run });
                    }
                }
                View::Transfers => {
                    if let Some(t) = self
                        .transfers
                        .get_mut(self.transfer_selected)
                        .filter(|t| !t.state.is_final())
                    {
                        t.state = TransferState::Cancelling;
                        self.commands.push(Command::CancelCopy { id: t.id });
                    }
                }
                _ => {}
            },
            Action::ToggleMerged => {
                self.merged = !self.merged;
                self.scroll = 0;
            }
            Action::Pane(delta) => {
                let n = self.run.as_ref().map_or(0, |r| r.panes.len());
                if n > 0 {
                    self.pane = (self.pane as i64 + i64::from(delta)).rem_euclid(n as i64) as usize;
                    self.scroll = 0;
                }
            }
            Action::Refresh => self.refresh_view(),
            Action::Show(view) => {
                if view == View::Jobs {
                    self.job_detail = None;
                }
                self.open(view);
            }
            Action::Help => self.help = true,
            Action::Back => {
                if self.view == View::Jobs && self.job_detail.is_some() {
                    self.job_detail = None;
                } else if self.view != View::Fleet {
                    if self.view == View::Logs {
                        self.close_logs();
                    }
                    self.view = self.back.pop().unwrap_or(View::Fleet);
                    self.refresh_view();
                } else if !self.filter.is_empty() {
                    self.filter.clear();
                    self.refresh_visible();
                }
            }
            Action::Quit => self.quit = true,
        }
    }

    /// Lines in the output view as shown now (merged or the current pane).
    pub fn output_len(&self) -> usize {
        match &self.run {
            Some(r) if self.merged => r.merged.len(),
            Some(r) => r.panes.get(self.pane).map_or(0, |p| p.lines.len()),
            None => 0,
        }
    }

    /// Tab in an agent's view: overview, containers, services; in the fleet's lists: containers,
    /// services. The view is replaced, not stacked, so `Esc` still goes back where the agent was
    /// opened from.
    fn next_tab(&mut self, delta: i32) {
        let tabs: Vec<View> = match &self.view {
            View::Agent(id)
            | View::Workloads {
                agent: Some(id), ..
            } => vec![
                View::Agent(id.clone()),
                View::Workloads {
                    agent: Some(id.clone()),
                    kind: WorkKind::Containers,
                },
                View::Workloads {
                    agent: Some(id.clone()),
                    kind: WorkKind::Services,
                },
            ],
            View::Workloads { agent: None, .. } => vec![
                View::Workloads {
                    agent: None,
                    kind: WorkKind::Containers,
                },
                View::Workloads {
                    agent: None,
                    kind: WorkKind::Services,
                },
            ],
            _ => return,
        };
        let at = tabs.iter().position(|v| *v == self.view).unwrap_or(0) as i64;
        let next = (at + i64::from(delta)).rem_euclid(tabs.len() as i64) as usize;
        self.filtering = false;
        self.view = tabs[next].clone();
        self.refresh_view();
    }

    /// Asks for the selected container's minutes when the selection moved to another container or
    /// the last answer is older than [`workloads::HISTORY_REFRESH_TICKS`].
    fn ask_history(&mut self) {
        let Some(r) = self.containers.selected_row() else {
            return;
        };
        let (agent, container) = (r.agent.to_string(), r.info.id.clone());
        let fresh = self.container_history.as_ref().is_some_and(|h| {
            h.agent == agent
                && h.container == container
                && self.ticks < h.asked_tick + workloads::HISTORY_REFRESH_TICKS
        });
        if fresh {
            return;
        }
        let same = self
            .container_history
            .as_ref()
            .is_some_and(|h| h.agent == agent && h.container == container);
        let minutes = match self.container_history.take() {
            // The same container keeps showing its last answer until the new one.
            Some(h) if same => h.minutes,
            _ => Fetched::Loading,
        };
        self.commands.push(Command::ContainerHistory {
            agent: agent.clone(),
            container: container.clone(),
        });
        self.container_history = Some(ContainerHistory {
            agent,
            container,
            asked_tick: self.ticks,
            minutes,
        });
    }

    /// `l` on a container or unit: opens its log, following.
    fn open_logs(&mut self) {
        let target = match &self.view {
            View::Workloads {
                kind: WorkKind::Containers,
                ..
            } => self.containers.selected_row().map(|r| {
                (
                    r.agent.clone(),
                    r.agent_name.clone(),
                    LogSource::Container(r.info.id.clone()),
                    r.info.name.clone(),
                )
            }),
            View::Workloads {
                kind: WorkKind::Services,
                ..
            } => self.services.selected_row().map(|r| {
                (
                    r.agent.clone(),
                    r.agent_name.clone(),
                    LogSource::Unit(r.info.name.clone()),
                    r.info.name.clone(),
                )
            }),
            _ => None,
        };
        let Some((agent, agent_name, source, name)) = target else {
            self.notice = Some("nothing selected".into());
            return;
        };
        self.close_logs();
        let id = self.next_logs;
        self.next_logs += 1;
        // The pane is titled by name; the stream asks by container id, which cannot be ambiguous.
        let shown_source = match &source {
            LogSource::Container(_) => LogSource::Container(name),
            LogSource::Unit(n) => LogSource::Unit(n.clone()),
        };
        self.commands.push(Command::Logs {
            id,
            request: LogsRequest {
                agent: agent.to_string(),
                source,
                tail: workloads::LOG_TAIL,
                follow: true,
            },
        });
        self.logs = Some(LogView::new(id, agent, agent_name, shown_source));
        self.filtering = false;
        self.open(View::Logs);
    }

    /// Ends the logs stream, if one is open.
    fn close_logs(&mut self) {
        if let Some(l) = self.logs.as_ref() {
            self.commands.push(Command::CloseLogs { id: l.id });
        }
        self.filtering = false;
    }

    /// An action key on the selected container or unit: runs it as a job on its agent, after a
    /// `y` when it interrupts service or loses state.
    fn work(&mut self, action: WorkAction) {
        use flotilla_wire::exec::ExecCommand;
        let (agent, agent_name, name, command) = match action {
            WorkAction::Container(a) => {
                let Some(r) = self.containers.selected_row() else {
                    return;
                };
                // By name, as an operator reads it in the audit log, unless it is no valid name.
                let name = if valid_workload_name(&r.info.name) {
                    r.info.name.clone()
                } else {
                    r.info.id.clone()
                };
                let command = ExecCommand::Container {
                    action: a,
                    containers: vec![name.clone()],
                    stop_timeout_s: None,
                };
                (r.agent.clone(), r.agent_name.clone(), name, command)
            }
            WorkAction::Service(a) => {
                let Some(r) = self.services.selected_row() else {
                    return;
                };
                let command = ExecCommand::Service {
                    action: a,
                    units: vec![r.info.name.clone()],
                };
                (
                    r.agent.clone(),
                    r.agent_name.clone(),
                    r.info.name.clone(),
                    command,
                )
            }
        };
        let kind = match action.kind() {
            WorkKind::Containers => "container",
            WorkKind::Services => "service",
        };
        // Raw: the footer and the output view escape what they show.
        let label = format!("{kind} {} {name} on {agent_name}", action.verb());
        let request = ExecRequest {
            selector: agent.to_string(),
            command,
            timeout_ms: 0,
            batch: 0,
        };
        if action.destructive() {
            // Shown as it is: the names are escaped here.
            self.confirm = Some(Confirm {
                question: format!(
                    "{} {} on {}? y/N",
                    action.verb(),
                    crate::util::escaped(&name),
                    crate::util::escaped(&agent_name)
                ),
                request,
                label,
            });
        } else {
            self.launch(label, request);
        }
    }

    /// Starts a job for an action key; the list stays in view and the footer tells how it ended
    /// (`2` shows its output).
    fn launch(&mut self, label: String, request: ExecRequest) {
        let run = self.next_run;
        self.next_run += 1;
        self.run = Some(ExecRun::new(run, label.clone(), request.selector.clone()));
        self.action_run = Some(run);
        self.commands.push(Command::Exec { run, request });
        self.notice = Some(format!("{label}: running (2 shows its output)"));
    }

    fn start_copy(&mut self) {
        let Some(tree) = &self.tree else { return };
        let Some(entry) = tree.selected_entry() else {
            self.notice = Some("nothing to copy: the folder is empty".into());
            return;
        };
        let recursive = match entry.kind {
            EntryKind::File => false,
            EntryKind::Dir => true,
            _ => {
                self.notice = Some(format!("{} is not a file or directory", entry.path));
                return;
            }
        };
        let mut agents: Vec<(IdentityId, String)> = self
            .agents
            .values()
            .filter(|a| a.status == Status::Online && a.id != tree.agent)
            .map(|a| (a.id.clone(), a.name.clone()))
            .collect();
        if agents.is_empty() {
            self.notice = Some("no other agent is online to copy to".into());
            return;
        }
        agents.sort_by(|a, b| a.1.cmp(&b.1));
        self.picker = Some(Picker {
            src_agent: tree.agent.to_string(),
            src_name: tree.name.clone(),
            src_path: entry.path.clone(),
            recursive,
            filter: String::new(),
            selected: 0,
            agents,
        });
    }
}

const CONTAINER_SORTS_LEN: usize = workloads::CONTAINER_SORTS.len();
const UNIT_SORTS_LEN: usize = workloads::UNIT_SORTS.len();

/// How an action's job ended, for the footer: `container stop web on db-1: ok`, or the agent's
/// words when it failed or was refused.
fn action_outcome(run: &ExecRun) -> String {
    if let Some(e) = &run.error {
        return format!("{}: {e}", run.command);
    }
    let failed = run.panes.iter().find(|p| !p.state.ok());
    match failed {
        None if !run.panes.is_empty() => format!("{}: ok", run.command),
        None => format!("{}: no agent ran it", run.command),
        Some(p) => {
            let detail = match &p.state {
                output::PaneState::Failed(f) if !f.message.is_empty() => {
                    format!("{}: {}", p.state.label(), f.message)
                }
                s => {
                    // The engine's or systemd's complaint is the last line the job printed.
                    let last = p.lines.back().map(|l| l.text.as_str()).unwrap_or_default();
                    if last.is_empty() {
                        s.label()
                    } else {
                        format!("{}: {last}", s.label())
                    }
                }
            };
            format!("{}: {detail}", run.command)
        }
    }
}

fn fetched<T>(r: Result<T, String>) -> Fetched<T> {
    match r {
        Ok(v) => Fetched::Ready(v),
        Err(e) => Fetched::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::{KeyEventKind, KeyEventState, KeyModifiers};
    use flotilla_wire::msg::MetricsSample;

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent {
            code,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        })
    }

    fn agent(i: u8, name: &str, status: Status, cpu: f32, labels: &[(&str, &str)]) -> AgentInfo {
        AgentInfo {
            id: IdentityId::from_random(Role::Agent, [i; 8]),
            name: name.into(),
            role: Role::Agent,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            status,
            first_seen_ms: 0,
            last_seen_ms: 0,
            version: "0.1.0".into(),
            os: "linux".into(),
            hostname: name.into(),
            addr: String::new(),
            latest: Some(MetricsSample {
                cpu_pct: cpu,
                mem_total: 100,
                mem_used: 50,
                ..Default::default()
            }),
        }
    }

    fn app() -> App {
        let mut app = App::new(0);
        app.update(Event::Fleet(Box::new(FleetEvent::Snapshot(vec![
            agent(
                1,
                "web-1",
                Status::Online,
                10.0,
                &[("env", "prod"), ("role", "web")],
            ),
            agent(
                2,
                "db-1",
                Status::Online,
                90.0,
                &[("env", "prod"), ("role", "db")],
            ),
            agent(
                3,
                "web-2",
                Status::Offline,
                0.0,
                &[("env", "staging"), ("role", "web")],
            ),
        ]))));
        app
    }

    fn names(app: &App) -> Vec<String> {
        app.visible().map(|a| a.name.clone()).collect()
    }

    #[test]
    fn offline_agents_sort_last_and_sort_key_cycles() {
        let mut app = app();
        assert_eq!(names(&app), ["db-1", "web-1", "web-2"]);
        app.update(key(KeyCode::Char('s')));
        assert_eq!(SORTS[app.sort], "cpu");
        assert_eq!(
            names(&app),
            ["db-1", "web-1", "web-2"],
            "busiest first, offline still last"
        );
        assert_eq!(app.counts(), (2, 3));
    }

    #[test]
    fn slash_filters_by_name_and_label_as_you_type() {
        let mut app = app();
        app.update(key(KeyCode::Char('/')));
        assert!(app.filtering);
        for c in "web".chars() {
            app.update(key(KeyCode::Char(c)));
        }
        assert_eq!(names(&app), ["web-1", "web-2"]);
        for _ in 0..3 {
            app.update(key(KeyCode::Backspace));
        }
        for c in "env=prod".chars() {
            app.update(key(KeyCode::Char(c)));
        }
        assert_eq!(names(&app), ["db-1", "web-1"]);
        app.update(key(KeyCode::Enter));
        assert!(
            !app.filtering,
            "enter keeps the filter and leaves the prompt"
        );
        assert_eq!(app.filter, "env=prod");
        app.update(key(KeyCode::Esc));
        assert!(
            app.filter.is_empty(),
            "esc in the fleet view clears the filter"
        );
        assert_eq!(names(&app).len(), 3);
    }

    #[test]
    fn marks_selection_and_mark_all_filtered() {
        let mut app = app();
        app.update(key(KeyCode::Char(' ')));
        assert_eq!(app.marks.len(), 1);
        assert_eq!(app.selected, 1, "space moves down after marking");
        app.update(key(KeyCode::Char(' ')));
        assert_eq!(app.marks.len(), 2);
        app.update(key(KeyCode::Char('k')));
        app.update(key(KeyCode::Char(' ')));
        assert_eq!(app.marks.len(), 1, "space again unmarks");
        app.filter = "staging".into();
        app.refresh_visible();
        app.update(key(KeyCode::Char('*')));
        assert_eq!(app.marks.len(), 2);
    }

    #[test]
    fn enter_opens_agent_and_esc_goes_back_and_q_quits() {
        let mut app = app();
        app.update(key(KeyCode::Char('j')));
        app.update(key(KeyCode::Enter));
        let View::Agent(id) = &app.view else {
            panic!("agent view expected")
        };
        assert_eq!(app.agents[id].name, "web-1");
        assert_eq!(app.focused().as_ref(), Some(id));
        app.update(key(KeyCode::Char('?')));
        assert!(app.help);
        app.update(key(KeyCode::Char('x')));
        assert!(!app.help, "any key closes help");
        app.update(key(KeyCode::Esc));
        assert_eq!(app.view, View::Fleet);
        assert_eq!(app.focused(), None);
        app.update(key(KeyCode::Char('q')));
        assert!(app.quit);
    }

    #[test]
    fn events_update_status_and_history_and_reconnect_greys_all() {
        let mut app = app();
        let web1 = IdentityId::from_random(Role::Agent, [1; 8]);
        app.update(Event::Fleet(Box::new(FleetEvent::Offline {
            id: web1.clone(),
            at_ms: 5,
            reason: "x".into(),
        })));
        assert_eq!(app.agents[&web1].status, Status::Offline);
        assert_eq!(names(&app), ["db-1", "web-1", "web-2"]);
        let sample = MetricsSample {
            at_ms: 1,
            cpu_pct: 42.0,
            ..Default::default()
        };
        app.update(Event::Fleet(Box::new(FleetEvent::Metrics {
            id: web1.clone(),
            sample,
        })));
        assert_eq!(app.cpu_history[&web1].back(), Some(&42.0));
        let len = app.cpu_history[&web1].len();
        app.update(Event::Fleet(Box::new(FleetEvent::Metrics {
            id: web1.clone(),
            sample: app.agents[&web1].latest.clone().expect("sample"),
        })));
        assert_eq!(
            app.cpu_history[&web1].len(),
            len,
            "a sample seen twice (snapshot, then event) is one point"
        );
        app.update(Event::Disconnected("hub gone".into()));
        assert_eq!(app.conn, Conn::Reconnecting("hub gone".into()));
        assert_eq!(
            app.counts().0,
            0,
            "nothing is known online while the hub is away"
        );
    }

    #[test]
    fn selection_is_clamped_and_follows_the_agent() {
        let mut app = app();
        app.update(key(KeyCode::Char('G')));
        assert_eq!(app.selected, 2);
        app.update(key(KeyCode::Down));
        assert_eq!(app.selected, 2);
        app.update(key(KeyCode::Char('g')));
        assert_eq!(app.selected, 0);
        assert_eq!(app.selected_agent().map(|a| a.name.as_str()), Some("db-1"));
    }

    fn connected(app: &mut App, role: Role) {
        app.update(Event::Connected(Box::new(flotilla_wire::msg::Welcome {
            protocol_version: flotilla_wire::PROTOCOL_VERSION,
            hub_version: "0.1.0".into(),
            identity: IdentityId::from_random(Role::Operator, [9; 8]),
            role,
            name: "ops".into(),
            metrics_interval_ms: 5000,
        })));
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            app.update(key(KeyCode::Char(c)));
        }
    }

    #[test]
    fn colon_runs_a_command_on_the_marked_agents_and_remembers_it() {
        let mut app = app();
        connected(&mut app, Role::Operator);
        app.update(key(KeyCode::Char(' ')));
        app.update(key(KeyCode::Char(' ')));
        app.update(key(KeyCode::Char(':')));
        let Some(Prompt {
            kind: PromptKind::Exec { who, selector },
            ..
        }) = &app.prompt
        else {
            panic!("exec prompt expected")
        };
        assert_eq!(who, "2 marked agents");
        assert_eq!(selector.split(',').count(), 2);
        typed(&mut app, "uptime");
        app.update(key(KeyCode::Enter));
        assert_eq!(app.view, View::Output);
        let cmds = app.take_commands();
        let [Command::Exec { run, request }] = cmds.as_slice() else {
            panic!("one exec command expected, got {cmds:?}")
        };
        assert_eq!(*run, 1);
        assert_eq!(
            request.command,
            flotilla_wire::exec::ExecCommand::Argv {
                argv: vec!["uptime".into()],
                shell: false
            }
        );
        // Ctrl-C in the pane cancels that job, and does not quit.
        app.update(Event::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL,
        )));
        assert!(!app.quit);
        assert_eq!(app.take_commands(), [Command::CancelExec { run: 1 }]);
        // Up recalls the last command; the same agents again from the output view.
        app.update(key(KeyCode::Char(':')));
        app.update(key(KeyCode::Up));
        assert_eq!(app.prompt.as_ref().map(|p| p.text.as_str()), Some("uptime"));
        app.update(key(KeyCode::Down));
        assert_eq!(app.prompt.as_ref().map(|p| p.text.as_str()), Some(""));
        app.update(key(KeyCode::Esc));
        assert!(app.prompt.is_none());
        assert!(app.take_commands().is_empty(), "esc runs nothing");
    }

    /// What the console writes to the history file: each command run, once when repeated, and
    /// not one typed with a leading space; an earlier console's commands recall with Up.
    #[test]
    fn commands_run_are_remembered_for_the_history_file_unless_they_start_with_a_space() {
        let mut app = app();
        connected(&mut app, Role::Operator);
        app.exec_history = vec!["from yesterday".into()];
        for text in ["uptime", "uptime", " mysql -psecret", "df -h"] {
            app.update(key(KeyCode::Char(':')));
            typed(&mut app, text);
            app.update(key(KeyCode::Enter));
            app.update(key(KeyCode::Esc));
        }
        assert_eq!(app.take_remembered(), ["uptime", "df -h"]);
        assert!(app.take_remembered().is_empty());
        app.update(key(KeyCode::Char(':')));
        for _ in 0..4 {
            app.update(key(KeyCode::Up));
        }
        assert_eq!(
            app.prompt.as_ref().map(|p| p.text.as_str()),
            Some("from yesterday")
        );
    }

    #[test]
    fn a_viewer_gets_no_prompt_and_no_copy() {
        let mut app = app();
        connected(&mut app, Role::Viewer);
        app.update(key(KeyCode::Char(':')));
        assert!(app.prompt.is_none());
        app.update(key(KeyCode::Char('f')));
        assert_eq!(app.view, View::Files);
        app.update(Event::Listing {
            agent: app
                .tree
                .as_ref()
                .map(|t| t.agent.to_string())
                .unwrap_or_default(),
            result: Ok(Box::new(crate::files::Listing {
                end: flotilla_wire::files::ListEnd {
                    agent: IdentityId::from_random(Role::Agent, [2; 8]),
                    name: "db-1".into(),
                    online: true,
                    as_of_ms: 0,
                    total: 1,
                    truncated: false,
                },
                path: String::new(),
                entries: vec![flotilla_wire::files::Entry {
                    path: "notes.txt".into(),
                    kind: EntryKind::File,
                    size: 3,
                    mtime_ms: 0,
                    mode: 0o644,
                }],
            })),
        });
        app.update(key(KeyCode::Char('c')));
        assert!(app.picker.is_none(), "a viewer cannot copy");
    }

    #[test]
    fn copy_picks_an_online_agent_then_a_path_and_opens_transfers() {
        let mut app = app();
        connected(&mut app, Role::Admin);
        // db-1 is selected (sorted first); its folder has one file.
        app.update(key(KeyCode::Char('f')));
        let cmds = app.take_commands();
        assert!(
            matches!(cmds.as_slice(), [Command::List { .. }]),
            "{cmds:?}"
        );
        let agent = app.tree.as_ref().map(|t| t.agent.clone()).expect("tree");
        let mut tree = FolderTree::new(agent.clone(), "db-1".into());
        tree.set_listing(
            vec![flotilla_wire::files::Entry {
                path: "dump.sql".into(),
                kind: EntryKind::File,
                size: 3,
                mtime_ms: 0,
                mode: 0o644,
            }],
            false,
        );
        app.tree = Some(tree);
        app.update(key(KeyCode::Char('c')));
        let picker = app.picker.as_ref().expect("picker");
        let names: Vec<_> = picker.items().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["web-1"], "online agents other than the source");
        app.update(key(KeyCode::Enter));
        assert_eq!(
            app.prompt.as_ref().map(|p| p.text.as_str()),
            Some("dump.sql"),
            "the same path by default"
        );
        app.update(key(KeyCode::Backspace));
        app.update(key(KeyCode::Backspace));
        app.update(key(KeyCode::Backspace));
        typed(&mut app, "bak");
        app.update(key(KeyCode::Enter));
        assert_eq!(app.view, View::Transfers);
        let cmds = app.take_commands();
        let [
            Command::Copy {
                id,
                src,
                dst,
                recursive,
            },
        ] = cmds.as_slice()
        else {
            panic!("one copy expected, got {cmds:?}")
        };
        assert!(!recursive);
        assert_eq!(
            *src,
            Place::Agent {
                agent: agent.to_string(),
                path: "dump.sql".into()
            }
        );
        assert!(matches!(dst, Place::Agent { path, .. } if path == "dump.bak"));
        assert_eq!(app.transfers[0].dst, "web-1:dump.bak");
        app.update(key(KeyCode::Char('x')));
        assert_eq!(app.take_commands(), [Command::CancelCopy { id: *id }]);
        assert_eq!(app.transfers[0].state, TransferState::Cancelling);
        app.update(key(KeyCode::Esc));
        assert_eq!(app.view, View::Files, "esc goes back where we came from");
    }

    #[test]
    fn jobs_and_audit_views_ask_the_hub_and_show_refusals() {
        let mut app = app();
        connected(&mut app, Role::Viewer);
        app.update(key(KeyCode::Char('4')));
        assert_eq!(app.view, View::Jobs);
        assert_eq!(app.take_commands(), [Command::Jobs]);
        app.update(Event::Jobs(Err("viewers may not read jobs".into())));
        assert_eq!(
            app.jobs,
            Fetched::Failed("viewers may not read jobs".into())
        );
        app.update(key(KeyCode::Char('5')));
        assert_eq!(app.take_commands(), [Command::Audit]);
        app.update(key(KeyCode::Esc));
        assert_eq!(app.view, View::Jobs);
        app.update(key(KeyCode::Esc));
        assert_eq!(app.view, View::Fleet);
    }
}
