//! Host depth: per block device I/O, interface errors and drops, GPUs (NVIDIA, AMD), disk health
//! (SMART), custom series and the top processes with command lines and users (docs/host.md).
//!
//! The fast collectors run inside the sampler's blocking step ([`HostSampler`]), so each
//! [`HostDetail`] matches the sample it follows. Slow or external ones have their own tasks: SMART
//! ([`smart`], hourly and on demand through [`HostHandle`]) and custom sources ([`custom`], every
//! `custom_interval_s`); the sampler reads their latest result. The link sends what
//! [`HostOutbox`] holds after each sample and folds details into minutes during an outage.

pub mod amd;
pub mod config;
pub mod custom;
pub mod diskstats;
pub mod netdev;
pub mod nvidia;
pub mod processes;
pub mod proctable;
pub mod smart;

use crate::metrics::Collector;
use crate::sampler::{BACKFILL_MINUTES, SampleSource};
use config::HostConfig;
use flotilla_certs::clock::now_ms;
use flotilla_wire::aggregate::{MINUTE_MS, bucket_start};
use flotilla_wire::host::{CollectorState, CollectorStatus, HostDetail, HostMinute, HostReport};
use flotilla_wire::msg::MetricsSample;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Most output kept from `smartctl` or a custom script: `smartctl -a --json` prints about 30 KB;
/// a script printing more than 1 MiB is broken, and its output is cut rather than held.
pub const CAPTURE_LIMIT: usize = 1 << 20;
/// On-demand SMART requests queued: they are coalesced into the next run, so a few suffice.
const REFRESH_QUEUE: usize = 8;

/// What a child process printed.
#[derive(Debug)]
pub struct Captured {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output, at most the limit.
    pub stdout: Vec<u8>,
    /// Standard error, at most the limit.
    pub stderr: Vec<u8>,
}

/// Why a child process gave no output.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// It could not start.
    #[error("could not start: {0}")]
    Spawn(std::io::Error),
    /// It ran past its time and was killed.
    #[error("killed after {0} s")]
    Timeout(u64),
    /// Reading its output or waiting for it failed.
    #[error("{0}")]
    Io(std::io::Error),
}

/// Runs `cmd` without stdin, reading at most `limit` bytes of each output, killed after `timeout`.
pub async fn capture(
    mut cmd: tokio::process::Command,
    timeout: Duration,
    limit: usize,
) -> Result<Captured, CaptureError> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(CaptureError::Spawn)?;
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(CaptureError::Io(std::io::Error::other("no pipes")));
    };
    let work = async {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        // Dropped once read: a child still writing past the limit gets EPIPE instead of blocking.
        let (mut out, mut err) = (out.take(limit as u64), err.take(limit as u64));
        let (a, b) = tokio::join!(out.read_to_end(&mut o), err.read_to_end(&mut e));
        drop((out, err));
        a.and(b).map_err(CaptureError::Io)?;
        let status = child.wait().await.map_err(CaptureError::Io)?;
        Ok(Captured {
            status,
            stdout: o,
            stderr: e,
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(CaptureError::Timeout(timeout.as_secs())))
}

/// Where the fast collectors read; the real machine's paths unless a test points elsewhere.
#[derive(Clone, Debug)]
pub struct HostPaths {
    /// `/proc`.
    pub proc: PathBuf,
    /// `/sys/class/drm`.
    pub drm: PathBuf,
    /// `/sys/block`.
    pub sys_block: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            proc: "/proc".into(),
            drm: "/sys/class/drm".into(),
            sys_block: "/sys/block".into(),
        }
    }
}

/// The collectors that run with every sample.
pub struct FastCollectors {
    paths: HostPaths,
    disks: diskstats::DiskIoTracker,
    nets: netdev::NetErrorTracker,
    procs: processes::ProcessDetail,
    nvidia: Option<nvidia::NvidiaGpus>,
    amd: Option<amd::AmdGpus>,
    custom: custom::SharedCustom,
    last: Option<Instant>,
}

impl FastCollectors {
    /// Loads NVML and finds AMD cards once (when `gpus` is on).
    pub fn new(config: &HostConfig, paths: HostPaths, custom: custom::SharedCustom) -> Self {
        Self {
            procs: processes::ProcessDetail::new(paths.proc.clone(), "/etc/passwd".into()),
            nvidia: config.gpus.then(nvidia::NvidiaGpus::load),
            amd: config.gpus.then(|| amd::AmdGpus::find(&paths.drm)),
            paths,
            disks: diskstats::DiskIoTracker::default(),
            nets: netdev::NetErrorTracker::default(),
            custom,
            last: None,
        }
    }

    /// The detail going with `sample`. Blocking (reads /proc and sysfs, calls NVML).
    pub fn collect(&mut self, sample: &MetricsSample) -> HostDetail {
        let now = Instant::now();
        let secs = self
            .last
            .map_or(0.0, |l| now.duration_since(l).as_secs_f64());
        self.last = Some(now);
        let mut collectors = Vec::new();
        let mut status = |name: &str, state| {
            collectors.push(CollectorStatus {
                name: name.into(),
                state,
            })
        };
        let block_io = match std::fs::read_to_string(self.paths.proc.join("diskstats")) {
            Ok(text) => {
                status("diskstats", CollectorState::Running);
                self.disks.update(diskstats::parse(&text), secs)
            }
            Err(e) => {
                status(
                    "diskstats",
                    CollectorState::Absent(format!("{}/diskstats: {e}", self.paths.proc.display())),
                );
                Vec::new()
            }
        };
        let net_errors = match std::fs::read_to_string(self.paths.proc.join("net/dev")) {
            Ok(text) => {
                status("netdev", CollectorState::Running);
                self.nets.update(netdev::parse(&text))
            }
            Err(e) => {
                status(
                    "netdev",
                    CollectorState::Absent(format!("{}/net/dev: {e}", self.paths.proc.display())),
                );
                Vec::new()
            }
        };
        let top_cpu = self.procs.enrich(&sample.top_cpu);
        let top_mem = self.procs.enrich(&sample.top_mem);
        status("processes", CollectorState::Running);
        let off = || CollectorState::Absent("off in agent.toml (host.gpus = false)".into());
        let mut gpus = Vec::new();
        match self.nvidia.as_mut() {
            Some(n) => {
                gpus.extend(n.read());
                status("nvidia", n.state());
            }
            None => status("nvidia", off()),
        }
        match self.amd.as_ref() {
            Some(a) => {
                gpus.extend(a.read());
                status("amd", a.state());
            }
            None => status("amd", off()),
        }
        let custom = self
            .custom
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        collectors.extend(custom.statuses);
        HostDetail {
            at_ms: sample.at_ms,
            block_io,
            net_errors,
            gpus,
            custom: custom.values,
            top_cpu,
            top_mem,
            collectors,
        }
    }
}

/// The machine's sampler with host depth: each sample's detail is published before the sample
/// leaves, so the link finds it when the sample arrives.
pub struct HostSampler {
    collector: Collector,
    fast: FastCollectors,
    detail: watch::Sender<Option<HostDetail>>,
}

impl SampleSource for HostSampler {
    fn sample(&mut self) -> MetricsSample {
        let sample = self.collector.sample();
        let detail = self.fast.collect(&sample);
        self.detail.send_replace(Some(detail));
        sample
    }
    fn blocking(&self) -> bool {
        true
    }
}

/// Asks the SMART task for a run now.
#[derive(Clone, Debug)]
pub struct HostHandle {
    refresh: Option<mpsc::Sender<oneshot::Sender<HostReport>>>,
    report: watch::Receiver<Option<HostReport>>,
}

impl HostHandle {
    /// A fresh report: runs the slow collectors now, or, with SMART off, says so at once.
    pub async fn refresh(&self) -> HostReport {
        let Some(tx) = &self.refresh else {
            return self.report.borrow().clone().unwrap_or_default();
        };
        let (reply, answer) = oneshot::channel();
        if tx.send(reply).await.is_err() {
            return HostReport {
                at_ms: now_ms(),
                disks: Vec::new(),
                collectors: vec![CollectorStatus {
                    name: "smart".into(),
                    state: CollectorState::Failed("the agent is stopping".into()),
                }],
            };
        }
        answer.await.unwrap_or_default()
    }
}

/// Serves a [`HubStreamOpen::HostReport`](flotilla_wire::msg::HubStreamOpen::HostReport) stream:
/// one fresh report, or a reset with `Forbidden` on an agent without host collectors (swarm).
pub async fn serve_report(handle: Option<HostHandle>, mut send: quinn::SendStream) {
    let Some(handle) = handle else {
        let _ = send.reset(flotilla_wire::ErrorCode::Forbidden.as_u32().into());
        return;
    };
    let report = handle.refresh().await;
    if flotilla_wire::io::write_frame(&mut send, &report, flotilla_wire::limits::MAX_EXEC_FRAME)
        .await
        .is_ok()
    {
        let _ = send.finish();
    }
}

/// Host detail minutes kept during an outage.
#[derive(Debug, Default)]
pub struct HostBackfill {
    current: Vec<HostDetail>,
    current_start: u64,
    minutes: VecDeque<HostMinute>,
}

impl HostBackfill {
    /// Keeps one detail.
    pub fn push(&mut self, detail: HostDetail) {
        let start = bucket_start(detail.at_ms, MINUTE_MS);
        if !self.current.is_empty() && start != self.current_start {
            self.close_minute();
        }
        self.current_start = start;
        self.current.push(detail);
    }

    fn close_minute(&mut self) {
        if let Some(m) = HostMinute::fold(self.current_start, &self.current) {
            if self.minutes.len() == BACKFILL_MINUTES {
                self.minutes.pop_front();
            }
            self.minutes.push_back(m);
        }
        self.current.clear();
    }

    /// Every minute kept, the one in progress included, oldest first; empties the buffer.
    pub fn drain(&mut self) -> Vec<HostMinute> {
        self.close_minute();
        self.minutes.drain(..).collect()
    }

    /// Puts back minutes that could not be sent.
    pub fn restore(&mut self, minutes: Vec<HostMinute>) {
        for m in minutes.into_iter().rev() {
            if self.minutes.len() < BACKFILL_MINUTES {
                self.minutes.push_front(m);
            }
        }
    }
}

/// The link's side: what to send after each sample, and the outage buffer.
#[derive(Debug)]
pub struct HostOutbox {
    /// Latest detail from the sampler.
    pub detail: watch::Receiver<Option<HostDetail>>,
    /// Latest slow report.
    pub report: watch::Receiver<Option<HostReport>>,
    /// Minutes folded during an outage.
    pub backfill: HostBackfill,
}

impl HostOutbox {
    /// Folds the latest detail in for back-fill (the link calls this per sample it keeps).
    pub fn keep(&mut self) {
        if let Some(d) = self.detail.borrow_and_update().clone() {
            self.backfill.push(d);
        }
    }

    /// The latest detail if it was not sent yet.
    pub fn next_detail(&mut self) -> Option<HostDetail> {
        if self.detail.has_changed().unwrap_or(false) {
            self.detail.borrow_and_update().clone()
        } else {
            None
        }
    }

    /// The latest report if it was not sent yet (`fresh_stream`: whatever was sent before).
    pub fn next_report(&mut self, fresh_stream: bool) -> Option<HostReport> {
        if fresh_stream || self.report.has_changed().unwrap_or(false) {
            self.report.borrow_and_update().clone()
        } else {
            None
        }
    }
}

/// Everything [`start`] sets going.
pub struct HostParts {
    /// The sampler to run instead of a bare [`Collector`].
    pub sampler: HostSampler,
    /// For the link.
    pub outbox: HostOutbox,
    /// For hub-opened report streams.
    pub handle: HostHandle,
    /// The SMART and custom tasks; they end on `cancel`.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts the host collectors under `config`.
pub fn start(config: &HostConfig, paths: HostPaths, cancel: CancellationToken) -> HostParts {
    let mut tasks = Vec::new();
    let no_sources = config.prometheus.is_empty() && config.scripts.is_empty();
    let shared = std::sync::Arc::new(std::sync::Mutex::new(if no_sources {
        custom::unconfigured()
    } else {
        custom::CustomLatest::default()
    }));
    if !no_sources {
        tasks.push(tokio::spawn(custom::run(
            config.clone(),
            shared.clone(),
            cancel.clone(),
        )));
    }
    let (report_tx, report_rx) = watch::channel(None);
    let refresh = if config.smart {
        let (tx, rx) = mpsc::channel(REFRESH_QUEUE);
        tasks.push(tokio::spawn(run_smart(
            config.clone(),
            paths.sys_block.clone(),
            report_tx,
            rx,
            cancel,
        )));
        Some(tx)
    } else {
        report_tx.send_replace(Some(HostReport {
            at_ms: now_ms(),
            disks: Vec::new(),
            collectors: vec![CollectorStatus {
                name: "smart".into(),
                state: CollectorState::Absent("off in agent.toml (host.smart = false)".into()),
            }],
        }));
        None
    };
    let (detail_tx, detail_rx) = watch::channel(None);
    HostParts {
        sampler: HostSampler {
            collector: Collector::new(),
            fast: FastCollectors::new(config, paths, shared),
            detail: detail_tx,
        },
        outbox: HostOutbox {
            detail: detail_rx,
            report: report_rx.clone(),
            backfill: HostBackfill::default(),
        },
        handle: HostHandle {
            refresh,
            report: report_rx,
        },
        tasks,
    }
}

/// Runs SMART at start, every `smart_interval_s` and on request; requests that arrive during a
/// run are answered by the next one.
async fn run_smart(
    config: HostConfig,
    sys_block: PathBuf,
    report: watch::Sender<Option<HostReport>>,
    mut requests: mpsc::Receiver<oneshot::Sender<HostReport>>,
    cancel: CancellationToken,
) {
    let period = Duration::from_secs(config.smart_interval_s);
    let mut waiting: Vec<oneshot::Sender<HostReport>> = Vec::new();
    loop {
        let run = smart::examine(&config.smartctl, &sys_block);
        let (disks, status) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = run => r,
        };
        if let CollectorState::Failed(e) = &status.state {
            tracing::warn!(error = %e, "disk health check failed");
        }
        let failing: Vec<&str> = disks
            .iter()
            .filter(|d| d.health == flotilla_wire::host::SmartHealth::Failed)
            .map(|d| d.device.as_str())
            .collect();
        if !failing.is_empty() {
            tracing::warn!(disks = ?failing, "SMART reports failing disks");
        }
        let fresh = HostReport {
            at_ms: now_ms(),
            disks,
            collectors: vec![status],
        };
        report.send_replace(Some(fresh.clone()));
        for w in waiting.drain(..) {
            let _ = w.send(fresh.clone());
        }
        let sleep = tokio::time::sleep(period);
        tokio::pin!(sleep);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = &mut sleep => {}
            r = requests.recv() => match r {
                Some(w) => {
                    waiting.push(w);
                    while let Ok(w) = requests.try_recv() {
                        waiting.push(w);
                    }
                }
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> HostDetail {
        HostDetail {
            at_ms: ms,
            ..Default::default()
        }
    }

    #[test]
    fn backfill_folds_minutes_and_stays_bounded() {
        let mut b = HostBackfill::default();
        for minute in 0..(BACKFILL_MINUTES as u64 + 5) {
            for s in 0..12 {
                b.push(at(minute * MINUTE_MS + s * 5_000));
            }
        }
        let minutes = b.drain();
        assert_eq!(minutes.len(), BACKFILL_MINUTES);
        assert!(minutes.windows(2).all(|w| w[0].start_ms < w[1].start_ms));
        assert_eq!(minutes.last().map(|m| m.samples), Some(12));
        assert!(b.drain().is_empty());
        b.restore(minutes[..3].to_vec());
        assert_eq!(b.drain().len(), 3, "restored minutes are sent next time");
    }

    #[tokio::test]
    async fn capture_is_bounded_in_size_and_time() {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.args(["-c", "head -c 5000 /dev/zero; echo oops >&2; exit 3"]);
        let out = capture(cmd, Duration::from_secs(30), 1000)
            .await
            .expect("runs");
        assert_eq!(out.stdout.len(), 1000, "cut at the limit");
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(out.status.code(), Some(3));
        let mut cmd = tokio::process::Command::new("/bin/sleep");
        cmd.arg("30");
        let err = capture(cmd, Duration::from_millis(200), 1000)
            .await
            .expect_err("timeout");
        assert!(matches!(err, CaptureError::Timeout(_)), "{err}");
    }
}
