//! Every message of protocol version 1, grouped by the stream that carries it.
//!
//! Flow: the client opens the control stream and sends [`ClientOpen`]; the hub answers [`ServerOpen`].
//! Agents then open a unidirectional metrics stream ([`StreamOpen::Metrics`], then [`MetricsFrame`]s).
//! Operators open one bidirectional stream per request ([`StreamOpen::Request`], an [`OpRequest`], one
//! [`OpResponse`]) or a subscription ([`StreamOpen::Events`], then [`FleetEvent`]s).

// Messages live briefly on the way to or from a frame; boxing variants would only add allocations.
#![allow(clippy::large_enum_variant)]

use crate::{ErrorCode, IdentityId, Role};
use serde::{Deserialize, Serialize};

/// Key/value label attached to an identity (`env=prod`). Kept as a sorted list: deterministic bytes.
pub type Labels = Vec<(String, String)>;

/// Serialises [`Labels`] as a map: the same postcard bytes as a list of pairs, and a JSON object
/// (`{"env": "prod"}`) for scripts.
pub mod labels_map {
    use serde::de::{MapAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes the pairs as a map.
    pub fn serialize<S: Serializer>(labels: &super::Labels, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(labels.iter().map(|(k, v)| (k, v)))
    }

    /// Reads a map into pairs, keeping the order.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::Labels, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = super::Labels;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of labels")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(out)
            }
        }
        d.deserialize_map(PairsVisitor)
    }
}

/// First frame of every connection, on the control stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientOpen {
    /// An enrolled identity (certificate presented in TLS) announces itself.
    Hello(Hello),
    /// A new identity without a certificate asks to enrol with a join token.
    Enroll(EnrollRequest),
    /// A connected agent's second connection, its bulk lane: the hub opens transfer streams on it.
    /// It has transport settings for throughput (jumbo packets, segmentation offload) that would
    /// cost memory on every idle control connection, and lives only while transfers need it.
    /// The hub answers with [`ServerOpen::Welcome`] as for [`ClientOpen::Hello`].
    Bulk(Hello),
}

/// Announces the client's protocol version and what the registry shows about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// [`crate::PROTOCOL_VERSION`] of the client. Kept first so any future layout can still be read.
    pub protocol_version: u16,
    /// Software version of agentd or flotilla (`CARGO_PKG_VERSION`).
    pub software_version: String,
    /// Host name of the machine.
    pub hostname: String,
    /// Operating system and version, as sysinfo reports it.
    pub os: String,
}

/// Enrolment: a CSR made from a key that never leaves the machine, plus the token's secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// [`crate::PROTOCOL_VERSION`] of the client. Kept first, as in [`Hello`].
    pub protocol_version: u16,
    /// The token's public id (looks up the stored hash).
    pub token_id: String,
    /// The token's secret (compared in constant time against the stored hash).
    pub secret: Vec<u8>,
    /// PKCS#10 request, DER. The hub takes only the public key from it.
    pub csr_der: Vec<u8>,
    /// Display name wanted (defaults to the host name).
    pub name: String,
    /// Labels wanted, merged with the token's (the token's win).
    #[serde(with = "labels_map")]
    pub labels: Labels,
    /// The same facts as a [`Hello`] carries.
    pub hello: Hello,
}

/// The hub's answer to [`ClientOpen`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerOpen {
    /// The identity is known and accepted; streams may be opened.
    Welcome(Welcome),
    /// Enrolment succeeded; the client stores these and reconnects with its certificate.
    Enrolled(Enrolled),
    /// Refused; the connection closes with the same code.
    Refused(Refusal),
}

/// Acceptance of an enrolled identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The hub's [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// hubd's software version.
    pub hub_version: String,
    /// The identity as the hub read it from the certificate.
    pub identity: IdentityId,
    /// The role from the certificate.
    pub role: Role,
    /// Display name in the registry.
    pub name: String,
    /// How often the agent should sample metrics, in milliseconds.
    pub metrics_interval_ms: u32,
}

/// Result of a successful enrolment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The new identity.
    pub identity: IdentityId,
    /// Its role, from the token.
    pub role: Role,
    /// Display name registered.
    pub name: String,
    /// Labels registered.
    #[serde(with = "labels_map")]
    pub labels: Labels,
    /// The signed certificate, DER.
    pub cert_der: Vec<u8>,
    /// The fleet CA certificate, DER (its fingerprint was pinned by the token).
    pub ca_der: Vec<u8>,
}

/// A refusal with a code and a message safe to show the peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable detail, free of internals.
    pub message: String,
}

/// Hub to client messages on the control stream after [`Welcome`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HubControl {
    /// Change the metrics sampling interval (1 s while an operator watches this agent).
    SetMetricsInterval {
        /// New interval in milliseconds.
        interval_ms: u32,
    },
    /// Dial a bulk lane ([`ClientOpen::Bulk`]): a transfer is about to use this agent.
    OpenBulk,
}

/// Hub to agent: first frame of every stream the hub opens on an agent's connection. Append-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HubStreamOpen {
    /// Run a command; [`crate::exec::AgentEvent`]s answer, [`crate::exec::ExecControl`] may follow.
    Exec(crate::exec::ExecStart),
    /// Answer one [`crate::exec::Pong`] at once.
    Ping {
        /// The hub's clock when sent, ms since the epoch.
        hub_time_ms: u64,
    },
    /// Serve a file: the agent answers `TransferFrame::Offer` or `TransferFrame::Failed`.
    Read(crate::files::ReadOpen),
    /// Receive a file: the agent answers `TransferFrame::Ready` or `TransferFrame::Failed`.
    Write(crate::files::WriteOpen),
    /// Send a fresh snapshot on the snapshot stream (the hub saw a gap); nothing else follows.
    Resync {
        /// Why, for the agent's log.
        reason: String,
    },
    /// Stream a container's or unit's logs: [`crate::workloads::LogFrame`]s answer until `End`,
    /// `Error`, or the hub stops reading.
    Logs(crate::workloads::LogsOpen),
    /// Run the slow host collectors (SMART) now: the agent answers one
    /// [`crate::host::HostReport`] on this stream and sends it on its metrics stream too.
    HostReport,
    /// Start a shell on a PTY: [`crate::shell::ShellFrame`]s both ways, the agent's first being
    /// `Started` or `Refused`.
    Shell(crate::shell::ShellOpen),
}

/// Typed first frame of every stream but the control stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StreamOpen {
    /// Agent to hub, unidirectional: [`MetricsFrame`]s follow.
    Metrics,
    /// Operator to hub, bidirectional: one [`OpRequest`], one [`OpResponse`].
    Request,
    /// Operator to hub, bidirectional: the hub pushes [`FleetEvent`]s until either side closes.
    Events,
    /// Operator to hub: while this stream is open the agent samples every second; nothing else flows.
    WatchAgent {
        /// Name or id of the agent watched.
        query: String,
    },
    /// Operator to hub, bidirectional: one [`crate::exec::ExecRequest`], then optional
    /// [`crate::exec::ExecControl`]; the hub answers [`crate::exec::ExecEvent`]s.
    Exec,
    /// Operator to hub, bidirectional: one [`crate::exec::Query`]; the hub answers
    /// [`crate::exec::QueryReply`] frames up to `End`.
    Query,
    /// Agent to hub, unidirectional: [`crate::files::SnapshotFrame`]s of its shared folder follow.
    Snapshot,
    /// Operator to hub, bidirectional: one [`crate::files::ListRequest`], then
    /// [`crate::files::ListReply`]s.
    FileList,
    /// Operator to hub, bidirectional: one [`crate::files::WatchRequest`], then
    /// [`crate::files::FileEvent`]s until either side closes.
    FileWatch,
    /// Operator to hub, bidirectional: one [`crate::files::CopyRequest`], then
    /// [`crate::files::TransferFrame`]s both ways.
    Copy,
    /// Operator to hub, bidirectional: one [`crate::workloads::LogsRequest`], then
    /// [`crate::workloads::LogFrame`]s until `End` or `Error`, or until either side closes.
    Logs,
    /// Operator to hub, bidirectional: one [`crate::shell::ShellRequest`], then
    /// [`crate::shell::ShellFrame`]s both ways until `Exit`, `Closed` or `Refused`.
    Shell,
    /// Operator to hub, bidirectional: one [`crate::shell::ShellJoin`], then the live session's
    /// [`crate::shell::ShellFrame`]s, read-only.
    ShellJoin,
}

/// Frames on the metrics stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MetricsFrame {
    /// A live sample.
    Sample(MetricsSample),
    /// Samples buffered while the hub was unreachable, oldest first.
    Backfill(Vec<MetricsSample>),
    /// Per-minute aggregates buffered while the hub was unreachable, oldest first.
    BackfillMinutes(Vec<MinuteAggregate>),
    /// What changed in the containers and units since the last delta.
    Workloads(crate::workloads::WorkloadDelta),
    /// Host depth at the sample just sent (same `at_ms`): per-device I/O, interface errors, GPUs,
    /// custom series, top processes, collector states.
    HostDetail(crate::host::HostDetail),
    /// A slow collector's result (disk health): when a run finishes and at the start of a stream.
    HostReport(crate::host::HostReport),
    /// Host detail folded per minute while the hub was unreachable, oldest first.
    BackfillHost(Vec<crate::host::HostMinute>),
}

/// One minute (or ten) of one agent's metrics: what history stores and back-fill carries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MinuteAggregate {
    /// Start of the bucket, ms since the epoch (a multiple of the bucket length).
    pub start_ms: u64,
    /// Samples folded in.
    pub samples: u32,
    /// Mean CPU percent.
    pub cpu_avg: f32,
    /// Peak CPU percent.
    pub cpu_max: f32,
    /// Mean memory used, bytes.
    pub mem_avg: u64,
    /// Peak memory used, bytes.
    pub mem_max: u64,
    /// Memory total, bytes (last seen).
    pub mem_total: u64,
    /// Mean 1-minute load average.
    pub load1_avg: f32,
    /// Peak use of the fullest disk, percent.
    pub disk_pct_max: f32,
    /// Mean received bytes per second, all interfaces.
    pub net_rx_avg: u64,
    /// Mean sent bytes per second, all interfaces.
    pub net_tx_avg: u64,
    /// Peak of received plus sent bytes per second.
    pub net_max: u64,
    /// Mean disk reads, bytes per second.
    pub disk_read_avg: u64,
    /// Mean disk writes, bytes per second.
    pub disk_write_avg: u64,
}

/// One sample of a machine's health. Rates are computed on the agent from counter deltas.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSample {
    /// Wall-clock time of the sample, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Total CPU use, percent of all cores (0-100).
    pub cpu_pct: f32,
    /// CPU use per core, percent.
    pub per_core_pct: Vec<f32>,
    /// 1, 5 and 15 minute load averages.
    pub load: [f32; 3],
    /// Memory used, bytes.
    pub mem_used: u64,
    /// Memory total, bytes.
    pub mem_total: u64,
    /// Swap used, bytes.
    pub swap_used: u64,
    /// Swap total, bytes.
    pub swap_total: u64,
    /// Per-mount disk usage.
    pub disks: Vec<DiskUsage>,
    /// Disk reads, bytes per second, all processes.
    pub disk_read_bps: u64,
    /// Disk writes, bytes per second, all processes.
    pub disk_write_bps: u64,
    /// Per-interface network rates.
    pub nets: Vec<NetRate>,
    /// Seconds since boot.
    pub uptime_s: u64,
    /// Number of processes.
    pub procs: u32,
    /// Temperatures where the OS exposes them.
    pub temps: Vec<Temperature>,
    /// Top processes by CPU.
    pub top_cpu: Vec<ProcessInfo>,
    /// Top processes by resident memory.
    pub top_mem: Vec<ProcessInfo>,
}

/// Usage of one mounted file system.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// Mount point.
    pub mount: String,
    /// Bytes used.
    pub used: u64,
    /// Bytes total.
    pub total: u64,
}

/// Rates of one network interface.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetRate {
    /// Interface name.
    pub iface: String,
    /// Received bytes per second.
    pub rx_bps: u64,
    /// Transmitted bytes per second.
    pub tx_bps: u64,
}

/// One temperature sensor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Temperature {
    /// Sensor label.
    pub label: String,
    /// Degrees Celsius.
    pub celsius: f32,
}

/// One process in a top-N list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub name: String,
    /// CPU use, percent of one core.
    pub cpu_pct: f32,
    /// Resident set size, bytes.
    pub rss: u64,
}

/// Requests on the operator API. Each is checked against the caller's role on the hub.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OpRequest {
    /// Every identity of role agent (viewer and up).
    ListAgents,
    /// One agent by name or id (viewer and up).
    Agent {
        /// Name or id.
        query: String,
    },
    /// Creates a join token (admin).
    TokenCreate(TokenSpec),
    /// Lists tokens without their secrets (admin).
    TokenList,
    /// Deletes a token (admin).
    TokenDelete {
        /// Token id.
        id: String,
    },
    /// Revokes an agent or operator and closes its live connection (admin).
    Revoke {
        /// Identity id or agent name.
        query: String,
    },
    /// Lists enrolled operators (admin).
    ListOperators,
    /// Metrics history of one agent (viewer and up).
    Metrics {
        /// Name or id.
        query: String,
        /// How far back, seconds.
        since_s: u64,
    },
    /// Every alert rule, config and live (viewer and up).
    AlertRules,
    /// Adds a live rule, stored and audited (operator and up); refused when the name is taken.
    AlertRuleAdd(crate::alerts::AlertRule),
    /// Removes a live rule and its alerts (operator and up); config rules are edited in the file.
    AlertRuleRemove {
        /// Rule name.
        name: String,
    },
    /// One rule and its current alerts (viewer and up).
    AlertRuleShow {
        /// Rule name.
        name: String,
    },
    /// Dry run: what the rule would say about every agent in scope now, changing nothing
    /// (viewer and up).
    AlertRuleTest(crate::alerts::AlertRule),
    /// Pending and firing alerts, and resolved ones still remembered when asked (viewer and up).
    Alerts {
        /// Include recently resolved alerts.
        include_resolved: bool,
    },
    /// Acknowledges a firing alert (operator and up): shown in lists, audited.
    AlertAck {
        /// Which alert.
        id: crate::alerts::AlertId,
        /// Why or what is being done, for the audit log.
        comment: String,
    },
    /// Adds a silence (operator and up), audited.
    SilenceAdd(crate::alerts::SilenceSpec),
    /// Lists silences (viewer and up).
    Silences {
        /// Include silences whose window has ended.
        include_expired: bool,
    },
    /// Ends a silence now (operator and up), audited.
    SilenceExpire {
        /// Which one.
        id: crate::alerts::SilenceId,
    },
}

/// What a new token allows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenSpec {
    /// Role the enrolled identity gets.
    pub role: Role,
    /// Seconds until the token expires.
    pub ttl_s: u64,
    /// How many enrolments it allows.
    pub uses: u32,
    /// Labels given to every identity enrolled with it.
    #[serde(with = "labels_map")]
    pub labels: Labels,
}

/// Replies on the operator API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OpResponse {
    /// Reply to [`OpRequest::ListAgents`] and [`OpRequest::ListOperators`].
    Agents(Vec<AgentInfo>),
    /// Reply to [`OpRequest::Agent`].
    Agent(AgentInfo),
    /// Reply to [`OpRequest::TokenCreate`]: the only time the secret is shown.
    TokenCreated(CreatedToken),
    /// Reply to [`OpRequest::TokenList`].
    Tokens(Vec<TokenInfo>),
    /// Reply to [`OpRequest::Revoke`].
    Revoked(AgentInfo),
    /// Success without data.
    Done,
    /// The request was refused.
    Error(Refusal),
    /// Reply to [`OpRequest::Metrics`].
    Series(MetricsSeries),
    /// A leading part of a long [`OpResponse::Agents`] reply; more frames follow on the same stream,
    /// the last one being `Agents`. Keeps every frame under the limit at any fleet size.
    AgentsMore(Vec<AgentInfo>),
    /// Reply to [`OpRequest::AlertRules`].
    AlertRules(Vec<crate::alerts::RuleInfo>),
    /// Reply to [`OpRequest::AlertRuleAdd`]: the rule as stored.
    AlertRule(crate::alerts::RuleInfo),
    /// Reply to [`OpRequest::AlertRuleShow`].
    AlertRuleDetail(crate::alerts::RuleDetail),
    /// Reply to [`OpRequest::AlertRuleTest`]: the alerts the rule would hold now, as pending or
    /// firing by the value alone (no `for` has elapsed in a dry run).
    AlertTest(Vec<crate::alerts::AlertInfo>),
    /// Reply to [`OpRequest::Alerts`]; at most [`crate::alerts::ALERTS_PER_FRAME`].
    Alerts(Vec<crate::alerts::AlertInfo>),
    /// A leading part of a long [`OpResponse::Alerts`] reply; the last frame is `Alerts`.
    AlertsMore(Vec<crate::alerts::AlertInfo>),
    /// Reply to [`OpRequest::AlertAck`]: the alert as it stands.
    Alert(crate::alerts::AlertInfo),
    /// Reply to [`OpRequest::SilenceAdd`] and [`OpRequest::SilenceExpire`].
    Silence(crate::alerts::Silence),
    /// Reply to [`OpRequest::Silences`].
    Silences(Vec<crate::alerts::Silence>),
}

/// A metrics history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsSeries {
    /// Whose.
    pub id: IdentityId,
    /// Name at the time of the query.
    pub name: String,
    /// Bucket length, seconds: 60 or 600.
    pub resolution_s: u32,
    /// Buckets, oldest first.
    pub points: Vec<MinuteAggregate>,
}

/// Whether an identity is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Connected now.
    Online,
    /// Not connected.
    Offline,
    /// Revoked: will never connect again.
    Revoked,
}

impl Status {
    /// Lowercase word for tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Revoked => "revoked",
        }
    }
}

/// What the registry knows about one identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Stable id.
    pub id: IdentityId,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Labels.
    #[serde(with = "labels_map")]
    pub labels: Labels,
    /// Connected, offline or revoked.
    pub status: Status,
    /// First enrolment, ms since the epoch.
    pub first_seen_ms: u64,
    /// Last time seen connected, ms since the epoch.
    pub last_seen_ms: u64,
    /// Software version reported in the last hello.
    pub version: String,
    /// Operating system reported in the last hello.
    pub os: String,
    /// Host name reported in the last hello.
    pub hostname: String,
    /// Remote address of the last connection.
    pub addr: String,
    /// Latest metrics sample, if any since the hub started.
    pub latest: Option<MetricsSample>,
}

/// A token as listed: never the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// Role granted.
    pub role: Role,
    /// Uses left.
    pub uses_left: u32,
    /// Expiry, ms since the epoch.
    pub expires_ms: u64,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Labels granted.
    #[serde(with = "labels_map")]
    pub labels: Labels,
}

/// A freshly created token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// Listing of the token.
    pub info: TokenInfo,
    /// The self-contained join token to hand to the new machine.
    pub token: String,
}

/// Pushed to subscribed operators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FleetEvent {
    /// The fleet as it stands when the subscription starts.
    Snapshot(Vec<AgentInfo>),
    /// An agent connected.
    Online(AgentInfo),
    /// An agent disconnected.
    Offline {
        /// Which one.
        id: IdentityId,
        /// When, ms since the epoch.
        at_ms: u64,
        /// Why, in words.
        reason: String,
    },
    /// An identity was revoked.
    Revoked {
        /// Which one.
        id: IdentityId,
    },
    /// A new metrics sample.
    Metrics {
        /// Which agent.
        id: IdentityId,
        /// The sample.
        sample: MetricsSample,
    },
    /// The subscriber fell behind and missed this many events; it should re-list.
    Lagged {
        /// How many were dropped.
        missed: u64,
    },
    /// More of the fleet, following a [`FleetEvent::Snapshot`] too large for one frame.
    SnapshotMore(Vec<AgentInfo>),
    /// An agent's workload counts changed (and once per agent that has any, after the snapshot).
    Workloads {
        /// Which agent.
        id: IdentityId,
        /// The counts.
        counts: crate::workloads::WorkloadCounts,
    },
    /// An alert changed state (pending, firing, resolved), or was acknowledged or silenced.
    Alert(crate::alerts::AlertInfo),
    /// An agent's host summary (GPUs, failed disks) changed (and once per agent with a GPU or a
    /// failed disk, after the snapshot).
    Host {
        /// Which agent.
        id: IdentityId,
        /// The summary.
        summary: crate::host::HostSummary,
    },
}

/// Agents per frame in long lists: at about 500 bytes per summarised agent, 2,000 fit well under
/// the 4 MiB frame limit.
pub const AGENTS_PER_FRAME: usize = 2000;

impl MetricsSample {
    /// The sample without its per-process, per-core and sensor detail: what fleet-wide lists and
    /// events carry (the agent view asks for the full sample).
    pub fn summary(&self) -> Self {
        Self {
            per_core_pct: Vec::new(),
            temps: Vec::new(),
            top_cpu: Vec::new(),
            top_mem: Vec::new(),
            ..self.clone()
        }
    }
}

/// Reads the protocol version a client announced in a [`ClientOpen`] body, even when the rest of the
/// body is of a layout this version cannot decode: both variants put the version first.
pub fn peek_client_version(body: &[u8]) -> Option<u16> {
    let (variant, rest) = body.split_first()?;
    if *variant > 1 {
        return None;
    }
    postcard::take_from_bytes::<u16>(rest).ok().map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_body, limits::StreamKind};
    use proptest::prelude::*;

    fn id() -> IdentityId {
        IdentityId::from_random(Role::Agent, [0x11; 8])
    }

    fn sample() -> MetricsSample {
        MetricsSample {
            at_ms: 1_700_000_000_000,
            cpu_pct: 12.5,
            per_core_pct: vec![10.0, 15.0],
            load: [0.5, 0.25, 0.125],
            mem_used: 1 << 30,
            mem_total: 4 << 30,
            swap_used: 0,
            swap_total: 1 << 30,
            disks: vec![DiskUsage {
                mount: "/".into(),
                used: 10,
                total: 100,
            }],
            disk_read_bps: 1000,
            disk_write_bps: 2000,
            nets: vec![NetRate {
                iface: "eth0".into(),
                rx_bps: 5,
                tx_bps: 6,
            }],
            uptime_s: 3600,
            procs: 123,
            temps: vec![Temperature {
                label: "cpu".into(),
                celsius: 45.0,
            }],
            top_cpu: vec![ProcessInfo {
                pid: 1,
                name: "init".into(),
                cpu_pct: 0.5,
                rss: 4096,
            }],
            top_mem: vec![],
        }
    }

    fn info() -> AgentInfo {
        AgentInfo {
            id: id(),
            name: "web-1".into(),
            role: Role::Agent,
            labels: vec![("env".into(), "prod".into())],
            status: Status::Online,
            first_seen_ms: 1,
            last_seen_ms: 2,
            version: "0.1.0".into(),
            os: "linux".into(),
            hostname: "web-1".into(),
            addr: "127.0.0.1:5000".into(),
            latest: Some(sample()),
        }
    }

    fn hello() -> Hello {
        Hello {
            protocol_version: 1,
            software_version: "0.1.0".into(),
            hostname: "h".into(),
            os: "linux".into(),
        }
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        msg: &T,
        kind: StreamKind,
    ) {
        let mut buf = bytes::BytesMut::new();
        crate::encode(msg, &mut buf, kind.max_frame()).expect("encode");
        let back: T = crate::decode(&mut buf, kind.max_frame())
            .expect("decode")
            .expect("complete");
        assert_eq!(&back, msg);
        assert!(buf.is_empty());
    }

    /// One value of every message, so a new variant without a round trip stands out in review.
    #[test]
    fn every_message_round_trips() {
        round_trip(&ClientOpen::Hello(hello()), StreamKind::Control);
        round_trip(
            &ClientOpen::Enroll(EnrollRequest {
                protocol_version: 1,
                token_id: "t1".into(),
                secret: vec![7; 32],
                csr_der: vec![1, 2, 3],
                name: "n".into(),
                labels: vec![("a".into(), "b".into())],
                hello: hello(),
            }),
            StreamKind::Control,
        );
        round_trip(
            &ServerOpen::Welcome(Welcome {
                protocol_version: 1,
                hub_version: "0.1.0".into(),
                identity: id(),
                role: Role::Agent,
                name: "web-1".into(),
                metrics_interval_ms: 5000,
            }),
            StreamKind::Control,
        );
        round_trip(
            &ServerOpen::Enrolled(Enrolled {
                identity: id(),
                role: Role::Operator,
                name: "n".into(),
                labels: vec![],
                cert_der: vec![9; 300],
                ca_der: vec![8; 300],
            }),
            StreamKind::Control,
        );
        round_trip(
            &ServerOpen::Refused(Refusal {
                code: ErrorCode::Revoked,
                message: "certificate revoked".into(),
            }),
            StreamKind::Control,
        );
        round_trip(
            &HubControl::SetMetricsInterval { interval_ms: 1000 },
            StreamKind::Control,
        );
        for open in [
            StreamOpen::Metrics,
            StreamOpen::Request,
            StreamOpen::Events,
            StreamOpen::Snapshot,
            StreamOpen::FileList,
            StreamOpen::FileWatch,
            StreamOpen::Copy,
        ] {
            round_trip(&open, StreamKind::Control);
        }
        round_trip(&MetricsFrame::Sample(sample()), StreamKind::Metrics);
        round_trip(
            &MetricsFrame::Backfill(vec![sample(), sample()]),
            StreamKind::Metrics,
        );
        let spec = TokenSpec {
            role: Role::Viewer,
            ttl_s: 3600,
            uses: 3,
            labels: vec![],
        };
        for req in [
            OpRequest::ListAgents,
            OpRequest::Agent {
                query: "web-1".into(),
            },
            OpRequest::TokenCreate(spec),
            OpRequest::TokenList,
            OpRequest::TokenDelete { id: "t".into() },
            OpRequest::Revoke {
                query: "web-1".into(),
            },
            OpRequest::ListOperators,
        ] {
            round_trip(&req, StreamKind::Request);
        }
        let token = TokenInfo {
            id: "t".into(),
            role: Role::Agent,
            uses_left: 1,
            expires_ms: 5,
            created_ms: 4,
            labels: vec![],
        };
        for resp in [
            OpResponse::Agents(vec![info()]),
            OpResponse::Agent(info()),
            OpResponse::TokenCreated(CreatedToken {
                info: token.clone(),
                token: "FLT1.x".into(),
            }),
            OpResponse::Tokens(vec![token]),
            OpResponse::Revoked(info()),
            OpResponse::Done,
            OpResponse::Error(Refusal {
                code: ErrorCode::Forbidden,
                message: "no".into(),
            }),
        ] {
            round_trip(&resp, StreamKind::Request);
        }
        for ev in [
            FleetEvent::Snapshot(vec![info()]),
            FleetEvent::Online(info()),
            FleetEvent::Offline {
                id: id(),
                at_ms: 3,
                reason: "idle timeout".into(),
            },
            FleetEvent::Revoked { id: id() },
            FleetEvent::Metrics {
                id: id(),
                sample: sample(),
            },
            FleetEvent::Lagged { missed: 4 },
            FleetEvent::SnapshotMore(vec![info()]),
        ] {
            round_trip(&ev, StreamKind::Events);
        }
    }

    /// Golden bytes: a change here breaks every deployed peer and needs a protocol version bump.
    #[test]
    fn golden_bytes_are_pinned() {
        let hello = postcard::to_stdvec(&ClientOpen::Hello(hello())).expect("encode");
        assert_eq!(
            hello,
            [
                0, 1, 5, b'0', b'.', b'1', b'.', b'0', 1, b'h', 5, b'l', b'i', b'n', b'u', b'x'
            ]
        );
        let refusal = postcard::to_stdvec(&ServerOpen::Refused(Refusal {
            code: ErrorCode::VersionMismatch,
            message: "v".into(),
        }))
        .expect("encode");
        assert_eq!(refusal, [2, 1, 1, b'v']);
        assert_eq!(
            postcard::to_stdvec(&StreamOpen::Events).expect("encode"),
            [2]
        );
        assert_eq!(
            postcard::to_stdvec(&StreamOpen::Copy).expect("encode"),
            [9],
            "file streams come after events, watch, exec and query"
        );
        assert_eq!(
            postcard::to_stdvec(&OpRequest::Agent { query: "a".into() }).expect("encode"),
            [1, 1, b'a']
        );
        assert_eq!(
            postcard::to_stdvec(&HubControl::SetMetricsInterval { interval_ms: 1000 })
                .expect("encode"),
            [0, 0xe8, 0x07]
        );
        let metrics = postcard::to_stdvec(&MetricsFrame::Sample(MetricsSample {
            at_ms: 1,
            ..Default::default()
        }))
        .expect("encode");
        assert_eq!(
            &metrics[..3],
            &[0, 1, 0],
            "variant, at_ms varint, cpu_pct f32 starts"
        );
    }

    #[test]
    fn version_is_readable_from_any_hello() {
        // The hub reads (variant, version) to name both versions even when the rest is unreadable.
        let body = postcard::to_stdvec(&ClientOpen::Hello(Hello {
            protocol_version: 7,
            ..hello()
        }))
        .expect("encode");
        assert_eq!(peek_client_version(&body), Some(7));
        assert_eq!(peek_client_version(&[0, 0xff, 0x01, 0xff]), Some(255));
        assert_eq!(peek_client_version(&[5]), None);
        assert!(decode_body::<ClientOpen>(&[0, 2]).is_err());
    }

    proptest! {
        #[test]
        fn hello_round_trips(v in any::<u16>(), sw in ".{0,40}", host in ".{0,64}", os in ".{0,64}") {
            round_trip(&ClientOpen::Hello(Hello { protocol_version: v, software_version: sw, hostname: host, os }), StreamKind::Control);
        }

        #[test]
        fn samples_round_trip(at in any::<u64>(), cpu in 0f32..100.0, cores in proptest::collection::vec(0f32..100.0, 0..64),
                              mem in any::<u64>(), name in ".{0,32}", pid in any::<u32>()) {
            let s = MetricsSample { at_ms: at, cpu_pct: cpu, per_core_pct: cores, mem_used: mem,
                top_cpu: vec![ProcessInfo { pid, name, cpu_pct: cpu, rss: mem }], ..Default::default() };
            round_trip(&MetricsFrame::Sample(s), StreamKind::Metrics);
        }

        #[test]
        fn requests_round_trip(q in ".{0,80}", uses in any::<u32>(), ttl in any::<u64>(), k in "[a-z]{1,8}", val in ".{0,16}") {
            round_trip(&OpRequest::Agent { query: q.clone() }, StreamKind::Request);
            round_trip(&OpRequest::Revoke { query: q }, StreamKind::Request);
            round_trip(&OpRequest::TokenCreate(TokenSpec { role: Role::Operator, ttl_s: ttl, uses, labels: vec![(k, val)] }), StreamKind::Request);
        }
    }
}
