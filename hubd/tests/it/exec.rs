//! Exec end to end: a real hub, real agents and the console's own exec code over QUIC, mutual TLS
//! and SQLite on loopback. Commands are real processes.

use crate::harness::exec::{
    AgentSpec, DEADLINE, exec_events, exec_fleet, exec_text, job_of, last_of, process_gone, query,
};
use agentd::{AgentConfig, ExecMode};
use flotilla_wire::exec::{
    AgentEvent, Builtin, ExecCommand, ExecEvent, ExecRequest, FailureKind, Outcome, OutputStream,
    Query, QueryReply,
};
use flotilla_wire::{ErrorCode, Role};
use std::collections::HashMap;

fn argv(selector: &str, words: &[&str]) -> ExecRequest {
    ExecRequest {
        selector: selector.into(),
        command: ExecCommand::Argv {
            argv: words.iter().map(|s| s.to_string()).collect(),
            shell: false,
        },
        timeout_ms: 0,
        batch: 0,
    }
}

fn shell(selector: &str, script: &str) -> ExecRequest {
    ExecRequest {
        selector: selector.into(),
        command: ExecCommand::Argv {
            argv: vec![script.into()],
            shell: true,
        },
        timeout_ms: 0,
        batch: 0,
    }
}

/// An `any` agent whose working directory holds `files`, so one job can behave differently per
/// agent (`exit $(cat code)`).
fn agent_with_files(fleet_tmp: &std::path::Path, name: &str, files: &[(&str, &str)]) -> AgentSpec {
    let dir = fleet_tmp.join(format!("{name}-work"));
    std::fs::create_dir_all(&dir).expect("workdir");
    for (f, content) in files {
        std::fs::write(dir.join(f), content).expect("write");
    }
    let mut spec = AgentSpec::any(name);
    spec.config.workdir = Some(dir);
    spec
}

fn stdout_of(events: &[ExecEvent], agent: &flotilla_wire::IdentityId) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            ExecEvent::Agent {
                agent: a,
                event:
                    AgentEvent::Output {
                        stream: OutputStream::Stdout,
                        data,
                    },
            } if a == agent => Some(String::from_utf8_lossy(&data.0).into_owned()),
            _ => None,
        })
        .collect()
}

fn refusal(events: &[ExecEvent]) -> &flotilla_wire::msg::Refusal {
    match events.last() {
        Some(ExecEvent::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_prefixed_ordered_and_exit_codes_summarised() {
    let work = tempfile::tempdir().expect("tmp");
    let fleet = exec_fleet(vec![
        agent_with_files(work.path(), "web-1", &[("code", "0")]),
        agent_with_files(work.path(), "web-22", &[("code", "3")]),
        agent_with_files(work.path(), "db-1", &[("code", "0")]),
    ])
    .await;
    let admin = fleet.admin_client().await;
    let script = "seq 1 300; echo to-stderr >&2; printf no-newline; exit $(cat code)";
    let (status, out, err) = exec_text(&admin, &shell("all", script)).await;
    assert_eq!(status, 1, "one agent exited 3");

    // Every stdout line is one agent's whole line, prefixed and aligned to the longest name.
    let mut per_agent: HashMap<&str, Vec<&str>> = HashMap::new();
    for line in out.lines() {
        let (prefix, text) = line.split_once(" | ").expect("prefixed");
        assert_eq!(prefix.len(), "web-22".len(), "aligned: {line:?}");
        per_agent.entry(prefix.trim_end()).or_default().push(text);
    }
    let mut expected: Vec<String> = (1..=300).map(|n| n.to_string()).collect();
    expected.push("no-newline".into());
    for name in ["web-1", "web-22", "db-1"] {
        assert_eq!(
            per_agent[name], expected,
            "{name}'s lines in order, none split"
        );
    }
    // Standard error stays apart, then the summary.
    for name in ["web-1 ", "web-22", "db-1  "] {
        assert!(err.contains(&format!("{name} | to-stderr\n")), "{err}");
        assert!(!out.contains("to-stderr"));
    }
    assert!(err.contains("web-22 | ! exit 3\n"), "{err}");
    assert!(
        err.contains("3 agents, 2 succeeded, 1 failed, 0 timed out, 0 unreachable"),
        "{err}"
    );
    let summary: Vec<&str> = err.lines().skip_while(|l| !l.starts_with("job ")).collect();
    assert!(summary[1].starts_with("  db-1    exit 0 "), "{summary:?}");
    assert!(summary[3].starts_with("  web-22  exit 3 "), "{summary:?}");

    let (status, out, _) = exec_text(&admin, &argv("web-*", &["true"])).await;
    assert_eq!((status, out.as_str()), (0, ""), "all exited 0: status 0");

    // What the Prometheus endpoint exports: two jobs, five runs, output bytes both ways.
    use hubd::stats::{Direction, StreamKind};
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &fleet.ctx().stats;
    assert_eq!(stats.exec_jobs_started.load(Relaxed), 2);
    assert_eq!(stats.exec_runs_started.load(Relaxed), 5);
    assert_eq!(stats.exec_runs_finished.load(Relaxed), 5);
    for dir in [Direction::In, Direction::Out] {
        assert!(
            stats.traffic.bytes(StreamKind::Exec, dir) > 300 * 3,
            "{dir:?}"
        );
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_pick_agents_and_typos_run_nothing() {
    let fleet = exec_fleet(vec![
        AgentSpec::any("web-1")
            .label("env", "prod")
            .label("role", "web"),
        AgentSpec::any("web-2")
            .label("env", "staging")
            .label("role", "web"),
        AgentSpec::any("db-1")
            .label("env", "prod")
            .label("role", "db"),
    ])
    .await;
    let admin = fleet.admin_client().await;
    let names = |events: &[ExecEvent]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                ExecEvent::Targets(t) => Some(t.iter().map(|t| t.name.clone()).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let events = exec_events(&admin, &argv("env=prod+role=db", &["true"])).await;
    assert_eq!(names(&events), ["db-1"]);
    let events = exec_events(&admin, &argv("web-*,env=prod", &["true"])).await;
    assert_eq!(names(&events), ["db-1", "web-1", "web-2"]);
    let id = fleet.agent("web-2").id.to_string();
    let events = exec_events(&admin, &argv(&id, &["true"])).await;
    assert_eq!(names(&events), ["web-2"]);
    // Exact names and ids (looked up, not listed) come back sorted by name, each once.
    let events = exec_events(&admin, &argv(&format!("web-2,db-1,{id}"), &["true"])).await;
    assert_eq!(names(&events), ["db-1", "web-2"]);
    // A console selection of thousands of marked agents is a selector of thousands of ids, past
    // an ordinary exec frame's 128 KiB: it runs, and the job record and audit keep a summary.
    let many = vec![id.as_str(); 8000].join(",");
    assert!(many.len() > 128 * 1024, "{} bytes", many.len());
    let events = exec_events(&admin, &argv(&many, &["true"])).await;
    assert_eq!(names(&events), ["web-2"]);
    let job = events
        .iter()
        .find_map(|e| match e {
            ExecEvent::Accepted { job, .. } => Some(*job),
            _ => None,
        })
        .expect("accepted");
    let replies = query(&admin, Query::Job { job }).await.expect("job");
    let Some(QueryReply::Job(info)) = replies.first() else {
        panic!("no job record: {replies:?}");
    };
    assert!(
        info.selector.len() <= 600,
        "{} bytes kept",
        info.selector.len()
    );
    assert!(info.selector.starts_with(&format!("{id},{id},")));
    assert!(
        info.selector
            .ends_with(&format!(",… (8000 terms, {} bytes)", many.len())),
        "{}",
        info.selector
    );
    let replies = query(&admin, Query::Audit { limit: 20 })
        .await
        .expect("audit");
    let detail = replies
        .iter()
        .find_map(|r| match r {
            QueryReply::Audit(e) if e.target == format!("job:{job}") => Some(e.detail.clone()),
            _ => None,
        })
        .expect("audit record of the job");
    assert!(
        detail.contains("(8000 terms,") && detail.len() < 1024,
        "{detail}"
    );

    let before = query(&admin, Query::Jobs { limit: 100 })
        .await
        .expect("jobs")
        .len();
    let events = exec_events(&admin, &argv("web-1,wbe-2", &["touch", "/tmp/never"])).await;
    let r = refusal(&events);
    assert_eq!(r.code, ErrorCode::NotFound);
    assert_eq!(
        r.message,
        "no agent named \"wbe-2\" (see `flotilla agents`)"
    );
    let events = exec_events(&admin, &argv("env=qa", &["true"])).await;
    assert_eq!(
        refusal(&events).message,
        "selector term \"env=qa\" matches no agent"
    );
    let events = exec_events(&admin, &argv("web-1,,db-1", &["true"])).await;
    assert_eq!(refusal(&events).code, ErrorCode::BadRequest);
    let after = query(&admin, Query::Jobs { limit: 100 })
        .await
        .expect("jobs")
        .len();
    assert_eq!(before, after, "no job was created for a bad selector");

    let (status, _, err) = exec_text(&admin, &argv("nosuch", &["true"])).await;
    assert_eq!(status, flotilla::exec::EXIT_USAGE);
    assert_eq!(
        err,
        "flotilla: no agent named \"nosuch\" (see `flotilla agents`)\n"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_process_group() {
    let fleet = exec_fleet(vec![AgentSpec::any("web-1")]).await;
    let admin = fleet.admin_client().await;
    let mut req = shell("web-1", "sleep 100 & echo $!; exec sleep 200");
    req.timeout_ms = 1000;
    let events = exec_events(&admin, &req).await;
    let agent = &fleet.agent("web-1").id;
    match last_of(&events, agent) {
        AgentEvent::Exited(r) => {
            assert!(r.timed_out, "{r:?}");
            assert_eq!(r.signal, Some(libc::SIGTERM));
        }
        other => panic!("{other:?}"),
    }
    let grandchild: i32 = stdout_of(&events, agent).trim().parse().expect("pid");
    assert!(
        process_gone(grandchild).await,
        "grandchild {grandchild} survived the timeout"
    );
    match events.last() {
        Some(ExecEvent::Done(s)) => assert_eq!(s.counts.timed_out, 1),
        other => panic!("{other:?}"),
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_grandchildren_and_is_audited() {
    let fleet = exec_fleet(vec![AgentSpec::any("web-1"), AgentSpec::any("web-2")]).await;
    let admin = fleet.admin_client().await;
    let agent = fleet.agent("web-1").id.clone();
    let mut session = flotilla::exec::ExecSession::open(
        &admin,
        &shell(
            "all",
            "sleep 100 & echo $!; trap '' TERM; while :; do sleep 1; done",
        ),
    )
    .await
    .expect("exec");
    let mut events = Vec::new();
    let mut cancelled = false;
    tokio::time::timeout(DEADLINE, async {
        while let Some(ev) = session.next().await {
            let ev = ev.expect("event");
            let done = matches!(ev, ExecEvent::Done(_));
            events.push(ev);
            // Cancel (Ctrl-C) once both agents printed their grandchild's pid.
            let printed = events
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        ExecEvent::Agent {
                            event: AgentEvent::Output { .. },
                            ..
                        }
                    )
                })
                .count();
            if printed >= 2 && !cancelled {
                session.cancel().await;
                cancelled = true;
            }
            if done {
                return;
            }
        }
    })
    .await
    .expect("job ends after the cancel");
    match last_of(&events, &agent) {
        AgentEvent::Exited(r) => {
            assert!(r.cancelled, "{r:?}");
            assert_eq!(
                r.signal,
                Some(libc::SIGKILL),
                "TERM ignored: killed after the grace"
            );
        }
        other => panic!("{other:?}"),
    }
    let grandchild: i32 = stdout_of(&events, &agent).trim().parse().expect("pid");
    assert!(
        process_gone(grandchild).await,
        "grandchild {grandchild} survived the cancel"
    );
    let job = job_of(&events);
    let audit = query(&admin, Query::Audit { limit: 20 })
        .await
        .expect("audit");
    let target = format!("job:{job}");
    let actions: Vec<(String, String)> = audit
        .into_iter()
        .filter_map(|r| match r {
            QueryReply::Audit(e) if e.target == target => Some((e.action, e.detail)),
            _ => None,
        })
        .collect();
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(actions[0].0, "exec");
    assert!(
        actions[0].1.starts_with("selector=all agents=2 online=2"),
        "{actions:?}"
    );
    assert_eq!(actions[1], ("exec.cancel".into(), "reason=operator".into()));
    let jobs = query(&admin, Query::Job { job }).await.expect("job");
    match &jobs[0] {
        QueryReply::Job(info) => {
            assert_eq!(info.cancelled_by.as_deref(), Some("operator"));
            assert_eq!(info.counts.cancelled, 2);
        }
        other => panic!("{other:?}"),
    }

    // Ctrl-C through the console path: status 130.
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    tx.send(()).await.expect("interrupt");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = tokio::time::timeout(
        DEADLINE,
        flotilla::exec::run_exec(
            &admin,
            &argv("all", &["sleep", "100"]),
            flotilla::exec::RenderOptions::default(),
            &mut out,
            &mut err,
            flotilla::exec::Interrupts::Channel(&mut rx),
        ),
    )
    .await
    .expect("cancelled in time")
    .expect("ran");
    assert_eq!(status, flotilla::exec::EXIT_INTERRUPTED);
    assert!(String::from_utf8_lossy(&err).contains("cancelling job"));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_lost_mid_run_is_reported_at_once() {
    let mut fleet = exec_fleet(vec![AgentSpec::any("web-1"), AgentSpec::any("web-2")]).await;
    let admin = fleet.admin_client().await;
    let lost = fleet.agent("web-1").id.clone();
    let other = fleet.agent("web-2").id.clone();
    let mut session = flotilla::exec::ExecSession::open(&admin, &argv("all", &["sleep", "100"]))
        .await
        .expect("exec");
    let mut started = HashMap::new();
    let mut lost_event = None;
    tokio::time::timeout(DEADLINE, async {
        while let Some(ev) = session.next().await {
            if let ExecEvent::Agent { agent, event } = ev.expect("event") {
                match event {
                    AgentEvent::Started { pid } => {
                        started.insert(agent, pid);
                        if started.len() == 2 {
                            fleet.stop_agent("web-1").await;
                        }
                    }
                    AgentEvent::Failed(f) if agent == lost => {
                        lost_event = Some(f);
                        return;
                    }
                    other => panic!("unexpected {other:?} while web-2 still sleeps"),
                }
            }
        }
    })
    .await
    .expect("loss reported while the other agent still runs");
    let f = lost_event.expect("lost");
    assert_eq!(f.kind, FailureKind::Lost);
    assert_eq!(f.message, "connection lost mid-run: agent shut down");
    assert!(
        process_gone(started[&lost] as i32).await,
        "the lost agent's command was killed"
    );
    session.cancel().await;
    let mut last = None;
    tokio::time::timeout(DEADLINE, async {
        while let Some(ev) = session.next().await {
            match ev.expect("event") {
                ExecEvent::Agent { agent, event } if agent == other => last = Some(event),
                ExecEvent::Done(s) => {
                    assert_eq!((s.counts.unreachable, s.counts.cancelled), (1, 1));
                    return;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("job ends");
    assert!(matches!(last, Some(AgentEvent::Exited(r)) if r.cancelled));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_agents_are_unreachable_at_once_and_ping_says_so() {
    let mut fleet = exec_fleet(vec![AgentSpec::any("web-1"), AgentSpec::any("web-2")]).await;
    fleet.stop_agent("web-2").await;
    let admin = fleet.admin_client().await;
    let events = exec_events(&admin, &argv("all", &["true"])).await;
    match last_of(&events, &fleet.agent("web-2").id) {
        AgentEvent::Failed(f) => {
            assert_eq!(f.kind, FailureKind::Unreachable);
            assert!(
                f.message.starts_with("offline (last seen "),
                "{}",
                f.message
            );
        }
        other => panic!("{other:?}"),
    }
    let first_final = events
        .iter()
        .find_map(|e| match e {
            ExecEvent::Agent { agent, event } if Outcome::of_event(event).is_some() => Some(agent),
            _ => None,
        })
        .expect("a final event");
    assert_eq!(
        first_final,
        &fleet.agent("web-2").id,
        "the offline one is reported first"
    );

    let pings = query(
        &admin,
        Query::Ping {
            selector: "all".into(),
        },
    )
    .await
    .expect("ping");
    let pings: HashMap<String, _> = pings
        .into_iter()
        .filter_map(|r| match r {
            QueryReply::Ping(p) => Some((p.name.clone(), p)),
            _ => None,
        })
        .collect();
    assert!(pings["web-1"].rtt_us.is_some());
    assert!(
        pings["web-1"]
            .clock_offset_ms
            .is_some_and(|o| o.abs() < 5_000)
    );
    assert_eq!(pings["web-2"].error, "offline");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_run_one_after_another() {
    let fleet = exec_fleet(vec![
        AgentSpec::any("a-1"),
        AgentSpec::any("a-2"),
        AgentSpec::any("a-3"),
    ])
    .await;
    let admin = fleet.admin_client().await;
    let mut req = argv("all", &["true"]);
    req.batch = 1;
    let events = exec_events(&admin, &req).await;
    let mut running = 0;
    for e in &events {
        if let ExecEvent::Agent { event, .. } = e {
            match event {
                AgentEvent::Started { .. } => {
                    running += 1;
                    assert_eq!(running, 1, "batch 1: one agent at a time");
                }
                AgentEvent::Exited(_) => running -= 1,
                _ => {}
            }
        }
    }
    match events.last() {
        Some(ExecEvent::Done(s)) => assert_eq!(s.counts.succeeded, 3),
        other => panic!("{other:?}"),
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_policy_refuses_with_the_policy_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let scripts = tmp.path().join("scripts");
    std::fs::create_dir_all(&scripts).expect("scripts");
    let hello = scripts.join("hello.sh");
    std::fs::write(&hello, "#!/bin/sh\necho hello from a script\n").expect("script");
    std::fs::set_permissions(&hello, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let outside = tmp.path().join("outside.sh");
    std::fs::write(&outside, "#!/bin/sh\necho escaped\n").expect("outside");
    std::fs::set_permissions(
        &outside,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    std::os::unix::fs::symlink(&outside, scripts.join("evil.sh")).expect("symlink");
    let allowlist = AgentConfig {
        exec: ExecMode::Allowlist,
        allowlist: vec!["/bin/echo".into()],
        scripts_dir: Some(scripts.clone()),
        ..AgentConfig::default()
    };
    let fleet = exec_fleet(vec![
        AgentSpec::any("off-1").config(AgentConfig::default()),
        AgentSpec::any("list-1").config(allowlist),
    ])
    .await;
    let admin = fleet.admin_client().await;
    let off = fleet.agent("off-1").id.clone();
    let list = fleet.agent("list-1").id.clone();
    let refused = |events: &[ExecEvent], agent| match last_of(events, agent) {
        AgentEvent::Failed(f) if f.kind == FailureKind::Refused => f.message.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    };

    let events = exec_events(&admin, &argv("off-1", &["/bin/echo", "hi"])).await;
    assert_eq!(
        refused(&events, &off),
        "refused by this agent's exec policy (exec = \"off\"): enable it with exec = \"allowlist\" or \"any\" in agent.toml, or agentd run --exec"
    );
    let events = exec_events(&admin, &argv("list-1", &["/bin/cat", "/etc/passwd"])).await;
    assert_eq!(
        refused(&events, &list),
        "refused by this agent's exec policy (exec = \"allowlist\"): /bin/cat is not in the allowlist or the scripts directory"
    );
    let events = exec_events(&admin, &argv("list-1", &["../outside.sh"])).await;
    assert!(refused(&events, &list).contains("'.' and '..' are refused"));
    let events = exec_events(&admin, &argv("list-1", &["evil.sh"])).await;
    assert!(refused(&events, &list).contains("outside the scripts directory"));
    let events = exec_events(&admin, &shell("list-1", "/bin/echo hi")).await;
    assert!(refused(&events, &list).contains("shell commands need exec = \"any\""));
    match events.last() {
        Some(ExecEvent::Done(s)) => assert_eq!(s.counts.refused, 1),
        other => panic!("{other:?}"),
    }

    let events = exec_events(&admin, &argv("list-1", &["hello.sh"])).await;
    assert_eq!(stdout_of(&events, &list), "hello from a script\n");
    let events = exec_events(&admin, &argv("list-1", &["echo", "allowed"])).await;
    assert_eq!(stdout_of(&events, &list), "allowed\n");

    // The health built-in runs whatever the policy.
    let health = ExecRequest {
        selector: "all".into(),
        command: ExecCommand::Builtin(Builtin::Health),
        timeout_ms: 0,
        batch: 0,
    };
    let events = exec_events(&admin, &health).await;
    for agent in [&off, &list] {
        let text = stdout_of(&events, agent);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            ["healthy", "degraded", "unhealthy"].contains(&first),
            "{text}"
        );
        assert!(text.contains("connection"), "{text}");
        assert!(text.contains("clock"), "{text}");
        assert!(matches!(last_of(&events, agent), AgentEvent::Exited(r) if r.code.is_some()));
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_cannot_exec_or_read_jobs() {
    let fleet = exec_fleet(vec![AgentSpec::any("web-1")]).await;
    let viewer = fleet.client_as(Role::Viewer, "vera").await;
    let events = exec_events(&viewer, &argv("all", &["touch", "/tmp/viewer-was-here"])).await;
    let r = refusal(&events);
    assert_eq!(r.code, ErrorCode::Forbidden);
    assert_eq!(r.message, "exec needs the operator role; you are viewer");
    assert_eq!(events.len(), 1, "nothing ran");
    let (status, _, err) = exec_text(&viewer, &argv("all", &["true"])).await;
    assert_eq!(status, 1);
    assert!(err.contains("exec needs the operator role"), "{err}");
    for q in [Query::Jobs { limit: 5 }, Query::Audit { limit: 5 }] {
        match query(&viewer, q).await {
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::Forbidden)),
            Ok(r) => panic!("viewer read {r:?}"),
        }
    }
    let pings = query(
        &viewer,
        Query::Ping {
            selector: "all".into(),
        },
    )
    .await
    .expect("viewers may ping");
    assert_eq!(pings.len(), 1);

    let admin = fleet.admin_client().await;
    let audit = query(&admin, Query::Audit { limit: 50 })
        .await
        .expect("audit");
    let denied: Vec<_> = audit
        .iter()
        .filter_map(|r| match r {
            QueryReply::Audit(e) if e.action == "exec.denied" => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(denied.len(), 2, "{audit:?}");
    assert!(
        denied[0]
            .detail
            .contains("role=viewer command=touch /tmp/viewer-was-here")
    );
    assert!(
        query(&admin, Query::Jobs { limit: 5 })
            .await
            .expect("jobs")
            .is_empty()
    );

    let operator = fleet.client_as(Role::Operator, "otto").await;
    let (status, _, _) = exec_text(&operator, &argv("all", &["true"])).await;
    assert_eq!(status, 0, "operators may exec");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_record_who_ran_what_with_output_tails() {
    let work = tempfile::tempdir().expect("tmp");
    let fleet = exec_fleet(vec![
        agent_with_files(work.path(), "web-1", &[("code", "0")]),
        agent_with_files(work.path(), "web-2", &[("code", "4")]),
    ])
    .await;
    let admin = fleet.admin_client().await;
    let events = exec_events(
        &admin,
        &shell(
            "web-*",
            "head -c 100000 /dev/zero | tr '\\0' x; echo; echo done >&2; exit $(cat code)",
        ),
    )
    .await;
    let job = job_of(&events);
    let jobs = query(&admin, Query::Jobs { limit: 10 })
        .await
        .expect("jobs");
    let QueryReply::Job(listed) = &jobs[0] else {
        panic!("{jobs:?}")
    };
    assert_eq!(listed.job, job);
    assert_eq!(listed.actor_name, "admin");
    assert_eq!(listed.selector, "web-*");
    assert_eq!(
        (
            listed.targets,
            listed.counts.succeeded,
            listed.counts.failed
        ),
        (2, 1, 1)
    );
    assert!(listed.ended_ms.is_some());

    let replies = query(&admin, Query::Job { job }).await.expect("job");
    let (info, results) = flotilla::exec::split_job(replies).expect("job and results");
    assert_eq!(&info, listed);
    assert_eq!(results.len(), 2);
    let r2 = &results[1];
    assert_eq!(
        (r2.name.as_str(), r2.outcome, r2.code),
        ("web-2", Outcome::Exited, Some(4))
    );
    assert_eq!(r2.stdout_bytes, 100_001);
    assert_eq!(
        r2.stdout_tail.0.len(),
        flotilla_wire::exec::OUTPUT_TAIL,
        "the last 64 KiB"
    );
    assert!(r2.stdout_tail.0.ends_with(b"xx\n"));
    assert_eq!(r2.stderr_tail.0, b"done\n");
    assert!(r2.started_ms.is_some() && r2.duration_ms.is_some());
    let text = flotilla::exec::job_detail(&info, &results);
    assert!(text.contains("results:   1 succeeded, 1 failed"), "{text}");
    assert!(
        text.contains("--- web-2 stdout, last 65536 of 100001 bytes"),
        "{text}"
    );

    match query(
        &admin,
        Query::Job {
            job: flotilla_wire::exec::JobId(9999),
        },
    )
    .await
    {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::NotFound)),
        Ok(r) => panic!("{r:?}"),
    }
    fleet.shutdown().await;
}
