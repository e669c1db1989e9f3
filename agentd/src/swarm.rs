//! `agentd swarm`: N agents in one process for load tests. Each enrols with its own key and
//! certificate, keeps its own QUIC connection (sockets are shared, a few hundred connections each, to
//! stay within file-descriptor limits), and sends real metrics messages over the real protocol.

pub mod overrides;
mod workloads;

use crate::link::{Link, LinkState};
use crate::sampler::SyntheticSource;
use crate::{AgentError, AgentPaths, local_hello};
use flotilla_certs::clock::now_ms;
use flotilla_certs::{IDENTITY_STEM, Identity};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Enrolments in flight: each is a handshake plus a signature on the hub; more only queue there.
const ENROL_CONCURRENCY: usize = 32;
/// Connections per UDP socket.
const AGENTS_PER_SOCKET: usize = 256;

/// What to run.
#[derive(Clone, Debug)]
pub struct SwarmOptions {
    /// Join token with at least `count` uses (only needed for agents not yet enrolled).
    pub token: Option<String>,
    /// Number of agents.
    pub count: usize,
    /// Directory holding one sub-directory per agent.
    pub dir: PathBuf,
    /// Name prefix: agents are `<prefix>-00000` and up.
    pub prefix: String,
    /// Metrics interval, milliseconds (0: as the hub says).
    pub metrics_interval_ms: u32,
    /// Exec policy of every agent (`any` for fan-out benchmarks: real processes run).
    pub exec: crate::ExecMode,
    /// Synthetic containers each agent reports (0: none, and no workload deltas at all).
    pub containers: usize,
    /// Synthetic systemd units each agent reports.
    pub units: usize,
    /// A JSON file of values forced on agents' samples, re-read at every sample
    /// ([`overrides`]); `None`: random values only.
    pub overrides: Option<PathBuf>,
}

fn agent_dir(opts: &SwarmOptions, i: usize) -> (String, PathBuf) {
    let name = format!("{}-{i:05}", opts.prefix);
    let dir = opts.dir.join(&name);
    (name, dir)
}

/// Enrols the agents that are not enrolled yet.
async fn enrol_all(opts: &SwarmOptions) -> Result<(), AgentError> {
    let missing: Vec<usize> = (0..opts.count)
        .filter(|i| !Identity::exists(&agent_dir(opts, *i).1, IDENTITY_STEM))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let Some(token) = opts.token.clone() else {
        return Err(AgentError::Config(format!(
            "{} agents are not enrolled yet: pass --token",
            missing.len()
        )));
    };
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(ENROL_CONCURRENCY));
    let mut set = JoinSet::new();
    for i in missing.iter().copied() {
        let (name, dir) = agent_dir(opts, i);
        let (sem, token) = (sem.clone(), token.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            crate::enroll(
                &AgentPaths { data_dir: dir },
                &token,
                Some(name.clone()),
                vec![("swarm".into(), "true".into())],
            )
            .await
            .map_err(|e| AgentError::Config(format!("enrol {name}: {e}")))
        });
    }
    let mut done = 0usize;
    while let Some(r) = set.join_next().await {
        r.map_err(|e| AgentError::Config(format!("enrol task: {e}")))??;
        done += 1;
        if done.is_multiple_of(1000) {
            eprintln!("enrolled {done}/{}", missing.len());
        }
    }
    eprintln!(
        "enrolled {} agents in {:.1} s",
        missing.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs the swarm until cancelled. Prints one JSON line on stdout each time every agent is connected.
pub async fn run(opts: SwarmOptions, cancel: CancellationToken) -> Result<(), AgentError> {
    crate::create_private_dir(&opts.dir)?;
    enrol_all(&opts).await?;
    let first = Identity::load(&agent_dir(&opts, 0).1, IDENTITY_STEM)?;
    let hubs = Identity::load_hubs(&agent_dir(&opts, 0).1)?;
    drop(first);
    let sockets = opts.count.div_ceil(AGENTS_PER_SOCKET).max(1);
    let mut endpoints = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        endpoints.push(
            flotilla_certs::dial::client_endpoint(flotilla_certs::dial::wants_ipv6(&hubs))
                .map_err(|e| AgentError::Config(e.to_string()))?,
        );
    }
    let mut states: Vec<watch::Receiver<LinkState>> = Vec::with_capacity(opts.count);
    let mut set = JoinSet::new();
    let started = Instant::now();
    for i in 0..opts.count {
        let (name, dir) = agent_dir(&opts, i);
        let agent_name = name.clone();
        let identity = Identity::load(&dir, IDENTITY_STEM)?;
        let client = flotilla_certs::dial::identity_config(&identity)?;
        let bulk_client = flotilla_certs::dial::identity_bulk_config(&identity)?;
        let (state_tx, state_rx) = watch::channel(LinkState::Disconnected("starting".into()));
        states.push(state_rx);
        let mut hello = local_hello();
        hello.hostname = name;
        let link = Link {
            endpoint: endpoints[i % sockets].clone(),
            client,
            bulk_client,
            hubs: hubs.clone(),
            hello,
            metrics_interval_ms: opts.metrics_interval_ms,
            state: state_tx,
            exec: Arc::new(crate::exec::ExecContext::new(
                crate::exec::ExecPolicy::from_config(&crate::AgentConfig {
                    exec: opts.exec,
                    // Simulated agents share one machine: none of them reports its workloads.
                    containers: crate::config::Access::Off,
                    services: crate::config::Access::Off,
                    ..crate::AgentConfig::default()
                })?,
            )),
            files: None,
        };
        let source = overrides::OverriddenSource::new(
            SyntheticSource::new(i as u64),
            opts.overrides.clone().unwrap_or_default(),
            agent_name.clone(),
        );
        set.spawn(crate::run_link(
            link,
            source,
            opts.metrics_interval_ms,
            watch::channel(0).0,
            (opts.containers + opts.units > 0).then(|| {
                let feed =
                    workloads::SyntheticWorkloads::new(i as u64, opts.containers, opts.units);
                Box::new(match opts.overrides.clone() {
                    Some(file) => feed.forced_by(file, agent_name),
                    None => feed,
                }) as Box<dyn crate::link::WorkloadFeed>
            }),
            None,
            cancel.clone(),
        ));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut all_up = false;
    let mut down_since = Some(started);
    let mut last_report = 0usize;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let connected = states
            .iter()
            .filter(|s| matches!(*s.borrow(), LinkState::Connected { .. }))
            .count();
        if connected == opts.count && !all_up {
            all_up = true;
            let took = down_since
                .take()
                .map(|d| d.elapsed().as_secs_f64())
                .unwrap_or(0.0);
            println!(
                "{}",
                serde_json::json!({ "event": "all_connected", "count": connected, "at_ms": now_ms(), "since_first_loss_s": took })
            );
            eprintln!("all {connected} agents connected ({took:.2} s after the first was lost)");
        } else if connected < opts.count && all_up {
            all_up = false;
            down_since = Some(Instant::now());
            println!(
                "{}",
                serde_json::json!({ "event": "lost", "connected": connected, "at_ms": now_ms() })
            );
        }
        if connected / 500 != last_report / 500
            || (connected == opts.count && last_report != connected)
        {
            // With the time since the first loss, a reconnect storm's admission curve.
            let since = down_since
                .map(|d| format!(" ({:.2} s after the first loss)", d.elapsed().as_secs_f64()));
            eprintln!(
                "connected {connected}/{}{}",
                opts.count,
                since.unwrap_or_default()
            );
            last_report = connected;
        }
    }
    while set.join_next().await.is_some() {}
    Ok(())
}
