//! Metrics history ingest: how many per-minute rows per second the history writer stores (batched
//! upserts plus ten-minute roll-ups into a real SQLite file), which bounds how many agents one hub
//! can keep history for. Run: `cargo bench -p flotilla-hubd --bench history_ingest`.

use flotilla_wire::msg::MinuteAggregate;
use flotilla_wire::{IdentityId, Role};
use hubd::history::{History, Retention};
use std::time::Instant;

/// Agents simulated: the largest fleet.
const AGENTS: usize = 20_000;
/// Minutes each agent reports: 3 minutes of a 20,000-agent fleet is 60,000 rows.
const MINUTES: u64 = 3;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, thread) = hubd::store::Store::open(&dir.path().join("bench.db")).expect("store");
        let retention = Retention { minute_days: 30, ten_minute_days: 365, container_days: 30 };
        let history = History::start(store.clone(), retention).await;
        let ids: Vec<IdentityId> = (0..AGENTS).map(|i| IdentityId::from_random(Role::Agent, (i as u64).to_be_bytes())).collect();
        // A round ten-minute boundary, so every agent fills whole buckets.
        let base = 1_800_000_000_000u64;
        let started = Instant::now();
        for m in 0..MINUTES {
            for id in &ids {
                // Realistic magnitudes, so SQLite's variable-length integers take their real size.
                let minute = MinuteAggregate {
                    start_ms: base + m * 60_000,
                    samples: 12,
                    cpu_avg: 12.5,
                    cpu_max: 40.0,
                    mem_avg: 3_221_225_472 + m,
                    mem_max: 4_294_967_296 + m,
                    mem_total: 8 << 30,
                    load1_avg: 0.75,
                    disk_pct_max: 61.5,
                    net_rx_avg: 1_250_000 + m,
                    net_tx_avg: 350_000 + m,
                    net_max: 9_000_000 + m,
                    disk_read_avg: 2_000_000 + m,
                    disk_write_avg: 800_000 + m,
                };
                history.record_backfill(id, vec![minute]).await;
            }
        }
        assert!(history.close(std::time::Duration::from_secs(600)).await, "writer finished");
        let elapsed = started.elapsed().as_secs_f64();
        let rows = AGENTS as u64 * MINUTES;
        let stored: i64 = store.call(|c| Ok(c.query_row("SELECT count(*) FROM metrics_1m", [], |r| r.get(0))?)).await.expect("count");
        assert_eq!(stored as u64, rows, "every row stored");
        // Bytes the minute table and its index take per row, from SQLite's own page accounting.
        let table_bytes: i64 = store
            .call(|c| {
                Ok(c.query_row(
                    "SELECT sum(pgsize) FROM dbstat WHERE name LIKE '%metrics_1m%'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .expect("dbstat");
        let per_row = table_bytes as f64 / rows as f64;
        drop(store);
        let _ = thread.join();
        println!("history_ingest: {rows} minute rows from {AGENTS} agents in {elapsed:.2} s = {:.0} rows/s", rows as f64 / elapsed);
        println!("history_ingest: at one row per agent per minute that is history for {:.0} agents", rows as f64 / elapsed * 60.0);
        // 30 days of minute rows plus a year of ten-minute rows (same row shape) per agent.
        let per_agent = per_row * (30.0 * 1440.0 + 365.0 * 144.0);
        println!(
            "history_ingest: {per_row:.0} bytes per stored row (table and index); default retention = {:.1} MiB per agent, {:.1} GiB per 1,000 agents",
            per_agent / 1_048_576.0,
            per_agent * 1000.0 / 1_073_741_824.0
        );
    });
}
