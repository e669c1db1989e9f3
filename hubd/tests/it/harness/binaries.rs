//! The real binaries, as a sysadmin runs them: `hubd` in a temporary data directory on
//! `127.0.0.1:0` ([`Hub`]: readiness over `NOTIFY_SOCKET`, stderr to a log file, its CLI for
//! admin commands; [`HubProc`]: waits on a log line), any daemon whose log a test reads
//! ([`Daemon`]), one-shot commands, and real agents in this process that enrol with the CLI's
//! token ([`Agent`]). Every wait has a deadline and ends as soon as what it waits for happens.

pub(crate) use super::DEADLINE;
use super::within;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The `hubd` binary under test.
pub(crate) fn hubd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hubd"))
}

/// The `flotilla` binary next to it (built with the workspace, as `cargo nextest run --workspace`
/// does).
pub(crate) fn flotilla_bin() -> PathBuf {
    let path = hubd_bin().with_file_name("flotilla");
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// The `agentd` binary next to it (built when the agentd package is in the build, as with
/// `cargo nextest run --workspace` or `-p flotilla-hubd -p flotilla-agentd`).
pub(crate) fn agentd_bin() -> PathBuf {
    let path = hubd_bin().with_file_name("agentd");
    assert!(
        path.is_file(),
        "{} is missing: build it too (cargo nextest run -p flotilla-hubd -p flotilla-agentd)",
        path.display()
    );
    path
}

/// A command with none of the caller's FLOTILLA_*, RUST_LOG or NOTIFY_SOCKET variables.
pub(crate) fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOTILLA_") || k == "RUST_LOG" || k == "NOTIFY_SOCKET" {
            cmd.env_remove(k);
        }
    }
    cmd.kill_on_drop(true);
    cmd
}

/// `hubd` with a data directory.
pub(crate) fn hubd(data_dir: &Path) -> Command {
    let mut cmd = command(&hubd_bin());
    cmd.arg("--data-dir").arg(data_dir);
    cmd
}

/// Runs a command to its end.
pub(crate) async fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .await
        .expect("run command")
}

/// Exit code.
pub(crate) fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

/// Stdout as JSON (panics with both streams when it is not).
pub(crate) fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Stderr as text.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until `ok` holds, looking again each time something in `dir` changes (a file another
/// process writes there), for at most [`DEADLINE`]. The watch is set up before the first look,
/// so a change between the two is not missed.
pub(crate) async fn wait_for_change(dir: &Path, what: &str, mut ok: impl FnMut() -> bool) {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .expect("file watcher");
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .expect("watch");
    let start = Instant::now();
    while !ok() {
        let left = DEADLINE.saturating_sub(start.elapsed());
        assert!(
            matches!(tokio::time::timeout(left, rx.recv()).await, Ok(Some(()))),
            "timed out waiting for {what}"
        );
    }
}

/// The receiving end of a daemon's `$NOTIFY_SOCKET`, as systemd holds it for a `Type=notify`
/// unit: the daemon says `READY=1` once it serves and again after each reload.
pub(crate) struct Notifications {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
}

impl Notifications {
    /// Binds `path` (replacing a socket a previous run left there).
    pub(crate) fn bind(path: PathBuf) -> Self {
        let _ = std::fs::remove_file(&path);
        let socket = tokio::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        Self { socket, path }
    }

    /// Where the daemon sends (its `NOTIFY_SOCKET`).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The next notification, waiting at most [`DEADLINE`].
    pub(crate) async fn next(&self) -> String {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(DEADLINE, self.socket.recv(&mut buf))
            .await
            .expect("a notification within the deadline")
            .expect("recv");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Skips notifications up to the next `READY=1` and returns it.
    pub(crate) async fn ready(&self) -> String {
        loop {
            let said = self.next().await;
            if said.starts_with("READY=1") {
                return said;
            }
        }
    }
}

/// Sends `signal` (`-TERM`, `-HUP`) to a process.
pub(crate) async fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Waits for `child` to exit.
pub(crate) async fn exited(child: &mut Child) -> ExitStatus {
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("process did not exit within the deadline")
        .expect("wait")
}

/// A hub data directory and, while running, its process.
pub(crate) struct Hub {
    /// Keeps the directory alive.
    pub(crate) dir: tempfile::TempDir,
    /// The data directory.
    pub(crate) data: PathBuf,
    /// Arguments placed before `run` (e.g. `--config FILE`).
    pub(crate) global_args: Vec<String>,
    /// Extra `run` arguments.
    pub(crate) run_args: Vec<String>,
    /// Extra environment for `run`.
    pub(crate) env: Vec<(String, String)>,
    /// The serving process.
    pub(crate) child: Option<Child>,
    /// Its stderr, appended across restarts.
    pub(crate) log: PathBuf,
    /// Where the running hub says it is ready (as to systemd).
    notify: Option<Notifications>,
}

impl Hub {
    /// `hubd init` in a fresh directory, listening on a free loopback port.
    pub(crate) async fn init() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("hub");
        let out = run(hubd(&data).args([
            "init",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "127.0.0.1",
            "--json",
        ]))
        .await;
        assert_eq!(code(&out), 0, "init: {}", stderr(&out));
        let log = dir.path().join("hub.log");
        Self {
            dir,
            data,
            global_args: Vec::new(),
            run_args: Vec::new(),
            env: Vec::new(),
            child: None,
            log,
            notify: None,
        }
    }

    /// Starts `hubd run` and waits for its `READY=1`, which it sends once it serves.
    pub(crate) async fn start(&mut self) {
        let _ = std::fs::remove_file(self.data.join("hub.addr"));
        let _ = std::fs::remove_file(self.data.join("metrics.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut cmd = hubd(&self.data);
        cmd.args(&self.global_args)
            .arg("run")
            .args(&self.run_args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let notify = Notifications::bind(self.dir.path().join("notify.sock"));
        cmd.env("NOTIFY_SOCKET", notify.path());
        self.child = Some(cmd.spawn().expect("spawn hubd run"));
        notify.ready().await;
        assert!(
            status(&self.data).await.is_some(),
            "READY=1, but the maintenance socket does not answer"
        );
        self.notify = Some(notify);
        self.pin_port();
    }

    /// Waits for the `READY=1` the running hub sends when it has handled a SIGHUP, whether the
    /// new configuration was applied or refused.
    pub(crate) async fn reloaded(&self) {
        self.notify.as_ref().expect("hub running").ready().await;
    }

    /// Keeps the port a first start on `127.0.0.1:0` got, so agents and tokens find the hub after
    /// a restart (as a real hub's fixed port does).
    fn pin_port(&self) {
        let file = self.data.join("hub.toml");
        let Ok(text) = std::fs::read_to_string(&file) else {
            return;
        };
        let addr = std::fs::read_to_string(self.data.join("hub.addr")).expect("hub.addr");
        let pinned = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", addr.trim()),
        );
        if pinned != text {
            std::fs::write(&file, pinned).expect("pin the port");
        }
    }

    /// The process id of the running hub.
    pub(crate) fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("hub running")
    }

    /// SIGTERM and the exit status.
    pub(crate) async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("hub running");
        signal(child.id().expect("pid"), "-TERM").await;
        exited(&mut child).await
    }

    /// The log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `hubd ARGS --json` against this hub; exit code and JSON.
    pub(crate) async fn admin(&self, args: &[&str]) -> (i32, Value) {
        let out = run(hubd(&self.data).args(args).arg("--json")).await;
        (code(&out), json(&out))
    }

    /// A fresh join token.
    pub(crate) async fn token(&self, role: &str, uses: u32) -> String {
        let (c, v) = self
            .admin(&[
                "token",
                "create",
                "--role",
                role,
                "--uses",
                &uses.to_string(),
            ])
            .await;
        assert_eq!(c, 0, "{v}");
        v["token"].as_str().expect("token").to_string()
    }

    /// The metrics endpoint's address.
    pub(crate) fn metrics_addr(&self) -> SocketAddr {
        std::fs::read_to_string(self.data.join("metrics.addr"))
            .expect("metrics.addr")
            .trim()
            .parse()
            .expect("address")
    }
}

/// The hub's own status from its maintenance socket, if it serves.
pub(crate) async fn status(data: &Path) -> Option<hubd::maint::HubStatus> {
    match hubd::maint::request(data, &hubd::maint::MaintRequest::Status).await {
        Ok(Some(hubd::maint::MaintResponse::Status(s))) => Some(s),
        _ => None,
    }
}

/// An agent in this process, through the agentd library.
pub(crate) struct Agent {
    /// Its data directory.
    pub(crate) paths: agentd::AgentPaths,
    /// Link state.
    pub(crate) state: watch::Receiver<agentd::LinkState>,
    running: Option<agentd::RunningAgent>,
    cancel: CancellationToken,
}

impl Agent {
    /// Starts the agent enrolled in `paths`.
    pub(crate) fn start(paths: &agentd::AgentPaths) -> Self {
        let cancel = CancellationToken::new();
        let running = agentd::start(paths, agentd::AgentConfig::default(), cancel.clone())
            .expect("start agent");
        Self {
            paths: paths.clone(),
            state: running.state.clone(),
            running: Some(running),
            cancel,
        }
    }

    /// Waits for the hub's welcome.
    pub(crate) async fn connected(&mut self) {
        let name = self.paths.data_dir.display().to_string();
        tokio::time::timeout(
            DEADLINE,
            self.state
                .wait_for(|s| matches!(s, agentd::LinkState::Connected { .. })),
        )
        .await
        .unwrap_or_else(|_| panic!("agent {name} did not connect"))
        .expect("agent state");
    }

    /// Waits for the link to go down and returns why.
    pub(crate) async fn disconnected(&mut self) -> String {
        let state = tokio::time::timeout(
            DEADLINE,
            self.state
                .wait_for(|s| matches!(s, agentd::LinkState::Disconnected(_))),
        )
        .await
        .expect("agent did not notice the disconnection")
        .expect("agent state")
        .clone();
        match state {
            agentd::LinkState::Disconnected(reason) => reason,
            agentd::LinkState::Connected { .. } => unreachable!(),
        }
    }

    /// Stops it and waits.
    pub(crate) async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(DEADLINE, r.wait())
                .await
                .expect("agent did not stop");
        }
    }
}

/// Enrols an agent named `name` with `token` into a directory under `dir`.
pub(crate) async fn enrol(dir: &Path, name: &str, token: &str) -> agentd::AgentPaths {
    flotilla_certs::install_crypto_provider();
    let paths = agentd::AgentPaths {
        data_dir: dir.join(name),
    };
    agentd::enroll(&paths, token, Some(name.into()), Vec::new())
        .await
        .expect("enrol");
    paths
}

// ---------------------------------------------------------------------------------------------
// Daemons whose log lines a test waits on.

/// `bin args` with RUST_LOG=info and no data-dir or token variables of the caller, for the tests
/// that read a daemon's log lines.
fn logged_command(bin: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env_remove("FLOTILLA_DATA_DIR")
        .env_remove("FLOTILLA_AGENT_DIR")
        .env_remove("FLOTILLA_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs a command to completion and returns its output.
pub(crate) async fn run_cmd(bin: &Path, args: &[&str]) -> Output {
    let what = format!("{} {}", bin.display(), args.join(" "));
    within(DEADLINE, &what, logged_command(bin, args).output())
        .await
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"))
}

/// Runs a command that must succeed and print JSON.
pub(crate) async fn run_json(bin: &Path, args: &[&str]) -> Value {
    let out = run_cmd(bin, args).await;
    assert!(
        out.status.success(),
        "{} {} failed ({}): {}",
        bin.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A long-running child whose stderr log lines are collected as they come.
pub(crate) struct Daemon {
    /// The process.
    pub(crate) child: Child,
    logs: watch::Receiver<Vec<String>>,
    what: String,
}

impl Daemon {
    /// Spawns `bin args`.
    pub(crate) fn spawn(bin: &Path, args: &[&str]) -> Self {
        Self::spawn_env(bin, args, &[])
    }

    /// Spawns `bin args` with `env` added to its environment.
    pub(crate) fn spawn_env(bin: &Path, args: &[&str], env: &[(String, String)]) -> Self {
        let what = format!("{} {}", bin.display(), args.join(" "));
        let mut child = logged_command(bin, args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, logs) = watch::channel(Vec::new());
        // Ends when the child closes its stderr (it exited); reading keeps the pipe from filling.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tx.send_modify(|v| v.push(line));
            }
        });
        Self { child, logs, what }
    }

    /// Everything it logged so far.
    pub(crate) fn log_text(&self) -> String {
        self.logs.borrow().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub(crate) async fn wait_log(&mut self, needle: &str, deadline: Duration) {
        let found = tokio::time::timeout(
            deadline,
            self.logs
                .wait_for(|lines| lines.iter().any(|l| l.contains(needle))),
        )
        .await
        .map(|r| r.map(drop));
        match found {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => panic!(
                "{} exited before logging {needle:?}; its log:\n{}",
                self.what,
                self.log_text()
            ),
            Err(_) => panic!(
                "{} did not log {needle:?} within {deadline:?}; its log:\n{}",
                self.what,
                self.log_text()
            ),
        }
    }

    /// Process id.
    pub(crate) fn pid(&self) -> i32 {
        i32::try_from(self.child.id().expect("child still running")).expect("pid fits i32")
    }

    /// Sends SIGTERM.
    pub(crate) fn sigterm(&self) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped; no memory involved.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM {}", self.pid());
    }

    /// SIGKILL, then reap.
    pub(crate) async fn kill9(&mut self) {
        self.child.start_kill().expect("kill -9");
        self.wait_exit(DEADLINE).await;
    }

    /// Waits for the process to exit.
    pub(crate) async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => status.expect("wait for child"),
            Err(_) => panic!(
                "{} still running after {deadline:?}; its log:\n{}",
                self.what,
                self.log_text()
            ),
        }
    }

    /// Whether it is still running.
    pub(crate) fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

/// A real `hubd run` process.
pub(crate) struct HubProc {
    /// The process.
    pub(crate) daemon: Daemon,
    /// Where it listens (from `hub.addr`, written before it logs "hub listening").
    pub(crate) addr: SocketAddr,
}

impl HubProc {
    /// `hubd --data-dir D run [--listen ADDR]`, waiting until it listens.
    pub(crate) async fn run(data_dir: &Path, listen: Option<SocketAddr>) -> Self {
        let data = data_dir.to_str().expect("utf-8 path");
        let listen = listen.map(|a| a.to_string());
        let mut args = vec!["--data-dir", data, "run"];
        if let Some(l) = &listen {
            args.extend(["--listen", l.as_str()]);
        }
        let mut daemon = Daemon::spawn(&hubd_bin(), &args);
        daemon.wait_log("hub listening", DEADLINE).await;
        let text = std::fs::read_to_string(data_dir.join("hub.addr")).expect("hub.addr");
        let addr = text.trim().parse().expect("hub.addr holds an address");
        Self { daemon, addr }
    }
}
