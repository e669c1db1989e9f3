//! Per-series host history (`series_1m`, `series_10m`) and per-minute top processes (`top_1m`).
//!
//! Rows are keyed by integers: `host_agents` gives each agent a small key and `series` one per
//! (agent, metric, name), so a row of history is five numbers instead of repeating an agent id and
//! a mount point on every minute. A top process's pid, name, command line and user are kept once
//! in `top_procs` for as long as a minute refers to them: the same daemons top the lists minute
//! after minute, and their command lines were most of the bytes. Times are minutes since the
//! epoch; a top process's CPU is kept in tenths of a percent (an integer takes 1-3 bytes where a
//! REAL takes 8).
//!
//! Minutes merge on conflict (weighted means, maxima) as host minutes do, so a minute split across
//! a reconnect adds up. Ten-minute buckets are rolled up from the minutes in SQL. Pruning deletes
//! by primary-key range per series (no index on time, which would cost a third more disk) and then
//! forgets series keys that have no rows left.

use flotilla_wire::IdentityId;
use flotilla_wire::history::{
    Metric, SeriesKind, SeriesPoint, SeriesPoints, SeriesSelector, TopMinute,
};
use flotilla_wire::host::{TOP_PROCESSES, TopProcess};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeSet, HashMap};

/// The schema of this module: appended to the migrations in `migrate.rs`.
pub(crate) const MIGRATION: &str = r#"
CREATE TABLE host_agents (
    key      INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL UNIQUE
);
CREATE TABLE series (
    id        INTEGER PRIMARY KEY,
    agent_key INTEGER NOT NULL,
    metric    INTEGER NOT NULL,
    name      TEXT NOT NULL,
    UNIQUE (agent_key, metric, name)
);
CREATE TABLE series_1m (
    series_id INTEGER NOT NULL,
    minute    INTEGER NOT NULL,
    samples   INTEGER NOT NULL,
    avg       REAL NOT NULL,
    max       REAL NOT NULL,
    PRIMARY KEY (series_id, minute)
) WITHOUT ROWID;
CREATE TABLE series_10m (
    series_id INTEGER NOT NULL,
    minute    INTEGER NOT NULL,
    samples   INTEGER NOT NULL,
    avg       REAL NOT NULL,
    max       REAL NOT NULL,
    PRIMARY KEY (series_id, minute)
) WITHOUT ROWID;
CREATE TABLE top_procs (
    id          INTEGER PRIMARY KEY,
    agent_key   INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    name        TEXT NOT NULL,
    cmd         TEXT NOT NULL,
    user        TEXT NOT NULL,
    last_minute INTEGER NOT NULL
);
CREATE INDEX top_procs_pid ON top_procs(agent_key, pid);
CREATE TABLE top_1m (
    agent_key INTEGER NOT NULL,
    minute    INTEGER NOT NULL,
    by_mem    INTEGER NOT NULL,
    rank      INTEGER NOT NULL,
    samples   INTEGER NOT NULL,
    proc_id   INTEGER NOT NULL,
    cpu_tenth INTEGER NOT NULL,
    mem       INTEGER NOT NULL,
    PRIMARY KEY (agent_key, minute, by_mem, rank)
) WITHOUT ROWID;
"#;

/// How a metric's values are stored: percentages, temperatures and per-second counts in
/// hundredths, as whole numbers; bytes as whole bytes; custom values as they are. SQLite writes a
/// whole number in a REAL column in one to six bytes instead of eight, which makes a minute row
/// about a third smaller; a hundredth of a percent or a degree is finer than any chart shows.
fn scale(metric: Metric) -> Option<f64> {
    match metric {
        Metric::DiskPct
        | Metric::IoReadOps
        | Metric::IoWriteOps
        | Metric::IoBusy
        | Metric::Temp
        | Metric::GpuUtil
        | Metric::NetRxErrors
        | Metric::NetTxErrors => Some(100.0),
        m if m.is_bytes() => Some(1.0),
        _ => None,
    }
}

fn to_stored(metric: Metric, v: f64) -> f64 {
    scale(metric).map_or(v, |k| (v * k).round())
}

fn from_stored(metric: Metric, v: f64) -> f64 {
    scale(metric).map_or(v, |k| v / k)
}

/// The metric codes [`scale`] keeps as whole numbers, for the roll-up's `IN (…)`.
fn whole_codes() -> String {
    Metric::ALL
        .iter()
        .filter(|m| scale(**m).is_some())
        .map(|m| m.code().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Milliseconds per minute.
const MINUTE_MS: u64 = 60_000;
/// Minutes per ten-minute bucket.
const TEN: i64 = 10;

/// Which table a series is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// `series_1m`.
    Minute,
    /// `series_10m`.
    TenMinutes,
}

impl Tier {
    fn table(self) -> &'static str {
        match self {
            Self::Minute => "series_1m",
            Self::TenMinutes => "series_10m",
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

/// One finished minute of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesMinute {
    /// Whose.
    pub agent: IdentityId,
    /// What it measures.
    pub metric: Metric,
    /// Mount, interface, device, sensor, GPU or custom name.
    pub name: String,
    /// Minute start, ms since the epoch (a multiple of a minute).
    pub start_ms: u64,
    /// Samples folded into it.
    pub samples: u32,
    /// Mean.
    pub avg: f64,
    /// Highest sample.
    pub max: f64,
}

/// Minute number of `ms`.
pub fn minute_of(ms: u64) -> i64 {
    (ms / MINUTE_MS) as i64
}

/// The small integer key of `agent`, made on first use.
pub fn agent_key(conn: &Connection, agent: &IdentityId) -> rusqlite::Result<i64> {
    conn.prepare_cached("INSERT OR IGNORE INTO host_agents (agent_id) VALUES (?1)")?
        .execute([agent.as_str()])?;
    conn.prepare_cached("SELECT key FROM host_agents WHERE agent_id = ?1")?
        .query_row([agent.as_str()], |r| r.get(0))
}

/// The key of `agent` if it has any host history.
pub fn find_agent_key(conn: &Connection, agent: &IdentityId) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT key FROM host_agents WHERE agent_id = ?1")?
        .query_row([agent.as_str()], |r| r.get(0))
        .optional()
}

fn series_id(conn: &Connection, key: i64, metric: Metric, name: &str) -> rusqlite::Result<i64> {
    let find = |c: &Connection| {
        c.prepare_cached(
            "SELECT id FROM series WHERE agent_key = ?1 AND metric = ?2 AND name = ?3",
        )?
        .query_row(params![key, metric.code(), name], |r| r.get(0))
        .optional()
    };
    if let Some(id) = find(conn)? {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO series (agent_key, metric, name) VALUES (?1, ?2, ?3)")?
        .execute(params![key, metric.code(), name])?;
    Ok(conn.last_insert_rowid())
}

/// Merges minutes into `series_1m` and rolls the ten-minute buckets they touch up again. Call
/// inside a transaction.
pub fn upsert_minutes(conn: &Connection, rows: &[SeriesMinute]) -> rusqlite::Result<()> {
    let mut keys: HashMap<&IdentityId, i64> = HashMap::new();
    let mut windows: BTreeSet<(i64, i64)> = BTreeSet::new();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO series_1m (series_id, minute, samples, avg, max) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (series_id, minute) DO UPDATE SET
             avg = (avg * samples + excluded.avg * excluded.samples) / (samples + excluded.samples),
             max = max(max, excluded.max),
             samples = samples + excluded.samples",
    )?;
    for r in rows {
        let key = match keys.get(&r.agent) {
            Some(k) => *k,
            None => {
                let k = agent_key(conn, &r.agent)?;
                keys.insert(&r.agent, k);
                k
            }
        };
        let id = series_id(conn, key, r.metric, &r.name)?;
        let minute = minute_of(r.start_ms);
        stmt.execute(params![
            id,
            minute,
            r.samples,
            to_stored(r.metric, r.avg),
            to_stored(r.metric, r.max)
        ])?;
        windows.insert((key, minute - minute.rem_euclid(TEN)));
    }
    for (key, window) in windows {
        rollup(conn, key, window)?;
    }
    Ok(())
}

/// Recomputes the ten-minute buckets of every series of agent `key` for the window starting at
/// minute `window`: one statement per agent and window, walking the agent's series by the unique
/// index and each series' minutes by its primary key.
pub fn rollup(conn: &Connection, key: i64, window: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO series_10m (series_id, minute, samples, avg, max)
         SELECT m.series_id, ?2, sum(m.samples),
             CASE WHEN s.metric IN ({}) THEN round(sum(m.avg * m.samples) / sum(m.samples))
                  ELSE sum(m.avg * m.samples) / sum(m.samples) END,
             max(m.max)
         FROM series s JOIN series_1m m ON m.series_id = s.id
         WHERE s.agent_key = ?1 AND m.minute >= ?2 AND m.minute < ?3
         GROUP BY m.series_id",
        whole_codes()
    ))?
    .execute(params![key, window, window + TEN])?;
    Ok(())
}

/// Stores one agent's top processes of a minute. A minute written twice (a reconnect within it)
/// keeps the version that folded more samples.
pub fn upsert_top(conn: &Connection, agent: &IdentityId, m: &TopMinute) -> rusqlite::Result<()> {
    let key = agent_key(conn, agent)?;
    let minute = minute_of(m.start_ms);
    let stored: Option<u32> = conn
        .prepare_cached("SELECT max(samples) FROM top_1m WHERE agent_key = ?1 AND minute = ?2")?
        .query_row(params![key, minute], |r| r.get(0))?;
    if stored.is_some_and(|s| s > m.samples) {
        return Ok(());
    }
    conn.prepare_cached("DELETE FROM top_1m WHERE agent_key = ?1 AND minute = ?2")?
        .execute(params![key, minute])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO top_1m (agent_key, minute, by_mem, rank, samples, proc_id, cpu_tenth, mem)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (by_mem, list) in [(0, &m.by_cpu), (1, &m.by_mem)] {
        for (rank, p) in list.iter().take(TOP_PROCESSES).enumerate() {
            let proc_id = top_proc(conn, key, p, minute)?;
            insert.execute(params![
                key,
                minute,
                by_mem,
                rank as i64,
                m.samples,
                proc_id,
                (f64::from(p.cpu_pct.max(0.0)) * 10.0).round() as i64,
                p.mem as i64,
            ])?;
        }
    }
    Ok(())
}

/// The id of a top process of agent `key` (made on first sight), marked as used at `minute`.
fn top_proc(conn: &Connection, key: i64, p: &TopProcess, minute: i64) -> rusqlite::Result<i64> {
    let found: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM top_procs
             WHERE agent_key = ?1 AND pid = ?2 AND name = ?3 AND cmd = ?4 AND user = ?5",
        )?
        .query_row(params![key, p.pid, p.name, p.cmd, p.user], |r| r.get(0))
        .optional()?;
    if let Some(id) = found {
        conn.prepare_cached(
            "UPDATE top_procs SET last_minute = ?2 WHERE id = ?1 AND last_minute < ?2",
        )?
        .execute(params![id, minute])?;
        return Ok(id);
    }
    conn.prepare_cached(
        "INSERT INTO top_procs (agent_key, pid, name, cmd, user, last_minute)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![key, p.pid, p.name, p.cmd, p.user, minute])?;
    Ok(conn.last_insert_rowid())
}

/// The series of `agent` that `selectors` name, buckets from `since_ms` on, oldest first; series
/// in metric then name order. A selector that names nothing stored yields nothing.
pub fn read(
    conn: &Connection,
    agent: &IdentityId,
    selectors: &[SeriesSelector],
    tier: Tier,
    since_ms: u64,
) -> rusqlite::Result<Vec<SeriesPoints>> {
    let Some(key) = find_agent_key(conn, agent)? else {
        return Ok(Vec::new());
    };
    let mut found: Vec<(Metric, String, i64)> = Vec::new();
    {
        // A custom selector also names the labelled series of its metric: `name{…}`.
        let mut stmt = conn.prepare_cached(
            "SELECT id, metric, name FROM series WHERE agent_key = ?1
             AND (name = ?2 OR (?3 AND substr(name, 1, length(?2) + 1) = ?2 || '{'))",
        )?;
        for sel in selectors {
            let labelled = sel.kind == SeriesKind::Custom;
            let rows = stmt.query_map(params![key, sel.name, labelled], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, u8>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (id, code, name) = row?;
                if let Some(metric) = Metric::from_code(code).filter(|m| m.kind() == sel.kind) {
                    found.push((metric, name, id));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    let mut points = conn.prepare_cached(&format!(
        "SELECT minute, samples, avg, max FROM {} WHERE series_id = ?1 AND minute >= ?2 ORDER BY minute",
        tier.table()
    ))?;
    let mut since = minute_of(since_ms);
    if tier == Tier::TenMinutes {
        since -= since.rem_euclid(TEN);
    }
    let mut out = Vec::with_capacity(found.len());
    for (metric, name, id) in found {
        let pts = points
            .query_map(params![id, since], |r| {
                Ok(SeriesPoint {
                    start_ms: r.get::<_, i64>(0)? as u64 * MINUTE_MS,
                    samples: r.get(1)?,
                    avg: from_stored(metric, r.get(2)?),
                    max: from_stored(metric, r.get(3)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push(SeriesPoints {
            metric,
            name,
            resolution_s: tier.seconds(),
            points: pts,
        });
    }
    Ok(out)
}

/// The top-process minutes of `agent` in `[from_ms, to_ms)`, oldest first.
pub fn read_top(
    conn: &Connection,
    agent: &IdentityId,
    from_ms: u64,
    to_ms: u64,
) -> rusqlite::Result<Vec<TopMinute>> {
    let Some(key) = find_agent_key(conn, agent)? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(
        "SELECT t.minute, t.by_mem, t.samples, p.pid, p.name, p.cmd, p.user, t.cpu_tenth, t.mem
         FROM top_1m t JOIN top_procs p ON p.id = t.proc_id
         WHERE t.agent_key = ?1 AND t.minute >= ?2 AND t.minute < ?3
         ORDER BY t.minute, t.by_mem, t.rank",
    )?;
    let to_minute = (to_ms.div_ceil(MINUTE_MS)) as i64;
    let rows = stmt.query_map(params![key, minute_of(from_ms), to_minute], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, bool>(1)?,
            r.get::<_, u32>(2)?,
            TopProcess {
                pid: r.get(3)?,
                name: r.get(4)?,
                cmd: r.get(5)?,
                user: r.get(6)?,
                cpu_pct: r.get::<_, i64>(7)? as f32 / 10.0,
                mem: r.get::<_, i64>(8)? as u64,
            },
        ))
    })?;
    let mut out: Vec<TopMinute> = Vec::new();
    for row in rows {
        let (minute, by_mem, samples, p) = row?;
        let start_ms = minute as u64 * MINUTE_MS;
        if out.last().is_none_or(|m| m.start_ms != start_ms) {
            out.push(TopMinute {
                start_ms,
                samples,
                ..TopMinute::default()
            });
        }
        if let Some(m) = out.last_mut() {
            if by_mem {
                m.by_mem.push(p);
            } else {
                m.by_cpu.push(p);
            }
        }
    }
    Ok(out)
}

/// What a prune removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows of `series_1m`.
    pub minutes: usize,
    /// Rows of `series_10m`.
    pub ten_minutes: usize,
    /// Rows of `top_1m`.
    pub top: usize,
    /// Series keys left without rows.
    pub series: usize,
    /// Top processes no minute refers to any more.
    pub procs: usize,
}

/// Deletes minutes (and top processes) older than `minute_cutoff_ms` and ten-minute buckets older
/// than `ten_minute_cutoff_ms`, then series keys with nothing left.
pub fn prune(
    conn: &Connection,
    minute_cutoff_ms: u64,
    ten_minute_cutoff_ms: u64,
) -> rusqlite::Result<Pruned> {
    let (m_cut, t_cut) = (minute_of(minute_cutoff_ms), minute_of(ten_minute_cutoff_ms));
    let ids: Vec<i64> = conn
        .prepare_cached("SELECT id FROM series")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut pruned = Pruned::default();
    let mut del_1m =
        conn.prepare_cached("DELETE FROM series_1m WHERE series_id = ?1 AND minute < ?2")?;
    let mut del_10m =
        conn.prepare_cached("DELETE FROM series_10m WHERE series_id = ?1 AND minute < ?2")?;
    for id in ids {
        pruned.minutes += del_1m.execute(params![id, m_cut])?;
        pruned.ten_minutes += del_10m.execute(params![id, t_cut])?;
    }
    let keys: Vec<i64> = conn
        .prepare_cached("SELECT key FROM host_agents")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut del_top =
        conn.prepare_cached("DELETE FROM top_1m WHERE agent_key = ?1 AND minute < ?2")?;
    for key in keys {
        pruned.top += del_top.execute(params![key, m_cut])?;
    }
    // A process last used before the cut-off is referred to by no minute left.
    pruned.procs = conn.execute("DELETE FROM top_procs WHERE last_minute < ?1", [m_cut])?;
    pruned.series = conn.execute(
        "DELETE FROM series WHERE NOT EXISTS (SELECT 1 FROM series_1m WHERE series_id = series.id)
             AND NOT EXISTS (SELECT 1 FROM series_10m WHERE series_id = series.id)",
        [],
    )?;
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::Role;

    fn row(agent: &IdentityId, metric: Metric, name: &str, minute: u64, avg: f64) -> SeriesMinute {
        SeriesMinute {
            agent: agent.clone(),
            metric,
            name: name.into(),
            start_ms: minute * MINUTE_MS,
            samples: 2,
            avg,
            max: avg * 2.0,
        }
    }

    fn sel(kind: SeriesKind, name: &str) -> SeriesSelector {
        SeriesSelector {
            kind,
            name: name.into(),
        }
    }

    #[test]
    fn minutes_merge_roll_up_are_read_by_kind_and_pruned() {
        let mut c = Connection::open_in_memory().expect("db");
        crate::store::migrate::migrate(&mut c).expect("migrate");
        let a = IdentityId::from_random(Role::Agent, [1; 8]);
        let b = IdentityId::from_random(Role::Agent, [2; 8]);
        let base = 29_000_000u64; // a multiple of ten minutes
        upsert_minutes(
            &c,
            &[
                row(&a, Metric::NetRx, "eth0", base, 100.0),
                row(&a, Metric::NetTx, "eth0", base, 10.0),
                row(&a, Metric::NetRx, "eth0", base, 300.0), // the same minute again: merged
                row(&a, Metric::NetRx, "eth0", base + 1, 500.0),
                row(&a, Metric::DiskPct, "/", base, 50.0),
                row(&b, Metric::NetRx, "eth0", base, 7.0),
            ],
        )
        .expect("upsert");
        let since = base * MINUTE_MS;
        let got = read(&c, &a, &[sel(SeriesKind::Net, "eth0")], Tier::Minute, since).expect("read");
        assert_eq!(got.len(), 2, "rx and tx: {got:?}");
        assert_eq!(got[0].metric, Metric::NetRx);
        assert_eq!(got[0].points.len(), 2);
        assert_eq!(got[0].points[0].samples, 4);
        assert!((got[0].points[0].avg - 200.0).abs() < 1e-9);
        assert_eq!(got[0].points[0].max, 600.0);
        assert_eq!(got[1].metric, Metric::NetTx);
        // The kind must match: `disk:eth0` names nothing.
        let none = read(
            &c,
            &a,
            &[sel(SeriesKind::Disk, "eth0")],
            Tier::Minute,
            since,
        )
        .expect("read");
        assert!(none.is_empty());
        let ten = read(
            &c,
            &a,
            &[sel(SeriesKind::Net, "eth0")],
            Tier::TenMinutes,
            since,
        )
        .expect("ten");
        assert_eq!(ten[0].points.len(), 1);
        assert_eq!(ten[0].points[0].samples, 6);
        assert!((ten[0].points[0].avg - (200.0 * 4.0 + 500.0 * 2.0) / 6.0).abs() < 1e-9);
        // A temperature is kept in hundredths of a degree.
        upsert_minutes(&c, &[row(&b, Metric::Temp, "cpu0", base, 45.678)]).expect("temp");
        let t = read(&c, &b, &[sel(SeriesKind::Temp, "cpu0")], Tier::Minute, 0).expect("temp");
        assert_eq!((t[0].points[0].avg, t[0].points[0].max), (45.68, 91.36));
        // Agent b's series are its own.
        let bs = read(&c, &b, &[sel(SeriesKind::Net, "eth0")], Tier::Minute, 0).expect("b");
        assert_eq!(bs[0].points[0].avg, 7.0);

        // Minutes before base+1 go; the ten-minute bucket stays; disk:/ loses its only minute but
        // keeps its ten-minute bucket, so its key stays.
        let p = prune(&c, (base + 1) * MINUTE_MS, 0).expect("prune");
        assert_eq!(p.minutes, 5);
        assert_eq!(p.ten_minutes, 0);
        assert_eq!(p.series, 0);
        let p = prune(&c, (base + 100) * MINUTE_MS, (base + 100) * MINUTE_MS).expect("prune all");
        assert_eq!(p.minutes, 1);
        assert_eq!(p.series, 5, "every key without rows is forgotten");
        // A series written after its key was forgotten gets a new one.
        upsert_minutes(&c, &[row(&a, Metric::NetRx, "eth0", base + 200, 1.0)]).expect("again");
        let got = read(&c, &a, &[sel(SeriesKind::Net, "eth0")], Tier::Minute, 0).expect("read");
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn top_minutes_keep_the_fuller_copy_and_read_back_in_order() {
        let mut c = Connection::open_in_memory().expect("db");
        crate::store::migrate::migrate(&mut c).expect("migrate");
        let a = IdentityId::from_random(Role::Agent, [1; 8]);
        let p = |pid: u32, cpu: f32| TopProcess {
            pid,
            name: format!("p{pid}"),
            cmd: format!("p{pid} --flag"),
            user: "root".into(),
            cpu_pct: cpu,
            mem: u64::from(pid) << 20,
        };
        let minute = |start: u64, samples: u32, first: u32| TopMinute {
            start_ms: start * MINUTE_MS,
            samples,
            by_cpu: vec![p(first, 90.0), p(first + 1, 10.0)],
            by_mem: vec![p(first + 1, 10.0)],
        };
        upsert_top(&c, &a, &minute(100, 10, 1)).expect("first");
        upsert_top(&c, &a, &minute(100, 2, 50)).expect("smaller copy ignored");
        upsert_top(&c, &a, &minute(101, 1, 7)).expect("next");
        upsert_top(&c, &a, &minute(101, 5, 8)).expect("fuller copy replaces");
        let got = read_top(&c, &a, 100 * MINUTE_MS, 102 * MINUTE_MS).expect("read");
        assert_eq!(got, vec![minute(100, 10, 1), minute(101, 5, 8)]);
        let one = read_top(&c, &a, 101 * MINUTE_MS, 101 * MINUTE_MS + 1).expect("one");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].start_ms, 101 * MINUTE_MS);
        let p = prune(&c, 101 * MINUTE_MS, 0).expect("prune");
        assert_eq!(p.top, 3);
        // p1 and p2 went with minute 100 (the ignored copy stored none); p7, which only the
        // replaced copy of minute 101 named, goes once minute 101 does.
        assert_eq!(p.procs, 2);
        let got = read_top(&c, &a, 0, 200 * MINUTE_MS).expect("after prune");
        assert_eq!(got, vec![minute(101, 5, 8)]);
    }
}
