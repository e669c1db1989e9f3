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
    // 2: file transfers (issue 6).
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
