//! The transfers table: one row per copy (per `TransferId`), updated by each attempt.

use rusqlite::{Connection, OptionalExtension, params};

/// How a transfer stands in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferOutcome {
    /// An attempt is moving data.
    Running,
    /// Verified and in place.
    Done,
    /// Failed for good (the error says why).
    Failed,
    /// A party dropped; the operator's console may resume it.
    Interrupted,
    /// The operator cancelled; both ends cleaned up.
    Cancelled,
}

impl TransferOutcome {
    /// The word stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TransferRow {
    /// `t-<16 hex>`.
    pub id: String,
    /// Identity id of the operator who asked.
    pub actor: String,
    /// `agent:path` or `local:path`.
    pub src: String,
    /// Likewise.
    pub dst: String,
    /// Size of the file.
    pub size: u64,
    /// Bytes written and verified at the destination when the last attempt ended.
    pub bytes: u64,
    /// `running`, `done`, `failed`, `interrupted`, `cancelled`.
    pub state: String,
    /// Why it failed, if it did.
    pub error: String,
    /// BLAKE3 (hex) once done.
    pub digest: String,
    /// Attempts so far (a resume is another attempt).
    pub attempts: u32,
    /// First attempt, ms since the epoch.
    pub started_ms: u64,
    /// Last change, ms since the epoch.
    pub updated_ms: u64,
}

/// Records the start of an attempt: a new row, or the next attempt of a known transfer.
#[allow(clippy::too_many_arguments)]
pub fn begin(
    conn: &Connection,
    id: &str,
    actor: &str,
    src: &str,
    dst: &str,
    size: u64,
    resumed_from: u64,
    now_ms: u64,
) -> rusqlite::Result<u32> {
    conn.execute(
        "INSERT INTO transfers (id, actor, src, dst, size, bytes, state, attempts, started_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', 1, ?7, ?7)
         ON CONFLICT(id) DO UPDATE SET size = ?5, bytes = ?6, state = 'running', error = '',
             attempts = attempts + 1, updated_ms = ?7",
        params![id, actor, src, dst, size as i64, resumed_from as i64, now_ms as i64],
    )?;
    conn.query_row("SELECT attempts FROM transfers WHERE id = ?1", [id], |r| {
        r.get(0)
    })
}

/// Records how an attempt ended.
pub fn finish(
    conn: &Connection,
    id: &str,
    outcome: TransferOutcome,
    bytes: u64,
    error: &str,
    digest: &str,
    now_ms: u64,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE transfers SET state = ?2, bytes = ?3, error = ?4, digest = ?5, updated_ms = ?6 WHERE id = ?1",
        params![id, outcome.as_str(), bytes as i64, error, digest, now_ms as i64],
    )?;
    Ok(())
}

/// What a hub that was killed or crashed mid-transfer leaves in a row the next start marks.
pub const STOPPED_WHILE_RUNNING: &str = "hub stopped while it ran; the destination keeps its bytes";

/// Marks the transfers a previous hub process left running as interrupted, each with an audit
/// line from its actor (as if the attempt had ended then), in one transaction: a console that
/// retries later resumes them, and one that never comes back leaves a record that says what
/// happened instead of `running` forever. Returns how many it marked.
pub fn mark_interrupted(conn: &mut Connection, now_ms: u64) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let rows: Vec<(String, String)> = {
        let mut stmt =
            tx.prepare_cached("SELECT id, actor FROM transfers WHERE state = 'running'")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    // How far the attempt got died with the hub; the next attempt learns it from the destination.
    for (id, actor) in &rows {
        tx.execute(
            "UPDATE transfers SET state = ?2, error = ?3, updated_ms = ?4 WHERE id = ?1",
            params![
                id,
                TransferOutcome::Interrupted.as_str(),
                STOPPED_WHILE_RUNNING,
                now_ms as i64
            ],
        )?;
        crate::store::audit::append(
            &tx,
            now_ms,
            actor,
            "transfer.interrupt",
            id,
            &format!("error={STOPPED_WHILE_RUNNING}"),
        )?;
    }
    tx.commit()?;
    Ok(rows.len())
}

/// One transfer by id.
pub fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<TransferRow>> {
    conn.query_row(
        "SELECT id, actor, src, dst, size, bytes, state, error, digest, attempts, started_ms, updated_ms
         FROM transfers WHERE id = ?1",
        [id],
        |r| {
            Ok(TransferRow {
                id: r.get(0)?,
                actor: r.get(1)?,
                src: r.get(2)?,
                dst: r.get(3)?,
                size: r.get::<_, i64>(4)? as u64,
                bytes: r.get::<_, i64>(5)? as u64,
                state: r.get(6)?,
                error: r.get(7)?,
                digest: r.get(8)?,
                attempts: r.get(9)?,
                started_ms: r.get::<_, i64>(10)? as u64,
                updated_ms: r.get::<_, i64>(11)? as u64,
            })
        },
    )
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_up_and_outcomes_stick() {
        let mut conn = Connection::open_in_memory().expect("db");
        crate::store::migrate::migrate(&mut conn).expect("migrate");
        assert_eq!(
            begin(&conn, "t-1", "o-1", "a:x", "b:y", 10, 0, 5).expect("begin"),
            1
        );
        finish(
            &conn,
            "t-1",
            TransferOutcome::Interrupted,
            4,
            "hub restarted",
            "",
            6,
        )
        .expect("finish");
        assert_eq!(
            begin(&conn, "t-1", "o-1", "a:x", "b:y", 10, 4, 7).expect("begin"),
            2
        );
        finish(&conn, "t-1", TransferOutcome::Done, 10, "", "ab", 8).expect("finish");
        let row = get(&conn, "t-1").expect("get").expect("row");
        assert_eq!(
            (row.state.as_str(), row.bytes, row.attempts, row.started_ms),
            ("done", 10, 2, 5)
        );
        assert_eq!(get(&conn, "t-2").expect("get"), None);
    }

    #[test]
    fn running_transfers_become_interrupted_once() {
        let mut conn = Connection::open_in_memory().expect("db");
        crate::store::migrate::migrate(&mut conn).expect("migrate");
        begin(&conn, "t-1", "o-1", "a:x", "b:y", 10, 0, 5).expect("begin");
        begin(&conn, "t-2", "o-1", "a:x", "b:z", 10, 0, 5).expect("begin");
        finish(&conn, "t-2", TransferOutcome::Done, 10, "", "ab", 6).expect("finish");
        assert_eq!(mark_interrupted(&mut conn, 9).expect("mark"), 1);
        let row = get(&conn, "t-1").expect("get").expect("row");
        assert_eq!(
            (row.state.as_str(), row.error.as_str(), row.updated_ms),
            ("interrupted", STOPPED_WHILE_RUNNING, 9)
        );
        assert_eq!(get(&conn, "t-2").expect("get").expect("row").state, "done");
        let audited: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM audit WHERE action = 'transfer.interrupt' AND target = 't-1'",
                [],
                |r| r.get(0),
            )
            .expect("audit");
        assert_eq!(audited, 1);
        assert_eq!(mark_interrupted(&mut conn, 10).expect("again"), 0);
    }
}
