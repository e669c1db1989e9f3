//! Host history storage: what the per-series history and the per-minute top processes cost the hub
//! per agent. Simulated agents with a realistic host (4 mounts, 3 interfaces, 4 block devices,
//! 6 sensors, 1 GPU, 10 custom series, top 5 by CPU and by memory with command lines) send a sample
//! and a detail every 5 s through the real fold and batching writer into a real SQLite file; SQLite's
//! own page accounting (`dbstat`) gives the bytes. Run:
//! `cargo bench -p flotilla-hubd --bench host_history`.

use flotilla_wire::history::Metric;
use flotilla_wire::host::TopProcess;
use flotilla_wire::{IdentityId, Role};
use hubd::history::Retention;
use hubd::host_history::{HostHistory, Observation};
use std::time::{Duration, Instant};

/// Agents simulated: enough that per-agent figures are not dominated by one page's slack.
const AGENTS: usize = 200;
/// Minutes simulated: three whole ten-minute buckets.
const MINUTES: u64 = 30;
/// The agent's default metrics interval.
const INTERVAL_MS: u64 = 5_000;

/// One agent's host: series names per metric.
fn observation(at_ms: u64, rng: &mut fastrand::Rng, agent: usize) -> Observation {
    let mut values = Vec::new();
    let mut v = |metric: Metric, name: &str, base: f64, spread: f64| {
        values.push((metric, name.to_owned(), base + rng.f64() * spread));
    };
    for (mount, used) in [
        ("/", 2.1e10),
        ("/boot", 2.0e8),
        ("/var", 5.5e10),
        ("/home", 1.2e11),
    ] {
        // Disk use moves slowly: a few MB a minute.
        v(
            Metric::DiskUsed,
            mount,
            (used + (at_ms % 3_600_000) as f64).round(),
            0.0,
        );
        v(Metric::DiskPct, mount, 41.0, 0.05);
    }
    for iface in ["eth0", "eth1", "docker0"] {
        v(Metric::NetRx, iface, 1.2e6, 4e5);
        v(Metric::NetTx, iface, 3.5e5, 1e5);
        v(Metric::NetRxErrors, iface, 0.0, 0.0);
        v(Metric::NetTxErrors, iface, 0.0, 0.0);
    }
    for dev in ["vda", "vda1", "vdb", "nvme0n1"] {
        v(Metric::IoRead, dev, 2e6, 1e6);
        v(Metric::IoWrite, dev, 8e5, 4e5);
        v(Metric::IoReadOps, dev, 120.0, 40.0);
        v(Metric::IoWriteOps, dev, 60.0, 20.0);
        v(Metric::IoBusy, dev, 7.0, 5.0);
    }
    for sensor in ["cpu0", "cpu1", "cpu2", "cpu3", "nvme", "gpu0"] {
        v(Metric::Temp, sensor, 45.0, 10.0);
    }
    v(Metric::GpuUtil, "0", 60.0, 30.0);
    v(Metric::GpuMem, "0", 4.0e10, 1e9);
    for i in 0..10 {
        v(
            Metric::Custom,
            &format!("app_requests_total{{code=\"{i}00\"}}"),
            1e4,
            100.0,
        );
    }
    // Fifteen processes, of which each sample names the busiest and biggest five.
    let procs: Vec<TopProcess> = (0..15u32)
        .map(|i| TopProcess {
            pid: 1000 + i + agent as u32,
            name: format!("worker-{i}"),
            cmd: format!("/usr/bin/python3 -m app.worker --queue q{i} --concurrency 8"),
            user: "app".into(),
            cpu_pct: rng.f32() * 100.0,
            mem: 100_000_000 + u64::from(i) * 10_000_000,
        })
        .collect();
    let mut by_cpu = procs.clone();
    by_cpu.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct));
    let mut named: Vec<TopProcess> = by_cpu.into_iter().take(5).collect();
    named.extend(procs.into_iter().rev().take(5));
    Observation {
        at_ms,
        values,
        procs: Some(named),
        from_detail: true,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, thread) =
            hubd::store::Store::open(&dir.path().join("bench.db")).expect("store");
        let retention = Retention {
            minute_days: 30,
            ten_minute_days: 365,
            container_days: 30,
        };
        let (_keep, rx) = tokio::sync::watch::channel(retention);
        let history = HostHistory::start(store.clone(), rx).await;
        let ids: Vec<IdentityId> = (0..AGENTS)
            .map(|i| IdentityId::from_random(Role::Agent, (i as u64).to_be_bytes()))
            .collect();
        // Recent enough that nothing is pruned, on a ten-minute boundary.
        let now = hubd::store::now_ms();
        let base = now - now % 600_000 - 3_600_000;
        let mut rng = fastrand::Rng::with_seed(7);
        let started = Instant::now();
        let mut observations = 0u64;
        for step in 0..MINUTES * 60_000 / INTERVAL_MS {
            let at = base + step * INTERVAL_MS;
            for (n, id) in ids.iter().enumerate() {
                history.record(id, observation(at, &mut rng, n)).await;
                observations += 1;
            }
        }
        assert!(history.close(Duration::from_secs(600)).await, "writer finished");
        let elapsed = started.elapsed().as_secs_f64();
        let count = |table: &'static str| {
            let store = store.clone();
            async move {
                store
                    .call(move |c| {
                        Ok(c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                            r.get::<_, i64>(0)
                        })?)
                    })
                    .await
                    .expect("count") as f64
            }
        };
        let bytes = |table: &'static str| {
            let store = store.clone();
            async move {
                store
                    .call(move |c| {
                        Ok(c.query_row(
                            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = ?1 OR name LIKE 'sqlite_autoindex_' || ?1 || '_%'",
                            [table],
                            |r| r.get::<_, i64>(0),
                        )?)
                    })
                    .await
                    .expect("dbstat") as f64
            }
        };
        let per_agent_minute = (AGENTS as u64 * MINUTES) as f64;
        let (s1, s10, top, keys) = (
            count("series_1m").await,
            count("series_10m").await,
            count("top_1m").await,
            count("series").await,
        );
        let (b1, b10, btop, bkeys) = (
            bytes("series_1m").await,
            bytes("series_10m").await,
            bytes("top_1m").await + bytes("top_procs").await + bytes("top_procs_pid").await,
            bytes("series").await + bytes("host_agents").await,
        );
        drop(store);
        let _ = thread.join();
        let series_per_agent = keys / AGENTS as f64;
        println!(
            "host_history: {observations} observations from {AGENTS} agents ({series_per_agent:.0} series each) in {elapsed:.2} s = {:.0} observations/s",
            observations as f64 / elapsed
        );
        println!(
            "host_history: per agent and minute {:.1} series rows ({:.0} B, {:.1} B/row) + {:.1} top rows ({:.0} B with their processes, {:.1} B/row)",
            s1 / per_agent_minute,
            b1 / per_agent_minute,
            b1 / s1,
            top / per_agent_minute,
            btop / per_agent_minute,
            btop / top
        );
        let ten_per_bucket = b10 / (AGENTS as f64 * MINUTES as f64 / 10.0);
        let day_1m = (b1 + btop) / per_agent_minute * 1440.0;
        let day_10m = ten_per_bucket * 144.0;
        println!(
            "host_history: per agent and day {:.2} MiB (minutes and top {:.2} MiB, ten-minute buckets {:.3} MiB); series keys {:.1} KiB per agent",
            (day_1m + day_10m) / 1_048_576.0,
            day_1m / 1_048_576.0,
            day_10m / 1_048_576.0,
            bkeys / AGENTS as f64 / 1024.0
        );
        let retained = day_1m * 30.0 + day_10m * 365.0;
        println!(
            "host_history: default retention (30 days of minutes, 365 of ten-minute buckets) = {:.0} MiB per agent, {:.1} GiB per 1,000 agents",
            retained / 1_048_576.0,
            retained * 1000.0 / 1_073_741_824.0
        );
        let _ = s10;
    });
}
