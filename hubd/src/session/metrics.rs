//! The metrics stream: samples in, latest kept in memory and pushed to subscribers.

use crate::HubCtx;
use flotilla_wire::io::read_frame;
use flotilla_wire::limits::MAX_METRICS_FRAME;
use flotilla_wire::msg::MetricsFrame;
use flotilla_wire::{ErrorCode, IdentityId};
use std::sync::Arc;

/// Reads one agent's metrics stream (after its opening frame) until it ends. A malformed or oversized frame stops this stream with a code
/// and leaves the connection and every other agent alone.
pub(super) async fn serve(ctx: Arc<HubCtx>, id: IdentityId, mut recv: quinn::RecvStream) {
    let stop = |recv: &mut quinn::RecvStream, code: ErrorCode| {
        let _ = recv.stop(code.as_u32().into());
    };
    loop {
        match read_frame::<MetricsFrame, _>(&mut recv, MAX_METRICS_FRAME).await {
            Ok(Some(MetricsFrame::Sample(sample))) => {
                ctx.stats.metrics_sample();
                ctx.registry.set_latest(&id, sample);
            }
            Ok(Some(MetricsFrame::Backfill(samples))) => {
                if let Some(last) = samples.last() {
                    ctx.registry.set_latest(&id, last.clone());
                }
            }
            Ok(None) => return,
            Err(e) => {
                let code = super::frame_error_code(&e);
                tracing::warn!(error = %e, ?code, "metrics stream refused");
                return stop(&mut recv, code);
            }
        }
    }
}
