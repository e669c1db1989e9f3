//! The command line: global options, subcommands and their arguments, and what they resolve to
//! (config file, login, mux socket).

use crate::client::{Client, Login};
use crate::format;
use crate::mux;
use crate::util::project_dirs;
use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use std::path::PathBuf;

/// The `flotilla` command line.
#[derive(Parser, Debug)]
#[command(
    name = "flotilla",
    version,
    about = "Flotilla fleet console: run with no command to open the console"
)]
pub struct Cli {
    /// Hub address host:port (overrides the login's; env FLOTILLA_HUB).
    #[arg(long, env = "FLOTILLA_HUB", global = true)]
    pub hub: Option<String>,
    /// Directory of the operator identity (env FLOTILLA_LOGIN_DIR; default: the user's config dir).
    #[arg(long, env = "FLOTILLA_LOGIN_DIR", global = true)]
    pub login_dir: Option<PathBuf>,
    /// Config file (default: config.toml in the user's config dir).
    #[arg(long, env = "FLOTILLA_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Dial the hub even when a `flotilla mux` runs for this login.
    #[arg(long, global = true)]
    pub no_mux: bool,
    /// Socket of the mux (env FLOTILLA_MUX_SOCKET; default: mux-<hash of login and hubs>.sock in
    /// the user's runtime dir).
    #[arg(long, env = "FLOTILLA_MUX_SOCKET", global = true)]
    pub mux_socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// flotilla subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Enrol this user as an operator with a join token and store the identity.
    Login {
        /// Join token from `hubd token create --role operator|viewer|admin`.
        #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true)]
        token: String,
        /// Name to register (default: <user>-<host>).
        #[arg(long)]
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List agents.
    Agents {
        /// Sort by: name, status, cpu, mem, disk, last-seen (offline agents always last).
        #[arg(long, default_value = "name", value_parser = format::SORT_KEYS)]
        sort: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one agent by name or id.
    Agent {
        /// Name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Run the agent's disk health check (smartctl) now and wait for it (operator role).
        #[arg(long)]
        health: bool,
    },
    /// Print an agent's metrics history.
    Metrics {
        /// Name or id.
        name: String,
        /// How far back: 90s, 30m, 1h, 7d (minute buckets up to 6h, ten-minute buckets beyond).
        #[arg(long, default_value = "1h", value_parser = parse_duration_s)]
        since: u64,
        /// Per-series history instead of host totals: 'disk:/,net:eth0,io:vda,temp:LABEL,gpu:0,custom:NAME'.
        #[arg(long, value_parser = crate::host::cli::parse_series)]
        series: Option<crate::host::cli::SeriesSpec>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The processes that used most CPU and memory on an agent, minute by minute (times UTC).
    Top(crate::host::cli::TopArgs),
    /// Print fleet events as they happen (NDJSON with --json).
    Watch {
        /// Also print every metrics sample.
        #[arg(long)]
        metrics: bool,
        /// Print shared-folder changes and transfers instead of fleet events.
        #[arg(long)]
        files: bool,
        /// With --files: only this agent's folder and transfers.
        #[arg(long, requires = "files")]
        agent: Option<String>,
        /// Print JSON (one object per line).
        #[arg(long)]
        json: bool,
    },
    /// Run a command on the selected agents: `flotilla exec 'web-*' --timeout 30s -- uptime`.
    Exec(crate::exec::ExecArgs),
    /// Start, stop, restart, reload, enable or disable systemd units on the selected agents, as
    /// a job (needs services = "manage" on each agent).
    Service(crate::workloads::services_cli::ServiceArgs),
    /// Health of the selected agents: healthy, degraded or unhealthy, with reasons.
    Health {
        /// Agents (same grammar as exec).
        selector: String,
        /// Give up on an agent after this long (500ms, 30s, 5m).
        #[arg(long, value_parser = crate::exec::parse_timeout)]
        timeout: Option<std::time::Duration>,
        /// Print NDJSON events.
        #[arg(long)]
        json: bool,
    },
    /// Round trip from the hub to each selected agent, and its clock offset.
    Ping {
        /// Agents (same grammar as exec).
        selector: String,
        /// Print JSON (one object per line).
        #[arg(long)]
        json: bool,
    },
    /// Past jobs, newest first.
    Jobs {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One job: who ran what where, each agent's result and the end of its output.
    Job {
        /// Job id (from `flotilla jobs` or the exec summary).
        id: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The audit log: who did what, when, to which target.
    Audit {
        /// How many of the newest entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shell sessions, newest first: who opened a shell where, how it ended, its recording
    /// (operators see their own, admins all).
    Sessions {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Play a shell session's recording in this terminal, with its timing (pauses over 2 s are
    /// shortened), or dump exactly what its client saw with --raw.
    Replay {
        /// Session id (from `flotilla sessions`).
        #[arg(value_parser = crate::sessions::parse_session_id)]
        id: flotilla_wire::shell::ShellSessionId,
        /// Playback speed (2: twice as fast).
        #[arg(long, default_value = "1", value_parser = crate::sessions::parse_speed)]
        speed: f64,
        /// Write the recorded output at once, byte for byte, without timing.
        #[arg(long, alias = "instant")]
        raw: bool,
    },
    /// Log lines of a container (AGENT/CONTAINER) or, with --unit, of a systemd unit's journal.
    Logs(crate::workloads::logs::LogsArgs),
    /// A terminal on an agent (AGENT) or in one of its containers (AGENT/CONTAINER): the login
    /// shell, or the program after `--` (needs shell = "on" on the agent).
    Shell(crate::shell::ShellArgs),
    /// Start, stop, restart, kill or remove containers: SELECTOR/CONTAINER… (needs
    /// containers = "manage" on the agents).
    Container(crate::workloads::actions::ContainerArgs),
    /// Run a compose action on a project folder of each selected agent's compose_dir (needs
    /// compose = "on" there): up, down, pull, restart, ps, logs.
    Compose(crate::workloads::actions::ComposeArgs),
    /// Containers across the fleet, with the agent each runs on (running ones unless --all).
    Ps {
        /// Agents (same grammar as exec; default: all).
        selector: Option<String>,
        /// Stopped containers too.
        #[arg(short, long)]
        all: bool,
        /// Print JSON (an array, one row per line).
        #[arg(long)]
        json: bool,
    },
    /// systemd units across the fleet, with the agent each runs on.
    Services {
        /// Agents (same grammar as exec; default: all).
        selector: Option<String>,
        /// Only failed units.
        #[arg(long)]
        failed: bool,
        /// Print JSON (an array, one row per line).
        #[arg(long)]
        json: bool,
    },
    /// Alerts firing, pending and silenced (and recently resolved with --all), loudest first.
    Alerts(crate::alerts::AlertsArgs),
    /// Alert rules: add, list, show, rm, test; and ack to acknowledge a firing alert.
    Alert(Box<crate::alerts::AlertArgs>),
    /// Silences: mute matching alerts' notifications for a while (add, list, rm).
    Silence(crate::alerts::SilenceArgs),
    /// List an agent's shared folder (AGENT or AGENT:PATH), as the hub last heard of it.
    Ls {
        /// AGENT[:PATH].
        target: String,
        /// Everything below the path, not only its direct children.
        #[arg(short, long)]
        recursive: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy files: each side is AGENT:PATH or a local path (upload, download, agent to agent).
    Cp {
        /// Source: AGENT:PATH or a local path.
        src: String,
        /// Destination: AGENT:PATH or a local path; an existing directory receives the source by name.
        dst: String,
        /// Copy directory trees.
        #[arg(short, long)]
        recursive: bool,
        /// Seconds to keep retrying an interrupted transfer (it resumes where it stopped).
        #[arg(long, default_value_t = 300)]
        retry_for: u64,
        /// Print NDJSON events (started, progress with rate and ETA, done) instead of a bar.
        #[arg(long)]
        json: bool,
    },
    /// Hold one connection to the hub for this login and let one-shot commands (exec, agents,
    /// jobs…) use it instead of dialling, like ssh's ControlMaster. Runs until Ctrl-C or SIGTERM.
    Mux {
        /// Listen on this socket instead of the default one (as the global --mux-socket).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Exit after this long without clients (90s, 30m, 1h; 0: never), like ssh's
        /// ControlPersist.
        #[arg(long, value_parser = parse_duration_s)]
        persist: Option<u64>,
        /// Say whether a mux runs for this login (exit 0) or not (exit 1), like `ssh -O check`.
        #[arg(long, conflicts_with_all = ["stop", "persist"])]
        check: bool,
        /// Stop the mux running for this login, like `ssh -O exit`.
        #[arg(long, conflicts_with = "persist")]
        stop: bool,
        /// With --check: print JSON.
        #[arg(long, requires = "check")]
        json: bool,
    },
    /// Start a local hub and agents in a temporary directory and attach to them.
    Demo {
        /// Number of agents.
        #[arg(long, default_value_t = 3)]
        agents: u32,
        /// Do not open the console; print the fleet and its events instead.
        #[arg(long)]
        no_console: bool,
    },
    /// Print the shell completion script (bash: `flotilla completions bash > ~/.local/share/bash-completion/completions/flotilla`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (flotilla.1 and one per subcommand) into DIR.
    Man {
        /// Folder to write them into (created if missing), e.g. ~/.local/share/man/man1.
        dir: PathBuf,
    },
}

impl Command {
    /// Whether the command makes a few requests and exits (it may go through the mux). These run
    /// on a current-thread runtime: measured on 2 cores, that saves about 0.4 ms per command (no
    /// worker threads to start and join, no cross-thread wake-up per event) and read 200 MB of exec
    /// output no slower. The console, `watch`, `cp` and `demo` keep the multi-thread runtime;
    /// `mux` runs on one thread too (see [`Command::runs_on_one_thread`]).
    pub fn is_one_shot(&self) -> bool {
        matches!(
            self,
            Self::Agents { .. }
                | Self::Agent { .. }
                | Self::Metrics { .. }
                | Self::Top(_)
                | Self::Exec(_)
                | Self::Service(_)
                | Self::Health { .. }
                | Self::Ping { .. }
                | Self::Jobs { .. }
                | Self::Job { .. }
                | Self::Audit { .. }
                | Self::Sessions { .. }
                | Self::Replay { .. }
                | Self::Logs(_)
                | Self::Shell(_)
                | Self::Container(_)
                | Self::Compose(_)
                | Self::Ps { .. }
                | Self::Services { .. }
                | Self::Alerts(_)
                | Self::Alert(_)
                | Self::Silence(_)
        )
    }

    /// Whether the command runs on a current-thread runtime: the one-shot commands, and the mux.
    ///
    /// The mux relays one stream per client between a Unix socket and its QUIC connection. On a
    /// multi-thread runtime its accept loop (on the main thread), the relay tasks and the
    /// connection's driver handed work to each other across threads: 17 thread wake-ups per
    /// `flotilla exec` in `perf sched`, each 50–60 µs from wake-up to running on the 2-vCPU
    /// machine. On one thread an exec through it took 0.12–0.21 ms less (p50, three alternating
    /// runs of 300), and 512 MiB of exec output went through it as fast (`hubd/benches/interleave.py`,
    /// docs/benchmarks.md). One core relays a few thousand commands a second, as a ControlMaster does.
    pub fn runs_on_one_thread(&self) -> bool {
        self.is_one_shot() || matches!(self, Self::Mux { .. })
    }
}

/// `config.toml` of the console.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Hub address.
    pub hub: Option<String>,
    /// Login directory.
    pub login_dir: Option<PathBuf>,
    /// Remember commands run at the console's prompt across consoles (default true).
    pub history: Option<bool>,
}

impl Cli {
    /// The config file: `--config`, else config.toml in the user's config dir (absent: defaults).
    pub(super) fn file_config(&self) -> anyhow::Result<ConsoleConfig> {
        let path = match &self.config {
            Some(p) => p.clone(),
            None => match project_dirs() {
                Some(d) => d.config_dir().join("config.toml"),
                None => return Ok(ConsoleConfig::default()),
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("config {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.config.is_none() => {
                Ok(ConsoleConfig::default())
            }
            Err(e) => Err(e).with_context(|| format!("read config {}", path.display())),
        }
    }

    /// The login directory: flag or env, then config file, then the user's config dir.
    pub fn login_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.login_dir {
            return Ok(d.clone());
        }
        if let Some(d) = self.file_config()?.login_dir {
            return Ok(d);
        }
        project_dirs()
            .map(|d| d.config_dir().join("login"))
            .context("no home directory: pass --login-dir")
    }

    /// The login with the hub override applied.
    pub fn login(&self) -> anyhow::Result<Login> {
        let hub = match &self.hub {
            Some(h) => Some(h.clone()),
            None => self.file_config()?.hub,
        };
        Ok(Login::load(&self.login_dir()?, hub)?)
    }

    /// The mux socket for `login`: `--mux-socket`, else the default one for the login.
    pub fn mux_socket(&self, login: &Login) -> PathBuf {
        self.mux_socket
            .clone()
            .unwrap_or_else(|| mux::default_socket(login))
    }

    /// A client for a one-shot command: through the mux when one answers, else dialled.
    pub async fn one_shot_client(&self) -> anyhow::Result<Client> {
        let login = self.login()?;
        let socket = self.mux_socket(&login);
        Ok(Client::connect_one_shot(&login, &socket, self.no_mux).await?)
    }
}

/// Parses `90s`, `30m`, `1h`, `7d` (or bare seconds) into whole seconds.
pub(super) fn parse_duration_s(s: &str) -> Result<u64, String> {
    flotilla_wire::text::parse_duration_s(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap's own consistency checks, over every subcommand.
    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `flotilla --help` opens with what the program is, in words for its users.
    #[test]
    fn help_opens_with_what_flotilla_is() {
        let help = Cli::command().render_help().to_string();
        assert!(
            help.starts_with("Flotilla fleet console: run with no command to open the console"),
            "{help}"
        );
    }

    /// An argument struct's doc comment would replace the variant's text in `flotilla exec
    /// --help`; the help must say what the command does.
    #[test]
    fn subcommand_help_says_what_the_command_does() {
        let mut cli = Cli::command();
        for (name, says) in [
            ("exec", "Run a command on the selected agents"),
            ("mux", "Hold one connection to the hub"),
            ("cp", "Copy files"),
        ] {
            let sub = cli.find_subcommand_mut(name).expect(name);
            let help = sub.render_help().to_string();
            assert!(help.starts_with(says), "{name}: {help}");
        }
    }

    /// Global flags reach a subcommand, before or after its name.
    #[test]
    fn global_flags_parse_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "flotilla", "exec", "web-*", "--no-mux", "--hub", "h:1", "--", "true",
        ])
        .expect("parse");
        assert!(cli.no_mux);
        assert_eq!(cli.hub.as_deref(), Some("h:1"));
        match cli.command {
            Some(Command::Exec(args)) => assert_eq!(args.selector, "web-*"),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["flotilla", "--login-dir", "/l", "agents", "--json"])
            .expect("parse");
        assert_eq!(cli.login_dir.as_deref(), Some(std::path::Path::new("/l")));
    }
}
