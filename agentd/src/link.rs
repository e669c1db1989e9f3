//! The link to the hub: a supervisor that dials, says hello, runs the session, and on any failure
//! waits with exponential back-off and full jitter (1 s to 60 s) so a hub restart with thousands of
//! agents does not become a thundering herd.

use crate::sampler::BackfillBuffer;
use flotilla_certs::clock::now_ms;
use flotilla_certs::dial::{self, DialError};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_BACKFILL_BATCH, MAX_CONTROL_FRAME, MAX_METRICS_FRAME};
use flotilla_wire::msg::{Hello, HubControl, MetricsFrame, MetricsSample, StreamOpen};
use flotilla_wire::workloads::WorkloadDelta;
use flotilla_wire::{ErrorCode, IdentityId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// First back-off ceiling.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Largest back-off: a minute keeps a dead hub's log quiet and bounds recovery time.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A session that lasted this long was healthy: the next failure starts back-off from the bottom.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long a stopping agent lets a hello in flight finish, to say goodbye on it.
const GOODBYE_DIAL_GRACE: Duration = Duration::from_secs(2);
/// A bulk lane with no transfer for this long is closed: the hub asks for a new one when needed,
/// and an idle lane would hold its jumbo buffers on both ends for nothing.
const BULK_LANE_LINGER: Duration = Duration::from_secs(30);
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
    /// UDP endpoint to dial from (the swarm shares one among many agents).
    pub endpoint: quinn::Endpoint,
    /// TLS client configuration with our identity, for the control connection.
    pub client: quinn::ClientConfig,
    /// The same identity with bulk transport settings, for the bulk lane transfers use.
    pub bulk_client: quinn::ClientConfig,
    /// Hub addresses.
    pub hubs: Vec<String>,
    /// What we say in hello.
    pub hello: Hello,
    /// Metrics interval override (0: as the hub says).
    pub metrics_interval_ms: u32,
    /// Where state changes are published.
    pub state: watch::Sender<LinkState>,
    /// Exec policy and slots for the streams the hub opens.
    pub exec: Arc<crate::exec::ExecContext>,
    /// The shared folder: snapshots to the hub, transfers from it (`None` for swarm agents, which
    /// would otherwise need one inotify instance each).
    pub files: Option<Arc<crate::transfer::SharedFolder>>,
}

/// Where the metrics stream's workload deltas come from.
pub trait WorkloadFeed: Send {
    /// The whole inventory, for a new metrics stream: the first delta has `full = true`, the rest
    /// (an inventory over [`flotilla_wire::workloads::WORKLOADS_PER_FRAME`]) `full = false`.
    fn full(&mut self, at_ms: u64) -> Vec<WorkloadDelta>;
    /// What changed since the last call, with the stats of what runs; sent after each sample
    /// (several frames when more changed than one frame carries, none when nothing did).
    fn delta(&mut self, at_ms: u64) -> Vec<WorkloadDelta>;
}

/// Samples from the sampler, and what accumulates while no session can take them.
pub struct Outbox {
    /// Samples as they are taken.
    pub samples: mpsc::Receiver<MetricsSample>,
    /// Where the sampling interval is set (hub's default, 1 s while watched, or the override).
    pub interval: watch::Sender<u32>,
    /// Minutes kept during an outage.
    pub backfill: BackfillBuffer,
    /// Count of samples ever buffered for back-fill (for tests and `agentd status`).
    pub buffered: watch::Sender<u64>,
    /// Workload deltas sent beside the samples, if any.
    pub workloads: Option<Box<dyn WorkloadFeed>>,
    /// Host depth sent after each sample, if the sampler collects it.
    pub host: Option<crate::host::HostOutbox>,
}

impl Outbox {
    /// Keeps one sample for back-fill.
    fn keep(&mut self, sample: &MetricsSample) {
        self.backfill.push(sample);
        if let Some(host) = self.host.as_mut() {
            host.keep();
        }
        self.buffered.send_modify(|n| *n += 1);
    }

    /// Keeps the next sample for back-fill; cancel-safe.
    async fn buffer_next(&mut self) {
        if let Some(s) = self.samples.recv().await {
            self.keep(&s);
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// Dials drawn from a stopping hub's reconnect window before back-off takes over.
const RESTART_TRIES: u32 = 4;
/// Shortest wait before a dial drawn from a reconnect window: a hub that is still stopping
/// has nothing to offer sooner.
const RESTART_MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest reconnect window an agent accepts from a stopping hub.
const MAX_RESTART_WINDOW: Duration = Duration::from_secs(600);

/// Longest wait before redialling a hub that answered with a stateless reset: it restarted, is
/// listening already and lost our connection. A full-jitter draw below this spreads a fleet's
/// reconnects over a second (5,000 handshakes at about 1 ms of hub CPU each) instead of the 1 s
/// floor of back-off, which would bunch them all at its end.
const RESET_JITTER: Duration = Duration::from_secs(1);

/// The window a stopping hub asked its agents to spread their reconnects over, if it did.
fn restart_window_of(err: &DialError) -> Option<Duration> {
    match err {
        DialError::Refused(r) if r.code == ErrorCode::ShuttingDown => {
            flotilla_wire::codes::reconnect_within_ms(&r.message)
                .map(|ms| Duration::from_millis(u64::from(ms)).min(MAX_RESTART_WINDOW))
        }
        _ => None,
    }
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
    pub async fn run(self, mut outbox: Outbox, cancel: CancellationToken) {
        let mut backoff = Backoff::default();
        // The window a stopping hub announced, and the dials left to draw from it.
        let mut restart: Option<(Duration, u32)> = None;
        loop {
            let started = Instant::now();
            let (restart_window, reset_now) = match self.session(&mut outbox, &cancel).await {
                Ok(()) => break,
                Err(err) => {
                    let words = advise(&err);
                    if matches!(*self.state.borrow(), LinkState::Connected { .. }) {
                        // A session came up since the last restart notice: it is spent.
                        restart = None;
                    }
                    if started.elapsed() >= STABLE_AFTER {
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
                    (
                        restart_window_of(&err),
                        matches!(err, DialError::HubRestarted),
                    )
                }
            };
            if let Some(window) = restart_window {
                restart = Some((window, RESTART_TRIES));
                backoff.reset();
            }
            let delay = match restart.as_mut() {
                // The hub restarted (a crash, `kill -9`) and is up again: come back at once, but
                // spread out. A dial that fails after this takes plain back-off.
                _ if reset_now => {
                    restart = None;
                    backoff.reset();
                    RESET_JITTER.mul_f64(fastrand::f64())
                }
                // The hub restarts and asked its agents to spread out over this window: a uniform
                // draw admits them at the pace it named, where back-off would bunch them at 1 s.
                // A dial that fails meanwhile (the new hub not up yet, or busy) draws again from
                // the same window a few times before plain back-off takes over.
                Some((window, tries)) if *tries > 0 => {
                    *tries -= 1;
                    window.mul_f64(fastrand::f64()).max(RESTART_MIN_DELAY)
                }
                _ => {
                    restart = None;
                    backoff.next_delay(fastrand::f64())
                }
            };
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting after back-off"
            );
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = &mut sleep => break,
                    _ = outbox.buffer_next() => {}
                }
            }
            if cancel.is_cancelled() {
                break;
            }
        }
        self.state
            .send_replace(LinkState::Disconnected("agent stopped".into()));
        let _ = tokio::time::timeout(GOODBYE_FLUSH, self.endpoint.wait_idle()).await;
    }

    /// One connection's life. `Ok` only when cancelled.
    async fn session(
        &self,
        outbox: &mut Outbox,
        cancel: &CancellationToken,
    ) -> Result<(), DialError> {
        let dial = dial::hello(
            &self.endpoint,
            &self.hubs,
            self.client.clone(),
            self.hello.clone(),
        );
        tokio::pin!(dial);
        let (conn, _send, mut recv, welcome) = loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    // The hub may count us online already (it welcomes before we read it): finish
                    // the hello briefly so that it hears a goodbye, not a bare close.
                    if let Ok(Ok((conn, ..))) = tokio::time::timeout(GOODBYE_DIAL_GRACE, &mut dial).await {
                        conn.close(ErrorCode::Goodbye.as_u32().into(), b"agent shutting down");
                    }
                    return Ok(());
                }
                r = &mut dial => break r?,
                _ = outbox.buffer_next() => {}
            }
        };
        tracing::info!(id = %welcome.identity, name = %welcome.name, hub_version = %welcome.hub_version, "connected to hub");
        self.state.send_replace(LinkState::Connected {
            id: welcome.identity.clone(),
            name: welcome.name.clone(),
        });
        let base = if self.metrics_interval_ms > 0 {
            self.metrics_interval_ms
        } else {
            welcome.metrics_interval_ms
        };
        outbox.interval.send_replace(base);
        let interval = outbox.interval.clone();
        let open_bulk = tokio::sync::Notify::new();
        let control = async {
            loop {
                match read_frame::<HubControl, _>(&mut recv, MAX_CONTROL_FRAME).await {
                    // Faster while watched; never slower than the local override asks.
                    Ok(Some(HubControl::SetMetricsInterval { interval_ms })) => {
                        interval.send_replace(interval_ms.clamp(1000, base.max(1000)));
                    }
                    Ok(Some(HubControl::OpenBulk)) => open_bulk.notify_one(),
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
        let metrics = send_metrics(&conn, outbox);
        let snapshots = async {
            match &self.files {
                Some(files) => crate::watch::run(conn.clone(), files.clone()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(metrics, control, snapshots);
        // Streams the hub opens (exec, ping, transfers, resync). Dropping this set when the session
        // ends aborts them, which kills their commands' process groups.
        let mut streams = tokio::task::JoinSet::new();
        // The bulk lane, while one is open; it ends with this session (aborted on drop).
        let mut lane = LaneTask::default();
        loop {
            tokio::select! {
                // Cancel first: the sampler stops on the same token, and a session ending on "sampler
                // stopped" instead would drop the connection without the goodbye.
                biased;
                _ = cancel.cancelled() => {
                    conn.close(ErrorCode::Goodbye.as_u32().into(), b"agent shutting down");
                    return Ok(());
                }
                err = conn.closed() => return Err(dial::explain(&err)),
                err = &mut metrics => return Err(err),
                err = &mut control => return Err(err),
                err = &mut snapshots => return Err(err),
                () = open_bulk.notified() => {
                    if !lane.running() {
                        let bulk = BulkLane {
                            endpoint: self.endpoint.clone(),
                            hubs: self.hubs.clone(),
                            config: self.bulk_client.clone(),
                            hello: self.hello.clone(),
                            exec: self.exec.clone(),
                            files: self.files.clone(),
                            name: welcome.name.clone(),
                        };
                        lane.0 = Some(tokio::spawn(bulk.run(cancel.clone())));
                    }
                }
                accepted = conn.accept_bi() => match accepted {
                    Ok((send, recv)) => {
                        let (exec, files, name) = (self.exec.clone(), self.files.clone(), welcome.name.clone());
                        streams.spawn(serve_hub_stream(exec, files, name, conn.clone(), send, recv));
                    }
                    Err(err) => return Err(dial::explain(&err)),
                },
                Some(joined) = streams.join_next(), if !streams.is_empty() => {
                    if let Err(e) = joined && e.is_panic() {
                        tracing::error!(error = %e, "hub stream task panicked");
                    }
                }
            }
        }
    }
}

/// The bulk lane task, aborted when the session that owns it ends.
#[derive(Default)]
struct LaneTask(Option<tokio::task::JoinHandle<()>>);

impl LaneTask {
    fn running(&self) -> bool {
        self.0.as_ref().is_some_and(|h| !h.is_finished())
    }
}

impl Drop for LaneTask {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// What the bulk lane needs: where to dial, as whom, and what serves the streams the hub opens.
struct BulkLane {
    endpoint: quinn::Endpoint,
    hubs: Vec<String>,
    config: quinn::ClientConfig,
    hello: Hello,
    exec: Arc<crate::exec::ExecContext>,
    files: Option<Arc<crate::transfer::SharedFolder>>,
    name: String,
}

impl BulkLane {
    /// Dials the lane and serves the hub's streams on it until it has been idle for
    /// [`BULK_LANE_LINGER`], the hub closes it, or the agent stops.
    async fn run(self, cancel: CancellationToken) {
        let (conn, _send, _recv) =
            match dial::bulk_lane(&self.endpoint, &self.hubs, self.config, self.hello).await {
                Ok(lane) => lane,
                Err(e) => {
                    // The hub falls back to the control connection; transfers only run slower.
                    tracing::warn!(error = %e, "could not open the bulk lane");
                    return;
                }
            };
        tracing::debug!("bulk lane open");
        let mut streams = tokio::task::JoinSet::new();
        let idle = tokio::time::sleep(BULK_LANE_LINGER);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    conn.close(ErrorCode::Goodbye.as_u32().into(), b"agent shutting down");
                    return;
                }
                _ = conn.closed() => return,
                accepted = conn.accept_bi() => match accepted {
                    Ok((send, recv)) => {
                        let (exec, files, name) = (self.exec.clone(), self.files.clone(), self.name.clone());
                        streams.spawn(serve_hub_stream(exec, files, name, conn.clone(), send, recv));
                    }
                    Err(_) => return,
                },
                Some(_) = streams.join_next(), if !streams.is_empty() => {
                    if streams.is_empty() {
                        idle.as_mut().reset(tokio::time::Instant::now() + BULK_LANE_LINGER);
                    }
                }
                () = &mut idle, if streams.is_empty() => {
                    tracing::debug!("closing the idle bulk lane");
                    conn.close(ErrorCode::Ok.as_u32().into(), b"bulk lane idle");
                    return;
                }
            }
        }
    }
}

/// Longest wait for the first frame of a stream the hub opened.
const HUB_STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the opener of a stream the hub opened and hands it to exec or the shared folder.
async fn serve_hub_stream(
    exec: Arc<crate::exec::ExecContext>,
    files: Option<Arc<crate::transfer::SharedFolder>>,
    agent_name: String,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    use flotilla_wire::msg::HubStreamOpen;
    let read = read_frame::<HubStreamOpen, _>(&mut recv, flotilla_wire::limits::MAX_EXEC_FRAME);
    let open = match tokio::time::timeout(HUB_STREAM_OPEN_TIMEOUT, read).await {
        Ok(Ok(Some(open))) => open,
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "bad stream opener from the hub");
            let code = ErrorCode::Malformed.as_u32().into();
            let _ = send.reset(code);
            let _ = recv.stop(code);
            return;
        }
    };
    match open {
        HubStreamOpen::Exec(_) | HubStreamOpen::Ping { .. } => {
            crate::exec::serve_open(exec, conn, send, recv, open).await
        }
        HubStreamOpen::Read(_) | HubStreamOpen::Write(_) | HubStreamOpen::Resync { .. } => {
            match files {
                Some(files) => {
                    crate::transfer::serve_open(files, agent_name, send, recv, open).await
                }
                None => {
                    let _ = send.reset(ErrorCode::Forbidden.as_u32().into());
                }
            }
        }
        HubStreamOpen::HostReport => crate::host::serve_report(exec.host.clone(), send).await,
        HubStreamOpen::Logs(open) => {
            let span = tracing::info_span!("logs");
            crate::workloads::logs::serve(exec.workloads.clone(), send, recv, open)
                .instrument(span)
                .await
        }
        HubStreamOpen::Shell(open) => {
            let span = tracing::info_span!("shell", session_id = %open.session_id);
            crate::shell::serve(exec.clone(), send, recv, open)
                .instrument(span)
                .await
        }
    }
}

/// Sends the back-fill, then every sample, until the stream fails (the sample in flight then goes
/// back into the back-fill buffer).
async fn send_metrics(conn: &quinn::Connection, outbox: &mut Outbox) -> DialError {
    let lost = |what: String| {
        conn.close_reason()
            .map(|r| dial::explain(&r))
            .unwrap_or(DialError::Protocol(what))
    };
    let mut send = match conn.open_uni().await {
        Ok(s) => s,
        Err(e) => return dial::explain(&e),
    };
    if let Err(e) = write_frame(&mut send, &StreamOpen::Metrics, MAX_CONTROL_FRAME).await {
        return lost(e.to_string());
    }
    let minutes = outbox.backfill.drain();
    if !minutes.is_empty() {
        tracing::info!(
            minutes = minutes.len(),
            dropped = outbox.backfill.dropped(),
            "back-filling the outage"
        );
    }
    for chunk in minutes.chunks(MAX_BACKFILL_BATCH) {
        if let Err(e) = write_frame(
            &mut send,
            &MetricsFrame::BackfillMinutes(chunk.to_vec()),
            MAX_METRICS_FRAME,
        )
        .await
        {
            for m in minutes.iter().filter(|m| m.start_ms >= chunk[0].start_ms) {
                outbox.backfill.restore(m.clone());
            }
            return lost(format!("metrics stream: {e}"));
        }
    }
    if let Some(host) = outbox.host.as_mut() {
        let minutes = host.backfill.drain();
        for (i, chunk) in minutes.chunks(MAX_BACKFILL_BATCH).enumerate() {
            if let Err(e) = write_frame(
                &mut send,
                &MetricsFrame::BackfillHost(chunk.to_vec()),
                MAX_METRICS_FRAME,
            )
            .await
            {
                host.backfill
                    .restore(minutes[i * MAX_BACKFILL_BATCH..].to_vec());
                return lost(format!("metrics stream: {e}"));
            }
        }
        if let Some(report) = host.next_report(true)
            && let Err(e) = write_frame(
                &mut send,
                &MetricsFrame::HostReport(report),
                MAX_METRICS_FRAME,
            )
            .await
        {
            return lost(format!("metrics stream: {e}"));
        }
    }
    if let Some(feed) = outbox.workloads.as_mut() {
        for delta in feed.full(now_ms()) {
            if let Err(e) = write_frame(
                &mut send,
                &MetricsFrame::Workloads(delta),
                MAX_METRICS_FRAME,
            )
            .await
            {
                return lost(format!("metrics stream: {e}"));
            }
        }
    }
    loop {
        let Some(sample) = outbox.samples.recv().await else {
            return DialError::Local("sampler stopped".into());
        };
        let at_ms = sample.at_ms;
        if let Err(e) = write_frame(
            &mut send,
            &MetricsFrame::Sample(sample.clone()),
            MAX_METRICS_FRAME,
        )
        .await
        {
            outbox.keep(&sample);
            return lost(format!("metrics stream: {e}"));
        }
        if let Some(host) = outbox.host.as_mut() {
            let detail = host.next_detail().map(MetricsFrame::HostDetail);
            let report = host.next_report(false).map(MetricsFrame::HostReport);
            for frame in detail.into_iter().chain(report) {
                if let Err(e) = write_frame(&mut send, &frame, MAX_METRICS_FRAME).await {
                    return lost(format!("metrics stream: {e}"));
                }
            }
        }
        // A delta lost with the stream is not resent: the next stream starts with a full one.
        let deltas = outbox
            .workloads
            .as_mut()
            .map(|f| f.delta(at_ms))
            .unwrap_or_default();
        for delta in deltas {
            if let Err(e) = write_frame(
                &mut send,
                &MetricsFrame::Workloads(delta),
                MAX_METRICS_FRAME,
            )
            .await
            {
                return lost(format!("metrics stream: {e}"));
            }
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
