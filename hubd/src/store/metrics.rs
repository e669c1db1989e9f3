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

/// Recomputes the ten-minute bucket of `agent` starting at `start_ms` from its minutes.
pub fn rollup(conn: &Connection, agent: &IdentityId, start_ms: u64) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO metrics_10m (agent_id, start_ms, samples, cpu_avg, cpu_max, mem_avg, mem_max, mem_total,
             load1_avg, disk_pct_max, net_rx_avg, net_tx_avg, net_max, disk_read_avg, disk_write_avg)
         SELECT agent_id, ?2, sum(samples),
             sum(cpu_avg * samples) / sum(samples), max(cpu_max),
             sum(mem_avg * samples) / sum(samples), max(mem_max), max(mem_total),
             sum(load1_avg * samples) / sum(samples), max(disk_pct_max),
             sum(net_rx_avg * samples) / sum(samples), sum(net_tx_avg * samples) / sum(samples), max(net_max),
             sum(disk_read_avg * samples) / sum(samples), sum(disk_write_avg * samples) / sum(samples)
         FROM metrics_1m WHERE agent_id = ?1 AND start_ms >= ?2 AND start_ms < ?3 GROUP BY agent_id",
    )?;
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
