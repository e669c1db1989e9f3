//! The wall clock as every binary records it: milliseconds since the Unix epoch.
//!
//! It lives here because `certs` is the lowest crate the hub, the agent and the console all share
//! that may read the clock (it already does for certificate validity); `wire` stays clock-free.

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970, so a broken clock shows as an
/// obviously wrong time rather than a panic in a daemon.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2020_and_does_not_go_back() {
        let first = now_ms();
        // 2020-01-01T00:00:00Z: a clock reading before it means the epoch arithmetic is wrong.
        assert!(first > 1_577_836_800_000, "{first}");
        assert!(now_ms() >= first);
    }
}
