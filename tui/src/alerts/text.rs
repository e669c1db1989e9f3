//! Alerts, rules and silences as text tables and JSON. JSON writes an alert's id as the 16 hex
//! digits the tables show and `flotilla alert ack` takes (a 64-bit number would lose digits in
//! JavaScript), and a rule as the keys of its `[[alert]]` table.

use crate::format::ago;
use crate::util::{Escaped, utc};
use flotilla_wire::alerts::{
    AlertInfo, AlertKind, AlertRule, AlertState, Comparison, RuleInfo, RuleOrigin, Silence,
    format_duration_ms,
};
use serde_json::{Value, json};
use std::cmp::Ordering;
use std::fmt::Write as _;

/// Which group of the alerts list an alert falls in, in the order they are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Firing, no silence: someone should look.
    Firing,
    /// The condition holds, not yet for the rule's `for`.
    Pending,
    /// Firing or pending, muted by a silence.
    Silenced,
    /// Over.
    Resolved,
}

impl Group {
    /// The word in the STATE column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Pending => "pending",
            Self::Silenced => "silenced",
            Self::Resolved => "resolved",
        }
    }
}

/// The group `a` is listed in.
pub fn group(a: &AlertInfo) -> Group {
    match a.state {
        AlertState::Resolved => Group::Resolved,
        _ if a.silenced_by.is_some() => Group::Silenced,
        AlertState::Firing => Group::Firing,
        AlertState::Pending => Group::Pending,
    }
}

/// Whether `a` fires and no silence mutes it: what the header counts and `--firing-exit` checks.
pub fn firing_loud(a: &AlertInfo) -> bool {
    a.state == AlertState::Firing && a.silenced_by.is_none()
}

/// List order: by group, then the loudest, then the newest change, then rule, agent and subject
/// so equal alerts keep their places between answers.
pub fn compare(a: &AlertInfo, b: &AlertInfo) -> Ordering {
    group(a)
        .cmp(&group(b))
        .then_with(|| b.severity.cmp(&a.severity))
        .then_with(|| b.since_ms.cmp(&a.since_ms))
        .then_with(|| a.rule.cmp(&b.rule))
        .then_with(|| a.agent_name.cmp(&b.agent_name))
        .then_with(|| a.subject.cmp(&b.subject))
}

/// A value as the rule kind reads it: `93.5`, `12.0`, `1500000` (bytes per second stay whole).
pub fn value(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Acknowledged by whom, muted by which silence: the NOTE column.
pub fn note(a: &AlertInfo) -> String {
    let mut parts = Vec::new();
    if let Some(id) = a.silenced_by {
        parts.push(format!("silence #{id}"));
    }
    if let Some(by) = &a.acked_by {
        parts.push(format!("acked by {}", Escaped(by)));
    }
    parts.join(", ")
}

/// The alerts table: id, state, severity, rule, agent, subject, value, how long in this state, note.
pub fn alerts_table(alerts: &[AlertInfo], now_ms: u64) -> String {
    let mut out = format!(
        "{:<16} {:<8} {:<8} {:<20} {:<16} {:<12} {:>8} {:<9} NOTE\n",
        "ID", "STATE", "SEVERITY", "RULE", "AGENT", "SUBJECT", "VALUE", "SINCE"
    );
    for a in alerts {
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<8} {:<20} {:<16} {:<12} {:>8} {:<9} {}",
            a.id.to_string(),
            group(a).as_str(),
            a.severity.as_str(),
            Escaped(&a.rule),
            Escaped(&a.agent_name),
            Escaped(&a.subject),
            value(a.value),
            ago(a.since_ms, now_ms),
            note(a)
        );
    }
    out
}

/// One alert as JSON: its fields, with the id in hex and the list group as `shown`.
pub fn alert_json(a: &AlertInfo) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("id".into(), Value::String(a.id.to_string()));
        map.insert("shown".into(), Value::String(group(a).as_str().into()));
    }
    v
}

/// Alerts as a JSON array.
pub fn alerts_json(alerts: &[AlertInfo]) -> Value {
    Value::Array(alerts.iter().map(alert_json).collect())
}

/// What the rule watches, in a few words: `disk > 90 (resolve 85)`, `container unhealthy web-*`.
pub fn condition(rule: &AlertRule) -> String {
    match &rule.kind {
        AlertKind::AgentOffline => "offline".into(),
        AlertKind::Threshold {
            series,
            cmp,
            threshold,
        } => {
            let op = match cmp {
                Comparison::Above => '>',
                Comparison::Below => '<',
            };
            let mut s = format!("{} {op} {}", series.as_str(), value(*threshold));
            if let Some(r) = rule.resolve {
                let _ = write!(s, " (resolve {})", value(r));
            }
            s
        }
        AlertKind::DiskFull {
            within_ms,
            lookback_ms,
        } => format!(
            "disk full within {} (fit {})",
            format_duration_ms(*within_ms),
            format_duration_ms(*lookback_ms)
        ),
        AlertKind::Container { condition, name } => {
            format!("container {} {}", condition.as_str(), Escaped(name))
        }
        AlertKind::UnitFailed { name } => format!("unit failed {}", Escaped(name)),
        AlertKind::JobFailed => "job failed".into(),
        AlertKind::CertExpiring { within_ms } => {
            format!("cert expires within {}", format_duration_ms(*within_ms))
        }
        AlertKind::ClockSkew { max_ms } => {
            format!("clock skew > {}", format_duration_ms(*max_ms))
        }
    }
}

fn origin(o: RuleOrigin) -> &'static str {
    match o {
        RuleOrigin::Config => "config",
        RuleOrigin::Live => "live",
    }
}

/// The rules table.
pub fn rules_table(rules: &[RuleInfo]) -> String {
    let mut out = format!(
        "{:<20} {:<8} {:<6} {:<32} {:<16} {:<6} RECEIVERS\n",
        "NAME", "SEVERITY", "FOR", "CONDITION", "SELECTOR", "ORIGIN"
    );
    for r in rules {
        let rule = &r.rule;
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:<6} {:<32} {:<16} {:<6} {}",
            Escaped(&rule.name),
            rule.severity.as_str(),
            if rule.for_ms == 0 {
                "-".into()
            } else {
                format_duration_ms(rule.for_ms)
            },
            condition(rule),
            Escaped(&rule.selector),
            origin(r.origin),
            Escaped(&rule.receivers.join(","))
        );
    }
    out
}

/// A rule as JSON: the keys of its `[[alert]]` table, then where it came from.
pub fn rule_json(r: &RuleInfo) -> Value {
    let mut v = serde_json::to_value(r.rule.to_spec()).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("origin".into(), json!(origin(r.origin)));
        map.insert("added_by".into(), json!(r.added_by));
        map.insert("added_ms".into(), json!(r.added_ms));
    }
    v
}

/// A rule as the `[[alert]]` table that would define it in the hub's config.
pub fn rule_toml(rule: &AlertRule) -> String {
    #[derive(serde::Serialize)]
    struct File {
        alert: Vec<flotilla_wire::alerts::RuleSpec>,
    }
    toml::to_string(&File {
        alert: vec![rule.to_spec()],
    })
    .unwrap_or_default()
}

/// `flotilla alert show`: where the rule came from, its table, and its alerts.
pub fn rule_detail(info: &RuleInfo, alerts: &[AlertInfo], now_ms: u64) -> String {
    let mut out = match info.origin {
        RuleOrigin::Config => "# from the hub's config\n".to_string(),
        RuleOrigin::Live => format!(
            "# added live by {} at {}\n",
            Escaped(&info.added_by),
            utc(info.added_ms)
        ),
    };
    // A rule's words are checked to be printable; the summary template is one line.
    out.push_str(&crate::util::escaped_controls(&rule_toml(&info.rule)));
    out.push('\n');
    if alerts.is_empty() {
        out.push_str("no alerts\n");
    } else {
        out.push_str(&alerts_table(alerts, now_ms));
    }
    out
}

/// The silences table.
pub fn silences_table(silences: &[Silence], now_ms: u64) -> String {
    let mut out = format!(
        "{:<5} {:<16} {:<16} {:<9} {:<21} {:<12} COMMENT\n",
        "ID", "RULE", "SELECTOR", "STATE", "ENDS", "BY"
    );
    for s in silences {
        let state = if s.active_at(now_ms) {
            "active"
        } else if now_ms < s.starts_ms {
            "upcoming"
        } else {
            "ended"
        };
        let _ = writeln!(
            out,
            "{:<5} {:<16} {:<16} {:<9} {:<21} {:<12} {}",
            format!("#{}", s.id),
            Escaped(&s.rule),
            Escaped(&s.selector),
            state,
            utc(s.ends_ms),
            Escaped(&s.created_by),
            Escaped(&s.comment)
        );
    }
    out
}

/// A state change as `flotilla watch` prints it: `alert firing   critical root-full web-1 / 93.5`.
pub fn event_line(a: &AlertInfo) -> String {
    let mut line = format!(
        "alert    {:<8} {:<8} {} {} ",
        group(a).as_str(),
        a.severity.as_str(),
        Escaped(&a.rule),
        Escaped(&a.agent_name)
    );
    if !a.subject.is_empty() {
        let _ = write!(line, "{} ", Escaped(&a.subject));
    }
    line.push_str(&value(a.value));
    if !a.summary.is_empty() {
        let _ = write!(line, ": {}", Escaped(&a.summary));
    }
    let note = note(a);
    if !note.is_empty() {
        let _ = write!(line, " ({note})");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::alerts::{AlertId, Severity, SilenceId};
    use flotilla_wire::{IdentityId, Role};

    pub(crate) fn alert(rule: &str, state: AlertState, severity: Severity) -> AlertInfo {
        let agent = IdentityId::from_random(Role::Agent, [7; 8]);
        AlertInfo {
            id: AlertId::of(rule, &agent, "/"),
            rule: rule.into(),
            severity,
            agent,
            agent_name: "web-1".into(),
            subject: "/".into(),
            state,
            since_ms: 1_000,
            started_ms: 500,
            value: 93.5,
            summary: "disk / at 93.5%".into(),
            acked_by: None,
            silenced_by: None,
        }
    }

    #[test]
    fn alerts_are_grouped_loudest_first() {
        let mut silenced = alert("s", AlertState::Firing, Severity::Critical);
        silenced.silenced_by = Some(SilenceId(2));
        let mut list = vec![
            alert("r", AlertState::Resolved, Severity::Critical),
            silenced,
            alert("p", AlertState::Pending, Severity::Critical),
            alert("w", AlertState::Firing, Severity::Warning),
            alert("c", AlertState::Firing, Severity::Critical),
        ];
        list.sort_by(compare);
        let order: Vec<&str> = list.iter().map(|a| a.rule.as_str()).collect();
        assert_eq!(order, ["c", "w", "p", "s", "r"]);
        assert_eq!(list.iter().filter(|a| firing_loud(a)).count(), 2);
        let table = alerts_table(&list, 61_000);
        assert!(table.contains("silenced critical s"), "{table}");
        assert!(table.contains("silence #2"), "{table}");
        assert!(table.contains("1m ago"), "{table}");
    }

    #[test]
    fn json_ids_are_the_hex_the_table_shows() {
        let a = alert("r", AlertState::Firing, Severity::Warning);
        let v = alert_json(&a);
        assert_eq!(v["id"], a.id.to_string());
        assert_eq!(v["state"], "firing");
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["shown"], "firing");
        assert!(alerts_table(std::slice::from_ref(&a), 0).contains(&a.id.to_string()));
    }

    #[test]
    fn names_chosen_by_agents_are_escaped() {
        let mut a = alert("r", AlertState::Firing, Severity::Warning);
        a.agent_name = "evil\x1b[2J".into();
        a.subject = "/mnt/\u{202e}x".into();
        a.summary = "bell\x07".into();
        let line = event_line(&a);
        assert!(line.contains(r"evil\x1b[2J"), "{line}");
        assert!(line.contains(r"/mnt/\u{202e}x"), "{line}");
        assert!(line.contains(r"bell\x07"), "{line}");
        assert!(
            !alerts_table(&[a], 0)
                .chars()
                .any(|c| c != '\n' && crate::util::must_escape(c))
        );
    }
}
