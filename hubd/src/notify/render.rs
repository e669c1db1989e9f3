//! What each kind of receiver is sent for one outbox message: the versioned JSON of a generic
//! webhook, Slack's `{"text": …}`, ntfy's text and headers, an e-mail's subject and body. Pure
//! functions of the stored message, so every retry sends the same bytes.

use super::{AlertTransition, Severity, TransitionState};
use serde::Serialize;

/// Version of the webhook JSON schema; a change that could break a consumer bumps it.
pub const SCHEMA_VERSION: u32 = 1;

/// The webhook body (`docs/alerts.md`, Delivery, has the schema).
#[derive(Debug, Serialize)]
pub struct WebhookPayload<'a> {
    /// [`SCHEMA_VERSION`].
    pub version: u32,
    /// Stable notification id, also in `X-Flotilla-Delivery`: drop a second message with it.
    pub id: &'a str,
    /// The receiver's name in the hub's configuration.
    pub receiver: &'a str,
    /// When the hub queued the message, ms since the epoch.
    pub created_ms: u64,
    /// The transitions, oldest first.
    pub alerts: Vec<WebhookAlert<'a>>,
}

/// One transition in a [`WebhookPayload`].
#[derive(Debug, Serialize)]
pub struct WebhookAlert<'a> {
    /// Stable per (rule, agent, subject), 16 hex digits: a firing and its resolution share it.
    pub alert_id: String,
    /// The rule's name.
    pub rule: &'a str,
    /// `info`, `warning` or `critical`.
    pub severity: Severity,
    /// `firing` or `resolved`.
    pub state: TransitionState,
    /// The agent's name.
    pub agent: &'a str,
    /// The agent's identity id (names can be reused after a revocation; ids cannot).
    pub agent_id: &'a str,
    /// What on the agent (mount, container, unit), or null.
    pub subject: Option<&'a str>,
    /// The value that decided it.
    pub value: f64,
    /// One line for people.
    pub summary: &'a str,
    /// When the transition happened, ms since the epoch.
    pub at_ms: u64,
}

/// The webhook body for a message.
pub fn webhook_body(
    id: &str,
    receiver: &str,
    created_ms: u64,
    alerts: &[AlertTransition],
) -> Vec<u8> {
    let payload = WebhookPayload {
        version: SCHEMA_VERSION,
        id,
        receiver,
        created_ms,
        alerts: alerts
            .iter()
            .map(|a| WebhookAlert {
                alert_id: a.alert_id.to_string(),
                rule: &a.rule,
                severity: a.severity,
                state: a.state,
                agent: &a.agent_name,
                agent_id: a.agent.as_str(),
                subject: (!a.subject.is_empty()).then_some(a.subject.as_str()),
                value: a.value,
                summary: &a.summary,
                at_ms: a.at_ms,
            })
            .collect(),
    };
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// `X-Flotilla-Signature` for `body`: `sha256=` and the hex HMAC-SHA256 of the body under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// One line per transition: `[FIRING] critical disk on web-1 (/): disk / at 97% (value 97)`.
pub fn line(a: &AlertTransition) -> String {
    let state = match a.state {
        TransitionState::Firing => "FIRING",
        TransitionState::Resolved => "RESOLVED",
    };
    let mut s = format!(
        "[{state}] {} {} on {}",
        a.severity.as_str(),
        a.rule,
        a.agent_name
    );
    if !a.subject.is_empty() {
        s.push_str(&format!(" ({})", a.subject));
    }
    if !a.summary.is_empty() {
        s.push_str(": ");
        s.push_str(&a.summary);
    }
    s.push_str(&format!(" (value {})", a.value));
    s
}

/// A title for the whole message: the one alert, or counts.
pub fn title(alerts: &[AlertTransition]) -> String {
    match alerts {
        [one] => format!(
            "Flotilla: {} {} on {}",
            one.rule,
            super::state_str(one.state),
            one.agent_name
        ),
        many => {
            let firing = many
                .iter()
                .filter(|a| a.state == TransitionState::Firing)
                .count();
            format!(
                "Flotilla: {firing} firing, {} resolved",
                many.len() - firing
            )
        }
    }
}

/// Plain text: the lines, then the notification id.
pub fn text(id: &str, alerts: &[AlertTransition]) -> String {
    let mut out: Vec<String> = alerts.iter().map(line).collect();
    out.push(format!("notification {id}"));
    out.join("\n")
}

/// The Slack-compatible body: `{"text": title + lines}`.
pub fn slack_body(id: &str, alerts: &[AlertTransition]) -> Vec<u8> {
    let text = format!("*{}*\n{}", title(alerts), text(id, alerts));
    serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default()
}

/// ntfy's Priority: 5 for a critical firing, 4 for a warning firing, 3 for info, 2 when all resolved.
pub fn ntfy_priority(alerts: &[AlertTransition]) -> u8 {
    alerts
        .iter()
        .map(|a| match (a.state, a.severity) {
            (TransitionState::Resolved, _) => 2,
            (TransitionState::Firing, Severity::Info) => 3,
            (TransitionState::Firing, Severity::Warning) => 4,
            (TransitionState::Firing, Severity::Critical) => 5,
        })
        .max()
        .unwrap_or(3)
}

/// ntfy's Tags: emoji short codes by what the message holds.
pub fn ntfy_tags(alerts: &[AlertTransition]) -> String {
    let mut tags = Vec::new();
    let firing = |s: Severity| {
        alerts
            .iter()
            .any(|a| a.state == TransitionState::Firing && a.severity == s)
    };
    if firing(Severity::Critical) {
        tags.push("rotating_light");
    }
    if firing(Severity::Warning) {
        tags.push("warning");
    }
    if alerts.iter().any(|a| a.state == TransitionState::Resolved) {
        tags.push("white_check_mark");
    }
    tags.push("flotilla");
    tags.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(state: TransitionState, severity: Severity) -> AlertTransition {
        AlertTransition {
            alert_id: flotilla_wire::alerts::AlertId(0xab),
            rule: "disk".into(),
            severity,
            agent: flotilla_wire::IdentityId::from_random(flotilla_wire::Role::Agent, [7; 8]),
            agent_name: "web-1".into(),
            subject: "/".into(),
            state,
            value: 97.5,
            summary: "disk / at 97.5%".into(),
            at_ms: 1_700_000_000_000,
            receivers: vec!["ops".into()],
        }
    }

    #[test]
    fn webhook_schema_is_pinned() {
        let body = webhook_body(
            "ntf-1",
            "ops",
            5,
            &[t(TransitionState::Firing, Severity::Critical)],
        );
        assert_eq!(
            String::from_utf8(body).expect("utf8"),
            r#"{"version":1,"id":"ntf-1","receiver":"ops","created_ms":5,"alerts":[{"alert_id":"00000000000000ab","rule":"disk","severity":"critical","state":"firing","agent":"web-1","agent_id":"a-0707070707070707","subject":"/","value":97.5,"summary":"disk / at 97.5%","at_ms":1700000000000}]}"#
        );
    }

    #[test]
    fn signature_matches_a_known_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn texts_titles_and_ntfy_headers() {
        let a = [
            t(TransitionState::Firing, Severity::Warning),
            t(TransitionState::Resolved, Severity::Critical),
        ];
        assert_eq!(title(&a[..1]), "Flotilla: disk firing on web-1");
        assert_eq!(title(&a), "Flotilla: 1 firing, 1 resolved");
        assert_eq!(
            line(&a[0]),
            "[FIRING] warning disk on web-1 (/): disk / at 97.5% (value 97.5)"
        );
        assert_eq!(ntfy_priority(&a), 4);
        assert_eq!(ntfy_tags(&a), "warning,white_check_mark,flotilla");
        let slack: serde_json::Value =
            serde_json::from_slice(&slack_body("ntf-9", &a)).expect("json");
        assert!(
            slack["text"]
                .as_str()
                .expect("text")
                .ends_with("notification ntf-9")
        );
    }
}
