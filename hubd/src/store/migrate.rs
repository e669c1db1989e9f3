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
    // 4: file transfers (issue 6).
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
