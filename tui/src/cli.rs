//! The scriptable side of `flotilla`: login, agents, agent, watch, demo, mux. Every command has
//! `--json`.
//!
//! One-shot commands (`agents`, `agent`, `metrics`, `exec`, `health`, `ping`, `jobs`, `job`,
//! `audit`) go through a running `flotilla mux` for the login when one answers, unless `--no-mux`;
//! the console, `watch`, `ls`, `cp` and `demo` always dial.

use crate::client::{Client, ClientError, Login, ONE_SHOT_CLOSE_WAIT};
use crate::files::{self, FilesError, Place};
use crate::format;
use crate::mux::{self, Master, MuxEnd, MuxOptions};
use anyhow::Context;
use clap::{Parser, Subcommand};
use flotilla_wire::msg::{FleetEvent, OpRequest, OpResponse};
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
    },
    /// Print an agent's metrics history.
    Metrics {
        /// Name or id.
        name: String,
        /// How far back: 90s, 30m, 1h, 7d (minute buckets up to 6h, ten-minute buckets beyond).
        #[arg(long, default_value = "1h", value_parser = parse_duration_s)]
        since: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
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
                | Self::Exec(_)
                | Self::Health { .. }
                | Self::Ping { .. }
                | Self::Jobs { .. }
                | Self::Job { .. }
                | Self::Audit { .. }
        )
    }

    /// Whether the command runs on a current-thread runtime: the one-shot commands, and the mux.
    ///
    /// The mux relays one stream per client between a Unix socket and its QUIC connection. On a
    /// multi-thread runtime its accept loop (on the main thread), the relay tasks and the
    /// connection's driver handed work to each other across threads: 17 thread wake-ups per
    /// `flotilla exec` in `perf sched`, each 50–60 µs from wake-up to running on the 2-vCPU
    /// machine. On one thread an exec through it took 0.12–0.21 ms less (p50, three alternating
    /// runs of 300), and 512 MiB of exec output went through it as fast (docs/benchmarks.md,
    /// "Session 10"). One core relays a few thousand commands a second, as a ControlMaster does.
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

/// The user's config, data, state and cache directories for flotilla.
pub(crate) fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("dev", "flotilla", "flotilla")
}

impl Cli {
    fn file_config(&self) -> anyhow::Result<ConsoleConfig> {
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

/// Parses `90s`, `30m`, `1h`, `7d` (or bare seconds) into seconds.
pub fn parse_duration_s(s: &str) -> Result<u64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: expected a number then s, m, h or d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "duration {s:?}: unknown unit {unit:?} (use s, m, h or d)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub use crate::exec::EXIT_BROKEN_PIPE;

/// Whether `err` comes from writing into a pipe nobody reads any more (`flotilla agents | head -1`):
/// the command then ends quietly with [`EXIT_BROKEN_PIPE`], as it would by SIGPIPE.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs a subcommand; returns the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let Some(command) = &cli.command else {
        let history = match cli.file_config()?.history {
            Some(false) => None,
            _ => crate::history::HistoryFile::default_location(),
        };
        return crate::console::run_attached(cli.login()?, history).await;
    };
    match command {
        Command::Login { token, name, json } => {
            let dir = cli.login_dir()?;
            create_private_dir(&dir)?;
            let hello = crate::client::local_hello();
            let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
            let name = name
                .clone()
                .unwrap_or_else(|| format!("{user}-{}", hello.hostname));
            let done = flotilla_certs::enrol::enrol(token, &dir, name, Vec::new(), hello)
                .await
                .context("login failed")?;
            let e = &done.enrolled;
            if *json {
                crate::util::outln!(
                    "{}",
                    serde_json::json!({ "id": e.identity, "name": e.name, "role": e.role, "hubs": done.hubs, "login_dir": dir })
                )?;
            } else {
                crate::util::outln!(
                    "Logged in as {} ({}, role {}); identity in {}",
                    e.name,
                    e.identity,
                    e.role,
                    dir.display()
                )?;
            }
            Ok(0)
        }
        Command::Agents { sort, json } => {
            let client = cli.one_shot_client().await?;
            let result = client.request(&OpRequest::ListAgents).await;
            client.close_within(ONE_SHOT_CLOSE_WAIT).await;
            let mut list = match result? {
                OpResponse::Agents(list) => list,
                other => anyhow::bail!("unexpected reply {other:?}"),
            };
            format::sort_agents(&mut list, sort);
            if *json {
                crate::util::outln!("{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                crate::util::out!("{}", format::agents_table(&list, now_ms()))?;
            }
            Ok(0)
        }
        Command::Agent { name, json } => {
            let client = cli.one_shot_client().await?;
            let result = client
                .request(&OpRequest::Agent {
                    query: name.clone(),
                })
                .await;
            client.close_within(ONE_SHOT_CLOSE_WAIT).await;
            match result {
                Ok(OpResponse::Agent(a)) => {
                    if *json {
                        crate::util::outln!("{}", serde_json::to_string_pretty(&a)?)?;
                    } else {
                        crate::util::out!("{}", format::agent_detail(&a, now_ms()))?;
                    }
                    Ok(0)
                }
                Ok(other) => anyhow::bail!("unexpected reply {other:?}"),
                Err(e) => Err(e.into()),
            }
        }
        Command::Metrics { name, since, json } => {
            let client = cli.one_shot_client().await?;
            let result = client
                .request(&OpRequest::Metrics {
                    query: name.clone(),
                    since_s: *since,
                })
                .await;
            client.close_within(ONE_SHOT_CLOSE_WAIT).await;
            match result? {
                OpResponse::Series(series) => {
                    if *json {
                        crate::util::outln!("{}", serde_json::to_string_pretty(&series)?)?;
                    } else {
                        crate::util::out!("{}", format::series_table(&series))?;
                    }
                    Ok(0)
                }
                other => anyhow::bail!("unexpected reply {other:?}"),
            }
        }
        Command::Watch {
            metrics,
            files,
            agent,
            json,
        } => {
            let client = Client::connect(&cli.login()?).await?;
            if *files {
                watch_files(&client, agent.clone(), *json).await?;
            } else {
                watch(&client, *metrics, *json).await?;
            }
            Ok(0)
        }
        Command::Ls {
            target,
            recursive,
            json,
        } => {
            let (agent, path) = match Place::parse(target) {
                Place::Agent { agent, path } => (agent, path),
                Place::Local(_) => (target.clone(), String::new()),
            };
            let client = Client::connect(&cli.login()?).await?;
            let listing = files::list(&client, &agent, &path, *recursive).await;
            client.close().await;
            let listing = listing?;
            if *json {
                crate::util::outln!("{}", serde_json::to_string_pretty(&listing)?)?;
            } else {
                crate::util::out!("{}", files::listing_table(&listing))?;
            }
            Ok(0)
        }
        Command::Cp {
            src,
            dst,
            recursive,
            retry_for,
            json,
        } => {
            let opts = files::CopyOptions {
                recursive: *recursive,
                retry_for: std::time::Duration::from_secs(*retry_for),
            };
            cp(&cli.login()?, src, dst, &opts, *json).await
        }
        Command::Demo { agents, no_console } => crate::demo::run(*agents, *no_console).await,
        Command::Mux {
            socket,
            persist,
            check,
            stop,
            json,
        } => {
            let login = cli.login()?;
            let explicit = socket.clone().or_else(|| cli.mux_socket.clone());
            let path = explicit
                .clone()
                .unwrap_or_else(|| mux::default_socket(&login));
            if *check {
                return mux_check(&path, *json).await;
            }
            if *stop {
                return mux_stop(&path).await;
            }
            let opts = MuxOptions {
                socket: path,
                default_dir: explicit.is_none(),
                persist: persist
                    .filter(|s| *s > 0)
                    .map(std::time::Duration::from_secs),
            };
            mux_run(&login, opts).await
        }
        Command::Exec(args) => {
            exec_like(&cli, |c| async move {
                crate::exec::exec_command(&c, &args.request(), args.json).await
            })
            .await
        }
        Command::Health {
            selector,
            timeout,
            json,
        } => {
            exec_like(&cli, |c| async move {
                let req = crate::exec::health_request(selector, *timeout);
                crate::exec::exec_command(&c, &req, *json).await
            })
            .await
        }
        Command::Ping { selector, json } => {
            exec_like(&cli, |c| async move {
                crate::exec::ping_command(&c, selector, *json).await
            })
            .await
        }
        Command::Jobs { limit, json } => {
            exec_like(&cli, |c| async move {
                crate::exec::jobs_command(&c, *limit, *json).await
            })
            .await
        }
        Command::Job { id, json } => {
            exec_like(&cli, |c| async move {
                crate::exec::job_command(&c, *id, *json).await
            })
            .await
        }
        Command::Audit { limit, json } => {
            exec_like(&cli, |c| async move {
                crate::exec::audit_command(&c, *limit, *json).await
            })
            .await
        }
    }
}

/// Connects (through the mux when one runs), runs `f`, closes; the exit status comes from `f`.
async fn exec_like<F, Fut>(cli: &Cli, f: F) -> anyhow::Result<u8>
where
    F: FnOnce(std::sync::Arc<Client>) -> Fut,
    Fut: Future<Output = Result<u8, ClientError>>,
{
    let client = std::sync::Arc::new(cli.one_shot_client().await?);
    let result = f(client.clone()).await;
    // Long enough for the close to be sent (the hub then ends the session at once), short enough
    // not to add QUIC's draining period to every `flotilla exec`.
    client.close_within(ONE_SHOT_CLOSE_WAIT).await;
    Ok(result?)
}

/// How long `flotilla mux --stop` waits for the mux to remove its socket: it resets its streams
/// (up to 2 s) and closes its connection (up to 1 s) first.
const MUX_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `flotilla mux`: runs the mux in the foreground until SIGINT, SIGTERM, `--persist` idle time, or
/// the hub connection ends (exit 1).
async fn mux_run(login: &Login, opts: MuxOptions) -> anyhow::Result<u8> {
    use tokio::signal::unix::{SignalKind, signal};
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let on_signal = cancel.clone();
    let signals = tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        on_signal.cancel();
    });
    // Dialling may take a while (10 s per hub address); a signal meanwhile stops it.
    let master = tokio::select! {
        m = Master::start(login, &opts) => m,
        _ = cancel.cancelled() => {
            eprintln!("flotilla mux: stopped before it started");
            return Ok(0);
        }
    };
    let master = match master {
        Ok(m) => m,
        Err(e) => {
            signals.abort();
            return Err(e).context("mux not started");
        }
    };
    let w = master.welcome();
    eprintln!(
        "flotilla mux: {} ({}) on hub {}; listening on {}; Ctrl-C stops it",
        w.name,
        w.role,
        w.hub_version,
        master.socket().display()
    );
    let ended = master.run(cancel).await;
    signals.abort();
    match ended.context("mux stopped")? {
        MuxEnd::Stopped => eprintln!("flotilla mux: stopped"),
        MuxEnd::Idle => eprintln!("flotilla mux: no clients for the --persist time; stopped"),
    }
    Ok(0)
}

/// `flotilla mux --check`: exit 0 and say who it is when a mux answers, else exit 1.
async fn mux_check(path: &std::path::Path, json: bool) -> anyhow::Result<u8> {
    match mux::probe(path).await {
        mux::Probe::Answered(a) => {
            let w = &a.welcome;
            if json {
                crate::util::outln!(
                    "{}",
                    serde_json::json!({
                        "running": true, "socket": path, "pid": a.pid, "identity": w.identity,
                        "name": w.name, "role": w.role, "hub_version": w.hub_version,
                    })
                )?;
            } else {
                crate::util::outln!(
                    "mux running (pid {}): {} ({}) on hub {} at {}",
                    a.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    w.name,
                    w.role,
                    w.hub_version,
                    path.display()
                )?;
            }
            Ok(0)
        }
        other => {
            if json {
                crate::util::outln!(
                    "{}",
                    serde_json::json!({ "running": false, "socket": path, "state": other.to_string() })
                )?;
            } else {
                eprintln!("flotilla: no mux at {}: {other}", path.display());
            }
            Ok(1)
        }
    }
}

/// `flotilla mux --stop`: exit 0 once the mux is gone, 1 when none ran.
async fn mux_stop(path: &std::path::Path) -> anyhow::Result<u8> {
    match mux::stop(path, MUX_STOP_WAIT).await {
        Ok(Some(pid)) => {
            eprintln!("flotilla: mux (pid {pid}) stopped");
            Ok(0)
        }
        Ok(None) => {
            eprintln!("flotilla: no mux at {}", path.display());
            Ok(1)
        }
        Err(e) => anyhow::bail!("cannot stop the mux at {}: {e}", path.display()),
    }
}

/// Prints events until the hub closes the subscription or Ctrl-C.
pub async fn watch(client: &Client, metrics: bool, json: bool) -> Result<(), ClientError> {
    let mut events = client.subscribe().await?;
    let mut names = std::collections::HashMap::new();
    loop {
        let ev = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ev = events.next() => match ev? {
                Some(ev) => ev,
                None => return Ok(()),
            },
        };
        if let FleetEvent::Snapshot(list) | FleetEvent::SnapshotMore(list) = &ev {
            names.extend(list.iter().map(|a| (a.id.clone(), a.name.clone())));
        }
        if let FleetEvent::Online(a) = &ev {
            names.insert(a.id.clone(), a.name.clone());
        }
        if matches!(ev, FleetEvent::Metrics { .. }) && !metrics {
            continue;
        }
        if json {
            crate::util::outln!("{}", format::event_json(&ev)).map_err(ClientError::Output)?;
            continue;
        }
        let name = |id: &flotilla_wire::IdentityId| {
            names.get(id).cloned().unwrap_or_else(|| id.to_string())
        };
        match &ev {
            FleetEvent::Snapshot(list) => {
                crate::util::out!("{}", format::agents_table(list, now_ms()))
                    .map_err(ClientError::Output)?
            }
            FleetEvent::SnapshotMore(list) => {
                let table = format::agents_table(list, now_ms());
                crate::util::out!(
                    "{}",
                    table
                        .split_once('\n')
                        .map(|(_, rows)| rows)
                        .unwrap_or_default()
                )
                .map_err(ClientError::Output)?;
            }
            FleetEvent::Online(a) => {
                crate::util::outln!("online   {:<20} {} {}", a.name, a.addr, a.version)
                    .map_err(ClientError::Output)?
            }
            FleetEvent::Offline { id, reason, .. } => {
                crate::util::outln!("offline  {:<20} {reason}", name(id))
                    .map_err(ClientError::Output)?
            }
            FleetEvent::Revoked { id } => {
                crate::util::outln!("revoked  {:<20}", name(id)).map_err(ClientError::Output)?
            }
            FleetEvent::Metrics { id, sample } => crate::util::outln!(
                "metrics  {:<20} cpu {:.0}% mem {}",
                name(id),
                sample.cpu_pct,
                format::bytes(sample.mem_used)
            )
            .map_err(ClientError::Output)?,
            FleetEvent::Lagged { missed } => {
                crate::util::outln!("(missed {missed} events: output fell behind)")
                    .map_err(ClientError::Output)?
            }
        }
    }
}

/// Prints file events until the hub closes the watch or Ctrl-C.
pub async fn watch_files(
    client: &Client,
    agent: Option<String>,
    json: bool,
) -> Result<(), FilesError> {
    let (_send, mut recv) = files::watch_stream(client, agent).await?;
    loop {
        let ev = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ev = files::next_event(&mut recv) => match ev? {
                Some(ev) => ev,
                None => return Ok(()),
            },
        };
        if json {
            crate::util::outln!("{}", serde_json::to_string(&ev).unwrap_or_default())
                .map_err(ClientError::Output)?;
        } else {
            crate::util::outln!("{}", files::event_line(&ev)).map_err(ClientError::Output)?;
        }
    }
}

/// `flotilla cp`: Ctrl-C cancels on both ends; exit 2 for usage errors, 130 when cancelled.
async fn cp(
    login: &Login,
    src: &str,
    dst: &str,
    opts: &files::CopyOptions,
    json: bool,
) -> anyhow::Result<u8> {
    let (src, dst) = (Place::parse(src), Place::parse(dst));
    let cancel = tokio_util::sync::CancellationToken::new();
    let on_signal = cancel.clone();
    let signals = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let mut progress = files::progress::Progress::new(json);
    let result = files::copy(login, &src, &dst, opts, &cancel, &mut |ev| {
        progress.on_event(ev)
    })
    .await;
    signals.abort();
    progress.finish();
    match result {
        Ok(report) => {
            if json {
                crate::util::outln!(
                    "{}",
                    serde_json::json!({ "event": "summary", "report": report })
                )?;
            } else if report.files != 1 || report.dirs > 0 {
                crate::util::outln!(
                    "{} files ({}), {} directories, {} skipped",
                    report.files,
                    format::bytes(report.bytes),
                    report.dirs,
                    report.skipped
                )?;
            }
            Ok(0)
        }
        Err(FilesError::Cancelled) => {
            eprintln!("flotilla: copy cancelled; partial files removed on both ends");
            Ok(130)
        }
        Err(FilesError::Usage(m)) => {
            eprintln!("flotilla: {m}");
            Ok(2)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates a directory with mode 0700.
pub fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", dir.display()))
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
