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
    /// Metrics changed the order of a metric sort; re-sorted once before the next frame rather than
    /// once per event (20,000 agents send 4,000 samples a second).
    order_stale: bool,
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
            order_stale: false,
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

    /// Brings derived state up to date before a frame is drawn.
    pub fn prepare(&mut self) {
        if self.order_stale {
            self.refresh_visible();
        }
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
                self.order_stale |= SORTS[self.sort] != "name";
                return true;
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
            cpu_pct: 42.0,
            ..Default::default()
        };
        app.update(Event::Fleet(Box::new(FleetEvent::Metrics {
            id: web1.clone(),
            sample,
        })));
        assert_eq!(app.cpu_history[&web1].back(), Some(&42.0));
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
}
