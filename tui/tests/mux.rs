//! `flotilla mux` as a user meets it: real `hubd`, `agentd` and `flotilla` processes over QUIC and
//! mTLS on 127.0.0.1, each test in its own temp dir with its own runtime dir for the socket.
//!
//! Checks that one-shot commands through the mux print and exit exactly as when they dial, that a
//! stale socket falls back to dialling, that the socket is private, that a client killed mid-job
//! cancels the job, and that the mux cleans up after SIGTERM, `--stop`, `--persist` and losing the
//! hub. Nothing here sleeps: every wait is on a child's exit or a line it logs, under a deadline.
//!
//! `hubd` and `agentd` are spawned from beside the `flotilla` binary (this crate may not link them),
//! so build the workspace first: `cargo build --workspace`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Generous deadline for anything a loaded 2-core CI machine does.
const DEADLINE: Duration = Duration::from_secs(30);

/// The debug line a one-shot command logs when it goes through the mux.
const USED_MUX: &str = "using the mux";

fn bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_flotilla")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// A long-running child whose stderr lines are collected as they come.
struct Daemon {
    child: Child,
    logs: watch::Receiver<Vec<String>>,
    /// Reads stderr to its end; awaited after an exit so the last lines are in `logs`.
    reader: Option<tokio::task::JoinHandle<()>>,
    what: String,
}

impl Daemon {
    fn spawn(mut cmd: Command, what: &str) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, logs) = watch::channel(Vec::new());
        // Ends when the child closes its stderr (it exited); reading keeps the pipe from filling.
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tx.send_modify(|v| v.push(line));
            }
        });
        Self {
            child,
            logs,
            reader: Some(reader),
            what: what.into(),
        }
    }

    fn log_text(&self) -> String {
        self.logs.borrow().join("\n")
    }

    /// Waits until a line of its stderr contains `needle`.
    async fn wait_log(&mut self, needle: &str) {
        let found = tokio::time::timeout(
            DEADLINE,
            self.logs
                .wait_for(|lines| lines.iter().any(|l| l.contains(needle))),
        )
        .await
        .map(|r| r.map(drop));
        match found {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => panic!(
                "{} exited before logging {needle:?}:\n{}",
                self.what,
                self.log_text()
            ),
            Err(_) => panic!(
                "{} did not log {needle:?} within {DEADLINE:?}:\n{}",
                self.what,
                self.log_text()
            ),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id().expect("still running") as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped; no memory involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill -{sig} {}", self.what);
    }

    /// Waits for the process to exit and for its last stderr line to be read.
    async fn wait_exit(&mut self) -> ExitStatus {
        let status = match tokio::time::timeout(DEADLINE, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!(
                "{} still running after {DEADLINE:?}:\n{}",
                self.what,
                self.log_text()
            ),
        };
        if let Some(reader) = self.reader.take() {
            tokio::time::timeout(DEADLINE, reader)
                .await
                .expect("stderr read to its end in time")
                .expect("stderr reader");
        }
        status
    }
}

/// A hub and one agent, `one`, that runs anything; the hub's admin login; a private runtime dir.
struct Fleet {
    tmp: tempfile::TempDir,
    hub: Daemon,
    _agent: Daemon,
}

fn daemon_cmd(bin_name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin(bin_name));
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env_remove("FLOTILLA_DATA_DIR")
        .env_remove("FLOTILLA_AGENT_DIR")
        .env_remove("FLOTILLA_TOKEN");
    cmd
}

async fn run_ok(mut cmd: Command, what: &str) -> String {
    let out = tokio::time::timeout(DEADLINE, cmd.stdin(Stdio::null()).output())
        .await
        .unwrap_or_else(|_| panic!("{what} still running after {DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Fleet {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let hub_dir = tmp.path().join("hub");
        let hub_data = hub_dir.to_str().expect("utf-8");
        run_ok(
            daemon_cmd(
                "hubd",
                &[
                    "--data-dir",
                    hub_data,
                    "init",
                    "--listen",
                    "127.0.0.1:0",
                    "--json",
                ],
            ),
            "hubd init",
        )
        .await;
        let mut hub = Daemon::spawn(daemon_cmd("hubd", &["--data-dir", hub_data, "run"]), "hubd");
        hub.wait_log("hub listening").await;
        let token = run_ok(
            daemon_cmd(
                "hubd",
                &[
                    "--data-dir",
                    hub_data,
                    "token",
                    "create",
                    "--role",
                    "agent",
                    "--ttl",
                    "1h",
                    "--json",
                ],
            ),
            "hubd token create",
        )
        .await;
        let token: serde_json::Value = serde_json::from_str(&token).expect("token JSON");
        let token = token["token"].as_str().expect("token").to_string();
        let agent_dir = tmp.path().join("one");
        let agent_data = agent_dir.to_str().expect("utf-8");
        let mut enrol = daemon_cmd(
            "agentd",
            &["--data-dir", agent_data, "enroll", "--name", "one"],
        );
        enrol.env("FLOTILLA_TOKEN", token);
        run_ok(enrol, "agentd enroll").await;
        let mut agent = Daemon::spawn(
            daemon_cmd(
                "agentd",
                &["--data-dir", agent_data, "run", "--exec", "any"],
            ),
            "agentd",
        );
        // The hub counts an agent online before it welcomes it.
        agent.wait_log("connected to hub").await;
        for dir in ["run", "home"] {
            std::fs::create_dir(tmp.path().join(dir)).expect("dir");
            std::fs::set_permissions(tmp.path().join(dir), std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
        }
        Self {
            tmp,
            hub,
            _agent: agent,
        }
    }

    /// `flotilla --login-dir ADMIN args…` with this fleet's runtime dir (where the mux socket
    /// goes) and a home of its own, so no real config or mux of the user's is in play.
    fn flotilla(&self, args: &[&str]) -> Command {
        let home = self.tmp.path().join("home");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        cmd.arg("--login-dir")
            .arg(self.tmp.path().join("hub").join("admin"))
            .args(args)
            .env("XDG_RUNTIME_DIR", self.tmp.path().join("run"))
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("NO_COLOR", "1")
            .env_remove("FLOTILLA_HUB")
            .env_remove("FLOTILLA_LOGIN_DIR")
            .env_remove("FLOTILLA_CONFIG")
            .env_remove("FLOTILLA_MUX_SOCKET")
            .env_remove("FLOTILLA_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs a one-shot command to its end, logging at debug so it says which way it went.
    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.flotilla(args);
        cmd.env("FLOTILLA_LOG", "flotilla=debug");
        tokio::time::timeout(DEADLINE, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("flotilla {args:?} still running after {DEADLINE:?}"))
            .expect("spawn flotilla")
    }

    /// `flotilla mux` in the foreground, once it listens.
    async fn mux(&self, args: &[&str]) -> Daemon {
        let mut all = vec!["mux"];
        all.extend_from_slice(args);
        let mut mux = Daemon::spawn(self.flotilla(&all), "flotilla mux");
        mux.wait_log("listening on").await;
        mux
    }

    /// What `flotilla mux --check --json` says.
    async fn check(&self) -> (Option<i32>, serde_json::Value) {
        let out = self.run(&["mux", "--check", "--json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "mux --check printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out.status.code(), v)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Our own lines of stderr with every number replaced by `N` (job ids and durations differ between
/// two runs of the same command); log lines dropped.
fn normalised(stderr: &[u8]) -> String {
    let mut out = String::new();
    for line in text(stderr).lines().filter(|l| !l.contains("DEBUG")) {
        let mut digits = false;
        for c in line.chars() {
            if c.is_ascii_digit() {
                if !digits {
                    out.push('N');
                }
                digits = true;
            } else {
                out.push(c);
                digits = false;
            }
        }
        out.push('\n');
    }
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_through_the_mux_print_and_exit_as_when_they_dial() {
    let mut fleet = Fleet::start().await;
    let mut mux = fleet.mux(&[]).await;

    let (code, check) = fleet.check().await;
    assert_eq!(code, Some(0), "mux --check: {check}");
    assert_eq!(check["running"], true);
    assert_eq!(check["pid"], mux.pid(), "--check names the mux's pid");
    assert_eq!(check["name"], "admin");
    let socket = PathBuf::from(check["socket"].as_str().expect("socket path"));
    assert!(
        socket.starts_with(fleet.tmp.path().join("run").join("flotilla")),
        "socket {} is not in the runtime dir",
        socket.display()
    );
    assert_eq!(mode(&socket), 0o600, "socket mode");
    assert_eq!(
        mode(socket.parent().expect("dir")),
        0o700,
        "socket dir mode"
    );

    let cases: [&[&str]; 5] = [
        &["exec", "one", "--", "true"],
        &[
            "exec",
            "one",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        // Several QUIC chunks and Unix writes of output.
        &["exec", "one", "--", "seq", "1", "50000"],
        &["exec", "nosuch", "--", "true"],
        &["exec", "one", "--json", "--", "echo", "hi"],
    ];
    for args in cases {
        let via_mux = fleet.run(args).await;
        let mut direct_args = vec!["--no-mux"];
        direct_args.extend_from_slice(args);
        let direct = fleet.run(&direct_args).await;
        assert!(
            text(&via_mux.stderr).contains(USED_MUX),
            "{args:?} did not use the mux: {}",
            text(&via_mux.stderr)
        );
        assert!(
            !text(&direct.stderr).contains(USED_MUX),
            "--no-mux {args:?} used the mux"
        );
        assert_eq!(
            via_mux.status.code(),
            direct.status.code(),
            "exit status of {args:?}"
        );
        if args.contains(&"--json") {
            // Job ids and times differ; the events do not.
            let events = |o: &Output| -> Vec<String> {
                text(&o.stdout)
                    .lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).expect("NDJSON");
                        format!("{} {}", v["event"], v["line"])
                    })
                    .collect()
            };
            assert_eq!(events(&via_mux), events(&direct), "{args:?}");
        } else {
            assert_eq!(text(&via_mux.stdout), text(&direct.stdout), "{args:?}");
        }
        assert_eq!(
            normalised(&via_mux.stderr),
            normalised(&direct.stderr),
            "stderr of {args:?}"
        );
    }
    let failing = fleet
        .run(&["exec", "one", "--", "sh", "-c", "exit 3"])
        .await;
    assert_eq!(failing.status.code(), Some(1), "a failed command fails");
    let refused = fleet.run(&["exec", "nosuch", "--", "true"]).await;
    assert_eq!(
        refused.status.code(),
        Some(2),
        "an unknown agent is a usage error"
    );

    let agents = fleet.run(&["agents", "--json"]).await;
    assert!(agents.status.success(), "{}", text(&agents.stderr));
    assert!(text(&agents.stderr).contains(USED_MUX));
    let list: serde_json::Value = serde_json::from_slice(&agents.stdout).expect("agents JSON");
    let names: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["one"]);

    let jobs = fleet.run(&["jobs", "--json"]).await;
    assert!(jobs.status.success(), "{}", text(&jobs.stderr));
    assert!(text(&jobs.stderr).contains(USED_MUX));
    let jobs: serde_json::Value = serde_json::from_slice(&jobs.stdout).expect("jobs JSON");
    // Four jobs each way (the unknown agent made none) and the failing one.
    assert_eq!(jobs.as_array().map(Vec::len), Some(9), "{jobs}");

    // A reader that went away (`| head`) ends the command with the shell's status for it, not a
    // death by SIGPIPE nor a panic; and with standard output closed (Rust's start points it at
    // /dev/null), the output goes nowhere instead of into the next descriptor opened, which here
    // is the connection to the mux.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut to_closed_pipe = fleet.flotilla(&["exec", "one", "--", "seq", "1", "50000"]);
    to_closed_pipe.stdout(writer);
    let status = tokio::time::timeout(DEADLINE, to_closed_pipe.status())
        .await
        .expect("exec into a closed pipe ended")
        .expect("spawn flotilla");
    assert_eq!(
        status.code(),
        Some(141),
        "exec into a closed pipe: {status}"
    );
    for command in [&["jobs"][..], &["agents"], &["audit", "--json"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut to_closed_pipe = fleet.flotilla(command);
        // `output()` would capture stdout in a pipe of its own.
        let child = to_closed_pipe
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn flotilla");
        let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .expect("command into a closed pipe ended")
            .expect("wait for flotilla");
        assert_eq!(
            out.status.code(),
            Some(141),
            "{command:?} into a closed pipe: {} {}",
            out.status,
            text(&out.stderr)
        );
        assert!(
            !text(&out.stderr).contains("flotilla:") && !text(&out.stderr).contains("panicked"),
            "{command:?} into a closed pipe is quiet: {}",
            text(&out.stderr)
        );
    }
    let mut stdout_closed = fleet.flotilla(&["exec", "one", "--", "seq", "1", "50000"]);
    // SAFETY: `close` is async-signal-safe; the child only closes its own descriptor 1.
    unsafe {
        stdout_closed.pre_exec(|| {
            libc::close(1);
            Ok(())
        });
    }
    let closed = tokio::time::timeout(DEADLINE, stdout_closed.stderr(Stdio::piped()).output())
        .await
        .expect("exec with stdout closed ended")
        .expect("spawn flotilla");
    assert!(
        closed.status.success(),
        "exec with stdout closed: {} {}",
        closed.status,
        text(&closed.stderr)
    );
    assert!(
        text(&closed.stderr).contains("1 succeeded"),
        "{}",
        text(&closed.stderr)
    );

    // A client killed mid-job: the mux resets the hub's stream and the hub cancels the job, as it
    // does when a direct client's connection closes.
    let mut sleeper = fleet
        .flotilla(&["exec", "one", "--json", "--", "sleep", "600"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn exec");
    let mut lines = BufReader::new(sleeper.stdout.take().expect("stdout")).lines();
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.contains("\"started\"") {
                return;
            }
        }
        panic!("exec ended before the command started");
    })
    .await
    .expect("the command started in time");
    sleeper.start_kill().expect("kill -9 the client");
    fleet
        .hub
        .wait_log("job cancelled reason=\"disconnect\"")
        .await;

    mux.signal(libc::SIGTERM);
    let status = mux.wait_exit().await;
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    assert!(!socket.exists(), "the socket is removed at exit");
    let (code, check) = fleet.check().await;
    assert_eq!(code, Some(1), "no mux after SIGTERM: {check}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_socket_falls_back_to_dialling_and_a_second_mux_is_refused() {
    let fleet = Fleet::start().await;
    let (code, check) = fleet.check().await;
    assert_eq!(code, Some(1), "no mux yet: {check}");
    assert_eq!(check["running"], false);
    let socket = PathBuf::from(check["socket"].as_str().expect("socket path"));
    // What a killed mux leaves behind: a socket file nobody listens on.
    std::fs::create_dir_all(socket.parent().expect("dir")).expect("socket dir");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));

    let out = fleet.run(&["exec", "one", "--", "echo", "hi"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one | hi\n");
    let err = text(&out.stderr);
    assert!(!err.contains(USED_MUX), "a stale socket was used: {err}");
    assert!(err.contains("stale socket"), "the fallback says why: {err}");

    // A mux replaces the stale socket; a second one is refused and leaves the first alone.
    let mut mux = fleet.mux(&[]).await;
    let second = fleet.run(&["mux"]).await;
    assert_eq!(second.status.code(), Some(1));
    let err = text(&second.stderr);
    assert!(
        err.contains("a mux already runs on") && err.contains(&mux.pid().to_string()),
        "{err}"
    );
    let out = fleet.run(&["exec", "one", "--", "echo", "hi"]).await;
    assert!(
        text(&out.stderr).contains(USED_MUX),
        "the first mux still serves"
    );

    let stop = fleet.run(&["mux", "--stop"]).await;
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop.stderr));
    assert!(mux.wait_exit().await.success());
    assert!(!socket.exists(), "the socket is removed at exit");
    let stop = fleet.run(&["mux", "--stop"]).await;
    assert_eq!(stop.status.code(), Some(1), "nothing left to stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mux_ends_with_its_idle_time_and_with_the_hub() {
    let mut fleet = Fleet::start().await;
    let mut idle = fleet.mux(&["--persist", "1s"]).await;
    let status = idle.wait_exit().await;
    assert!(status.success(), "an idle exit is clean: {status}");
    assert!(
        idle.log_text().contains("no clients"),
        "{}",
        idle.log_text()
    );
    let (code, _) = fleet.check().await;
    assert_eq!(code, Some(1), "no mux after its idle time");

    let mut mux = fleet.mux(&[]).await;
    let (_, check) = fleet.check().await;
    let socket = PathBuf::from(check["socket"].as_str().expect("socket path"));
    fleet.hub.signal(libc::SIGTERM);
    assert!(fleet.hub.wait_exit().await.success(), "hub stops cleanly");
    let status = mux.wait_exit().await;
    assert_eq!(status.code(), Some(1), "losing the hub is an error");
    assert!(
        mux.log_text().contains("lost the hub") && mux.log_text().contains("shutting down"),
        "the mux says why: {}",
        mux.log_text()
    );
    assert!(!socket.exists(), "the socket is removed at exit");
}
