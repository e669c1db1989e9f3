//! Command lines of `flotilla alert`, `flotilla alerts` and `flotilla silence`. A rule given with
//! flags becomes the same [`RuleSpec`] an `[[alert]]` table of the hub's config is read into, so
//! both are checked by the same code ([`RuleSpec::to_rule`]) with the same words in its errors.

use flotilla_wire::alerts::{
    AlertId, AlertRule, ContainerCondition, RuleSpec, Severity, SilenceId,
};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

// Options of `flotilla alert`. Plain comments on these structs on purpose: clap would take a doc
// comment as the subcommand's about, overriding the variant's in `Command`.
#[derive(clap::Args, Debug, Clone)]
pub struct AlertArgs {
    #[command(subcommand)]
    pub command: AlertCommand,
}

impl AlertArgs {
    /// The checked rules of `add` and `test` (none for the other commands), or why not, in the
    /// words of the hub's own checks.
    pub fn rules(&self) -> Result<Vec<AlertRule>, String> {
        let (flags, default_name) = match &self.command {
            AlertCommand::Add { rule, .. } => (rule, None),
            AlertCommand::Test { rule, .. } => (rule, Some("test")),
            _ => return Ok(Vec::new()),
        };
        flags
            .specs(default_name)?
            .iter()
            .map(|s| s.to_rule().map_err(|e| e.to_string()))
            .collect()
    }
}

/// `flotilla alert …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AlertCommand {
    /// Add a rule, live (stored and audited by the hub): flags as the keys of an `[[alert]]`
    /// table, or --file with such tables.
    Add {
        #[command(flatten)]
        rule: RuleFlags,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every rule, from the hub's config and added live.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One rule, as an `[[alert]]` table, with its current alerts.
    Show {
        /// Rule name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a live rule and its alerts (config rules are removed by editing the config).
    Rm {
        /// Rule name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dry run: what a rule would say about each agent now, adding nothing.
    Test {
        #[command(flatten)]
        rule: RuleFlags,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge a firing alert: it stays firing, listed with your name.
    Ack {
        /// Alert id (16 hex digits, from `flotilla alerts`).
        #[arg(value_parser = parse_alert_id)]
        id: AlertId,
        /// What is being done about it, for the audit log.
        #[arg(long, default_value = "")]
        comment: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

// The keys of an `[[alert]]` table as flags (see docs/alerts.md), or a file of such tables.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RuleFlags {
    /// TOML file with the rule: its keys at the top level, or `[[alert]]` tables as in hub.toml
    /// (each is added in turn).
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "name", "kind", "selector", "severity", "for_", "above", "below", "resolve",
        "keep_firing", "within", "lookback", "state", "matches", "max_skew", "receivers", "summary",
    ])]
    pub file: Option<PathBuf>,
    /// Rule name: letters, digits, '-', '_', '.' (`test` may leave it out).
    #[arg(long)]
    pub name: Option<String>,
    /// offline, cpu, mem, swap, disk, load, temp, net_rx, net_tx, net, disk_full, container,
    /// unit_failed, job_failed, cert_expiring or clock_skew.
    #[arg(long, required_unless_present = "file")]
    pub kind: Option<String>,
    /// Agents in scope, as exec's selector (default all).
    #[arg(long)]
    pub selector: Option<String>,
    /// info, warning (default) or critical.
    #[arg(long, value_parser = parse_severity)]
    pub severity: Option<Severity>,
    /// How long the condition must hold before the alert fires (30s, 5m).
    #[arg(long = "for", value_name = "DURATION")]
    pub for_: Option<String>,
    /// Series rules: the alert's threshold, bad above it.
    #[arg(long, allow_negative_numbers = true)]
    pub above: Option<f64>,
    /// Series rules: the alert's threshold, bad below it.
    #[arg(long, allow_negative_numbers = true)]
    pub below: Option<f64>,
    /// Series rules: once firing, resolve only past this value (hysteresis).
    #[arg(long, allow_negative_numbers = true)]
    pub resolve: Option<f64>,
    /// Once firing, stay firing at least this long (hysteresis in time).
    #[arg(long, value_name = "DURATION")]
    pub keep_firing: Option<String>,
    /// disk_full and cert_expiring: the horizon (24h, 14d).
    #[arg(long, value_name = "DURATION")]
    pub within: Option<String>,
    /// disk_full: the history the forecast is fitted to (6h).
    #[arg(long, value_name = "DURATION")]
    pub lookback: Option<String>,
    /// container: stopped, unhealthy or restarting.
    #[arg(long, value_parser = parse_condition)]
    pub state: Option<ContainerCondition>,
    /// container and unit_failed: name glob (default *).
    #[arg(long = "match", value_name = "GLOB")]
    pub matches: Option<String>,
    /// clock_skew: the largest tolerated difference (2s).
    #[arg(long, value_name = "DURATION")]
    pub max_skew: Option<String>,
    /// Receiver to notify, as named in the hub's config (repeat for several).
    #[arg(long = "receiver", value_name = "NAME")]
    pub receivers: Vec<String>,
    /// One-line summary template: {rule} {agent} {subject} {value} {threshold} {severity}.
    #[arg(long)]
    pub summary: Option<String>,
}

/// A rule file: `[[alert]]` tables, as in the hub's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    alert: Vec<RuleSpec>,
}

impl RuleFlags {
    /// The rules these flags or this file describe, in text form; `default_name` stands in for a
    /// missing `--name` (`test` needs none). The error is for the user, naming the file or flag.
    pub fn specs(&self, default_name: Option<&str>) -> Result<Vec<RuleSpec>, String> {
        if let Some(path) = &self.file {
            return read_rule_file(path);
        }
        let name = match (&self.name, default_name) {
            (Some(n), _) => n.clone(),
            (None, Some(d)) => d.to_owned(),
            (None, None) => return Err("give the rule a name with --name (or use --file)".into()),
        };
        Ok(vec![RuleSpec {
            name,
            kind: self.kind.clone().unwrap_or_default(),
            selector: self.selector.clone(),
            severity: self.severity.unwrap_or_default(),
            for_: self.for_.clone(),
            above: self.above,
            below: self.below,
            resolve: self.resolve,
            keep_firing: self.keep_firing.clone(),
            within: self.within.clone(),
            lookback: self.lookback.clone(),
            state: self.state,
            matches: self.matches.clone(),
            max_skew: self.max_skew.clone(),
            receivers: self.receivers.clone(),
            summary: self.summary.clone(),
        }])
    }
}

/// Reads `[[alert]]` tables, or one rule's keys at the top level.
fn read_rule_file(path: &std::path::Path) -> Result<Vec<RuleSpec>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read rule file {}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("rule file {}: {e}", path.display()))?;
    let specs = if table.contains_key("alert") {
        table
            .try_into::<RuleFile>()
            .map(|f| f.alert)
            .map_err(|e| format!("rule file {}: {e}", path.display()))?
    } else {
        vec![
            table
                .try_into::<RuleSpec>()
                .map_err(|e| format!("rule file {}: {e}", path.display()))?,
        ]
    };
    if specs.is_empty() {
        return Err(format!("rule file {} holds no rule", path.display()));
    }
    Ok(specs)
}

// Options of `flotilla alerts` (a plain comment: see `AlertArgs`).
#[derive(clap::Args, Debug, Clone)]
pub struct AlertsArgs {
    /// Recently resolved alerts too.
    #[arg(long)]
    pub all: bool,
    /// Exit 3 when an alert fires that no silence mutes (for cron jobs and monitoring checks).
    #[arg(long)]
    pub firing_exit: bool,
    /// Print JSON (an array of alerts).
    #[arg(long)]
    pub json: bool,
}

// Options of `flotilla silence` (a plain comment: see `AlertArgs`).
#[derive(clap::Args, Debug, Clone)]
pub struct SilenceArgs {
    #[command(subcommand)]
    pub command: SilenceCommand,
}

/// `flotilla silence …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SilenceCommand {
    /// Mute notifications of matching alerts for a while (they still change state and show).
    Add {
        /// Rule name glob (default *: every rule).
        #[arg(long, default_value = "*")]
        rule: String,
        /// Agents, as exec's selector (default all).
        #[arg(long, default_value = "all")]
        selector: String,
        /// How long (30m, 2h, 1d).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_length)]
        length: Duration,
        /// Why: shown in lists and written to the audit log.
        #[arg(long)]
        comment: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Silences in force or to come (all of them with --all).
    List {
        /// Ended silences too.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Rm {
        /// Silence id (from `flotilla silence list`).
        #[arg(value_parser = parse_silence_id)]
        id: SilenceId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    [Severity::Info, Severity::Warning, Severity::Critical]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| format!("unknown severity {s:?}: use info, warning or critical"))
}

fn parse_condition(s: &str) -> Result<ContainerCondition, String> {
    [
        ContainerCondition::Stopped,
        ContainerCondition::Unhealthy,
        ContainerCondition::Restarting,
    ]
    .into_iter()
    .find(|v| v.as_str() == s)
    .ok_or_else(|| format!("unknown container state {s:?}: use stopped, unhealthy or restarting"))
}

fn parse_alert_id(s: &str) -> Result<AlertId, String> {
    AlertId::parse(s).ok_or_else(|| {
        format!("{s:?} is no alert id: give the 16 hex digits `flotilla alerts` shows")
    })
}

fn parse_silence_id(s: &str) -> Result<SilenceId, String> {
    s.trim_start_matches('#')
        .parse()
        .map(SilenceId)
        .map_err(|_| {
            format!("{s:?} is no silence id: give the number `flotilla silence list` shows")
        })
}

/// A silence's length: more than zero.
pub fn parse_length(s: &str) -> Result<Duration, String> {
    match crate::util::parse_duration(s)? {
        d if d.is_zero() => Err("a silence must last more than 0".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(subcommand)]
        command: AlertCommand,
    }

    fn add(words: &[&str]) -> Result<RuleFlags, clap::Error> {
        let mut argv = vec!["alert", "add"];
        argv.extend_from_slice(words);
        Wrap::try_parse_from(argv).map(|w| match w.command {
            AlertCommand::Add { rule, .. } => rule,
            other => panic!("parsed as {other:?}"),
        })
    }

    #[test]
    fn flags_build_the_same_rule_as_a_table() {
        let flags = add(&[
            "--name",
            "root-full",
            "--kind",
            "disk",
            "--above",
            "90",
            "--resolve",
            "85",
            "--for",
            "5m",
            "--selector",
            "env=prod",
            "--severity",
            "critical",
            "--receiver",
            "ops",
        ])
        .expect("parse");
        let from_flags = flags.specs(None).expect("specs");
        let table: RuleSpec = toml::from_str(
            r#"
name = "root-full"
kind = "disk"
above = 90.0
resolve = 85.0
for = "5m"
selector = "env=prod"
severity = "critical"
receivers = ["ops"]
"#,
        )
        .expect("table");
        assert_eq!(from_flags, vec![table.clone()]);
        assert_eq!(
            from_flags[0].to_rule().expect("rule"),
            table.to_rule().expect("rule")
        );
    }

    #[test]
    fn rule_files_hold_one_rule_or_alert_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = dir.path().join("one.toml");
        std::fs::write(&one, "name = \"down\"\nkind = \"offline\"\nfor = \"2m\"\n").expect("write");
        let specs = add(&["--file", one.to_str().expect("utf-8")])
            .expect("parse")
            .specs(None)
            .expect("specs");
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].to_rule().expect("rule").for_ms, 120_000);

        let two = dir.path().join("two.toml");
        std::fs::write(
            &two,
            "[[alert]]\nname = \"a\"\nkind = \"cpu\"\nabove = 90.0\n\n[[alert]]\nname = \"b\"\nkind = \"job_failed\"\n",
        )
        .expect("write");
        let specs = read_rule_file(&two).expect("specs");
        assert_eq!(
            specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );

        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "name = \"a\"\nkind = \"cpu\"\nabove = 90.0\nfour = \"5m\"\n",
        )
        .expect("write");
        let e = read_rule_file(&bad).expect_err("unknown key");
        assert!(e.contains("bad.toml") && e.contains("four"), "{e}");
        let e = read_rule_file(&dir.path().join("missing.toml")).expect_err("missing");
        assert!(e.starts_with("cannot read rule file"), "{e}");
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        let e = add(&["--kind", "cpu", "--above", "90"])
            .expect("parse")
            .specs(None)
            .expect_err("no name");
        assert!(e.contains("--name"), "{e}");
        assert!(add(&["--name", "x"]).is_err(), "kind is required");
        let e = add(&["--name", "x", "--kind", "cpu", "--severity", "loud"]).expect_err("severity");
        assert!(
            e.to_string().contains("use info, warning or critical"),
            "{e}"
        );
        let e = add(&["--file", "r.toml", "--kind", "cpu"]).expect_err("file and flags");
        assert!(e.to_string().contains("cannot be used with"), "{e}");
        assert!(parse_alert_id("xyz").is_err());
        assert_eq!(parse_silence_id("#4"), Ok(SilenceId(4)));
        assert!(parse_length("0s").is_err());
    }
}
