//! Alerts in the console: every alert the hub told us of, kept current by its `FleetEvent::Alert`
//! pushes and a full list asked for on connect and while the alerts view is open; the firing count
//! of the header, the agents the fleet view marks, and the alerts view's order and selection.

use super::{App, Fetched, Prompt, PromptKind};
use crate::alerts::text::{self, Group};
use crate::command::Command;
use crate::util::escaped;
use flotilla_wire::IdentityId;
use flotilla_wire::alerts::{AlertId, AlertInfo, AlertState, Severity};
use std::collections::HashMap;

/// Resolved alerts kept for the view's "recently resolved" group: a screenful or two, bounded
/// however much flaps.
pub const RESOLVED_KEPT: usize = 50;

/// What the console knows of the fleet's alerts.
#[derive(Clone, Debug, Default)]
pub struct AlertBoard {
    /// Every alert by id: pending, firing, and the newest resolved ones.
    by_id: HashMap<AlertId, AlertInfo>,
    /// Ids in list order (see [`text::compare`]), recomputed on every change.
    order: Vec<AlertId>,
    /// Whether the hub answered a full list yet (or why not).
    pub loaded: Fetched<()>,
    /// Index into the list.
    pub selected: usize,
    /// A full list was asked for and not answered yet.
    pub in_flight: bool,
}

impl AlertBoard {
    /// Replaces everything with a full list from the hub.
    pub fn set_list(&mut self, result: Result<Vec<AlertInfo>, String>) {
        self.in_flight = false;
        match result {
            Ok(list) => {
                let selected = self.selected_alert().map(|a| a.id);
                self.by_id = list.into_iter().map(|a| (a.id, a)).collect();
                self.loaded = Fetched::Ready(());
                self.reorder(selected);
            }
            Err(e) => self.loaded = Fetched::Failed(e),
        }
    }

    /// Applies one alert's news (a state change, an acknowledgement, a silence).
    pub fn apply(&mut self, alert: AlertInfo) {
        let selected = self.selected_alert().map(|a| a.id);
        self.by_id.insert(alert.id, alert);
        self.reorder(selected);
    }

    fn reorder(&mut self, keep: Option<AlertId>) {
        // Bound the resolved ones: the newest stay.
        let mut resolved: Vec<(u64, AlertId)> = self
            .by_id
            .values()
            .filter(|a| a.state == AlertState::Resolved)
            .map(|a| (a.since_ms, a.id))
            .collect();
        if resolved.len() > RESOLVED_KEPT {
            resolved.sort_unstable_by(|a, b| b.cmp(a));
            for (_, id) in &resolved[RESOLVED_KEPT..] {
                self.by_id.remove(id);
            }
        }
        let mut list: Vec<&AlertInfo> = self.by_id.values().collect();
        list.sort_by(|a, b| text::compare(a, b));
        self.order = list.into_iter().map(|a| a.id).collect();
        if let Some(id) = keep
            && let Some(pos) = self.order.iter().position(|o| *o == id)
        {
            self.selected = pos;
        }
        self.selected = self.selected.min(self.order.len().saturating_sub(1));
    }

    /// Alerts in list order.
    pub fn list(&self) -> impl Iterator<Item = &AlertInfo> {
        self.order.iter().filter_map(|id| self.by_id.get(id))
    }

    /// How many alerts are listed.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The alert under the cursor.
    pub fn selected_alert(&self) -> Option<&AlertInfo> {
        self.order
            .get(self.selected)
            .and_then(|id| self.by_id.get(id))
    }

    /// Moves the cursor by `delta` rows, clamped.
    pub fn move_by(&mut self, delta: i32) {
        let max = self.order.len().saturating_sub(1) as i64;
        self.selected = (self.selected as i64 + i64::from(delta)).clamp(0, max) as usize;
    }

    /// Alerts firing that no silence mutes: the header's count.
    pub fn firing(&self) -> usize {
        self.by_id.values().filter(|a| text::firing_loud(a)).count()
    }

    /// How many alerts each group holds, in group order.
    pub fn group_counts(&self) -> [(Group, usize); 4] {
        let mut counts = [
            (Group::Firing, 0),
            (Group::Pending, 0),
            (Group::Silenced, 0),
            (Group::Resolved, 0),
        ];
        for a in self.by_id.values() {
            let g = text::group(a);
            if let Some(c) = counts.iter_mut().find(|(k, _)| *k == g) {
                c.1 += 1;
            }
        }
        counts
    }

    /// The loudest severity firing unsilenced on `agent`, if any: the fleet view's marker.
    pub fn agent_severity(&self, agent: &IdentityId) -> Option<Severity> {
        self.by_id
            .values()
            .filter(|a| text::firing_loud(a) && &a.agent == agent)
            .map(|a| a.severity)
            .max()
    }

    /// Agents with an alert firing unsilenced, with the loudest severity of each.
    pub fn affected(&self) -> HashMap<IdentityId, Severity> {
        let mut out: HashMap<IdentityId, Severity> = HashMap::new();
        for a in self.by_id.values().filter(|a| text::firing_loud(a)) {
            let e = out.entry(a.agent.clone()).or_insert(a.severity);
            *e = (*e).max(a.severity);
        }
        out
    }
}

impl App {
    /// Asks the hub for every alert (recently resolved ones too), unless a list is on its way.
    pub(super) fn ask_alerts(&mut self) {
        if !self.alerts.in_flight {
            self.alerts.in_flight = true;
            self.commands.push(Command::Alerts);
        }
    }

    /// `a`: acknowledges the firing alert under the cursor.
    pub(super) fn ack_alert(&mut self) {
        let Some(a) = self.alerts.selected_alert() else {
            self.notice = Some("no alert selected".into());
            return;
        };
        if a.state != AlertState::Firing {
            self.notice = Some(format!(
                "{} on {} is {}: only a firing alert can be acknowledged",
                escaped(&a.rule),
                escaped(&a.agent_name),
                a.state.as_str()
            ));
            return;
        }
        let label = format!("{} on {}", a.rule, a.agent_name);
        self.commands.push(Command::AckAlert { id: a.id, label });
    }

    /// `S`: asks how long to silence the selected alert's rule on its agent, and why.
    pub(super) fn silence_prompt(&mut self) {
        let Some(a) = self.alerts.selected_alert() else {
            self.notice = Some("no alert selected".into());
            return;
        };
        self.prompt = Some(Prompt {
            kind: PromptKind::Silence {
                rule: a.rule.clone(),
                agent: a.agent.to_string(),
                who: a.agent_name.clone(),
            },
            text: String::new(),
            recall: None,
        });
    }

    /// The silence prompt's line: a duration, then the comment (`2h deploying db`).
    pub(super) fn submit_silence(&mut self, rule: String, agent: String, who: &str, line: &str) {
        let line = line.trim();
        let (length, comment) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let comment = comment.trim();
        let length = match crate::alerts::args::parse_length(length) {
            Ok(d) => d,
            Err(e) => {
                self.notice = Some(format!("not silenced: {e} (type e.g. 2h deploying db)"));
                return;
            }
        };
        if comment.is_empty() {
            self.notice = Some("not silenced: say why after the duration (2h deploying db)".into());
            return;
        }
        let label = format!("{rule} on {who}");
        self.commands.push(Command::SilenceAlert {
            rule,
            agent,
            duration_ms: u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
            comment: comment.to_owned(),
            label,
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::app::View;
    use crate::app::workload_tests::{db1, fixture, key, web1};
    use crate::event::Event;
    use crossterm::event::KeyCode;
    use flotilla_wire::Role;
    use flotilla_wire::alerts::SilenceId;
    use flotilla_wire::msg::FleetEvent;

    /// A firing critical CPU alert on web-1 and a pending disk alert on db-1's `/var`.
    pub(crate) fn two_alerts() -> Vec<AlertInfo> {
        let cpu = AlertInfo {
            id: AlertId::of("cpu-high", &web1(), ""),
            rule: "cpu-high".into(),
            severity: Severity::Critical,
            agent: web1(),
            agent_name: "web-1".into(),
            subject: String::new(),
            state: AlertState::Firing,
            since_ms: 1_940_000,
            started_ms: 1_900_000,
            value: 97.2,
            summary: "cpu of web-1 at 97.2% (above 90)".into(),
            acked_by: None,
            silenced_by: None,
        };
        let disk = AlertInfo {
            id: AlertId::of("disk-full", &db1(), "/var"),
            rule: "disk-full".into(),
            severity: Severity::Warning,
            agent: db1(),
            agent_name: "db-1".into(),
            subject: "/var".into(),
            state: AlertState::Pending,
            since_ms: 1_990_000,
            started_ms: 1_990_000,
            value: 91.0,
            summary: "disk /var of db-1 at 91.0% (above 90)".into(),
            acked_by: None,
            silenced_by: None,
        };
        vec![cpu, disk]
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            app.update(key(KeyCode::Char(c)));
        }
    }

    #[test]
    fn an_operator_acknowledges_and_silences_from_the_alerts_view() {
        let mut app = fixture(Role::Operator);
        app.update(Event::Alerts(Ok(two_alerts())));
        assert_eq!(app.alerts.firing(), 1);
        app.take_commands();
        typed(&mut app, "8");
        assert_eq!(app.view, View::Alerts);
        assert_eq!(app.take_commands(), [Command::Alerts], "opening asks again");
        typed(&mut app, "r");
        assert!(app.take_commands().is_empty(), "one list at a time");
        app.update(Event::Alerts(Ok(two_alerts())));

        // `a` on the firing alert (listed first) acknowledges it.
        typed(&mut app, "a");
        let cpu = two_alerts()[0].id;
        assert_eq!(
            app.take_commands(),
            [Command::AckAlert {
                id: cpu,
                label: "cpu-high on web-1".into()
            }]
        );
        let mut acked = two_alerts()[0].clone();
        acked.acked_by = Some("ops".into());
        app.update(Event::AlertDone(Ok((
            "acknowledged cpu-high on web-1".into(),
            Some(Box::new(acked)),
        ))));
        assert_eq!(
            app.alerts.list().next().and_then(|a| a.acked_by.clone()),
            Some("ops".into())
        );

        // A pending alert cannot be acknowledged: the footer says why, nothing is asked.
        typed(&mut app, "ja");
        assert!(app.take_commands().is_empty());
        assert!(
            app.notice
                .as_deref()
                .is_some_and(|n| n.contains("only a firing alert")),
            "{:?}",
            app.notice
        );

        // `S` asks for a duration and a reason, then silences that rule on that agent.
        typed(&mut app, "S");
        assert!(matches!(
            app.prompt.as_ref().map(|p| &p.kind),
            Some(PromptKind::Silence { rule, .. }) if rule == "disk-full"
        ));
        typed(&mut app, "2h");
        app.update(key(KeyCode::Enter));
        assert!(app.take_commands().is_empty(), "no reason given");
        assert!(app.notice.as_deref().is_some_and(|n| n.contains("say why")));
        typed(&mut app, "S90x deploying");
        app.update(key(KeyCode::Enter));
        assert!(app.take_commands().is_empty(), "bad duration");
        assert!(
            app.notice
                .as_deref()
                .is_some_and(|n| n.contains("unknown unit")),
            "{:?}",
            app.notice
        );
        typed(&mut app, "S2h deploying db");
        app.update(key(KeyCode::Enter));
        assert_eq!(
            app.take_commands(),
            [Command::SilenceAlert {
                rule: "disk-full".into(),
                agent: db1().to_string(),
                duration_ms: 7_200_000,
                comment: "deploying db".into(),
                label: "disk-full on db-1".into(),
            }]
        );
        // Done: the list is asked for again to show what the silence mutes.
        app.update(Event::AlertDone(Ok(("silenced".into(), None))));
        assert_eq!(app.take_commands(), [Command::Alerts]);

        // Pushes missed by a lagging subscription: the list is asked for again.
        app.update(Event::Alerts(Ok(two_alerts())));
        app.update(Event::Fleet(Box::new(FleetEvent::Lagged { missed: 3 })));
        assert_eq!(app.take_commands(), [Command::Alerts]);

        // The hub's push resolves the firing one: the header count drops.
        let mut resolved = two_alerts()[0].clone();
        resolved.state = AlertState::Resolved;
        app.update(Event::Fleet(Box::new(FleetEvent::Alert(resolved))));
        assert_eq!(app.alerts.firing(), 0);

        // Enter opens the agent of the alert under the cursor.
        app.update(key(KeyCode::Char('g')));
        app.update(key(KeyCode::Enter));
        assert!(matches!(app.view, View::Agent(_)));
    }

    #[test]
    fn a_viewer_sees_alerts_but_cannot_acknowledge_or_silence() {
        let mut app = fixture(Role::Viewer);
        app.update(Event::Alerts(Ok(two_alerts())));
        typed(&mut app, "8");
        app.take_commands();
        typed(&mut app, "aS");
        assert!(app.take_commands().is_empty());
        assert!(app.prompt.is_none());
        assert_eq!(app.alerts.len(), 2);
    }

    fn alert(
        rule: &str,
        agent: u8,
        state: AlertState,
        severity: Severity,
        since: u64,
    ) -> AlertInfo {
        let agent = IdentityId::from_random(Role::Agent, [agent; 8]);
        AlertInfo {
            id: AlertId::of(rule, &agent, ""),
            rule: rule.into(),
            severity,
            agent,
            agent_name: format!("a-{rule}"),
            subject: String::new(),
            state,
            since_ms: since,
            started_ms: since,
            value: 1.0,
            summary: String::new(),
            acked_by: None,
            silenced_by: None,
        }
    }

    #[test]
    fn pushes_change_counts_order_and_markers() {
        let mut board = AlertBoard::default();
        board.set_list(Ok(vec![
            alert("cpu", 1, AlertState::Firing, Severity::Warning, 10),
            alert("disk", 2, AlertState::Pending, Severity::Critical, 20),
        ]));
        assert_eq!(board.firing(), 1);
        let first = board.selected_alert().map(|a| a.rule.clone());
        assert_eq!(first.as_deref(), Some("cpu"));
        // The pending one fires: the loudest goes first, the cursor stays on its alert.
        board.apply(alert("disk", 2, AlertState::Firing, Severity::Critical, 30));
        assert_eq!(board.firing(), 2);
        let rules: Vec<&str> = board.list().map(|a| a.rule.as_str()).collect();
        assert_eq!(rules, ["disk", "cpu"]);
        assert_eq!(board.selected, 1, "the cursor follows the alert it was on");
        let web = IdentityId::from_random(Role::Agent, [2; 8]);
        assert_eq!(board.agent_severity(&web), Some(Severity::Critical));
        // Silenced: still listed, no longer counted or marked.
        let mut muted = alert("disk", 2, AlertState::Firing, Severity::Critical, 30);
        muted.silenced_by = Some(SilenceId(1));
        board.apply(muted);
        assert_eq!(board.firing(), 1);
        assert_eq!(board.agent_severity(&web), None);
        assert_eq!(board.affected().len(), 1);
        // Resolved.
        board.apply(alert("cpu", 1, AlertState::Resolved, Severity::Warning, 40));
        assert_eq!(board.firing(), 0);
        assert_eq!(
            board.group_counts().map(|(_, n)| n),
            [0, 0, 1, 1],
            "firing, pending, silenced, resolved"
        );
    }

    #[test]
    fn resolved_alerts_are_bounded() {
        let mut board = AlertBoard::default();
        for i in 0..(RESOLVED_KEPT as u64 + 30) {
            let mut a = alert("r", 1, AlertState::Resolved, Severity::Info, i);
            a.id = AlertId(i);
            board.apply(a);
        }
        board.apply(alert("f", 1, AlertState::Firing, Severity::Info, 5));
        assert_eq!(board.len(), RESOLVED_KEPT + 1);
        assert!(
            board.list().skip(1).all(|a| a.since_ms >= 30),
            "the newest resolved are kept"
        );
        board.set_list(Err("forbidden".into()));
        assert_eq!(board.loaded, Fetched::Failed("forbidden".into()));
        assert_eq!(
            board.len(),
            RESOLVED_KEPT + 1,
            "a failed refresh keeps what we knew"
        );
    }
}
