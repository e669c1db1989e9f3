//! The link to the hub: a supervisor that dials, says hello, runs the session, and on any failure
//! waits with exponential back-off and full jitter (1 s to 60 s) so a hub restart with thousands of
//! agents does not become a thundering herd.

use crate::metrics::Collector;
use flotilla_certs::dial::{self, DialError};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_METRICS_FRAME};
use flotilla_wire::msg::{Hello, HubControl, MetricsFrame, StreamOpen};
use flotilla_wire::{ErrorCode, IdentityId};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// First back-off ceiling.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Largest back-off: a minute keeps a dead hub's log quiet and bounds recovery time.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A session that lasted this long was healthy: the next failure starts back-off from the bottom.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Time to flush the goodbye before exiting.
const GOODBYE_FLUSH: Duration = Duration::from_secs(2);

/// Where the link stands, for `agentd status`, tests and the health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Not yet connected, or between attempts; carries the last failure in words.
    Disconnected(String),
    /// The hub's welcome arrived.
    Connected {
        /// Our identity as the hub knows it.
        id: IdentityId,
        /// Our name in the registry.
        name: String,
    },
}

/// Exponential back-off with full jitter.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The next delay, drawn uniformly between [`BACKOFF_MIN`] and the current ceiling, which doubles
    /// per failure up to [`BACKOFF_MAX`]. `unit` is a random number in [0, 1).
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let ceiling = BACKOFF_MIN
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        BACKOFF_MIN + (ceiling - BACKOFF_MIN).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Back to the bottom after a stable session.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Straight to the top: the hub said no for a reason retrying will not fix soon.
    pub fn saturate(&mut self) {
        self.attempt = 16;
    }
}

/// Everything a link needs.
pub struct Link {
    /// TLS client configuration with our identity.
    pub client: quinn::ClientConfig,
    /// Hub addresses.
    pub hubs: Vec<String>,
    /// What we say in hello.
    pub hello: Hello,
    /// Metrics interval override (0: as the hub says).
    pub metrics_interval_ms: u32,
    /// Where state changes are published.
    pub state: watch::Sender<LinkState>,
    /// The shared folder: snapshots to the hub, transfers from it.
    pub files: Arc<crate::transfer::SharedFolder>,
}

/// Words for a failure, with advice.
fn advise(err: &DialError) -> String {
    match err.code() {
        Some(ErrorCode::Revoked) => {
            "hub says this agent's certificate is revoked: enrol again with a new token".into()
        }
        Some(ErrorCode::UnknownIdentity) => {
            "hub does not know this agent (registry restored or another hub): enrol again".into()
        }
        Some(ErrorCode::VersionMismatch) => {
            format!("{err}: install matching versions of agentd and hubd")
        }
        _ => err.to_string(),
    }
}

impl Link {
    /// Runs until cancelled.
    pub async fn run(self, collector: Arc<Mutex<Collector>>, cancel: CancellationToken) {
        let endpoint = match dial::client_endpoint(dial::wants_ipv6(&self.hubs)) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot open a socket");
                return;
            }
        };
        let mut backoff = Backoff::default();
        loop {
            let started = Instant::now();
            match self.session(&endpoint, &collector, &cancel).await {
                Ok(()) => break,
                Err(err) => {
                    let words = advise(&err);
                    let lasting = started.elapsed() >= STABLE_AFTER;
                    if lasting {
                        backoff.reset();
                    }
                    if matches!(
                        err.code(),
                        Some(ErrorCode::Revoked | ErrorCode::UnknownIdentity)
                    ) || matches!(err, DialError::Tls(_))
                    {
                        backoff.saturate();
                        tracing::error!(reason = %words, "hub refused this agent");
                    } else {
                        tracing::warn!(reason = %words, "link to hub down");
                    }
                    self.state.send_replace(LinkState::Disconnected(words));
                }
            }
            let delay = backoff.next_delay(fastrand::f64());
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting after back-off"
            );
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.state
            .send_replace(LinkState::Disconnected("agent stopped".into()));
        let _ = tokio::time::timeout(GOODBYE_FLUSH, endpoint.wait_idle()).await;
    }

    /// One connection's life. `Ok` only when cancelled.
    async fn session(
        &self,
        endpoint: &quinn::Endpoint,
        collector: &Arc<Mutex<Collector>>,
        cancel: &CancellationToken,
    ) -> Result<(), DialError> {
        let (conn, _send, mut recv, welcome) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = dial::hello(endpoint, &self.hubs, self.client.clone(), self.hello.clone()) => r?,
        };
        tracing::info!(id = %welcome.identity, name = %welcome.name, hub_version = %welcome.hub_version, "connected to hub");
        self.state.send_replace(LinkState::Connected {
            id: welcome.identity.clone(),
            name: welcome.name.clone(),
        });
        let interval = if self.metrics_interval_ms > 0 {
            self.metrics_interval_ms
        } else {
            welcome.metrics_interval_ms
        };
        let (interval_tx, interval_rx) = watch::channel(interval);
        let override_set = self.metrics_interval_ms > 0;
        let metrics = send_metrics(conn.clone(), collector.clone(), interval_rx);
        let control = async {
            loop {
                match read_frame::<HubControl, _>(&mut recv, MAX_CONTROL_FRAME).await {
                    Ok(Some(HubControl::SetMetricsInterval { interval_ms })) => {
                        let ms = if override_set && interval_ms >= interval {
                            interval
                        } else {
                            interval_ms.max(1000)
                        };
                        let _ = interval_tx.send(ms);
                    }
                    Ok(None) => return DialError::Protocol("hub closed the control stream".into()),
                    Err(e) => {
                        return conn
                            .close_reason()
                            .map(|r| dial::explain(&r))
                            .unwrap_or(DialError::Protocol(e.to_string()));
                    }
                }
            }
        };
        let snapshots = crate::watch::run(conn.clone(), self.files.clone());
        let transfers =
            crate::transfer::serve(conn.clone(), self.files.clone(), welcome.name.clone());
        tokio::select! {
            _ = cancel.cancelled() => {
                conn.close(ErrorCode::Goodbye.as_u32().into(), b"agent shutting down");
                Ok(())
            }
            err = conn.closed() => Err(dial::explain(&err)),
            err = metrics => Err(err),
            err = control => Err(err),
            err = snapshots => Err(err),
            err = transfers => Err(err),
        }
    }
}

/// Samples and sends metrics at the current interval until the stream fails.
async fn send_metrics(
    conn: quinn::Connection,
    collector: Arc<Mutex<Collector>>,
    mut interval: watch::Receiver<u32>,
) -> DialError {
    let lost = |conn: &quinn::Connection, what: String| {
        conn.close_reason()
            .map(|r| dial::explain(&r))
            .unwrap_or(DialError::Protocol(what))
    };
    let mut send = match conn.open_uni().await {
        Ok(s) => s,
        Err(e) => return dial::explain(&e),
    };
    if let Err(e) = write_frame(&mut send, &StreamOpen::Metrics, MAX_CONTROL_FRAME).await {
        return lost(&conn, e.to_string());
    }
    loop {
        let c = collector.clone();
        let Ok(Some(sample)) =
            tokio::task::spawn_blocking(move || c.lock().map(|mut c| c.sample()).ok()).await
        else {
            return DialError::Local("metrics collector failed".into());
        };
        if let Err(e) =
            write_frame(&mut send, &MetricsFrame::Sample(sample), MAX_METRICS_FRAME).await
        {
            return lost(&conn, format!("metrics stream: {e}"));
        }
        let period = Duration::from_millis(u64::from(*interval.borrow_and_update()));
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            changed = interval.changed() => if changed.is_err() { return DialError::Local("interval channel closed".into()) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_minute_with_jitter_and_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(0.0), BACKOFF_MIN);
        assert_eq!(b.next_delay(1.0), Duration::from_secs(2));
        assert_eq!(b.next_delay(1.0), Duration::from_secs(4));
        for _ in 0..10 {
            b.next_delay(0.5);
        }
        assert_eq!(b.next_delay(1.0), BACKOFF_MAX);
        assert!(b.next_delay(0.5) < BACKOFF_MAX, "jitter spreads agents out");
        b.reset();
        assert_eq!(b.next_delay(1.0), BACKOFF_MIN);
        b.saturate();
        assert_eq!(b.next_delay(1.0), BACKOFF_MAX);
    }
}
