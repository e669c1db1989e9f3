//! Exec jobs and their per-agent results, with the last [`OUTPUT_TAIL`] bytes of each output stream.
//!
//! Retention: the newest [`KEEP_JOBS`] jobs are kept; output tails only for the newest
//! [`KEEP_OUTPUT_JOBS`], so a hub that runs noisy jobs on a big fleet for years stays small.

use flotilla_wire::IdentityId;
use flotilla_wire::exec::{
    AgentResult, Chunk, ExecCommand, JobCounts, JobId, JobInfo, OUTPUT_TAIL, Outcome, Target,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// Jobs kept in the database: months of history for a busy team, a few MB without output.
pub const KEEP_JOBS: u64 = 10_000;
/// Jobs whose output tails are kept: at most 128 KiB per agent each, so this bounds the database to
/// about 100 × fleet size × 128 KiB in the worst case.
pub const KEEP_OUTPUT_JOBS: u64 = 100;

/// A job about to start.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// Identity id of the operator.
    pub actor: String,
    /// Operator's display name.
    pub actor_name: String,
    /// Selector as typed.
    pub selector: String,
    /// What runs.
    pub command: ExecCommand,
    /// Per-agent timeout, ms.
    pub timeout_ms: u64,
    /// Batch size.
    pub batch: u32,
    /// Start time, ms since the epoch.
    pub started_ms: u64,
}

fn bad(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.into(), rusqlite::types::Type::Text)
}

/// Inserts the job and one pending result per target; returns the new id.
pub fn insert(conn: &Connection, job: &NewJob, targets: &[Target]) -> rusqlite::Result<JobId> {
    let command = serde_json::to_string(&job.command).map_err(|_| bad("command"))?;
    conn.prepare_cached(
        "INSERT INTO jobs (actor, actor_name, selector, command, timeout_ms, batch, \
             started_ms, targets) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        job.actor,
        job.actor_name,
        job.selector,
        command,
        job.timeout_ms as i64,
        job.batch,
        job.started_ms as i64,
        targets.len() as i64
    ])?;
    let id = JobId(conn.last_insert_rowid() as u64);
    let mut stmt = conn.prepare_cached(
        "INSERT INTO job_results (job_id, agent_id, agent_name, outcome) VALUES (?1, ?2, ?3, \
             'pending')",
    )?;
    for t in targets {
        stmt.execute(params![id.0 as i64, t.id.as_str(), t.name])?;
    }
    Ok(id)
}

/// Marks one agent's execution as running.
pub fn set_running(
    conn: &Connection,
    job: JobId,
    agent: &IdentityId,
    started_ms: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE job_results SET outcome = 'running', started_ms = ?3 WHERE job_id = ?1 AND \
             agent_id = ?2",
    )?
    .execute(params![job.0 as i64, agent.as_str(), started_ms as i64])?;
    Ok(())
}

/// Stores one agent's final result.
pub fn record(conn: &Connection, job: JobId, r: &AgentResult) -> rusqlite::Result<()> {
    let tail = |c: &Chunk| c.0[c.0.len().saturating_sub(OUTPUT_TAIL)..].to_vec();
    conn.prepare_cached("UPDATE job_results SET outcome = ?3, exit_code = ?4, signal = ?5, started_ms = ?6, duration_ms = ?7, message = ?8,
         stdout_tail = ?9, stderr_tail = ?10, stdout_bytes = ?11, stderr_bytes = ?12 WHERE job_id = ?1 AND agent_id = ?2")?.execute(params![
            job.0 as i64,
            r.agent.as_str(),
            r.outcome.as_str(),
            r.code,
            r.signal,
            r.started_ms.map(|v| v as i64),
            r.duration_ms.map(|v| v as i64),
            r.message,
            tail(&r.stdout_tail),
            tail(&r.stderr_tail),
            r.stdout_bytes as i64,
            r.stderr_bytes as i64,
        ],
    )?;
    Ok(())
}

/// Records the end of a job and prunes old ones. Three statements: run it inside a transaction
/// (the job's last results share it, see `exec::job`) for one commit instead of three.
pub fn finish(
    conn: &Connection,
    job: JobId,
    ended_ms: u64,
    counts: &JobCounts,
    cancelled_by: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE jobs SET ended_ms = ?2, succeeded = ?3, failed = ?4, timed_out = ?5, cancelled = ?6, refused = ?7, unreachable = ?8,
         cancelled_by = ?9 WHERE id = ?1")?.execute(params![
            job.0 as i64,
            ended_ms as i64,
            counts.succeeded,
            counts.failed,
            counts.timed_out,
            counts.cancelled,
            counts.refused,
            counts.unreachable,
            cancelled_by
        ],
    )?;
    prune(conn, job)
}

/// Clears the output tails of results older than the newest [`KEEP_OUTPUT_JOBS`] jobs. The
/// condition on the tails is `job_results_tails`'s own, so only results still holding output are
/// visited: without it every job's end walked every result of the kept jobs, thousands of rows
/// on a hub with history, on the store thread that the next command's job record waits for.
const PRUNE_TAILS: &str = "UPDATE job_results SET stdout_tail = x'', stderr_tail = x'' \
     WHERE job_id <= ?1 AND (length(stdout_tail) > 0 OR length(stderr_tail) > 0)";

/// Drops jobs older than the newest [`KEEP_JOBS`] and output older than [`KEEP_OUTPUT_JOBS`].
fn prune(conn: &Connection, newest: JobId) -> rusqlite::Result<()> {
    let newest = newest.0 as i64;
    conn.prepare_cached("DELETE FROM jobs WHERE id <= ?1")?
        .execute([newest - KEEP_JOBS as i64])?;
    conn.prepare_cached(PRUNE_TAILS)?
        .execute([newest - KEEP_OUTPUT_JOBS as i64])?;
    Ok(())
}

/// Marks jobs left unfinished by a previous hub process as interrupted: their running and pending
/// agents become lost, and their counts are recomputed. Returns how many jobs it touched.
pub fn mark_interrupted(conn: &mut Connection, now_ms: u64) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let ids: Vec<i64> = {
        let mut stmt = tx.prepare_cached("SELECT id FROM jobs WHERE ended_ms IS NULL")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for id in &ids {
        tx.prepare_cached(
            "UPDATE job_results SET outcome = 'lost', message = 'hub stopped while this ran; \
                 result unknown' WHERE job_id = ?1 AND outcome IN ('pending', 'running')",
        )?
        .execute([id])?;
        let counts = counts_of(&tx, JobId(*id as u64))?;
        tx.prepare_cached(
            "UPDATE jobs SET ended_ms = ?2, interrupted = 1, succeeded = ?3, failed = ?4, \
                 timed_out = ?5, cancelled = ?6, refused = ?7, unreachable = ?8 WHERE id = ?1",
        )?
        .execute(params![
            id,
            now_ms as i64,
            counts.succeeded,
            counts.failed,
            counts.timed_out,
            counts.cancelled,
            counts.refused,
            counts.unreachable
        ])?;
    }
    tx.commit()?;
    Ok(ids.len())
}

fn counts_of(conn: &Connection, job: JobId) -> rusqlite::Result<JobCounts> {
    let mut stmt =
        conn.prepare_cached("SELECT outcome, exit_code FROM job_results WHERE job_id = ?1")?;
    let rows = stmt.query_map([job.0 as i64], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<i32>>(1)?))
    })?;
    let mut counts = JobCounts::default();
    for row in rows {
        let (outcome, code) = row?;
        counts.add(
            Outcome::parse(&outcome).ok_or_else(|| bad("outcome"))?,
            code,
        );
    }
    Ok(counts)
}

const JOB_COLUMNS: &str = "id, actor, actor_name, selector, command, timeout_ms, batch, started_ms, ended_ms, targets, succeeded, failed, timed_out, cancelled, refused, unreachable, cancelled_by, interrupted";

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<JobInfo> {
    let command: String = r.get(4)?;
    Ok(JobInfo {
        job: JobId(r.get::<_, i64>(0)? as u64),
        actor: r.get(1)?,
        actor_name: r.get(2)?,
        selector: r.get(3)?,
        command: serde_json::from_str(&command).map_err(|_| bad("command"))?,
        timeout_ms: r.get::<_, i64>(5)? as u64,
        batch: r.get(6)?,
        started_ms: r.get::<_, i64>(7)? as u64,
        ended_ms: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        targets: r.get(9)?,
        counts: JobCounts {
            succeeded: r.get(10)?,
            failed: r.get(11)?,
            timed_out: r.get(12)?,
            cancelled: r.get(13)?,
            refused: r.get(14)?,
            unreachable: r.get(15)?,
        },
        cancelled_by: r.get(16)?,
        interrupted: r.get::<_, i64>(17)? != 0,
    })
}

/// The newest `limit` jobs, newest first.
pub fn list(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<JobInfo>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs ORDER BY id DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit], job_from_row)?;
    rows.collect()
}

/// One job.
pub fn get(conn: &Connection, job: JobId) -> rusqlite::Result<Option<JobInfo>> {
    conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([job.0 as i64], job_from_row)
        .optional()
}

/// The per-agent results of a job, by agent name.
pub fn results(conn: &Connection, job: JobId) -> rusqlite::Result<Vec<AgentResult>> {
    let mut stmt = conn.prepare_cached(
        "SELECT agent_id, agent_name, outcome, exit_code, signal, started_ms, duration_ms, message, stdout_tail, stderr_tail, stdout_bytes, stderr_bytes
         FROM job_results WHERE job_id = ?1 ORDER BY agent_name, agent_id",
    )?;
    let rows = stmt.query_map([job.0 as i64], |r| {
        let agent: String = r.get(0)?;
        let outcome: String = r.get(2)?;
        Ok(AgentResult {
            agent: IdentityId::parse(&agent).ok_or_else(|| bad("agent_id"))?,
            name: r.get(1)?,
            outcome: Outcome::parse(&outcome).ok_or_else(|| bad("outcome"))?,
            code: r.get(3)?,
            signal: r.get(4)?,
            started_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
            duration_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
            message: r.get(7)?,
            stdout_tail: Chunk(r.get(8)?),
            stderr_tail: Chunk(r.get(9)?),
            stdout_bytes: r.get::<_, i64>(10)? as u64,
            stderr_bytes: r.get::<_, i64>(11)? as u64,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::Role;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().expect("open");
        c.pragma_update(None, "foreign_keys", "ON").expect("fk");
        super::super::migrate::migrate(&mut c).expect("migrate");
        c
    }

    fn target(n: u8, name: &str) -> Target {
        Target {
            id: IdentityId::from_random(Role::Agent, [n; 8]),
            name: name.into(),
            online: true,
        }
    }

    fn new_job() -> NewJob {
        NewJob {
            actor: "o-0101010101010101".into(),
            actor_name: "admin".into(),
            selector: "all".into(),
            command: ExecCommand::Argv {
                argv: vec!["true".into()],
                shell: false,
            },
            timeout_ms: 0,
            batch: 0,
            started_ms: 10,
        }
    }

    #[test]
    fn job_lifecycle_is_stored() {
        let c = db();
        let targets = [target(1, "web-1"), target(2, "db-1")];
        let job = insert(&c, &new_job(), &targets).expect("insert");
        set_running(&c, job, &targets[0].id, 11).expect("running");
        let mut r = results(&c, job).expect("results");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "db-1", "sorted by name");
        assert_eq!(r[0].outcome, Outcome::Pending);
        assert_eq!(r[1].outcome, Outcome::Running);
        let mut done = r.remove(1);
        done.outcome = Outcome::Exited;
        done.code = Some(0);
        done.stdout_tail = Chunk(vec![b'x'; OUTPUT_TAIL + 10]);
        done.stdout_bytes = (OUTPUT_TAIL + 10) as u64;
        record(&c, job, &done).expect("record");
        let stored = results(&c, job).expect("results");
        assert_eq!(stored[1].stdout_tail.0.len(), OUTPUT_TAIL, "tail is capped");
        assert_eq!(stored[1].code, Some(0));
        let mut counts = JobCounts::default();
        counts.add(Outcome::Exited, Some(0));
        finish(&c, job, 20, &counts, None).expect("finish");
        let info = get(&c, job).expect("get").expect("exists");
        assert_eq!(info.ended_ms, Some(20));
        assert_eq!(info.counts.succeeded, 1);
        assert_eq!(info.command, new_job().command);
        assert_eq!(list(&c, 10).expect("list"), vec![info]);
    }

    #[test]
    fn unfinished_jobs_become_interrupted() {
        let mut c = db();
        let targets = [target(1, "web-1")];
        let job = insert(&c, &new_job(), &targets).expect("insert");
        set_running(&c, job, &targets[0].id, 11).expect("running");
        assert_eq!(mark_interrupted(&mut c, 99).expect("mark"), 1);
        let info = get(&c, job).expect("get").expect("exists");
        assert!(info.interrupted);
        assert_eq!(info.ended_ms, Some(99));
        assert_eq!(info.counts.unreachable, 1);
        assert_eq!(results(&c, job).expect("results")[0].outcome, Outcome::Lost);
        assert_eq!(mark_interrupted(&mut c, 100).expect("again"), 0);
    }

    #[test]
    fn old_jobs_and_outputs_are_pruned() {
        let c = db();
        let t = [target(1, "web-1")];
        let first = insert(&c, &new_job(), &t).expect("insert");
        let mut r = results(&c, first).expect("results").remove(0);
        r.outcome = Outcome::Exited;
        r.stdout_tail = Chunk(b"hello".to_vec());
        record(&c, first, &r).expect("record");
        c.execute(
            "UPDATE sqlite_sequence SET seq = seq + ?1 WHERE name = 'jobs'",
            [KEEP_OUTPUT_JOBS as i64],
        )
        .expect("skip ids");
        let later = insert(&c, &new_job(), &t).expect("insert");
        finish(&c, later, 1, &JobCounts::default(), None).expect("finish");
        assert!(
            results(&c, first).expect("results")[0]
                .stdout_tail
                .0
                .is_empty(),
            "output of old jobs dropped"
        );
        assert!(
            get(&c, first).expect("get").is_some(),
            "the job itself kept"
        );
        c.execute(
            "UPDATE sqlite_sequence SET seq = seq + ?1 WHERE name = 'jobs'",
            [KEEP_JOBS as i64],
        )
        .expect("skip ids");
        let last = insert(&c, &new_job(), &t).expect("insert");
        finish(&c, last, 1, &JobCounts::default(), None).expect("finish");
        assert!(get(&c, first).expect("get").is_none());
        assert!(results(&c, first).expect("results").is_empty(), "cascade");
    }

    #[test]
    fn pruning_tails_visits_only_results_that_hold_output() {
        let c = db();
        let plan = super::super::query_plan(&c, PRUNE_TAILS, [0]);
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX job_results_tails")),
            "the pruning walks every kept result: {plan:?}"
        );
    }
}
