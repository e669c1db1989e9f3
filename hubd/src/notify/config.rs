//! `[[receiver]]` tables and the `[notify]` settings of `hub.toml`, checked at load and at SIGHUP.

use super::Severity;
use deploy::SecretString;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Minutes in a day: quiet hours are minutes of the UTC day.
const DAY_MINUTES: usize = 24 * 60;

/// What a receiver is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    /// POST of the versioned JSON payload, signed with HMAC-SHA256 of `secret`.
    Webhook,
    /// POST of `{"text": …}` to a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat).
    Slack,
    /// POST of plain text to an ntfy topic URL, with Title, Priority and Tags headers.
    Ntfy,
    /// An e-mail over SMTP (STARTTLS unless `tls` says otherwise).
    Email,
}

impl ReceiverKind {
    /// The lowercase name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Ntfy => "ntfy",
            Self::Email => "email",
        }
    }
}

/// How an e-mail receiver secures its SMTP connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS; a server that does not offer it is refused.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption at all: only for a relay on the same host.
    None,
}

/// A UTC time-of-day range, `"HH:MM-HH:MM"`, during which a receiver gets only critical alerts.
/// The end is exclusive; a range whose end is before its start runs over midnight
/// (`"22:00-07:00"`); `24:00` stands for the end of the day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietHours {
    /// Start, minutes after 00:00 UTC.
    pub from_min: u16,
    /// End (exclusive), minutes after 00:00 UTC; 1440 for 24:00.
    pub to_min: u16,
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

impl std::str::FromStr for QuietHours {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("quiet hours {s:?} are not a UTC range like \"22:00-07:00\"");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let from_min = parse_hhmm(a).ok_or_else(bad)?;
        let to_min = parse_hhmm(b).ok_or_else(bad)?;
        if from_min == 1440 || from_min == to_min {
            return Err(format!(
                "quiet hours {s:?} are empty or ambiguous: give a start before 24:00 and an end different from it"
            ));
        }
        Ok(Self { from_min, to_min })
    }
}

impl std::fmt::Display for QuietHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.from_min), hm(self.to_min))
    }
}

impl Serialize for QuietHours {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for QuietHours {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl QuietHours {
    fn covers(&self, minute: usize) -> bool {
        let (a, b) = (usize::from(self.from_min), usize::from(self.to_min));
        if a < b {
            (a..b).contains(&minute)
        } else {
            minute >= a || minute < b
        }
    }
}

/// One place alerts go: `[[receiver]]` in `hub.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// What rules route to (`receivers = ["ops"]`); letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// What kind of receiver.
    pub kind: ReceiverKind,
    /// Where to POST (webhook, slack, ntfy). A secret: Slack-style URLs carry their token.
    /// `http://` only to a loopback host; anything else must be `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<SecretString>,
    /// webhook: the HMAC-SHA256 key of `X-Flotilla-Signature` (required). ntfy: an access token
    /// sent as `Authorization: Bearer` (optional). email: the SMTP password (with `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretString>,
    /// Severities this receiver gets; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severities: Vec<Severity>,
    /// UTC ranges during which only critical alerts go out; the others wait for the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quiet_hours: Vec<QuietHours>,
    /// email: the SMTP server, `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<String>,
    /// email: the sender, `Flotilla <flotilla@example.com>` or a bare address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// email: the recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// email: the SMTP user name (the password is `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// email: how the SMTP connection is secured (default `starttls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EmailTls>,
    /// PEM file of CA certificates to trust for this receiver (an internal CA or a self-signed
    /// server) instead of the built-in web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl ReceiverConfig {
    /// Whether this receiver gets alerts of `severity`.
    pub fn accepts(&self, severity: Severity) -> bool {
        self.severities.is_empty() || self.severities.contains(&severity)
    }

    /// When `now_ms` falls in this receiver's quiet hours: the time they end (ms since the epoch),
    /// adjoining or overlapping ranges taken together. `None` outside quiet hours.
    pub fn quiet_release_ms(&self, now_ms: u64) -> Option<u64> {
        if self.quiet_hours.is_empty() {
            return None;
        }
        let minute_ms = 60_000u64;
        let abs_min = now_ms / minute_ms;
        let quiet = |k: u64| {
            let m = ((abs_min + k) % DAY_MINUTES as u64) as usize;
            self.quiet_hours.iter().any(|q| q.covers(m))
        };
        if !quiet(0) {
            return None;
        }
        // Validation refuses ranges covering the whole day, so a quiet-free minute exists.
        (1..=DAY_MINUTES as u64)
            .find(|&k| !quiet(k))
            .map(|k| (abs_min + k) * minute_ms)
    }

    /// The SMTP TLS mode in force.
    pub fn email_tls(&self) -> EmailTls {
        self.tls.unwrap_or_default()
    }

    fn check(&self) -> Result<(), String> {
        let name = &self.name;
        let err = |what: String| Err(format!("receiver {name:?}: {what}"));
        let kind = self.kind.as_str();
        match self.kind {
            ReceiverKind::Webhook | ReceiverKind::Slack | ReceiverKind::Ntfy => {
                let Some(url) = &self.url else {
                    return err(format!("a {kind} receiver needs `url`"));
                };
                if let Err(e) = check_url(url.expose()) {
                    return err(e);
                }
                if self.kind == ReceiverKind::Webhook
                    && self.secret.as_ref().is_none_or(SecretString::is_empty)
                {
                    return err(
                        "a webhook receiver needs `secret`, the key receivers check the X-Flotilla-Signature with".into(),
                    );
                }
                if self.kind == ReceiverKind::Slack && self.secret.is_some() {
                    return err("a slack receiver takes no `secret` (its URL is the secret)".into());
                }
                for (field, set) in [
                    ("smtp", self.smtp.is_some()),
                    ("from", self.from.is_some()),
                    ("to", !self.to.is_empty()),
                    ("username", self.username.is_some()),
                    ("tls", self.tls.is_some()),
                ] {
                    if set {
                        return err(format!("`{field}` is for email receivers, not {kind}"));
                    }
                }
            }
            ReceiverKind::Email => {
                if self.url.is_some() {
                    return err("an email receiver takes `smtp = \"host:port\"`, not `url`".into());
                }
                let Some(smtp) = &self.smtp else {
                    return err("an email receiver needs `smtp = \"host:port\"`".into());
                };
                match smtp.rsplit_once(':') {
                    Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                    _ => return err(format!("smtp = {smtp:?} is not host:port")),
                }
                let Some(from) = &self.from else {
                    return err("an email receiver needs `from`".into());
                };
                if let Err(e) = from.parse::<lettre::message::Mailbox>() {
                    return err(format!("from = {from:?} is not an address ({e})"));
                }
                if self.to.is_empty() {
                    return err("an email receiver needs at least one address in `to`".into());
                }
                for to in &self.to {
                    if let Err(e) = to.parse::<lettre::message::Mailbox>() {
                        return err(format!("to {to:?} is not an address ({e})"));
                    }
                }
                if self.username.is_some() != self.secret.is_some() {
                    return err("`username` and `secret` (the SMTP password) go together".into());
                }
            }
        }
        if let Some(path) = &self.ca_file
            && let Err(e) = super::http::read_ca_file(path)
        {
            return err(e.to_string());
        }
        let mut covered = [false; DAY_MINUTES];
        for q in &self.quiet_hours {
            for (m, c) in covered.iter_mut().enumerate() {
                *c |= q.covers(m);
            }
        }
        if covered.iter().all(|c| *c) {
            return err(
                "quiet_hours cover the whole day, so nothing but critical would ever go out: narrow them or set severities = [\"critical\"]".into(),
            );
        }
        Ok(())
    }
}

/// Checks a receiver URL without ever printing it (it may carry a token).
fn check_url(url: &str) -> Result<(), String> {
    let uri: ::http::Uri = url
        .parse()
        .map_err(|_| "url is not a valid URL".to_string())?;
    let host = uri.host().ok_or("url has no host")?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err("url uses plain http to a host that is not loopback: use https (the alert text and its signature would cross the network in the clear)".into())
            }
        }
        _ => Err("url must start with https:// (or http:// to a loopback host)".into()),
    }
}

/// `[notify]` in `hub.toml`: how the outbox sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// How long a transition that opens a receiver's next message waits for others to join it,
    /// when that receiver had no message due within the last `group_interval_ms`.
    pub group_wait_ms: u32,
    /// Shortest time between two messages to one receiver: transitions arriving within it after
    /// a message went out join the next one, due this long after the last.
    pub group_interval_ms: u32,
    /// Wait before the first retry; each further retry waits twice as long (with full jitter).
    pub retry_initial_ms: u32,
    /// Longest wait between two tries.
    pub retry_max_s: u32,
    /// A message still undelivered this long after it was due is given up (audit `notify.give_up`).
    pub give_up_after_s: u32,
    /// One try (connect, TLS, request, answer) may take this long.
    pub send_timeout_s: u32,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            // The first alert of an incident goes out at once: waiting to group it would delay
            // the page past the goal of "the rule's `for` plus 2 s" (alerts_latency.py).
            group_wait_ms: 0,
            // Alerts of one incident (a host down takes its containers with it) land within a
            // few seconds of each other: after the first page, 5 s gathers the rest into one.
            group_interval_ms: 5_000,
            // A receiver restarting is back within seconds; 2 s then 4, 8… up to the maximum.
            retry_initial_ms: 2_000,
            // Five minutes: a receiver down for an hour is tried a dozen times, not thousands.
            retry_max_s: 300,
            // A day: an alert older than that is history, not news.
            give_up_after_s: 86_400,
            // A webhook answers in well under a second; SMTP with STARTTLS in a few.
            send_timeout_s: 15,
        }
    }
}

impl NotifyConfig {
    fn check(&self) -> Result<(), String> {
        if self.group_wait_ms > 600_000 {
            return Err(format!(
                "notify group_wait_ms = {} is over the 600000 ms maximum: alerts would wait too long",
                self.group_wait_ms
            ));
        }
        if self.group_interval_ms > 600_000 {
            return Err(format!(
                "notify group_interval_ms = {} is over the 600000 ms maximum: alerts would wait too long",
                self.group_interval_ms
            ));
        }
        if !(100..=600_000).contains(&self.retry_initial_ms) {
            return Err(format!(
                "notify retry_initial_ms = {} must be between 100 and 600000",
                self.retry_initial_ms
            ));
        }
        if u64::from(self.retry_max_s) * 1000 < u64::from(self.retry_initial_ms) {
            return Err(format!(
                "notify retry_max_s = {} is shorter than retry_initial_ms = {}",
                self.retry_max_s, self.retry_initial_ms
            ));
        }
        if self.give_up_after_s == 0 {
            return Err("notify give_up_after_s must be at least 1".into());
        }
        if !(1..=300).contains(&self.send_timeout_s) {
            return Err(format!(
                "notify send_timeout_s = {} must be between 1 and 300",
                self.send_timeout_s
            ));
        }
        Ok(())
    }
}

/// Checks the receivers and settings together: names are unique and every receiver is usable.
/// Messages name the receiver, never its URL or secret.
pub fn validate(receivers: &[ReceiverConfig], settings: &NotifyConfig) -> Result<(), String> {
    settings.check()?;
    let mut seen = std::collections::HashSet::new();
    for r in receivers {
        let ok_name = !r.name.is_empty()
            && r.name.len() <= 64
            && r.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok_name {
            return Err(format!(
                "receiver name {:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                r.name
            ));
        }
        if !seen.insert(r.name.as_str()) {
            return Err(format!("receiver {:?} is defined twice", r.name));
        }
        r.check()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(name: &str, url: &str) -> ReceiverConfig {
        ReceiverConfig {
            name: name.into(),
            kind: ReceiverKind::Webhook,
            url: Some(SecretString::new(url)),
            secret: Some(SecretString::new("k")),
            severities: Vec::new(),
            quiet_hours: Vec::new(),
            smtp: None,
            from: None,
            to: Vec::new(),
            username: None,
            tls: None,
            ca_file: None,
        }
    }

    #[test]
    fn quiet_hours_parse_wrap_and_release() {
        let q: QuietHours = "22:00-07:00".parse().expect("parse");
        assert_eq!((q.from_min, q.to_min), (1320, 420));
        assert_eq!(q.to_string(), "22:00-07:00");
        assert!(q.covers(23 * 60) && q.covers(0) && q.covers(419) && !q.covers(420));
        for bad in [
            "22-07",
            "25:00-01:00",
            "10:00-10:00",
            "24:00-01:00",
            "9:00-10:00",
        ] {
            assert!(bad.parse::<QuietHours>().is_err(), "{bad}");
        }
        let mut r = webhook("ops", "https://example.com/hook");
        r.quiet_hours = vec![
            "22:00-23:00".parse().expect("q"),
            "23:00-24:00".parse().expect("q"),
        ];
        let day = 86_400_000u64 * 20_000;
        let at = |h: u64, m: u64| day + (h * 60 + m) * 60_000;
        assert_eq!(r.quiet_release_ms(at(21, 59)), None);
        // Adjoining ranges are one quiet period, ending at midnight.
        assert_eq!(r.quiet_release_ms(at(22, 30) + 1234), Some(at(24, 0)));
        r.quiet_hours = vec!["00:00-24:00".parse().expect("q")];
        let e = validate(&[r], &NotifyConfig::default()).expect_err("whole day");
        assert!(e.contains("cover the whole day"), "{e}");
    }

    #[test]
    fn receivers_are_checked_without_printing_secrets() {
        let ok = webhook("ops", "http://127.0.0.1:9/hook");
        validate(std::slice::from_ref(&ok), &NotifyConfig::default()).expect("valid");
        let e = validate(&[ok.clone(), ok.clone()], &NotifyConfig::default()).expect_err("dup");
        assert_eq!(e, "receiver \"ops\" is defined twice");
        let plain = webhook("ops", "http://hooks.example.com/T0K3N");
        let e = validate(&[plain], &NotifyConfig::default()).expect_err("plain http");
        assert!(
            e.starts_with("receiver \"ops\": url uses plain http"),
            "{e}"
        );
        assert!(!e.contains("T0K3N"), "{e}");
        let mut unsigned = webhook("ops", "https://example.com/");
        unsigned.secret = None;
        let e = validate(&[unsigned], &NotifyConfig::default()).expect_err("no secret");
        assert!(e.contains("needs `secret`"), "{e}");
        let mut mail = webhook("mail", "https://x/");
        mail.kind = ReceiverKind::Email;
        mail.url = None;
        mail.secret = None;
        mail.smtp = Some("127.0.0.1:25".into());
        mail.from = Some("Flotilla <flotilla@example.com>".into());
        mail.to = vec!["not an address".into()];
        let e = validate(&[mail], &NotifyConfig::default()).expect_err("bad to");
        assert!(
            e.starts_with("receiver \"mail\": to \"not an address\""),
            "{e}"
        );
        let slow = NotifyConfig {
            retry_max_s: 1,
            retry_initial_ms: 5000,
            ..NotifyConfig::default()
        };
        assert!(
            validate(&[], &slow)
                .expect_err("max")
                .contains("retry_max_s = 1")
        );
    }
}
