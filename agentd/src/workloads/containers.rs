//! The container engine (Docker or Podman) through the Docker Engine API on its unix socket:
//! finding and keeping the connection, the inventory with per-container stats, and the actions.
//!
//! Stats are asked one-shot (no two-second wait for a second sample, as `docker stats` does) and
//! rates are computed here against the previous interval's counters. On Podman one libpod request
//! (`libpod.rs`) brings every running container's counters; Docker's API has no such call, so
//! with Docker one poll of N running containers is N small requests, a few at a time.

#[cfg(unix)]
use super::libpod::{self, LibpodError, PodStats};
use bollard::Docker;
use bollard::models::{
    ContainerStatsResponse, ContainerSummary, ContainerSummaryHealthStatusEnum,
    ContainerSummaryStateEnum,
};
use bollard::query_parameters::{
    KillContainerOptions, ListContainersOptions, RemoveContainerOptions, RestartContainerOptions,
    StartContainerOptions, StatsOptions, StopContainerOptions,
};
use flotilla_wire::workloads::{
    ContainerAction, ContainerInfo, ContainerState, ContainerStats, Health, PortMap, SourceState,
};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds an engine request may take before it counts as a failure: a wedged engine must not
/// stall the inventory for ever, and a busy one answers `stop` within the stop timeout plus this.
const ENGINE_TIMEOUT_S: u64 = 30;
/// Stats requests in flight at once: enough to poll 200 containers well inside an interval,
/// few enough not to queue a burst of requests on the engine.
const STATS_CONCURRENCY: usize = 8;

/// Why an engine request failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No socket was found.
    #[error("no container engine: none of {sockets} exists (containers_socket in agent.toml)")]
    NoSocket {
        /// The sockets tried, comma separated.
        sockets: String,
    },
    /// The engine did not answer or answered with an error.
    #[error("container engine at {socket}: {detail}")]
    Unreachable {
        /// The socket.
        socket: String,
        /// What went wrong.
        detail: String,
    },
    /// No such container.
    #[error("no such container: {0}")]
    NotFound(String),
    /// The engine refused the request (a running container removed, a conflict).
    #[error("{0}")]
    Refused(String),
}

/// The connection to the engine, found by probing the configured sockets and kept until a request
/// fails. Shared by the inventory, logs and actions.
pub struct Engine {
    sockets: Vec<PathBuf>,
    conn: Mutex<Option<Connected>>,
}

#[derive(Clone)]
struct Connected {
    docker: Docker,
    socket: PathBuf,
    state: SourceState,
    /// The engine is Podman, whose libpod API answers all stats at once.
    podman: bool,
}

impl Engine {
    /// An engine reached through the first of `sockets` that exists.
    pub fn new(sockets: Vec<PathBuf>) -> Self {
        Self {
            sockets,
            conn: Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<Connected> {
        self.conn.lock().ok().and_then(|c| c.clone())
    }

    /// Drops the connection after a failure: the next request probes again.
    pub fn forget(&self) {
        if let Ok(mut c) = self.conn.lock() {
            *c = None;
        }
    }

    /// Whether any candidate socket exists.
    pub fn socket_present(&self) -> bool {
        self.sockets.iter().any(|s| s.exists())
    }

    /// The socket in use, once connected.
    pub fn socket(&self) -> Option<PathBuf> {
        self.cached().map(|c| c.socket)
    }

    async fn connect(&self) -> Result<Connected, EngineError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let Some(socket) = self.sockets.iter().find(|s| s.exists()) else {
            return Err(EngineError::NoSocket {
                sockets: self
                    .sockets
                    .iter()
                    .map(|s| s.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let unreachable = |detail: String| EngineError::Unreachable {
            socket: socket.display().to_string(),
            detail,
        };
        let path = socket.to_string_lossy();
        let docker =
            Docker::connect_with_unix(&path, ENGINE_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
                .map_err(|e| unreachable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let version = docker
            .version()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let podman = version.components.as_ref().and_then(|cs| {
            cs.iter()
                .find(|c| c.name.to_ascii_lowercase().contains("podman"))
                .map(|c| c.version.clone())
        });
        let is_podman = podman.is_some();
        let state = match podman {
            Some(v) => SourceState::Up {
                name: "podman".into(),
                version: v,
            },
            None => SourceState::Up {
                name: "docker".into(),
                version: version.version.unwrap_or_default(),
            },
        };
        tracing::info!(socket = %socket.display(), ?state, "container engine connected");
        let c = Connected {
            docker,
            socket: socket.clone(),
            state,
            podman: is_podman,
        };
        if let Ok(mut slot) = self.conn.lock() {
            *slot = Some(c.clone());
        }
        Ok(c)
    }

    /// The API client, connecting if needed.
    pub async fn docker(&self) -> Result<Docker, EngineError> {
        Ok(self.connect().await?.docker)
    }

    /// Maps a failed request to our error, forgetting the connection when the engine itself
    /// failed (a 404 or 409 is the container's business, not the engine's).
    pub fn error(&self, container: &str, err: bollard::errors::Error) -> EngineError {
        use bollard::errors::Error as E;
        match err {
            E::DockerResponseServerError {
                status_code: 404, ..
            } => EngineError::NotFound(container.to_string()),
            E::DockerResponseServerError {
                status_code,
                message,
            } if status_code < 500 => EngineError::Refused(message),
            other => {
                let socket = self
                    .socket()
                    .map(|s| s.display().to_string())
                    .unwrap_or_else(|| "?".into());
                self.forget();
                EngineError::Unreachable {
                    socket,
                    detail: other.to_string(),
                }
            }
        }
    }

    /// Runs one action on one container.
    pub async fn act(
        &self,
        action: ContainerAction,
        container: &str,
        stop_timeout_s: Option<u32>,
    ) -> Result<(), EngineError> {
        let docker = self.docker().await?;
        let t = stop_timeout_s.map(|t| t.min(i32::MAX as u32) as i32);
        let done = match action {
            ContainerAction::Start => {
                docker
                    .start_container(container, None::<StartContainerOptions>)
                    .await
            }
            ContainerAction::Stop => {
                docker
                    .stop_container(container, Some(StopContainerOptions { signal: None, t }))
                    .await
            }
            ContainerAction::Restart => {
                docker
                    .restart_container(container, Some(RestartContainerOptions { signal: None, t }))
                    .await
            }
            ContainerAction::Kill => {
                docker
                    .kill_container(
                        container,
                        Some(KillContainerOptions {
                            signal: "SIGKILL".into(),
                        }),
                    )
                    .await
            }
            ContainerAction::Remove => {
                docker
                    .remove_container(
                        container,
                        Some(RemoveContainerOptions {
                            v: false,
                            force: false,
                            link: false,
                        }),
                    )
                    .await
            }
        };
        done.map_err(|e| self.error(container, e))
    }

    /// The full id of `container` (a name, id or unique id prefix).
    pub async fn resolve(&self, container: &str) -> Result<String, EngineError> {
        let docker = self.docker().await?;
        let found = docker
            .inspect_container(
                container,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| self.error(container, e))?;
        found
            .id
            .ok_or_else(|| EngineError::NotFound(container.to_string()))
    }
}

/// Whether `name` may be handed to the engine as a container reference: the engine's own name
/// alphabet (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), which is also safe inside a URL path.
pub fn valid_container_ref(name: &str) -> bool {
    flotilla_wire::workloads::valid_workload_name(name)
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Counters of one container at the previous poll, for rates.
#[derive(Clone, Copy, Debug)]
struct Counters {
    at: Instant,
    cpu_ns: u64,
    net_rx: u64,
    net_tx: u64,
    blk_read: u64,
    blk_write: u64,
}

/// One container's stats at one instant, whichever API read them: the counters that rates come
/// from and the gauges as read.
#[derive(Clone, Copy, Debug)]
struct Sample {
    counters: Counters,
    mem_used: u64,
    mem_limit: u64,
    pids: u32,
}

/// Which API a poll read the running containers' stats from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsApi {
    /// Podman's libpod API: every running container in one request.
    Libpod,
    /// The Docker Engine API: one request per running container (Docker, or a Podman whose libpod
    /// stats failed).
    PerContainer,
}

/// What `inspect` adds to the list: asked again only when the list's view of a container changes.
#[derive(Clone, Debug, Default, PartialEq)]
struct Details {
    restart_count: u32,
    started_ms: Option<u64>,
}

/// The inventory side of the engine: the previous counters and the cached details.
pub struct ContainerSource {
    engine: std::sync::Arc<Engine>,
    was_up: bool,
    /// The last poll got an answer: a failure now is worth one warning, not one per interval.
    answering: bool,
    previous: HashMap<String, Counters>,
    details: HashMap<String, (String, Details)>,
    /// Podman's libpod stats may be asked: cleared for good when the engine says it has none.
    libpod_stats: bool,
    /// Where the last poll's stats came from.
    stats_api: Option<StatsApi>,
    /// The last libpod request succeeded (or none failed yet): a failure is worth one warning.
    libpod_answering: bool,
}

/// One poll's result.
pub struct ContainerPoll {
    /// The engine's state.
    pub state: SourceState,
    /// Containers and stats of running ones; `None` when the engine did not answer.
    pub inventory: Option<(Vec<ContainerInfo>, Vec<ContainerStats>)>,
}

impl ContainerSource {
    /// A source over `engine`.
    pub fn new(engine: std::sync::Arc<Engine>) -> Self {
        Self {
            engine,
            was_up: false,
            answering: false,
            previous: HashMap::new(),
            details: HashMap::new(),
            libpod_stats: true,
            stats_api: None,
            libpod_answering: true,
        }
    }

    /// Reads stats through Docker's per-container API even on Podman, as with an engine that has
    /// no libpod API: both ways can then be compared on one engine.
    pub fn per_container_stats(mut self) -> Self {
        self.libpod_stats = false;
        self
    }

    /// The API the last poll read stats from; `None` before a poll reached the engine.
    pub fn stats_api(&self) -> Option<StatsApi> {
        self.stats_api
    }

    /// Lists containers and takes stats of the running ones. Never fails: an engine that is
    /// missing is `Absent` (or `Down` once it had been up), one that errs is `Down`.
    pub async fn poll(&mut self) -> ContainerPoll {
        let answering = self.answering;
        let down = |error: String| {
            if answering {
                tracing::warn!(%error, "container engine stopped answering; retrying every interval");
            }
            ContainerPoll {
                state: SourceState::Down { error },
                inventory: None,
            }
        };
        let connected = match self.engine.connect().await {
            Ok(c) => c,
            Err(EngineError::NoSocket { sockets }) if !self.was_up => {
                tracing::trace!(%sockets, "no container engine");
                return ContainerPoll {
                    state: SourceState::Absent,
                    inventory: None,
                };
            }
            Err(e) => {
                self.answering = false;
                return down(e.to_string());
            }
        };
        let list = connected
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await;
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                self.answering = false;
                return down(self.engine.error("", e).to_string());
            }
        };
        self.was_up = true;
        self.answering = true;
        let mut infos = Vec::with_capacity(list.len());
        for summary in &list {
            if let Some(info) = self.info(&connected.docker, summary).await {
                infos.push(info);
            }
        }
        let running: Vec<String> = infos
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| c.id.clone())
            .collect();
        let samples = self.samples(&connected, running).await;
        let mut stats = Vec::with_capacity(samples.len());
        let mut seen = HashMap::with_capacity(samples.len());
        for (id, sample) in samples {
            stats.push(rates(&id, &sample, self.previous.get(&id)));
            seen.insert(id, sample.counters);
        }
        stats.sort_by(|a, b| a.id.cmp(&b.id));
        self.previous = seen;
        let ids: HashSet<&str> = infos.iter().map(|c| c.id.as_str()).collect();
        self.details.retain(|id, _| ids.contains(id.as_str()));
        ContainerPoll {
            state: connected.state.clone(),
            inventory: Some((infos, stats)),
        }
    }

    /// Stats of the `running` containers: on Podman all of them in one libpod request, else (or
    /// when that failed) one Docker API request each, a few at a time. A container whose stats
    /// could not be read (it stopped meanwhile) is left out.
    async fn samples(&mut self, c: &Connected, running: Vec<String>) -> Vec<(String, Sample)> {
        #[cfg(unix)]
        if c.podman && self.libpod_stats {
            let timeout = Duration::from_secs(ENGINE_TIMEOUT_S);
            match libpod::all_stats(&c.socket, timeout).await {
                Ok(all) => {
                    let at = Instant::now();
                    self.libpod_answering = true;
                    self.stats_api = Some(StatsApi::Libpod);
                    // Started since the list: its stats wait for the list that names it.
                    let running: HashSet<&str> = running.iter().map(String::as_str).collect();
                    return all
                        .into_iter()
                        .filter(|s| running.contains(s.container_id.as_str()))
                        .map(|s| {
                            let sample = libpod_sample(&s, at);
                            (s.container_id, sample)
                        })
                        .collect();
                }
                Err(error @ LibpodError::Unsupported { .. }) => {
                    tracing::info!(%error, "container stats: one request per container");
                    self.libpod_stats = false;
                }
                Err(error) => {
                    // Once per run of failures: the per-container path still gives the stats.
                    if self.libpod_answering {
                        tracing::warn!(%error, "container stats: one request per container until libpod answers");
                    }
                    self.libpod_answering = false;
                }
            }
        }
        self.stats_api = Some(StatsApi::PerContainer);
        let docker = &c.docker;
        let responses: Vec<(String, Option<ContainerStatsResponse>)> =
            futures::stream::iter(running)
                .map(|id| async move {
                    let mut s = docker.stats(
                        &id,
                        Some(StatsOptions {
                            stream: false,
                            one_shot: true,
                        }),
                    );
                    let r = s.next().await.and_then(Result::ok);
                    (id, r)
                })
                .buffer_unordered(STATS_CONCURRENCY)
                .collect()
                .await;
        let at = Instant::now();
        responses
            .into_iter()
            .filter_map(|(id, r)| Some((id, docker_sample(&r?, at))))
            .collect()
    }

    /// A container's info from the list, with the details `inspect` adds, asked only when the
    /// list shows a change.
    async fn info(&mut self, docker: &Docker, s: &ContainerSummary) -> Option<ContainerInfo> {
        let id = s.id.clone()?;
        let state = state_of(s.state);
        let health = health_of(s);
        let key = format!("{}|{}|{:?}", state.as_str(), health.as_str(), s.created);
        let details = match self.details.get(&id) {
            Some((k, d)) if *k == key => d.clone(),
            _ => {
                let d = match docker
                    .inspect_container(
                        &id,
                        None::<bollard::query_parameters::InspectContainerOptions>,
                    )
                    .await
                {
                    Ok(i) => Details {
                        restart_count: i.restart_count.unwrap_or(0).clamp(0, i64::from(u32::MAX))
                            as u32,
                        started_ms: i
                            .state
                            .as_ref()
                            .and_then(|st| st.started_at.as_deref())
                            .and_then(super::parse_rfc3339_ms),
                    },
                    // Gone between list and inspect: the next poll settles it.
                    Err(_) => Details::default(),
                };
                self.details.insert(id.clone(), (key, d.clone()));
                d
            }
        };
        let labels = s.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).cloned();
        let mut ports: Vec<PortMap> = s
            .ports
            .iter()
            .flatten()
            .map(|p| PortMap {
                host_ip: p.ip.clone().unwrap_or_default(),
                host_port: p.public_port.unwrap_or(0),
                container_port: p.private_port,
                protocol: p
                    .typ
                    .map(|t| t.to_string())
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "tcp".into()),
            })
            .collect();
        ports.sort_by(|a, b| {
            (a.container_port, &a.protocol, &a.host_ip, a.host_port).cmp(&(
                b.container_port,
                &b.protocol,
                &b.host_ip,
                b.host_port,
            ))
        });
        Some(ContainerInfo {
            name: s
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| id.chars().take(12).collect()),
            id,
            image: s.image.clone().unwrap_or_default(),
            state,
            health,
            restart_count: details.restart_count,
            started_ms: details.started_ms,
            ports,
            compose_project: label("com.docker.compose.project"),
            compose_service: label("com.docker.compose.service"),
        })
    }
}

fn state_of(s: Option<ContainerSummaryStateEnum>) -> ContainerState {
    match s {
        Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
        Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
        Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerSummaryStateEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerSummaryStateEnum::EXITED) => ContainerState::Exited,
        Some(ContainerSummaryStateEnum::DEAD) => ContainerState::Dead,
        _ => ContainerState::Unknown,
    }
}

/// Health from the list: the `Health` field where the engine fills it, else the `(healthy)`
/// the status text carries (older Docker, Podman).
fn health_of(s: &ContainerSummary) -> Health {
    match s.health.as_ref().and_then(|h| h.status) {
        Some(ContainerSummaryHealthStatusEnum::HEALTHY) => return Health::Healthy,
        Some(ContainerSummaryHealthStatusEnum::UNHEALTHY) => return Health::Unhealthy,
        Some(ContainerSummaryHealthStatusEnum::STARTING) => return Health::Starting,
        _ => {}
    }
    let status = s.status.as_deref().unwrap_or_default();
    if status.contains("(unhealthy)") {
        Health::Unhealthy
    } else if status.contains("(healthy)") {
        Health::Healthy
    } else if status.contains("(health: starting)") || status.contains("(starting)") {
        Health::Starting
    } else {
        Health::None
    }
}

/// A sample from Docker's stats document of one container.
fn docker_sample(r: &ContainerStatsResponse, at: Instant) -> Sample {
    let cpu_ns = r
        .cpu_stats
        .as_ref()
        .and_then(|c| c.cpu_usage.as_ref())
        .and_then(|u| u.total_usage)
        .unwrap_or(0);
    let (mut net_rx, mut net_tx) = (0u64, 0u64);
    for n in r.networks.iter().flat_map(|m| m.values()) {
        net_rx = net_rx.saturating_add(n.rx_bytes.unwrap_or(0));
        net_tx = net_tx.saturating_add(n.tx_bytes.unwrap_or(0));
    }
    let (mut blk_read, mut blk_write) = (0u64, 0u64);
    for e in r
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref())
        .into_iter()
        .flatten()
    {
        let v = e.value.unwrap_or(0);
        match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => blk_read = blk_read.saturating_add(v),
            Some("write") => blk_write = blk_write.saturating_add(v),
            _ => {}
        }
    }
    let mem = r.memory_stats.as_ref();
    let usage = mem.and_then(|m| m.usage).unwrap_or(0);
    // As `docker stats`: page cache the kernel can drop is not "used".
    let cache = mem
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    Sample {
        counters: Counters {
            at,
            cpu_ns,
            net_rx,
            net_tx,
            blk_read,
            blk_write,
        },
        mem_used: usage.saturating_sub(cache),
        mem_limit: mem.and_then(|m| m.limit).unwrap_or(0),
        pids: r
            .pids_stats
            .as_ref()
            .and_then(|p| p.current)
            .unwrap_or(0)
            .min(u64::from(u32::MAX)) as u32,
    }
}

/// A sample from libpod's stats of one container: the same cgroup counters Podman builds its
/// Docker-compatible document from (memory as `podman stats` shows it, which is also the
/// `usage` of that document).
#[cfg(unix)]
fn libpod_sample(s: &PodStats, at: Instant) -> Sample {
    Sample {
        counters: Counters {
            at,
            cpu_ns: s.cpu_nano,
            net_rx: s.net_input,
            net_tx: s.net_output,
            blk_read: s.block_input,
            blk_write: s.block_output,
        },
        mem_used: s.mem_usage,
        mem_limit: s.mem_limit,
        pids: s.pids.min(u64::from(u32::MAX)) as u32,
    }
}

/// One interval's stats against the previous counters (rates 0 on the first).
fn rates(id: &str, now: &Sample, prev: Option<&Counters>) -> ContainerStats {
    let mut s = ContainerStats {
        id: id.to_string(),
        mem_used: now.mem_used,
        mem_limit: now.mem_limit,
        pids: now.pids,
        ..ContainerStats::default()
    };
    let now = &now.counters;
    if let Some(p) = prev {
        let secs = now.at.duration_since(p.at).as_secs_f64();
        if secs > 0.0 {
            let per_s = |new: u64, old: u64| (new.saturating_sub(old) as f64 / secs) as u64;
            s.cpu_pct = (now.cpu_ns.saturating_sub(p.cpu_ns) as f64 / (secs * 1e9) * 100.0) as f32;
            s.net_rx_bps = per_s(now.net_rx, p.net_rx);
            s.net_tx_bps = per_s(now.net_tx, p.net_tx);
            s.blk_read_bps = per_s(now.blk_read, p.blk_read);
            s.blk_write_bps = per_s(now.blk_write, p.blk_write);
        }
    }
    s
}

/// Sockets to probe: the configured one alone, or the usual places.
pub fn engine_sockets(configured: Option<&Path>, runtime_dir: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = configured {
        return vec![p.to_path_buf()];
    }
    let mut v: Vec<PathBuf> = super::DEFAULT_ENGINE_SOCKETS
        .iter()
        .map(PathBuf::from)
        .collect();
    if let Some(dir) = runtime_dir {
        v.push(dir.join("podman/podman.sock"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats};

    #[test]
    fn container_refs_are_engine_names() {
        for ok in ["web", "web-1", "a.b_c", "3f2a9c"] {
            assert!(valid_container_ref(ok), "{ok}");
        }
        for bad in ["", "..", ".x", "a/b", "a?all=1", "a%2e", "-f", "a b", "é"] {
            assert!(!valid_container_ref(bad), "{bad}");
        }
    }

    #[test]
    fn rates_come_from_the_previous_counters() {
        let t0 = Instant::now();
        let r = ContainerStatsResponse {
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(3_000_000_000),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(10_000),
                limit: Some(1 << 30),
                stats: Some([("inactive_file".to_string(), 4_000)].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let prev = Counters {
            at: t0,
            cpu_ns: 1_000_000_000,
            net_rx: 0,
            net_tx: 0,
            blk_read: 0,
            blk_write: 0,
        };
        let mut now = docker_sample(&r, t0 + Duration::from_secs(2));
        now.counters.net_rx = 2_000;
        let s = rates("c", &now, Some(&prev));
        assert!((s.cpu_pct - 100.0).abs() < 0.01, "{}", s.cpu_pct);
        assert_eq!(s.mem_used, 6_000);
        assert_eq!(s.mem_limit, 1 << 30);
        assert_eq!(s.net_rx_bps, 1_000);
        let first = rates("c", &now, None);
        assert_eq!(first.cpu_pct, 0.0);
    }

    #[cfg(unix)]
    #[test]
    fn libpod_counters_give_the_same_rates() {
        let t0 = Instant::now();
        let prev = libpod_sample(
            &PodStats {
                container_id: "c".into(),
                cpu_nano: 1_000_000_000,
                mem_usage: 5_000,
                mem_limit: 1 << 30,
                net_input: 0,
                net_output: 100,
                block_input: 0,
                block_output: 0,
                pids: 2,
            },
            t0,
        );
        let now = libpod_sample(
            &PodStats {
                container_id: "c".into(),
                cpu_nano: 2_000_000_000,
                mem_usage: 6_000,
                mem_limit: 1 << 30,
                net_input: 4_000,
                net_output: 2_100,
                block_input: 8_000,
                block_output: 10_000,
                pids: 3,
            },
            t0 + Duration::from_secs(2),
        );
        let s = rates("c", &now, Some(&prev.counters));
        assert!((s.cpu_pct - 50.0).abs() < 0.01, "{}", s.cpu_pct);
        assert_eq!(
            (s.mem_used, s.mem_limit, s.pids),
            (6_000, 1 << 30, 3),
            "gauges as read"
        );
        assert_eq!((s.net_rx_bps, s.net_tx_bps), (2_000, 1_000));
        assert_eq!((s.blk_read_bps, s.blk_write_bps), (4_000, 5_000));
    }

    #[test]
    fn sockets_probe_the_usual_places_unless_configured() {
        let v = engine_sockets(None, Some(Path::new("/run/user/1000")));
        assert_eq!(v[0], Path::new("/var/run/docker.sock"));
        assert_eq!(v[1], Path::new("/run/podman/podman.sock"));
        assert_eq!(v[2], Path::new("/run/user/1000/podman/podman.sock"));
        assert_eq!(
            engine_sockets(Some(Path::new("/srv/e.sock")), None),
            [PathBuf::from("/srv/e.sock")]
        );
    }
}
