//! The opt-in Prometheus endpoint (`metrics_listen`, `--metrics-listen`): `GET /metrics` in the
//! text exposition format over plain HTTP/1.1, one request per connection. Written with tokio
//! alone: one route needs no web framework.
//!
//! Exported: agents by state, connections, handshakes, enrolments, messages and bytes per stream
//! kind, metrics samples, exec and transfer counts, the store's call latency, and the process's
//! memory and file descriptors (Linux).

use crate::stats::{Direction, LATENCY_BUCKETS_S, StreamKind};
use crate::{HubCtx, HubError, store};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
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
/// Content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text, one family after another.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.0, " {value}");
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
    let mut t = Text(String::with_capacity(8 * 1024));

    t.family("flotilla_hub_info", "gauge", "Hub version (value 1).");
    t.sample(
        "flotilla_hub_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    t.family(
        "flotilla_hub_start_time_seconds",
        "gauge",
        "When the hub started, seconds since the Unix epoch.",
    );
    t.sample(
        "flotilla_hub_start_time_seconds",
        &[],
        started_ms as f64 / 1000.0,
    );
    t.family(
        "flotilla_hub_agents",
        "gauge",
        "Enrolled agents by state: online (connected now), offline, revoked.",
    );
    t.sample("flotilla_hub_agents", &[("state", "online")], online);
    t.sample(
        "flotilla_hub_agents",
        &[("state", "offline")],
        enrolled.saturating_sub(online),
    );
    t.sample("flotilla_hub_agents", &[("state", "revoked")], revoked);
    t.family(
        "flotilla_hub_connections",
        "gauge",
        "Open connections by role.",
    );
    t.sample("flotilla_hub_connections", &[("role", "agent")], online);
    t.sample(
        "flotilla_hub_connections",
        &[("role", "operator")],
        ctx.registry.operator_count(),
    );
    t.sample(
        "flotilla_hub_connections",
        &[("role", "bulk")],
        ctx.registry.bulk_count(),
    );
    t.family(
        "flotilla_hub_bulk_lanes_opened_total",
        "counter",
        "Bulk lanes agents opened for transfers.",
    );
    t.sample(
        "flotilla_hub_bulk_lanes_opened_total",
        &[],
        s.bulk_lanes_opened.load(Relaxed),
    );
    t.family(
        "flotilla_hub_connections_accepted_total",
        "counter",
        "Incoming connections admitted to a handshake.",
    );
    t.sample(
        "flotilla_hub_connections_accepted_total",
        &[],
        s.connections_accepted.load(Relaxed),
    );
    t.family(
        "flotilla_hub_handshakes_total",
        "counter",
        "TLS/QUIC handshakes by result.",
    );
    t.sample(
        "flotilla_hub_handshakes_total",
        &[("result", "ok")],
        s.handshakes_ok.load(Relaxed),
    );
    t.sample(
        "flotilla_hub_handshakes_total",
        &[("result", "failed")],
        s.handshakes_failed.load(Relaxed),
    );
    t.family(
        "flotilla_hub_enrolments_total",
        "counter",
        "Enrolments by result.",
    );
    t.sample(
        "flotilla_hub_enrolments_total",
        &[("result", "ok")],
        s.enrolments_ok.load(Relaxed),
    );
    t.sample(
        "flotilla_hub_enrolments_total",
        &[("result", "refused")],
        s.enrolments_refused.load(Relaxed),
    );
    for (name, help, bytes) in [
        (
            "flotilla_hub_messages_total",
            "Messages (frames) by stream kind and direction.",
            false,
        ),
        (
            "flotilla_hub_bytes_total",
            "Bytes of messages by stream kind and direction.",
            true,
        ),
    ] {
        t.family(name, "counter", help);
        for kind in StreamKind::ALL {
            for dir in [Direction::In, Direction::Out] {
                let v = if bytes {
                    s.traffic.bytes(kind, dir)
                } else {
                    s.traffic.messages(kind, dir)
                };
                t.sample(
                    name,
                    &[("kind", kind.as_str()), ("direction", dir.as_str())],
                    v,
                );
            }
        }
    }
    t.family(
        "flotilla_hub_metrics_samples_total",
        "counter",
        "Metrics samples received from agents.",
    );
    t.sample(
        "flotilla_hub_metrics_samples_total",
        &[],
        s.metrics_samples.load(Relaxed),
    );
    t.family(
        "flotilla_hub_exec_jobs_total",
        "counter",
        "Exec jobs started (one per request, whatever the number of agents).",
    );
    t.sample(
        "flotilla_hub_exec_jobs_total",
        &[],
        s.exec_jobs_started.load(Relaxed),
    );
    t.family(
        "flotilla_hub_exec_runs_total",
        "counter",
        "Exec runs on agents by event.",
    );
    t.sample(
        "flotilla_hub_exec_runs_total",
        &[("event", "started")],
        s.exec_runs_started.load(Relaxed),
    );
    t.sample(
        "flotilla_hub_exec_runs_total",
        &[("event", "finished")],
        s.exec_runs_finished.load(Relaxed),
    );
    t.family(
        "flotilla_hub_transfers_total",
        "counter",
        "File transfers by event.",
    );
    t.sample(
        "flotilla_hub_transfers_total",
        &[("event", "started")],
        s.transfers_started.load(Relaxed),
    );
    t.sample(
        "flotilla_hub_transfers_total",
        &[("event", "completed")],
        s.transfers_completed.load(Relaxed),
    );
    t.sample(
        "flotilla_hub_transfers_total",
        &[("event", "failed")],
        s.transfers_failed.load(Relaxed),
    );

    let h = ctx.store.latency();
    let name = "flotilla_hub_store_call_duration_seconds";
    t.family(
        name,
        "histogram",
        "Time from queueing a database job to its result (queue wait included); writes dominate.",
    );
    let (buckets, total) = h.cumulative();
    debug_assert_eq!(buckets.len(), LATENCY_BUCKETS_S.len());
    for (bound, count) in buckets {
        t.sample(
            &format!("{name}_bucket"),
            &[("le", &bound.to_string())],
            count,
        );
    }
    t.sample(&format!("{name}_bucket"), &[("le", "+Inf")], total);
    t.sample(&format!("{name}_sum"), &[], h.sum_s());
    t.sample(&format!("{name}_count"), &[], total);

    process_metrics(&mut t);
    Ok(t.0)
}

/// Resident memory and open descriptors from /proc (Linux); nothing elsewhere.
fn process_metrics(t: &mut Text) {
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
        t.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        t.sample("process_resident_memory_bytes", &[], pages * page);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        t.family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        t.sample("process_open_fds", &[], fds.count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
        let mut t = Text(String::new());
        t.sample("m", &[("k", "v")], 1.5);
        t.sample("n", &[], 2);
        assert_eq!(t.0, "m{k=\"v\"} 1.5\nn 2\n");
    }
}
