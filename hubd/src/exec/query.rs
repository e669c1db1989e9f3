//! Queries around exec: past jobs, one job with its per-agent results, the audit log, and ping;
//! and the fleet's workloads: containers, units and one container's history (docs/workloads.md).

use super::resolve;
use crate::admin::Actor;
use crate::session::{describe_close, frame_error_code};
use crate::store::{self, now_ms};
use crate::workloads;
use crate::{HubCtx, HubError};
use flotilla_wire::ErrorCode;
use flotilla_wire::exec::{AuditEntry, HubStreamOpen, PingResult, Pong, Query, QueryReply, Target};
use flotilla_wire::io::{FrameError, read_frame, write_frame};
use flotilla_wire::limits::{MAX_EXEC_FRAME, MAX_REQUEST_FRAME};
use flotilla_wire::workloads::{ContainerMinute, ROWS_PER_FRAME};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Most jobs or audit entries one query returns; more would be a report, not a glance.
const MAX_LIST: u32 = 10_000;
/// A ping not answered within this time is reported as timed out.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Time an operator gets to send its query after opening the stream.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

fn forbidden(actor: &Actor, what: &str) -> HubError {
    HubError::refused(
        ErrorCode::Forbidden,
        format!("{what} needs the operator role; you are {}", actor.role),
    )
}

/// Serves one query stream.
pub(crate) async fn serve_query(
    ctx: Arc<HubCtx>,
    actor: Actor,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    cancel: CancellationToken,
) {
    let query = match tokio::time::timeout(
        QUERY_TIMEOUT,
        read_frame::<Query, _>(&mut recv, MAX_REQUEST_FRAME),
    )
    .await
    {
        Ok(Ok(Some(q))) => q,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            let code = frame_error_code(&e);
            let _ = send.reset(code.as_u32().into());
            let _ = recv.stop(code.as_u32().into());
            return;
        }
        Err(_) => {
            let _ = send.reset(ErrorCode::Timeout.as_u32().into());
            return;
        }
    };
    tracing::debug!(?query, "query");
    let result = tokio::select! {
        r = answer(&ctx, &actor, query, &mut send) => r,
        _ = cancel.cancelled() => return,
    };
    let last = match result {
        Ok(()) => QueryReply::End,
        Err(Answer::Hub(err)) => {
            if !matches!(err, HubError::Refused { .. }) {
                tracing::error!(actor = %actor.name, error = %err, "query failed");
            }
            QueryReply::Error(err.to_refusal())
        }
        Err(Answer::Gone(e)) => {
            tracing::debug!(error = %e, "operator left during a query");
            return;
        }
    };
    if write_frame(&mut send, &last, MAX_REQUEST_FRAME)
        .await
        .is_ok()
    {
        let _ = send.finish();
    }
}

enum Answer {
    Hub(HubError),
    Gone(FrameError),
}

impl From<HubError> for Answer {
    fn from(e: HubError) -> Self {
        Self::Hub(e)
    }
}

async fn reply(send: &mut quinn::SendStream, r: &QueryReply) -> Result<(), Answer> {
    write_frame(send, r, MAX_REQUEST_FRAME)
        .await
        .map_err(Answer::Gone)
}

async fn answer(
    ctx: &HubCtx,
    actor: &Actor,
    query: Query,
    send: &mut quinn::SendStream,
) -> Result<(), Answer> {
    match query {
        Query::Containers { selector, all } => {
            let targets = resolve_sorted(ctx, &selector).await?;
            let mut page = Pager::default();
            for target in targets {
                let mut rows = Vec::new();
                ctx.workloads.with_agent(&target.id, |w| {
                    w.container_rows(&target.name, all, &mut rows)
                });
                for row in rows {
                    let size = workloads::container_row_bytes(&row);
                    if let Some(full) = page.push(row, size) {
                        reply(send, &QueryReply::Containers(full)).await?;
                    }
                }
            }
            if let Some(last) = page.finish() {
                reply(send, &QueryReply::Containers(last)).await?;
            }
            Ok(())
        }
        Query::Services { selector, failed } => {
            let targets = resolve_sorted(ctx, &selector).await?;
            let mut page = Pager::default();
            for target in targets {
                let mut rows = Vec::new();
                ctx.workloads
                    .with_agent(&target.id, |w| w.unit_rows(&target.name, failed, &mut rows));
                for row in rows {
                    let size = workloads::unit_row_bytes(&row);
                    if let Some(full) = page.push(row, size) {
                        reply(send, &QueryReply::Services(full)).await?;
                    }
                }
            }
            if let Some(last) = page.finish() {
                reply(send, &QueryReply::Services(last)).await?;
            }
            Ok(())
        }
        Query::ContainerHistory {
            agent,
            container,
            minutes,
        } => {
            let minutes = container_history(ctx, agent, container, minutes).await?;
            reply(send, &QueryReply::ContainerMinutes(minutes)).await
        }
        Query::Host { agent, refresh } => {
            let view = crate::host::query(ctx, actor, agent, refresh).await?;
            reply(send, &QueryReply::Host(view)).await
        }
        Query::HostSeries {
            agent,
            series,
            since_s,
        } => {
            for s in crate::host_history::series_query(ctx, agent, series, since_s).await? {
                reply(send, &QueryReply::HostSeries(s)).await?;
            }
            Ok(())
        }
        Query::HostTop {
            agent,
            from_ms,
            to_ms,
        } => {
            let minutes = crate::host_history::top_query(ctx, agent, from_ms, to_ms).await?;
            for page in minutes.chunks(flotilla_wire::history::TOP_MINUTES_PER_FRAME) {
                reply(send, &QueryReply::HostTop(page.to_vec())).await?;
            }
            Ok(())
        }
        Query::Sessions { limit } => {
            let rows = crate::shell::sessions::list(ctx, actor, limit).await?;
            for page in rows.chunks(flotilla_wire::sessions::SESSIONS_PER_FRAME) {
                reply(send, &QueryReply::Sessions(page.to_vec())).await?;
            }
            Ok(())
        }
        Query::Replay { session } => {
            let mut replay = crate::shell::sessions::Replay::open(ctx, actor, session).await?;
            while let Some(frame) = replay.next_frame().await? {
                reply(send, &QueryReply::Recording(frame)).await?;
            }
            Ok(())
        }
        Query::Jobs { limit } => {
            if !actor.role.can_act() {
                return Err(forbidden(actor, "listing jobs").into());
            }
            let limit = limit.clamp(1, MAX_LIST);
            let jobs = ctx
                .store
                .call(move |c| Ok(store::jobs::list(c, limit)?))
                .await?;
            for j in jobs {
                reply(send, &QueryReply::Job(j)).await?;
            }
            Ok(())
        }
        Query::Job { job } => {
            if !actor.role.can_act() {
                return Err(forbidden(actor, "reading jobs").into());
            }
            let found = ctx
                .store
                .call(move |c| {
                    Ok(match store::jobs::get(c, job)? {
                        Some(info) => Some((info, store::jobs::results(c, job)?)),
                        None => None,
                    })
                })
                .await?;
            let Some((info, results)) = found else {
                return Err(HubError::refused(ErrorCode::NotFound, format!("no job {job}")).into());
            };
            reply(send, &QueryReply::Job(info)).await?;
            for r in results {
                reply(send, &QueryReply::Result(r)).await?;
            }
            Ok(())
        }
        Query::Audit { limit } => {
            if !actor.role.can_act() {
                return Err(forbidden(actor, "reading the audit log").into());
            }
            let limit = limit.clamp(1, MAX_LIST);
            let entries = ctx
                .store
                .call(move |c| Ok(store::audit::recent(c, limit)?))
                .await?;
            for e in entries {
                let entry = AuditEntry {
                    seq: e.seq,
                    at_ms: e.at_ms,
                    actor: e.actor,
                    action: e.action,
                    target: e.target,
                    detail: e.detail,
                };
                reply(send, &QueryReply::Audit(entry)).await?;
            }
            Ok(())
        }
        Query::Ping { selector } => {
            let targets = resolve(ctx, &selector).await?;
            let mut pings = JoinSet::new();
            for (target, _) in targets {
                let conn = ctx.registry.connection(&target.id);
                pings.spawn(ping(target, conn));
            }
            while let Some(joined) = pings.join_next().await {
                match joined {
                    Ok(result) => reply(send, &QueryReply::Ping(result)).await?,
                    Err(e) => tracing::error!(error = %e, "ping task failed"),
                }
            }
            Ok(())
        }
    }
}

/// The agents a selector picks, by name: `ps` lists hosts in the order a sysadmin reads them.
async fn resolve_sorted(ctx: &HubCtx, selector: &str) -> Result<Vec<Target>, HubError> {
    let selector = if selector.trim().is_empty() {
        "all"
    } else {
        selector
    };
    let mut targets: Vec<Target> = resolve(ctx, selector)
        .await?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(targets)
}

/// Budget of one reply frame's rows: half the frame limit, so the estimate's slack never matters.
const PAGE_BYTES: usize = MAX_REQUEST_FRAME / 2;

/// Rows cut into frames of at most [`ROWS_PER_FRAME`] rows and [`PAGE_BYTES`].
struct Pager<T> {
    rows: Vec<T>,
    bytes: usize,
}

impl<T> Default for Pager<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T> Pager<T> {
    /// Adds a row of about `size` bytes; returns a full page to send first if it would not fit.
    fn push(&mut self, row: T, size: usize) -> Option<Vec<T>> {
        let full = (self.rows.len() >= ROWS_PER_FRAME || self.bytes + size > PAGE_BYTES)
            && !self.rows.is_empty();
        let out = full.then(|| {
            self.bytes = 0;
            std::mem::take(&mut self.rows)
        });
        self.rows.push(row);
        self.bytes += size;
        out
    }

    fn finish(self) -> Option<Vec<T>> {
        (!self.rows.is_empty()).then_some(self.rows)
    }
}

/// Most minutes a history query returns: a day more than the default retention keeps.
const MAX_HISTORY_MINUTES: u32 = 31 * 24 * 60;

/// One container's minutes: found among the agent's live containers first, then in the history
/// (a removed container, until retention forgets it); the minute in progress comes last.
async fn container_history(
    ctx: &HubCtx,
    agent: String,
    reference: String,
    minutes: u32,
) -> Result<Vec<ContainerMinute>, HubError> {
    if !flotilla_wire::workloads::valid_workload_name(&reference) {
        return Err(HubError::refused(
            ErrorCode::BadRequest,
            format!("{reference:?} is not a container name or id"),
        ));
    }
    let q = agent.clone();
    let row = ctx
        .store
        .call(move |c| Ok(store::identities::find(c, &q)?))
        .await?
        .filter(|r| r.role == flotilla_wire::Role::Agent)
        .ok_or_else(|| HubError::refused(ErrorCode::NotFound, format!("no agent {agent:?}")))?;
    let live = ctx
        .workloads
        .with_agent(&row.id, |w| w.find_container(&reference))
        .transpose()
        .map_err(|e| HubError::refused(ErrorCode::BadRequest, e))?
        .flatten();
    let found = match live {
        Some(found) => Some(found),
        None => {
            let (id, r) = (row.id.clone(), reference.clone());
            ctx.store
                .call(move |c| Ok(store::workloads::find(c, &id, &r)?))
                .await?
        }
    };
    let Some((container, _name)) = found else {
        return Err(HubError::refused(
            ErrorCode::NotFound,
            format!("no container {reference:?} on {}", row.name),
        ));
    };
    let span = u64::from(minutes.clamp(1, MAX_HISTORY_MINUTES)) * 60_000;
    let since = now_ms().saturating_sub(span);
    let (id, cid) = (row.id.clone(), workloads::history_id(&container).to_owned());
    let mut series = ctx
        .store
        .call(move |c| Ok(store::workloads::series(c, &id, &cid, since)?))
        .await?;
    if let Some(open) = ctx
        .workloads
        .with_agent(&row.id, |w| w.minute_in_progress(&container))
        .flatten()
        && series.last().is_none_or(|m| m.start_ms < open.start_ms)
    {
        series.push(open);
    }
    Ok(series)
}

/// One round trip over a new stream: what an exec pays before its command starts.
async fn ping(target: Target, conn: Option<quinn::Connection>) -> PingResult {
    let mut result = PingResult {
        agent: target.id,
        name: target.name,
        rtt_us: None,
        clock_offset_ms: None,
        error: String::new(),
    };
    let Some(conn) = conn else {
        result.error = "offline".into();
        return result;
    };
    let sent_ms = now_ms();
    let t0 = Instant::now();
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| describe_close(&e))?;
        write_frame(
            &mut send,
            &HubStreamOpen::Ping {
                hub_time_ms: sent_ms,
            },
            MAX_EXEC_FRAME,
        )
        .await
        .map_err(|e| e.to_string())?;
        let _ = send.finish();
        match read_frame::<Pong, _>(&mut recv, MAX_EXEC_FRAME).await {
            Ok(Some(pong)) => Ok(pong),
            Ok(None) => Err("agent closed the stream without answering".to_string()),
            Err(e) => Err(conn
                .close_reason()
                .map(|r| describe_close(&r))
                .unwrap_or_else(|| e.to_string())),
        }
    };
    match tokio::time::timeout(PING_TIMEOUT, exchange).await {
        Ok(Ok(pong)) => {
            let rtt = t0.elapsed();
            result.rtt_us = Some(rtt.as_micros() as u64);
            let midpoint = sent_ms as i64 + (rtt.as_millis() as i64) / 2;
            result.clock_offset_ms = Some(pong.agent_time_ms as i64 - midpoint);
        }
        Ok(Err(e)) => result.error = e,
        Err(_) => result.error = format!("no answer within {} s", PING_TIMEOUT.as_secs()),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_hold_at_most_their_rows_and_bytes() {
        let mut pager = Pager::default();
        let mut pages = Vec::new();
        for i in 0..(ROWS_PER_FRAME * 2 + 1) {
            pages.extend(pager.push(i, 10));
        }
        pages.extend(pager.finish());
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [ROWS_PER_FRAME, ROWS_PER_FRAME, 1]);
        // Large rows: the byte budget cuts first; a row larger than the budget goes alone.
        let mut pager = Pager::default();
        let mut pages = Vec::new();
        for size in [PAGE_BYTES / 2, PAGE_BYTES / 2, 1, PAGE_BYTES * 2, 1] {
            pages.extend(pager.push(size, size));
        }
        pages.extend(pager.finish());
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1, 1, 1]);
        assert!(Pager::<u8>::default().finish().is_none());
    }
}
