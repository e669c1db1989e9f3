//! `TestFleet`: a real hub (its own runtime, a real database in a temp dir, QUIC on 127.0.0.1:0) and
//! real agents enrolled through the same code paths `hubd` and `agentd` use, plus raw clients for
//! protocol abuse and helpers to drive the real binaries.
//!
//! Nothing here sleeps: every wait is on an event (a fleet event, a link state, a log line, a child's
//! exit) under a generous deadline, and every loop ends with its deadline.

// Each test binary uses a different part of this harness.
#![allow(dead_code)]

use agentd::{AgentConfig, AgentPaths, LinkState, RunningAgent};
use flotilla_certs::dial::{self, DialError};
use flotilla_certs::enrol::{EnrolError, Enrolment};
use flotilla_certs::{IDENTITY_STEM, Identity};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{
    MAX_CONTROL_FRAME, MAX_EVENTS_FRAME, MAX_METRICS_FRAME, MAX_REQUEST_FRAME,
};
use flotilla_wire::msg::{
    AgentInfo, CreatedToken, FleetEvent, Hello, Labels, MetricsFrame, MetricsSample, OpRequest,
    OpResponse, StreamOpen, TokenInfo, TokenSpec, Welcome,
};
use flotilla_wire::{IdentityId, PROTOCOL_VERSION, Role};
use hubd::{HubConfig, HubCtx, HubPaths, RunningHub};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Deadline for anything that should happen promptly (an agent online, a reply, a refusal).
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);
/// Deadline for what waits on the 15 s idle timeout (a killed peer, a hub restart under agents).
pub(crate) const IDLE_DEADLINE: Duration = Duration::from_secs(30);
/// Metrics interval of test agents: fast enough that "still reporting" is seen within a second.
pub(crate) const TEST_METRICS_MS: u32 = 1000;

/// Awaits `fut` or panics naming `what` once `deadline` has passed.
pub(crate) async fn within<T>(deadline: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(deadline, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {deadline:?} waiting for {what}"))
}

/// Hub and agent logs for a failing test: `TEST_LOG=debug cargo nextest run …` (off by default).
pub(crate) fn init_test_logging() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// What test clients say in hello.
pub(crate) fn test_hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        software_version: "test".into(),
        hostname: "test-host".into(),
        os: "test-os".into(),
    }
}

/// File names in `dir`, sorted (empty if the directory is missing).
pub(crate) fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| {
                e.expect("read dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    };
    names.sort();
    names
}

/// Unix mode bits of a path.
pub(crate) fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A subscription to a hub's in-process fleet event feed.
pub(crate) struct Events(broadcast::Receiver<FleetEvent>);

impl Events {
    /// Waits for the first event `pick` accepts.
    pub(crate) async fn until<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(FleetEvent) -> Option<T>,
    ) -> T {
        within(deadline, what, async {
            loop {
                match self.0.recv().await {
                    Ok(ev) => {
                        if let Some(t) = pick(ev) {
                            return t;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        panic!("hub stopped while waiting for {what}")
                    }
                }
            }
        })
        .await
    }

    /// Waits for `id` to come online.
    pub(crate) async fn online(&mut self, id: &IdentityId) -> AgentInfo {
        self.until(&format!("{id} online"), DEADLINE, |ev| match ev {
            FleetEvent::Online(info) if &info.id == id => Some(info),
            _ => None,
        })
        .await
    }

    /// Waits for `id` to go offline; returns the reason.
    pub(crate) async fn offline(&mut self, id: &IdentityId, deadline: Duration) -> String {
        self.until(&format!("{id} offline"), deadline, |ev| match ev {
            FleetEvent::Offline {
                id: got, reason, ..
            } if &got == id => Some(reason),
            _ => None,
        })
        .await
    }

    /// Waits for a metrics sample from `id`.
    pub(crate) async fn metrics(&mut self, id: &IdentityId) -> MetricsSample {
        self.until(
            &format!("a metrics sample from {id}"),
            DEADLINE,
            |ev| match ev {
                FleetEvent::Metrics { id: got, sample } if &got == id => Some(sample),
                _ => None,
            },
        )
        .await
    }
}

/// A hub serving from a temp dir on its own single-threaded runtime, as a separate process would: a
/// hub task that never yields stalls the hub, and the tests notice.
pub(crate) struct TestFleet {
    /// The hub's data directory.
    pub(crate) paths: HubPaths,
    /// The configuration it runs with (listen fixed to the first bound port after the first start).
    pub(crate) config: HubConfig,
    hub: Option<RunningHub>,
    cancel: CancellationToken,
    rt: Option<tokio::runtime::Runtime>,
    _dir: TempDir,
}

impl Drop for TestFleet {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl TestFleet {
    /// `hubd init` in a fresh temp dir, then a running hub on 127.0.0.1:0.
    pub(crate) async fn new() -> Self {
        flotilla_certs::install_crypto_provider();
        init_test_logging();
        let dir = tempfile::tempdir().expect("temp dir for the hub");
        let paths = HubPaths {
            data_dir: dir.path().join("hub"),
        };
        let config = HubConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..HubConfig::default()
        };
        hubd::init(&paths, &config).await.expect("hubd init");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-hub")
            .enable_all()
            .build()
            .expect("hub runtime");
        let mut fleet = Self {
            paths,
            config,
            hub: None,
            cancel: CancellationToken::new(),
            rt: Some(rt),
            _dir: dir,
        };
        fleet.start().await;
        fleet
    }

    /// Starts the hub (again), on the port it had before if it ran already.
    pub(crate) async fn start(&mut self) {
        assert!(self.hub.is_none(), "hub already running");
        self.cancel = CancellationToken::new();
        let (paths, config, cancel) =
            (self.paths.clone(), self.config.clone(), self.cancel.clone());
        let rt = self.rt.as_ref().expect("hub runtime");
        let hub = within(
            DEADLINE,
            "hub start",
            rt.spawn(async move { hubd::start(paths, config, cancel).await }),
        )
        .await
        .expect("hub start task")
        .expect("hub start");
        // Restarts bind the same port, as a restarted hubd does, so agents find it again.
        self.config.listen = hub.local_addr;
        self.hub = Some(hub);
    }

    /// Stops the hub cleanly and waits until it has released its port and database.
    pub(crate) async fn stop(&mut self) {
        self.cancel.cancel();
        let hub = self.hub.take().expect("hub running");
        within(DEADLINE, "hub shutdown", hub.wait())
            .await
            .expect("hub stopped cleanly");
    }

    /// Clean stop then start on the same address.
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// The running hub's shared state.
    pub(crate) fn ctx(&self) -> &Arc<HubCtx> {
        &self.hub.as_ref().expect("hub running").ctx
    }

    /// The hub's bound UDP address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.hub.as_ref().expect("hub running").local_addr
    }

    /// `host:port` list tokens of this hub carry.
    pub(crate) fn hubs(&self) -> Vec<String> {
        self.ctx().advertised.clone()
    }

    /// A new subscription to fleet events.
    pub(crate) fn events(&self) -> Events {
        Events(self.ctx().registry.subscribe())
    }

    /// Runs an admin request through the running hub's admin socket (as `hubd token …` does).
    pub(crate) async fn admin(&self, req: OpRequest) -> OpResponse {
        within(
            DEADLINE,
            "admin request",
            hubd::offline_request(&self.paths, req),
        )
        .await
        .expect("admin request")
    }

    /// Creates a join token.
    pub(crate) async fn token(&self, role: Role, uses: u32, labels: Labels) -> CreatedToken {
        let spec = TokenSpec {
            role,
            ttl_s: 3600,
            uses,
            labels,
        };
        match self.admin(OpRequest::TokenCreate(spec)).await {
            OpResponse::TokenCreated(t) => t,
            other => panic!("token create answered {other:?}"),
        }
    }

    /// The listing of token `id`, if it exists.
    pub(crate) async fn token_info(&self, id: &str) -> Option<TokenInfo> {
        match self.admin(OpRequest::TokenList).await {
            OpResponse::Tokens(list) => list.into_iter().find(|t| t.id == id),
            other => panic!("token list answered {other:?}"),
        }
    }

    /// Every agent as `hubd agents` sees it.
    pub(crate) async fn agents(&self) -> Vec<AgentInfo> {
        match self.admin(OpRequest::ListAgents).await {
            OpResponse::Agents(list) => list,
            other => panic!("list agents answered {other:?}"),
        }
    }

    /// Enrols an agent named `name` with a fresh single-use token (not started).
    pub(crate) async fn enrol_agent(&self, name: &str, labels: Labels) -> TestAgent {
        let token = self.token(Role::Agent, 1, Vec::new()).await;
        TestAgent::enrol(&token.token, name, labels)
            .await
            .unwrap_or_else(|e| panic!("enrol {name}: {e}"))
    }

    /// Enrols and starts an agent and waits until the hub reports it online.
    pub(crate) async fn agent(&self, name: &str) -> TestAgent {
        let mut agent = self.enrol_agent(name, Vec::new()).await;
        let mut events = self.events();
        agent.start();
        events.online(&agent.id).await;
        agent
    }

    /// Waits until every agent in `ids` is online (already, or by a later event).
    pub(crate) async fn wait_online(&self, ids: &[&IdentityId], deadline: Duration) {
        let mut events = self.events();
        let registry = &self.ctx().registry;
        let mut missing: HashSet<IdentityId> = ids
            .iter()
            .filter(|id| !registry.is_online(id))
            .map(|id| (*id).clone())
            .collect();
        if missing.is_empty() {
            return;
        }
        events
            .until("agents online", deadline, |ev| {
                if let FleetEvent::Online(info) = ev {
                    missing.remove(&info.id);
                }
                missing.is_empty().then_some(())
            })
            .await;
    }

    /// Asserts that `agent` is online and its samples still reach the hub.
    pub(crate) async fn assert_serving(&self, agent: &TestAgent) {
        let mut events = self.events();
        assert!(
            self.ctx().registry.is_online(&agent.id),
            "{} should still be online",
            agent.name
        );
        events.metrics(&agent.id).await;
        assert!(
            self.ctx().registry.is_online(&agent.id),
            "{} should still be online",
            agent.name
        );
    }

    /// The admin identity `hubd init` made.
    pub(crate) fn admin_identity(&self) -> Identity {
        Identity::load(&self.paths.admin_dir(), IDENTITY_STEM).expect("admin identity")
    }
}

/// An agent enrolled through `agentd::enroll`, started through `agentd::start`.
pub(crate) struct TestAgent {
    /// Display name.
    pub(crate) name: String,
    /// Identity minted by the hub.
    pub(crate) id: IdentityId,
    /// What the hub answered at enrolment.
    pub(crate) enrolment: Enrolment,
    /// Data directory.
    pub(crate) paths: AgentPaths,
    cancel: CancellationToken,
    running: Option<RunningAgent>,
    _dir: TempDir,
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Enrols into `dir` (created 0700 as `agentd enroll` does).
pub(crate) async fn enrol_into(
    dir: &Path,
    token: &str,
    name: &str,
    labels: Labels,
) -> Result<Enrolment, EnrolError> {
    let paths = AgentPaths {
        data_dir: dir.to_owned(),
    };
    within(
        DEADLINE,
        "enrolment",
        agentd::enroll(&paths, token, Some(name.to_owned()), labels),
    )
    .await
}

impl TestAgent {
    /// Enrols a new agent in a temp dir.
    pub(crate) async fn enrol(token: &str, name: &str, labels: Labels) -> Result<Self, EnrolError> {
        let dir = tempfile::tempdir().expect("temp dir for an agent");
        let paths = AgentPaths {
            data_dir: dir.path().join("agent"),
        };
        let enrolment = enrol_into(&paths.data_dir, token, name, labels).await?;
        Ok(Self {
            name: name.to_owned(),
            id: enrolment.enrolled.identity.clone(),
            enrolment,
            paths,
            cancel: CancellationToken::new(),
            running: None,
            _dir: dir,
        })
    }

    /// Starts the link; returns its state feed.
    pub(crate) fn start(&mut self) -> watch::Receiver<LinkState> {
        assert!(self.running.is_none(), "agent already running");
        self.cancel = CancellationToken::new();
        let config = AgentConfig::default().with_metrics_interval(TEST_METRICS_MS);
        let running =
            agentd::start(&self.paths, config, self.cancel.clone()).expect("agentd start");
        let state = running.state.clone();
        self.running = Some(running);
        state
    }

    /// The link state feed of the running agent.
    pub(crate) fn state(&self) -> watch::Receiver<LinkState> {
        self.running.as_ref().expect("agent running").state.clone()
    }

    /// Stops the agent cleanly (it says goodbye) and waits for its task to end.
    pub(crate) async fn stop(&mut self) {
        self.cancel.cancel();
        let running = self.running.take().expect("agent running");
        within(DEADLINE, "agent shutdown", running.wait()).await;
    }

    /// The identity on disk.
    pub(crate) fn identity(&self) -> Identity {
        Identity::load(&self.paths.data_dir, IDENTITY_STEM).expect("agent identity")
    }
}

/// Opens a client endpoint and a QUIC connection to `hubs` with `config`, without any exchange.
pub(crate) async fn dial_raw(
    hubs: &[String],
    config: quinn::ClientConfig,
) -> Result<(quinn::Endpoint, quinn::Connection), DialError> {
    let endpoint = dial::client_endpoint(false)?;
    let conn = within(DEADLINE, "connect", dial::connect(&endpoint, hubs, config)).await?;
    Ok((endpoint, conn))
}

/// A client that said hello and got a welcome: an operator, or an agent driven by hand.
pub(crate) struct Client {
    /// The connection.
    pub(crate) conn: quinn::Connection,
    /// What the hub said.
    pub(crate) welcome: Welcome,
    /// Control stream, send half (kept open, as agentd does).
    pub(crate) control_send: quinn::SendStream,
    /// Control stream, receive half.
    pub(crate) control_recv: quinn::RecvStream,
    _endpoint: quinn::Endpoint,
}

impl Client {
    /// Says hello as `identity` to `hubs`.
    pub(crate) async fn hello(identity: &Identity, hubs: &[String]) -> Result<Self, DialError> {
        let endpoint = dial::client_endpoint(false)?;
        let config = dial::identity_config(identity).expect("client TLS configuration");
        let (conn, control_send, control_recv, welcome) = within(
            DEADLINE,
            "hello",
            dial::hello(&endpoint, hubs, config, test_hello()),
        )
        .await?;
        Ok(Self {
            conn,
            welcome,
            control_send,
            control_recv,
            _endpoint: endpoint,
        })
    }

    /// Says hello as the identity stored in `dir`, to the hubs listed there.
    pub(crate) async fn from_dir(dir: &Path) -> Result<Self, DialError> {
        let identity = Identity::load(dir, IDENTITY_STEM).expect("identity in dir");
        let hubs = Identity::load_hubs(dir).expect("hubs file in dir");
        Self::hello(&identity, &hubs).await
    }

    /// One operator request and its response.
    pub(crate) async fn request(&self, req: &OpRequest) -> OpResponse {
        within(DEADLINE, "operator response", async {
            let (mut send, mut recv) = self.conn.open_bi().await.expect("open request stream");
            write_frame(&mut send, &StreamOpen::Request, MAX_CONTROL_FRAME)
                .await
                .expect("write stream open");
            write_frame(&mut send, req, MAX_REQUEST_FRAME)
                .await
                .expect("write request");
            send.finish().expect("finish request");
            read_frame::<OpResponse, _>(&mut recv, MAX_REQUEST_FRAME)
                .await
                .expect("read response")
                .expect("a response before the stream ends")
        })
        .await
    }

    /// Subscribes to fleet events.
    pub(crate) async fn subscribe(&self) -> Subscription {
        let (mut send, recv) = self.conn.open_bi().await.expect("open events stream");
        write_frame(&mut send, &StreamOpen::Events, MAX_CONTROL_FRAME)
            .await
            .expect("write stream open");
        Subscription { recv, _send: send }
    }

    /// Opens a metrics stream and sends `sample` on it, as agentd does.
    pub(crate) async fn send_sample(&self, sample: MetricsSample) -> quinn::SendStream {
        let mut send = self.conn.open_uni().await.expect("open metrics stream");
        write_frame(&mut send, &StreamOpen::Metrics, MAX_CONTROL_FRAME)
            .await
            .expect("write stream open");
        write_frame(&mut send, &MetricsFrame::Sample(sample), MAX_METRICS_FRAME)
            .await
            .expect("write sample");
        send
    }
}

/// Fleet events pushed to an operator over QUIC.
pub(crate) struct Subscription {
    recv: quinn::RecvStream,
    _send: quinn::SendStream,
}

impl Subscription {
    /// Waits for the first event `pick` accepts.
    pub(crate) async fn until<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(FleetEvent) -> Option<T>,
    ) -> T {
        within(deadline, what, async {
            loop {
                let ev = read_frame::<FleetEvent, _>(&mut self.recv, MAX_EVENTS_FRAME)
                    .await
                    .unwrap_or_else(|e| panic!("events stream failed waiting for {what}: {e}"))
                    .unwrap_or_else(|| panic!("events stream ended waiting for {what}"));
                if let Some(t) = pick(ev) {
                    return t;
                }
            }
        })
        .await
    }

    /// Waits until every id in `want` is online (from the snapshot or later events).
    pub(crate) async fn all_online(&mut self, want: &[IdentityId], deadline: Duration) {
        let mut online = HashSet::new();
        self.until("agents online", deadline, |ev| {
            match ev {
                FleetEvent::Snapshot(list) => {
                    online.extend(
                        list.into_iter()
                            .filter(|a| a.status == flotilla_wire::msg::Status::Online)
                            .map(|a| a.id),
                    );
                }
                FleetEvent::Online(info) => {
                    online.insert(info.id);
                }
                FleetEvent::Offline { id, .. } => {
                    online.remove(&id);
                }
                _ => {}
            }
            want.iter().all(|id| online.contains(id)).then_some(())
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Real binaries.

/// The hubd binary cargo built for these tests.
pub(crate) fn hubd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hubd"))
}

/// The agentd binary beside it (built with the workspace).
pub(crate) fn agentd_bin() -> PathBuf {
    let path = hubd_bin().with_file_name("agentd");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace` or `cargo nextest run --workspace`)",
        path.display()
    );
    path
}

fn command(bin: &Path, args: &[&str]) -> Command {
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
    within(DEADLINE, &what, command(bin, args).output())
        .await
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"))
}

/// Runs a command that must succeed and print JSON.
pub(crate) async fn run_json(bin: &Path, args: &[&str]) -> serde_json::Value {
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
        let what = format!("{} {}", bin.display(), args.join(" "));
        let mut child = command(bin, args)
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
