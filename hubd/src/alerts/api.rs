//! The alert requests of the operator API: rules, alerts, acknowledgements and silences. Roles
//! are checked here: viewers read, operators change.

use crate::admin::Actor;
use crate::{HubCtx, HubError};
use flotilla_wire::ErrorCode;
use flotilla_wire::msg::{OpRequest, OpResponse};

/// Whether `req` is one of the alert requests this module answers.
pub(crate) fn is_alert_request(req: &OpRequest) -> bool {
    matches!(
        req,
        OpRequest::AlertRules
            | OpRequest::AlertRuleAdd(_)
            | OpRequest::AlertRuleRemove { .. }
            | OpRequest::AlertRuleShow { .. }
            | OpRequest::AlertRuleTest(_)
            | OpRequest::Alerts { .. }
            | OpRequest::AlertAck { .. }
            | OpRequest::SilenceAdd(_)
            | OpRequest::Silences { .. }
            | OpRequest::SilenceExpire { .. }
    )
}

/// What an alert request is called in the audit log, and what it acts on.
pub(crate) fn audit_name(req: &OpRequest) -> (&'static str, String) {
    match req {
        OpRequest::AlertRules => ("alert.rules", String::new()),
        OpRequest::AlertRuleAdd(rule) => ("alert.add", rule.name.clone()),
        OpRequest::AlertRuleRemove { name } => ("alert.rm", name.clone()),
        OpRequest::AlertRuleShow { name } => ("alert.show", name.clone()),
        OpRequest::AlertRuleTest(rule) => ("alert.test", rule.name.clone()),
        OpRequest::Alerts { .. } => ("alerts.list", String::new()),
        OpRequest::AlertAck { id, .. } => ("alert.ack", id.to_string()),
        OpRequest::SilenceAdd(spec) => ("silence.add", spec.rule.clone()),
        OpRequest::Silences { .. } => ("silence.list", String::new()),
        OpRequest::SilenceExpire { id } => ("silence.expire", id.to_string()),
        _ => ("unknown", String::new()),
    }
}

/// Answers one alert request.
pub(crate) async fn answer(
    _ctx: &HubCtx,
    _actor: &Actor,
    _req: OpRequest,
) -> Result<OpResponse, HubError> {
    Err(HubError::refused(
        ErrorCode::BadRequest,
        "alerts are not served by this hub yet",
    ))
}
