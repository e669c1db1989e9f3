//! Backup and restore of the hub's database.
//!
//! A backup is `VACUUM INTO` on a read-only connection of its own: WAL gives it a consistent
//! snapshot while the store thread keeps writing, and the store thread never waits for it. While
//! the hub runs, `hubd backup` asks it over the maintenance socket and the hub writes the copy into
//! its data directory (the one place its sandbox lets it write); the command then moves it to
//! where it was asked. While the hub is stopped the command does it itself, holding the data
//! directory's lock so the hub cannot start meanwhile.
//!
//! A restore refuses while the hub runs, checks the file is an intact Flotilla hub database of a
//! schema this hubd knows (and, unless forced, of this hub), keeps the old database as
//! `hub.db.bak`, and hands the new one to the data directory's owner.

use crate::store::{self, migrate};
use crate::{HubError, HubPaths};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Sub-directory of the data directory where a running hub puts the backups it makes.
pub const BACKUP_DIR: &str = "backups";

/// What a backup file holds.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct BackupInfo {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// `user_version` of its schema.
    pub schema_version: i64,
    /// Agents in it (revoked included).
    pub agents: u64,
    /// Operators and admins in it.
    pub operators: u64,
    /// Join tokens in it.
    pub tokens: u64,
}

/// Why a file cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The hub holds the data directory.
    #[error("the hub is running on {0}: stop it first (systemctl stop flotilla-hub)")]
    HubRunning(String),
    /// Not an SQLite database, or damaged.
    #[error("{path} is not a usable database: {reason}")]
    NotADatabase {
        /// The file.
        path: String,
        /// What SQLite said.
        reason: String,
    },
    /// An SQLite database, but not a hub's.
    #[error("{path} is not a Flotilla hub database: {reason}")]
    NotFlotilla {
        /// The file.
        path: String,
        /// What is missing.
        reason: String,
    },
    /// Written by a newer hubd.
    #[error("{path} has schema version {found}; this hubd knows up to {known}: upgrade hubd first")]
    NewerSchema {
        /// The file.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// Another hub's database.
    #[error(
        "{path} belongs to another hub: this data directory's admin identity {admin} is not in it (--force restores it anyway; agents enrolled with another CA will not connect)"
    )]
    OtherHub {
        /// The file.
        path: String,
        /// Our admin identity.
        admin: String,
    },
    /// Something else failed.
    #[error(transparent)]
    Hub(#[from] HubError),
}

impl RestoreError {
    /// A short code for `--json` output.
    pub fn code(&self) -> &'static str {
        match self {
            Self::HubRunning(_) => "hub_running",
            Self::NotADatabase { .. } | Self::NotFlotilla { .. } => "not_a_hub_database",
            Self::NewerSchema { .. } => "newer_schema",
            Self::OtherHub { .. } => "other_hub",
            Self::Hub(_) => "failed",
        }
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> HubError {
    HubError::io(format!("{what} {}", path.display()), e)
}

/// Creates `path`, which must not exist, 0600 from its creation whatever the umask: a backup holds
/// everything the database does.
fn create_private(path: &Path) -> Result<std::fs::File, HubError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, crate::PRIVATE_FILE_MODE);
    let file = opts.open(path).map_err(|e| io("create", path, e))?;
    deploy::files::set_mode(path, crate::PRIVATE_FILE_MODE)
        .map_err(|e| io("chmod", path, e.source))?;
    Ok(file)
}

/// Copies `src` into a new file `dest` created 0600 (`std::fs::copy` would give it `src`'s mode).
fn copy_private(src: &Path, dest: &Path) -> Result<(), HubError> {
    let mut from = std::fs::File::open(src).map_err(|e| io("open", src, e))?;
    let mut to = create_private(dest)?;
    std::io::copy(&mut from, &mut to).map_err(|e| io("copy to", dest, e))?;
    Ok(())
}

/// Copies the database at `db` into `dest` (which must not exist), consistently, without
/// blocking writers. Blocking: call from a blocking thread.
pub fn vacuum_into(db: &Path, dest: &Path) -> Result<BackupInfo, HubError> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let dest_text = dest
        .to_str()
        .ok_or_else(|| HubError::Config(format!("{} is not UTF-8", dest.display())))?;
    // SQLite would create the copy 0644; into an empty file made 0600 it keeps that mode.
    drop(create_private(dest)?);
    if let Err(e) = conn.execute("VACUUM INTO ?1", [dest_text]) {
        let _ = std::fs::remove_file(dest);
        return Err(e.into());
    }
    drop(conn);
    describe(dest).map_err(|e| match e {
        RestoreError::Hub(h) => h,
        other => HubError::Config(other.to_string()),
    })
}

fn count(conn: &Connection, sql: &str) -> rusqlite::Result<u64> {
    conn.query_row(sql, [], |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
}

/// Checks that `path` is an intact hub database of a schema this hubd knows, and says what is in
/// it.
pub fn describe(path: &Path) -> Result<BackupInfo, RestoreError> {
    let shown = path.display().to_string();
    let not_db = |e: rusqlite::Error| RestoreError::NotADatabase {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let bytes = std::fs::metadata(path)
        .map_err(|e| io("stat", path, e))?
        .len();
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(not_db)?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(not_db)?;
    if check != "ok" {
        return Err(RestoreError::NotADatabase {
            path: shown,
            reason: format!("integrity check: {check}"),
        });
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(not_db)?;
    let known = migrate::schema_version();
    if version > known {
        return Err(RestoreError::NewerSchema {
            path: shown,
            found: version,
            known,
        });
    }
    let tables = count(
        &conn,
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('identities', 'tokens', 'audit')",
    )
    .map_err(not_db)?;
    if version < 1 || tables != 3 {
        return Err(RestoreError::NotFlotilla {
            path: shown,
            reason: format!(
                "schema version {version}, {tables} of the identities, tokens and audit tables"
            ),
        });
    }
    let q = |sql: &str| count(&conn, sql).map_err(not_db);
    Ok(BackupInfo {
        path: path.to_path_buf(),
        bytes,
        schema_version: version,
        agents: q("SELECT count(*) FROM identities WHERE role = 'agent'")?,
        operators: q("SELECT count(*) FROM identities WHERE role != 'agent'")?,
        tokens: q("SELECT count(*) FROM tokens")?,
    })
}

/// Copies `src` to `dest` atomically (a temporary file beside it, fsync,
/// rename), mode 0600; `force` replaces an existing `dest`.
pub fn place(src: &Path, dest: &Path, force: bool) -> Result<(), HubError> {
    if dest.exists() && !force {
        return Err(HubError::Config(format!(
            "{} exists: choose another name, or --force to replace it",
            dest.display()
        )));
    }
    let tmp = partial(dest);
    let _ = std::fs::remove_file(&tmp);
    copy_private(src, &tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("sync", &tmp, e))?;
    std::fs::rename(&tmp, dest).map_err(|e| io("rename to", dest, e))
}

fn partial(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// A backup made by the running hub, in its data directory, named by time.
pub(crate) fn online(paths: &HubPaths) -> Result<BackupInfo, HubError> {
    let dir = paths.data_dir.join(BACKUP_DIR);
    flotilla_certs::create_private_dir(&dir)?;
    let name = format!("hub-{}.db", store::now_ms());
    let dest = dir.join(&name);
    let tmp = partial(&dest);
    let _ = std::fs::remove_file(&tmp);
    let info = vacuum_into(&paths.db(), &tmp);
    let info = match info {
        Ok(i) => i,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &dest).map_err(|e| io("rename to", &dest, e))?;
    Ok(BackupInfo { path: dest, ..info })
}

/// A backup of a stopped hub, written to `dest`. Fails if the hub runs (it would be a backup of
/// a moving target made without its knowledge).
pub fn offline(paths: &HubPaths, dest: &Path, force: bool) -> Result<BackupInfo, RestoreError> {
    let _lock = crate::lock_data_dir(paths)
        .map_err(|_| RestoreError::HubRunning(paths.data_dir.display().to_string()))?;
    if !paths.db().exists() {
        return Err(HubError::Config(format!(
            "no database at {} (run `hubd init` first?)",
            paths.db().display()
        ))
        .into());
    }
    if dest.exists() && !force {
        return Err(HubError::Config(format!(
            "{} exists: choose another name, or --force to replace it",
            dest.display()
        ))
        .into());
    }
    let tmp = partial(dest);
    let _ = std::fs::remove_file(&tmp);
    let info = match vacuum_into(&paths.db(), &tmp) {
        Ok(info) => info,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    std::fs::rename(&tmp, dest).map_err(|e| io("rename to", dest, e))?;
    Ok(BackupInfo {
        path: dest.to_path_buf(),
        ..info
    })
}

/// What a restore did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    /// What is now the database.
    pub restored: BackupInfo,
    /// Where the database it replaced went (`hub.db.bak`), if there was one.
    pub previous: Option<PathBuf>,
}

/// The admin identity of this data directory, if `hubd init` made one.
fn admin_id(paths: &HubPaths) -> Option<String> {
    let identity =
        flotilla_certs::Identity::load(&paths.admin_dir(), flotilla_certs::IDENTITY_STEM).ok()?;
    identity.peer().ok().map(|p| p.id.to_string())
}

fn contains_identity(path: &Path, id: &str) -> Result<bool, RestoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(HubError::from)?;
    let n: i64 = conn
        .query_row("SELECT count(*) FROM identities WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .map_err(HubError::from)?;
    Ok(n > 0)
}

/// Replaces the database of the stopped hub in `paths` with `file`.
pub fn restore(paths: &HubPaths, file: &Path, force: bool) -> Result<RestoreReport, RestoreError> {
    let _lock = crate::lock_data_dir(paths)
        .map_err(|_| RestoreError::HubRunning(paths.data_dir.display().to_string()))?;
    // Check the file first, then copy, then check the copy (the one that counts).
    describe(file)?;
    let db = paths.db();
    let staged = paths.data_dir.join("hub.db.restore");
    let _ = std::fs::remove_file(&staged);
    copy_private(file, &staged)?;
    let checked = (|| {
        let info = describe(&staged)?;
        if !force
            && let Some(admin) = admin_id(paths)
            && !contains_identity(&staged, &admin)?
        {
            return Err(RestoreError::OtherHub {
                path: file.display().to_string(),
                admin,
            });
        }
        Ok(info)
    })();
    let info = match checked {
        Ok(info) => info,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    let previous = if db.exists() {
        // Fold the old WAL in, so hub.db.bak is complete on its own and no stale WAL is left to
        // be replayed into the restored file.
        let conn = Connection::open(&db).map_err(HubError::from)?;
        conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
            .map_err(HubError::from)?;
        drop(conn);
        let bak = paths.data_dir.join("hub.db.bak");
        std::fs::rename(&db, &bak).map_err(|e| io("rename to", &bak, e))?;
        Some(bak)
    } else {
        None
    };
    for suffix in ["-wal", "-shm"] {
        let side = paths.data_dir.join(format!("hub.db{suffix}"));
        deploy::files::remove_file(&side).map_err(|e| io("remove", &side, e.source))?;
    }
    std::fs::rename(&staged, &db).map_err(|e| io("rename to", &db, e))?;
    deploy::files::match_owner(&db, &paths.data_dir).map_err(|e| io("chown", &db, e.source))?;
    let conn = Connection::open(&db).map_err(HubError::from)?;
    store::audit::append(
        &conn,
        store::now_ms(),
        "local-admin",
        "restore",
        &file.display().to_string(),
        &format!(
            "schema={} agents={} tokens={}",
            info.schema_version, info.agents, info.tokens
        ),
    )
    .map_err(HubError::from)?;
    drop(conn);
    for suffix in ["-journal", "-wal", "-shm"] {
        let side = paths.data_dir.join(format!("hub.db{suffix}"));
        if side.exists() {
            deploy::files::match_owner(&side, &paths.data_dir)
                .map_err(|e| io("chown", &side, e.source))?;
        }
    }
    Ok(RestoreReport {
        restored: BackupInfo { path: db, ..info },
        previous,
    })
}

/// Prints a failure (JSON on stdout with `--json`, always on stderr) and returns its exit code.
fn failed(code: &str, message: String, exit: u8, json: bool) -> std::process::ExitCode {
    if json {
        println!(
            "{:#}",
            serde_json::json!({ "ok": false, "error": { "code": code, "message": message } })
        );
    }
    eprintln!("hubd: {message}");
    std::process::ExitCode::from(exit)
}

/// `hubd backup FILE`: through the running hub if there is one, else directly. Exit 0 when
/// written, 2 when FILE exists without `--force`, 1 for any failure.
pub async fn command(
    paths: &HubPaths,
    file: &Path,
    force: bool,
    json: bool,
) -> std::process::ExitCode {
    use crate::maint::{MaintRequest, MaintResponse};
    let dest = match std::path::absolute(file) {
        Ok(d) => d,
        Err(e) => return failed("failed", format!("{}: {e}", file.display()), 1, json),
    };
    if dest.exists() && !force {
        let msg = format!(
            "{} exists: choose another name, or --force to replace it",
            dest.display()
        );
        return failed("exists", msg, 2, json);
    }
    let (info, online) = match crate::maint::request(&paths.data_dir, &MaintRequest::Backup).await {
        Ok(Some(MaintResponse::Backup(made))) => {
            let placed = place(&made.path, &dest, force);
            let _ = std::fs::remove_file(&made.path);
            if let Err(e) = placed {
                return failed("failed", e.to_string(), 1, json);
            }
            (BackupInfo { path: dest, ..made }, true)
        }
        Ok(Some(MaintResponse::Error { message })) => {
            return failed(
                "failed",
                format!("the hub could not back up: {message}"),
                1,
                json,
            );
        }
        Ok(Some(other)) => {
            return failed("failed", format!("unexpected answer {other:?}"), 1, json);
        }
        Err(e) => return failed("failed", e.to_string(), 1, json),
        Ok(None) => {
            let done = tokio::task::spawn_blocking({
                let (paths, dest) = (paths.clone(), dest.clone());
                move || offline(&paths, &dest, force)
            })
            .await;
            match done {
                Ok(Ok(info)) => (info, false),
                Ok(Err(RestoreError::HubRunning(dir))) => {
                    let msg = format!(
                        "a hub holds {dir} but does not answer on its maintenance socket: is it an older hubd? stop it, or upgrade"
                    );
                    return failed("hub_unreachable", msg, 1, json);
                }
                Ok(Err(e)) => return failed(e.code(), e.to_string(), 1, json),
                Err(e) => return failed("failed", e.to_string(), 1, json),
            }
        }
    };
    if json {
        let mut out = serde_json::to_value(&info).unwrap_or_default();
        out["ok"] = true.into();
        out["online"] = online.into();
        println!("{out:#}");
    } else {
        println!(
            "backed up {} ({} bytes, schema {}, {} agents, {} tokens){}",
            info.path.display(),
            info.bytes,
            info.schema_version,
            info.agents,
            info.tokens,
            if online { " from the running hub" } else { "" }
        );
    }
    std::process::ExitCode::SUCCESS
}

/// `hubd restore FILE`. Exit 0 when restored, 1 when refused (hub running, not a hub database,
/// newer schema, another hub's) or failed; `--json` says which in `error.code`.
pub fn restore_command(
    paths: &HubPaths,
    file: &Path,
    force: bool,
    json: bool,
) -> std::process::ExitCode {
    match restore(paths, file, force) {
        Ok(report) => {
            if json {
                let mut out = serde_json::to_value(&report).unwrap_or_default();
                out["ok"] = true.into();
                println!("{out:#}");
            } else {
                let r = &report.restored;
                println!(
                    "restored {} into {} ({} agents, {} operators, {} tokens, schema {})",
                    file.display(),
                    r.path.display(),
                    r.agents,
                    r.operators,
                    r.tokens,
                    r.schema_version
                );
                if let Some(prev) = &report.previous {
                    println!("previous database kept as {}", prev.display());
                }
                println!("start the hub to serve it (systemctl start flotilla-hub)");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => failed(e.code(), e.to_string(), 1, json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub_db(dir: &Path) -> PathBuf {
        let path = dir.join("hub.db");
        let mut conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        migrate::migrate(&mut conn).expect("migrate");
        conn.execute(
            "INSERT INTO tokens (id, hash, role, labels, uses_left, expires_ms, created_ms) VALUES ('t1', x'00', 'agent', '[]', 1, 0, 0)",
            [],
        )
        .expect("insert");
        path
    }

    #[test]
    fn vacuum_copies_while_a_writer_holds_the_database() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = hub_db(dir.path());
        let writer = Connection::open(&db).expect("writer");
        writer.execute_batch("BEGIN; INSERT INTO tokens (id, hash, role, labels, uses_left, expires_ms, created_ms) VALUES ('t2', x'00', 'agent', '[]', 1, 0, 0);").expect("open tx");
        let out = dir.path().join("copy.db");
        let info = vacuum_into(&db, &out).expect("backup");
        assert_eq!(
            info.tokens, 1,
            "the uncommitted token is not in the snapshot"
        );
        assert_eq!(info.schema_version, migrate::schema_version());
        writer.execute_batch("COMMIT;").expect("commit");
        assert!(vacuum_into(&db, &out).is_err(), "never overwrites");
    }

    #[test]
    fn describe_refuses_what_is_not_a_hub_database() {
        let dir = tempfile::tempdir().expect("tmp");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![7u8; 4096]).expect("write");
        assert_eq!(
            describe(&junk).expect_err("junk").code(),
            "not_a_hub_database"
        );
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .expect("open")
            .execute_batch("CREATE TABLE x (y); PRAGMA user_version = 1;")
            .expect("other");
        assert!(matches!(
            describe(&other),
            Err(RestoreError::NotFlotilla { .. })
        ));
        std::fs::create_dir_all(dir.path().join("n")).expect("mkdir");
        let newer = hub_db(&dir.path().join("n"));
        Connection::open(&newer)
            .expect("open")
            .pragma_update(None, "user_version", 999)
            .expect("bump");
        let err = describe(&newer).expect_err("newer");
        assert_eq!(err.code(), "newer_schema");
        assert!(err.to_string().contains("upgrade hubd first"), "{err}");
    }
}
