//! `kill -9` of each party of a copy, a command and an enrolment, at a moment chosen from outside
//! (a progress line, a marker the command prints, a token use committed), with the outcome each
//! must have: resumed, or failed clearly and recorded, with nothing partial under a final name.
//! Every party is a real process (`hubd run`, `agentd run`, `agentd enroll`, `flotilla`), since
//! only a process can be killed without a word; the matrix and its outcomes are in
//! docs/faults.md.
//!
//! The hubs here run with `idle_timeout_s = 10`, so a peer killed without a word is noticed in
//! 10 s instead of 15 (clients keep alive every 5 s, so healthy ones stay).

use crate::harness::binaries::{Daemon, HubProc, agentd_bin, hubd_bin, run_cmd, run_json};
use crate::harness::exec::process_gone;
use crate::harness::files::{partial_files, random_bytes};
use crate::harness::flotilla_bin;
use crate::harness::proxy::{FaultProxy, Faults};
use crate::harness::{Client, DEADLINE, WORK_DEADLINE, mode_of, within};
use flotilla_certs::JoinToken;
use flotilla_wire::IdentityId;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::watch;

const MIB: usize = 1024 * 1024;
/// The hubs' idle timeout: a killed peer is noticed this long after its last packet.
const IDLE_TIMEOUT_S: u32 = 10;
/// Bandwidth between the agents and the hub until the kill, so that a copy is still running when
/// its victim dies: about 2 MB/s of copy (each byte crosses the proxy twice), lifted after the
/// kill so the resumed copy is quick.
const COPY_RATE_BPS: u64 = 4_000_000;
/// Size of the copies that are resumed: 8 s at [`COPY_RATE_BPS`].
const COPY_LEN: usize = 16 * MIB;
/// Written at the destination before the kill.
const KILL_AT: u64 = MIB as u64;
/// How long `flotilla cp` keeps retrying in the cells where the copy resumes.
const RETRY_FOR_S: &str = "120";

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A process whose standard output and error lines are collected as they come.
struct Proc {
    child: Child,
    out: watch::Receiver<Vec<String>>,
    err: watch::Receiver<Vec<String>>,
    what: String,
}

fn collect(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> watch::Receiver<Vec<String>> {
    let (tx, rx) = watch::channel(Vec::new());
    // Ends when the child closes the stream; reading keeps the pipe from filling.
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tx.send_modify(|v| v.push(line));
        }
    });
    rx
}

impl Proc {
    fn spawn(bin: &Path, args: &[&str]) -> Self {
        let what = format!("{} {}", bin.display(), args.join(" "));
        let mut cmd = crate::harness::binaries::command(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let out = collect(child.stdout.take().expect("piped stdout"));
        let err = collect(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            out,
            err,
            what,
        }
    }

    fn stdout(&self) -> String {
        self.out.borrow().join("\n")
    }

    fn stderr(&self) -> String {
        self.err.borrow().join("\n")
    }

    /// Waits for a standard output line that `pick` accepts.
    async fn line<T>(&mut self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let mut found = None;
        let r = tokio::time::timeout(
            WORK_DEADLINE,
            self.out.wait_for(|lines| {
                found = lines.iter().find_map(|l| pick(l));
                found.is_some()
            }),
        )
        .await
        .map(|r| r.map(drop));
        match (r, found) {
            (Ok(Ok(())), Some(t)) => t,
            _ => panic!(
                "{} printed no {what}; stdout:\n{}\nstderr:\n{}",
                self.what,
                self.stdout(),
                self.stderr()
            ),
        }
    }

    /// Waits for the process to end; its output is complete once both streams closed.
    async fn exit(&mut self, deadline: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(s) => s.expect("wait"),
            Err(_) => panic!(
                "{} still running after {deadline:?}; stdout:\n{}\nstderr:\n{}",
                self.what,
                self.stdout(),
                self.stderr()
            ),
        };
        for rx in [&mut self.out, &mut self.err] {
            let _ = within(DEADLINE, "output closed", rx.wait_for(|_| false)).await;
        }
        status
    }

    async fn kill9(&mut self) {
        self.child.start_kill().expect("kill -9");
        self.exit(DEADLINE).await;
    }
}

/// A real hub process in a temp dir, restartable on its port.
struct HubBox {
    dir: TempDir,
    data: PathBuf,
    hub: Option<HubProc>,
    addr: SocketAddr,
}

/// An enrolled agent's data directory.
struct AgentDir {
    name: String,
    dir: PathBuf,
    id: IdentityId,
}

impl AgentDir {
    fn shared(&self) -> PathBuf {
        self.dir.join("shared")
    }

    /// `agentd run`, running any command, with a half-second kill grace.
    fn run(&self) -> Daemon {
        std::fs::write(
            self.dir.join("agent.toml"),
            "exec = \"any\"\nkill_grace_ms = 500\n",
        )
        .expect("agent.toml");
        Daemon::spawn(
            &agentd_bin(),
            &[
                "--data-dir",
                path_str(&self.dir),
                "run",
                "--metrics-interval-ms",
                "1000",
            ],
        )
    }
}

impl HubBox {
    /// `hubd init`, the idle timeout set to [`IDLE_TIMEOUT_S`], `hubd run`.
    async fn start() -> Self {
        flotilla_certs::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("hub");
        run_json(
            &hubd_bin(),
            &[
                "--data-dir",
                path_str(&data),
                "init",
                "--listen",
                "127.0.0.1:0",
                "--json",
            ],
        )
        .await;
        let config = data.join("hub.toml");
        let text = std::fs::read_to_string(&config).expect("hub.toml");
        let edited = text.replace(
            "idle_timeout_s = 15",
            &format!("idle_timeout_s = {IDLE_TIMEOUT_S}"),
        );
        assert_ne!(text, edited, "hub.toml names idle_timeout_s = 15");
        std::fs::write(&config, edited).expect("hub.toml");
        let hub = HubProc::run(&data, None).await;
        let addr = hub.addr;
        Self {
            dir,
            data,
            hub: Some(hub),
            addr,
        }
    }

    async fn kill9(&mut self) {
        self.hub.as_mut().expect("hub running").daemon.kill9().await;
        self.hub = None;
    }

    async fn restart(&mut self) {
        assert!(self.hub.is_none(), "hub still running");
        self.hub = Some(HubProc::run(&self.data, Some(self.addr)).await);
    }

    /// `hubd ARGS --json` against this hub.
    async fn hubd_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--data-dir", path_str(&self.data)];
        all.extend_from_slice(args);
        all.push("--json");
        run_json(&hubd_bin(), &all).await
    }

    /// A join token: (text, id).
    async fn token(&self, uses: u32) -> (String, String) {
        let v = self
            .hubd_json(&[
                "token",
                "create",
                "--role",
                "agent",
                "--uses",
                &uses.to_string(),
            ])
            .await;
        (
            v["token"].as_str().expect("token").to_owned(),
            v["info"]["id"].as_str().expect("token id").to_owned(),
        )
    }

    async fn uses_left(&self, token_id: &str) -> u64 {
        let list = self.hubd_json(&["token", "list"]).await;
        list.as_array()
            .expect("token list")
            .iter()
            .find(|t| t["id"] == token_id)
            .unwrap_or_else(|| panic!("token {token_id} listed: {list}"))["uses_left"]
            .as_u64()
            .expect("uses_left")
    }

    /// Agents named `name` that `hubd agents` lists.
    async fn listed(&self, name: &str) -> Vec<Value> {
        let list = self.hubd_json(&["agents"]).await;
        list.as_array()
            .expect("agents list")
            .iter()
            .filter(|a| a["name"] == name)
            .cloned()
            .collect()
    }

    /// `agentd enroll` with a fresh token into `dir/NAME`; the agent's saved hubs are `hubs`
    /// (the hub itself when `None`).
    async fn enrol(&self, name: &str, hubs: Option<String>) -> AgentDir {
        let (token, _) = self.token(1).await;
        let dir = self.dir.path().join(name);
        let json = run_json(
            &agentd_bin(),
            &[
                "--data-dir",
                path_str(&dir),
                "enroll",
                "--token",
                &token,
                "--name",
                name,
                "--json",
            ],
        )
        .await;
        let id = IdentityId::parse(json["id"].as_str().expect("id")).expect("id shape");
        if let Some(hubs) = hubs {
            flotilla_certs::Identity::save_hubs(&dir, &[hubs]).expect("point the agent elsewhere");
        }
        std::fs::create_dir_all(dir.join("shared")).expect("shared folder");
        AgentDir {
            name: name.to_owned(),
            dir,
            id,
        }
    }

    /// `flotilla ARGS` as the hub's admin, running.
    fn flotilla(&self, args: &[&str]) -> Proc {
        let addr = self.addr.to_string();
        let admin = self.data.join("admin");
        let mut all = vec!["--login-dir", path_str(&admin), "--hub", addr.as_str()];
        all.extend_from_slice(args);
        Proc::spawn(&flotilla_bin(), &all)
    }

    /// `flotilla ARGS --json` as the hub's admin, to its end.
    async fn flotilla_json(&self, args: &[&str]) -> Value {
        let addr = self.addr.to_string();
        let admin = self.data.join("admin");
        let mut all = vec!["--login-dir", path_str(&admin), "--hub", addr.as_str()];
        all.extend_from_slice(args);
        all.push("--json");
        run_json(&flotilla_bin(), &all).await
    }

    /// Audit entries about `target`, oldest first.
    async fn audit_of(&self, target: &str) -> Vec<(String, String)> {
        let entries = self.flotilla_json(&["audit", "--limit", "200"]).await;
        let found: Vec<(String, String)> = entries
            .as_array()
            .expect("audit list")
            .iter()
            .filter(|e| e["target"] == target)
            .map(|e| {
                (
                    e["action"].as_str().expect("action").to_owned(),
                    e["detail"].as_str().expect("detail").to_owned(),
                )
            })
            .collect();
        found
    }

    /// Waits until the audit log holds `action` for `target` (the hub writes it when it notices).
    async fn audited(&self, target: &str, action: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        until_written(
            &self.data,
            &format!("{action} of {target} in the audit log"),
            async || {
                found = self.audit_of(target).await;
                found.iter().any(|(a, _)| a == action)
            },
        )
        .await;
        found
    }

    /// Waits until every agent in `ids` is online.
    async fn online(&self, ids: &[IdentityId]) {
        let admin = Client::from_dir(&self.data.join("admin"))
            .await
            .expect("admin hello");
        let mut sub = admin.subscribe().await;
        sub.all_online(ids, WORK_DEADLINE).await;
    }
}

/// Waits until `ok` holds, asking again each time the hub writes to a file in its data directory
/// (its database and write-ahead log: every record it makes), for at most [`WORK_DEADLINE`].
/// The watch is set up before the first look, so a write between the two is not missed.
async fn until_written(data: &Path, what: &str, mut ok: impl AsyncFnMut() -> bool) {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        let _ = tx.try_send(());
    })
    .expect("file watcher");
    watcher
        .watch(data, notify::RecursiveMode::NonRecursive)
        .expect("watch the hub's data directory");
    within(WORK_DEADLINE, what, async {
        while !ok().await {
            rx.recv().await.expect("watcher alive");
        }
    })
    .await
}

fn json_line(line: &str) -> Option<Value> {
    serde_json::from_str(line).ok()
}

/// `cp --json` events named `event`.
fn events(p: &Proc, event: &str) -> Vec<Value> {
    p.out
        .borrow()
        .iter()
        .filter_map(|l| json_line(l))
        .filter(|v| v["event"] == event)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Copies

/// A hub, agents `src` (holding `big.bin` of `len` bytes) and `dst` reaching it through a proxy
/// limited to `rate`, and `flotilla cp --json src:big.bin dst:big.bin` running until `KILL_AT`
/// bytes are written at the destination.
struct CopyCase {
    hub: HubBox,
    proxy: FaultProxy,
    src: AgentDir,
    dst: AgentDir,
    agents: [Daemon; 2],
    data: Vec<u8>,
    cp: Proc,
    transfer: String,
}

impl CopyCase {
    async fn start(len: usize, rate: u64, retry_for: &str) -> Self {
        let hub = HubBox::start().await;
        let proxy = FaultProxy::start(hub.addr).await;
        let src = hub.enrol("src", Some(proxy.hub())).await;
        let dst = hub.enrol("dst", Some(proxy.hub())).await;
        let data = random_bytes(len, 11);
        std::fs::write(src.shared().join("big.bin"), &data).expect("source file");
        let agents = [src.run(), dst.run()];
        hub.online(&[src.id.clone(), dst.id.clone()]).await;
        // The hub holds both trees once the agents' snapshots are in; `ls` says so (until then it
        // answers "no listing of src yet").
        for (name, holds) in [("src", "big.bin"), ("dst", "")] {
            within(WORK_DEADLINE, "the shared folders listed", async {
                loop {
                    let out = run_cmd(
                        &flotilla_bin(),
                        &[
                            "--login-dir",
                            path_str(&hub.data.join("admin")),
                            "--hub",
                            &hub.addr.to_string(),
                            "ls",
                            name,
                            "--json",
                        ],
                    )
                    .await;
                    if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(holds)
                    {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            })
            .await;
        }
        proxy.set(Faults::rate(rate));
        let mut cp = hub.flotilla(&[
            "cp",
            "src:big.bin",
            "dst:big.bin",
            "--json",
            "--retry-for",
            retry_for,
        ]);
        let transfer = cp
            .line("progress past the kill point", |l| {
                let v = json_line(l)?;
                (v["event"] == "progress" && v["written"].as_u64()? >= KILL_AT)
                    .then(|| v["transfer"].as_str().map(str::to_owned))?
            })
            .await;
        Self {
            hub,
            proxy,
            src,
            dst,
            agents,
            data,
            cp,
            transfer,
        }
    }

    fn final_file(&self) -> PathBuf {
        self.dst.shared().join("big.bin")
    }

    /// Nothing under the final name; the destination keeps (at most) its hidden partial file.
    fn assert_nothing_final(&self, when: &str) {
        assert!(
            !self.final_file().exists(),
            "{when}: a file under the final name at the destination"
        );
        let partial = partial_files(&self.dst.shared());
        assert!(
            partial.len() <= 1
                && partial.iter().all(|p| {
                    let name = p.file_name().expect("name").to_string_lossy().into_owned();
                    name.starts_with(".big.bin.") && mode_of(p) == 0o600
                }),
            "{when}: only the hidden 0600 partial file: {partial:?}"
        );
    }

    /// `cp` ends 0, resumed in a later attempt from bytes already there, and the file is whole.
    async fn assert_resumed(&mut self) {
        let status = self.cp.exit(Duration::from_secs(120)).await;
        assert!(
            status.success(),
            "cp failed ({status}); stdout:\n{}\nstderr:\n{}",
            self.cp.stdout(),
            self.cp.stderr()
        );
        let later: Vec<Value> = events(&self.cp, "started")
            .into_iter()
            .filter(|s| s["attempt"].as_u64() > Some(1))
            .collect();
        assert!(
            later.iter().any(|s| s["offset"].as_u64() > Some(0)),
            "a later attempt resumed from verified bytes: {later:?}\n{}",
            self.cp.stdout()
        );
        assert!(
            std::fs::read(self.final_file()).expect("copied file") == self.data,
            "the copy differs from the source"
        );
        assert!(partial_files(&self.dst.shared()).is_empty());
        let audit = self.hub.audit_of(&self.transfer).await;
        assert_eq!(
            audit.last().map(|(a, _)| a.as_str()),
            Some("transfer.done"),
            "{audit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_hub_killed_resumes_byte_identical_after_restart() {
    let mut case = CopyCase::start(COPY_LEN, COPY_RATE_BPS, RETRY_FOR_S).await;
    case.hub.kill9().await;
    case.proxy.set(Faults::default());
    case.assert_nothing_final("hub killed");
    assert_eq!(partial_files(&case.dst.shared()).len(), 1);
    case.hub.restart().await;
    case.assert_resumed().await;
    let audit = case.hub.audit_of(&case.transfer).await;
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        &actions[..2],
        ["transfer.start", "transfer.interrupt"],
        "the restarted hub records the attempt the killed one left running: {audit:?}"
    );
}

/// The source agent dies; the copy stalls until the hub learns it (the agent's new connection
/// replaces the dead one at once), then resumes from the destination's partial file.
#[tokio::test(flavor = "multi_thread")]
async fn copy_source_agent_killed_resumes_when_it_comes_back() {
    let mut case = CopyCase::start(COPY_LEN, COPY_RATE_BPS, RETRY_FOR_S).await;
    case.agents[0].kill9().await;
    case.proxy.set(Faults::default());
    case.assert_nothing_final("source killed");
    case.agents[0] = case.src.run();
    case.assert_resumed().await;
    let audit = case.hub.audit_of(&case.transfer).await;
    assert!(
        audit.iter().any(|(a, _)| a == "transfer.interrupt"),
        "{audit:?}"
    );
}

/// The source agent dies for good: `cp` gives up at the end of `--retry-for` naming why, the hub
/// records the interruption, and the destination has nothing under the final name.
#[tokio::test(flavor = "multi_thread")]
async fn copy_source_agent_killed_for_good_fails_clearly() {
    let mut case = CopyCase::start(COPY_LEN, COPY_RATE_BPS, "5").await;
    case.agents[0].kill9().await;
    let status = case.cp.exit(WORK_DEADLINE * 2).await;
    assert_eq!(status.code(), Some(1), "stderr:\n{}", case.cp.stderr());
    let err = case.cp.stderr();
    let why = err
        .split_once("gave up after 5 s of retries: ")
        .map(|(_, why)| why)
        .unwrap_or_else(|| panic!("cp says it gave up: {err}"));
    assert!(
        why.contains("source") || why.contains("src"),
        "and names the source as the reason: {err}"
    );
    case.assert_nothing_final("source gone");
    case.hub.audited(&case.transfer, "transfer.interrupt").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_destination_agent_killed_resumes_when_it_comes_back() {
    let mut case = CopyCase::start(COPY_LEN, COPY_RATE_BPS, RETRY_FOR_S).await;
    case.agents[1].kill9().await;
    case.proxy.set(Faults::default());
    case.assert_nothing_final("destination killed");
    assert_eq!(
        partial_files(&case.dst.shared()).len(),
        1,
        "the partial file survives kill -9"
    );
    case.agents[1] = case.dst.run();
    case.assert_resumed().await;
}

/// The console dies: the hub notices at its idle timeout and stops the relay, recording it as
/// interrupted; the destination keeps only its hidden partial file, and the same `flotilla cp`
/// run again resumes from it.
#[tokio::test(flavor = "multi_thread")]
async fn copy_client_killed_stops_the_relay_and_a_new_cp_resumes() {
    // 24 MiB at about 1 MB/s: the relay still runs when the hub notices, 10 s after the kill.
    let mut case = CopyCase::start(24 * MIB, COPY_RATE_BPS / 2, RETRY_FOR_S).await;
    case.cp.kill9().await;
    let audit = case.hub.audited(&case.transfer, "transfer.interrupt").await;
    assert!(
        !audit.iter().any(|(a, _)| a == "transfer.done"),
        "{audit:?}"
    );
    case.assert_nothing_final("console killed");
    assert_eq!(partial_files(&case.dst.shared()).len(), 1);
    case.proxy.set(Faults::default());
    case.cp = case.hub.flotilla(&[
        "cp",
        "src:big.bin",
        "dst:big.bin",
        "--json",
        "--retry-for",
        RETRY_FOR_S,
    ]);
    let status = case.cp.exit(Duration::from_secs(120)).await;
    assert!(status.success(), "stderr:\n{}", case.cp.stderr());
    let started = events(&case.cp, "started");
    assert!(
        started[0]["offset"].as_u64() > Some(0),
        "the new cp resumed from the partial file: {started:?}"
    );
    assert!(std::fs::read(case.final_file()).expect("copied") == case.data);
    assert!(partial_files(&case.dst.shared()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Commands

/// A hub, agent `box`, and `flotilla exec box` running a shell that starts a `sleep` in its
/// process group, writes the sleep's pid and prints `ready`.
struct ExecCase {
    hub: HubBox,
    agent: AgentDir,
    agentd: Daemon,
    exec: Proc,
    sleeper: i32,
}

impl ExecCase {
    async fn start() -> Self {
        let hub = HubBox::start().await;
        let agent = hub.enrol("box", None).await;
        let agentd = agent.run();
        hub.online(std::slice::from_ref(&agent.id)).await;
        let pid_file = hub.dir.path().join("sleeper.pid");
        let script = format!(
            "sleep 600 & echo $! > {}; echo ready; wait",
            pid_file.display()
        );
        let mut exec = hub.flotilla(&["exec", "box", "--", "sh", "-c", &script]);
        exec.line("the ready marker", |l| l.ends_with("| ready").then_some(()))
            .await;
        let sleeper: i32 = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        assert!(!process_gone_now(sleeper), "the sleeper runs");
        Self {
            hub,
            agent,
            agentd,
            exec,
            sleeper,
        }
    }

    /// The newest job once it has ended: (`flotilla jobs` entry, `flotilla job ID` answer).
    async fn job(&self) -> (Value, Value) {
        let mut job = Value::Null;
        until_written(&self.hub.data, "the job's end recorded", async || {
            let jobs = self.hub.flotilla_json(&["jobs"]).await;
            job = jobs.as_array().expect("jobs")[0].clone();
            job["ended_ms"].as_u64().is_some()
        })
        .await;
        let id = job["job"].as_u64().expect("job id").to_string();
        let detail = self.hub.flotilla_json(&["job", &id]).await;
        (job, detail)
    }
}

/// Whether `pid` has exited (or is a zombie) right now.
fn process_gone_now(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_hub_killed_job_interrupted_client_fails_and_no_orphan() {
    let mut case = ExecCase::start().await;
    case.hub.kill9().await;
    case.hub.restart().await;
    let status = case.exec.exit(WORK_DEADLINE).await;
    assert_eq!(status.code(), Some(1), "stderr:\n{}", case.exec.stderr());
    let err = case.exec.stderr();
    assert!(err.contains("hub restarted"), "a clear reason: {err}");
    assert!(
        process_gone(case.sleeper).await,
        "the agent killed the command's process group when its link dropped"
    );
    let (job, detail) = case.job().await;
    assert_eq!(job["interrupted"], true, "{job}");
    assert_eq!(detail["results"][0]["outcome"], "lost", "{detail}");
    assert_eq!(detail["results"][0]["name"], case.agent.name);
}

/// The agent dies; when it comes back its new connection replaces the dead one, the hub reports
/// the command lost at once, records it, and the console shows it.
#[tokio::test(flavor = "multi_thread")]
async fn exec_agent_killed_job_lost_recorded_and_shown() {
    let mut case = ExecCase::start().await;
    case.agentd.kill9().await;
    case.agentd = case.agent.run();
    let status = case.exec.exit(WORK_DEADLINE).await;
    assert_eq!(status.code(), Some(1), "stderr:\n{}", case.exec.stderr());
    let err = case.exec.stderr();
    assert!(
        err.lines()
            .any(|l| l.starts_with("box") && l.contains("lost")),
        "the console shows the agent lost: {err}"
    );
    let (job, detail) = case.job().await;
    assert!(job["ended_ms"].as_u64().is_some(), "{job}");
    assert_eq!(job["interrupted"], false, "{job}");
    assert_eq!(detail["results"][0]["outcome"], "lost", "{detail}");
    // A killed agentd cannot kill its commands; under systemd the rest of the unit's cgroup is
    // killed with it (docs/faults.md). Here the test kills the command's process group.
    // SAFETY: getpgid(2) and kill(2) on a process this test's command started; no memory involved.
    unsafe {
        let group = libc::getpgid(case.sleeper);
        if group > 1 {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

/// The console dies: the hub notices at its idle timeout, cancels the job as a disconnect, and
/// the agent kills the command's process group.
#[tokio::test(flavor = "multi_thread")]
async fn exec_client_killed_hub_cancels_and_agent_kills_the_group() {
    let mut case = ExecCase::start().await;
    case.exec.kill9().await;
    assert!(
        process_gone(case.sleeper).await,
        "the agent killed the command's process group after the hub cancelled"
    );
    let (job, detail) = case.job().await;
    assert_eq!(job["cancelled_by"], "disconnect", "{job}");
    assert_eq!(detail["results"][0]["outcome"], "cancelled", "{detail}");
    let id = job["job"].as_u64().expect("id");
    let audit = case.hub.audit_of(&format!("job:{id}")).await;
    assert!(
        audit
            .iter()
            .any(|(a, d)| a == "exec.cancel" && d.contains("disconnect")),
        "{audit:?}"
    );
    assert!(case.agentd.running());
}

// ---------------------------------------------------------------------------------------------
// Enrolment

/// `agentd enroll` into `dir` with `token`, running.
fn enroll_proc(dir: &Path, token: &str, name: &str) -> Proc {
    Proc::spawn(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(dir),
            "enroll",
            "--token",
            token,
            "--name",
            name,
            "--json",
        ],
    )
}

/// The token text with its hub list replaced by `hub`.
fn via(token: &str, hub: &str) -> String {
    let mut t = JoinToken::parse(token).expect("token parses");
    t.hubs = vec![hub.to_owned()];
    t.encode()
}

/// Files in an agent's data dir that hold key material, with their modes.
fn key_files(dir: &Path) -> Vec<(String, u32)> {
    crate::harness::files_in(dir)
        .into_iter()
        .filter(|n| n.ends_with(".key"))
        .map(|n| {
            let mode = mode_of(&dir.join(&n));
            (n, mode)
        })
        .collect()
}

/// Waits until the hub has committed one use of `token_id` (the enrolment's transaction).
async fn committed(hub: &HubBox, token_id: &str, left: u64) {
    until_written(&hub.data, "the enrolment committed", async || {
        hub.uses_left(token_id).await == left
    })
    .await
}

/// Enrols `name` through a proxy that lets the request reach the hub and drops the answer, and
/// waits until the hub has committed the enrolment: the agent never learns it was enrolled.
async fn enrol_unanswered(
    hub: &HubBox,
    name: &str,
    uses: u32,
) -> (FaultProxy, Proc, PathBuf, String, String) {
    let proxy = FaultProxy::start(hub.addr).await;
    let (token, token_id) = hub.token(uses).await;
    let dir = hub.dir.path().join(name);
    proxy.mute_hub_after_request();
    let proc = enroll_proc(&dir, &via(&token, &proxy.hub()), name);
    committed(hub, &token_id, u64::from(uses) - 1).await;
    assert!(proxy.hub_muted(), "the answer was held back");
    (proxy, proc, dir, token, token_id)
}

/// After an enrolment whose answer was lost: the retry with the same token gets the identity the
/// hub committed (no second use), the agent connects with it, and the hub lists it once.
async fn assert_retry_gets_the_same_identity(
    hub: &HubBox,
    dir: &Path,
    token: &str,
    token_id: &str,
    name: &str,
    uses_left: u64,
) {
    assert_eq!(
        key_files(dir),
        [("enrol.key".to_owned(), 0o600)],
        "the agent kept the key it asked with, private, and nothing else"
    );
    let pending = std::fs::read(dir.join("enrol.key")).expect("pending key");
    let committed_id = hub.listed(name).await;
    assert_eq!(committed_id.len(), 1, "{committed_id:?}");
    let out = run_cmd(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(dir),
            "enroll",
            "--token",
            token,
            "--name",
            name,
            "--json",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "the retry enrols: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("enroll JSON");
    assert_eq!(
        json["id"], committed_id[0]["id"],
        "the identity committed first"
    );
    assert_eq!(hub.uses_left(token_id).await, uses_left, "no second use");
    assert_eq!(
        key_files(dir),
        [("identity.key".to_owned(), 0o600)],
        "the pending key became the identity's"
    );
    assert!(
        std::fs::read(dir.join("identity.key")).expect("identity key") == pending,
        "the identity's key is the one the first attempt asked with"
    );
    let agent = AgentDir {
        name: name.to_owned(),
        dir: dir.to_owned(),
        id: IdentityId::parse(json["id"].as_str().expect("id")).expect("id shape"),
    };
    let _agentd = agent.run();
    hub.online(std::slice::from_ref(&agent.id)).await;
    assert_eq!(hub.listed(name).await.len(), 1);
}

/// The hub dies before the enrolment reaches it: `agentd enroll` fails naming the unreachable
/// hub, nothing is written or used, and the same token enrols once the hub is back.
#[tokio::test(flavor = "multi_thread")]
async fn enrol_hub_killed_before_commit_nothing_used_and_retry_works() {
    let mut hub = HubBox::start().await;
    let (token, token_id) = hub.token(1).await;
    hub.kill9().await;
    let dir = hub.dir.path().join("late");
    let mut proc = enroll_proc(&dir, &token, "late");
    let status = proc.exit(WORK_DEADLINE).await;
    assert_eq!(status.code(), Some(1), "{}", proc.stderr());
    assert!(
        proc.stderr().contains("hub unreachable"),
        "a clear reason: {}",
        proc.stderr()
    );
    assert!(
        key_files(&dir).is_empty(),
        "nothing was sent, so no key is kept: {:?}",
        key_files(&dir)
    );
    hub.restart().await;
    assert_eq!(hub.uses_left(&token_id).await, 1, "no use consumed");
    assert!(hub.listed("late").await.is_empty());
    let out = run_cmd(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(&dir),
            "enroll",
            "--token",
            &token,
            "--name",
            "late",
            "--json",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hub.uses_left(&token_id).await, 0);
}

/// The hub commits the enrolment and dies before its answer arrives: the agent's enroll fails
/// clearly once the restarted hub resets the connection, and its retry with the same (single-use)
/// token gets the identity the hub committed, instead of "name taken" with the token spent.
#[tokio::test(flavor = "multi_thread")]
async fn enrol_hub_killed_after_commit_retry_gets_the_committed_identity() {
    let mut hub = HubBox::start().await;
    let (proxy, mut proc, dir, token, token_id) = enrol_unanswered(&hub, "n1", 1).await;
    hub.kill9().await;
    hub.restart().await;
    proxy.unmute();
    let status = proc.exit(WORK_DEADLINE).await;
    assert_eq!(status.code(), Some(1), "{}", proc.stderr());
    // The restarted hub resets the connection at the client's next retransmission; on a loaded
    // machine the client's backed-off retransmissions may come after its 10 s wait for the answer.
    let err = proc.stderr();
    assert!(
        err.contains("hub restarted: it no longer knows this connection")
            || err.contains("hub accepted the connection but did not answer in time"),
        "a clear reason: {err}"
    );
    assert_retry_gets_the_same_identity(&hub, &dir, &token, &token_id, "n1", 0).await;
}

/// The agent dies while the hub commits its enrolment: its key stays private and the retry gets
/// the identity the hub committed.
#[tokio::test(flavor = "multi_thread")]
async fn enrol_agent_killed_after_commit_key_private_and_retry_works() {
    let hub = HubBox::start().await;
    let (_proxy, mut proc, dir, token, token_id) = enrol_unanswered(&hub, "n2", 2).await;
    proc.kill9().await;
    assert_retry_gets_the_same_identity(&hub, &dir, &token, &token_id, "n2", 1).await;
    // Another agent still enrols with the use left.
    let other = hub.dir.path().join("n3");
    let out = run_cmd(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(&other),
            "enroll",
            "--token",
            &token,
            "--name",
            "n3",
            "--json",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hub.uses_left(&token_id).await, 0);
}
