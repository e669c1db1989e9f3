//! The opt-in Prometheus endpoint (`metrics_listen`, `--metrics-listen`): `GET /metrics` in the
//! text exposition format over plain HTTP/1.1, one request per connection. The text comes from
//! `prometheus-client`'s encoder of the 0.0.4 format; the HTTP side is tokio alone: one route
//! needs no web framework.
//!
//! Exported: agents by state, connections, handshakes, enrolments, messages and bytes per stream
//! kind, metrics samples, exec and transfer counts, the store's call latency, and the process's
//! memory and file descriptors (Linux); and alerts firing by rule and severity.

mod alerts;

use crate::stats::{Direction, LATENCY_BUCKETS_S, StreamKind};
use crate::{HubCtx, HubError, store};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest request head read: a scrape's is ~200 bytes; anything bigger is not a scraper.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client must send its request and take the answer within this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once; more are closed at once (a scraper misconfigured to hammer us must not
/// cost the hub more than this many store calls at a time).
const MAX_CONCURRENT: usize = 8;
/// Content type of the text exposition format (0.0.4), the one every Prometheus version reads.
const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Binds the endpoint, warning when it is reachable from other machines (it has no auth).
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, HubError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| HubError::io(format!("bind metrics endpoint {addr}"), e))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "metrics endpoint is not on loopback and has no authentication: firewall it");
    }
    Ok(listener)
}

/// Serves scrapes until cancelled.
pub(crate) async fn serve(
    ctx: Arc<HubCtx>,
    listener: TcpListener,
    started_ms: u64,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint accept failed");
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!("too many scrapes at once; connection dropped");
            continue;
        };
        let ctx = ctx.clone();
        tracker.spawn(async move {
            let _ =
                tokio::time::timeout(CONNECTION_TIMEOUT, serve_one(&ctx, stream, started_ms)).await;
            drop(permit);
        });
    }
}

/// Reads the request head (up to the blank line), bounded.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_REQUEST_HEAD {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str, head_only: bool) {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn serve_one(ctx: &HubCtx, mut stream: TcpStream, started_ms: u64) {
    let Some(head) = read_head(&mut stream).await else {
        return respond(&mut stream, "400 Bad Request", "bad request\n", false).await;
    };
    let mut words = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut stream, "405 Method Not Allowed", "use GET\n", false).await;
    }
    if path != "/metrics" {
        return respond(&mut stream, "404 Not Found", "try /metrics\n", head_only).await;
    }
    match render(ctx, started_ms).await {
        Ok(body) => respond(&mut stream, "200 OK", &body, head_only).await,
        Err(e) => {
            tracing::warn!(error = %e, "metrics scrape failed");
            respond(
                &mut stream,
                "503 Service Unavailable",
                "store unavailable\n",
                head_only,
            )
            .await
        }
    }
}

/// Label pairs of one series.
type Labels = Vec<(&'static str, &'static str)>;

/// One scrape's registry, built from the hub's own lock-free counters as they stand when the scrape
/// comes (a few dozen series): the hot paths keep their plain atomics and nothing is counted twice.
struct Exposition(Registry);

impl Exposition {
    /// `name` gets `_total` when encoded.
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        self.0.register(name, help, c);
    }

    /// A counter family; `name` gets `_total` when encoded.
    fn counters(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let family = Family::<Labels, Counter<u64>>::default();
        for (labels, value) in series {
            family.get_or_create(&labels).inc_by(value);
        }
        self.0.register(name, help, family);
    }

    fn gauges(&mut self, name: &str, help: &str, series: impl IntoIterator<Item = (Labels, u64)>) {
        let family = Family::<Labels, Gauge<u64, AtomicU64>>::default();
        for (labels, value) in series {
            family.get_or_create(&labels).set(value);
        }
        self.0.register(name, help, family);
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        let g = Gauge::<u64, AtomicU64>::default();
        g.set(value);
        self.0.register(name, help, g);
    }

    fn gauge_f64(&mut self, name: &str, help: &str, value: f64) {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(value);
        self.0.register(name, help, g);
    }

    fn encode(self) -> Result<String, HubError> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_text::encode(&mut out, &self.0)
            .map_err(|e| HubError::io("encode the metrics exposition", std::io::Error::other(e)))?;
        Ok(out)
    }
}

/// The store's call latency as read at the scrape: the hub's own lock-free histogram
/// ([`crate::stats::Histogram`]) holds the counts, so it is encoded as it stands.
#[derive(Debug)]
struct StoreLatency {
    /// Observations per bucket (not cumulative), the last bound `+Inf`.
    buckets: Vec<(f64, u64)>,
    sum_s: f64,
    count: u64,
}

impl StoreLatency {
    fn read(h: &crate::stats::Histogram) -> Self {
        let (cumulative, total) = h.cumulative();
        debug_assert_eq!(cumulative.len(), LATENCY_BUCKETS_S.len());
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = cumulative
            .into_iter()
            .map(|(bound, acc)| {
                let n = acc - below;
                below = acc;
                (bound, n)
            })
            .collect();
        buckets.push((f64::INFINITY, total - below));
        // `+Inf` and `_count` are the same number: the total of the buckets read, not the
        // histogram's own count, which a store call finishing during the read may have moved on.
        Self {
            buckets,
            sum_s: h.sum_s(),
            count: total,
        }
    }
}

impl Collector for StoreLatency {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metric = encoder.encode_descriptor(
            "flotilla_hub_store_call_duration_seconds",
            "Time from queueing a database job to its result (queue wait included); writes dominate.",
            None,
            MetricType::Histogram,
        );
        metric?.encode_histogram::<NoLabelSet>(self.sum_s, self.count, &self.buckets, None)
    }
}

/// Renders every metric (one store call, for the agent counts).
pub(crate) async fn render(ctx: &HubCtx, started_ms: u64) -> Result<String, HubError> {
    let (enrolled, revoked) = ctx
        .store
        .call(|c| Ok(store::identities::count_agents(c)?))
        .await?;
    let online = ctx.registry.online_count() as u64;
    let s = &ctx.stats;
    let mut t = Exposition(Registry::default());

    t.gauges(
        "flotilla_hub_info",
        "Hub version (value 1).",
        [(vec![("version", env!("CARGO_PKG_VERSION"))], 1)],
    );
    t.gauge_f64(
        "flotilla_hub_start_time_seconds",
        "When the hub started, seconds since the Unix epoch.",
        started_ms as f64 / 1000.0,
    );
    t.gauges(
        "flotilla_hub_agents",
        "Enrolled agents by state: online (connected now), offline, revoked.",
        [
            (vec![("state", "online")], online),
            (vec![("state", "offline")], enrolled.saturating_sub(online)),
            (vec![("state", "revoked")], revoked),
        ],
    );
    t.gauges(
        "flotilla_hub_connections",
        "Open connections by role.",
        [
            (vec![("role", "agent")], online),
            (
                vec![("role", "operator")],
                ctx.registry.operator_count() as u64,
            ),
            (vec![("role", "bulk")], ctx.registry.bulk_count() as u64),
        ],
    );
    t.counter(
        "flotilla_hub_bulk_lanes_opened",
        "Bulk lanes agents opened for transfers.",
        s.bulk_lanes_opened.load(Relaxed),
    );
    t.counter(
        "flotilla_hub_connections_accepted",
        "Incoming connections admitted to a handshake.",
        s.connections_accepted.load(Relaxed),
    );
    t.counters(
        "flotilla_hub_handshakes",
        "TLS/QUIC handshakes by result.",
        [
            (vec![("result", "ok")], s.handshakes_ok.load(Relaxed)),
            (
                vec![("result", "failed")],
                s.handshakes_failed.load(Relaxed),
            ),
        ],
    );
    t.counter(
        "flotilla_hub_session_tickets_accepted",
        "TLS session tickets the hub opened and found valid: handshakes that resumed a session \
         instead of exchanging certificates (after a hub restart, most reconnects).",
        ctx.tickets.accepted(),
    );
    t.counters(
        "flotilla_hub_enrolments",
        "Enrolments by result.",
        [
            (vec![("result", "ok")], s.enrolments_ok.load(Relaxed)),
            (
                vec![("result", "refused")],
                s.enrolments_refused.load(Relaxed),
            ),
        ],
    );
    let traffic = |bytes: bool| {
        StreamKind::ALL.into_iter().flat_map(move |kind| {
            [Direction::In, Direction::Out].map(|dir| {
                let v = if bytes {
                    s.traffic.bytes(kind, dir)
                } else {
                    s.traffic.messages(kind, dir)
                };
                (
                    vec![("kind", kind.as_str()), ("direction", dir.as_str())],
                    v,
                )
            })
        })
    };
    t.counters(
        "flotilla_hub_messages",
        "Messages (frames) by stream kind and direction.",
        traffic(false),
    );
    t.counters(
        "flotilla_hub_bytes",
        "Bytes of messages by stream kind and direction.",
        traffic(true),
    );
    t.counter(
        "flotilla_hub_metrics_samples",
        "Metrics samples received from agents.",
        s.metrics_samples.load(Relaxed),
    );
    t.counter(
        "flotilla_hub_exec_jobs",
        "Exec jobs started (one per request, whatever the number of agents).",
        s.exec_jobs_started.load(Relaxed),
    );
    t.counters(
        "flotilla_hub_exec_runs",
        "Exec runs on agents by event.",
        [
            (
                vec![("event", "started")],
                s.exec_runs_started.load(Relaxed),
            ),
            (
                vec![("event", "finished")],
                s.exec_runs_finished.load(Relaxed),
            ),
        ],
    );
    t.counters(
        "flotilla_hub_transfers",
        "File transfers by event.",
        [
            (
                vec![("event", "started")],
                s.transfers_started.load(Relaxed),
            ),
            (
                vec![("event", "completed")],
                s.transfers_completed.load(Relaxed),
            ),
            (vec![("event", "failed")], s.transfers_failed.load(Relaxed)),
        ],
    );
    t.0.register_collector(Box::new(StoreLatency::read(ctx.store.latency())));
    let rules = ctx.alerts.rule_infos();
    t.alert_gauges(alerts::firing_counts(
        rules
            .iter()
            .map(|r| (r.rule.name.as_str(), r.rule.severity)),
        &ctx.alerts.list(false),
    ));
    process_metrics(&mut t);
    t.encode()
}

/// Resident memory and open descriptors from /proc (Linux); nothing elsewhere.
fn process_metrics(t: &mut Exposition) {
    // statm's second field is resident pages.
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok());
    if let Some(pages) = rss_pages {
        #[cfg(unix)]
        // SAFETY: sysconf has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // Unreachable: there is no /proc off Unix.
        #[cfg(not(unix))]
        let page = 4096;
        t.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            pages * page,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        t.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count() as u64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_keep_their_names_types_and_escaped_labels() {
        let mut t = Exposition(Registry::default());
        t.counters("m", "Help.", [(vec![("k", "a\"b\\c\nd")], 3)]);
        t.gauge_f64("g", "G.", 1.5);
        let h = crate::stats::Histogram::default();
        h.observe(Duration::from_millis(2));
        h.observe(Duration::from_secs(9));
        t.0.register_collector(Box::new(StoreLatency::read(&h)));
        let text = t.encode().expect("encode");
        assert!(text.contains("# TYPE m_total counter\n"), "{text}");
        assert!(
            text.contains("m_total{k=\"a\\\"b\\\\c\\nd\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE g gauge\ng 1.5\n"), "{text}");
        let name = "flotilla_hub_store_call_duration_seconds";
        assert!(
            text.contains(&format!("{name}_bucket{{le=\"0.001\"}} 0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{name}_bucket{{le=\"0.0025\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{name}_bucket{{le=\"5\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{name}_bucket{{le=\"+Inf\"}} 2\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{name}_count 2\n")), "{text}");
    }
}
