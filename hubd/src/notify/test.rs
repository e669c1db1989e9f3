//! `hubd notify test` and `hubd notify list`, answered over the maintenance socket: a test alert
//! goes through the same routing, outbox and delivery as a rule's, so a sysadmin can check a
//! receiver (URL, secret, SMTP, quiet hours) before an incident does.

use super::{AlertTransition, Severity, TransitionState, state_str};
use crate::HubCtx;
use crate::maint::MaintResponse;
use crate::store::{self, outbox};
use flotilla_wire::alerts::AlertId;
use flotilla_wire::{IdentityId, Role};
use serde::{Deserialize, Serialize};

/// Most outbox rows one `hubd notify list` returns: a screenful of history, and well inside the
/// maintenance socket's answer limit even for messages of many alerts.
const MAX_LIST: u32 = 200;

/// A test transition as `hubd notify test` asks for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyTestSpec {
    /// Receivers to route to; empty: every receiver whose severities accept it.
    pub receivers: Vec<String>,
    /// Severity of the test alert.
    pub severity: Severity,
    /// Firing or resolved.
    pub state: TransitionState,
    /// Rule name shown.
    pub rule: String,
    /// Agent name shown.
    pub agent: String,
    /// Subject shown, if any.
    pub subject: Option<String>,
    /// Summary line.
    pub summary: String,
}

impl NotifyTestSpec {
    /// The transition it stands for, at `now_ms`. The agent is a name only: its id is derived
    /// from the name, so the alert id is stable per (rule, agent, subject), as a rule's is, and a
    /// test firing and its resolution pair up.
    pub fn transition(&self, now_ms: u64) -> AlertTransition {
        let digest = blake3::hash(self.agent.as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest.as_bytes()[..8]);
        let agent = IdentityId::from_random(Role::Agent, bytes);
        let subject = self.subject.clone().unwrap_or_default();
        AlertTransition {
            alert_id: AlertId::of(&self.rule, &agent, &subject),
            rule: self.rule.clone(),
            severity: self.severity,
            agent,
            agent_name: self.agent.clone(),
            subject,
            state: self.state,
            value: 0.0,
            summary: self.summary.clone(),
            at_ms: now_ms,
            receivers: self.receivers.clone(),
        }
    }
}

/// Queues the test transition, refusing unknown receivers by name; audited as `notify.test`.
pub(crate) async fn answer(ctx: &HubCtx, spec: NotifyTestSpec) -> MaintResponse {
    let known = ctx.notifier.receiver_names();
    if known.is_empty() {
        return MaintResponse::Error {
            message: "no receiver is configured: add a [[receiver]] table to the hub's configuration and reload (SIGHUP)".into(),
        };
    }
    if let Some(unknown) = spec.receivers.iter().find(|r| !known.contains(r)) {
        return MaintResponse::Error {
            message: format!(
                "receiver {unknown:?} is not configured (configured: {})",
                known.join(", ")
            ),
        };
    }
    let plan = ctx.notifier.plan();
    let targets: Vec<String> = plan
        .receivers
        .iter()
        .filter(|r| spec.receivers.is_empty() || spec.receivers.contains(&r.name))
        .filter(|r| r.accepts(spec.severity))
        .map(|r| r.name.clone())
        .collect();
    if targets.is_empty() {
        return MaintResponse::Error {
            message: format!(
                "no chosen receiver takes {} alerts (see their `severities`)",
                spec.severity.as_str()
            ),
        };
    }
    let now = store::now_ms();
    let detail = format!(
        "severity={} state={} rule={} receivers={}",
        spec.severity.as_str(),
        state_str(spec.state),
        spec.rule,
        targets.join(",")
    );
    if let Err(e) = ctx.notifier.submit(vec![spec.transition(now)]).await {
        return MaintResponse::Error {
            message: e.to_string(),
        };
    }
    let _ = ctx
        .store
        .call(move |c| {
            Ok(store::audit::append(
                c,
                now,
                "local-admin",
                "notify.test",
                "",
                &detail,
            )?)
        })
        .await;
    MaintResponse::Notified { receivers: targets }
}

/// The newest `limit` outbox messages.
pub(crate) async fn list(ctx: &HubCtx, limit: u32) -> MaintResponse {
    let limit = limit.clamp(1, MAX_LIST);
    match ctx.store.call(move |c| Ok(outbox::recent(c, limit)?)).await {
        Ok(messages) => MaintResponse::Outbox { messages },
        Err(e) => MaintResponse::Error {
            message: e.to_string(),
        },
    }
}
