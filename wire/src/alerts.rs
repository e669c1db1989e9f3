//! Alerts: rules the hub evaluates against what it already sees (samples, connections, workloads,
//! jobs), the alert instances they raise, silences and acknowledgements.
//!
//! A rule ([`AlertRule`]) is written in the hub's config as an `[[alert]]` table or added live
//! ([`crate::msg::OpRequest::AlertRuleAdd`]); both go through the same text form ([`RuleSpec`]) and
//! checks ([`RuleSpec::to_rule`]), so the console, the hub and its config agree on every word. One
//! alert ([`AlertInfo`]) exists per rule, agent and subject (a mount, a container, a unit…), with a
//! stable [`AlertId`] so a receiver can drop a duplicate notification.

use crate::IdentityId;
use crate::text::{DurationError, parse_duration};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest rule name: it appears in tables, notifications and ids; 64 bytes keep them readable.
pub const MAX_RULE_NAME: usize = 64;
/// Longest summary template: a notification's one line, not a document.
pub const MAX_SUMMARY: usize = 512;
/// Longest silence comment or acknowledgement comment.
pub const MAX_COMMENT: usize = 512;
/// Longest glob on container or unit names, as long as a workload name may be.
pub const MAX_MATCH: usize = crate::workloads::MAX_WORKLOAD_NAME;
/// Most receivers one rule may route to: a handful of channels, not a mailing list.
pub const MAX_RECEIVERS: usize = 16;
/// Longest span of history a disk forecast may fit over: the hub keeps 7 days of minutes.
pub const MAX_LOOKBACK_MS: u64 = 7 * 86_400_000;
/// Alerts per [`crate::msg::OpResponse::Alerts`] frame: about 300 bytes each keeps a frame far
/// under the request limit.
pub const ALERTS_PER_FRAME: usize = 2000;

/// How loud an alert is; receivers route and quiet hours filter by it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record; nobody needs to act.
    Info,
    /// Someone should look during working hours.
    #[default]
    Warning,
    /// Someone must act now; passes quiet hours.
    Critical,
}

impl Severity {
    /// Lowercase word, as written in config and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// A host series a threshold rule watches, read from each [`crate::msg::MetricsSample`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Series {
    /// Total CPU use, percent.
    Cpu,
    /// Memory used, percent of total.
    Mem,
    /// Swap used, percent of total (0 without swap).
    Swap,
    /// Disk use per mount, percent; the subject is the mount point.
    Disk,
    /// 1-minute load average.
    Load,
    /// Temperature per sensor, degrees Celsius; the subject is the sensor label.
    Temp,
    /// Received bytes per second per interface; the subject is the interface.
    NetRx,
    /// Sent bytes per second per interface; the subject is the interface.
    NetTx,
    /// Received plus sent bytes per second per interface; the subject is the interface.
    Net,
}

impl Series {
    /// Every series, in the order the docs list them.
    pub const ALL: [Self; 9] = [
        Self::Cpu,
        Self::Mem,
        Self::Swap,
        Self::Disk,
        Self::Load,
        Self::Temp,
        Self::NetRx,
        Self::NetTx,
        Self::Net,
    ];

    /// The word used as a rule's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Mem => "mem",
            Self::Swap => "swap",
            Self::Disk => "disk",
            Self::Load => "load",
            Self::Temp => "temp",
            Self::NetRx => "net_rx",
            Self::NetTx => "net_tx",
            Self::Net => "net",
        }
    }

    /// Reads a `kind` word.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Unit for summaries.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Cpu | Self::Mem | Self::Swap | Self::Disk => "%",
            Self::Load => "",
            Self::Temp => "°C",
            Self::NetRx | Self::NetTx | Self::Net => "B/s",
        }
    }
}

/// Which side of the threshold is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Comparison {
    /// Bad when the value is above the threshold.
    Above,
    /// Bad when the value is below the threshold.
    Below,
}

/// What a container rule looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerCondition {
    /// Exited or dead.
    Stopped,
    /// Its health check fails.
    Unhealthy,
    /// The engine is restarting it (a crash loop).
    Restarting,
}

impl ContainerCondition {
    /// The word used as a rule's `state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Unhealthy => "unhealthy",
            Self::Restarting => "restarting",
        }
    }
}

/// What a rule watches, with that kind's parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AlertKind {
    /// The agent is not connected (for the rule's `for_ms`).
    AgentOffline,
    /// A host series is above or below a threshold.
    Threshold {
        /// Which series.
        series: Series,
        /// Which side is bad.
        cmp: Comparison,
        /// The line.
        threshold: f64,
    },
    /// A linear fit of a mount's use over `lookback_ms` reaches 100 % within `within_ms`.
    DiskFull {
        /// Horizon of the forecast.
        within_ms: u64,
        /// History the line is fitted to.
        lookback_ms: u64,
    },
    /// A container whose name matches is stopped, unhealthy or restarting.
    Container {
        /// What is bad.
        condition: ContainerCondition,
        /// Name glob (`*`, `web-?`).
        name: String,
    },
    /// A systemd unit whose name matches has failed.
    UnitFailed {
        /// Unit name glob.
        name: String,
    },
    /// A job failed on the agent; resolves when a later job succeeds there.
    JobFailed,
    /// The agent's certificate expires within `within_ms`.
    CertExpiring {
        /// Horizon.
        within_ms: u64,
    },
    /// The agent's clock differs from the hub's by more than `max_ms`.
    ClockSkew {
        /// Largest tolerated difference.
        max_ms: u64,
    },
}

impl AlertKind {
    /// The `kind` word of the text form.
    pub fn word(&self) -> &'static str {
        match self {
            Self::AgentOffline => "offline",
            Self::Threshold { series, .. } => series.as_str(),
            Self::DiskFull { .. } => "disk_full",
            Self::Container { .. } => "container",
            Self::UnitFailed { .. } => "unit_failed",
            Self::JobFailed => "job_failed",
            Self::CertExpiring { .. } => "cert_expiring",
            Self::ClockSkew { .. } => "clock_skew",
        }
    }
}

/// One alert rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    /// Unique name: `[A-Za-z0-9_.-]`, 1–64 bytes.
    pub name: String,
    /// What it watches.
    pub kind: AlertKind,
    /// Agents in scope, exec's selector grammar (`all`, `web-*`, `env=prod+role=db`).
    pub selector: String,
    /// How loud.
    pub severity: Severity,
    /// How long the condition must hold before the alert fires (pending until then).
    pub for_ms: u64,
    /// Hysteresis for threshold rules: once firing, the alert resolves only past this value
    /// (below it for `above` rules, above it for `below` rules). `None`: the threshold itself.
    pub resolve: Option<f64>,
    /// Hysteresis in time: once firing, the alert stays firing at least this long.
    pub keep_firing_ms: u64,
    /// Receiver names to notify, as named in the hub's config.
    pub receivers: Vec<String>,
    /// One-line template: `{rule}`, `{agent}`, `{subject}`, `{value}`, `{threshold}`,
    /// `{severity}`; empty: a default for the kind.
    pub summary: String,
}

/// Where a rule came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleOrigin {
    /// An `[[alert]]` table in the hub's config: changed by editing it and SIGHUP.
    Config,
    /// Added with `flotilla alert add`: stored in the hub's database.
    Live,
}

/// A rule as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleInfo {
    /// The rule.
    pub rule: AlertRule,
    /// Config or live.
    pub origin: RuleOrigin,
    /// Who added a live rule (identity name); empty for config rules.
    pub added_by: String,
    /// When a live rule was added, ms since the epoch; 0 for config rules.
    pub added_ms: u64,
}

/// A rule with its current alerts: the reply to [`crate::msg::OpRequest::AlertRuleShow`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleDetail {
    /// The rule.
    pub info: RuleInfo,
    /// Its pending and firing alerts (and resolved ones still remembered).
    pub alerts: Vec<AlertInfo>,
}

/// Where an alert stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds, not yet for the rule's `for`.
    Pending,
    /// The condition held for `for`: receivers were told.
    Firing,
    /// It fired and is over.
    Resolved,
}

impl AlertState {
    /// Lowercase word for tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// Stable id of an alert: a hash of rule name, agent id and subject, so the same trouble keeps its
/// id across hub restarts and a receiver can drop a repeated notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlertId(pub u64);

impl AlertId {
    /// The id of rule `rule` on `agent` for `subject` (FNV-1a 64 over the three, separated by 0).
    pub fn of(rule: &str, agent: &IdentityId, subject: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [
            rule.as_bytes(),
            agent.as_str().as_bytes(),
            subject.as_bytes(),
        ] {
            for b in part.iter().chain(std::iter::once(&0u8)) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        Self(h)
    }

    /// Reads the 16 hex digits [`fmt::Display`] writes.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Self)
    }
}

impl fmt::Display for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One alert: a rule's verdict on one agent and subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertInfo {
    /// Stable id.
    pub id: AlertId,
    /// Rule name.
    pub rule: String,
    /// The rule's severity.
    pub severity: Severity,
    /// Which agent.
    pub agent: IdentityId,
    /// Its name when the alert last changed.
    pub agent_name: String,
    /// Mount, sensor, interface, container, unit, job id; empty when the rule has none.
    pub subject: String,
    /// Pending, firing or resolved.
    pub state: AlertState,
    /// When it entered this state, ms since the epoch.
    pub since_ms: u64,
    /// When the condition started to hold, ms since the epoch.
    pub started_ms: u64,
    /// The value that decided the last change (percent, °C, bytes/s, hours left, ms of skew…).
    pub value: f64,
    /// The rendered summary line.
    pub summary: String,
    /// Who acknowledged it while firing (identity name), if anyone.
    pub acked_by: Option<String>,
    /// The silence that mutes it now, if any.
    pub silenced_by: Option<SilenceId>,
}

/// Id of a silence, assigned by the hub's database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SilenceId(pub u64);

impl fmt::Display for SilenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a new silence mutes and for how long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SilenceSpec {
    /// Rule name glob (`*` for every rule).
    pub rule: String,
    /// Agents, exec's selector grammar.
    pub selector: String,
    /// Start, ms since the epoch; `None`: now.
    pub starts_ms: Option<u64>,
    /// Length from the start.
    pub duration_ms: u64,
    /// Why: shown in lists and the audit log. Required.
    pub comment: String,
}

/// A silence: alerts it matches still change state, but nobody is notified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Its id.
    pub id: SilenceId,
    /// Rule name glob.
    pub rule: String,
    /// Agents.
    pub selector: String,
    /// Start, ms since the epoch.
    pub starts_ms: u64,
    /// End, ms since the epoch (moved to the expiry time when expired early).
    pub ends_ms: u64,
    /// Why.
    pub comment: String,
    /// Who added it (identity name).
    pub created_by: String,
    /// When, ms since the epoch.
    pub created_ms: u64,
}

impl Silence {
    /// Whether it mutes alerts at `now_ms`.
    pub fn active_at(&self, now_ms: u64) -> bool {
        self.starts_ms <= now_ms && now_ms < self.ends_ms
    }
}

/// The text form of a rule: an `[[alert]]` table in the hub's config, and what `flotilla alert add`
/// builds from its flags. [`RuleSpec::to_rule`] checks it.
///
/// ```toml
/// [[alert]]
/// name = "root-full"
/// kind = "disk"        # offline, cpu, mem, swap, disk, load, temp, net_rx, net_tx, net,
///                      # disk_full, container, unit_failed, job_failed, cert_expiring, clock_skew
/// above = 90.0
/// resolve = 85.0
/// for = "5m"
/// selector = "env=prod"
/// severity = "critical"
/// receivers = ["ops"]
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name.
    pub name: String,
    /// What it watches (see the example above).
    pub kind: String,
    /// Agents in scope; default `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// `info`, `warning` (default) or `critical`.
    #[serde(default)]
    pub severity: Severity,
    /// How long the condition must hold (`30s`, `5m`); default 0 (fires at once), except
    /// `offline` whose default is 1 minute.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// Threshold of a series rule, bad above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Threshold of a series rule, bad below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Resolve threshold of a series rule (hysteresis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve: Option<f64>,
    /// Minimum firing time (hysteresis in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing: Option<String>,
    /// Horizon of `disk_full` (default `24h`) and `cert_expiring` (default `14d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
    /// History `disk_full` fits its line to; default `6h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback: Option<String>,
    /// `container` rules: `stopped`, `unhealthy` or `restarting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ContainerCondition>,
    /// `container` and `unit_failed` rules: name glob; default `*`.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// `clock_skew` rules: largest tolerated difference; default `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_skew: Option<String>,
    /// Receiver names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receivers: Vec<String>,
    /// Summary template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// Why a rule is refused. Messages name the rule and the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    /// Empty, too long, or outside `[A-Za-z0-9_.-]`.
    #[error("alert rule name {0:?} is invalid: use 1-64 letters, digits, '-', '_' or '.'")]
    BadName(String),
    /// A `kind` word we do not know.
    #[error(
        "alert rule {rule:?}: unknown kind or series {kind:?} (use offline, cpu, mem, swap, disk, load, temp, net_rx, net_tx, net, disk_full, container, unit_failed, job_failed, cert_expiring or clock_skew)"
    )]
    UnknownKind {
        /// Rule name.
        rule: String,
        /// The word.
        kind: String,
    },
    /// A duration that does not parse.
    #[error("alert rule {rule:?}: {field}: {source}")]
    BadDuration {
        /// Rule name.
        rule: String,
        /// Which setting.
        field: &'static str,
        /// Why.
        source: DurationError,
    },
    /// A setting the kind needs is missing, or two that exclude each other are both set.
    #[error("alert rule {rule:?}: {problem}")]
    Params {
        /// Rule name.
        rule: String,
        /// What is wrong, in words.
        problem: String,
    },
}

impl RuleSpec {
    /// Checks the text form and builds the rule. What needs the hub (does the selector parse,
    /// does each receiver exist) is the hub's to check.
    pub fn to_rule(&self) -> Result<AlertRule, RuleError> {
        let rule = self.name.clone();
        if !valid_rule_name(&rule) {
            return Err(RuleError::BadName(rule));
        }
        let params = |problem: String| RuleError::Params {
            rule: rule.clone(),
            problem,
        };
        let duration = |field: &'static str, text: &Option<String>, default: u64| match text {
            None => Ok(default),
            Some(t) => parse_duration(t)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .map_err(|source| RuleError::BadDuration {
                    rule: rule.clone(),
                    field,
                    source,
                }),
        };
        let series = Series::parse(&self.kind);
        let mut used: Vec<&'static str> = Vec::new();
        let kind = match (self.kind.as_str(), series) {
            (_, Some(series)) => {
                used.extend(["above", "below", "resolve"]);
                let (cmp, threshold) = match (self.above, self.below) {
                    (Some(t), None) => (Comparison::Above, t),
                    (None, Some(t)) => (Comparison::Below, t),
                    _ => {
                        return Err(params(format!(
                            "kind {:?} needs exactly one of above or below",
                            self.kind
                        )));
                    }
                };
                if !threshold.is_finite() {
                    return Err(params(format!("threshold {threshold} is not a number")));
                }
                if let Some(r) = self.resolve {
                    let wrong_side = match cmp {
                        Comparison::Above => r > threshold,
                        Comparison::Below => r < threshold,
                    } || !r.is_finite();
                    if wrong_side {
                        return Err(params(format!(
                            "resolve {r} must be on the good side of the threshold {threshold} ({} it)",
                            match cmp {
                                Comparison::Above => "at or below",
                                Comparison::Below => "at or above",
                            }
                        )));
                    }
                }
                AlertKind::Threshold {
                    series,
                    cmp,
                    threshold,
                }
            }
            ("offline", _) => AlertKind::AgentOffline,
            ("disk_full", _) => {
                used.extend(["within", "lookback"]);
                let within_ms = duration("within", &self.within, 86_400_000)?;
                let lookback_ms = duration("lookback", &self.lookback, 6 * 3_600_000)?;
                if within_ms == 0 {
                    return Err(params("within must be longer than 0".into()));
                }
                if !(600_000..=MAX_LOOKBACK_MS).contains(&lookback_ms) {
                    return Err(params(format!(
                        "lookback {:?} must be between 10m and 7d",
                        self.lookback.as_deref().unwrap_or_default()
                    )));
                }
                AlertKind::DiskFull {
                    within_ms,
                    lookback_ms,
                }
            }
            ("container", _) => {
                used.extend(["state", "match"]);
                let Some(condition) = self.state else {
                    return Err(params(
                        "kind \"container\" needs state = \"stopped\", \"unhealthy\" or \"restarting\"".into(),
                    ));
                };
                AlertKind::Container {
                    condition,
                    name: self.name_glob().map_err(params)?,
                }
            }
            ("unit_failed", _) => {
                used.push("match");
                AlertKind::UnitFailed {
                    name: self.name_glob().map_err(params)?,
                }
            }
            ("job_failed", _) => AlertKind::JobFailed,
            ("cert_expiring", _) => {
                used.push("within");
                AlertKind::CertExpiring {
                    within_ms: duration("within", &self.within, 14 * 86_400_000)?,
                }
            }
            ("clock_skew", _) => {
                used.push("max_skew");
                AlertKind::ClockSkew {
                    max_ms: duration("max_skew", &self.max_skew, 2_000)?,
                }
            }
            (other, None) => {
                return Err(RuleError::UnknownKind {
                    rule,
                    kind: other.to_owned(),
                });
            }
        };
        let set: [(&'static str, bool); 7] = [
            ("above", self.above.is_some()),
            ("below", self.below.is_some()),
            ("resolve", self.resolve.is_some()),
            ("within", self.within.is_some()),
            ("lookback", self.lookback.is_some()),
            ("state", self.state.is_some()),
            ("match", self.matches.is_some()),
        ];
        if let Some((field, _)) = set
            .iter()
            .chain(std::iter::once(&("max_skew", self.max_skew.is_some())))
            .find(|(f, on)| *on && !used.contains(f))
        {
            return Err(params(format!(
                "{field} does not apply to kind {:?}",
                self.kind
            )));
        }
        let default_for = if kind == AlertKind::AgentOffline {
            60_000
        } else {
            0
        };
        let for_ms = duration("for", &self.for_, default_for)?;
        if kind == AlertKind::JobFailed && for_ms != 0 {
            return Err(params(
                "for does not apply to job_failed (a failed job is an event)".into(),
            ));
        }
        let keep_firing_ms = duration("keep_firing", &self.keep_firing, 0)?;
        if self.receivers.len() > MAX_RECEIVERS {
            return Err(params(format!(
                "{} receivers, at most {MAX_RECEIVERS}",
                self.receivers.len()
            )));
        }
        if let Some(bad) = self.receivers.iter().find(|r| !valid_rule_name(r)) {
            return Err(params(format!("receiver name {bad:?} is invalid")));
        }
        let summary = self.summary.clone().unwrap_or_default();
        if summary.len() > MAX_SUMMARY || summary.chars().any(char::is_control) {
            return Err(params(format!(
                "summary must be one line of at most {MAX_SUMMARY} bytes"
            )));
        }
        Ok(AlertRule {
            name: rule.clone(),
            kind,
            selector: self.selector.clone().unwrap_or_else(|| "all".into()),
            severity: self.severity,
            for_ms,
            resolve: self.resolve,
            keep_firing_ms,
            receivers: self.receivers.clone(),
            summary,
        })
    }

    fn name_glob(&self) -> Result<String, String> {
        let glob = self.matches.clone().unwrap_or_else(|| "*".into());
        if glob.is_empty() || glob.len() > MAX_MATCH || glob.chars().any(char::is_control) {
            return Err(format!(
                "match {glob:?} must be a name glob of 1-{MAX_MATCH} bytes"
            ));
        }
        Ok(glob)
    }
}

impl AlertRule {
    /// The text form, for `config show`, `alert show` and editing a rule into a config file.
    pub fn to_spec(&self) -> RuleSpec {
        let ms = |ms: u64| Some(format_duration_ms(ms));
        let mut spec = RuleSpec {
            name: self.name.clone(),
            kind: self.kind.word().to_owned(),
            selector: Some(self.selector.clone()),
            severity: self.severity,
            for_: (self.for_ms != 0).then(|| format_duration_ms(self.for_ms)),
            resolve: self.resolve,
            keep_firing: (self.keep_firing_ms != 0)
                .then(|| format_duration_ms(self.keep_firing_ms)),
            receivers: self.receivers.clone(),
            summary: (!self.summary.is_empty()).then(|| self.summary.clone()),
            ..RuleSpec::default()
        };
        match &self.kind {
            AlertKind::AgentOffline | AlertKind::JobFailed => {}
            AlertKind::Threshold { cmp, threshold, .. } => match cmp {
                Comparison::Above => spec.above = Some(*threshold),
                Comparison::Below => spec.below = Some(*threshold),
            },
            AlertKind::DiskFull {
                within_ms,
                lookback_ms,
            } => {
                spec.within = ms(*within_ms);
                spec.lookback = ms(*lookback_ms);
            }
            AlertKind::Container { condition, name } => {
                spec.state = Some(*condition);
                spec.matches = Some(name.clone());
            }
            AlertKind::UnitFailed { name } => spec.matches = Some(name.clone()),
            AlertKind::CertExpiring { within_ms } => spec.within = ms(*within_ms),
            AlertKind::ClockSkew { max_ms } => spec.max_skew = ms(*max_ms),
        }
        if matches!(self.kind, AlertKind::AgentOffline) {
            spec.for_ = Some(format_duration_ms(self.for_ms));
        }
        spec
    }
}

/// Whether `name` is a valid rule or receiver name.
pub fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_RULE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Writes milliseconds in the largest unit that divides them (`90s`, `5m`, `2h`, `7d`, `1500ms`),
/// the text [`parse_duration`] reads back.
pub fn format_duration_ms(ms: u64) -> String {
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(len) {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;
    use crate::limits::StreamKind;
    use crate::msg::{FleetEvent, OpRequest, OpResponse};

    fn spec(kind: &str) -> RuleSpec {
        RuleSpec {
            name: "r1".into(),
            kind: kind.into(),
            ..RuleSpec::default()
        }
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug>(
        msg: &T,
        kind: StreamKind,
    ) {
        let mut buf = bytes::BytesMut::new();
        crate::encode(msg, &mut buf, kind.max_frame()).expect("encode");
        let back: T = crate::decode(&mut buf, kind.max_frame())
            .expect("decode")
            .expect("complete");
        assert_eq!(&back, msg);
    }

    fn every_rule() -> Vec<AlertRule> {
        let mut out = Vec::new();
        for (kind, f) in [
            ("offline", None),
            ("cpu", Some(("above", 90.0))),
            ("mem", Some(("above", 90.0))),
            ("swap", Some(("above", 50.0))),
            ("disk", Some(("above", 90.0))),
            ("load", Some(("above", 8.0))),
            ("temp", Some(("above", 80.0))),
            ("net_rx", Some(("below", 10.0))),
            ("net_tx", Some(("above", 1e9))),
            ("net", Some(("above", 1e9))),
            ("disk_full", None),
            ("job_failed", None),
            ("cert_expiring", None),
            ("clock_skew", None),
            ("unit_failed", None),
        ] {
            let mut s = spec(kind);
            match f {
                Some(("above", v)) => s.above = Some(v),
                Some((_, v)) => s.below = Some(v),
                None => {}
            }
            out.push(s.to_rule().expect(kind));
        }
        let mut c = spec("container");
        c.state = Some(ContainerCondition::Unhealthy);
        c.matches = Some("web-*".into());
        out.push(c.to_rule().expect("container"));
        out
    }

    fn alert() -> AlertInfo {
        let agent = IdentityId::from_random(Role::Agent, [3; 8]);
        AlertInfo {
            id: AlertId::of("r1", &agent, "/"),
            rule: "r1".into(),
            severity: Severity::Critical,
            agent,
            agent_name: "web-1".into(),
            subject: "/".into(),
            state: AlertState::Firing,
            since_ms: 10,
            started_ms: 5,
            value: 93.5,
            summary: "disk / at 93.5%".into(),
            acked_by: Some("alice".into()),
            silenced_by: Some(SilenceId(4)),
        }
    }

    fn silence() -> Silence {
        Silence {
            id: SilenceId(4),
            rule: "*".into(),
            selector: "env=prod".into(),
            starts_ms: 1,
            ends_ms: 100,
            comment: "maintenance".into(),
            created_by: "alice".into(),
            created_ms: 1,
        }
    }

    #[test]
    fn every_alert_message_round_trips() {
        let rules = every_rule();
        assert_eq!(rules.len(), 16);
        let info = RuleInfo {
            rule: rules[1].clone(),
            origin: RuleOrigin::Live,
            added_by: "alice".into(),
            added_ms: 3,
        };
        for rule in &rules {
            round_trip(&OpRequest::AlertRuleAdd(rule.clone()), StreamKind::Request);
            round_trip(&OpRequest::AlertRuleTest(rule.clone()), StreamKind::Request);
            assert_eq!(rule.to_spec().to_rule().as_ref(), Ok(rule), "{}", rule.name);
        }
        for req in [
            OpRequest::AlertRules,
            OpRequest::AlertRuleRemove { name: "r1".into() },
            OpRequest::AlertRuleShow { name: "r1".into() },
            OpRequest::Alerts {
                include_resolved: true,
            },
            OpRequest::AlertAck {
                id: alert().id,
                comment: "on it".into(),
            },
            OpRequest::SilenceAdd(SilenceSpec {
                rule: "*".into(),
                selector: "all".into(),
                starts_ms: None,
                duration_ms: 3_600_000,
                comment: "deploy".into(),
            }),
            OpRequest::Silences {
                include_expired: false,
            },
            OpRequest::SilenceExpire { id: SilenceId(4) },
        ] {
            round_trip(&req, StreamKind::Request);
        }
        for resp in [
            OpResponse::AlertRules(vec![info.clone()]),
            OpResponse::AlertRule(info.clone()),
            OpResponse::AlertRuleDetail(RuleDetail {
                info,
                alerts: vec![alert()],
            }),
            OpResponse::AlertTest(vec![alert()]),
            OpResponse::Alerts(vec![alert()]),
            OpResponse::AlertsMore(vec![alert()]),
            OpResponse::Alert(alert()),
            OpResponse::Silence(silence()),
            OpResponse::Silences(vec![silence()]),
        ] {
            round_trip(&resp, StreamKind::Request);
        }
        round_trip(&FleetEvent::Alert(alert()), StreamKind::Events);
    }

    #[test]
    fn alert_ids_are_stable_and_distinct() {
        let a = IdentityId::from_random(Role::Agent, [1; 8]);
        let b = IdentityId::from_random(Role::Agent, [2; 8]);
        let id = AlertId::of("disk-high", &a, "/");
        assert_eq!(id, AlertId::of("disk-high", &a, "/"));
        assert_ne!(id, AlertId::of("disk-high", &b, "/"));
        assert_ne!(id, AlertId::of("disk-high", &a, "/var"));
        // The separator keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(AlertId::of("ab", &a, "c"), AlertId::of("a", &a, "bc"));
        assert_eq!(AlertId::parse(&id.to_string()), Some(id));
        assert_eq!(AlertId::parse("xyz"), None);
        // Pinned: receivers dedupe on this across versions.
        let zero = IdentityId::parse("a-0000000000000000").expect("id");
        assert_eq!(AlertId::of("r", &zero, "").to_string(), "c8f1c0f7e70b3a0d");
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let err = |s: RuleSpec| s.to_rule().expect_err("refused").to_string();
        assert_eq!(
            err(spec("cpux")),
            "alert rule \"r1\": unknown kind or series \"cpux\" (use offline, cpu, mem, swap, disk, load, temp, net_rx, net_tx, net, disk_full, container, unit_failed, job_failed, cert_expiring or clock_skew)"
        );
        assert_eq!(
            err(spec("cpu")),
            "alert rule \"r1\": kind \"cpu\" needs exactly one of above or below"
        );
        let mut s = spec("cpu");
        s.above = Some(90.0);
        s.for_ = Some("5x".into());
        assert_eq!(
            err(s.clone()),
            "alert rule \"r1\": for: duration \"5x\": unknown unit \"x\" (use ms, s, m, h or d)"
        );
        s.for_ = Some("5m".into());
        s.resolve = Some(95.0);
        assert_eq!(
            err(s.clone()),
            "alert rule \"r1\": resolve 95 must be on the good side of the threshold 90 (at or below it)"
        );
        s.resolve = None;
        s.within = Some("1h".into());
        assert_eq!(
            err(s),
            "alert rule \"r1\": within does not apply to kind \"cpu\""
        );
        let mut s = spec("offline");
        s.name = "bad name".into();
        assert!(err(s).starts_with("alert rule name \"bad name\" is invalid"));
        assert_eq!(
            err(spec("container")),
            "alert rule \"r1\": kind \"container\" needs state = \"stopped\", \"unhealthy\" or \"restarting\""
        );
        let mut s = spec("job_failed");
        s.for_ = Some("1m".into());
        assert!(err(s).contains("for does not apply to job_failed"));
    }

    #[test]
    fn offline_defaults_to_one_minute() {
        let rule = spec("offline").to_rule().expect("rule");
        assert_eq!(rule.for_ms, 60_000);
        assert_eq!(rule.selector, "all");
        assert_eq!(rule.severity, Severity::Warning);
    }

    #[test]
    fn silences_are_active_in_their_window() {
        let s = silence();
        assert!(!s.active_at(0));
        assert!(s.active_at(1));
        assert!(s.active_at(99));
        assert!(!s.active_at(100));
    }
}
