//! The shell sessions table: one row per session, its audit record and where its recording is.

use flotilla_wire::sessions::{SessionRow, SessionState};
use flotilla_wire::shell::ShellSessionId;
use rusqlite::{Connection, OptionalExtension, Row, params};

/// A session as it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSession {
    /// Its id.
    pub id: ShellSessionId,
    /// Identity id of the operator.
    pub operator: String,
    /// The operator's display name.
    pub operator_name: String,
    /// Agent identity id.
    pub agent: String,
    /// Agent display name.
    pub agent_name: String,
    /// Container, empty for the host.
    pub container: String,
    /// Command line, empty for the login shell.
    pub command: String,
    /// Start, ms since the epoch.
    pub started_ms: u64,
    /// Recording file name inside the recordings directory; empty when unrecorded.
    pub file: String,
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionEnd {
    /// End, ms since the epoch (`None`: unknown, for an interrupted session).
    pub ended_ms: Option<u64>,
    /// The program's exit status, if it exited.
    pub exit: Option<i32>,
    /// Why it ended, in words.
    pub reason: String,
    /// Output bytes.
    pub bytes: u64,
    /// Recording size on disk.
    pub size: u64,
    /// `Ended` or `Interrupted`.
    pub state: SessionState,
}

/// A recording on disk, as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecording {
    /// The session.
    pub id: ShellSessionId,
    /// File name inside the recordings directory.
    pub file: String,
    /// Bytes on disk when last measured.
    pub size: u64,
    /// Start, ms since the epoch.
    pub started_ms: u64,
    /// Whether the session is still live (never pruned).
    pub live: bool,
}

const COLUMNS: &str = "id, operator, operator_name, agent_name, container, command, started_ms, \
                       ended_ms, exit, reason, bytes, file, size, state";

fn id_of(text: &str) -> rusqlite::Result<ShellSessionId> {
    ShellSessionId::parse(text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("session id {text:?}").into(),
        )
    })
}

fn row_of(r: &Row<'_>) -> rusqlite::Result<(SessionRow, String)> {
    let state: String = r.get(13)?;
    let file: String = r.get(11)?;
    Ok((
        SessionRow {
            id: id_of(&r.get::<_, String>(0)?)?,
            operator: r.get(1)?,
            operator_name: r.get(2)?,
            agent: r.get(3)?,
            container: r.get(4)?,
            command: r.get(5)?,
            started_ms: r.get::<_, i64>(6)? as u64,
            ended_ms: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
            exit: r.get(8)?,
            reason: r.get(9)?,
            bytes: r.get::<_, i64>(10)? as u64,
            size: r.get::<_, i64>(12)? as u64,
            recorded: !file.is_empty(),
            // A word from a newer hub reads as ended: listed, never joined.
            state: SessionState::parse(&state).unwrap_or(SessionState::Ended),
        },
        file,
    ))
}

/// Records a session starting (state `live`).
pub fn begin(conn: &Connection, s: &NewSession) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO shell_sessions (id, operator, operator_name, agent, agent_name, container, \
         command, started_ms, file, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'live')",
    )?
    .execute(params![
        s.id.to_string(),
        s.operator,
        s.operator_name,
        s.agent,
        s.agent_name,
        s.container,
        s.command,
        s.started_ms as i64,
        s.file
    ])?;
    Ok(())
}

/// Records how a session ended.
pub fn finish(conn: &Connection, id: ShellSessionId, end: &SessionEnd) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE shell_sessions SET ended_ms = ?2, exit = ?3, reason = ?4, bytes = ?5, size = ?6, \
         state = ?7 WHERE id = ?1",
    )?
    .execute(params![
        id.to_string(),
        end.ended_ms.map(|v| v as i64),
        end.exit,
        end.reason,
        end.bytes as i64,
        end.size as i64,
        end.state.as_str()
    ])?;
    Ok(())
}

/// The newest `limit` sessions, newest first; only `operator`'s when given.
pub fn list(
    conn: &Connection,
    limit: u32,
    operator: Option<&str>,
) -> rusqlite::Result<Vec<SessionRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM shell_sessions WHERE ?2 IS NULL OR operator = ?2 \
         ORDER BY started_ms DESC, id DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map(params![limit, operator], |r| row_of(r).map(|(s, _)| s))?;
    rows.collect()
}

/// One session and its recording's file name (empty when it has none).
pub fn get(
    conn: &Connection,
    id: ShellSessionId,
) -> rusqlite::Result<Option<(SessionRow, String)>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM shell_sessions WHERE id = ?1"
    ))?
    .query_row([id.to_string()], row_of)
    .optional()
}

/// Sessions a previous hub process left `live`, with their file names.
pub fn left_live(conn: &Connection) -> rusqlite::Result<Vec<(ShellSessionId, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, file FROM shell_sessions WHERE state = 'live'")?;
    let rows = stmt.query_map([], |r| Ok((id_of(&r.get::<_, String>(0)?)?, r.get(1)?)))?;
    rows.collect()
}

/// Every session whose recording is still on disk, oldest first.
pub fn recordings(conn: &Connection) -> rusqlite::Result<Vec<StoredRecording>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, file, size, started_ms, state FROM shell_sessions WHERE file != '' \
         ORDER BY started_ms, id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredRecording {
            id: id_of(&r.get::<_, String>(0)?)?,
            file: r.get(1)?,
            size: r.get::<_, i64>(2)? as u64,
            started_ms: r.get::<_, i64>(3)? as u64,
            live: r.get::<_, String>(4)? == "live",
        })
    })?;
    rows.collect()
}

/// Records that a session's recording was deleted: the row stays, as the audit record.
pub fn forget_recording(conn: &Connection, id: ShellSessionId) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE shell_sessions SET file = '', size = 0 WHERE id = ?1")?
        .execute([id.to_string()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().expect("db");
        crate::store::migrate::migrate(&mut conn).expect("migrate");
        conn
    }

    fn new(id: u64, operator: &str, started_ms: u64) -> NewSession {
        NewSession {
            id: ShellSessionId(id),
            operator: operator.into(),
            operator_name: format!("{operator}-name"),
            agent: "a-0000000000000001".into(),
            agent_name: "web-1".into(),
            container: String::new(),
            command: "top".into(),
            started_ms,
            file: format!("{}.cast.gz", ShellSessionId(id)),
        }
    }

    #[test]
    fn a_session_is_begun_finished_listed_and_forgotten() {
        let conn = db();
        begin(&conn, &new(1, "o-1", 100)).expect("begin");
        begin(&conn, &new(2, "o-2", 200)).expect("begin");
        let all = list(&conn, 10, None).expect("list");
        assert_eq!(
            all.iter().map(|s| s.id).collect::<Vec<_>>(),
            [ShellSessionId(2), ShellSessionId(1)]
        );
        assert!(
            all.iter()
                .all(|s| s.state == SessionState::Live && s.recorded)
        );
        assert_eq!(list(&conn, 10, Some("o-1")).expect("mine").len(), 1);
        assert_eq!(left_live(&conn).expect("live").len(), 2);
        finish(
            &conn,
            ShellSessionId(1),
            &SessionEnd {
                ended_ms: Some(150),
                exit: Some(3),
                reason: "exited".into(),
                bytes: 42,
                size: 30,
                state: SessionState::Ended,
            },
        )
        .expect("finish");
        let (row, file) = get(&conn, ShellSessionId(1)).expect("get").expect("found");
        assert_eq!(
            (row.ended_ms, row.exit, row.bytes, row.size, row.state),
            (Some(150), Some(3), 42, 30, SessionState::Ended)
        );
        assert_eq!(file, "s-0000000000000001.cast.gz");
        let recs = recordings(&conn).expect("recordings");
        assert_eq!(recs.len(), 2);
        assert!(!recs[0].live && recs[1].live);
        forget_recording(&conn, ShellSessionId(1)).expect("forget");
        let (row, file) = get(&conn, ShellSessionId(1)).expect("get").expect("found");
        assert!(!row.recorded && file.is_empty() && row.size == 0);
        assert_eq!(recordings(&conn).expect("recordings").len(), 1);
        assert!(get(&conn, ShellSessionId(9)).expect("get").is_none());
    }
}
