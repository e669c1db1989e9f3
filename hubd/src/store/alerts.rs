//! Alert tables: live rules (text form, as JSON), silences, and the alerts the engine holds
//! (as JSON of `AlertInfo`: the engine is the only reader, and only at start-up).

use flotilla_wire::alerts::{AlertId, AlertInfo, RuleSpec, Silence, SilenceId, SilenceSpec};
use rusqlite::{Connection, OptionalExtension, params};

/// A live rule as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRule {
    /// Its text form.
    pub spec: RuleSpec,
    /// Who added it (identity id or `local-admin`).
    pub added_by: String,
    /// When, ms since the epoch.
    pub added_ms: u64,
}

fn json_error(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Every live rule, by name.
pub fn rules(conn: &Connection) -> rusqlite::Result<Vec<StoredRule>> {
    let mut stmt =
        conn.prepare_cached("SELECT spec, added_by, added_ms FROM alert_rules ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        let text: String = r.get(0)?;
        let spec: RuleSpec = serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?;
        Ok(StoredRule {
            spec,
            added_by: r.get(1)?,
            added_ms: r.get::<_, i64>(2)? as u64,
        })
    })?;
    rows.collect()
}

/// Adds a live rule; `false` when the name is taken.
pub fn insert_rule(conn: &Connection, rule: &StoredRule) -> rusqlite::Result<bool> {
    let spec = serde_json::to_string(&rule.spec).map_err(json_error)?;
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO alert_rules (name, spec, added_by, added_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![rule.spec.name, spec, rule.added_by, rule.added_ms as i64])?;
    Ok(n == 1)
}

/// Removes a live rule and its alerts; `false` when there was none.
pub fn delete_rule(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("DELETE FROM alerts WHERE rule = ?1")?
        .execute([name])?;
    Ok(conn
        .prepare_cached("DELETE FROM alert_rules WHERE name = ?1")?
        .execute([name])?
        == 1)
}

fn silence_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Silence> {
    Ok(Silence {
        id: SilenceId(r.get::<_, i64>(0)? as u64),
        rule: r.get(1)?,
        selector: r.get(2)?,
        starts_ms: r.get::<_, i64>(3)? as u64,
        ends_ms: r.get::<_, i64>(4)? as u64,
        comment: r.get(5)?,
        created_by: r.get(6)?,
        created_ms: r.get::<_, i64>(7)? as u64,
    })
}

const SILENCE_COLUMNS: &str =
    "id, rule, selector, starts_ms, ends_ms, comment, created_by, created_ms";

/// Silences, newest first; only those not yet ended at `now_ms` unless `expired`.
pub fn silences(conn: &Connection, now_ms: u64, expired: bool) -> rusqlite::Result<Vec<Silence>> {
    let sql =
        format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE ?1 OR ends_ms > ?2 ORDER BY id DESC");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![expired, now_ms as i64], silence_of)?;
    rows.collect()
}

/// Adds a silence starting at `starts_ms`; returns it with its id.
pub fn insert_silence(
    conn: &Connection,
    spec: &SilenceSpec,
    starts_ms: u64,
    created_by: &str,
    now_ms: u64,
) -> rusqlite::Result<Silence> {
    let ends_ms = starts_ms.saturating_add(spec.duration_ms);
    conn.prepare_cached(
        "INSERT INTO silences (rule, selector, starts_ms, ends_ms, comment, created_by, created_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        spec.rule,
        spec.selector,
        starts_ms as i64,
        ends_ms.min(i64::MAX as u64) as i64,
        spec.comment,
        created_by,
        now_ms as i64
    ])?;
    let id = conn.last_insert_rowid();
    conn.query_row(
        &format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE id = ?1"),
        [id],
        silence_of,
    )
}

/// Ends a silence at `now_ms` (if it ends later); returns it, or `None` if there is no such id.
pub fn expire_silence(
    conn: &Connection,
    id: SilenceId,
    now_ms: u64,
) -> rusqlite::Result<Option<Silence>> {
    conn.prepare_cached("UPDATE silences SET ends_ms = ?2 WHERE id = ?1 AND ends_ms > ?2")?
        .execute(params![id.0 as i64, now_ms as i64])?;
    conn.query_row(
        &format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE id = ?1"),
        [id.0 as i64],
        silence_of,
    )
    .optional()
}

/// Writes alerts (insert or replace) and deletes others, in the caller's transaction.
pub fn save_alerts(
    conn: &Connection,
    upserts: &[AlertInfo],
    deletes: &[AlertId],
) -> rusqlite::Result<()> {
    let mut put =
        conn.prepare_cached("INSERT OR REPLACE INTO alerts (id, rule, info) VALUES (?1, ?2, ?3)")?;
    for a in upserts {
        let info = serde_json::to_string(a).map_err(json_error)?;
        put.execute(params![a.id.0 as i64, a.rule, info])?;
    }
    let mut del = conn.prepare_cached("DELETE FROM alerts WHERE id = ?1")?;
    for id in deletes {
        del.execute([id.0 as i64])?;
    }
    Ok(())
}

/// Every stored alert; rows that no longer parse are skipped (and logged by the caller's count).
pub fn alerts(conn: &Connection) -> rusqlite::Result<Vec<AlertInfo>> {
    let mut stmt = conn.prepare_cached("SELECT info FROM alerts")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for text in rows {
        if let Ok(info) = serde_json::from_str::<AlertInfo>(&text?) {
            out.push(info);
        }
    }
    Ok(out)
}
