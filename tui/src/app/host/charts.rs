//! Charts over time of one agent's per-device series in the agent view (`c`): disk use per mount,
//! I/O per block device, rates per interface, utilisation and memory per GPU, temperatures and
//! custom series. One series is charted at a time, picked from a list with ↑↓, so the panel reads
//! at 80x24; its history comes from the hub's per-series store with the same query as
//! `flotilla metrics NAME --series` ([`Command::HostSeries`]), over the span of the `[` `]` picker,
//! and is asked for again every few seconds so the minute in progress follows the live samples.

use super::super::App;
use crate::command::Command;
use crate::util::escaped;
use flotilla_wire::history::{Metric, SeriesKind, SeriesPoints, SeriesSelector};
use flotilla_wire::host::{Gpu, GpuVendor, HostView};
use flotilla_wire::msg::MetricsSample;

/// Seconds between two asks for the charted series while its span is read at one-minute
/// resolution: the hub folds each sample into the minute in progress, which its answer includes,
/// so the chart's newest point moves with the samples (one a second while the view is open).
pub const LIVE_REFRESH_TICKS: u64 = 2;
/// Seconds between two asks beyond six hours, where the hub answers ten-minute buckets without
/// the minute in progress: the same period as the host totals' history.
pub const SLOW_REFRESH_TICKS: u64 = 30;
/// Longest span the hub answers at one-minute resolution, seconds (its `MINUTE_TIER_S`).
const MINUTE_TIER_S: u64 = 6 * 3600;
/// An ask unanswered for this many seconds is taken as lost (a dropped command, a reconnect) and
/// asked again.
const LOST_TICKS: u64 = 30;

/// One chartable series of the agent: what to ask the hub for and which of its metrics to draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartSeries {
    /// The `kind:name` the hub is asked for.
    pub selector: SeriesSelector,
    /// The metrics drawn, one line each; they share a unit.
    pub metrics: &'static [Metric],
}

impl ChartSeries {
    fn new(kind: SeriesKind, name: impl Into<String>, metrics: &'static [Metric]) -> Self {
        Self {
            selector: SeriesSelector {
                kind,
                name: name.into(),
            },
            metrics,
        }
    }

    /// How the list and the chart title name it: `net eth0`, `gpu0 mem`, escaped.
    pub fn label(&self) -> String {
        let name = escaped(&self.selector.name);
        match (self.selector.kind, self.metrics.first()) {
            (SeriesKind::Gpu, Some(Metric::GpuMem)) => format!("gpu{name} mem"),
            (SeriesKind::Gpu, _) => format!("gpu{name} util"),
            (kind, _) => format!("{} {name}", kind.as_str()),
        }
    }

    /// Whether the values are percentages (charted from 0 to 100).
    pub fn is_pct(&self) -> bool {
        matches!(
            self.metrics.first(),
            Some(Metric::DiskPct | Metric::GpuUtil)
        )
    }
}

/// The name the hub stores a custom value under: its name, with its labels as Prometheus writes
/// them (`NAME{key="value",…}`, docs/host.md), so the chart asks for that one series.
pub fn custom_series_name(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// The name the hub stores a GPU's series under: its index for NVIDIA (`0`), `amd` and the index
/// for AMD (`amd0`).
pub fn gpu_series_name(g: &Gpu) -> String {
    match g.vendor {
        GpuVendor::Nvidia => g.index.to_string(),
        GpuVendor::Amd => format!("amd{}", g.index),
    }
}

/// Every series of the agent the console can chart, in the list's order: mounts, block devices,
/// interfaces, GPUs (utilisation, then memory), temperatures, custom series. Mounts, interfaces and
/// temperatures come from the live sample; the rest from the hub's host depth.
pub fn chart_series(sample: Option<&MetricsSample>, view: Option<&HostView>) -> Vec<ChartSeries> {
    let detail = view.and_then(|v| v.detail.as_ref());
    let mut out = Vec::new();
    if let Some(s) = sample {
        out.extend(
            s.disks
                .iter()
                .map(|d| ChartSeries::new(SeriesKind::Disk, &d.mount, &[Metric::DiskPct])),
        );
    }
    if let Some(d) = detail {
        out.extend(d.block_io.iter().map(|io| {
            ChartSeries::new(
                SeriesKind::Io,
                &io.device,
                &[Metric::IoRead, Metric::IoWrite],
            )
        }));
    }
    if let Some(s) = sample {
        out.extend(
            s.nets.iter().map(|n| {
                ChartSeries::new(SeriesKind::Net, &n.iface, &[Metric::NetRx, Metric::NetTx])
            }),
        );
    }
    if let Some(d) = detail {
        for g in &d.gpus {
            let name = gpu_series_name(g);
            if g.util_pct.is_some() {
                out.push(ChartSeries::new(SeriesKind::Gpu, &name, &[Metric::GpuUtil]));
            }
            if g.mem_used.is_some() {
                out.push(ChartSeries::new(SeriesKind::Gpu, name, &[Metric::GpuMem]));
            }
        }
    }
    if let Some(s) = sample {
        out.extend(
            s.temps
                .iter()
                .map(|t| ChartSeries::new(SeriesKind::Temp, &t.label, &[Metric::Temp])),
        );
    }
    if let Some(d) = detail {
        out.extend(d.custom.iter().map(|c| {
            ChartSeries::new(
                SeriesKind::Custom,
                custom_series_name(&c.name, &c.labels),
                &[Metric::Custom],
            )
        }));
    }
    // A name listed twice (two sensors with one label) would be one series on the hub.
    let mut seen = std::collections::HashSet::new();
    out.retain(|c| seen.insert((c.selector.kind.as_str(), c.selector.name.clone(), c.metrics)));
    out
}

/// What the hub answered for one series and span.
#[derive(Clone, Debug, PartialEq)]
pub struct ChartAnswer {
    /// The series asked for.
    pub series: ChartSeries,
    /// The span asked for, seconds.
    pub since_s: u64,
    /// Its buckets per metric, or why the hub could not say.
    pub result: Result<Vec<SeriesPoints>, String>,
}

/// State of the charts panel of the agent view.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Charts {
    /// Whether the lower half of the view shows the charts (`c`) instead of usage and processes.
    pub open: bool,
    /// The series picked, kept by identity so the list may grow (host depth arrives after the
    /// first sample) without moving the pick; `None` is the first in the list.
    pub picked: Option<ChartSeries>,
    /// The latest answer; drawn only while it is for the picked series and span.
    pub answer: Option<ChartAnswer>,
    /// The ask in flight: series, span and the tick it was sent at.
    asked: Option<(ChartSeries, u64, u64)>,
    /// The tick of the last answer that fits the pick.
    answered_tick: u64,
}

impl App {
    /// The newest sample of the agent in view: the polled detail's, else the list's.
    pub fn focused_sample(&self) -> Option<&MetricsSample> {
        let id = self.focused()?;
        self.detail
            .as_ref()
            .filter(|d| d.id == id)
            .or_else(|| self.agents.get(&id))
            .and_then(|a| a.latest.as_ref())
    }

    /// The series the charts panel lists for the agent in view.
    pub fn chart_series(&self) -> Vec<ChartSeries> {
        chart_series(self.focused_sample(), self.host_time.view.as_ref())
    }

    /// The list and the index of the series charted (the first when the pick is gone).
    pub fn charted(&self) -> (Vec<ChartSeries>, Option<usize>) {
        let list = self.chart_series();
        let at = match &self.host_time.charts.picked {
            Some(p) => list.iter().position(|c| c == p).or(Some(0)),
            None => Some(0),
        }
        .filter(|i| *i < list.len());
        (list, at)
    }

    /// The hub's answer for the charted series, when it is for the span shown.
    pub fn chart_answer(&self) -> Option<&ChartAnswer> {
        let (list, at) = self.charted();
        let series = list.get(at?)?;
        self.host_time
            .charts
            .answer
            .as_ref()
            .filter(|a| a.series == *series && a.since_s == self.history_span_s())
    }

    /// `c` in the agent view: the charts panel in place of usage and processes, or back.
    pub(in crate::app) fn toggle_charts(&mut self) {
        let charts = &mut self.host_time.charts;
        charts.open = !charts.open;
        self.ask_chart();
    }

    /// ↑↓ with the charts panel open: the previous or next series, stopping at the ends.
    pub(in crate::app) fn pick_chart(&mut self, delta: i32) {
        let (list, at) = self.charted();
        let Some(at) = at else { return };
        let next = (at as i64 + i64::from(delta)).clamp(0, list.len() as i64 - 1) as usize;
        self.host_time.charts.picked = list.into_iter().nth(next);
        self.ask_chart();
    }

    /// Asks the hub for the charted series when the pick or the span changed, or when the last
    /// answer is due for a refresh ([`LIVE_REFRESH_TICKS`], [`SLOW_REFRESH_TICKS`]). Called on each
    /// tick, key and host depth; asks nothing while the panel is closed.
    pub(in crate::app) fn ask_chart(&mut self) {
        if !self.host_time.charts.open {
            return;
        }
        let Some(agent) = self.focused() else { return };
        let (list, at) = self.charted();
        let Some(series) = at.and_then(|i| list.into_iter().nth(i)) else {
            return;
        };
        let since_s = self.history_span_s();
        let ticks = self.ticks;
        let charts = &mut self.host_time.charts;
        let every = if since_s <= MINUTE_TIER_S {
            LIVE_REFRESH_TICKS
        } else {
            SLOW_REFRESH_TICKS
        };
        let due = match &charts.asked {
            Some((s, span, tick)) if *s == series && *span == since_s => ticks >= tick + LOST_TICKS,
            _ => match &charts.answer {
                Some(a) if a.series == series && a.since_s == since_s => {
                    ticks >= charts.answered_tick + every
                }
                _ => true,
            },
        };
        if !due {
            return;
        }
        charts.asked = Some((series.clone(), since_s, ticks));
        self.commands.push(Command::HostSeries {
            agent: agent.to_string(),
            series: series.clone(),
            since_s,
        });
    }

    /// The hub's answer for `series` over `since_s`: kept when it is for the agent in view, and
    /// it ends the ask in flight for that series.
    pub(in crate::app) fn apply_host_series(&mut self, agent: &str, answer: ChartAnswer) -> bool {
        if self.focused().map(|id| id.to_string()).as_deref() != Some(agent) {
            return false;
        }
        let ticks = self.ticks;
        let charts = &mut self.host_time.charts;
        if charts
            .asked
            .as_ref()
            .is_some_and(|(s, span, _)| *s == answer.series && *span == answer.since_s)
        {
            charts.asked = None;
            charts.answered_tick = ticks;
        }
        charts.answer = Some(answer);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::View;
    use crate::app::workload_tests::{fixture, key, web1};
    use crate::event::Event;
    use crossterm::event::KeyCode;
    use flotilla_wire::Role;
    use flotilla_wire::history::SeriesPoint;
    use flotilla_wire::host::{BlockIo, CustomValue, HostDetail};
    use flotilla_wire::msg::{DiskUsage, NetRate};

    fn sample() -> MetricsSample {
        MetricsSample {
            disks: vec![DiskUsage {
                mount: "/".into(),
                used: 1 << 30,
                total: 4 << 30,
            }],
            nets: vec![
                NetRate {
                    iface: "eth0".into(),
                    rx_bps: 1000,
                    tx_bps: 10,
                },
                NetRate {
                    iface: "lo".into(),
                    rx_bps: 5,
                    tx_bps: 5,
                },
            ],
            ..MetricsSample::default()
        }
    }

    fn view() -> HostView {
        HostView {
            id: web1(),
            name: "web-1".into(),
            detail: Some(HostDetail {
                block_io: vec![BlockIo {
                    device: "vda".into(),
                    ..BlockIo::default()
                }],
                gpus: vec![Gpu {
                    vendor: GpuVendor::Amd,
                    util_pct: Some(50.0),
                    mem_used: Some(1 << 30),
                    ..Gpu::default()
                }],
                custom: vec![CustomValue {
                    name: "requests".into(),
                    labels: vec![("code".into(), "200".into())],
                    value: 3.0,
                }],
                ..HostDetail::default()
            }),
            report: None,
        }
    }

    /// An agent view with the fixture's web-1 and a sample holding a mount and two interfaces.
    fn agent_app() -> App {
        let mut app = fixture(Role::Viewer);
        app.view = View::Agent(web1());
        app.agents.get_mut(&web1()).expect("web-1").latest = Some(sample());
        app
    }

    fn asked(app: &mut App) -> Vec<(String, u64)> {
        app.take_commands()
            .into_iter()
            .filter_map(|c| match c {
                Command::HostSeries {
                    series, since_s, ..
                } => Some((series.label(), since_s)),
                _ => None,
            })
            .collect()
    }

    fn answer(series: ChartSeries, since_s: u64) -> Event {
        Event::HostSeries {
            agent: web1().to_string(),
            answer: Box::new(ChartAnswer {
                series,
                since_s,
                result: Ok(vec![SeriesPoints {
                    metric: Metric::NetRx,
                    name: "lo".into(),
                    resolution_s: 60,
                    points: vec![SeriesPoint::default()],
                }]),
            }),
        }
    }

    #[test]
    fn the_list_holds_every_device_in_order_with_the_hubs_names() {
        let labels: Vec<String> = chart_series(Some(&sample()), Some(&view()))
            .iter()
            .map(ChartSeries::label)
            .collect();
        assert_eq!(
            labels,
            [
                "disk /",
                "io vda",
                "net eth0",
                "net lo",
                "gpuamd0 util",
                "gpuamd0 mem",
                "custom requests{code=\"200\"}",
            ]
        );
        assert!(chart_series(None, None).is_empty());
    }

    #[test]
    fn the_pick_survives_the_list_growing_and_stops_at_the_ends() {
        let mut app = agent_app();
        app.update(key(KeyCode::Char('c')));
        assert_eq!(asked(&mut app), [("disk /".to_string(), 3600)]);
        app.update(key(KeyCode::Char('j')));
        app.update(key(KeyCode::Char('j')));
        assert_eq!(
            app.charted().0[app.charted().1.expect("pick")].label(),
            "net lo"
        );
        // Host depth puts a block device and a GPU before and after: the pick stays.
        assert!(app.update(Event::HostView(Box::new(view()))));
        let (list, at) = app.charted();
        assert_eq!(list[at.expect("pick")].label(), "net lo");
        for _ in 0..20 {
            app.update(key(KeyCode::Char('j')));
        }
        let (list, at) = app.charted();
        assert_eq!(at, Some(list.len() - 1));
        app.update(key(KeyCode::Char('g')));
        assert_eq!(app.charted().1, Some(0));
    }

    #[test]
    fn a_new_span_or_pick_asks_at_once_and_the_same_one_waits_for_its_refresh() {
        let mut app = agent_app();
        // Closed: ticks ask nothing.
        app.update(Event::Tick);
        assert!(asked(&mut app).is_empty());
        app.update(key(KeyCode::Char('c')));
        app.update(key(KeyCode::Char('j')));
        app.update(key(KeyCode::Char('j')));
        let lo = app.charted().0[2].clone();
        assert_eq!(
            asked(&mut app),
            [
                ("disk /".to_string(), 3600),
                ("net eth0".to_string(), 3600),
                ("net lo".to_string(), 3600)
            ]
        );
        // In flight: no second ask.
        app.update(Event::Tick);
        assert!(asked(&mut app).is_empty());
        assert!(app.update(answer(lo.clone(), 3600)));
        assert!(app.chart_answer().is_some());
        app.update(Event::Tick);
        assert!(asked(&mut app).is_empty(), "answered a tick ago");
        app.update(Event::Tick);
        assert_eq!(asked(&mut app), [("net lo".to_string(), 3600)]);
        // A longer span: the old answer is not drawn under the new label, and it is asked for.
        app.update(key(KeyCode::Char(']')));
        assert!(app.chart_answer().is_none());
        assert_eq!(asked(&mut app), [("net lo".to_string(), 6 * 3600)]);
        // An answer for another agent is not ours.
        let mut other = answer(lo, 6 * 3600);
        if let Event::HostSeries { agent, .. } = &mut other {
            *agent = "a-someone-else".into();
        }
        assert!(!app.update(other));
        assert!(app.chart_answer().is_none());
    }

    #[test]
    fn closing_the_panel_gives_the_arrows_back_to_scrolling() {
        let mut app = agent_app();
        app.update(key(KeyCode::Char('c')));
        app.update(key(KeyCode::Down));
        assert_eq!(app.host_time.scroll, 0);
        app.update(key(KeyCode::Char('c')));
        app.update(key(KeyCode::Down));
        assert_eq!(app.host_time.scroll, 1);
        assert_eq!(app.charted().1, Some(1), "the pick is kept for next time");
    }
}
