//! Metrics history: 1-minute and 10-minute aggregates per agent.
//!
//! Minutes are merged on conflict (weighted means, maxima), so a minute split across a reconnect, or
//! written live and then again from back-fill, adds up instead of overwriting. Ten-minute buckets are
//! rolled up from the minutes in SQL, so they are always consistent with them.

use flotilla_wire::IdentityId;
use flotilla_wire::aggregate::TEN_MINUTES_MS;
use flotilla_wire::msg::MinuteAggregate;
use rusqlite::{Connection, params};

/// Which table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// `metrics_1m`.
    Minute,
    /// `metrics_10m`.
    TenMinutes,
}

impl Resolution {
    fn table(self) -> &'static str {
        match self {
            Self::Minute => "metrics_1m",
            Self::TenMinutes => "metrics_10m",
        }
    }

    /// Bucket length in seconds.
    pub fn seconds(self) -> u32 {
        match self {
            Self::Minute => 60,
            Self::TenMinutes => 600,
        }
    }
}

const COLUMNS: &str = "start_ms, samples, cpu_avg, cpu_max, mem_avg, mem_max, mem_total, load1_avg, disk_pct_max, net_rx_avg, net_tx_avg, net_max, disk_read_avg, disk_write_avg";

/// Merges minutes into `metrics_1m`. Call inside a transaction for batches.
pub fn upsert_minutes(
    conn: &Connection,
    rows: &[(IdentityId, MinuteAggregate)],
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO metrics_1m (agent_id, start_ms, samples, cpu_avg, cpu_max, mem_avg, mem_max, mem_total, load1_avg,
             disk_pct_max, net_rx_avg, net_tx_avg, net_max, disk_read_avg, disk_write_avg)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (agent_id, start_ms) DO UPDATE SET
             cpu_avg = (cpu_avg * samples + excluded.cpu_avg * excluded.samples) / (samples + excluded.samples),
             mem_avg = (mem_avg * samples + excluded.mem_avg * excluded.samples) / (samples + excluded.samples),
             load1_avg = (load1_avg * samples + excluded.load1_avg * excluded.samples) / (samples + excluded.samples),
             net_rx_avg = (net_rx_avg * samples + excluded.net_rx_avg * excluded.samples) / (samples + excluded.samples),
             net_tx_avg = (net_tx_avg * samples + excluded.net_tx_avg * excluded.samples) / (samples + excluded.samples),
             disk_read_avg = (disk_read_avg * samples + excluded.disk_read_avg * excluded.samples) / (samples + excluded.samples),
             disk_write_avg = (disk_write_avg * samples + excluded.disk_write_avg * excluded.samples) / (samples + excluded.samples),
             cpu_max = max(cpu_max, excluded.cpu_max),
             mem_max = max(mem_max, excluded.mem_max),
             mem_total = excluded.mem_total,
             disk_pct_max = max(disk_pct_max, excluded.disk_pct_max),
             net_max = max(net_max, excluded.net_max),
             samples = samples + excluded.samples",
    )?;
    for (id, a) in rows {
        stmt.execute(params![
            id.as_str(),
            a.start_ms as i64,
            a.samples,
            f64::from(a.cpu_avg),
            f64::from(a.cpu_max),
            a.mem_avg as i64,
            a.mem_max as i64,
            a.mem_total as i64,
            f64::from(a.load1_avg),
            f64::from(a.disk_pct_max),
            a.net_rx_avg as i64,
            a.net_tx_avg as i64,
            a.net_max as i64,
            a.disk_read_avg as i64,
            a.disk_write_avg as i64,
        ])?;
    }
    Ok(())
}

/// The ten-minute roll-up of one agent's minutes. `HAVING count(*) > 0`, not `GROUP BY agent_id`:
/// with `agent_id = ?1` in the filter, SQLite compared the grouping term against the bound value,
/// which marks the statement to be compiled again whenever `?1` changes, that is on every call (a
/// tenth of the hub's CPU with 20,000 agents). Without rows the aggregate yields none either way.
const ROLLUP_SQL: &str = "INSERT OR REPLACE INTO metrics_10m (agent_id, start_ms, samples, cpu_avg, cpu_max, mem_avg, mem_max, mem_total,
             load1_avg, disk_pct_max, net_rx_avg, net_tx_avg, net_max, disk_read_avg, disk_write_avg)
         SELECT agent_id, ?2, sum(samples),
             sum(cpu_avg * samples) / sum(samples), max(cpu_max),
             sum(mem_avg * samples) / sum(samples), max(mem_max), max(mem_total),
             sum(load1_avg * samples) / sum(samples), max(disk_pct_max),
             sum(net_rx_avg * samples) / sum(samples), sum(net_tx_avg * samples) / sum(samples), max(net_max),
             sum(disk_read_avg * samples) / sum(samples), sum(disk_write_avg * samples) / sum(samples)
         FROM metrics_1m WHERE agent_id = ?1 AND start_ms >= ?2 AND start_ms < ?3 HAVING count(*) > 0";

/// Recomputes the ten-minute bucket of `agent` starting at `start_ms` from its minutes.
pub fn rollup(conn: &Connection, agent: &IdentityId, start_ms: u64) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(ROLLUP_SQL)?;
    stmt.execute(params![
        agent.as_str(),
        start_ms as i64,
        (start_ms + TEN_MINUTES_MS) as i64
    ])?;
    Ok(())
}

/// Buckets of `agent` since `since_ms`, oldest first.
pub fn series(
    conn: &Connection,
    agent: &IdentityId,
    res: Resolution,
    since_ms: u64,
) -> rusqlite::Result<Vec<MinuteAggregate>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM {} WHERE agent_id = ?1 AND start_ms >= ?2 ORDER BY start_ms",
        res.table()
    ))?;
    let rows = stmt.query_map(params![agent.as_str(), since_ms as i64], |r| {
        Ok(MinuteAggregate {
            start_ms: r.get::<_, i64>(0)? as u64,
            samples: r.get(1)?,
            cpu_avg: r.get::<_, f64>(2)? as f32,
            cpu_max: r.get::<_, f64>(3)? as f32,
            mem_avg: r.get::<_, i64>(4)? as u64,
            mem_max: r.get::<_, i64>(5)? as u64,
            mem_total: r.get::<_, i64>(6)? as u64,
            load1_avg: r.get::<_, f64>(7)? as f32,
            disk_pct_max: r.get::<_, f64>(8)? as f32,
            net_rx_avg: r.get::<_, i64>(9)? as u64,
            net_tx_avg: r.get::<_, i64>(10)? as u64,
            net_max: r.get::<_, i64>(11)? as u64,
            disk_read_avg: r.get::<_, i64>(12)? as u64,
            disk_write_avg: r.get::<_, i64>(13)? as u64,
        })
    })?;
    rows.collect()
}

/// Deletes buckets older than the cut-offs; returns rows removed from each table.
pub fn prune(
    conn: &Connection,
    minute_cutoff_ms: u64,
    ten_minute_cutoff_ms: u64,
) -> rusqlite::Result<(usize, usize)> {
    let a = conn.execute(
        "DELETE FROM metrics_1m WHERE start_ms < ?1",
        [minute_cutoff_ms as i64],
    )?;
    let b = conn.execute(
        "DELETE FROM metrics_10m WHERE start_ms < ?1",
        [ten_minute_cutoff_ms as i64],
    )?;
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(start_ms: u64, samples: u32, cpu_avg: f32, cpu_max: f32) -> MinuteAggregate {
        MinuteAggregate {
            start_ms,
            samples,
            cpu_avg,
            cpu_max,
            ..Default::default()
        }
    }

    #[test]
    fn ten_minute_rollups_weigh_samples_and_compile_once() {
        let mut c = Connection::open_in_memory().expect("db");
        crate::store::migrate::migrate(&mut c).expect("migrate");
        let agents: Vec<IdentityId> = (0..4)
            .map(|i| IdentityId::parse(&format!("a-{i:016x}")).expect("id"))
            .collect();
        for (n, id) in agents.iter().enumerate() {
            let load = n as f32 * 10.0;
            let rows = [
                (id.clone(), minute(0, 3, load, load + 5.0)),
                (id.clone(), minute(60_000, 1, load + 40.0, load + 50.0)),
                // The next ten-minute bucket: not part of the first roll-up.
                (id.clone(), minute(TEN_MINUTES_MS, 1, 99.0, 99.0)),
            ];
            upsert_minutes(&c, &rows).expect("minutes");
            rollup(&c, id, 0).expect("rollup");
        }
        // A bucket without minutes stores nothing.
        rollup(&c, &agents[0], 5 * TEN_MINUTES_MS).expect("empty rollup");

        for (n, id) in agents.iter().enumerate() {
            let load = n as f32 * 10.0;
            let ten = series(&c, id, Resolution::TenMinutes, 0).expect("series");
            assert_eq!(ten.len(), 1, "one bucket per agent: {ten:?}");
            assert_eq!(ten[0].samples, 4);
            assert!((ten[0].cpu_avg - (load * 3.0 + load + 40.0) / 4.0).abs() < 1e-3);
            assert_eq!(ten[0].cpu_max, load + 50.0);
        }
        let stmt = c.prepare_cached(ROLLUP_SQL).expect("cached");
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::Run), 5);
        assert_eq!(
            stmt.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the roll-up must not be compiled again for each agent"
        );
    }
}
