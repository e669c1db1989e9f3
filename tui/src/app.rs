//! Console state and how events change it. Rendering reads `&App` only (see `ui`).

use crate::action::Action;
use crate::event::Event;
use crate::keymap;
use crossterm::event::{KeyCode, KeyEvent};
use flotilla_wire::msg::{AgentInfo, FleetEvent, MetricsSeries, Status};
use flotilla_wire::{IdentityId, Role};
use std::collections::{HashMap, HashSet, VecDeque};

/// CPU points kept per agent for the fleet sparkline: a minute at 1 s, or several at 5 s.
pub const SPARK_POINTS: usize = 12;

/// Sort columns, in the order `s` cycles through them.
pub const SORTS: [&str; 5] = ["name", "cpu", "mem", "disk", "last-seen"];

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
    /// Ids in display order, recomputed when agents, filter or sort change.
    visible: Vec<IdentityId>,
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
            visible: Vec::new(),
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

    /// The agent whose view is open: the network task watches it (1 s samples, detail, history).
    pub fn focused(&self) -> Option<IdentityId> {
        match &self.view {
            View::Agent(id) => Some(id.clone()),
            View::Fleet => None,
        }
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
        let selected_id = self.visible.get(self.selected).cloned();
        let mut list: Vec<AgentInfo> = self
            .agents
            .values()
            .filter(|a| self.matches(a))
            .cloned()
            .collect();
        crate::format::sort_agents(&mut list, SORTS[self.sort]);
        self.visible = list.into_iter().map(|a| a.id).collect();
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

    /// Applies one event. Returns whether the screen needs redrawing.
    pub fn update(&mut self, event: Event) -> bool {
        match event {
            Event::Key(key) => {
                self.handle_key(key);
                true
            }
            Event::Resize => true,
            Event::Tick => {
                self.now_ms = crate::cli::now_ms();
                true
            }
            Event::Connected(w) => {
                self.conn = Conn::Connected {
                    name: w.name,
                    role: w.role,
                    hub_version: w.hub_version,
                };
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
            Event::History(series) => {
                let fresh = self.focused().as_ref() == Some(&series.id);
                if fresh {
                    self.history = Some(*series);
                }
                fresh
            }
        }
    }

    /// Applies a fleet event.
    pub fn apply_fleet(&mut self, ev: FleetEvent) -> bool {
        match ev {
            FleetEvent::Snapshot(list) => {
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
                a.latest = Some(sample);
                self.record_cpu(&id, cpu);
                // Metrics change values, not order, unless sorted by a metric.
                if SORTS[self.sort] == "name" {
                    return true;
                }
            }
            FleetEvent::Lagged { .. } => return false,
        }
        self.refresh_visible();
        true
    }

    fn handle_key(&mut self, key: KeyEvent) {
        if self.help {
            self.help = false;
            return;
        }
        if self.filtering {
            match key.code {
                KeyCode::Esc => {
                    self.filtering = false;
                    self.filter.clear();
                }
                KeyCode::Enter => self.filtering = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => return,
            }
            self.selected = 0;
            self.refresh_visible();
            return;
        }
        let action = match self.view {
            View::Fleet => keymap::fleet_key(key),
            View::Agent(_) => keymap::agent_key(key),
        };
        if let Some(action) = action {
            self.apply(action);
        }
    }

    /// Applies an action.
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Move(delta) => {
                let max = self.visible.len().saturating_sub(1) as i64;
                self.selected = (self.selected as i64 + i64::from(delta)).clamp(0, max) as usize;
            }
            Action::OpenAgent => {
                if let Some(a) = self.selected_agent() {
                    self.view = View::Agent(a.id.clone());
                    self.detail = None;
                    self.history = None;
                }
            }
            Action::StartFilter => self.filtering = true,
            Action::NextSort => {
                self.sort = (self.sort + 1) % SORTS.len();
                self.refresh_visible();
            }
            Action::ToggleMark => {
                if let Some(id) = self.visible.get(self.selected).cloned()
                    && !self.marks.remove(&id)
                {
                    self.marks.insert(id);
                }
                self.apply(Action::Move(1));
            }
            Action::MarkAllFiltered => self.marks.extend(self.visible.iter().cloned()),
            Action::Help => self.help = true,
            Action::Back => {
                if self.view != View::Fleet {
                    self.view = View::Fleet;
                } else if !self.filter.is_empty() {
                    self.filter.clear();
                    self.refresh_visible();
                }
            }
            Action::Quit => self.quit = true,
        }
    }
}
