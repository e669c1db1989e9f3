//! A small fleet for the shared-folder and transfer tests: a real hub on 127.0.0.1:0 with a real
//! database, real agents enrolled with real tokens over QUIC and mTLS, all in this process, each in
//! its own temporary directory. Waits are on events (link state, file events) under deadlines.

#![allow(dead_code, unreachable_pub)]

use agentd::{AgentConfig, AgentPaths, LinkState, RunningAgent};
use flotilla::client::{Client, Login};
use flotilla::files::{self, CopyEvent, CopyOptions, FilesError, Place};
use flotilla_wire::Role;
use flotilla_wire::files::FileEvent;
use flotilla_wire::msg::{OpRequest, OpResponse, TokenSpec};
use hubd::{HubConfig, HubPaths, RunningHub};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long any wait in these tests may take: generous for a loaded 2-core CI box.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Random bytes for test files (not cryptographic; reproducible per seed).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every partial file left below `dir`.
pub fn partial_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in read.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(p);
            } else if e.file_name().to_string_lossy().ends_with(".flotilla-part") {
                out.push(p);
            }
        }
    }
    out
}

/// How to start one agent.
pub struct Spec {
    /// Its name.
    pub name: String,
    /// Its configuration.
    pub config: AgentConfig,
    /// Fills its shared folder before it starts.
    pub prepare: Box<dyn Fn(&Path)>,
}

/// An agent called `name` with default settings and an empty folder.
pub fn spec(name: &str) -> Spec {
    Spec {
        name: name.into(),
        config: AgentConfig::default(),
        prepare: Box::new(|_| {}),
    }
}

impl Spec {
    /// With this configuration.
    pub fn config(mut self, config: AgentConfig) -> Self {
        self.config = config;
        self
    }

    /// With this folder content.
    pub fn prepare(mut self, f: impl Fn(&Path) + 'static) -> Self {
        self.prepare = Box::new(f);
        self
    }
}

/// One agent of the fleet.
pub struct Agent {
    /// Its name.
    pub name: String,
    /// Its data directory.
    pub paths: AgentPaths,
    /// Its configuration.
    pub config: AgentConfig,
    /// Its shared folder.
    pub shared: PathBuf,
    cancel: CancellationToken,
    running: Option<RunningAgent>,
}

impl Agent {
    /// Waits until the agent's link says connected.
    pub async fn wait_connected(&mut self) {
        let running = self.running.as_mut().expect("agent running");
        tokio::time::timeout(
            DEADLINE,
            running
                .state
                .wait_for(|s| matches!(s, LinkState::Connected { .. })),
        )
        .await
        .expect("agent connects within the deadline")
        .expect("link state channel open");
    }

    /// The token that stops the agent (for a callback that cannot wait).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the agent (as SIGTERM would) and waits for it.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(DEADLINE, r.wait())
                .await
                .expect("agent stops within the deadline");
        }
    }

    /// Starts the agent again on the same data directory.
    pub fn start(&mut self) {
        self.cancel = CancellationToken::new();
        self.running = Some(
            agentd::start(&self.paths, self.config.clone(), self.cancel.clone())
                .expect("agent starts"),
        );
    }
}

/// A hub and its agents.
pub struct Fleet {
    /// Everything lives below this.
    pub dir: tempfile::TempDir,
    /// The hub's data directory.
    pub hub_paths: HubPaths,
    hub_config: HubConfig,
    /// The running hub.
    pub hub: Option<RunningHub>,
    /// Cancels the running hub.
    pub hub_cancel: CancellationToken,
    /// The agents, in the order given.
    pub agents: Vec<Agent>,
    /// The hub's admin identity, as `flotilla --login-dir` uses it.
    pub admin: Login,
}

impl Fleet {
    /// A hub and one agent per name, each with default settings.
    pub async fn start(names: &[&str]) -> Self {
        Self::start_with(names.iter().map(|n| spec(n)).collect()).await
    }

    /// A hub and agents as specified; each `prepare` fills its shared folder before the agent starts.
    pub async fn start_with(agents: Vec<Spec>) -> Self {
        flotilla_certs::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let hub_paths = HubPaths {
            data_dir: dir.path().join("hub"),
        };
        let mut hub_config = HubConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..HubConfig::default()
        };
        hubd::init(&hub_paths, &hub_config).await.expect("hub init");
        let hub_cancel = CancellationToken::new();
        let hub = hubd::start(hub_paths.clone(), hub_config.clone(), hub_cancel.clone())
            .await
            .expect("hub starts");
        // Restarts bind the same port, as a real hub's fixed one.
        hub_config.listen = hub.local_addr;
        let admin = Login::load(&hub_paths.admin_dir(), None).expect("admin login");
        let token = token(&hub_paths, Role::Agent, agents.len() as u32).await;
        let mut fleet = Self {
            dir,
            hub_paths,
            hub_config,
            hub: Some(hub),
            hub_cancel,
            agents: Vec::new(),
            admin,
        };
        for Spec {
            name,
            config,
            prepare,
        } in agents
        {
            let paths = AgentPaths {
                data_dir: fleet.dir.path().join(&name),
            };
            agentd::enroll(&paths, &token, Some(name.clone()), Vec::new())
                .await
                .expect("agent enrols");
            let shared = config.shared_dir(&paths.data_dir);
            std::fs::create_dir_all(&shared).expect("shared dir");
            prepare(&shared);
            let mut agent = Agent {
                name,
                paths,
                config,
                shared,
                cancel: CancellationToken::new(),
                running: None,
            };
            agent.start();
            agent.wait_connected().await;
            fleet.agents.push(agent);
        }
        let client = fleet.client().await;
        for a in &fleet.agents {
            wait_listing(&client, &a.name).await;
        }
        client.close().await;
        fleet
    }

    /// The agent called `name`.
    pub fn agent(&mut self, name: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .expect("agent in fleet")
    }

    /// A console connection with the admin identity.
    pub async fn client(&self) -> Client {
        Client::connect(&self.admin).await.expect("admin connects")
    }

    /// Stops the hub (cancel, as SIGTERM) and waits for it to finish.
    pub async fn stop_hub(&mut self) {
        self.hub_cancel.cancel();
        if let Some(hub) = self.hub.take() {
            tokio::time::timeout(DEADLINE, hub.wait())
                .await
                .expect("hub stops within the deadline")
                .expect("hub stops cleanly");
        }
    }

    /// Starts the hub again on the same address and data directory.
    ///
    /// quinn closes the old UDP socket from its endpoint task a moment after the old hub returned;
    /// a new process would find the port free at once, in this process the bind is retried (yielding
    /// to that task, under the deadline) until the kernel has let the port go.
    pub async fn start_hub(&mut self) {
        self.hub_cancel = CancellationToken::new();
        let hub = tokio::time::timeout(DEADLINE, async {
            loop {
                match hubd::start(
                    self.hub_paths.clone(),
                    self.hub_config.clone(),
                    self.hub_cancel.clone(),
                )
                .await
                {
                    Ok(hub) => return hub,
                    Err(hubd::HubError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AddrInUse =>
                    {
                        tokio::task::yield_now().await
                    }
                    Err(e) => panic!("hub restarts: {e}"),
                }
            }
        })
        .await
        .expect("the old hub's port is released within the deadline");
        self.hub = Some(hub);
    }

    /// A login with role `role`, enrolled like `flotilla login`.
    pub async fn login_as(&self, role: Role, name: &str) -> Login {
        let token = token(&self.hub_paths, role, 1).await;
        let dir = self.dir.path().join(format!("login-{name}"));
        flotilla::util::create_private_dir(&dir).expect("login dir");
        flotilla_certs::enrol::enrol(
            &token,
            &dir,
            name.into(),
            Vec::new(),
            flotilla::client::local_hello(),
        )
        .await
        .expect("login enrols");
        Login::load(&dir, None).expect("login loads")
    }

    /// Copies with the admin identity and default options; collects the events.
    pub async fn cp(
        &self,
        src: &str,
        dst: &str,
    ) -> (Result<files::CopyReport, FilesError>, Vec<CopyEvent>) {
        cp_as(&self.admin, src, dst, &CopyOptions::default()).await
    }
}

/// Copies as `login`; collects the events.
pub async fn cp_as(
    login: &Login,
    src: &str,
    dst: &str,
    opts: &CopyOptions,
) -> (Result<files::CopyReport, FilesError>, Vec<CopyEvent>) {
    let mut events = Vec::new();
    let cancel = CancellationToken::new();
    let r = tokio::time::timeout(
        DEADLINE * 2,
        files::copy(
            login,
            &Place::parse(src),
            &Place::parse(dst),
            opts,
            &cancel,
            &mut |e| events.push(e.clone()),
        ),
    )
    .await
    .expect("copy ends within the deadline");
    (r, events)
}

/// Starts a copy in the background; its events arrive on the returned channel.
pub fn spawn_cp(
    login: Login,
    src: &str,
    dst: &str,
    opts: CopyOptions,
    cancel: CancellationToken,
    on_event: impl Fn(&CopyEvent) + Send + Sync + 'static,
) -> (
    tokio::task::JoinHandle<Result<files::CopyReport, FilesError>>,
    mpsc::Receiver<CopyEvent>,
) {
    let (tx, rx) = mpsc::channel(4096);
    let (src, dst) = (Place::parse(src), Place::parse(dst));
    let task = tokio::spawn(async move {
        files::copy(&login, &src, &dst, &opts, &cancel, &mut |e| {
            on_event(e);
            let _ = tx.try_send(e.clone());
        })
        .await
    });
    (task, rx)
}

/// Waits for the next copy event matching `pred`.
pub async fn next_copy_event(
    rx: &mut mpsc::Receiver<CopyEvent>,
    mut pred: impl FnMut(&CopyEvent) -> bool,
) -> CopyEvent {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let ev = rx.recv().await.expect("copy still reporting");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("copy event within the deadline")
}

/// Makes a join token through the running hub's admin socket.
pub async fn token(paths: &HubPaths, role: Role, uses: u32) -> String {
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
        other => panic!("unexpected reply {other:?}"),
    }
}

/// A watch on file events.
pub struct FileWatch {
    _send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl FileWatch {
    /// Subscribes (to one agent, or all).
    pub async fn open(client: &Client, agent: Option<&str>) -> Self {
        let (send, recv) = files::watch_stream(client, agent.map(str::to_owned))
            .await
            .expect("watch opens");
        Self { _send: send, recv }
    }

    /// The next event matching `pred`.
    pub async fn next_matching(&mut self, mut pred: impl FnMut(&FileEvent) -> bool) -> FileEvent {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let ev = files::next_event(&mut self.recv)
                    .await
                    .expect("watch readable")
                    .expect("watch open");
                if pred(&ev) {
                    return ev;
                }
            }
        })
        .await
        .expect("file event within the deadline")
    }
}

/// Waits until the hub holds `agent`'s tree: a watch opens with the trees the hub holds, and reports
/// each snapshot that arrives later.
pub async fn wait_listing(client: &Client, agent: &str) -> files::Listing {
    let mut watch = FileWatch::open(client, Some(agent)).await;
    watch
        .next_matching(|e| matches!(e, FileEvent::Snapshot { name, .. } if name == agent))
        .await;
    files::list(client, agent, "", false)
        .await
        .expect("listing once the snapshot is in")
}
