//! The metrics stream: samples in, latest kept in memory and pushed to subscribers.

use crate::HubCtx;
use crate::stats::StreamKind;
use flotilla_wire::io::read_frame;
use flotilla_wire::limits::MAX_METRICS_FRAME;
use flotilla_wire::msg::{FleetEvent, MetricsFrame};
use flotilla_wire::{ErrorCode, IdentityId};
use std::sync::Arc;

/// Reads one agent's metrics stream (after its opening frame) until it ends. A malformed or oversized frame stops this stream with a code
/// and leaves the connection and every other agent alone.
pub(super) async fn serve(ctx: Arc<HubCtx>, id: IdentityId, mut recv: quinn::RecvStream) {
    let stop = |recv: &mut quinn::RecvStream, code: ErrorCode| {
        let _ = recv.stop(code.as_u32().into());
    };
    loop {
        let frame = read_frame::<MetricsFrame, _>(
            &mut ctx.stats.reader(StreamKind::Metrics, &mut recv),
            MAX_METRICS_FRAME,
        )
        .await;
        match frame {
            Ok(Some(MetricsFrame::Sample(sample))) => {
                ctx.stats.metrics_sample();
                ctx.history.record(&id, &sample).await;
                ctx.alerts.sample(&ctx, &id, &sample);
                ctx.registry.set_latest(&id, sample);
            }
            Ok(Some(MetricsFrame::Backfill(samples))) => {
                let mut folder = flotilla_wire::aggregate::MinuteFolder::default();
                let mut minutes: Vec<_> = samples.iter().filter_map(|s| folder.push(s)).collect();
                minutes.extend(folder.take());
                ctx.history.record_backfill(&id, minutes).await;
            }
            Ok(Some(MetricsFrame::BackfillMinutes(minutes))) => {
                tracing::debug!(minutes = minutes.len(), "back-fill received");
                ctx.history.record_backfill(&id, minutes).await;
            }
            Ok(Some(MetricsFrame::Workloads(delta))) => {
                let full = delta.full;
                let (applied, counts) = ctx.workloads.apply(&id, delta);
                // Warned once per inventory, not on every delta that repeats the stats.
                if applied.refused > 0 && full {
                    tracing::warn!(
                        refused = applied.refused,
                        "workload entries over the hub's limits left out"
                    );
                }
                if applied.counts_changed {
                    ctx.registry.publish(FleetEvent::Workloads {
                        id: id.clone(),
                        counts,
                    });
                }
                ctx.alerts.workloads(&ctx, &id);
                ctx.container_history.record(applied.minutes).await;
            }
            Ok(Some(MetricsFrame::HostDetail(detail))) => {
                ctx.history.host.record_detail(&id, &detail).await;
                let changed = ctx.host.set_detail(&id, detail);
                crate::host::publish_summary(&ctx, &id, changed);
            }
            Ok(Some(MetricsFrame::HostReport(report))) => {
                let changed = ctx.host.set_report(&id, report);
                crate::host::publish_summary(&ctx, &id, changed);
            }
            Ok(Some(MetricsFrame::BackfillHost(minutes))) => {
                tracing::debug!(minutes = minutes.len(), "host back-fill received");
                ctx.history.host.record_backfill(&id, minutes).await;
            }
            Ok(None) => return,
            // The connection went away: the session reports that; nothing to refuse.
            Err(flotilla_wire::io::FrameError::Io(e)) => {
                tracing::debug!(error = %e, "metrics stream ended");
                return;
            }
            Err(e) => {
                let code = super::frame_error_code(&e);
                tracing::warn!(error = %e, ?code, "metrics stream refused");
                return stop(&mut recv, code);
            }
        }
    }
}
