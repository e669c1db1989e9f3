//! Per interface errors and drops from `/proc/net/dev`.

use flotilla_wire::host::{ErrorCounts, NetErrors};
use std::collections::HashMap;

/// Parses `/proc/net/dev` text: (interface, counters) per interface, in file order.
pub fn parse(text: &str) -> Vec<(String, ErrorCounts)> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop …
            if f.len() < 16 {
                return None;
            }
            Some((
                name.trim().to_string(),
                ErrorCounts {
                    rx_errors: f[2],
                    rx_dropped: f[3],
                    tx_errors: f[10],
                    tx_dropped: f[11],
                },
            ))
        })
        .collect()
}

/// Previous counters per interface, for the increase since the last sample.
#[derive(Debug, Default)]
pub struct NetErrorTracker {
    prev: HashMap<String, ErrorCounts>,
}

impl NetErrorTracker {
    /// Totals and increases since the previous call, sorted by interface.
    pub fn update(&mut self, now: Vec<(String, ErrorCounts)>) -> Vec<NetErrors> {
        let inc = |a: u64, b: u64| b.saturating_sub(a);
        let mut out: Vec<NetErrors> = now
            .iter()
            .map(|(iface, cur)| {
                let prev = self.prev.get(iface).copied().unwrap_or(*cur);
                NetErrors {
                    iface: iface.clone(),
                    total: *cur,
                    new: ErrorCounts {
                        rx_errors: inc(prev.rx_errors, cur.rx_errors),
                        rx_dropped: inc(prev.rx_dropped, cur.rx_dropped),
                        tx_errors: inc(prev.tx_errors, cur.tx_errors),
                        tx_dropped: inc(prev.tx_dropped, cur.tx_dropped),
                    },
                }
            })
            .collect();
        self.prev = now.into_iter().collect();
        out.sort_by(|a, b| a.iface.cmp(&b.iface));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 5000      50    3    7    0     0          0         0     6000      60    2    9    0     0       0          0
";

    #[test]
    fn parse_reads_errors_and_drops() {
        let rows = parse(TEXT);
        assert_eq!(rows.len(), 2, "header lines skipped");
        assert_eq!(rows[1].0, "eth0");
        assert_eq!(
            rows[1].1,
            ErrorCounts {
                rx_errors: 3,
                rx_dropped: 7,
                tx_errors: 2,
                tx_dropped: 9
            }
        );
    }

    #[test]
    fn increases_are_since_the_last_call() {
        let mut t = NetErrorTracker::default();
        let first = t.update(parse(TEXT));
        assert_eq!(first[0].new, ErrorCounts::default(), "nothing new yet");
        let mut later = parse(TEXT);
        later[1].1.rx_dropped += 4;
        let next = t.update(later);
        let eth0 = next.iter().find(|n| n.iface == "eth0").expect("eth0");
        assert_eq!(eth0.new.rx_dropped, 4);
        assert_eq!(eth0.total.rx_dropped, 11);
    }
}
