//! Containers end to end: a private Podman answering the Docker Engine API, a real hub and agents,
//! and the `flotilla` binary: inventory and stats from the engine, logs tail and follow through
//! the hub's relay, every action as a job, policies and roles refusing, an engine restarted under
//! the agent, and compose projects.

use crate::harness::binaries::{Daemon, code, stderr};
use crate::harness::exec::exec_events;
use crate::harness::flotilla_bin;
use crate::harness::podman::{IMAGE, Podman};
use crate::harness::{AgentSpec, DEADLINE, Fleet, agentd_bin, run_cmd, run_json, within};
use agentd::AgentConfig;
use agentd::config::{Access, ComposeMode};
use agentd::workloads::{
    ContainerSource, Differ, Engine, Inventory, StatsApi, WorkloadSettings, Workloads,
};
use flotilla_wire::Role;
use flotilla_wire::exec::{AgentEvent, ExecCommand, ExecEvent, ExecRequest, FailureKind};
use flotilla_wire::workloads::{Access as WireAccess, ComposeAction, ContainerState, SourceState};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs `flotilla --no-mux --login-dir DIR args…`; returns (exit code, stdout, stderr).
async fn flotilla_as(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--no-mux", "--login-dir", dir.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let out = run_cmd(&flotilla_bin(), &all).await;
    (
        code(&out),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

async fn flotilla(fleet: &Fleet, args: &[&str]) -> (i32, String, String) {
    flotilla_as(&fleet.admin_login().dir, args).await
}

/// Longest a compose job may take here: it runs a compose tool, which starts `podman` commands
/// or talks to the engine, several seconds each on a busy two-core machine.
const COMPOSE_DEADLINE: Duration = Duration::from_secs(120);

/// `flotilla compose …` as the admin, with [`COMPOSE_DEADLINE`].
async fn compose(fleet: &Fleet, args: &[&str]) -> (i32, String, String) {
    let dir = fleet.admin_login().dir.clone();
    let out = within(
        COMPOSE_DEADLINE,
        &format!("flotilla compose {}", args.join(" ")),
        tokio::process::Command::new(flotilla_bin())
            .args([
                "--no-mux",
                "--login-dir",
                dir.to_str().expect("utf-8"),
                "compose",
            ])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("flotilla compose runs");
    (
        code(&out),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

/// An agent that reaches `podman`'s engine with `containers` access.
fn agent(name: &str, podman: &Podman, containers: Access) -> AgentSpec {
    AgentSpec::new(name).config(AgentConfig {
        containers,
        containers_socket: Some(podman.socket.clone()),
        ..AgentConfig::default()
    })
}

/// The poller over `podman`'s engine, publishing every second.
fn poller(
    podman: &Podman,
) -> (
    tokio::sync::watch::Receiver<Option<Arc<Inventory>>>,
    tokio_util::sync::CancellationToken,
) {
    let settings = WorkloadSettings {
        containers: WireAccess::Read,
        engine_sockets: vec![podman.socket.clone()],
        ..WorkloadSettings::default()
    };
    let (_interval_tx, interval_rx) = tokio::sync::watch::channel(1000u32);
    let (tx, rx) = tokio::sync::watch::channel(None);
    let cancel = tokio_util::sync::CancellationToken::new();
    let w = Arc::new(Workloads::new(settings));
    let c = cancel.clone();
    tokio::spawn(async move {
        let _keep = _interval_tx;
        agentd::workloads::run(w, interval_rx, tx, c).await;
    });
    (rx, cancel)
}

/// Waits for an inventory that satisfies `ok`.
async fn inventory_until(
    rx: &mut tokio::sync::watch::Receiver<Option<Arc<Inventory>>>,
    what: &str,
    ok: impl Fn(&Inventory) -> bool,
) -> Arc<Inventory> {
    within(Duration::from_secs(30), what, async {
        loop {
            if let Some(inv) = rx.borrow_and_update().clone()
                && ok(&inv)
            {
                return inv;
            }
            rx.changed().await.expect("poller runs");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_and_stats_come_from_the_engine() {
    let podman = Podman::start().await;
    let burner = podman.container("burner", "while :; do :; done").await;
    let quiet = podman.container("quiet", "true").await;
    podman.wait_state("quiet", Some("exited")).await;
    let (mut rx, cancel) = poller(&podman);
    let inv = inventory_until(&mut rx, "the burner shows CPU", |inv| {
        inv.container_stats
            .iter()
            .any(|s| s.id == burner && s.cpu_pct > 20.0)
    })
    .await;
    assert!(
        matches!(&inv.engine, SourceState::Up { name, .. } if name == "podman"),
        "{:?}",
        inv.engine
    );
    let list = inv.containers.as_ref().expect("engine answered");
    let b = list.iter().find(|c| c.id == burner).expect("burner listed");
    assert_eq!(b.name, "burner");
    assert_eq!(b.image, IMAGE);
    assert_eq!(b.state, ContainerState::Running);
    assert!(b.started_ms.is_some(), "inspect gave the start time");
    let q = list.iter().find(|c| c.id == quiet).expect("quiet listed");
    assert_eq!(q.state, ContainerState::Exited);
    let stats = inv
        .container_stats
        .iter()
        .find(|s| s.id == burner)
        .expect("stats");
    assert!(
        stats.mem_used > 0 && stats.mem_limit >= stats.mem_used,
        "{stats:?}"
    );
    assert!(stats.pids >= 1, "{stats:?}");
    assert!(
        inv.container_stats.iter().all(|s| s.id != quiet),
        "no stats for a stopped container"
    );

    // What a connection's hub hears: everything first, then stats of the running one only.
    let mut differ = Differ::new(WorkloadSettings::default().policy());
    let first = differ.next(&inv);
    assert!(first[0].full);
    assert_eq!(first[0].containers.len(), list.len());
    let later = inventory_until(&mut rx, "a later inventory", |i| i.at_ms > inv.at_ms).await;
    let next = differ.next(&later);
    assert_eq!(next.len(), 1);
    assert!(!next[0].full);
    assert!(next[0].containers.is_empty(), "nothing changed: {next:?}");
    assert_eq!(next[0].container_stats.len(), 1);
    cancel.cancel();

    // The same through an agent and the hub: `flotilla ps` lists both, the burner busy.
    let fleet = Fleet::builder()
        .agent(agent("web-1", &podman, Access::Read))
        .start()
        .await;
    let rows = within(Duration::from_secs(30), "ps shows the burner busy", async {
        loop {
            let (status, out, err) = flotilla(&fleet, &["ps", "--all", "--json"]).await;
            assert_eq!(status, 0, "{err}");
            let rows: Vec<serde_json::Value> = serde_json::from_str::<serde_json::Value>(&out)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            let busy = rows.iter().any(|r| {
                r["info"]["id"] == burner.as_str()
                    && r["stats"]["cpu_pct"].as_f64().is_some_and(|c| c > 20.0)
            });
            if busy {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let quiet_row = rows
        .iter()
        .find(|r| r["info"]["id"] == quiet.as_str())
        .expect("stopped container listed with --all");
    assert_eq!(quiet_row["info"]["state"], "exited");
    assert_eq!(quiet_row["agent_name"], "web-1");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_stats_come_in_one_request_and_agree_with_the_per_container_api() {
    let podman = Podman::start().await;
    let burner = podman.container("burner", "while :; do :; done").await;
    let idle = podman.container("idle", "sleep 3600").await;
    let engine = Arc::new(Engine::new(vec![podman.socket.clone()]));
    let mut bulk = ContainerSource::new(engine.clone());
    let mut each = ContainerSource::new(engine).per_container_stats();
    let (bulk_stats, each_stats) = within(
        Duration::from_secs(60),
        "both ways show the burner busy",
        async {
            loop {
                let b = bulk.poll().await.inventory.expect("engine answers").1;
                let e = each.poll().await.inventory.expect("engine answers").1;
                let busy = |stats: &[flotilla_wire::workloads::ContainerStats]| {
                    stats.iter().any(|s| s.id == burner && s.cpu_pct > 20.0)
                };
                if busy(&b) && busy(&e) {
                    return (b, e);
                }
                // Rates need a second sample some time after the first; nothing signals a
                // counter moving, and the deadline bounds the loop.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        },
    )
    .await;
    assert_eq!(
        bulk.stats_api(),
        Some(StatsApi::Libpod),
        "Podman: one request"
    );
    assert_eq!(each.stats_api(), Some(StatsApi::PerContainer));
    for stats in [&bulk_stats, &each_stats] {
        let ids: Vec<&str> = stats.iter().map(|s| s.id.as_str()).collect();
        let mut want = vec![burner.as_str(), idle.as_str()];
        want.sort();
        assert_eq!(ids, want, "stats of the two running containers, by id");
    }
    for (b, e) in bulk_stats.iter().zip(&each_stats) {
        assert!(b.mem_used > 0 && b.mem_limit >= b.mem_used, "{b:?}");
        assert_eq!(b.mem_limit, e.mem_limit, "same limit: {b:?} {e:?}");
        assert_eq!(b.pids, e.pids, "same processes: {b:?} {e:?}");
        assert!(b.pids >= 1, "{b:?}");
    }
    let cpu = |stats: &[flotilla_wire::workloads::ContainerStats], id: &str| {
        stats.iter().find(|s| s.id == id).map(|s| s.cpu_pct)
    };
    assert!(
        cpu(&bulk_stats, &idle) < Some(5.0),
        "the sleeper is idle: {bulk_stats:?}"
    );
    // A container stopped drops out of the one-request stats as from the list's running set.
    podman.run(&["stop", "--time", "0", "idle"]).await;
    let after = within(Duration::from_secs(30), "the idle one stopped", async {
        loop {
            let (list, stats) = bulk.poll().await.inventory.expect("engine answers");
            if list
                .iter()
                .any(|c| c.id == idle && c.state != ContainerState::Running)
            {
                return stats;
            }
            // podman stop returned; the engine's list may lag by a moment (bounded by the deadline).
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(
        after.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [burner.as_str()],
        "stats of running containers only"
    );
    assert_eq!(bulk.stats_api(), Some(StatsApi::Libpod));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_back_without_sources_makes_the_hub_drop_its_old_inventory() {
    let podman = Podman::start().await;
    podman.container("steady", "sleep 3600").await;
    let mut fleet = Fleet::builder()
        .agent(agent("web-1", &podman, Access::Read))
        .start()
        .await;
    let rows_of_web_1 = |out: &str| -> usize {
        serde_json::from_str::<serde_json::Value>(out)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|r| r["agent_name"] == "web-1")
            .count()
    };
    within(Duration::from_secs(30), "ps lists steady", async {
        loop {
            let (status, out, err) = flotilla(&fleet, &["ps", "--all", "--json"]).await;
            assert_eq!(status, 0, "{err}");
            if rows_of_web_1(&out) == 1 {
                return;
            }
            // The inventory reaches the hub at the agent's next sample; no event says so.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;

    // The same agent comes back with containers and services off: it says "none", and the
    // hub forgets the containers it kept while the agent was away.
    fleet.stop_agent("web-1").await;
    let (status, out, _) = flotilla(&fleet, &["ps", "--all", "--json"]).await;
    assert_eq!((status, rows_of_web_1(&out)), (0, 1), "kept while offline");
    let web = fleet.agent_mut("web-1");
    web.config.containers = Access::Off;
    web.config.services = Access::Off;
    web.start();
    web.wait_connected().await;
    within(
        Duration::from_secs(30),
        "ps drops web-1's containers",
        async {
            loop {
                let (status, out, err) = flotilla(&fleet, &["ps", "--all", "--json"]).await;
                assert_eq!(status, 0, "{err}");
                if rows_of_web_1(&out) == 0 {
                    return;
                }
                // As above: the "none" comes with the agent's first sample.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        },
    )
    .await;
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_restarted_under_the_agent_is_picked_up_again() {
    let mut podman = Podman::start().await;
    podman.container("steady", "echo alive; sleep 3600").await;
    let fleet = Fleet::builder()
        .agent(agent("web-1", &podman, Access::Read))
        .start()
        .await;
    let (mut rx, cancel) = poller(&podman);
    inventory_until(&mut rx, "engine up", |i| {
        matches!(i.engine, SourceState::Up { .. })
    })
    .await;
    let (status, out, _) = flotilla(&fleet, &["logs", "web-1/steady"]).await;
    assert_eq!((status, out.as_str()), (0, "alive\n"));

    podman.stop_service().await;
    let down = inventory_until(&mut rx, "engine down", |i| {
        matches!(i.engine, SourceState::Down { .. })
    })
    .await;
    assert!(down.containers.is_none(), "a silent engine lists nothing");
    let (status, _, err) = flotilla(&fleet, &["logs", "web-1/steady"]).await;
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("container engine"), "{err}");

    podman.start_service().await;
    let back = inventory_until(&mut rx, "engine back", |i| {
        matches!(i.engine, SourceState::Up { .. })
    })
    .await;
    assert!(
        back.containers.iter().flatten().any(|c| c.name == "steady"),
        "listed again"
    );
    let (status, out, err) = flotilla(&fleet, &["logs", "web-1/steady"]).await;
    assert_eq!((status, out.as_str()), (0, "alive\n"), "{err}");
    cancel.cancel();
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_and_follow_through_flotilla_logs() {
    let podman = Podman::start().await;
    let talker = podman
        .container(
            "talker",
            "echo one; echo two; echo oops >&2; echo three; sleep 3600",
        )
        .await;
    podman
        .container(
            "ticker",
            "i=0; while :; do i=$((i+1)); echo tick $i; sleep 1; done",
        )
        .await;
    let fleet = Fleet::builder()
        .agent(agent("web-1", &podman, Access::Read))
        .start()
        .await;
    within(DEADLINE, "talker logged its lines", async {
        while !podman.run(&["logs", "talker"]).await.contains("three") {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;

    let (status, out, err) = flotilla(&fleet, &["logs", "web-1/talker"]).await;
    assert_eq!(status, 0, "{err}");
    assert_eq!(out, "one\ntwo\nthree\n", "stdout apart");
    assert_eq!(err, "oops\n", "stderr apart");

    let (status, out, err) = flotilla(&fleet, &["logs", "web-1/talker", "-n", "2"]).await;
    assert_eq!(
        (status, out.as_str(), err.as_str()),
        (0, "three\n", "oops\n")
    );

    // Two lines: the last of each stream (the engine keeps no order between the two pipes).
    let (status, out, _) = flotilla(&fleet, &["logs", "web-1/talker", "--json", "-n", "2"]).await;
    assert_eq!(status, 0);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert_eq!(events[0]["event"], "started");
    assert_eq!(events[0]["id"], talker.as_str(), "resolved to the full id");
    let line = |stream: &str| {
        events
            .iter()
            .find(|e| e["event"] == "line" && e["stream"] == stream)
            .unwrap_or_else(|| panic!("no {stream} line in {events:?}"))
    };
    assert_eq!(line("stdout")["data"], "three\n");
    assert_eq!(line("stderr")["data"], "oops\n");
    assert!(
        line("stdout")["at_ms"].as_u64().is_some(),
        "engine timestamp kept"
    );
    assert_eq!(events.last().expect("end")["event"], "end");

    let (status, _, err) = flotilla(&fleet, &["logs", "web-1/nope"]).await;
    assert_eq!(status, 1);
    assert_eq!(err, "flotilla: no such container: nope\n");
    let (status, _, err) = flotilla(&fleet, &["logs", "web-1/a%2e"]).await;
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("not a container name"), "{err}");
    let (status, _, err) = flotilla(&fleet, &["logs", "web-9/talker"]).await;
    assert_eq!(status, 1);
    assert!(err.contains("no agent named \"web-9\""), "{err}");

    // Follow: new lines arrive until Ctrl-C, which ends the command with 130.
    let dir = fleet.admin_login().dir.clone();
    let mut child = tokio::process::Command::new(flotilla_bin())
        .args(["--no-mux", "--login-dir", dir.to_str().expect("utf-8")])
        .args(["logs", "web-1/ticker", "-f", "-n", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("flotilla logs -f");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    within(Duration::from_secs(30), "two new ticks", async {
        while seen.len() < 2 {
            let line = lines.next_line().await.expect("read").expect("a line");
            assert!(line.starts_with("tick "), "{line}");
            seen.push(line);
        }
    })
    .await;
    let n = |l: &str| l["tick ".len()..].parse::<u32>().expect("tick number");
    assert_eq!(
        n(&seen[1]),
        n(&seen[0]) + 1,
        "in order, none lost: {seen:?}"
    );
    let pid = i32::try_from(child.id().expect("running")).expect("pid");
    // SAFETY: kill(2) on our own child's pid; no memory involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = within(DEADLINE, "flotilla logs -f exits", child.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(130));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_container_action_runs_as_a_job() {
    let podman = Podman::start().await;
    podman
        .container("c1", "trap 'exit 0' TERM; sleep 3600 & wait")
        .await;
    let fleet = Fleet::builder()
        .agent(agent("web-1", &podman, Access::Manage))
        .start()
        .await;
    let act = |args: &'static [&'static str]| {
        let fleet = &fleet;
        async move {
            let mut all = vec!["container"];
            all.extend_from_slice(args);
            flotilla(fleet, &all).await
        }
    };

    let (status, out, err) = act(&["stop", "web-1/c1", "--time", "2"]).await;
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("c1: stopped"), "{out}");
    podman.wait_state("c1", Some("exited")).await;

    let (status, out, err) = act(&["start", "web-1/c1"]).await;
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("c1: started"), "{out}");
    podman.wait_state("c1", Some("running")).await;

    let (status, out, err) = act(&["restart", "web-1/c1", "--time", "2"]).await;
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("c1: restarted"), "{out}");
    podman.wait_state("c1", Some("running")).await;

    let (status, out, err) = act(&["kill", "web-1/c1"]).await;
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("c1: killed"), "{out}");
    podman.wait_state("c1", Some("exited")).await;

    let (status, out, err) = act(&["rm", "web-1/c1", "--json"]).await;
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("c1: removed"), "{out}");
    podman.wait_state("c1", None).await;

    let (status, _, err) = act(&["rm", "web-1/c1"]).await;
    assert_eq!(status, 1);
    assert!(err.contains("no such container: c1"), "{err}");

    // The jobs are in the audit log like any exec.
    let audit = run_json(
        &flotilla_bin(),
        &[
            "--no-mux",
            "--login-dir",
            fleet.admin_login().dir.to_str().expect("utf-8"),
            "audit",
            "--json",
        ],
    )
    .await;
    let entries: Vec<String> = audit
        .as_array()
        .expect("audit entries")
        .iter()
        .map(|e| e.to_string())
        .filter(|e| e.contains("c1"))
        .collect();
    for verb in ["stop", "start", "restart", "kill", "rm"] {
        assert!(
            entries.iter().any(|e| e.contains(verb)),
            "no audit entry for {verb}: {entries:?}"
        );
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_and_roles_refuse_and_say_why() {
    let podman = Podman::start().await;
    podman.container("c1", "echo hello; sleep 3600").await;
    let fleet = Fleet::builder()
        .agent(agent("reader", &podman, Access::Read))
        .agent(agent("blind", &podman, Access::Off))
        .agent(agent("boss", &podman, Access::Manage))
        .start()
        .await;

    let (status, _, err) = flotilla(&fleet, &["container", "stop", "reader/c1"]).await;
    assert_eq!(status, 1);
    assert!(
        err.contains("refused by this agent's container policy (containers = \"read\")"),
        "{err}"
    );
    let (status, _, err) = flotilla(&fleet, &["container", "kill", "blind/c1"]).await;
    assert_eq!(status, 1);
    assert!(err.contains("(containers = \"off\")"), "{err}");
    let (status, _, err) = flotilla(&fleet, &["logs", "blind/c1"]).await;
    assert_eq!(status, 1);
    assert!(
        err.contains("refused by this agent's container policy (containers = \"off\")"),
        "{err}"
    );
    let (status, _, err) = flotilla(&fleet, &["compose", "boss", "up", "web"]).await;
    assert_eq!(status, 1);
    assert!(
        err.contains("refused by this agent's compose policy (compose = \"off\")"),
        "{err}"
    );
    assert_eq!(
        podman.state("c1").await.as_deref(),
        Some("running"),
        "untouched"
    );

    // A viewer reads logs but acts on nothing, even where the agent would allow it.
    let viewer = fleet.login_as(Role::Viewer, "eve").await;
    let (status, out, err) = flotilla_as(&viewer.dir, &["logs", "reader/c1"]).await;
    assert_eq!((status, out.as_str()), (0, "hello\n"), "{err}");
    let (status, _, err) = flotilla_as(&viewer.dir, &["container", "stop", "boss/c1"]).await;
    assert_ne!(status, 0);
    assert!(err.contains("viewer"), "{err}");
    assert_eq!(
        podman.state("c1").await.as_deref(),
        Some("running"),
        "untouched"
    );
    let (status, out, err) = flotilla(&fleet, &["logs", "boss/c1"]).await;
    assert_eq!(
        (status, out.as_str()),
        (0, "hello\n"),
        "the others still serve: {err}"
    );
    fleet.shutdown().await;
}

/// A compose project using the test image only (nothing to pull).
const COMPOSE_FILE: &str = "version: \"3\"\nservices:\n  app:\n    image: localhost/bb:1\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; echo composed; sleep 3600 & wait\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_projects_go_up_and_down_and_names_stay_inside_compose_dir() {
    let podman = Podman::start().await;
    let fleet = Fleet::new().await;
    // A real agentd process: compose tools see agentd's environment, here the private Podman's.
    let data = fleet.dir.path().join("box-1");
    let token = fleet.token(Role::Agent, 1, Vec::new()).await.token;
    let data_s = data.to_str().expect("utf-8").to_string();
    let enrolled = run_json(
        &agentd_bin(),
        &[
            "--data-dir",
            &data_s,
            "enroll",
            "--token",
            &token,
            "--name",
            "box-1",
            "--json",
        ],
    )
    .await;
    assert_eq!(enrolled["name"], "box-1");
    let compose_dir = podman.dir().join("compose");
    let project = format!("proj{}", std::process::id());
    std::fs::create_dir_all(compose_dir.join(&project)).expect("project dir");
    std::fs::write(
        compose_dir.join(&project).join("docker-compose.yml"),
        COMPOSE_FILE,
    )
    .expect("compose file");
    std::os::unix::fs::symlink("/etc", compose_dir.join("escape")).expect("symlink");
    let cfg = AgentConfig {
        containers: Access::Manage,
        containers_socket: Some(podman.socket.clone()),
        compose: ComposeMode::On,
        compose_dir: Some(compose_dir.clone()),
        ..AgentConfig::default()
    };
    std::fs::write(
        data.join(agentd::config::CONFIG_FILE),
        toml::to_string(&cfg).expect("toml"),
    )
    .expect("agent.toml");
    let mut agent = Daemon::spawn_env(&agentd_bin(), &["--data-dir", &data_s, "run"], podman.env());
    agent.wait_log("connected to hub", DEADLINE).await;

    let (status, out, err) = compose(&fleet, &["box-1", "up", &project]).await;
    assert_eq!(status, 0, "{out}{err}");
    let label = format!("label=com.docker.compose.project={project}");
    let running = podman
        .run(&["ps", "--filter", &label, "--format", "{{.Names}}"])
        .await;
    assert!(
        running.contains("app"),
        "compose started the service: {running:?}"
    );
    let (status, out, err) = compose(&fleet, &["box-1", "ps", &project]).await;
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("app"), "{out}");
    let (status, out, err) = compose(&fleet, &["box-1", "down", &project]).await;
    assert_eq!(status, 0, "{out}{err}");
    let left = podman
        .run(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"])
        .await;
    assert_eq!(left, "", "compose removed the service");

    // Names that are not a folder of compose_dir never reach a compose tool.
    let (status, _, err) = flotilla(&fleet, &["compose", "box-1", "up", "../etc"]).await;
    assert_eq!(status, 2, "the CLI checks the name first: {err}");
    let client = fleet.admin_client().await;
    let up = |project: &str| ExecRequest {
        selector: "box-1".into(),
        command: ExecCommand::Compose {
            action: ComposeAction::Up,
            project: project.into(),
        },
        timeout_ms: 0,
        batch: 0,
    };
    // A path never leaves the hub; a folder name that is not a project folder is the agent's call.
    match exec_events(&client, &up("../etc")).await.last() {
        Some(ExecEvent::Refused(r)) => {
            assert_eq!(r.code, flotilla_wire::ErrorCode::BadRequest);
            assert!(r.message.contains("\"../etc\""), "{}", r.message);
        }
        other => panic!("the hub let ../etc through: {other:?}"),
    }
    for (project, why) in [
        ("escape", "not a folder of"),
        ("missing", "no project folder missing"),
    ] {
        let events = exec_events(&client, &up(project)).await;
        let failure = events
            .iter()
            .find_map(|e| match e {
                ExecEvent::Agent {
                    event: AgentEvent::Failed(f),
                    ..
                } => Some(f.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{project}: no refusal in {events:?}"));
        assert_eq!(failure.kind, FailureKind::Refused, "{project}");
        assert!(
            failure.message.contains("compose policy"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains(why),
            "{project}: {}",
            failure.message
        );
    }
    client.close().await;
    agent.sigterm();
    let _ = within(DEADLINE, "agentd exits", agent.child.wait()).await;
    fleet.shutdown().await;
}

/// Resident memory of process `pid`, bytes.
fn rss_of(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Lines the flooding container writes, 1,025 bytes each: about 100 MB of log.
const FLOOD_LINES: u64 = 99_999;
/// How much agentd may grow while a reader stalls on 100 MB of log: QUIC's stream and connection
/// windows plus a few chunks. Without flow control it would take the whole log.
const FLOOD_RSS_GROWTH: u64 = 40 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_flooding_its_log_keeps_agentd_memory_bounded() {
    use flotilla_wire::io::read_frame;
    use flotilla_wire::limits::MAX_LOGS_FRAME;
    use flotilla_wire::msg::StreamOpen;
    use flotilla_wire::workloads::{LogFrame, LogSource, LogsRequest};

    let podman = Podman::start().await;
    podman
        .container(
            "flood",
            &format!(
                "l=x; for i in 1 2 3 4 5 6 7 8 9 10; do l=$l$l; done; yes $l | head -n {FLOOD_LINES}; echo done; sleep 3600"
            ),
        )
        .await;
    let fleet = Fleet::new().await;
    let data = fleet.dir.path().join("flood-host");
    let data_s = data.to_str().expect("utf-8").to_string();
    let token = fleet.token(Role::Agent, 1, Vec::new()).await.token;
    run_json(
        &agentd_bin(),
        &[
            "--data-dir",
            &data_s,
            "enroll",
            "--token",
            &token,
            "--name",
            "flood-host",
            "--json",
        ],
    )
    .await;
    let cfg = AgentConfig {
        containers_socket: Some(podman.socket.clone()),
        ..AgentConfig::default()
    };
    std::fs::write(
        data.join(agentd::config::CONFIG_FILE),
        toml::to_string(&cfg).expect("toml"),
    )
    .expect("agent.toml");
    let mut agent = Daemon::spawn_env(&agentd_bin(), &["--data-dir", &data_s, "run"], podman.env());
    agent.wait_log("connected to hub", DEADLINE).await;
    within(Duration::from_secs(120), "the flood is logged", async {
        // Polled: the engine announces nothing when a container writes. `podman logs` may also
        // fail on a line the container is still writing (a torn last line of its log file): that
        // is "not yet", and the next try reads it whole.
        while podman
            .try_run(&["logs", "--tail", "1", "flood"])
            .await
            .as_deref()
            != Some("done")
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;

    let client = fleet.admin_client().await;
    let (mut send, mut recv) = client.open_bi().await.expect("stream");
    let req = LogsRequest {
        agent: "flood-host".into(),
        source: LogSource::Container("flood".into()),
        tail: u32::try_from(FLOOD_LINES + 1).expect("fits"),
        follow: false,
    };
    send.write_opening(&StreamOpen::Logs, &req, MAX_LOGS_FRAME)
        .await
        .expect("request");
    let started = within(
        DEADLINE,
        "the first log frame",
        read_frame::<LogFrame, _>(&mut recv, MAX_LOGS_FRAME),
    )
    .await
    .expect("frame");
    assert!(
        matches!(started, Some(LogFrame::Started { .. })),
        "{started:?}"
    );
    let baseline = rss_of(agent.pid());
    // The reader stalls: agentd may only fill the windows, whatever the engine could give it.
    let mut peak = baseline;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(rss_of(agent.pid()));
    }
    assert!(
        peak < baseline + FLOOD_RSS_GROWTH,
        "agentd grew from {baseline} to {peak} bytes while the reader stalled"
    );
    // Then everything arrives, in order.
    let (mut bytes, mut lines) = (0u64, 0u64);
    within(Duration::from_secs(120), "the whole log", async {
        loop {
            match read_frame::<LogFrame, _>(&mut recv, MAX_LOGS_FRAME).await {
                Ok(Some(LogFrame::Data { data, .. })) => {
                    bytes += data.0.len() as u64;
                    lines += data.0.iter().filter(|&&b| b == b'\n').count() as u64;
                }
                Ok(Some(LogFrame::End)) => return,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(lines, FLOOD_LINES + 1, "every line and the marker");
    assert_eq!(bytes, FLOOD_LINES * 1025 + 5);
    drop(send);
    client.close().await;
    agent.sigterm();
    let _ = within(DEADLINE, "agentd exits", agent.child.wait()).await;
    fleet.shutdown().await;
}
