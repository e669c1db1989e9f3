//! Shared folders and transfers through the console's own library: a fleet whose shared-folder
//! trees are at the hub, copies run to their end or in the background, file-event watches, and
//! test data. Waits are on events (link state, file events) under deadlines.

pub(crate) use super::{AgentSpec, Fleet, WORK_DEADLINE as DEADLINE};
use flotilla::client::{Client, Login};
use flotilla::files::{self, CopyEvent, CopyOptions, FilesError, Place};
use flotilla_wire::files::FileEvent;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Random bytes for test files (not cryptographic; reproducible per seed).
pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
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
pub(crate) fn partial_files(dir: &Path) -> Vec<PathBuf> {
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

/// A hub and one agent per name, each with default settings, online and its tree at the hub.
pub(crate) async fn files_fleet(names: &[&str]) -> Fleet {
    files_fleet_with(names.iter().map(|n| spec(n)).collect()).await
}

/// A hub and agents as specified, online and their trees at the hub; each `prepare` fills its
/// shared folder before the agent starts.
pub(crate) async fn files_fleet_with(agents: Vec<AgentSpec>) -> Fleet {
    Fleet::builder()
        .agents(agents)
        .wait_listings()
        .start()
        .await
}

/// An agent called `name` with default settings and an empty folder.
pub(crate) fn spec(name: &str) -> AgentSpec {
    AgentSpec::new(name)
}

impl Fleet {
    /// Copies with the admin identity and default options; collects the events.
    pub(crate) async fn cp(
        &self,
        src: &str,
        dst: &str,
    ) -> (Result<files::CopyReport, FilesError>, Vec<CopyEvent>) {
        cp_as(self.admin_login(), src, dst, &CopyOptions::default()).await
    }
}

/// Copies as `login`; collects the events.
pub(crate) async fn cp_as(
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
pub(crate) fn spawn_cp(
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
pub(crate) async fn next_copy_event(
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

/// A watch on file events.
pub(crate) struct FileWatch {
    _send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl FileWatch {
    /// Subscribes (to one agent, or all).
    pub(crate) async fn open(client: &Client, agent: Option<&str>) -> Self {
        let (send, recv) = files::watch_stream(client, agent.map(str::to_owned))
            .await
            .expect("watch opens");
        Self { _send: send, recv }
    }

    /// The next event matching `pred`.
    pub(crate) async fn next_matching(
        &mut self,
        mut pred: impl FnMut(&FileEvent) -> bool,
    ) -> FileEvent {
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
pub(crate) async fn wait_listing(client: &Client, agent: &str) -> files::Listing {
    let mut watch = FileWatch::open(client, Some(agent)).await;
    watch
        .next_matching(|e| matches!(e, FileEvent::Snapshot { name, .. } if name == agent))
        .await;
    files::list(client, agent, "", false)
        .await
        .expect("listing once the snapshot is in")
}

/// Bytes per second the source of an interrupted copy sends at: 24 MiB take 3 s, so a stop at
/// 2 MiB always lands mid-transfer, however fast the machine copies over loopback.
pub(crate) const PACED_RATE: u64 = 8 * 1024 * 1024;

/// Reconnects agent `name` through a proxy that passes `rate` bytes per second, and returns the
/// proxy (it keeps forwarding to the same hub address across hub restarts).
pub(crate) async fn pace_agent(
    fleet: &mut Fleet,
    name: &str,
    rate: u64,
) -> super::proxy::FaultProxy {
    let proxy = super::proxy::FaultProxy::start(fleet.addr()).await;
    proxy.set(super::proxy::Faults::rate(rate));
    let agent = fleet.agent_mut(name);
    agent.stop().await;
    flotilla_certs::Identity::save_hubs(&agent.paths.data_dir, &[proxy.hub()])
        .expect("point the agent at the proxy");
    let _ = agent.start();
    agent.wait_connected().await;
    proxy
}
