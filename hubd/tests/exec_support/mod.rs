//! A small fleet for the exec tests: a real hub on 127.0.0.1:0 with a real database, real agents
//! enrolled with real tokens over QUIC and mutual TLS, each in its own temp dir, and operator
//! clients of any role. (The shared `TestFleet` harness lives on main; this is exec's own until
//! they meet.)

#![allow(dead_code, unreachable_pub)]

use agentd::{AgentConfig, AgentPaths, ExecMode, LinkState, RunningAgent};
use flotilla::client::{Client, Login};
use flotilla_wire::exec::{AgentEvent, ExecEvent, ExecRequest, JobId, Query, QueryReply};
use flotilla_wire::msg::{FleetEvent, Labels, OpRequest, OpResponse, TokenSpec};
use flotilla_wire::{IdentityId, Role};
use hubd::{HubConfig, HubPaths, RunningHub};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Generous deadline for anything a loaded 2-core CI machine does.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One agent to start.
pub struct AgentSpec {
    /// Name in the fleet.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Its config (exec policy, workdir).
    pub config: AgentConfig,
}

impl AgentSpec {
    /// An agent that runs anything, with a short kill grace.
    pub fn any(name: &str) -> Self {
        Self {
            name: name.into(),
            labels: Vec::new(),
            config: AgentConfig {
                exec: ExecMode::Any,
                kill_grace_ms: 500,
                ..AgentConfig::default()
            },
        }
    }

    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.into(), v.into()));
        self.labels.sort();
        self
    }

    /// Replaces the config.
    pub fn config(mut self, config: AgentConfig) -> Self {
        self.config = config;
        self
    }
}

/// A running agent of the fleet.
pub struct TestAgent {
    /// Name.
    pub name: String,
    /// Id the hub gave it.
    pub id: IdentityId,
    /// Its data dir.
    pub dir: PathBuf,
    cancel: CancellationToken,
    running: Option<RunningAgent>,
}

/// Hub plus agents.
pub struct Fleet {
    /// Keeps every directory alive for the test.
    pub tmp: tempfile::TempDir,
    /// The hub's paths.
    pub paths: HubPaths,
    /// The hub.
    pub hub: RunningHub,
    hub_cancel: CancellationToken,
    /// Agents, in the order given.
    pub agents: Vec<TestAgent>,
}

fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

async fn token(paths: &HubPaths, role: Role, uses: u32) -> String {
    let spec = TokenSpec {
        role,
        ttl_s: 600,
        uses: uses.max(1),
        labels: Vec::new(),
    };
    match hubd::offline_request(paths, OpRequest::TokenCreate(spec))
        .await
        .expect("token request")
    {
        OpResponse::TokenCreated(t) => t.token,
        other => panic!("token: {other:?}"),
    }
}

impl Fleet {
    /// Starts a hub and `agents`, and waits until every agent is online.
    pub async fn start(agents: Vec<AgentSpec>) -> Self {
        init_logging();
        flotilla_certs::install_crypto_provider();
        let tmp = tempfile::tempdir().expect("tempdir");
        let paths = HubPaths {
            data_dir: tmp.path().join("hub"),
        };
        let config = HubConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..HubConfig::default()
        };
        hubd::init(&paths, &config).await.expect("hub init");
        let hub_cancel = CancellationToken::new();
        let hub = hubd::start(paths.clone(), config, hub_cancel.clone())
            .await
            .expect("hub start");
        let mut fleet = Self {
            tmp,
            paths,
            hub,
            hub_cancel,
            agents: Vec::new(),
        };
        let token = token(&fleet.paths, Role::Agent, agents.len() as u32).await;
        let mut events = fleet.hub.ctx.registry.subscribe();
        for spec in agents {
            let dir = fleet.tmp.path().join(&spec.name);
            let paths = AgentPaths {
                data_dir: dir.clone(),
            };
            let enrolled = agentd::enroll(&paths, &token, Some(spec.name.clone()), spec.labels)
                .await
                .expect("enrol");
            let cancel = CancellationToken::new();
            let running = agentd::start(&paths, spec.config, cancel.clone()).expect("agent start");
            fleet.agents.push(TestAgent {
                name: spec.name,
                id: enrolled.enrolled.identity,
                dir,
                cancel,
                running: Some(running),
            });
        }
        let mut waiting: Vec<IdentityId> = fleet.agents.iter().map(|a| a.id.clone()).collect();
        tokio::time::timeout(DEADLINE, async {
            while !waiting.is_empty() {
                match events.recv().await {
                    Ok(FleetEvent::Online(a)) => waiting.retain(|id| *id != a.id),
                    Ok(_) => {}
                    Err(e) => panic!("event feed: {e}"),
                }
            }
        })
        .await
        .expect("agents online in time");
        fleet
    }

    /// The agent called `name`.
    pub fn agent(&self, name: &str) -> &TestAgent {
        self.agents
            .iter()
            .find(|a| a.name == name)
            .expect("agent exists")
    }

    /// A client logged in as the hub's admin.
    pub async fn admin(&self) -> Client {
        let login = Login::load(&self.paths.admin_dir(), None).expect("admin login");
        Client::connect(&login).await.expect("admin connects")
    }

    /// A client of a freshly enrolled identity with `role`.
    pub async fn client(&self, role: Role, name: &str) -> Client {
        let token = token(&self.paths, role, 1).await;
        let dir = self.tmp.path().join(format!("login-{name}"));
        flotilla::util::create_private_dir(&dir).expect("login dir");
        flotilla_certs::enrol::enrol(
            &token,
            &dir,
            name.into(),
            Vec::new(),
            flotilla::client::local_hello(),
        )
        .await
        .expect("operator enrols");
        Client::connect(&Login::load(&dir, None).expect("login"))
            .await
            .expect("operator connects")
    }

    /// Stops the agent called `name` cleanly (it says goodbye) and waits for it, and for the hub
    /// to see it gone.
    pub async fn stop_agent(&mut self, name: &str) {
        let mut events = self.hub.ctx.registry.subscribe();
        let agent = self
            .agents
            .iter_mut()
            .find(|a| a.name == name)
            .expect("agent exists");
        let id = agent.id.clone();
        agent.cancel.cancel();
        if let Some(running) = agent.running.take() {
            tokio::time::timeout(DEADLINE, running.wait())
                .await
                .expect("agent stops in time");
        }
        if !self.hub.ctx.registry.is_online(&id) {
            return;
        }
        tokio::time::timeout(DEADLINE, async {
            loop {
                match events.recv().await {
                    Ok(FleetEvent::Offline { id: gone, .. }) if gone == id => return,
                    Ok(_) => {}
                    Err(e) => panic!("event feed: {e}"),
                }
            }
        })
        .await
        .expect("hub sees the agent leave");
    }

    /// Whether the agent's link says connected.
    pub fn connected(&self, name: &str) -> bool {
        self.agent(name)
            .running
            .as_ref()
            .is_some_and(|r| matches!(*r.state.borrow(), LinkState::Connected { .. }))
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        for a in &mut self.agents {
            a.cancel.cancel();
            if let Some(r) = a.running.take() {
                let _ = tokio::time::timeout(DEADLINE, r.wait()).await;
            }
        }
        self.hub_cancel.cancel();
        let _ = tokio::time::timeout(DEADLINE, self.hub.wait()).await;
    }
}

/// Runs a request to its end with the console's renderer into buffers; returns (exit status,
/// stdout, stderr).
pub async fn exec_text(client: &Client, req: &ExecRequest) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = tokio::time::timeout(
        DEADLINE,
        flotilla::exec::run_exec(
            client,
            req,
            flotilla::exec::RenderOptions::default(),
            &mut out,
            &mut err,
            flotilla::exec::Interrupts::Never,
        ),
    )
    .await
    .expect("job finished in time")
    .expect("job ran");
    (
        status,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Every event of a job, to its summary.
pub async fn exec_events(client: &Client, req: &ExecRequest) -> Vec<ExecEvent> {
    let mut session = flotilla::exec::ExecSession::open(client, req)
        .await
        .expect("exec opens");
    let mut events = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(ev) = session.next().await {
            let ev = ev.expect("event");
            let end = matches!(ev, ExecEvent::Done(_) | ExecEvent::Refused(_));
            events.push(ev);
            if end {
                return;
            }
        }
        panic!("stream ended before the summary");
    })
    .await
    .expect("job finished in time");
    events
}

/// The final event of `agent` in `events`.
pub fn last_of<'a>(events: &'a [ExecEvent], agent: &IdentityId) -> &'a AgentEvent {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            ExecEvent::Agent { agent: a, event } if a == agent => Some(event),
            _ => None,
        })
        .expect("agent has events")
}

/// The job id announced in `events`.
pub fn job_of(events: &[ExecEvent]) -> JobId {
    events
        .iter()
        .find_map(|e| match e {
            ExecEvent::Accepted { job, .. } => Some(*job),
            _ => None,
        })
        .expect("accepted")
}

/// Runs a query to its end.
pub async fn query(
    client: &Client,
    q: Query,
) -> Result<Vec<QueryReply>, flotilla::client::ClientError> {
    tokio::time::timeout(DEADLINE, flotilla::exec::query(client, &q))
        .await
        .expect("query answered in time")
}

/// Waits on a pidfd (no polling) until `pid` has exited; false if it still runs at the deadline.
/// A zombie waiting for its reaper counts as exited.
pub async fn process_gone(pid: i32) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: the descriptor was just created and is owned here alone.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    // SAFETY: `owned` is an open pidfd that the AsyncFd owns until it is dropped.
    let fd = unsafe { tokio::io::unix::AsyncFd::register(owned) }.expect("register pidfd");
    tokio::time::timeout(DEADLINE, fd.readable()).await.is_ok()
}

/// Resident set size of this process now, and its peak, in bytes.
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("field")
    };
    (field("VmRSS:"), field("VmHWM:"))
}
