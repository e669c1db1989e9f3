//! Container history: one row per container and minute (`container_1m`).
//!
//! Minutes merge on conflict as host minutes do (weighted means, maxima), so a minute split across a
//! reconnect or a new full inventory adds up instead of overwriting.

use crate::workloads::MinuteRow;
use flotilla_wire::IdentityId;
use flotilla_wire::workloads::ContainerMinute;
use rusqlite::{Connection, OptionalExtension, params};

/// Merges minutes into `container_1m`. Call inside a transaction for batches.
pub fn upsert_minutes(conn: &Connection, rows: &[MinuteRow]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO container_1m (agent_id, container_id, name, start_ms, samples, cpu_avg, cpu_max,
             mem_avg, net_rx_avg, net_tx_avg, blk_read_avg, blk_write_avg)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (agent_id, container_id, start_ms) DO UPDATE SET
             cpu_avg = (cpu_avg * samples + excluded.cpu_avg * excluded.samples) / (samples + excluded.samples),
             mem_avg = (mem_avg * samples + excluded.mem_avg * excluded.samples) / (samples + excluded.samples),
             net_rx_avg = (net_rx_avg * samples + excluded.net_rx_avg * excluded.samples) / (samples + excluded.samples),
             net_tx_avg = (net_tx_avg * samples + excluded.net_tx_avg * excluded.samples) / (samples + excluded.samples),
             blk_read_avg = (blk_read_avg * samples + excluded.blk_read_avg * excluded.samples) / (samples + excluded.samples),
             blk_write_avg = (blk_write_avg * samples + excluded.blk_write_avg * excluded.samples) / (samples + excluded.samples),
             cpu_max = max(cpu_max, excluded.cpu_max),
             name = excluded.name,
             samples = samples + excluded.samples",
    )?;
    for r in rows {
        let m = &r.minute;
        stmt.execute(params![
            r.agent.as_str(),
            r.container,
            r.name,
            m.start_ms as i64,
            r.samples,
            f64::from(m.cpu_avg),
            f64::from(m.cpu_max),
            m.mem_avg as i64,
            m.net_rx_avg as i64,
            m.net_tx_avg as i64,
            m.blk_read_avg as i64,
            m.blk_write_avg as i64,
        ])?;
    }
    Ok(())
}

/// The most recent container of `agent` that `reference` names in the history (name, full id or
/// id prefix; the history keeps the first [`crate::workloads::HISTORY_ID_HEX`] digits of ids): how
/// a removed container's minutes are still found.
pub fn find(
    conn: &Connection,
    agent: &IdentityId,
    reference: &str,
) -> rusqlite::Result<Option<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT container_id, name FROM container_1m
         WHERE agent_id = ?1 AND (name = ?2 OR substr(container_id, 1, length(?3)) = ?3)
         ORDER BY start_ms DESC LIMIT 1",
    )?;
    let id_prefix = crate::workloads::history_id(reference);
    stmt.query_row(params![agent.as_str(), reference, id_prefix], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
}

/// Minutes of one container since `since_ms`, oldest first.
pub fn series(
    conn: &Connection,
    agent: &IdentityId,
    container: &str,
    since_ms: u64,
) -> rusqlite::Result<Vec<ContainerMinute>> {
    let mut stmt = conn.prepare_cached(
        "SELECT start_ms, cpu_avg, cpu_max, mem_avg, net_rx_avg, net_tx_avg, blk_read_avg, blk_write_avg
         FROM container_1m WHERE agent_id = ?1 AND container_id = ?2 AND start_ms >= ?3
         ORDER BY start_ms",
    )?;
    let rows = stmt.query_map(params![agent.as_str(), container, since_ms as i64], |r| {
        Ok(ContainerMinute {
            start_ms: r.get::<_, i64>(0)? as u64,
            cpu_avg: r.get::<_, f64>(1)? as f32,
            cpu_max: r.get::<_, f64>(2)? as f32,
            mem_avg: r.get::<_, i64>(3)? as u64,
            net_rx_avg: r.get::<_, i64>(4)? as u64,
            net_tx_avg: r.get::<_, i64>(5)? as u64,
            blk_read_avg: r.get::<_, i64>(6)? as u64,
            blk_write_avg: r.get::<_, i64>(7)? as u64,
        })
    })?;
    rows.collect()
}

/// Deletes minutes older than `cutoff_ms`: a removed container is forgotten with its last minute.
pub fn prune(conn: &Connection, cutoff_ms: u64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM container_1m WHERE start_ms < ?1",
        [cutoff_ms as i64],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::Role;

    fn row(
        agent: &IdentityId,
        id: &str,
        name: &str,
        start_ms: u64,
        samples: u32,
        cpu: f32,
    ) -> MinuteRow {
        MinuteRow {
            agent: agent.clone(),
            container: id.into(),
            name: name.into(),
            samples,
            minute: ContainerMinute {
                start_ms,
                cpu_avg: cpu,
                cpu_max: cpu,
                mem_avg: 100,
                ..ContainerMinute::default()
            },
        }
    }

    #[test]
    fn minutes_merge_are_found_by_name_or_prefix_and_are_pruned() {
        let mut c = Connection::open_in_memory().expect("db");
        crate::store::migrate::migrate(&mut c).expect("migrate");
        let a = IdentityId::from_random(Role::Agent, [1; 8]);
        let b = IdentityId::from_random(Role::Agent, [2; 8]);
        let full = "abcdef".repeat(10) + "0123";
        let id = crate::workloads::history_id(&full).to_string();
        upsert_minutes(
            &c,
            &[
                row(&a, &id, "web", 0, 3, 10.0),
                row(&a, &id, "web", 0, 1, 50.0),
                row(&a, &id, "web", 60_000, 1, 5.0),
                row(&b, "ff", "web", 0, 1, 99.0),
            ],
        )
        .expect("upsert");
        let s = series(&c, &a, &id, 0).expect("series");
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].cpu_avg, s[0].cpu_max), (20.0, 50.0));
        assert_eq!(
            find(&c, &a, "web").expect("find"),
            Some((id.clone(), "web".into()))
        );
        assert_eq!(
            find(&c, &a, "abcd").expect("find").map(|f| f.0),
            Some(id.clone())
        );
        assert_eq!(
            find(&c, &a, &full).expect("find").map(|f| f.0),
            Some(id.clone())
        );
        assert_eq!(find(&c, &a, "nope").expect("find"), None);
        assert_eq!(prune(&c, 60_000).expect("prune"), 2);
        assert_eq!(series(&c, &a, &id, 0).expect("series").len(), 1);
    }
}
