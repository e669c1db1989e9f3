//! Per-series host history and per-minute top processes: folds each agent's samples into minutes
//! in memory (one value per mount, interface, block device, sensor, GPU and custom metric, and the
//! processes seen), hands finished minutes to one batching writer ([`crate::history::batch_writer`])
//! that stores them in `series_1m` / `top_1m`, rolls up ten-minute buckets and prunes with the host
//! history's retention. Answers `Query::HostSeries` and `Query::HostTop` (docs/host.md).

use crate::history::Retention;
use crate::store::series::{SeriesMinute, Tier};
use crate::store::{self, Store, now_ms};
use crate::{HubCtx, HubError};
use deploy::sync::lock;
use flotilla_wire::history::{
    MAX_SERIES_NAME, Metric, SeriesKind, SeriesPoint, SeriesPoints, SeriesSelector, TopMinute,
};
use flotilla_wire::host::{GpuVendor, HostDetail, HostMinute, TOP_PROCESSES, TopProcess};
use flotilla_wire::msg::MetricsSample;
use flotilla_wire::{ErrorCode, IdentityId, Role};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Batches waiting for the writer. A batch is one agent's finished minute (its series and its top
/// processes); at 20,000 agents about 333 close per second, and this holds a minute of them. A
/// full queue makes metrics streams wait (back-pressure to the agents) instead of growing memory.
const WRITE_QUEUE: usize = 20_000;
/// Series one agent may have in one minute. A host with many mounts, interfaces, disks and custom
/// metrics has well under a hundred; the cap bounds the hub's memory and disk per agent against an
/// agent that reports thousands (the agent caps custom series itself; this is the hub's own bound).
pub const MAX_SERIES_PER_AGENT: usize = 512;
/// Processes followed per agent and minute: a sample names at most ten (top five by CPU and by
/// memory), twelve samples a minute at the default interval name at most 120 different ones; a
/// one-second interval could name more, and the cap keeps the fold bounded.
const MAX_PROCS_PER_MINUTE: usize = 256;
/// Most selectors one series query may name: a screenful of series, far more than a chart shows.
pub const MAX_SELECTORS: usize = 64;
/// Longest span of a top query: the longest minute retention a hub is likely to keep, plus a day.
const MAX_TOP_SPAN_MS: u64 = 31 * 86_400_000;
/// Up to this far back, series are read at one-minute resolution (360 points); beyond it, at ten
/// minutes: the same split as the host totals' history.
const MINUTE_TIER_S: u64 = 6 * 3600;
/// Milliseconds per minute: the resolution of the finest tier and of top processes.
const MINUTE_MS: u64 = 60_000;

/// What the writer stores.
#[derive(Debug)]
enum Finished {
    Series(SeriesMinute),
    Top(IdentityId, TopMinute),
}

/// One sample's worth of host detail, in the form the fold takes: values by (metric, name) and the
/// processes the sample named, with their CPU and memory at that moment.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// When, ms since the epoch (the agent's clock).
    pub at_ms: u64,
    /// Series values.
    pub values: Vec<(Metric, String, f64)>,
    /// Processes named by the sample; `None` when it carries no process list.
    pub procs: Option<Vec<TopProcess>>,
    /// Whether it came from a [`HostDetail`] (whose processes carry command lines and users).
    pub from_detail: bool,
}

impl Observation {
    /// Per-mount disk use, per-interface rates, temperatures and the top processes of a sample.
    /// (The sample's processes have no command line or user; detail reports that carry them fill
    /// those in.)
    pub fn from_sample(s: &MetricsSample) -> Self {
        let mut values = Vec::with_capacity(s.disks.len() * 2 + s.nets.len() * 2 + s.temps.len());
        for d in &s.disks {
            values.push((Metric::DiskUsed, d.mount.clone(), d.used as f64));
            if d.total > 0 {
                let pct = d.used as f64 * 100.0 / d.total as f64;
                values.push((Metric::DiskPct, d.mount.clone(), pct));
            }
        }
        for n in &s.nets {
            values.push((Metric::NetRx, n.iface.clone(), n.rx_bps as f64));
            values.push((Metric::NetTx, n.iface.clone(), n.tx_bps as f64));
        }
        for t in &s.temps {
            values.push((Metric::Temp, t.label.clone(), f64::from(t.celsius)));
        }
        let mut procs: Vec<TopProcess> = Vec::new();
        for p in s.top_cpu.iter().chain(&s.top_mem) {
            if procs.iter().all(|q| q.pid != p.pid) {
                procs.push(TopProcess {
                    pid: p.pid,
                    name: p.name.clone(),
                    cmd: String::new(),
                    user: String::new(),
                    cpu_pct: p.cpu_pct,
                    mem: p.rss,
                });
            }
        }
        Self {
            at_ms: s.at_ms,
            values,
            procs: Some(procs),
            from_detail: false,
        }
    }

    /// Per block device I/O, GPU utilisation, memory and temperature, custom series and the top
    /// processes (with command lines and users) of a detail. Interface errors and drops come as
    /// increases since the previous detail; `prev_ms` (that detail's time) turns them into rates,
    /// and without it they are left out.
    pub fn from_detail(d: &HostDetail, prev_ms: Option<u64>) -> Self {
        let mut values = Vec::with_capacity(
            d.block_io.len() * 5 + d.net_errors.len() * 2 + d.gpus.len() * 3 + d.custom.len(),
        );
        for io in &d.block_io {
            let name = &io.device;
            values.push((Metric::IoRead, name.clone(), io.read_bps as f64));
            values.push((Metric::IoWrite, name.clone(), io.write_bps as f64));
            values.push((Metric::IoReadOps, name.clone(), f64::from(io.read_iops)));
            values.push((Metric::IoWriteOps, name.clone(), f64::from(io.write_iops)));
            values.push((Metric::IoBusy, name.clone(), f64::from(io.busy_pct)));
        }
        let secs = prev_ms
            .filter(|p| *p < d.at_ms)
            .map(|p| (d.at_ms - p) as f64 / 1000.0);
        if let Some(secs) = secs {
            for n in &d.net_errors {
                let rx = n.new.rx_errors + n.new.rx_dropped;
                let tx = n.new.tx_errors + n.new.tx_dropped;
                values.push((Metric::NetRxErrors, n.iface.clone(), rx as f64 / secs));
                values.push((Metric::NetTxErrors, n.iface.clone(), tx as f64 / secs));
            }
        }
        for g in &d.gpus {
            let name = gpu_name(g.vendor, g.index);
            if let Some(u) = g.util_pct {
                values.push((Metric::GpuUtil, name.clone(), f64::from(u)));
            }
            if let Some(m) = g.mem_used {
                values.push((Metric::GpuMem, name.clone(), m as f64));
            }
            if let Some(t) = g.temp_c {
                values.push((Metric::Temp, format!("gpu{name}"), f64::from(t)));
            }
        }
        for c in &d.custom {
            values.push((Metric::Custom, custom_name(&c.name, &c.labels), c.value));
        }
        let mut procs: Vec<TopProcess> = Vec::new();
        for p in d.top_cpu.iter().chain(&d.top_mem) {
            if procs.iter().all(|q| q.pid != p.pid) {
                procs.push(p.clone());
            }
        }
        Self {
            at_ms: d.at_ms,
            values,
            procs: Some(procs),
            from_detail: true,
        }
    }
}

/// The series name of a GPU: its index for NVIDIA (`0`), `amd` and the index for AMD (`amd0`).
pub fn gpu_name(vendor: GpuVendor, index: u32) -> String {
    match vendor {
        GpuVendor::Nvidia => index.to_string(),
        GpuVendor::Amd => format!("amd{index}"),
    }
}

/// The series name of a custom value: its name, with its labels as Prometheus writes them.
pub fn custom_name(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Whether `selector` names the series `(metric, name)`: the kind matches and the name is the
/// same, or for a custom metric, the name with labels.
fn names(selector: &SeriesSelector, metric: Metric, name: &str) -> bool {
    selector.kind == metric.kind()
        && (selector.name == name
            || (selector.kind == SeriesKind::Custom
                && name
                    .strip_prefix(selector.name.as_str())
                    .is_some_and(|rest| rest.starts_with('{'))))
}

#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    samples: u32,
    sum: f64,
    max: f64,
}

impl Acc {
    fn add(&mut self, v: f64) {
        self.max = if self.samples == 0 {
            v
        } else {
            self.max.max(v)
        };
        self.samples += 1;
        self.sum += v;
    }

    fn point(&self, start_ms: u64) -> SeriesPoint {
        SeriesPoint {
            start_ms,
            samples: self.samples,
            avg: self.sum / f64::from(self.samples.max(1)),
            max: self.max,
        }
    }
}

#[derive(Clone, Debug)]
struct ProcAcc {
    proc: TopProcess,
    cpu_sum: f64,
}

/// One agent's minute in progress.
#[derive(Debug, Default)]
struct Folder {
    /// Minute start, ms since the epoch.
    start_ms: u64,
    series: HashMap<(Metric, String), Acc>,
    top_samples: u32,
    procs: HashMap<u32, ProcAcc>,
    /// Whether this agent was already told (in the log) that it has too many series.
    warned: bool,
    /// Whether this agent sends details: then their process lists (with command lines and
    /// users) are the ones folded, and the samples' are ignored.
    detail_procs: bool,
    /// Time of the agent's previous detail (interface error rates).
    last_detail_ms: Option<u64>,
}

impl Folder {
    fn is_empty(&self) -> bool {
        self.series.is_empty() && self.top_samples == 0
    }

    /// Adds an observation; returns what the previous minute left once one of a later minute
    /// arrives. An observation older than the minute in progress (the clock stepped back) is
    /// dropped rather than reordered, as host minutes do.
    fn push(&mut self, id: &IdentityId, o: Observation) -> Vec<Finished> {
        let start = o.at_ms - o.at_ms % MINUTE_MS;
        let mut done = Vec::new();
        if start < self.start_ms && !self.is_empty() {
            return done;
        }
        if start != self.start_ms {
            done = self.take(id);
            self.start_ms = start;
        }
        for (metric, name, value) in o.values {
            if name.is_empty() || name.len() > MAX_SERIES_NAME || !value.is_finite() {
                continue;
            }
            let full = self.series.len() >= MAX_SERIES_PER_AGENT;
            match self.series.get_mut(&(metric, name.clone())) {
                Some(acc) => acc.add(value),
                None if full => {
                    if !self.warned {
                        self.warned = true;
                        tracing::warn!(
                            agent_id = %id,
                            cap = MAX_SERIES_PER_AGENT,
                            "agent reports more series than the hub keeps; the rest are left out"
                        );
                    }
                }
                None => {
                    let mut acc = Acc::default();
                    acc.add(value);
                    self.series.insert((metric, name), acc);
                }
            }
        }
        if o.from_detail {
            self.detail_procs = true;
        }
        let procs = o.procs.filter(|_| o.from_detail || !self.detail_procs);
        if let Some(procs) = procs {
            self.top_samples += 1;
            for p in procs {
                let cpu = f64::from(p.cpu_pct.max(0.0));
                if let Some(acc) = self.procs.get_mut(&p.pid) {
                    acc.cpu_sum += cpu;
                    acc.proc.mem = acc.proc.mem.max(p.mem);
                    if acc.proc.cmd.is_empty() {
                        acc.proc.cmd = p.cmd;
                    }
                    if acc.proc.user.is_empty() {
                        acc.proc.user = p.user;
                    }
                } else if self.procs.len() < MAX_PROCS_PER_MINUTE {
                    self.procs.insert(
                        p.pid,
                        ProcAcc {
                            proc: p,
                            cpu_sum: cpu,
                        },
                    );
                }
            }
        }
        done
    }

    /// The top processes of the minute so far: mean CPU over the samples of the minute (a
    /// process missing from a sample counts as idle in it), highest memory seen.
    fn top(&self) -> Option<TopMinute> {
        if self.top_samples == 0 {
            return None;
        }
        let n = f64::from(self.top_samples);
        let mut all: Vec<TopProcess> = self
            .procs
            .values()
            .map(|a| TopProcess {
                cpu_pct: (a.cpu_sum / n) as f32,
                ..a.proc.clone()
            })
            .collect();
        all.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct).then(a.pid.cmp(&b.pid)));
        let by_cpu = all
            .iter()
            .filter(|p| p.cpu_pct > 0.0)
            .take(TOP_PROCESSES)
            .cloned()
            .collect();
        all.sort_by(|a, b| b.mem.cmp(&a.mem).then(a.pid.cmp(&b.pid)));
        let by_mem = all.into_iter().take(TOP_PROCESSES).collect();
        Some(TopMinute {
            start_ms: self.start_ms,
            samples: self.top_samples,
            by_cpu,
            by_mem,
        })
    }

    /// Ends the minute in progress: its rows for the writer.
    fn take(&mut self, id: &IdentityId) -> Vec<Finished> {
        let mut out: Vec<Finished> = Vec::with_capacity(self.series.len() + 1);
        if let Some(top) = self.top() {
            out.push(Finished::Top(id.clone(), top));
        }
        out.extend(self.series.drain().map(|((metric, name), acc)| {
            Finished::Series(SeriesMinute {
                agent: id.clone(),
                metric,
                name,
                start_ms: self.start_ms,
                samples: acc.samples,
                avg: stored_avg(metric, &acc),
                max: acc.max,
            })
        }));
        self.top_samples = 0;
        self.procs.clear();
        out
    }
}

/// The mean a minute stores: whole bytes for byte-valued series, whose fractions mean nothing and
/// cost SQLite eight bytes a value where a whole number takes one to six.
fn stored_avg(metric: Metric, acc: &Acc) -> f64 {
    let avg = acc.sum / f64::from(acc.samples.max(1));
    if metric.is_bytes() { avg.round() } else { avg }
}

/// Front of the host history writer.
pub struct HostHistory {
    tx: mpsc::Sender<Vec<Finished>>,
    stop: CancellationToken,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    folders: Mutex<HashMap<IdentityId, Folder>>,
}

impl HostHistory {
    /// Prunes what is past retention, then starts the writer; `retention` is read at each prune,
    /// so a reload applies.
    pub async fn start(store: Store, retention: watch::Receiver<Retention>) -> Self {
        let now = *retention.borrow();
        prune(&store, now).await;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let stop = CancellationToken::new();
        let task = tokio::spawn(writer(rx, store, retention, stop.clone()));
        Self {
            tx,
            stop,
            writer: Mutex::new(Some(task)),
            folders: Mutex::default(),
        }
    }

    async fn send(&self, rows: Vec<Finished>) {
        if !rows.is_empty() && self.tx.send(rows).await.is_err() {
            tracing::warn!("host history writer gone; minute dropped");
        }
    }

    /// Folds an observation; a finished minute goes to the writer. Waits while the writer's
    /// queue is full.
    pub async fn record(&self, id: &IdentityId, o: Observation) {
        let done = lock(&self.folders)
            .entry(id.clone())
            .or_default()
            .push(id, o);
        self.send(done).await;
    }

    /// Folds a live detail (it follows the sample of the same time).
    pub async fn record_detail(&self, id: &IdentityId, d: &HostDetail) {
        let done = {
            let mut folders = lock(&self.folders);
            let f = folders.entry(id.clone()).or_default();
            let o = Observation::from_detail(d, f.last_detail_ms);
            f.last_detail_ms = Some(d.at_ms);
            f.push(id, o)
        };
        self.send(done).await;
    }

    /// Stores detail minutes an agent folded while the hub was unreachable: each value as the
    /// minute's mean (and maximum, the agent keeps no other), error counts as a rate over the
    /// minute, the top lists as the agent chose them.
    pub async fn record_backfill(&self, id: &IdentityId, minutes: Vec<HostMinute>) {
        let mut rows = Vec::new();
        for m in minutes {
            let start_ms = m.start_ms - m.start_ms % MINUTE_MS;
            let samples = m.samples.max(1);
            // A minute's increases, over a minute: as if the previous detail came 60 s before.
            let mut o = Observation::from_detail(
                &HostDetail {
                    at_ms: start_ms + MINUTE_MS,
                    ..m.detail.clone()
                },
                Some(start_ms),
            );
            rows.extend(o.values.drain(..).filter_map(|(metric, name, v)| {
                (!name.is_empty() && name.len() <= MAX_SERIES_NAME && v.is_finite()).then(|| {
                    Finished::Series(SeriesMinute {
                        agent: id.clone(),
                        metric,
                        name,
                        start_ms,
                        samples,
                        avg: v,
                        max: v,
                    })
                })
            }));
            let top = |list: &[TopProcess]| list.iter().take(TOP_PROCESSES).cloned().collect();
            rows.push(Finished::Top(
                id.clone(),
                TopMinute {
                    start_ms,
                    samples,
                    by_cpu: top(&m.detail.top_cpu),
                    by_mem: top(&m.detail.top_mem),
                },
            ));
        }
        self.send(rows).await;
    }

    /// Writes the minute in progress of `id` (it disconnected; a reconnect in the same minute merges).
    pub async fn flush_agent(&self, id: &IdentityId) {
        let done = lock(&self.folders)
            .remove(id)
            .map(|mut f| f.take(id))
            .unwrap_or_default();
        self.send(done).await;
    }

    /// Writes every minute in progress, stops the writer once its queue is stored and waits for
    /// it, at most `deadline`. Returns whether it finished in time.
    pub async fn close(&self, deadline: Duration) -> bool {
        let rows: Vec<Finished> = lock(&self.folders)
            .drain()
            .flat_map(|(id, mut f)| f.take(&id))
            .collect();
        self.send(rows).await;
        self.stop.cancel();
        let task = lock(&self.writer).take();
        match task {
            Some(task) => tokio::time::timeout(deadline, task).await.is_ok(),
            None => true,
        }
    }

    /// The minute in progress of the series of `id` that `selectors` name.
    fn series_in_progress(
        &self,
        id: &IdentityId,
        selectors: &[SeriesSelector],
    ) -> Vec<(Metric, String, SeriesPoint)> {
        let folders = lock(&self.folders);
        let Some(f) = folders.get(id) else {
            return Vec::new();
        };
        f.series
            .iter()
            .filter(|((m, name), _)| selectors.iter().any(|s| names(s, *m, name)))
            .map(|((m, name), acc)| (*m, name.clone(), acc.point(f.start_ms)))
            .collect()
    }

    /// The top processes of the minute in progress of `id`.
    fn top_in_progress(&self, id: &IdentityId) -> Option<TopMinute> {
        lock(&self.folders).get(id).and_then(Folder::top)
    }
}

async fn prune(store: &Store, retention: Retention) {
    let day = 86_400_000u64;
    let now = now_ms();
    let minute_cut = now.saturating_sub(u64::from(retention.minute_days) * day);
    let ten_cut = now.saturating_sub(u64::from(retention.ten_minute_days) * day);
    match store
        .call(move |c| Ok(store::series::prune(c, minute_cut, ten_cut)?))
        .await
    {
        Ok(p) if p != store::series::Pruned::default() => tracing::info!(
            minutes = p.minutes,
            ten_minutes = p.ten_minutes,
            top = p.top,
            series = p.series,
            processes = p.procs,
            "pruned host history"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "pruning host history failed"),
    }
}

async fn write_batch(store: &Store, batch: Vec<Finished>) {
    let n = batch.len();
    let res = store
        .call(move |c| {
            let tx = c.transaction()?;
            let mut series = Vec::with_capacity(batch.len());
            for f in batch {
                match f {
                    Finished::Series(m) => series.push(m),
                    Finished::Top(id, top) => store::series::upsert_top(&tx, &id, &top)?,
                }
            }
            store::series::upsert_minutes(&tx, &series)?;
            tx.commit()?;
            Ok(())
        })
        .await;
    if let Err(e) = res {
        tracing::error!(rows = n, error = %e, "could not store host history");
    }
}

async fn writer(
    rx: mpsc::Receiver<Vec<Finished>>,
    store: Store,
    retention: watch::Receiver<Retention>,
    stop: CancellationToken,
) {
    crate::history::batch_writer(
        rx,
        store,
        retention,
        stop,
        |store, batch| async move { write_batch(&store, batch).await },
        |store, now| async move { prune(&store, now).await },
    )
    .await
}

async fn find_agent(ctx: &HubCtx, agent: &str) -> Result<IdentityId, HubError> {
    let q = agent.to_owned();
    ctx.store
        .call(move |c| Ok(store::identities::find(c, &q)?))
        .await?
        .filter(|r| r.role == Role::Agent)
        .map(|r| r.id)
        .ok_or_else(|| HubError::refused(ErrorCode::NotFound, format!("no agent {agent:?}")))
}

/// Answers `Query::HostSeries`: the stored buckets of each named series, the minute in progress
/// last (minute resolution only).
pub(crate) async fn series_query(
    ctx: &HubCtx,
    agent: String,
    selectors: Vec<SeriesSelector>,
    since_s: u64,
) -> Result<Vec<SeriesPoints>, HubError> {
    if selectors.is_empty() || selectors.len() > MAX_SELECTORS {
        return Err(HubError::refused(
            ErrorCode::BadRequest,
            format!("name 1 to {MAX_SELECTORS} series, not {}", selectors.len()),
        ));
    }
    if let Some(bad) = selectors
        .iter()
        .find(|s| s.name.is_empty() || s.name.len() > MAX_SERIES_NAME)
    {
        return Err(HubError::refused(
            ErrorCode::BadRequest,
            format!(
                "series name {:?} must be 1 to {MAX_SERIES_NAME} bytes",
                bad.name
            ),
        ));
    }
    let id = find_agent(ctx, &agent).await?;
    let tier = if since_s <= MINUTE_TIER_S {
        Tier::Minute
    } else {
        Tier::TenMinutes
    };
    let since_ms = now_ms().saturating_sub(since_s.saturating_mul(1000));
    let (q_id, q_sel) = (id.clone(), selectors.clone());
    let mut found = ctx
        .store
        .call(move |c| Ok(store::series::read(c, &q_id, &q_sel, tier, since_ms)?))
        .await?;
    if tier == Tier::Minute {
        for (metric, name, live) in ctx.history.host.series_in_progress(&id, &selectors) {
            if live.start_ms + MINUTE_MS <= since_ms {
                continue;
            }
            match found
                .iter_mut()
                .find(|s| s.metric == metric && s.name == name)
            {
                Some(s) => match s.points.last_mut() {
                    // Part of this minute was written before a reconnect: merge.
                    Some(last) if last.start_ms == live.start_ms => {
                        let n = f64::from(last.samples + live.samples).max(1.0);
                        last.avg = (last.avg * f64::from(last.samples)
                            + live.avg * f64::from(live.samples))
                            / n;
                        last.max = last.max.max(live.max);
                        last.samples += live.samples;
                    }
                    Some(last) if last.start_ms > live.start_ms => {}
                    _ => s.points.push(live),
                },
                None => found.push(SeriesPoints {
                    metric,
                    name,
                    resolution_s: tier.seconds(),
                    points: vec![live],
                }),
            }
        }
        found.sort_by(|a, b| (a.metric, &a.name).cmp(&(b.metric, &b.name)));
    }
    Ok(found)
}

/// Answers `Query::HostTop`: stored minutes in the span, and the minute in progress if it falls
/// in it.
pub(crate) async fn top_query(
    ctx: &HubCtx,
    agent: String,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<TopMinute>, HubError> {
    if to_ms <= from_ms || to_ms - from_ms > MAX_TOP_SPAN_MS {
        return Err(HubError::refused(
            ErrorCode::BadRequest,
            format!(
                "a top span must end after it starts and cover at most {} days",
                MAX_TOP_SPAN_MS / 86_400_000
            ),
        ));
    }
    let id = find_agent(ctx, &agent).await?;
    let q_id = id.clone();
    let mut minutes = ctx
        .store
        .call(move |c| Ok(store::series::read_top(c, &q_id, from_ms, to_ms)?))
        .await?;
    if let Some(live) = ctx.history.host.top_in_progress(&id)
        && live.start_ms + MINUTE_MS > from_ms
        && live.start_ms < to_ms
    {
        match minutes.last_mut() {
            // The stored part (before a reconnect) or the live part: the fuller one.
            Some(last) if last.start_ms == live.start_ms => {
                if live.samples >= last.samples {
                    *last = live;
                }
            }
            Some(last) if last.start_ms > live.start_ms => {}
            _ => minutes.push(live),
        }
    }
    Ok(minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, cpu: f32, mem: u64) -> TopProcess {
        TopProcess {
            pid,
            name: format!("p{pid}"),
            cpu_pct: cpu,
            mem,
            ..TopProcess::default()
        }
    }

    #[test]
    fn a_minute_folds_means_maxima_and_top_processes_then_closes() {
        let id = IdentityId::from_random(Role::Agent, [3; 8]);
        let mut f = Folder::default();
        let t0 = 1_700_000_040_000u64; // a minute start
        let obs = |at: u64, v: f64, procs: Vec<TopProcess>| Observation {
            at_ms: at,
            values: vec![(Metric::NetRx, "eth0".into(), v)],
            procs: Some(procs),
            from_detail: false,
        };
        assert!(
            f.push(&id, obs(t0, 10.0, vec![proc(1, 100.0, 5)]))
                .is_empty()
        );
        assert!(
            f.push(&id, obs(t0 + 5_000, 30.0, vec![proc(2, 50.0, 50)]))
                .is_empty()
        );
        // An older sample is dropped.
        assert!(f.push(&id, obs(t0 - 1, 1e9, vec![])).is_empty());
        let done = f.push(&id, obs(t0 + 60_000, 1.0, vec![]));
        assert_eq!(done.len(), 2, "{done:?}");
        let mut top = None;
        let mut series = None;
        for d in done {
            match d {
                Finished::Top(_, t) => top = Some(t),
                Finished::Series(s) => series = Some(s),
            }
        }
        let top = top.expect("top");
        let series = series.expect("series");
        assert_eq!((series.samples, series.avg, series.max), (2, 20.0, 30.0));
        assert_eq!(series.start_ms, t0);
        assert_eq!(top.samples, 2);
        // Process 1 ran in one sample of two at 100 %: 50 % over the minute; process 2 25 %.
        assert_eq!(top.by_cpu.iter().map(|p| p.pid).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(top.by_cpu[0].cpu_pct, 50.0);
        assert_eq!(top.by_mem[0].pid, 2);
        // The next minute holds only what came after.
        let t = f.top().expect("next minute");
        assert!(t.by_cpu.is_empty() && t.samples == 1);
    }

    #[tokio::test]
    async fn outage_minutes_and_live_details_reach_the_store() {
        use flotilla_wire::host::{BlockIo, CustomValue, ErrorCounts, NetErrors};
        let dir = tempfile::tempdir().expect("dir");
        let (store, thread) = Store::open(&dir.path().join("db")).expect("store");
        let (_keep, rx) = watch::channel(Retention {
            minute_days: 30,
            ten_minute_days: 365,
            container_days: 30,
        });
        let history = HostHistory::start(store.clone(), rx).await;
        let id = IdentityId::from_random(Role::Agent, [5; 8]);
        let start = (now_ms() - 3_600_000) / MINUTE_MS * MINUTE_MS;
        let detail = HostDetail {
            block_io: vec![BlockIo {
                device: "vda".into(),
                read_bps: 4096,
                busy_pct: 12.5,
                ..BlockIo::default()
            }],
            net_errors: vec![NetErrors {
                iface: "eth0".into(),
                new: ErrorCounts {
                    rx_errors: 60,
                    rx_dropped: 60,
                    ..ErrorCounts::default()
                },
                ..NetErrors::default()
            }],
            custom: vec![CustomValue {
                name: "req".into(),
                labels: vec![("code".into(), "200".into())],
                value: 7.5,
            }],
            top_cpu: vec![TopProcess {
                pid: 9,
                name: "backup".into(),
                cmd: "backup --all".into(),
                user: "root".into(),
                cpu_pct: 88.0,
                mem: 1 << 20,
            }],
            ..HostDetail::default()
        };
        // A back-filled minute, then two live details a second apart in a later minute.
        history
            .record_backfill(
                &id,
                vec![HostMinute {
                    start_ms: start,
                    samples: 12,
                    detail: detail.clone(),
                }],
            )
            .await;
        for at in [start + 120_000, start + 121_000] {
            let d = HostDetail {
                at_ms: at,
                ..detail.clone()
            };
            history.record_detail(&id, &d).await;
        }
        assert!(history.close(Duration::from_secs(30)).await);
        let sels = vec![
            SeriesSelector {
                kind: SeriesKind::Io,
                name: "vda".into(),
            },
            SeriesSelector {
                kind: SeriesKind::Net,
                name: "eth0".into(),
            },
            SeriesSelector {
                kind: SeriesKind::Custom,
                name: "req".into(),
            },
        ];
        let q_id = id.clone();
        let (series, top) = store
            .call(move |c| {
                Ok((
                    store::series::read(c, &q_id, &sels, Tier::Minute, 0)?,
                    store::series::read_top(c, &q_id, 0, u64::MAX / 2)?,
                ))
            })
            .await
            .expect("read");
        let get = |m: Metric| {
            series
                .iter()
                .find(|s| s.metric == m)
                .unwrap_or_else(|| panic!("{m:?} in {series:?}"))
        };
        let busy = get(Metric::IoBusy);
        assert_eq!(busy.points.len(), 2, "{busy:?}");
        assert_eq!((busy.points[0].samples, busy.points[0].avg), (12, 12.5));
        assert_eq!(busy.points[1].samples, 2);
        // 120 errors and drops in the back-filled minute: 2 a second; live, 120 in one second.
        let rx = get(Metric::NetRxErrors);
        assert_eq!(rx.points[0].avg, 2.0);
        assert_eq!(rx.points[1].avg, 120.0);
        assert_eq!(rx.points[1].samples, 1, "the first live detail has no rate");
        let custom = get(Metric::Custom);
        assert_eq!(custom.name, "req{code=\"200\"}");
        assert_eq!(custom.points[0].avg, 7.5);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].by_cpu[0].cmd, "backup --all");
        assert_eq!(top[1].by_cpu[0].user, "root");
        drop(store);
        drop(history);
        thread.join().expect("store thread");
    }

    #[test]
    fn an_agent_past_the_series_cap_keeps_the_first_ones() {
        let id = IdentityId::from_random(Role::Agent, [4; 8]);
        let mut f = Folder::default();
        let values = (0..MAX_SERIES_PER_AGENT + 10)
            .map(|i| (Metric::Custom, format!("m{i}"), 1.0))
            .chain([(Metric::Custom, "x".repeat(MAX_SERIES_NAME + 1), 1.0)])
            .collect();
        f.push(
            &id,
            Observation {
                at_ms: 60_000,
                values,
                procs: None,
                from_detail: false,
            },
        );
        assert_eq!(f.series.len(), MAX_SERIES_PER_AGENT);
        assert!(f.warned);
        assert!(f.top().is_none(), "no process list, no top minute");
    }
}
