//! Alerts: rules evaluated against what the hub already sees (samples, connections, workloads,
//! jobs), their alerts, silences and acknowledgements, and the handoff of state changes to
//! notification delivery.
//!
//! Delivery is not this module's business: every change of an alert to firing or resolved that
//! no silence mutes becomes an [`AlertTransition`] handed to a [`TransitionSink`] (the notifier),
//! which groups, stores and sends them.

use flotilla_wire::IdentityId;
use flotilla_wire::alerts::{AlertId, Severity};

/// The change a notification reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransitionState {
    /// The condition held for the rule's `for`.
    Firing,
    /// It is over.
    Resolved,
}

/// One alert changing to firing or resolved: what a receiver is told.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlertTransition {
    /// Stable id of the alert (rule, agent, subject): receivers deduplicate on it with `state`
    /// and `at_ms`.
    pub alert_id: AlertId,
    /// Rule name.
    pub rule: String,
    /// The rule's severity (quiet hours let only critical through).
    pub severity: Severity,
    /// Which agent.
    pub agent: IdentityId,
    /// Its display name.
    pub agent_name: String,
    /// Mount, sensor, interface, container, unit; empty when the rule has none.
    pub subject: String,
    /// Firing or resolved.
    pub state: TransitionState,
    /// The value that decided it.
    pub value: f64,
    /// The rendered summary line.
    pub summary: String,
    /// When it changed, ms since the epoch.
    pub at_ms: u64,
    /// Receiver names the rule routes to.
    pub receivers: Vec<String>,
}

/// Where transitions go. The notifier implements it; evaluation calls it with each batch of
/// changes, outside any lock, and must not wait on delivery: implementations queue and return.
pub trait TransitionSink: Send + Sync {
    /// Takes a batch of transitions, in the order they happened.
    fn submit(&self, batch: Vec<AlertTransition>);
}

/// The sink of a hub without receivers: logs each transition at info, so that an alert firing
/// still leaves a trace.
#[derive(Debug, Default)]
pub struct LogSink;

impl TransitionSink for LogSink {
    fn submit(&self, batch: Vec<AlertTransition>) {
        for t in batch {
            tracing::info!(
                alert_id = %t.alert_id,
                rule = %t.rule,
                agent = %t.agent_name,
                subject = %t.subject,
                state = ?t.state,
                value = t.value,
                "alert {}",
                match t.state {
                    TransitionState::Firing => "firing",
                    TransitionState::Resolved => "resolved",
                }
            );
        }
    }
}

pub mod api;
