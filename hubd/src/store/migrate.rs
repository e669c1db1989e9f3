//! Schema migrations, numbered by SQLite's `user_version`.

use rusqlite::Connection;

/// Each entry moves the schema from version `index` to `index + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE identities (
    id            TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    name          TEXT NOT NULL,
    labels        TEXT NOT NULL,
    token_id      TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    version       TEXT NOT NULL DEFAULT '',
    os            TEXT NOT NULL DEFAULT '',
    hostname      TEXT NOT NULL DEFAULT '',
    addr          TEXT NOT NULL DEFAULT '',
    revoked_ms    INTEGER
);
CREATE INDEX identities_name ON identities(name);
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    hash       BLOB NOT NULL,
    role       TEXT NOT NULL,
    labels     TEXT NOT NULL,
    uses_left  INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE audit (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE metrics_1m (
    agent_id       TEXT NOT NULL,
    start_ms       INTEGER NOT NULL,
    samples        INTEGER NOT NULL,
    cpu_avg        REAL NOT NULL,
    cpu_max        REAL NOT NULL,
    mem_avg        INTEGER NOT NULL,
    mem_max        INTEGER NOT NULL,
    mem_total      INTEGER NOT NULL,
    load1_avg      REAL NOT NULL,
    disk_pct_max   REAL NOT NULL,
    net_rx_avg     INTEGER NOT NULL,
    net_tx_avg     INTEGER NOT NULL,
    net_max        INTEGER NOT NULL,
    disk_read_avg  INTEGER NOT NULL,
    disk_write_avg INTEGER NOT NULL,
    PRIMARY KEY (agent_id, start_ms)
) WITHOUT ROWID;
CREATE INDEX metrics_1m_start ON metrics_1m(start_ms);
CREATE TABLE metrics_10m (
    agent_id       TEXT NOT NULL,
    start_ms       INTEGER NOT NULL,
    samples        INTEGER NOT NULL,
    cpu_avg        REAL NOT NULL,
    cpu_max        REAL NOT NULL,
    mem_avg        INTEGER NOT NULL,
    mem_max        INTEGER NOT NULL,
    mem_total      INTEGER NOT NULL,
    load1_avg      REAL NOT NULL,
    disk_pct_max   REAL NOT NULL,
    net_rx_avg     INTEGER NOT NULL,
    net_tx_avg     INTEGER NOT NULL,
    net_max        INTEGER NOT NULL,
    disk_read_avg  INTEGER NOT NULL,
    disk_write_avg INTEGER NOT NULL,
    PRIMARY KEY (agent_id, start_ms)
) WITHOUT ROWID;
CREATE INDEX metrics_10m_start ON metrics_10m(start_ms);
"#,
    // 3: exec jobs and their per-agent results (hubd/src/store/jobs.rs).
    r#"
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    actor        TEXT NOT NULL,
    actor_name   TEXT NOT NULL,
    selector     TEXT NOT NULL,
    command      TEXT NOT NULL,
    timeout_ms   INTEGER NOT NULL,
    batch        INTEGER NOT NULL,
    started_ms   INTEGER NOT NULL,
    ended_ms     INTEGER,
    targets      INTEGER NOT NULL,
    succeeded    INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    timed_out    INTEGER NOT NULL DEFAULT 0,
    cancelled    INTEGER NOT NULL DEFAULT 0,
    refused      INTEGER NOT NULL DEFAULT 0,
    unreachable  INTEGER NOT NULL DEFAULT 0,
    cancelled_by TEXT,
    interrupted  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE job_results (
    job_id       INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    agent_id     TEXT NOT NULL,
    agent_name   TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    exit_code    INTEGER,
    signal       INTEGER,
    started_ms   INTEGER,
    duration_ms  INTEGER,
    message      TEXT NOT NULL DEFAULT '',
    stdout_tail  BLOB NOT NULL DEFAULT x'',
    stderr_tail  BLOB NOT NULL DEFAULT x'',
    stdout_bytes INTEGER NOT NULL DEFAULT 0,
    stderr_bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, agent_id)
);
CREATE INDEX job_results_agent ON job_results(agent_id, job_id);
"#,
    // 4: file transfers.
    r#"
CREATE TABLE transfers (
    id         TEXT PRIMARY KEY,
    actor      TEXT NOT NULL,
    src        TEXT NOT NULL,
    dst        TEXT NOT NULL,
    size       INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    state      TEXT NOT NULL,
    error      TEXT NOT NULL DEFAULT '',
    digest     TEXT NOT NULL DEFAULT '',
    attempts   INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX transfers_updated ON transfers(updated_ms);
"#,
    // 5: results that still hold output, so that pruning tails (hubd/src/store/jobs.rs) visits only
    // those instead of every result of the kept jobs on each job's end. The WHERE clause is the one
    // `prune` repeats word for word: SQLite uses a partial index only for a query that implies it.
    r#"
CREATE INDEX job_results_tails ON job_results(job_id)
    WHERE length(stdout_tail) > 0 OR length(stderr_tail) > 0;
"#,
    // 6: names unique ignoring case among identities that are not revoked (`WEB-1` beside `web-1`
    // confused every listing). Where a database already holds such variants, the identity that
    // enrolled first keeps its name and each later one gets `-` and the 16 hex digits of its id
    // appended (`WEB-1-3fa2b4c1d2e3f405`: unique because ids are), with an audit record `rename`
    // by `migration` for each.
    r#"
CREATE TEMP TABLE name_fixes AS
    SELECT i.id AS id, i.name AS old, i.name || '-' || substr(i.id, 3) AS new
    FROM identities i
    WHERE i.revoked_ms IS NULL AND EXISTS (
        SELECT 1 FROM identities o
        WHERE o.revoked_ms IS NULL AND o.id <> i.id AND o.name = i.name COLLATE NOCASE
          AND (o.first_seen_ms < i.first_seen_ms OR (o.first_seen_ms = i.first_seen_ms AND o.id < i.id)));
UPDATE identities SET name = (SELECT new FROM name_fixes f WHERE f.id = identities.id)
    WHERE id IN (SELECT id FROM name_fixes);
INSERT INTO audit (at_ms, actor, action, target, detail)
    SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER), 'migration', 'rename', id,
           'name=' || old || ' renamed=' || new || ' reason=names are unique ignoring case'
    FROM name_fixes;
DROP TABLE name_fixes;
CREATE UNIQUE INDEX identities_live_name_nocase ON identities(name COLLATE NOCASE)
    WHERE revoked_ms IS NULL;
"#,
    // 7: one-minute history per container (hubd/src/store/workloads.rs). The name is kept with each
    // minute so that a container's history can be asked for by name after it is gone.
    r#"
CREATE TABLE container_1m (
    agent_id      TEXT NOT NULL,
    container_id  TEXT NOT NULL,
    name          TEXT NOT NULL,
    start_ms      INTEGER NOT NULL,
    samples       INTEGER NOT NULL,
    cpu_avg       REAL NOT NULL,
    cpu_max       REAL NOT NULL,
    mem_avg       INTEGER NOT NULL,
    net_rx_avg    INTEGER NOT NULL,
    net_tx_avg    INTEGER NOT NULL,
    blk_read_avg  INTEGER NOT NULL,
    blk_write_avg INTEGER NOT NULL,
    PRIMARY KEY (agent_id, container_id, start_ms)
) WITHOUT ROWID;
CREATE INDEX container_1m_start ON container_1m(start_ms);
CREATE INDEX container_1m_name ON container_1m(agent_id, name, start_ms);
"#,
    // 8: the SHA-256 of the public key each identity enrolled with, so that an enrolment whose
    // answer was lost (hub or agent killed after the commit) and is tried again with the same key
    // and token gets the identity back instead of a "name taken" with the token use spent.
    // Identities enrolled before have none and are never matched.
    r#"
ALTER TABLE identities ADD COLUMN enrol_key BLOB;
"#,
    // 9: alerts. Live rules in their text form (JSON of `RuleSpec`), silences, and the alerts the
    // engine holds, so that a restarted hub neither forgets a firing alert nor tells it again.
    r#"
CREATE TABLE alert_rules (
    name      TEXT PRIMARY KEY,
    spec      TEXT NOT NULL,
    added_by  TEXT NOT NULL,
    added_ms  INTEGER NOT NULL
);
CREATE TABLE silences (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rule        TEXT NOT NULL,
    selector    TEXT NOT NULL,
    starts_ms   INTEGER NOT NULL,
    ends_ms     INTEGER NOT NULL,
    comment     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE INDEX silences_ends ON silences(ends_ms);
CREATE TABLE alerts (
    id    INTEGER PRIMARY KEY,
    rule  TEXT NOT NULL,
    info  TEXT NOT NULL
);
CREATE INDEX alerts_rule ON alerts(rule);
"#,
    // 10: the alert outbox. One row per message to one receiver, written before it is sent;
    // `id` is the stable notification id receivers deduplicate on. The index serves the
    // delivery task's "what is due" and the grouping lookup.
    r#"
CREATE TABLE notify_outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    receiver    TEXT NOT NULL,
    payload     TEXT NOT NULL,
    items       INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    due_ms      INTEGER NOT NULL,
    held        INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    next_try_ms INTEGER NOT NULL,
    state       TEXT NOT NULL,
    last_error  TEXT NOT NULL,
    done_ms     INTEGER
);
CREATE INDEX notify_outbox_due ON notify_outbox(state, next_try_ms);
CREATE INDEX notify_outbox_receiver ON notify_outbox(receiver, state);
"#,
    // 11: per-series host history and per-minute top processes, keyed by integers.
    super::series::MIGRATION,
    // 12: shell sessions: who opened a shell where, how it ended, and its recording file (a name in
    // the recordings directory, empty once retention pruned it).
    r#"
CREATE TABLE shell_sessions (
    id            TEXT PRIMARY KEY,
    operator      TEXT NOT NULL,
    operator_name TEXT NOT NULL,
    agent         TEXT NOT NULL,
    agent_name    TEXT NOT NULL,
    container     TEXT NOT NULL,
    command       TEXT NOT NULL,
    started_ms    INTEGER NOT NULL,
    ended_ms      INTEGER,
    exit          INTEGER,
    reason        TEXT NOT NULL DEFAULT '',
    bytes         INTEGER NOT NULL DEFAULT 0,
    file          TEXT NOT NULL,
    size          INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL
);
CREATE INDEX shell_sessions_started ON shell_sessions(started_ms);
"#,
];

/// Brings the schema up to date in one transaction per step.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The schema version this build migrates to: a database newer than this came from a newer hubd.
pub(crate) fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_variant_names_are_renamed_and_then_refused_by_the_index() {
        let mut conn = Connection::open_in_memory().expect("db");
        // A database made before names were unique ignoring case.
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.pragma_update(None, "user_version", 5)
            .expect("version");
        let add = |c: &Connection, id: &str, name: &str, first: i64, revoked: Option<i64>| {
            c.execute(
                "INSERT INTO identities (id, role, name, labels, token_id, first_seen_ms, last_seen_ms, revoked_ms) \
                 VALUES (?1, 'agent', ?2, '[]', 't', ?3, ?3, ?4)",
                rusqlite::params![id, name, first, revoked],
            )
            .expect("insert");
        };
        add(&conn, "a-00000000000000a1", "web-1", 1, None);
        add(&conn, "a-00000000000000b2", "WEB-1", 2, None);
        add(&conn, "a-00000000000000c3", "Web-1", 3, None);
        add(&conn, "a-00000000000000d4", "wEb-1", 0, Some(9)); // revoked: keeps its name
        add(&conn, "a-00000000000000e5", "db-1", 4, None);
        migrate(&mut conn).expect("migrate");

        let names: Vec<(String, String)> = conn
            .prepare("SELECT id, name FROM identities ORDER BY id")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let want = [
            ("a-00000000000000a1", "web-1"),
            ("a-00000000000000b2", "WEB-1-00000000000000b2"),
            ("a-00000000000000c3", "Web-1-00000000000000c3"),
            ("a-00000000000000d4", "wEb-1"),
            ("a-00000000000000e5", "db-1"),
        ];
        assert_eq!(
            names,
            want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
        );
        let audit: Vec<(String, String, String)> = conn
            .prepare(
                "SELECT actor, target, detail FROM audit WHERE action = 'rename' ORDER BY target",
            )
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(audit.len(), 2, "{audit:?}");
        assert_eq!(audit[0].0, "migration");
        assert_eq!(audit[0].1, "a-00000000000000b2");
        assert_eq!(
            audit[0].2,
            "name=WEB-1 renamed=WEB-1-00000000000000b2 reason=names are unique ignoring case"
        );
        // From now on the database itself refuses a case variant of a live name.
        let dup = conn.execute(
            "INSERT INTO identities (id, role, name, labels, token_id, first_seen_ms, last_seen_ms) \
             VALUES ('a-00000000000000f6', 'agent', 'DB-1', '[]', 't', 5, 5)",
            [],
        );
        assert!(
            dup.expect_err("unique ignoring case")
                .to_string()
                .contains("UNIQUE constraint failed"),
        );
    }
}
