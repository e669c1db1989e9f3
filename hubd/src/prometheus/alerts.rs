//! The alert gauges of the Prometheus endpoint: alerts firing now by rule and severity. Every rule
//! is exported, at 0 when nothing of it fires, so `flotilla_hub_alerts_firing > 0` is a Prometheus
//! alert on the hub's alerts and a rule that disappears reads as absent rather than as quiet.
//! Silenced alerts count: a silence mutes notifications, the condition still holds.

use super::Exposition;
use flotilla_wire::alerts::{AlertInfo, AlertState, Severity};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

/// Labels of one series: a rule's name is checked to be `[A-Za-z0-9_.-]`, so it needs no escaping.
type RuleLabels = Vec<(&'static str, String)>;

/// Firing alerts per (rule, severity), every rule of `rules` present.
pub(super) fn firing_counts<'a>(
    rules: impl IntoIterator<Item = (&'a str, Severity)>,
    alerts: &[AlertInfo],
) -> BTreeMap<(String, Severity), u64> {
    let mut counts: BTreeMap<(String, Severity), u64> = rules
        .into_iter()
        .map(|(name, severity)| ((name.to_owned(), severity), 0))
        .collect();
    for a in alerts.iter().filter(|a| a.state == AlertState::Firing) {
        *counts.entry((a.rule.clone(), a.severity)).or_default() += 1;
    }
    counts
}

impl Exposition {
    /// Registers `flotilla_hub_alerts_firing` from [`firing_counts`].
    pub(super) fn alert_gauges(&mut self, counts: BTreeMap<(String, Severity), u64>) {
        let family = Family::<RuleLabels, Gauge<u64, AtomicU64>>::default();
        for ((rule, severity), n) in counts {
            family
                .get_or_create(&vec![
                    ("rule", rule),
                    ("severity", severity.as_str().to_owned()),
                ])
                .set(n);
        }
        self.0.register(
            "flotilla_hub_alerts_firing",
            "Alerts firing now by rule and severity (silenced ones too); 0 for a rule with none.",
            family,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::alerts::AlertId;
    use flotilla_wire::{IdentityId, Role};
    use prometheus_client::registry::Registry;

    fn alert(rule: &str, state: AlertState, severity: Severity, n: u8) -> AlertInfo {
        let agent = IdentityId::from_random(Role::Agent, [n; 8]);
        AlertInfo {
            id: AlertId::of(rule, &agent, ""),
            rule: rule.into(),
            severity,
            agent,
            agent_name: format!("a-{n}"),
            subject: String::new(),
            state,
            since_ms: 0,
            started_ms: 0,
            value: 0.0,
            summary: String::new(),
            acked_by: None,
            silenced_by: None,
        }
    }

    #[test]
    fn every_rule_is_exported_and_only_firing_alerts_count() {
        let alerts = [
            alert("cpu", AlertState::Firing, Severity::Critical, 1),
            alert("cpu", AlertState::Firing, Severity::Critical, 2),
            alert("cpu", AlertState::Pending, Severity::Critical, 3),
            alert("disk", AlertState::Resolved, Severity::Warning, 1),
        ];
        let counts = firing_counts(
            [("cpu", Severity::Critical), ("disk", Severity::Warning)],
            &alerts,
        );
        let mut t = Exposition(Registry::default());
        t.alert_gauges(counts);
        let text = t.encode().expect("encode");
        assert!(
            text.contains("flotilla_hub_alerts_firing{rule=\"cpu\",severity=\"critical\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_hub_alerts_firing{rule=\"disk\",severity=\"warning\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE flotilla_hub_alerts_firing gauge"),
            "{text}"
        );
    }
}
