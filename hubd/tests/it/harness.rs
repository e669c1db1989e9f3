//! The one fleet harness of the integration tests: a real hub (its own runtime, a real SQLite
//! database in a temp dir, QUIC with mutual TLS on 127.0.0.1:0) and real agents enrolled with real
//! join tokens through the same code paths `hubd` and `agentd` use.
//!
//! - [`Fleet::new`]: a hub alone; tests enrol and start agents themselves ([`Fleet::spawn_agent`],
//!   [`Fleet::enrol_agent`], [`TestAgent`]), as the enrolment, lifecycle and rejection tests do.
//! - [`Fleet::builder`]: a hub plus the agents given as [`AgentSpec`]s (labels, exec policy, work
//!   dir, shared-folder content), started and online before the test body runs; with
//!   [`FleetBuilder::wait_listings`], also until the hub holds every shared folder's tree.
//! - [`client`]: raw protocol clients (hello by hand, bare QUIC) for abuse and by-hand agents;
//!   [`binaries`]: the real `hubd`/`agentd` processes; [`exec`], [`files`], [`console`]: what the
//!   exec, shared-folder and console tests drive through the console's own library.
//!
//! Nothing here sleeps: every wait is on an event (a fleet event, a link state, a log line, a child's
//! exit) under a generous deadline, and every loop ends with its deadline.

// Each test module uses a different part of this harness.
#![allow(dead_code)]

pub(crate) mod binaries;
pub(crate) mod client;
pub(crate) mod console;
pub(crate) mod exec;
pub(crate) mod files;
pub(crate) mod podman;
pub(crate) mod proxy;
pub(crate) mod shell;
pub(crate) mod systemd;

pub(crate) use binaries::{Daemon, HubProc, agentd_bin, flotilla_bin, hubd_bin, run_cmd, run_json};
pub(crate) use client::{Client, dial_raw, test_hello};

use agentd::{AgentConfig, AgentPaths, ExecMode, LinkState, RunningAgent};
use flotilla::client::{Client as ConsoleClient, Login};
use flotilla_certs::enrol::{EnrolError, Enrolment};
use flotilla_certs::{IDENTITY_STEM, Identity};
use flotilla_wire::msg::{
    AgentInfo, CreatedToken, FleetEvent, Labels, MetricsSample, OpRequest, OpResponse, TokenInfo,
    TokenSpec,
};
use flotilla_wire::{IdentityId, Role};
use hubd::{HubConfig, HubCtx, HubPaths, RunningHub};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Deadline for anything that should happen promptly (an agent online, a reply, a refusal).
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);
/// Deadline for what waits on the 15 s idle timeout (a killed peer, a hub restart under agents).
pub(crate) const IDLE_DEADLINE: Duration = Duration::from_secs(30);
/// Deadline for work that runs real processes or moves megabytes (a job, a copy, a console drawing
/// its views), which a loaded 2-core CI machine with a debug build stretches well past
/// [`DEADLINE`].
pub(crate) const WORK_DEADLINE: Duration = Duration::from_secs(30);
/// Metrics interval of test agents: fast enough that "still reporting" is seen within a second.
pub(crate) const TEST_METRICS_MS: u32 = 1000;
/// Lifetime of the token [`FleetBuilder::start`] enrols its agents with: ten minutes, far longer
/// than any start takes (also the logins of [`Fleet::login_as`]); the console's audit snapshots
/// show it.
const BUILDER_TOKEN_TTL_S: u64 = 600;
/// Set in the child process [`in_own_process`] starts, so that the child runs the test itself.
const OWN_PROCESS_ENV: &str = "FLOTILLA_TEST_OWN_PROCESS";

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

/// Whether this process is the test's own. A test that changes the whole process (a resource
/// limit) or measures it (peak RSS) calls this first and returns at once when it is false: under
/// nextest every test has its own process already; under `cargo test`, whose tests share one, the
/// test `name` (its path below the crate, `files_nospace::…`) is run again alone in a child process
/// of this binary, and must pass there.
pub(crate) fn in_own_process(name: &str) -> bool {
    let nextest =
        std::env::var_os("NEXTEST_EXECUTION_MODE").is_some_and(|m| m == "process-per-test");
    if nextest || std::env::var_os(OWN_PROCESS_ENV).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("path of this test binary");
    let status = std::process::Command::new(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(OWN_PROCESS_ENV, "1")
        .status()
        .unwrap_or_else(|e| panic!("run {name} in its own process: {e}"));
    assert!(
        status.success(),
        "{name} failed in its own process ({status})"
    );
    false
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

/// One agent for [`FleetBuilder::agent`].
pub(crate) struct AgentSpec {
    /// Name in the fleet.
    pub(crate) name: String,
    /// Labels given at enrolment.
    pub(crate) labels: Labels,
    /// Its configuration (exec policy, work dir, shared folder, metrics interval).
    pub(crate) config: AgentConfig,
    /// Fills its shared folder before it starts.
    pub(crate) prepare: Box<dyn Fn(&Path)>,
}

impl AgentSpec {
    /// An agent with default settings and an empty shared folder.
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            labels: Vec::new(),
            config: AgentConfig::default(),
            prepare: Box::new(|_| {}),
        }
    }

    /// An agent that runs any command, with a short kill grace (the exec and console tests).
    pub(crate) fn any(name: &str) -> Self {
        Self::new(name).config(AgentConfig {
            exec: ExecMode::Any,
            kill_grace_ms: 500,
            ..AgentConfig::default()
        })
    }

    /// Adds a label.
    pub(crate) fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.into(), v.into()));
        self.labels.sort();
        self
    }

    /// Replaces the configuration.
    pub(crate) fn config(mut self, config: AgentConfig) -> Self {
        self.config = config;
        self
    }

    /// Fills the shared folder with `f` before the agent starts.
    pub(crate) fn prepare(mut self, f: impl Fn(&Path) + 'static) -> Self {
        self.prepare = Box::new(f);
        self
    }
}

/// How a [`Fleet`] starts: its agents, and what to wait for before the test body runs.
#[must_use]
pub(crate) struct FleetBuilder {
    agents: Vec<AgentSpec>,
    wait_listings: bool,
}

impl FleetBuilder {
    /// Adds an agent.
    pub(crate) fn agent(mut self, spec: AgentSpec) -> Self {
        self.agents.push(spec);
        self
    }

    /// Adds agents.
    pub(crate) fn agents(mut self, specs: impl IntoIterator<Item = AgentSpec>) -> Self {
        self.agents.extend(specs);
        self
    }

    /// Also waits until the hub holds every agent's shared-folder tree (the files tests).
    pub(crate) fn wait_listings(mut self) -> Self {
        self.wait_listings = true;
        self
    }

    /// `hubd init` in a fresh temp dir, a running hub on 127.0.0.1:0, then the agents, enrolled with
    /// one token of as many uses and started, each online before this returns.
    pub(crate) async fn start(self) -> Fleet {
        flotilla_certs::install_crypto_provider();
        init_test_logging();
        let dir = tempfile::tempdir().expect("temp dir for the fleet");
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
        let mut fleet = Fleet {
            paths,
            config,
            agents: Vec::new(),
            admin_login: None,
            hub: None,
            cancel: CancellationToken::new(),
            rt: Some(rt),
            dir,
        };
        fleet.start().await;
        fleet.admin_login = Some(Login::load(&fleet.paths.admin_dir(), None).expect("admin login"));
        if self.agents.is_empty() {
            return fleet;
        }
        let uses = u32::try_from(self.agents.len()).expect("agent count fits u32");
        let token = fleet
            .token_for(Role::Agent, uses, BUILDER_TOKEN_TTL_S, Vec::new())
            .await
            .token;
        let mut events = fleet.events();
        for spec in self.agents {
            let data_dir = fleet.dir.path().join(&spec.name);
            let enrolment = enrol_into(&data_dir, &token, &spec.name, spec.labels)
                .await
                .unwrap_or_else(|e| panic!("enrol {}: {e}", spec.name));
            let mut agent = TestAgent::new(spec.name, enrolment, data_dir, spec.config, None);
            std::fs::create_dir_all(&agent.shared).expect("shared folder");
            (spec.prepare)(&agent.shared);
            agent.start();
            fleet.agents.push(agent);
        }
        let mut waiting: HashSet<IdentityId> = fleet.agents.iter().map(|a| a.id.clone()).collect();
        waiting.retain(|id| !fleet.ctx().registry.is_online(id));
        if !waiting.is_empty() {
            events
                .until("the fleet's agents online", WORK_DEADLINE, |ev| {
                    if let FleetEvent::Online(info) = ev {
                        waiting.remove(&info.id);
                    }
                    waiting.is_empty().then_some(())
                })
                .await;
        }
        for agent in &mut fleet.agents {
            agent.wait_connected().await;
        }
        if self.wait_listings {
            let client = fleet.admin_client().await;
            for a in &fleet.agents {
                files::wait_listing(&client, &a.name).await;
            }
            client.close().await;
        }
        fleet
    }
}

/// A hub serving from a temp dir on its own single-threaded runtime, as a separate process would (a
/// hub task that never yields stalls the hub, and the tests notice), and the agents it was built
/// with.
pub(crate) struct Fleet {
    /// The hub's data directory.
    pub(crate) paths: HubPaths,
    /// The configuration it runs with (listen fixed to the first bound port after the first start).
    pub(crate) config: HubConfig,
    /// The agents given to the builder, in its order.
    pub(crate) agents: Vec<TestAgent>,
    /// The admin identity `hubd init` made, loaded once the hub has written its address.
    admin_login: Option<Login>,
    hub: Option<RunningHub>,
    cancel: CancellationToken,
    rt: Option<tokio::runtime::Runtime>,
    /// Everything of this fleet lives below it (hub, agents, logins, the test's own files).
    pub(crate) dir: TempDir,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for agent in &self.agents {
            agent.cancel.cancel();
        }
        self.cancel.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Fleet {
    /// A running hub without agents.
    pub(crate) async fn new() -> Self {
        Self::builder().start().await
    }

    /// A hub plus agents: add them, then [`FleetBuilder::start`].
    pub(crate) fn builder() -> FleetBuilder {
        FleetBuilder {
            agents: Vec::new(),
            wait_listings: false,
        }
    }

    /// Starts the hub (again), on the port it had before if it ran already.
    ///
    /// quinn closes a stopped hub's UDP socket from its endpoint task a moment after the hub
    /// returned; a new process would find the port free at once, in this process the bind is
    /// retried (yielding to that task, under the deadline) until the kernel has let the port go.
    pub(crate) async fn start(&mut self) {
        assert!(self.hub.is_none(), "hub already running");
        self.cancel = CancellationToken::new();
        let rt = self.rt.as_ref().expect("hub runtime").handle().clone();
        let hub = within(DEADLINE, "hub start", async {
            loop {
                let (paths, config, cancel) =
                    (self.paths.clone(), self.config.clone(), self.cancel.clone());
                let started = rt
                    .spawn(async move { hubd::start(paths, config, cancel).await })
                    .await
                    .expect("hub start task");
                match started {
                    Ok(hub) => return hub,
                    Err(hubd::HubError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AddrInUse =>
                    {
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("hub start: {e}"),
                }
            }
        })
        .await;
        // Restarts bind the same port, as a restarted hubd does, so agents find it again.
        self.config.listen = hub.local_addr;
        self.hub = Some(hub);
    }

    /// Stops the hub cleanly and waits until it has released its database.
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

    /// The token that stops the running hub (as SIGTERM would), for a callback that cannot wait.
    pub(crate) fn hub_cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
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
    pub(crate) async fn admin_request(&self, req: OpRequest) -> OpResponse {
        within(
            DEADLINE,
            "admin request",
            hubd::offline_request(&self.paths, req),
        )
        .await
        .expect("admin request")
    }

    /// Creates a join token valid for an hour.
    pub(crate) async fn token(&self, role: Role, uses: u32, labels: Labels) -> CreatedToken {
        self.token_for(role, uses, 3600, labels).await
    }

    /// Creates a join token valid for `ttl_s` seconds.
    pub(crate) async fn token_for(
        &self,
        role: Role,
        uses: u32,
        ttl_s: u64,
        labels: Labels,
    ) -> CreatedToken {
        let spec = TokenSpec {
            role,
            ttl_s,
            uses,
            labels,
        };
        match self.admin_request(OpRequest::TokenCreate(spec)).await {
            OpResponse::TokenCreated(t) => t,
            other => panic!("token create answered {other:?}"),
        }
    }

    /// The listing of token `id`, if it exists.
    pub(crate) async fn token_info(&self, id: &str) -> Option<TokenInfo> {
        match self.admin_request(OpRequest::TokenList).await {
            OpResponse::Tokens(list) => list.into_iter().find(|t| t.id == id),
            other => panic!("token list answered {other:?}"),
        }
    }

    /// Every agent as `hubd agents` sees it.
    pub(crate) async fn listed_agents(&self) -> Vec<AgentInfo> {
        match self.admin_request(OpRequest::ListAgents).await {
            OpResponse::Agents(list) => list,
            other => panic!("list agents answered {other:?}"),
        }
    }

    /// Enrols an agent named `name` in a temp dir of its own with a fresh single-use token (not
    /// started, not one of [`Fleet::agents`]).
    pub(crate) async fn enrol_agent(&self, name: &str, labels: Labels) -> TestAgent {
        let token = self.token(Role::Agent, 1, Vec::new()).await;
        TestAgent::enrol(&token.token, name, labels)
            .await
            .unwrap_or_else(|e| panic!("enrol {name}: {e}"))
    }

    /// Enrols and starts an agent as [`Fleet::enrol_agent`] does and waits until the hub reports it
    /// online.
    pub(crate) async fn spawn_agent(&self, name: &str) -> TestAgent {
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

    /// The builder's agent called `name`.
    pub(crate) fn agent(&self, name: &str) -> &TestAgent {
        self.agents
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no agent {name} in the fleet"))
    }

    /// The builder's agent called `name`, to stop or start it.
    pub(crate) fn agent_mut(&mut self, name: &str) -> &mut TestAgent {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no agent {name} in the fleet"))
    }

    /// The admin identity `hubd init` made, as `flotilla --login-dir` uses it.
    pub(crate) fn admin_login(&self) -> &Login {
        self.admin_login
            .as_ref()
            .expect("admin login loaded at start")
    }

    /// A console connection with the admin identity.
    pub(crate) async fn admin_client(&self) -> ConsoleClient {
        ConsoleClient::connect(self.admin_login())
            .await
            .expect("admin connects")
    }

    /// A login with role `role`, enrolled like `flotilla login` into `login-NAME` of the fleet's dir.
    pub(crate) async fn login_as(&self, role: Role, name: &str) -> Login {
        let token = self
            .token_for(role, 1, BUILDER_TOKEN_TTL_S, Vec::new())
            .await
            .token;
        let dir = self.dir.path().join(format!("login-{name}"));
        flotilla::util::create_private_dir(&dir).expect("login dir");
        within(
            DEADLINE,
            "login enrolment",
            flotilla_certs::enrol::enrol(
                &token,
                &dir,
                name.into(),
                Vec::new(),
                flotilla::client::local_hello(),
            ),
        )
        .await
        .expect("login enrols");
        Login::load(&dir, None).expect("login loads")
    }

    /// A console connection of a freshly enrolled identity with `role`.
    pub(crate) async fn client_as(&self, role: Role, name: &str) -> ConsoleClient {
        let login = self.login_as(role, name).await;
        ConsoleClient::connect(&login)
            .await
            .expect("operator connects")
    }

    /// Stops the builder's agent `name` cleanly (it says goodbye), and waits for it and for the hub
    /// to see it gone.
    pub(crate) async fn stop_agent(&mut self, name: &str) {
        let mut events = self.events();
        let agent = self.agent_mut(name);
        let id = agent.id.clone();
        agent.stop().await;
        if self.ctx().registry.is_online(&id) {
            events.offline(&id, WORK_DEADLINE).await;
        }
    }

    /// Whether the builder's agent `name` says its link is connected.
    pub(crate) fn connected(&self, name: &str) -> bool {
        self.agent(name).is_connected()
    }

    /// Stops every agent, then the hub, each cleanly.
    pub(crate) async fn shutdown(mut self) {
        for agent in &mut self.agents {
            agent.stop().await;
        }
        if self.hub.is_some() {
            self.stop().await;
        }
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
    /// The configuration it starts with.
    pub(crate) config: AgentConfig,
    /// Its shared folder.
    pub(crate) shared: PathBuf,
    cancel: CancellationToken,
    running: Option<RunningAgent>,
    _dir: Option<TempDir>,
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl TestAgent {
    fn new(
        name: String,
        enrolment: Enrolment,
        data_dir: PathBuf,
        config: AgentConfig,
        dir: Option<TempDir>,
    ) -> Self {
        let shared = config.shared_dir(&data_dir);
        Self {
            name,
            id: enrolment.enrolled.identity.clone(),
            enrolment,
            paths: AgentPaths { data_dir },
            config,
            shared,
            cancel: CancellationToken::new(),
            running: None,
            _dir: dir,
        }
    }

    /// Enrols a new agent in a temp dir of its own; it reports metrics every [`TEST_METRICS_MS`].
    pub(crate) async fn enrol(token: &str, name: &str, labels: Labels) -> Result<Self, EnrolError> {
        let dir = tempfile::tempdir().expect("temp dir for an agent");
        let data_dir = dir.path().join("agent");
        let enrolment = enrol_into(&data_dir, token, name, labels).await?;
        let config = AgentConfig::default().with_metrics_interval(TEST_METRICS_MS);
        Ok(Self::new(
            name.to_owned(),
            enrolment,
            data_dir,
            config,
            Some(dir),
        ))
    }

    /// Starts the link; returns its state feed.
    pub(crate) fn start(&mut self) -> watch::Receiver<LinkState> {
        assert!(self.running.is_none(), "agent already running");
        self.cancel = CancellationToken::new();
        let running = agentd::start(&self.paths, self.config.clone(), self.cancel.clone())
            .expect("agentd start");
        let state = running.state.clone();
        self.running = Some(running);
        state
    }

    /// The link state feed of the running agent.
    pub(crate) fn state(&self) -> watch::Receiver<LinkState> {
        self.running.as_ref().expect("agent running").state.clone()
    }

    /// Whether the running agent's link says connected.
    pub(crate) fn is_connected(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| matches!(*r.state.borrow(), LinkState::Connected { .. }))
    }

    /// Waits until the agent's link says connected.
    pub(crate) async fn wait_connected(&mut self) {
        let mut state = self.state();
        within(
            WORK_DEADLINE,
            &format!("{} connected", self.name),
            state.wait_for(|s| matches!(s, LinkState::Connected { .. })),
        )
        .await
        .expect("link state channel open");
    }

    /// The token that stops the agent (for a callback that cannot wait).
    pub(crate) fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the agent cleanly (it says goodbye) and waits for its task to end; nothing to do if it
    /// is not running.
    pub(crate) async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(running) = self.running.take() {
            within(DEADLINE, "agent shutdown", running.wait()).await;
        }
    }

    /// The identity on disk.
    pub(crate) fn identity(&self) -> Identity {
        Identity::load(&self.paths.data_dir, IDENTITY_STEM).expect("agent identity")
    }
}
