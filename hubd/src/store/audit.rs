//! The audit log: who did what, when, to which target. Append only.

use rusqlite::{Connection, params};

/// One audit entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    /// Monotonic sequence number.
    pub seq: i64,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Who: an identity id, or `local-admin` for the hub's own CLI.
    pub actor: String,
    /// What: `token.create`, `revoke`, `enrol`…
    pub action: String,
    /// On what: an identity or token id.
    pub target: String,
    /// Extra facts, never a secret.
    pub detail: String,
}

/// Appends an entry.
pub fn append(
    conn: &Connection,
    at_ms: u64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at_ms, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![at_ms as i64, actor, action, target, detail])?;
    Ok(())
}

/// The newest `limit` entries, oldest first.
pub fn recent(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<AuditRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at_ms, actor, action, target, detail FROM (SELECT * FROM audit ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(AuditRecord {
            seq: r.get(0)?,
            at_ms: r.get::<_, i64>(1)? as u64,
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            detail: r.get(5)?,
        })
    })?;
    rows.collect()
}
