//! Counters the hub keeps about itself, exported on the Prometheus endpoint and in the periodic
//! stats log line: connections, handshakes, messages and bytes per stream kind, enrolments, exec
//! and transfer counts, and how long the store thread takes.
//!
//! Bytes and messages are counted by wrapping a stream for one frame's read or write
//! ([`Stats::reader`], [`Stats::writer`]): a wrapper that moved any byte counts one message.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The stream kinds counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// Connection opening and hub control messages.
    Control,
    /// Agent metrics samples and back-fill.
    Metrics,
    /// Operator requests and their responses (QUIC and the admin socket).
    Request,
    /// Fleet events pushed to operators.
    Events,
    /// Command execution streams.
    Exec,
    /// File transfer streams.
    Transfer,
}

impl StreamKind {
    /// Every kind, in export order.
    pub const ALL: [Self; 6] = [
        Self::Control,
        Self::Metrics,
        Self::Request,
        Self::Events,
        Self::Exec,
        Self::Transfer,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Control => "control",
            Self::Metrics => "metrics",
            Self::Request => "request",
            Self::Events => "events",
            Self::Exec => "exec",
            Self::Transfer => "transfer",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Direction of traffic, seen from the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received.
    In,
    /// Sent.
    Out,
}

impl Direction {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Messages and bytes per kind and direction.
#[derive(Default, Debug)]
pub struct Traffic {
    messages: [[AtomicU64; 2]; StreamKind::ALL.len()],
    bytes: [[AtomicU64; 2]; StreamKind::ALL.len()],
}

impl Traffic {
    /// Messages so far.
    pub fn messages(&self, kind: StreamKind, dir: Direction) -> u64 {
        self.messages[kind.index()][dir.index()].load(Relaxed)
    }

    /// Bytes so far.
    pub fn bytes(&self, kind: StreamKind, dir: Direction) -> u64 {
        self.bytes[kind.index()][dir.index()].load(Relaxed)
    }

    fn add(&self, kind: StreamKind, dir: Direction, messages: u64, bytes: u64) {
        self.messages[kind.index()][dir.index()].fetch_add(messages, Relaxed);
        self.bytes[kind.index()][dir.index()].fetch_add(bytes, Relaxed);
    }
}

/// Upper bounds of the store latency histogram, seconds: from a cached read (~50 µs) to a write
/// stuck behind a big batch or a disk stall (seconds).
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A histogram of durations with fixed buckets, updated without locks.
#[derive(Default, Debug)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let slot = LATENCY_BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Cumulative counts per bound (Prometheus `le`), then the total.
    pub fn cumulative(&self) -> (Vec<(f64, u64)>, u64) {
        let mut acc = 0;
        let mut out = Vec::with_capacity(LATENCY_BUCKETS_S.len());
        for (i, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
            acc += self.buckets[i].load(Relaxed);
            out.push((*bound, acc));
        }
        acc += self.buckets[LATENCY_BUCKETS_S.len()].load(Relaxed);
        (out, acc)
    }

    /// Sum of observations, seconds.
    pub fn sum_s(&self) -> f64 {
        self.sum_ns.load(Relaxed) as f64 / 1e9
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }
}

/// Monotonic counters, updated without locks.
#[derive(Default, Debug)]
pub struct Stats {
    /// TLS/QUIC handshakes that failed (wrong CA, wrong ALPN, timeouts).
    pub handshakes_failed: AtomicU64,
    /// TLS/QUIC handshakes that completed.
    pub handshakes_ok: AtomicU64,
    /// Incoming connection attempts admitted to a handshake.
    pub connections_accepted: AtomicU64,
    /// Metrics samples received.
    pub metrics_samples: AtomicU64,
    /// Connections refused because every handshake slot stayed busy (a reconnect storm).
    pub handshakes_refused: AtomicU64,
    /// Enrolments that issued a certificate.
    pub enrolments_ok: AtomicU64,
    /// Enrolments refused (bad or used token, taken name…).
    pub enrolments_refused: AtomicU64,
    /// Exec jobs started (one per `flotilla exec`, whatever the number of agents).
    pub exec_jobs_started: AtomicU64,
    /// Exec runs started on agents.
    pub exec_runs_started: AtomicU64,
    /// Exec runs that ended (any outcome).
    pub exec_runs_finished: AtomicU64,
    /// Bulk lanes agents opened for transfers (see `ClientOpen::Bulk`).
    pub bulk_lanes_opened: AtomicU64,
    /// Transfers started.
    pub transfers_started: AtomicU64,
    /// Transfers completed and verified.
    pub transfers_completed: AtomicU64,
    /// Transfers that failed or were cancelled.
    pub transfers_failed: AtomicU64,
    /// Messages and bytes per stream kind.
    pub traffic: Traffic,
}

impl Stats {
    pub(crate) fn handshake_failed(&self) {
        self.handshakes_failed.fetch_add(1, Relaxed);
    }

    pub(crate) fn handshake_ok(&self) {
        self.handshakes_ok.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Relaxed);
    }

    pub(crate) fn handshake_refused(&self) {
        self.handshakes_refused.fetch_add(1, Relaxed);
    }

    pub(crate) fn metrics_sample(&self) {
        self.metrics_samples.fetch_add(1, Relaxed);
    }

    pub(crate) fn enrolment(&self, ok: bool) {
        let c = if ok {
            &self.enrolments_ok
        } else {
            &self.enrolments_refused
        };
        c.fetch_add(1, Relaxed);
    }

    /// Counts an exec job (for the exec fan-out).
    pub fn exec_job_started(&self) {
        self.exec_jobs_started.fetch_add(1, Relaxed);
    }

    /// Counts an exec run starting (`true`) or ending (`false`) on an agent.
    pub fn exec_run(&self, started: bool) {
        let c = if started {
            &self.exec_runs_started
        } else {
            &self.exec_runs_finished
        };
        c.fetch_add(1, Relaxed);
    }

    /// Counts a bulk lane welcomed.
    pub fn bulk_lane_opened(&self) {
        self.bulk_lanes_opened.fetch_add(1, Relaxed);
    }

    /// Counts a transfer starting.
    pub fn transfer_started(&self) {
        self.transfers_started.fetch_add(1, Relaxed);
    }

    /// Counts a transfer ending, completed or not.
    pub fn transfer_finished(&self, completed: bool) {
        let c = if completed {
            &self.transfers_completed
        } else {
            &self.transfers_failed
        };
        c.fetch_add(1, Relaxed);
    }

    /// Counts `bytes` of one message of `kind` moving in `dir` (for code that does not go through
    /// [`Stats::reader`] or [`Stats::writer`]).
    pub fn message(&self, kind: StreamKind, dir: Direction, bytes: u64) {
        self.traffic.add(kind, dir, 1, bytes);
    }

    /// Wraps `inner` for reading one message of `kind`.
    pub fn reader<'a, R>(&'a self, kind: StreamKind, inner: &'a mut R) -> Counted<'a, R> {
        Counted {
            inner,
            stats: self,
            kind,
            dir: Direction::In,
            bytes: 0,
        }
    }

    /// Wraps `inner` for writing one message of `kind`.
    pub fn writer<'a, W>(&'a self, kind: StreamKind, inner: &'a mut W) -> Counted<'a, W> {
        Counted {
            inner,
            stats: self,
            kind,
            dir: Direction::Out,
            bytes: 0,
        }
    }
}

/// A stream borrowed for one message; counts its bytes, and the message when dropped if any byte
/// moved (so a read that found the end of the stream counts nothing).
pub struct Counted<'a, S> {
    inner: &'a mut S,
    stats: &'a Stats,
    kind: StreamKind,
    dir: Direction,
    bytes: u64,
}

impl<S> Drop for Counted<'_, S> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.stats.traffic.add(self.kind, self.dir, 1, self.bytes);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut *this.inner).poll_read(cx, buf);
        this.bytes += (buf.filled().len() - before) as u64;
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut *this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &res {
            this.bytes += *n as u64;
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn wrappers_count_messages_and_bytes() {
        let stats = Stats::default();
        let mut sink = Vec::new();
        stats
            .writer(StreamKind::Events, &mut sink)
            .write_all(b"hello")
            .await
            .expect("write");
        let mut src: &[u8] = b"abc";
        let mut buf = Vec::new();
        stats
            .reader(StreamKind::Metrics, &mut src)
            .read_to_end(&mut buf)
            .await
            .expect("read");
        let mut empty: &[u8] = b"";
        let _ = stats
            .reader(StreamKind::Metrics, &mut empty)
            .read_to_end(&mut buf)
            .await;
        let t = &stats.traffic;
        assert_eq!(t.messages(StreamKind::Events, Direction::Out), 1);
        assert_eq!(t.bytes(StreamKind::Events, Direction::Out), 5);
        assert_eq!(
            t.messages(StreamKind::Metrics, Direction::In),
            1,
            "EOF is no message"
        );
        assert_eq!(t.bytes(StreamKind::Metrics, Direction::In), 3);
    }

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let (buckets, total) = h.cumulative();
        assert_eq!(total, 3);
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets.last().map(|b| b.1), Some(2), "10 s is only in +Inf");
        assert!((h.sum_s() - 10.00305).abs() < 1e-6);
    }
}
