//! Exec fan-out: an operator's [`ExecRequest`] becomes a job with one stream per target agent, whose
//! output flows back to the operator under QUIC flow control end to end; plus the job, audit and
//! ping queries.
//!
//! - [`selector`]: the selector grammar and its resolution against the registry.
//! - `job`: running one job (batching, cancel, lost agents, results into the store).
//! - `query`: `jobs`, `job ID`, `audit`, `ping`, and the workload queries (containers, units,
//!   container history).
//!
//! Roles: viewers may ping and read workloads; running commands and reading jobs and the audit log needs the operator
//! role. The agent's own policy has the last word on what runs; the hub cannot raise it.

mod job;
mod query;
pub mod selector;

pub use selector::{Lookup, Selector, SelectorError};

use crate::admin::Actor;
use crate::session::frame_error_code;
use crate::store::{self, jobs::NewJob, now_ms};
use crate::{HubCtx, HubError};
use flotilla_wire::exec::{
    ExecCommand, ExecEvent, ExecRequest, MAX_COMMAND_BYTES, MAX_SELECTOR_BYTES, MAX_TIMEOUT_MS,
    Target,
};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_EXEC_FRAME, MAX_EXEC_REQUEST_FRAME};
use flotilla_wire::msg::Refusal;
use flotilla_wire::{ErrorCode, IdentityId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use query::serve_query;

/// Time an operator gets to send its request after opening the stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Running jobs. A job runs in this tracker rather than in the operator's stream task so that it
/// completes — agents cancelled, results stored — even when the operator's session is torn down.
#[derive(Default)]
pub struct Jobs {
    tracker: TaskTracker,
}

impl Jobs {
    /// Number of jobs running now.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Stops taking jobs and waits up to `deadline` for running ones to store their results.
    pub async fn wait(&self, deadline: Duration) {
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.tracker.len(),
                "jobs still running at the drain deadline"
            );
        }
    }
}

/// Marks jobs a previous hub process left unfinished as interrupted (call once at start).
pub(crate) async fn recover(ctx: &HubCtx) {
    match ctx
        .store
        .call(|c| Ok(store::jobs::mark_interrupted(c, now_ms())?))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            jobs = n,
            "jobs interrupted by the previous hub stop marked as such"
        ),
        Err(e) => tracing::error!(error = %e, "could not mark interrupted jobs"),
    }
}

/// A job ready to run: stored, audited, targets resolved.
pub(crate) struct Prepared {
    job: flotilla_wire::exec::JobId,
    req: ExecRequest,
    /// The selector as the job's records keep it ([`selector_summary`]), for the log.
    selector_kept: String,
    targets: Vec<Planned>,
    actor: Actor,
    actor_name: String,
    accepted_at: Instant,
}

/// One target with what the hub knew of it at acceptance.
#[derive(Clone)]
struct Planned {
    target: Target,
    last_seen_ms: u64,
}

fn bad(message: String) -> HubError {
    HubError::refused(ErrorCode::BadRequest, message)
}

/// The audit action of a job: `exec` for a command line or a builtin check, else what it does to
/// which kind of workload (`container.stop`, `service.restart`, `compose.up`), so the audit log can
/// be searched by it.
pub fn audit_action(command: &ExecCommand) -> String {
    match command {
        ExecCommand::Argv { .. } | ExecCommand::Builtin(_) => "exec".into(),
        ExecCommand::Container { action, .. } => format!("container.{}", action.as_str()),
        ExecCommand::Service { action, .. } => format!("service.{}", action.as_str()),
        ExecCommand::Compose { action, .. } => format!("compose.{}", action.as_str()),
    }
}

/// Most containers or units one action names: a console selection of a host's containers is a
/// few dozen; the agent acts on them one after the other.
pub const MAX_WORKLOAD_NAMES: usize = 1000;

/// Checks the names of a workload action: each must be a plain name (no path, option or control
/// character), so the agent never sees one that could be read as something else.
fn validate_workload(command: &ExecCommand) -> Result<(), HubError> {
    use flotilla_wire::workloads::{valid_project_name, valid_workload_name};
    let (kind, names) = match command {
        ExecCommand::Argv { .. } | ExecCommand::Builtin(_) => return Ok(()),
        ExecCommand::Container { containers, .. } => ("container", containers),
        ExecCommand::Service { units, .. } => ("unit", units),
        ExecCommand::Compose { project, .. } => {
            if valid_project_name(project) {
                return Ok(());
            }
            return Err(bad(format!(
                "{project:?} is not a compose project: give one folder name of the agent's compose_dir (letters, digits, _ . -, at most 64 bytes)"
            )));
        }
    };
    if names.is_empty() {
        return Err(bad(format!("no {kind} named: give at least one")));
    }
    if names.len() > MAX_WORKLOAD_NAMES {
        return Err(bad(format!(
            "{} {kind}s named; at most {MAX_WORKLOAD_NAMES} per action",
            names.len()
        )));
    }
    if let Some(name) = names.iter().find(|n| !valid_workload_name(n)) {
        return Err(bad(format!(
            "{name:?} is not a {kind} name: 1 to {} bytes, no '/', no control character, not starting with '-'",
            flotilla_wire::workloads::MAX_WORKLOAD_NAME
        )));
    }
    Ok(())
}

/// Checks what the hub can check about a request before resolving anything.
pub fn validate(req: &ExecRequest) -> Result<(), HubError> {
    validate_workload(&req.command)?;
    if let ExecCommand::Argv { argv, .. } = &req.command {
        match argv.first() {
            None => return Err(bad("empty command: give a program after --".into())),
            Some(p) if p.is_empty() => return Err(bad("empty program name".into())),
            Some(_) => {}
        }
        if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
            return Err(bad(format!("argument {i} contains a NUL byte")));
        }
        let bytes: usize = argv.iter().map(|a| a.len() + 1).sum::<usize>();
        if bytes > MAX_COMMAND_BYTES {
            return Err(bad(format!(
                "command line of {bytes} bytes exceeds the {MAX_COMMAND_BYTES}-byte limit: ship a script instead"
            )));
        }
    }
    if req.selector.len() > MAX_SELECTOR_BYTES {
        return Err(bad(format!(
            "selector of {} bytes exceeds the {MAX_SELECTOR_BYTES}-byte limit: select by label or name glob instead",
            req.selector.len()
        )));
    }
    if req.timeout_ms > MAX_TIMEOUT_MS {
        return Err(bad(format!(
            "timeout of {} s exceeds the {} s limit",
            req.timeout_ms / 1000,
            MAX_TIMEOUT_MS / 1000
        )));
    }
    Ok(())
}

/// Longest selector the job record, the audit log and the hub's log keep word for word.
const SELECTOR_KEPT: usize = 512;

/// A selector as records keep it: verbatim up to [`SELECTOR_KEPT`] bytes, else its first terms and
/// a count. A console selection of thousands of marked agents is a selector of thousands of ids;
/// the job's per-agent rows name every target already, so a copy of the whole list in each record
/// (and log line) would only bloat them.
pub(crate) fn selector_summary(selector: &str) -> String {
    if selector.len() <= SELECTOR_KEPT {
        return selector.to_owned();
    }
    let mut end = SELECTOR_KEPT;
    while !selector.is_char_boundary(end) {
        end -= 1;
    }
    let head = &selector[..end];
    let head = head.rfind(',').map_or(head, |comma| &head[..comma]);
    let terms = selector.split(',').count();
    format!("{head},… ({terms} terms, {} bytes)", selector.len())
}

/// The non-revoked agents a selector picks, with whether each is online now.
pub(crate) async fn resolve(ctx: &HubCtx, selector: &str) -> Result<Vec<(Target, u64)>, HubError> {
    let sel = Selector::parse(selector).map_err(|e| bad(e.to_string()))?;
    let registry = ctx.registry.clone();
    ctx.store
        .call(move |c| resolve_on(c, &sel, &registry))
        .await
}

/// [`resolve`] on the store thread, so that `prepare` resolves and records a job in one trip.
fn resolve_on(
    c: &mut rusqlite::Connection,
    sel: &Selector,
    registry: &crate::registry::Registry,
) -> Result<Vec<(Target, u64)>, HubError> {
    // A selector whose every term has a name, an id, a glob with a literal start or a label (the
    // common `flotilla exec web-1 -- …`, `web-*`, `env=prod`) reads only what those find;
    // anything else reads every live agent. Either way `resolve` decides on rows that hold every
    // agent a term can match, none of them revoked, so the outcome is the same.
    let live: Vec<store::Selectable> = match sel.lookups() {
        Some(lookups) => {
            let mut rows = Vec::new();
            for lookup in lookups {
                use store::identities as ids;
                match lookup {
                    Lookup::Name(name) => rows.extend(ids::live_agents_named(c, name)?),
                    Lookup::Id(id) => rows.extend(ids::live_agent(c, id)?),
                    Lookup::Prefix(prefix) => rows.extend(ids::live_agents_named_from(c, prefix)?),
                    Lookup::Label { key, value } => {
                        rows.extend(ids::live_agents_labelled(c, key, value)?)
                    }
                }
            }
            rows.sort_by(|a, b| a.id.cmp(&b.id));
            rows.dedup_by(|a, b| a.id == b.id);
            rows
        }
        None => store::identities::live_agents(c)?,
    };
    let chosen = sel.resolve(&live).map_err(|e| {
        let code = match e {
            SelectorError::UnknownName { .. }
            | SelectorError::UnknownId { .. }
            | SelectorError::NoMatch { .. } => ErrorCode::NotFound,
            _ => ErrorCode::BadRequest,
        };
        HubError::refused(code, e.to_string())
    })?;
    Ok(chosen
        .into_iter()
        .map(|r| {
            (
                Target {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    online: registry.is_online(&r.id),
                },
                r.last_seen_ms,
            )
        })
        .collect())
}

async fn audit(ctx: &HubCtx, actor: &str, action: String, target: String, detail: String) {
    let actor = actor.to_string();
    let logged = action.clone();
    if let Err(e) = ctx
        .store
        .call(move |c| {
            Ok(store::audit::append(
                c,
                now_ms(),
                &actor,
                &action,
                &target,
                &detail,
            )?)
        })
        .await
    {
        tracing::error!(error = %e, action = %logged, "could not write audit record");
    }
}

/// Checks role and request, resolves targets, stores the job and its audit record.
async fn prepare(ctx: &HubCtx, actor: &Actor, req: ExecRequest) -> Result<Prepared, HubError> {
    if !actor.role.can_act() {
        audit(
            ctx,
            &actor.name,
            format!("{}.denied", audit_action(&req.command)),
            format!("selector:{}", selector_summary(&req.selector)),
            format!("role={} command={}", actor.role, req.command.display()),
        )
        .await;
        return Err(HubError::refused(
            ErrorCode::Forbidden,
            format!("exec needs the operator role; you are {}", actor.role),
        ));
    }
    validate(&req)?;
    let sel = Selector::parse(&req.selector).map_err(|e| bad(e.to_string()))?;
    let registry = ctx.registry.clone();
    let (who, who_id, started_ms) = (actor.name.clone(), IdentityId::parse(&actor.name), now_ms());
    let selector_kept = selector_summary(&req.selector);
    let (selector, command) = (selector_kept.clone(), req.command.clone());
    let (timeout_ms, batch) = (req.timeout_ms, req.batch);
    let action = audit_action(&req.command);
    // One trip to the store thread: resolving, naming the actor, and recording the job and its
    // audit line are on the path of every command's latency.
    let (job, actor_name, targets) = ctx
        .store
        .call(move |c| {
            let targets = resolve_on(c, &sel, &registry)?;
            let actor_name = match who_id {
                Some(id) => store::identities::get(c, &id)?
                    .map(|r| r.name)
                    .unwrap_or_else(|| who.clone()),
                None => who.clone(),
            };
            let new = NewJob {
                actor: who,
                actor_name: actor_name.clone(),
                selector,
                command,
                timeout_ms,
                batch,
                started_ms,
            };
            let list: Vec<Target> = targets.iter().map(|(t, _)| t.clone()).collect();
            let online = list.iter().filter(|t| t.online).count();
            let detail = format!(
                "selector={} agents={} online={online} timeout_ms={} batch={} command={}",
                new.selector,
                list.len(),
                new.timeout_ms,
                new.batch,
                new.command.display()
            );
            let tx = c.transaction()?;
            let job = store::jobs::insert(&tx, &new, &list)?;
            store::audit::append(
                &tx,
                new.started_ms,
                &new.actor,
                &action,
                &format!("job:{job}"),
                &detail,
            )?;
            tx.commit()?;
            Ok((job, actor_name, targets))
        })
        .await?;
    Ok(Prepared {
        job,
        req,
        selector_kept,
        targets: targets
            .into_iter()
            .map(|(target, last_seen_ms)| Planned {
                target,
                last_seen_ms,
            })
            .collect(),
        actor: actor.clone(),
        actor_name,
        accepted_at: Instant::now(),
    })
}

/// Serves one operator exec stream: reads the request, refuses it or runs the job to its end.
pub(crate) async fn serve_exec(
    ctx: Arc<HubCtx>,
    actor: Actor,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    cancel: CancellationToken,
) {
    let req = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_frame::<ExecRequest, _>(&mut recv, MAX_EXEC_REQUEST_FRAME),
    )
    .await
    {
        Ok(Ok(Some(req))) => req,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "bad exec request");
            let code = frame_error_code(&e);
            let _ = send.reset(code.as_u32().into());
            let _ = recv.stop(code.as_u32().into());
            return;
        }
        Err(_) => {
            let _ = send.reset(ErrorCode::Timeout.as_u32().into());
            return;
        }
    };
    let prepared = match prepare(&ctx, &actor, req).await {
        Ok(p) => p,
        Err(err) => {
            if !matches!(err, HubError::Refused { .. }) {
                tracing::error!(actor = %actor.name, error = %err, "exec request failed");
            } else {
                tracing::info!(actor = %actor.name, reason = ?err.to_string(), "exec refused");
            }
            let refusal: Refusal = err.to_refusal();
            let _ = write_frame(&mut send, &ExecEvent::Refused(refusal), MAX_EXEC_FRAME).await;
            let _ = send.finish();
            return;
        }
    };
    ctx.stats.exec_job_started();
    let handle = ctx
        .jobs
        .tracker
        .spawn(job::run(ctx.clone(), prepared, send, recv, cancel));
    if let Err(e) = handle.await
        && e.is_panic()
    {
        tracing::error!(error = %e, "job task panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(argv: &[&str]) -> ExecRequest {
        ExecRequest {
            selector: "all".into(),
            command: ExecCommand::Argv {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                shell: false,
            },
            timeout_ms: 0,
            batch: 0,
        }
    }

    fn message(r: Result<(), HubError>) -> String {
        match r {
            Err(HubError::Refused { code, message }) => {
                assert_eq!(code, ErrorCode::BadRequest);
                message
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn long_selectors_are_kept_as_their_first_whole_terms_and_a_count() {
        assert_eq!(selector_summary("web-1,db-*"), "web-1,db-*");
        // Multi-byte names: the cut lands on a character boundary, then on a comma.
        let long = vec!["lösung-ü"; 200].join(",");
        let kept = selector_summary(&long);
        assert!(kept.len() <= SELECTOR_KEPT + 40, "{kept}");
        let (head, tail) = kept.split_once(",…").expect("marker");
        assert!(head.split(',').all(|t| t == "lösung-ü"), "{head}");
        assert_eq!(tail, format!(" (200 terms, {} bytes)", long.len()));
    }

    #[test]
    fn requests_are_checked_before_anything_runs() {
        assert!(validate(&req(&["true"])).is_ok());
        assert_eq!(
            message(validate(&req(&[]))),
            "empty command: give a program after --"
        );
        assert_eq!(message(validate(&req(&[""]))), "empty program name");
        assert_eq!(
            message(validate(&req(&["echo", "a\0b"]))),
            "argument 1 contains a NUL byte"
        );
        let big = "x".repeat(MAX_COMMAND_BYTES);
        assert!(message(validate(&req(&["echo", &big]))).contains("exceeds the 65536-byte limit"));
        let mut wide = req(&["true"]);
        wide.selector = "a,".repeat(MAX_SELECTOR_BYTES / 2 + 1);
        assert!(message(validate(&wide)).contains("select by label or name glob instead"));
        let mut long = req(&["sleep", "1"]);
        long.timeout_ms = MAX_TIMEOUT_MS + 1;
        assert!(message(validate(&long)).contains("exceeds the 604800 s limit"));
    }

    #[test]
    fn workload_actions_are_checked_and_audited_by_what_they_do() {
        use flotilla_wire::workloads::{ComposeAction, ContainerAction, ServiceAction};
        let with = |command: ExecCommand| ExecRequest {
            command,
            ..req(&["true"])
        };
        let stop = |names: &[&str]| ExecCommand::Container {
            action: ContainerAction::Stop,
            containers: names.iter().map(|s| s.to_string()).collect(),
            stop_timeout_s: None,
        };
        assert!(validate(&with(stop(&["web", "3f2a"]))).is_ok());
        assert_eq!(audit_action(&stop(&["web"])), "container.stop");
        assert_eq!(
            message(validate(&with(stop(&[])))),
            "no container named: give at least one"
        );
        assert!(
            message(validate(&with(stop(&["../etc"]))))
                .starts_with("\"../etc\" is not a container name")
        );
        assert!(message(validate(&with(stop(&["-f"])))).contains("not starting with '-'"));
        assert!(message(validate(&with(stop(&["a\u{1b}[2J"])))).contains("\\u{1b}"));
        let restart = ExecCommand::Service {
            action: ServiceAction::Restart,
            units: vec!["nginx.service".into()],
        };
        assert!(validate(&with(restart.clone())).is_ok());
        assert_eq!(audit_action(&restart), "service.restart");
        let bad_unit = ExecCommand::Service {
            action: ServiceAction::Stop,
            units: vec!["a/b.service".into()],
        };
        assert!(message(validate(&with(bad_unit))).contains("is not a unit name"));
        let up = |project: &str| ExecCommand::Compose {
            action: ComposeAction::Up,
            project: project.into(),
        };
        assert!(validate(&with(up("shop"))).is_ok());
        assert_eq!(audit_action(&up("shop")), "compose.up");
        assert!(message(validate(&with(up("../etc")))).contains("is not a compose project"));
        assert_eq!(audit_action(&req(&["true"]).command), "exec");
    }

    /// Reading only what names, ids, glob starts and labels find picks the same agents, and fails
    /// on the same terms, as reading the whole fleet.
    #[test]
    fn indexed_lookups_pick_what_the_whole_fleet_would() {
        use flotilla_wire::Role;
        let mut c = rusqlite::Connection::open_in_memory().expect("open");
        store::migrate::migrate(&mut c).expect("migrate");
        let names = [
            "web-1", "web-2", "web-10", "web", "webx", "db-1", "db-2", "cache-eu", "cache-us",
        ];
        let mut ids = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let id = IdentityId::from_random(Role::Agent, [i as u8 + 1; 8]);
            let env = if i % 2 == 0 { "prod" } else { "staging" };
            let row = store::IdentityRow {
                id: id.clone(),
                role: Role::Agent,
                name: name.to_string(),
                labels: [("env".to_string(), env.to_string())].into_iter().collect(),
                token_id: "t".into(),
                first_seen_ms: 1,
                last_seen_ms: 2,
                version: String::new(),
                os: String::new(),
                hostname: String::new(),
                addr: String::new(),
                revoked_ms: None,
            };
            store::identities::insert(&c, &row).expect("insert");
            ids.push(id);
        }
        assert!(store::identities::revoke(&c, &ids[1], 3).expect("revoke web-2"));
        let registry = crate::registry::Registry::new(1000);
        let selectors = [
            "web-1".to_string(),
            "web-*".into(),
            "web*".into(),
            "web-?".into(),
            "web-1?".into(),
            "web-2".into(),
            "web-2*".into(),
            "we?-1".into(),
            "db-*+env=prod".into(),
            "db-*+env=nope".into(),
            "cache-*,web-1".into(),
            "c*-e?+env=prod".into(),
            "web-1+db-1".into(),
            "nosuch-*".into(),
            format!("{},db-?", ids[5]),
            format!("{}", ids[1]),
            "all".into(),
            "env=prod".into(),
            "env=prod+*-1".into(),
            "env=staging,web-1".into(),
            "env=qa".into(),
            "*-1+env=staging".into(),
            "env=prod,env=staging,env=qa".into(),
            "env=prod,env=staging,web-1".into(),
        ];
        for text in selectors {
            let sel = Selector::parse(&text).expect("parse");
            let picked = |r: Result<Vec<(Target, u64)>, HubError>| {
                r.map(|v| v.into_iter().map(|(t, _)| t.name).collect::<Vec<_>>())
                    .map_err(|e| e.to_string())
            };
            let indexed = picked(resolve_on(&mut c, &sel, &registry));
            let live = store::identities::live_agents(&c).expect("list");
            let whole = sel
                .resolve(&live)
                .map(|v| v.into_iter().map(|r| r.name.clone()).collect::<Vec<_>>())
                .map_err(|e| e.to_string());
            match (&indexed, &whole) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
                (Err(a), Err(b)) => assert!(a.contains(b.as_str()), "{text}: {a} vs {b}"),
                _ => panic!("{text}: {indexed:?} vs {whole:?}"),
            }
        }
    }
}
