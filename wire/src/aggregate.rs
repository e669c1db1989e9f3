//! Folding samples into per-minute aggregates. Pure logic shared by the agent (back-fill buffer) and
//! the hub (history), so both compute a minute the same way.

use crate::msg::{MetricsSample, MinuteAggregate};

/// One minute: the bucket length of live history and back-fill.
pub const MINUTE_MS: u64 = 60_000;
/// Ten minutes: the bucket length of long-term history.
pub const TEN_MINUTES_MS: u64 = 600_000;

/// Start of the bucket of length `bucket_ms` holding `at_ms`.
pub fn bucket_start(at_ms: u64, bucket_ms: u64) -> u64 {
    at_ms - at_ms % bucket_ms
}

/// Running sums for one bucket.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Accumulator {
    start_ms: u64,
    samples: u32,
    cpu_sum: f64,
    cpu_max: f32,
    mem_sum: u128,
    mem_max: u64,
    mem_total: u64,
    load1_sum: f64,
    disk_pct_max: f32,
    rx_sum: u128,
    tx_sum: u128,
    net_max: u64,
    read_sum: u128,
    write_sum: u128,
}

impl Accumulator {
    /// An empty bucket starting at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            start_ms,
            ..Self::default()
        }
    }

    /// Start of this bucket.
    pub fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// Folds one sample in.
    pub fn add(&mut self, s: &MetricsSample) {
        let rx: u64 = s.nets.iter().map(|n| n.rx_bps).sum();
        let tx: u64 = s.nets.iter().map(|n| n.tx_bps).sum();
        let disk_pct = s
            .disks
            .iter()
            .filter(|d| d.total > 0)
            .map(|d| (d.used as f64 * 100.0 / d.total as f64) as f32)
            .fold(0.0f32, f32::max);
        self.samples += 1;
        self.cpu_sum += f64::from(s.cpu_pct);
        self.cpu_max = self.cpu_max.max(s.cpu_pct);
        self.mem_sum += u128::from(s.mem_used);
        self.mem_max = self.mem_max.max(s.mem_used);
        self.mem_total = s.mem_total;
        self.load1_sum += f64::from(s.load[0]);
        self.disk_pct_max = self.disk_pct_max.max(disk_pct);
        self.rx_sum += u128::from(rx);
        self.tx_sum += u128::from(tx);
        self.net_max = self.net_max.max(rx + tx);
        self.read_sum += u128::from(s.disk_read_bps);
        self.write_sum += u128::from(s.disk_write_bps);
    }

    /// The aggregate of what was added.
    pub fn finish(&self) -> MinuteAggregate {
        let n = self.samples.max(1);
        let avg = |sum: u128| (sum / u128::from(n)) as u64;
        MinuteAggregate {
            start_ms: self.start_ms,
            samples: self.samples,
            cpu_avg: (self.cpu_sum / f64::from(n)) as f32,
            cpu_max: self.cpu_max,
            mem_avg: avg(self.mem_sum),
            mem_max: self.mem_max,
            mem_total: self.mem_total,
            load1_avg: (self.load1_sum / f64::from(n)) as f32,
            disk_pct_max: self.disk_pct_max,
            net_rx_avg: avg(self.rx_sum),
            net_tx_avg: avg(self.tx_sum),
            net_max: self.net_max,
            disk_read_avg: avg(self.read_sum),
            disk_write_avg: avg(self.write_sum),
        }
    }
}

impl MinuteAggregate {
    /// Two parts of the same bucket as one: means weighted by samples, maxima, the later total. The
    /// store merges rows of one minute the same way in SQL.
    pub fn merged(&self, later: &Self) -> Self {
        let (a, b) = (u64::from(self.samples), u64::from(later.samples));
        let n = (a + b).max(1);
        let mean_u = |x: u64, y: u64| {
            ((u128::from(x) * u128::from(a) + u128::from(y) * u128::from(b)) / u128::from(n)) as u64
        };
        let mean_f = |x: f32, y: f32| {
            ((f64::from(x) * a as f64 + f64::from(y) * b as f64) / n as f64) as f32
        };
        Self {
            start_ms: self.start_ms,
            samples: self.samples.saturating_add(later.samples),
            cpu_avg: mean_f(self.cpu_avg, later.cpu_avg),
            cpu_max: self.cpu_max.max(later.cpu_max),
            mem_avg: mean_u(self.mem_avg, later.mem_avg),
            mem_max: self.mem_max.max(later.mem_max),
            mem_total: later.mem_total,
            load1_avg: mean_f(self.load1_avg, later.load1_avg),
            disk_pct_max: self.disk_pct_max.max(later.disk_pct_max),
            net_rx_avg: mean_u(self.net_rx_avg, later.net_rx_avg),
            net_tx_avg: mean_u(self.net_tx_avg, later.net_tx_avg),
            net_max: self.net_max.max(later.net_max),
            disk_read_avg: mean_u(self.disk_read_avg, later.disk_read_avg),
            disk_write_avg: mean_u(self.disk_write_avg, later.disk_write_avg),
        }
    }
}

/// Per-minute buckets of one stream of samples: `push` returns the finished minute when a sample
/// opens the next one.
#[derive(Clone, Debug, Default)]
pub struct MinuteFolder {
    current: Option<Accumulator>,
}

impl MinuteFolder {
    /// Adds a sample; returns the previous minute once a sample of a later minute arrives.
    pub fn push(&mut self, s: &MetricsSample) -> Option<MinuteAggregate> {
        let start = bucket_start(s.at_ms, MINUTE_MS);
        let mut done = None;
        match &mut self.current {
            Some(acc) if acc.start_ms() == start => acc.add(s),
            Some(acc) if start < acc.start_ms() => {} // clock stepped back: drop rather than reorder
            _ => {
                done = self
                    .current
                    .take()
                    .filter(|a| !a.is_empty())
                    .map(|a| a.finish());
                let mut acc = Accumulator::new(start);
                acc.add(s);
                self.current = Some(acc);
            }
        }
        done
    }

    /// The minute in progress so far, left in place: what a history query shows for the current
    /// minute before it closes.
    pub fn peek(&self) -> Option<MinuteAggregate> {
        self.current
            .as_ref()
            .filter(|a| !a.is_empty())
            .map(Accumulator::finish)
    }

    /// The minute in progress, if any (flushed on disconnect and shutdown).
    pub fn take(&mut self) -> Option<MinuteAggregate> {
        self.current
            .take()
            .filter(|a| !a.is_empty())
            .map(|a| a.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{DiskUsage, NetRate};

    fn sample(at_ms: u64, cpu: f32, mem: u64) -> MetricsSample {
        MetricsSample {
            at_ms,
            cpu_pct: cpu,
            mem_used: mem,
            mem_total: 1000,
            nets: vec![NetRate {
                iface: "e".into(),
                rx_bps: 10,
                tx_bps: 5,
            }],
            disks: vec![DiskUsage {
                mount: "/".into(),
                used: 50,
                total: 100,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn minutes_fold_avg_and_max_and_close_on_next_minute() {
        let mut f = MinuteFolder::default();
        assert_eq!(f.push(&sample(60_000, 10.0, 100)), None);
        assert_eq!(f.push(&sample(65_000, 30.0, 300)), None);
        let done = f.push(&sample(120_000, 50.0, 500)).expect("minute closed");
        assert_eq!(done.start_ms, 60_000);
        assert_eq!(done.samples, 2);
        assert_eq!(done.cpu_avg, 20.0);
        assert_eq!(done.cpu_max, 30.0);
        assert_eq!(done.mem_avg, 200);
        assert_eq!(done.mem_max, 300);
        assert_eq!(done.net_rx_avg, 10);
        assert_eq!(done.net_max, 15);
        assert_eq!(done.disk_pct_max, 50.0);
        let rest = f.take().expect("minute in progress");
        assert_eq!((rest.start_ms, rest.samples), (120_000, 1));
        assert_eq!(f.take(), None);
    }

    #[test]
    fn the_minute_in_progress_can_be_read_without_closing_it() {
        let mut f = MinuteFolder::default();
        assert_eq!(f.peek(), None);
        f.push(&sample(60_000, 10.0, 100));
        f.push(&sample(61_000, 30.0, 300));
        let live = f.peek().expect("minute in progress");
        assert_eq!(
            (live.start_ms, live.samples, live.cpu_avg),
            (60_000, 2, 20.0)
        );
        // Peeking leaves it in place: the next minute still closes it with both samples.
        let closed = f.push(&sample(120_000, 0.0, 0)).expect("closed");
        assert_eq!(closed, live);
    }

    #[test]
    fn parts_of_one_minute_merge_as_the_store_merges_them() {
        let mut f = MinuteFolder::default();
        f.push(&sample(60_000, 10.0, 100));
        let first = f.take().expect("first part");
        f.push(&sample(62_000, 40.0, 400));
        f.push(&sample(63_000, 40.0, 400));
        let second = f.take().expect("second part");
        let m = first.merged(&second);
        assert_eq!(m.samples, 3);
        assert_eq!(m.cpu_avg, 30.0);
        assert_eq!(m.cpu_max, 40.0);
        assert_eq!(m.mem_avg, 300);
        assert_eq!(m.mem_max, 400);
    }

    #[test]
    fn a_clock_step_back_does_not_reopen_a_closed_minute() {
        let mut f = MinuteFolder::default();
        f.push(&sample(120_000, 10.0, 1));
        assert_eq!(f.push(&sample(60_000, 90.0, 1)), None);
        assert_eq!(f.take().map(|a| a.cpu_max), Some(10.0));
    }
}
