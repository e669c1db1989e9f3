//! Queries of the hub's job store and agents (`ping`, `jobs`, `job`, `audit`) and their tables.

use super::rendering::{seconds, signal_name};
use crate::client::{Client, ClientError};
use crate::util::{Escaped, escaped_controls, utc};
use flotilla_wire::exec::{
    AgentResult, AuditEntry, JobCounts, JobId, JobInfo, Outcome, PingResult, Query, QueryReply,
};
use flotilla_wire::io::read_frame;
use flotilla_wire::limits::MAX_REQUEST_FRAME;
use flotilla_wire::msg::StreamOpen;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Sends one query and collects every reply up to `End`; a refusal becomes an error.
pub async fn query(client: &Client, q: &Query) -> Result<Vec<QueryReply>, ClientError> {
    let mut replies = Vec::new();
    stream_query(client, q, |reply| {
        replies.push(reply);
        Ok(())
    })
    .await?;
    Ok(replies)
}

/// Sends one query and hands each reply to `each` as it arrives, up to `End` (so a long listing
/// prints its first page before the last arrives); a refusal becomes an error.
pub async fn stream_query(
    client: &Client,
    q: &Query,
    mut each: impl FnMut(QueryReply) -> Result<(), ClientError>,
) -> Result<(), ClientError> {
    let link = client.link();
    let (mut send, mut recv) = client.open_bi().await?;
    send.write_opening(&StreamOpen::Query, q, MAX_REQUEST_FRAME)
        .await
        .map_err(|e| link.stream_error(e))?;
    // Ends our side: finishes a QUIC stream, half-closes a connection to the mux.
    let _ = send.shutdown().await;
    // Bounded: a frame per job, result, entry or agent (the hub caps those lists at 10,000), or a
    // page of 2,000 workload rows (10,000 agents × 10,000 containers stay below it).
    for _ in 0..1_000_000 {
        match read_frame::<QueryReply, _>(&mut recv, MAX_REQUEST_FRAME).await {
            Ok(Some(QueryReply::End)) => return Ok(()),
            Ok(Some(QueryReply::Error(r))) => return Err(ClientError::Refused(r)),
            Ok(Some(reply)) => each(reply)?,
            Ok(None) => break,
            Err(e) => return Err(link.stream_error(e)),
        }
    }
    Err(ClientError::Stream(
        "hub ended the query without its end marker".into(),
    ))
}

fn counts_cell(c: &JobCounts) -> String {
    format!(
        "{:>4} {:>4} {:>4} {:>4}",
        c.succeeded,
        c.failed + c.refused,
        c.timed_out,
        c.unreachable
    )
}

/// A job's state in one word: running, interrupted, cancelled, ok or failed.
pub fn job_state(j: &JobInfo) -> &'static str {
    match (j.ended_ms, j.interrupted, &j.cancelled_by) {
        (None, _, _) => "running",
        (_, true, _) => "interrupted",
        (_, _, Some(_)) => "cancelled",
        _ if j.counts.succeeded == j.targets => "ok",
        _ => "failed",
    }
}

/// The `flotilla jobs` table.
pub fn jobs_table(jobs: &[JobInfo]) -> String {
    let mut out = format!(
        "{:>5}  {:<20}  {:<12}  {:>4} {:>4} {:>4} {:>4} {:>4}  {:<11}  {:<16}  COMMAND\n",
        "JOB", "STARTED", "BY", "AGTS", "OK", "FAIL", "T/O", "UNR", "STATE", "SELECTOR"
    );
    for j in jobs {
        out.push_str(&format!(
            "{:>5}  {:<20}  {:<12}  {:>4} {}  {:<11}  {:<16}  {}\n",
            j.job.0,
            utc(j.started_ms),
            Escaped(&j.actor_name),
            j.targets,
            counts_cell(&j.counts),
            job_state(j),
            Escaped(&j.selector),
            escaped_controls(&j.command.display())
        ));
    }
    out
}

/// One result's status words.
pub fn result_status(r: &AgentResult) -> String {
    match r.outcome {
        Outcome::Exited => match (r.code, r.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by {} ({s})", signal_name(s)),
            (None, None) => "ended".into(),
        },
        Outcome::TimedOut => "timed out".into(),
        Outcome::Cancelled if r.message.is_empty() => "cancelled".into(),
        other => {
            let word = other.as_str().replace('_', " ");
            if r.message.is_empty() {
                word
            } else {
                format!("{word}: {}", Escaped(&r.message))
            }
        }
    }
}

/// `flotilla job ID`: the job, one line per agent, then the end of each agent's output.
pub fn job_detail(info: &JobInfo, results: &[AgentResult]) -> String {
    let mut out = format!(
        "job:       {}\nby:        {} ({})\nselector:  {}\ncommand:   {}\nstarted:   {}\nended:     {}\nstate:     {}\ntargets:   {}\nresults:   {} succeeded, {} failed, {} timed out, {} cancelled, {} refused, {} unreachable\n",
        info.job,
        Escaped(&info.actor_name),
        Escaped(&info.actor),
        Escaped(&info.selector),
        escaped_controls(&info.command.display()),
        utc(info.started_ms),
        info.ended_ms.map(utc).unwrap_or_else(|| "-".into()),
        job_state(info),
        info.targets,
        info.counts.succeeded,
        info.counts.failed,
        info.counts.timed_out,
        info.counts.cancelled,
        info.counts.refused,
        info.counts.unreachable
    );
    if let Some(by) = &info.cancelled_by {
        out.push_str(&format!("cancelled: by {}\n", Escaped(by)));
    }
    let width = results
        .iter()
        .map(|r| crate::util::escaped(&r.name).chars().count())
        .max()
        .unwrap_or(0);
    out.push('\n');
    for r in results {
        out.push_str(&format!(
            "  {:<width$}  {:<40} {}\n",
            Escaped(&r.name),
            result_status(r),
            r.duration_ms.map(seconds).unwrap_or_default()
        ));
    }
    for r in results {
        for (label, tail, total) in [
            ("stdout", &r.stdout_tail, r.stdout_bytes),
            ("stderr", &r.stderr_tail, r.stderr_bytes),
        ] {
            if tail.0.is_empty() {
                continue;
            }
            let cut = if total > tail.0.len() as u64 {
                format!(", last {} of {} bytes", tail.0.len(), total)
            } else {
                String::new()
            };
            out.push_str(&format!("\n--- {} {label}{cut}\n", Escaped(&r.name)));
            let text = String::from_utf8_lossy(&tail.0);
            out.push_str(&text);
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

/// `flotilla job ID --json`.
pub fn job_json(info: &JobInfo, results: &[AgentResult]) -> Value {
    let results: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "agent": r.agent, "name": r.name, "outcome": r.outcome, "code": r.code,
                "signal": r.signal, "started_ms": r.started_ms, "duration_ms": r.duration_ms,
                "message": r.message,
                "stdout_tail": String::from_utf8_lossy(&r.stdout_tail.0),
                "stderr_tail": String::from_utf8_lossy(&r.stderr_tail.0),
                "stdout_bytes": r.stdout_bytes, "stderr_bytes": r.stderr_bytes,
            })
        })
        .collect();
    json!({ "job": info, "results": results })
}

/// The `flotilla audit` table.
pub fn audit_table(entries: &[AuditEntry]) -> String {
    let mut out = format!(
        "{:<20}  {:<19}  {:<12}  {:<20}  DETAIL\n",
        "TIME", "ACTOR", "ACTION", "TARGET"
    );
    for e in entries {
        out.push_str(&format!(
            "{:<20}  {:<19}  {:<12}  {:<20}  {}\n",
            utc(e.at_ms),
            Escaped(&e.actor),
            Escaped(&e.action),
            Escaped(&e.target),
            Escaped(&e.detail)
        ));
    }
    out
}

/// One `flotilla ping` line.
pub fn ping_line(p: &PingResult, width: usize) -> String {
    match p.rtt_us {
        Some(us) => format!(
            "{:<width$}  {:>8.2} ms  clock {:+} ms",
            Escaped(&p.name),
            us as f64 / 1000.0,
            p.clock_offset_ms.unwrap_or(0)
        ),
        None => format!(
            "{:<width$}  unreachable: {}",
            Escaped(&p.name),
            Escaped(&p.error)
        ),
    }
}

/// Runs `flotilla ping`; exit status 0 only if every agent answered.
pub async fn ping_command(client: &Client, selector: &str, json: bool) -> Result<u8, ClientError> {
    let replies = query(
        client,
        &Query::Ping {
            selector: selector.to_string(),
        },
    )
    .await?;
    let mut pings: Vec<PingResult> = replies
        .into_iter()
        .filter_map(|r| match r {
            QueryReply::Ping(p) => Some(p),
            _ => None,
        })
        .collect();
    pings.sort_by(|a, b| a.name.cmp(&b.name));
    let all_ok = pings.iter().all(|p| p.rtt_us.is_some());
    if json {
        for p in &pings {
            crate::util::outln!("{}", json!(p)).map_err(ClientError::Output)?;
        }
    } else {
        let width = pings
            .iter()
            .map(|p| crate::util::escaped(&p.name).chars().count())
            .max()
            .unwrap_or(0);
        for p in &pings {
            crate::util::outln!("{}", ping_line(p, width)).map_err(ClientError::Output)?;
        }
    }
    Ok(u8::from(!all_ok))
}

/// The newest `limit` jobs, newest first.
pub async fn jobs(client: &Client, limit: u32) -> Result<Vec<JobInfo>, ClientError> {
    Ok(query(client, &Query::Jobs { limit })
        .await?
        .into_iter()
        .filter_map(|r| match r {
            QueryReply::Job(j) => Some(j),
            _ => None,
        })
        .collect())
}

/// The newest `limit` audit entries, oldest first.
pub async fn audit(client: &Client, limit: u32) -> Result<Vec<AuditEntry>, ClientError> {
    Ok(query(client, &Query::Audit { limit })
        .await?
        .into_iter()
        .filter_map(|r| match r {
            QueryReply::Audit(e) => Some(e),
            _ => None,
        })
        .collect())
}

/// Runs `flotilla jobs`.
pub async fn jobs_command(client: &Client, limit: u32, json: bool) -> Result<u8, ClientError> {
    let jobs = jobs(client, limit).await?;
    if json {
        crate::util::outln!(
            "{}",
            serde_json::to_string_pretty(&jobs).unwrap_or_default()
        )
        .map_err(ClientError::Output)?;
    } else {
        crate::util::out!("{}", jobs_table(&jobs)).map_err(ClientError::Output)?;
    }
    Ok(0)
}

/// Splits a job query's replies into the job and its results.
pub fn split_job(replies: Vec<QueryReply>) -> Option<(JobInfo, Vec<AgentResult>)> {
    let mut info = None;
    let mut results = Vec::new();
    for r in replies {
        match r {
            QueryReply::Job(j) => info = Some(j),
            QueryReply::Result(res) => results.push(res),
            _ => {}
        }
    }
    info.map(|i| (i, results))
}

/// Runs `flotilla job ID`.
pub async fn job_command(client: &Client, job: u64, json: bool) -> Result<u8, ClientError> {
    let replies = query(client, &Query::Job { job: JobId(job) }).await?;
    let Some((info, results)) = split_job(replies) else {
        return Err(ClientError::Stream("hub answered without the job".into()));
    };
    if json {
        crate::util::outln!(
            "{}",
            serde_json::to_string_pretty(&job_json(&info, &results)).unwrap_or_default()
        )
        .map_err(ClientError::Output)?;
    } else {
        crate::util::out!("{}", job_detail(&info, &results)).map_err(ClientError::Output)?;
    }
    Ok(0)
}

/// Runs `flotilla audit`.
pub async fn audit_command(client: &Client, limit: u32, json: bool) -> Result<u8, ClientError> {
    let entries = audit(client, limit).await?;
    if json {
        crate::util::outln!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        )
        .map_err(ClientError::Output)?;
    } else {
        crate::util::out!("{}", audit_table(&entries)).map_err(ClientError::Output)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_text_is_escaped() {
        let table = audit_table(&[AuditEntry {
            seq: 1,
            at_ms: 0,
            actor: "a\x1b".into(),
            action: "exec".into(),
            target: "t\u{9b}".into(),
            detail: "rm -rf \u{202e}/".into(),
        }]);
        assert!(table.contains(r"a\x1b "), "{table}");
        assert!(table.contains(r"t\u{9b} "), "{table}");
        assert!(table.ends_with("rm -rf \\u{202e}/\n"), "{table}");
    }
}
