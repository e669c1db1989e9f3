//! Hub configuration: `hub.toml` in the data directory, written by `hubd init`, overridden by flags.

use crate::HubError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Name of the config file inside the data directory.
pub const CONFIG_FILE: &str = "hub.toml";

/// The hub's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// UDP address to serve QUIC on.
    pub listen: SocketAddr,
    /// Host names or IPs agents use to reach this hub; join tokens carry them with the listen port.
    pub advertise: Vec<String>,
    /// Default metrics interval told to agents, milliseconds (minimum 1000).
    pub metrics_interval_ms: u32,
    /// Seconds without a packet before a peer counts as gone, so a killed agent shows offline within
    /// this many seconds. Clients send keep-alives every 5 s and give up after 15 s on their side, so
    /// values below 10 would drop healthy idle agents and values above 15 only delay detection.
    pub idle_timeout_s: u32,
    /// Handshakes processed at once; more wait their turn. Bounds CPU and memory in a reconnect storm.
    pub max_handshakes: usize,
    /// Handshakes one source address may have in flight. Past it, an address that has not proved
    /// itself gets a QUIC Retry and one that has is refused, so that a single host cannot hold
    /// the slots everyone shares. Raise it for many agents behind one NAT address.
    pub max_handshakes_per_source: usize,
    /// Seconds a TLS handshake may take before its slot goes to someone else. On loopback a
    /// handshake takes a few milliseconds; on a 200 ms path losing 5 % of its packets, lost
    /// handshake packets wait out probe timeouts and 3 s refused about one connect in ten (the
    /// fault-proxy tests in `hubd/tests/it/faults.rs`). Unvalidated floods cannot hold more than
    /// half the slots whatever this is (Retry, `accept.rs`). Shorter than `idle_timeout_s`.
    pub handshake_timeout_s: u32,
    /// Agents per second this hub admits after a restart. A stopping hub asks its agents to spread
    /// their reconnects over (agents online) / this many seconds, so that a restart admits them at
    /// a pace its CPU keeps up with instead of dropping a burst and waiting out retransmissions.
    pub reconnect_per_s: u32,
    /// Days of 1-minute metrics history kept.
    pub history_minute_days: u32,
    /// Days of 10-minute metrics history kept.
    pub history_ten_minute_days: u32,
    /// Days of container history (a row per container and minute) kept; unset: as many as
    /// `history_minute_days`. Container minutes outnumber host minutes by the containers per
    /// host, so a large container fleet may keep them for less time than the host's.
    pub container_history_days: Option<u32>,
    /// TCP address of the Prometheus endpoint (`GET /metrics`); none by default. It has no
    /// authentication: keep it on loopback or a management network.
    pub metrics_listen: Option<SocketAddr>,
    /// Log filter (`info`, `debug`, `hubd=debug,quinn=warn`…) when `RUST_LOG` is not set; SIGHUP
    /// applies a change.
    pub log_level: Option<String>,
    /// Where alerts go: one `[[receiver]]` table each (see docs/alerts.md, Delivery).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub receiver: Vec<crate::notify::ReceiverConfig>,
    /// How alert messages are grouped, retried and given up.
    pub notify: crate::notify::NotifyConfig,
    /// Alert rules, one `[[alert]]` table each (docs/alerts.md); SIGHUP applies a change, and
    /// refuses the whole file if one rule is wrong.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alert: Vec<flotilla_wire::alerts::RuleSpec>,
    /// Shell recordings older than this (`90d`, `12h`) are deleted; their sessions stay listed.
    pub recordings_max_age: String,
    /// Total bytes of shell recordings kept; past it the oldest are deleted first.
    pub recordings_max_bytes: u64,
    /// Shell sessions whose recording cannot be written are ended, and new ones refused, so no
    /// shell runs unrecorded; `false` lets them go on without a recording (a warning is logged).
    pub recordings_required: bool,
    /// Record what shell users type too. Off by default: keystrokes include passwords typed at
    /// prompts that do not echo.
    pub recordings_input: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], flotilla_wire::DEFAULT_PORT)),
            advertise: Vec::new(),
            metrics_interval_ms: 5000,
            idle_timeout_s: 15,
            max_handshakes: 256,
            max_handshakes_per_source: 64,
            handshake_timeout_s: 8,
            reconnect_per_s: 1000,
            history_minute_days: 30,
            history_ten_minute_days: 365,
            container_history_days: None,
            metrics_listen: None,
            log_level: None,
            receiver: Vec::new(),
            notify: crate::notify::NotifyConfig::default(),
            alert: Vec::new(),
            recordings_max_age: "90d".into(),
            recordings_max_bytes: 10 << 30,
            recordings_required: true,
            recordings_input: false,
        }
    }
}

impl HubConfig {
    /// Days of container history kept: `container_history_days`, else `history_minute_days`.
    pub fn container_history_days(&self) -> u32 {
        self.container_history_days
            .unwrap_or(self.history_minute_days)
    }

    /// Reads `hub.toml` from `data_dir`.
    pub fn load(data_dir: &Path) -> Result<Self, HubError> {
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            HubError::io(
                format!("read {} (run `hubd init` first?)", path.display()),
                e,
            )
        })?;
        let cfg: Self = toml::from_str(&text)
            .map_err(|e| HubError::Config(format!("{}: {e}", path.display())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes `hub.toml` into `data_dir`.
    pub fn save(&self, data_dir: &Path) -> Result<(), HubError> {
        let path = data_dir.join(CONFIG_FILE);
        let text = toml::to_string_pretty(self).map_err(|e| HubError::Config(e.to_string()))?;
        crate::write_with_mode(&path, &text, crate::SHARED_FILE_MODE)
    }

    /// Checks values a typo could break.
    pub fn validate(&self) -> Result<(), HubError> {
        if self.metrics_interval_ms < 1000 {
            return Err(HubError::Config(format!(
                "metrics_interval_ms = {} is below the 1000 ms minimum",
                self.metrics_interval_ms
            )));
        }
        if !(3..=600).contains(&self.idle_timeout_s) {
            return Err(HubError::Config(format!(
                "idle_timeout_s = {} must be between 3 and 600",
                self.idle_timeout_s
            )));
        }
        if self.history_minute_days == 0 || self.history_ten_minute_days < self.history_minute_days
        {
            return Err(HubError::Config(format!(
                "history_minute_days = {} and history_ten_minute_days = {}: both must be at least 1 and the 10-minute history at least as long",
                self.history_minute_days, self.history_ten_minute_days
            )));
        }
        if self.container_history_days == Some(0) {
            return Err(HubError::Config(
                "container_history_days = 0: keep at least 1 day, or leave it unset to keep as many as history_minute_days".into(),
            ));
        }
        if self.reconnect_per_s == 0 {
            return Err(HubError::Config(
                "reconnect_per_s must be at least 1".into(),
            ));
        }
        if self.max_handshakes == 0 {
            return Err(HubError::Config("max_handshakes must be at least 1".into()));
        }
        if self.max_handshakes_per_source == 0 {
            return Err(HubError::Config(
                "max_handshakes_per_source must be at least 1".into(),
            ));
        }
        if !(1..=30).contains(&self.handshake_timeout_s) {
            return Err(HubError::Config(format!(
                "handshake_timeout_s = {} must be between 1 and 30",
                self.handshake_timeout_s
            )));
        }
        match flotilla_wire::text::parse_duration(&self.recordings_max_age) {
            Ok(d) if !d.is_zero() => {}
            Ok(_) => {
                return Err(HubError::Config(
                    "recordings_max_age must be longer than 0 (e.g. 90d)".into(),
                ));
            }
            Err(e) => {
                return Err(HubError::Config(format!(
                    "recordings_max_age: {e} (e.g. 90d, 12h)"
                )));
            }
        }
        if self.recordings_max_bytes == 0 {
            return Err(HubError::Config(
                "recordings_max_bytes must be at least 1".into(),
            ));
        }
        if let Some(level) = &self.log_level
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(level)
        {
            return Err(HubError::Config(format!(
                "log_level = {level:?} is not a log filter ({e}): use e.g. info, debug or hubd=debug,quinn=warn"
            )));
        }
        crate::notify::config::validate(&self.receiver, &self.notify).map_err(HubError::Config)?;
        crate::alerts::compile(&self.alert, self.receiver_names().as_deref())
            .map_err(HubError::Config)?;
        Ok(())
    }

    /// Names of the `[[receiver]]` tables, which alert rules may route to: a rule naming another
    /// is refused (always `Some`: every configuration has a receiver list, maybe empty).
    pub fn receiver_names(&self) -> Option<Vec<String>> {
        Some(self.receiver.iter().map(|r| r.name.clone()).collect())
    }

    /// `host:port` addresses to put in tokens, for a hub bound to `port`.
    pub fn advertised(&self, port: u16) -> Vec<String> {
        let mut hosts = self.advertise.clone();
        if hosts.is_empty() {
            hosts.push(if self.listen.ip().is_unspecified() {
                "127.0.0.1".into()
            } else {
                self.listen.ip().to_string()
            });
        }
        hosts
            .iter()
            .map(|h| {
                if h.contains(':') && !h.starts_with('[') {
                    format!("[{h}]:{port}")
                } else {
                    format!("{h}:{port}")
                }
            })
            .collect()
    }
}

/// Files inside the hub's data directory.
#[derive(Clone, Debug)]
pub struct HubPaths {
    /// The data directory (0700).
    pub data_dir: PathBuf,
}

impl HubPaths {
    /// The SQLite database.
    pub fn db(&self) -> PathBuf {
        self.data_dir.join("hub.db")
    }
    /// The hub's server certificate.
    pub fn hub_cert(&self) -> PathBuf {
        self.data_dir.join("hub.pem")
    }
    /// The hub's server key (0600).
    pub fn hub_key(&self) -> PathBuf {
        self.data_dir.join("hub.key")
    }
    /// The admin identity made by `hubd init`, in the layout `flotilla --login-dir` reads.
    pub fn admin_dir(&self) -> PathBuf {
        self.data_dir.join("admin")
    }
    /// The local admin socket (0600) through which `hubd` subcommands reach a running hub.
    pub fn admin_socket(&self) -> PathBuf {
        self.data_dir.join("admin.sock")
    }
    /// The secret that keys stateless resets (0600): kept across restarts so that a restarted
    /// hub's resets tell its former peers at once that their connections are gone.
    pub fn reset_key(&self) -> PathBuf {
        self.data_dir.join("quic-reset.key")
    }
    /// The key that seals TLS session tickets (0600): kept across restarts so that a restarted
    /// hub resumes its former peers' sessions instead of a full handshake with each.
    pub fn ticket_key(&self) -> PathBuf {
        self.data_dir.join("tls-ticket.key")
    }
    /// Shell session recordings (0700; each file 0600).
    pub fn recordings_dir(&self) -> PathBuf {
        self.data_dir.join("recordings")
    }
    /// Written at start-up with the bound address, for scripts and tests.
    pub fn addr_file(&self) -> PathBuf {
        self.data_dir.join("hub.addr")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_rejects_unknown_fields() {
        let cfg = HubConfig::default();
        let text = toml::to_string_pretty(&cfg).expect("ser");
        assert_eq!(toml::from_str::<HubConfig>(&text).expect("de"), cfg);
        let err = toml::from_str::<HubConfig>("listen = \"0.0.0.0:1\"\nlisten_port = 3\n")
            .expect_err("unknown");
        assert!(err.to_string().contains("listen_port"), "{err}");
        let bad = HubConfig {
            metrics_interval_ms: 10,
            ..HubConfig::default()
        };
        assert!(
            bad.validate()
                .expect_err("too small")
                .to_string()
                .contains("1000 ms minimum")
        );
    }

    #[test]
    fn container_history_keeps_the_host_minutes_days_unless_set() {
        let host = HubConfig {
            history_minute_days: 7,
            ..HubConfig::default()
        };
        assert_eq!(host.container_history_days(), 7);
        let set: HubConfig =
            toml::from_str("history_minute_days = 7\ncontainer_history_days = 2\n")
                .expect("parses");
        assert_eq!(set.container_history_days(), 2);
        set.validate().expect("valid");
        let zero = HubConfig {
            container_history_days: Some(0),
            ..HubConfig::default()
        };
        assert!(
            matches!(zero.validate(), Err(HubError::Config(m)) if m.starts_with("container_history_days = 0")),
            "zero days refused"
        );
    }

    #[test]
    fn advertised_addresses_carry_the_port() {
        let cfg = HubConfig {
            advertise: vec!["hub.example".into(), "::1".into()],
            ..HubConfig::default()
        };
        assert_eq!(cfg.advertised(4433), vec!["hub.example:4433", "[::1]:4433"]);
        assert_eq!(HubConfig::default().advertised(9), vec!["127.0.0.1:9"]);
    }
}
