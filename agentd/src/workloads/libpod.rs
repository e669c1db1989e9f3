//! Podman's own API (libpod) on the engine's socket, for the one thing the Docker-compatible API
//! makes expensive: stats. Docker's API answers one container per request, so an agent with 200
//! running containers made 200 requests and parsed 200 full stats documents every interval;
//! libpod answers every running container's counters in one request of about 450 bytes each.
//!
//! Only the counters the inventory carries are read; they are the cgroup figures Podman's
//! Docker-compatible stats are built from, so the rates keep their meaning.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// The request: one-shot (`stream=false`) stats of every running container. Version 4.0.0 is the
/// oldest libpod API that Podman 4 and 5 serve; an engine without it answers 404 or 400 and gets
/// the per-container path.
const STATS_PATH: &str = "/v4.0.0/libpod/containers/stats?stream=false";
/// Most bytes of a stats reply read: an entry is about 450 bytes (two CPUs' `PerCPU`; 1.5 KiB with
/// 128), so this holds thousands of containers on any machine while bounding what a confused
/// engine can make the agent hold.
const MAX_STATS_REPLY: usize = 32 << 20;

/// Why the libpod stats request failed.
#[derive(Debug, thiserror::Error)]
pub enum LibpodError {
    /// The engine answered but has no libpod stats here (Docker, an older Podman): use Docker's
    /// per-container API instead, for good.
    #[error("engine at {socket} has no libpod stats API (HTTP {status})")]
    Unsupported {
        /// The socket.
        socket: String,
        /// The HTTP status it answered.
        status: u16,
    },
    /// The request failed this time (connection, timeout, a reply we could not read, or an error
    /// the engine reported); the next interval tries again.
    #[error("libpod stats at {socket}: {detail}")]
    Failed {
        /// The socket.
        socket: String,
        /// What went wrong.
        detail: String,
    },
}

/// One running container's counters, as libpod reports them (field names are libpod's).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct PodStats {
    /// The full container id.
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    /// CPU time used since the container started, ns (the cgroup's total usage).
    #[serde(rename = "CPUNano")]
    pub cpu_nano: u64,
    /// Memory in use, bytes, as `podman stats` shows it.
    pub mem_usage: u64,
    /// Memory limit, bytes (the host's memory when the container has none).
    pub mem_limit: u64,
    /// Bytes received on the container's network interfaces.
    pub net_input: u64,
    /// Bytes sent on the container's network interfaces.
    pub net_output: u64,
    /// Bytes read from block devices.
    pub block_input: u64,
    /// Bytes written to block devices.
    pub block_output: u64,
    /// Processes and threads in the container.
    #[serde(rename = "PIDs")]
    pub pids: u64,
}

/// The reply: libpod's `ContainerStatsReport`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Report {
    /// Non-null when the engine failed to read some container's stats.
    error: Option<serde_json::Value>,
    stats: Option<Vec<PodStats>>,
}

/// Parses a stats reply.
fn parse(socket: &Path, body: &[u8]) -> Result<Vec<PodStats>, LibpodError> {
    let failed = |detail: String| LibpodError::Failed {
        socket: socket.display().to_string(),
        detail,
    };
    let report: Report =
        serde_json::from_slice(body).map_err(|e| failed(format!("unreadable reply: {e}")))?;
    if let Some(error) = report.error {
        return Err(failed(format!("engine reported {error}")));
    }
    Ok(report.stats.unwrap_or_default())
}

/// The stats of every running container, in one request on a connection of its own (one a poll:
/// nothing is kept between intervals, so an engine restarted in between costs nothing).
/// Cancel-safe: dropping it drops the connection.
pub async fn all_stats(socket: &Path, timeout: Duration) -> Result<Vec<PodStats>, LibpodError> {
    let failed = |detail: String| LibpodError::Failed {
        socket: socket.display().to_string(),
        detail,
    };
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| failed(format!("connect: {e}")))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let request = hyper::Request::get(STATS_PATH)
            // HTTP/1.1 needs a Host; the engine ignores its value on a unix socket.
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|e| failed(e.to_string()))?;
        let reply = async {
            let response = send
                .send_request(request)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_STATS_REPLY)
                .collect()
                .await
                .map_err(|e| failed(format!("reading the reply: {e}")))?
                .to_bytes();
            Ok::<_, LibpodError>((status, body))
        };
        // The connection future moves the bytes; it runs beside the exchange on this task.
        let mut reply = std::pin::pin!(reply);
        let mut conn = std::pin::pin!(conn);
        let (status, body) = tokio::select! {
            biased;
            r = &mut reply => r?,
            closed = &mut conn => {
                closed.map_err(|e| failed(e.to_string()))?;
                // Closed cleanly after the reply: what it delivered is still to be read.
                reply.await?
            }
        };
        if status == hyper::StatusCode::NOT_FOUND || status == hyper::StatusCode::BAD_REQUEST {
            return Err(LibpodError::Unsupported {
                socket: socket.display().to_string(),
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(failed(format!("HTTP {}: {}", status.as_u16(), text.trim())));
        }
        parse(socket, &body)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| failed(format!("no reply within {} s", timeout.as_secs())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as Podman 4.3.1 writes it (two containers, the second busy).
    const REPLY: &str = r#"{"Error":null,"Stats":[{"AvgCPU":0.81,"ContainerID":"2643d4816f6d","Name":"a","PerCPU":[8365644,23797606],"CPU":0.81,"CPUNano":32163250,"CPUSystemNano":11974241,"SystemNano":1796680188234538438,"MemUsage":798720,"MemLimit":25276182528,"MemPerc":0.003,"NetInput":10,"NetOutput":20,"BlockInput":30,"BlockOutput":40,"PIDs":1,"UpTime":32163250,"Duration":32163250},{"AvgCPU":99.7,"ContainerID":"c08810b52dfe","Name":"b","PerCPU":[2985165,3817564992],"CPU":99.7,"CPUNano":3820550157,"CPUSystemNano":20000000,"SystemNano":1796680188234879805,"MemUsage":626688,"MemLimit":25276182528,"MemPerc":0.002,"NetInput":0,"NetOutput":0,"BlockInput":0,"BlockOutput":0,"PIDs":3,"UpTime":3820550157,"Duration":3820550157}]}"#;

    #[test]
    fn a_reply_gives_each_containers_counters() {
        let s = parse(Path::new("/e.sock"), REPLY.as_bytes()).expect("parses");
        assert_eq!(
            s[0],
            PodStats {
                container_id: "2643d4816f6d".into(),
                cpu_nano: 32_163_250,
                mem_usage: 798_720,
                mem_limit: 25_276_182_528,
                net_input: 10,
                net_output: 20,
                block_input: 30,
                block_output: 40,
                pids: 1,
            }
        );
        assert_eq!(s[1].cpu_nano, 3_820_550_157);
        assert_eq!(s[1].pids, 3);
        let none = parse(Path::new("/e.sock"), br#"{"Error":null,"Stats":null}"#).expect("parses");
        assert!(none.is_empty(), "no running container");
    }

    #[test]
    fn an_error_the_engine_reports_or_a_bad_reply_fails_the_request() {
        let err =
            parse(Path::new("/e.sock"), br#"{"Error":{},"Stats":null}"#).expect_err("engine error");
        assert!(
            matches!(&err, LibpodError::Failed { detail, .. } if detail == "engine reported {}"),
            "{err}"
        );
        let err = parse(
            Path::new("/e.sock"),
            br#"{"Error":null,"Stats":[{"ContainerID":"x"}]}"#,
        )
        .expect_err("missing counters");
        assert!(
            matches!(&err, LibpodError::Failed { detail, .. } if detail.starts_with("unreadable reply: missing field")),
            "{err}"
        );
    }
}
