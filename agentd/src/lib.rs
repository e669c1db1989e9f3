//! agentd: the Flotilla agent. Enrols with a join token (its key never leaves the machine), then keeps
//! a QUIC link to the hub with mutual TLS, streams metrics over it, runs the commands the hub sends
//! within its own exec policy, and shares one folder with the fleet: [`watch`] keeps the hub's copy
//! of its tree current and [`transfer`] serves reads and writes.
//!
//! Main entry points: [`enroll`] and [`start`].

pub mod cli;
pub mod config;
mod error;
pub mod exec;
pub mod host;
pub mod link;
pub mod metrics;
mod platform;
pub mod sampler;
pub mod service;
pub mod settings;
pub mod shell;
pub mod status;
pub mod swarm;
pub mod transfer;
mod watch;
pub mod workloads;

pub use config::{AgentConfig, AgentPaths, ExecMode};
pub use error::AgentError;
pub use flotilla_certs::create_private_dir;
pub use link::LinkState;

use flotilla_certs::{IDENTITY_STEM, Identity};
use flotilla_wire::PROTOCOL_VERSION;
use flotilla_wire::msg::{Hello, Labels};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What this machine says about itself in hello.
pub fn local_hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        software_version: env!("CARGO_PKG_VERSION").into(),
        hostname: sysinfo::System::host_name().unwrap_or_else(|_| "unknown".into()),
        os: sysinfo::System::long_os_version().unwrap_or_else(|_| std::env::consts::OS.into()),
    }
}

/// Enrols this machine: see [`flotilla_certs::enrol::enrol`].
pub async fn enroll(
    paths: &AgentPaths,
    token: &str,
    name: Option<String>,
    labels: Labels,
) -> Result<flotilla_certs::enrol::Enrolment, flotilla_certs::enrol::EnrolError> {
    create_private_dir(&paths.data_dir).map_err(flotilla_certs::enrol::EnrolError::Cert)?;
    let hello = local_hello();
    let name = name.unwrap_or_else(|| hello.hostname.clone());
    flotilla_certs::enrol::enrol(token, &paths.data_dir, name, labels, hello).await
}

/// A running agent.
pub struct RunningAgent {
    /// Link state changes.
    pub state: tokio::sync::watch::Receiver<LinkState>,
    /// Samples buffered for back-fill so far (grows while the hub is unreachable).
    pub buffered: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningAgent {
    /// Waits for the agent to stop (after its cancel token fires).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Loads the identity and starts the link in the background.
pub fn start(
    paths: &AgentPaths,
    config: AgentConfig,
    cancel: CancellationToken,
) -> Result<RunningAgent, AgentError> {
    config.validate()?;
    if !Identity::exists(&paths.data_dir, IDENTITY_STEM) {
        return Err(AgentError::NotEnrolled(
            paths.data_dir.display().to_string(),
        ));
    }
    let identity = Identity::load(&paths.data_dir, IDENTITY_STEM)?;
    let hubs = Identity::load_hubs(&paths.data_dir)?;
    let client = flotilla_certs::dial::identity_config(&identity)?;
    let bulk_client = flotilla_certs::dial::identity_bulk_config(&identity)?;
    let endpoint = flotilla_certs::dial::client_endpoint(flotilla_certs::dial::wants_ipv6(&hubs))
        .map_err(|e| AgentError::Config(e.to_string()))?;
    let files = Arc::new(transfer::SharedFolder::open(
        &config.shared_dir(&paths.data_dir),
        config.read_only,
    )?);
    let (state_tx, state_rx) =
        tokio::sync::watch::channel(LinkState::Disconnected("starting".into()));
    let status = tokio::spawn(status::run(
        paths.data_dir.join(status::STATUS_FILE),
        hubs.clone(),
        state_rx.clone(),
    ));
    let host = host::start(&config.host, host::HostPaths::default(), cancel.clone());
    let mut exec = exec::ExecContext::new(exec::ExecPolicy::from_config(&config)?);
    exec.host = Some(host.handle);
    let link = link::Link {
        endpoint,
        client,
        bulk_client,
        hubs,
        hello: local_hello(),
        metrics_interval_ms: config.metrics_interval_ms,
        state: state_tx,
        exec: Arc::new(exec),
        files: Some(files),
    };
    let (buffered_tx, buffered_rx) = tokio::sync::watch::channel(0);
    let run = run_link(
        link,
        host.sampler,
        config.metrics_interval_ms,
        buffered_tx,
        None,
        Some(host.outbox),
        cancel,
    );
    let host_tasks = host.tasks;
    let task = tokio::spawn(async move {
        run.await;
        // The link ended on the cancel token, which stops the host tasks too.
        for t in host_tasks {
            let _ = t.await;
        }
        // The link is gone with its state sender: the status writer records "stopped" and ends.
        let _ = status.await;
    });
    Ok(RunningAgent {
        state: state_rx,
        buffered: buffered_rx,
        task,
    })
}

/// Default sampling interval before the hub says otherwise.
const DEFAULT_INTERVAL_MS: u32 = 5000;
/// Samples queued between the sampler and the link: the link drains them continuously, so a few
/// suffice.
const SAMPLE_QUEUE: usize = 16;

/// Runs a sampler over `source` and a link, until cancelled. `workloads` stands in for the
/// machine's own containers and units (the swarm's synthetic ones); `None` reports the machine's,
/// as the link's workload settings allow. `host` carries the host depth the source's sampler
/// publishes (`None`: samples only).
pub async fn run_link<S: sampler::SampleSource>(
    link: link::Link,
    source: S,
    interval_override_ms: u32,
    buffered: tokio::sync::watch::Sender<u64>,
    workloads: Option<Box<dyn link::WorkloadFeed>>,
    host: Option<host::HostOutbox>,
    cancel: CancellationToken,
) {
    let start = if interval_override_ms > 0 {
        interval_override_ms
    } else {
        DEFAULT_INTERVAL_MS
    };
    let (interval_tx, interval_rx) = tokio::sync::watch::channel(start);
    let (sample_tx, sample_rx) = tokio::sync::mpsc::channel(SAMPLE_QUEUE);
    let poller_interval = interval_rx.clone();
    let sampler = tokio::spawn(sampler::run(source, sample_tx, interval_rx, cancel.clone()));
    // The machine's own containers and units, unless a synthetic feed stands in for them. With
    // both off the poller publishes one inventory naming both absent and waits: each connection
    // then tells its hub "none", so the hub drops an inventory an earlier run reported.
    let mut poller = None;
    let own = link.exec.workloads.clone();
    let workloads = match workloads {
        Some(feed) => Some(feed),
        None => {
            let (inventory_tx, inventory_rx) = tokio::sync::watch::channel(None);
            poller = Some(tokio::spawn(workloads::run(
                own.clone(),
                poller_interval,
                inventory_tx,
                cancel.clone(),
            )));
            Some(Box::new(workloads::DeltaFeed::new(
                inventory_rx,
                own.settings.policy(),
            )) as Box<dyn link::WorkloadFeed>)
        }
    };
    let outbox = link::Outbox {
        samples: sample_rx,
        interval: interval_tx,
        backfill: sampler::BackfillBuffer::default(),
        buffered,
        workloads,
        host,
    };
    link.run(outbox, cancel).await;
    let _ = sampler.await;
    if let Some(poller) = poller {
        let _ = poller.await;
    }
}
