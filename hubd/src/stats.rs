//! Counters the hub keeps about itself (exported for monitoring).

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters, updated without locks.
#[derive(Default, Debug)]
pub struct Stats {
    /// TLS/QUIC handshakes that failed (wrong CA, wrong ALPN, timeouts).
    pub handshakes_failed: AtomicU64,
    /// Metrics samples received.
    pub metrics_samples: AtomicU64,
    /// Handshakes completed.
    pub handshakes_ok: AtomicU64,
    /// Connections refused because every handshake slot stayed busy (a reconnect storm).
    pub handshakes_refused: AtomicU64,
}

impl Stats {
    pub(crate) fn handshake_failed(&self) {
        self.handshakes_failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn handshake_ok(&self) {
        self.handshakes_ok.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn handshake_refused(&self) {
        self.handshakes_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn metrics_sample(&self) {
        self.metrics_samples.fetch_add(1, Ordering::Relaxed);
    }
}
