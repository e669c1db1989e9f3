//! The delivery task: claims due outbox rows, sends each in its own task (at most
//! [`MAX_IN_FLIGHT`] at once), and records the outcome — sent, a later try, or given up.

use super::http::SendError;
use super::{Notifier, ReceiverKind};
use crate::store::{self, outbox};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Sends in flight at once: one slow receiver cannot hold up the others, and a backlog after an
/// outage drains at a pace receivers (and our file descriptors) can take.
const MAX_IN_FLIGHT: usize = 16;
/// Added to the send timeout for a claimed row's lease: past it the row is due again (only
/// after a crash, since every try ends within the send timeout).
const LEASE_MARGIN_MS: u64 = 30_000;
/// Longest sleep between two looks at the outbox: bounds the effect of a wall-clock jump.
const MAX_IDLE: Duration = Duration::from_secs(60);
/// How long sends in flight at shutdown may take to finish and be recorded; the rest are tried
/// again at the next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How often delivered and given-up rows past [`outbox::KEEP_DONE_MS`] are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// One finished try.
struct Outcome {
    row: outbox::OutboxRow,
    result: Result<(), SendError>,
}

/// The wait before try `attempts + 1`: `retry_initial_ms` doubled per try already made, capped
/// at `retry_max_s`, then jittered to between half and all of it so that many messages failing
/// together do not come back together.
fn backoff_ms(settings: &super::NotifyConfig, attempts: u32) -> u64 {
    let initial = u64::from(settings.retry_initial_ms);
    let max = u64::from(settings.retry_max_s) * 1000;
    let exp = attempts.saturating_sub(1).min(20);
    let full = initial.saturating_mul(1 << exp).min(max).max(1);
    full / 2 + fastrand::u64(0..=full / 2)
}

/// Runs delivery until `cancel`: first makes what a previous run left claimed due again.
pub async fn run(notifier: Notifier, cancel: CancellationToken) {
    let now = store::now_ms();
    match notifier
        .store()
        .call(move |c| Ok((outbox::release_claims(c, now)?, outbox::queued(c)?)))
        .await
    {
        Ok((_, 0)) => {}
        Ok((released, queued)) => tracing::info!(
            queued,
            released,
            "alert outbox: sending what was queued before the start"
        ),
        Err(e) => tracing::warn!(error = %e, "alert outbox: could not release earlier claims"),
    }
    let mut in_flight: JoinSet<Outcome> = JoinSet::new();
    let mut next_prune = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_prune {
            next_prune = tokio::time::Instant::now() + PRUNE_EVERY;
            let before = store::now_ms().saturating_sub(outbox::KEEP_DONE_MS);
            if let Err(e) = notifier
                .store()
                .call(move |c| Ok(outbox::prune(c, before)?))
                .await
            {
                tracing::warn!(error = %e, "alert outbox: prune failed");
            }
        }
        let plan = notifier.plan();
        let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len()) as u32;
        if room > 0 {
            let now = store::now_ms();
            let lease = u64::from(plan.settings.send_timeout_s) * 1000 + LEASE_MARGIN_MS;
            match notifier
                .store()
                .call(move |c| Ok(outbox::claim(c, now, room, lease)?))
                .await
            {
                Ok(rows) => {
                    for row in rows {
                        let plan = plan.clone();
                        in_flight.spawn(async move {
                            let result = try_send(&plan, &row).await;
                            Outcome { row, result }
                        });
                    }
                }
                Err(crate::HubError::StoreClosed) => return,
                Err(e) => tracing::warn!(error = %e, "alert outbox: claim failed"),
            }
        }
        let sleep = match notifier.store().call(|c| Ok(outbox::next_due(c)?)).await {
            Ok(Some(due)) => Duration::from_millis(due.saturating_sub(store::now_ms())),
            Ok(None) => MAX_IDLE,
            Err(crate::HubError::StoreClosed) => return,
            Err(_) => MAX_IDLE,
        }
        .min(MAX_IDLE);
        // A full pipeline waits for a send to finish rather than for the next due time.
        let full = in_flight.len() >= MAX_IN_FLIGHT;
        tokio::select! {
            _ = cancel.cancelled() => break,
            () = notifier.woken() => {}
            () = tokio::time::sleep(sleep), if !full => {}
            Some(done) = in_flight.join_next() => {
                if let Ok(outcome) = done {
                    record(&notifier, outcome).await;
                }
            }
        }
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(done) = in_flight.join_next().await {
            if let Ok(outcome) = done {
                record(&notifier, outcome).await;
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            left = in_flight.len(),
            "alert sends still in flight at shutdown; they are tried again at the next start"
        );
        in_flight.abort_all();
    }
}

async fn try_send(plan: &super::Plan, row: &outbox::OutboxRow) -> Result<(), SendError> {
    let Some(receiver) = plan.receiver(&row.receiver) else {
        return Err(SendError::Config(format!(
            "receiver {:?} is no longer configured",
            row.receiver
        )));
    };
    let timeout = Duration::from_secs(u64::from(plan.settings.send_timeout_s));
    // lettre's own timeout bounds each SMTP step; this bounds the whole try, for every kind.
    let send = async {
        match receiver.kind {
            ReceiverKind::Email => super::email::send(receiver, row, timeout).await,
            _ => super::http::send(receiver, row).await,
        }
    };
    tokio::time::timeout(timeout, send)
        .await
        .unwrap_or_else(|_| {
            Err(SendError::Transport(format!(
                "no answer within {} s",
                timeout.as_secs()
            )))
        })
}

async fn record(notifier: &Notifier, Outcome { row, result }: Outcome) {
    let now = store::now_ms();
    let plan = notifier.plan();
    let id = row.id.clone();
    let receiver = row.receiver.clone();
    let attempts = row.attempts;
    let written = match result {
        Ok(()) => {
            tracing::info!(%receiver, id = %id, attempts, alerts = row.transitions.len(), "alert notification delivered");
            let id = id.clone();
            notifier
                .store()
                .call(move |c| Ok(outbox::mark_sent(c, &id, now)?))
                .await
        }
        Err(err) => {
            let error = err.to_string();
            let removed = plan.receiver(&row.receiver).is_none();
            let limit = row
                .due_ms
                .saturating_add(u64::from(plan.settings.give_up_after_s) * 1000);
            if removed || now >= limit {
                tracing::error!(%receiver, id = %id, attempts, error = %error, "alert notification given up");
                notifier
                    .store()
                    .call(move |c| Ok(outbox::give_up(c, &row, &error, now)?))
                    .await
            } else {
                // The last try falls at the give-up time rather than a back-off past it.
                let next = (now + backoff_ms(&plan.settings, attempts)).min(limit);
                tracing::warn!(%receiver, id = %id, attempts, error = %error, retry_in_ms = next - now, "alert notification failed; will retry");
                notifier
                    .store()
                    .call(move |c| Ok(outbox::mark_retry(c, &id, &error, next)?))
                    .await
            }
        }
    };
    if let Err(e) = written {
        tracing::warn!(%receiver, error = %e, "alert outbox: outcome not recorded; the message will be tried again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let s = super::super::NotifyConfig {
            retry_initial_ms: 1000,
            retry_max_s: 10,
            ..Default::default()
        };
        for _ in 0..100 {
            let first = backoff_ms(&s, 1);
            assert!((500..=1000).contains(&first), "{first}");
            let third = backoff_ms(&s, 3);
            assert!((2000..=4000).contains(&third), "{third}");
            let late = backoff_ms(&s, 40);
            assert!((5000..=10_000).contains(&late), "{late}");
        }
    }
}
