//! Workloads through a real hub: swarm agents report synthetic containers and units over the real
//! metrics stream, and `flotilla ps` / `flotilla services` (the real binary) and the query stream
//! list them with their hosts, page after page, filtered by selector, with counts pushed to event
//! subscribers, minutes kept in SQLite, and viewers allowed to read but not to act; and one agent
//! over a private Podman, whose real containers `flotilla ps` lists.

use crate::harness::exec::{exec_events, query};
use crate::harness::flotilla_bin;
use crate::harness::podman::{IMAGE, Podman};
use crate::harness::{AgentSpec, DEADLINE, Fleet, IDLE_DEADLINE, run_cmd, within};
use flotilla_wire::exec::{ExecCommand, ExecEvent, ExecRequest, Query, QueryReply};
use flotilla_wire::msg::FleetEvent;
use flotilla_wire::workloads::{ContainerAction, ContainerRow, ROWS_PER_FRAME};
use flotilla_wire::{ErrorCode, IdentityId, Role};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Swarm agents in these tests.
const AGENTS: usize = 12;
/// Containers each reports: one in five stopped, so 200 run. 12 × 200 = 2,400 running rows, more
/// than one reply frame holds.
const CONTAINERS: usize = 250;
/// Units each reports: one in seven failed (2).
const UNITS: usize = 14;

/// Runs `flotilla --no-mux --login-dir DIR args…`; returns exit code, stdout and stderr.
async fn flotilla(login_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec![
        "--no-mux",
        "--login-dir",
        login_dir.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    let out = run_cmd(&flotilla_bin(), &all).await;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `flotilla … --json` that must succeed: its rows.
async fn json_rows(login_dir: &Path, args: &[&str]) -> Vec<Value> {
    let (code, out, err) = flotilla(login_dir, args).await;
    assert_eq!(code, 0, "flotilla {args:?} failed: {err}");
    match serde_json::from_str(&out) {
        Ok(Value::Array(rows)) => rows,
        other => panic!("flotilla {args:?} printed no JSON array ({other:?}): {out}"),
    }
}

struct Swarm {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), agentd::AgentError>>,
}

impl Swarm {
    fn start(dir: &Path, token: Option<String>, containers: usize) -> Self {
        let cancel = CancellationToken::new();
        let opts = agentd::swarm::SwarmOptions {
            token,
            count: AGENTS,
            dir: dir.join("swarm"),
            prefix: "sw".into(),
            metrics_interval_ms: 1000,
            exec: agentd::ExecMode::Off,
            containers,
            units: UNITS,
            overrides: None,
        };
        let task = tokio::spawn(agentd::swarm::run(opts, cancel.clone()));
        Self { cancel, task }
    }

    async fn stop(self) {
        self.cancel.cancel();
        within(IDLE_DEADLINE, "swarm stop", self.task)
            .await
            .expect("swarm task")
            .expect("swarm ran");
    }
}

/// Waits until every swarm agent's counts say `total` containers.
async fn counts_reach(events: &mut crate::harness::Events, total: u32) -> HashSet<IdentityId> {
    let mut done = HashSet::new();
    events
        .until(
            &format!("counts of {total} containers from every swarm agent"),
            Duration::from_secs(120),
            |ev| {
                if let FleetEvent::Workloads { id, counts } = ev
                    && counts.containers_total == total
                {
                    assert_eq!(counts.containers_running, total / 5 * 4);
                    assert_eq!(counts.containers_troubled, total / 10);
                    assert_eq!((counts.units_total, counts.units_failed), (UNITS as u32, 2));
                    done.insert(id);
                }
                (done.len() == AGENTS).then(|| done.clone())
            },
        )
        .await
}

fn by_agent(rows: &[Value]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for r in rows {
        *n.entry(r["agent_name"].as_str().expect("agent_name").to_string())
            .or_default() += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn ps_and_services_list_every_swarm_workload_with_its_host() {
    let fleet = Fleet::new().await;
    let token = fleet.token(Role::Agent, AGENTS as u32, Vec::new()).await;
    let mut events = fleet.events();
    let dir = tempfile::tempdir().expect("swarm dir");
    let swarm = Swarm::start(dir.path(), Some(token.token.clone()), CONTAINERS);
    counts_reach(&mut events, CONTAINERS as u32).await;
    let admin = fleet.paths.admin_dir();

    // Running containers only, from every agent, each row naming its host; more than one frame.
    let rows = json_rows(&admin, &["ps", "--json"]).await;
    assert_eq!(rows.len(), AGENTS * CONTAINERS * 4 / 5);
    assert!(rows.len() > ROWS_PER_FRAME);
    let hosts = by_agent(&rows);
    assert_eq!(hosts.len(), AGENTS);
    assert!(
        hosts.values().all(|n| *n == CONTAINERS * 4 / 5),
        "{hosts:?}"
    );
    assert!(rows.iter().all(|r| r["info"]["state"] == "running"));
    let first: ContainerRow = serde_json::from_value(rows[0].clone()).expect("a ContainerRow");
    assert_eq!(
        (first.agent_name.as_str(), first.info.name.as_str()),
        ("sw-00000", "app-00")
    );
    assert!(first.stats.is_some(), "running containers carry stats");
    // --all adds the stopped ones; a selector narrows to its agents.
    let all = json_rows(&admin, &["ps", "--all", "--json"]).await;
    assert_eq!(all.len(), AGENTS * CONTAINERS);
    let two = json_rows(&admin, &["ps", "sw-00001,sw-00002", "-a", "--json"]).await;
    assert_eq!(
        by_agent(&two),
        HashMap::from([
            ("sw-00001".into(), CONTAINERS),
            ("sw-00002".into(), CONTAINERS)
        ])
    );
    // The table: a header, then one line per container with its host.
    let (code, table, _) = flotilla(&admin, &["ps", "sw-00003"]).await;
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("AGENT") && lines[0].contains("PORTS"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 1 + CONTAINERS * 4 / 5);
    assert!(
        lines[1].starts_with("sw-00003")
            && lines[1].contains("app-00")
            && lines[1].contains("running"),
        "{}",
        lines[1]
    );
    // A selector naming nobody is an error that says so.
    let (code, _, err) = flotilla(&admin, &["ps", "nosuch-agent"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("nosuch-agent"), "{err}");

    // The reply came in frames of at most ROWS_PER_FRAME rows.
    let client = fleet.admin_client().await;
    let frames = query(
        &client,
        Query::Containers {
            selector: "all".into(),
            all: true,
        },
    )
    .await
    .expect("containers");
    let sizes: Vec<usize> = frames
        .iter()
        .map(|f| match f {
            QueryReply::Containers(rows) => rows.len(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(
        sizes.len() >= 2 && sizes.iter().all(|n| *n <= ROWS_PER_FRAME),
        "{sizes:?}"
    );
    assert_eq!(sizes.iter().sum::<usize>(), AGENTS * CONTAINERS);

    // Units: every one, or the failed ones.
    let units = json_rows(&admin, &["services", "--json"]).await;
    assert_eq!(units.len(), AGENTS * UNITS);
    let failed = json_rows(&admin, &["services", "--failed", "--json"]).await;
    assert_eq!(failed.len(), AGENTS * 2);
    assert!(failed.iter().all(|r| r["info"]["active_state"] == "failed"));

    // A console subscribing now hears every agent's counts after the snapshot.
    let mut feed = client.subscribe().await.expect("subscribe");
    let mut heard = HashSet::new();
    within(DEADLINE, "counts after the snapshot", async {
        while heard.len() < AGENTS {
            match feed.next().await.expect("event") {
                Some(FleetEvent::Workloads { id, counts }) => {
                    assert_eq!(counts.containers_total, CONTAINERS as u32);
                    heard.insert(id);
                }
                Some(_) => {}
                None => panic!("event stream ended"),
            }
        }
    })
    .await;

    // A container's minutes: the one in progress now; after the agents go, the stored ones.
    let history = Query::ContainerHistory {
        agent: "sw-00004".into(),
        container: "app-01".into(),
        minutes: 60,
    };
    let minutes = |replies: Vec<QueryReply>| match replies.as_slice() {
        [QueryReply::ContainerMinutes(m)] => m.clone(),
        other => panic!("unexpected {other:?}"),
    };
    let live = minutes(query(&client, history.clone()).await.expect("history"));
    assert!(
        !live.is_empty() && live.iter().all(|m| m.mem_avg > 0),
        "{live:?}"
    );
    swarm.stop().await;
    let offline = fleet
        .listed_agents()
        .await
        .into_iter()
        .filter(|a| a.name.starts_with("sw-"))
        .all(|a| a.status != flotilla_wire::msg::Status::Online);
    assert!(offline, "the swarm is gone");
    // Minutes closed by the disconnect reach the store through the history writer: poll for them.
    let stored_minutes = |q: Query| {
        let client = &client;
        async move {
            within(DEADLINE, "stored minutes", async {
                loop {
                    let got = minutes(query(client, q.clone()).await.expect("history"));
                    if !got.is_empty() {
                        return got;
                    }
                    // Polled: the history writer batches and announces nothing; bounded above.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await
        }
    };
    let stored = stored_minutes(history.clone()).await;
    assert!(
        !stored.is_empty() && stored[0].start_ms <= live[0].start_ms,
        "stored minutes {stored:?} after live {live:?}"
    );
    // Offline agents keep their last inventory, without stats.
    let stale = json_rows(&admin, &["ps", "sw-00004", "--json"]).await;
    assert_eq!(stale.len(), CONTAINERS * 4 / 5);
    assert!(stale.iter().all(|r| r["stats"].is_null()));

    // The same agents come back with fewer containers: the full inventory replaces the old one.
    let swarm = Swarm::start(dir.path(), None, 50);
    counts_reach(&mut events, 50).await;
    let all = json_rows(&admin, &["ps", "--all", "--json"]).await;
    assert_eq!(all.len(), AGENTS * 50, "removed containers are gone");
    // The history of a removed container is still there until retention forgets it.
    let gone = Query::ContainerHistory {
        agent: "sw-00004".into(),
        container: "app-200".into(),
        minutes: 60,
    };
    let kept = stored_minutes(gone).await;
    assert!(kept.iter().all(|m| m.mem_avg > 0), "{kept:?}");
    swarm.stop().await;
    client.close().await;
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn viewers_read_workloads_and_bad_requests_are_refused_by_name() {
    let fleet = Fleet::new().await;
    let token = fleet.token(Role::Agent, AGENTS as u32, Vec::new()).await;
    let mut events = fleet.events();
    let dir = tempfile::tempdir().expect("swarm dir");
    let swarm = Swarm::start(dir.path(), Some(token.token.clone()), 20);
    counts_reach(&mut events, 20).await;

    fleet.login_as(Role::Viewer, "vera").await;
    let viewer_dir = fleet.dir.path().join("login-vera");
    let rows = json_rows(&viewer_dir, &["ps", "--json"]).await;
    assert_eq!(rows.len(), AGENTS * 16, "viewers may list containers");
    let units = json_rows(&viewer_dir, &["services", "sw-00000", "--json"]).await;
    assert_eq!(units.len(), UNITS, "and units");
    let viewer = fleet.client_as(Role::Viewer, "vic").await;
    let history = query(
        &viewer,
        Query::ContainerHistory {
            agent: "sw-00000".into(),
            container: "app-00".into(),
            minutes: 5,
        },
    )
    .await
    .expect("viewers may read history");
    assert!(matches!(history.as_slice(), [QueryReply::ContainerMinutes(m)] if !m.is_empty()));

    // Refusals name what was wrong.
    for (q, code, says) in [
        (
            Query::ContainerHistory {
                agent: "nosuch".into(),
                container: "app-00".into(),
                minutes: 5,
            },
            ErrorCode::NotFound,
            "no agent \"nosuch\"",
        ),
        (
            Query::ContainerHistory {
                agent: "sw-00000".into(),
                container: "nope".into(),
                minutes: 5,
            },
            ErrorCode::NotFound,
            "no container \"nope\" on sw-00000",
        ),
        (
            Query::ContainerHistory {
                agent: "sw-00000".into(),
                container: "../x".into(),
                minutes: 5,
            },
            ErrorCode::BadRequest,
            "\"../x\" is not a container name or id",
        ),
    ] {
        match query(&viewer, q).await {
            Err(flotilla::client::ClientError::Refused(r)) => {
                assert_eq!(r.code, code, "{}", r.message);
                assert!(r.message.contains(says), "{} lacks {says}", r.message);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    // Actions: a viewer is refused and audited as what it tried; a bad name never reaches an agent.
    let stop = |names: &[&str]| ExecRequest {
        selector: "sw-00000".into(),
        command: ExecCommand::Container {
            action: ContainerAction::Stop,
            containers: names.iter().map(|s| s.to_string()).collect(),
            stop_timeout_s: None,
        },
        timeout_ms: 0,
        batch: 0,
    };
    let refused = |events: &[ExecEvent]| match events.first() {
        Some(ExecEvent::Refused(r)) => r.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let r = refused(&exec_events(&viewer, &stop(&["app-00"])).await);
    assert_eq!(r.code, ErrorCode::Forbidden);
    let admin = fleet.admin_client().await;
    let r = refused(&exec_events(&admin, &stop(&["-rf"])).await);
    assert_eq!(r.code, ErrorCode::BadRequest);
    assert!(
        r.message.contains("\"-rf\" is not a container name"),
        "{}",
        r.message
    );
    let audit = query(&admin, Query::Audit { limit: 50 })
        .await
        .expect("audit");
    let actions: Vec<&str> = audit
        .iter()
        .filter_map(|r| match r {
            QueryReply::Audit(e) => Some(e.action.as_str()),
            _ => None,
        })
        .collect();
    assert!(actions.contains(&"container.stop.denied"), "{actions:?}");
    assert!(
        !actions.contains(&"container.stop"),
        "a refused request is not a job: {actions:?}"
    );
    swarm.stop().await;
    viewer.close().await;
    admin.close().await;
    fleet.shutdown().await;
}

/// `flotilla ps --json` rows until `ok` accepts them (the agent polls its engine every interval).
async fn ps_until(
    login_dir: &Path,
    args: &[&str],
    what: &str,
    ok: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    within(Duration::from_secs(60), what, async {
        loop {
            let rows = json_rows(login_dir, args).await;
            if ok(&rows) {
                return rows;
            }
            // Polled: a container's changed state reaches operators only through this query
            // (no event carries it); bounded by the deadline above.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps_lists_real_podman_containers_with_their_agent() {
    let podman = Podman::start().await;
    let web = podman.container("web", "while :; do sleep 1; done").await;
    podman.container("batch", "true").await;
    podman.wait_state("batch", Some("exited")).await;
    let fleet = Fleet::builder()
        .agent(AgentSpec::new("podhost").config(agentd::AgentConfig {
            containers: agentd::config::Access::Read,
            containers_socket: Some(podman.socket.clone()),
            ..agentd::AgentConfig::default()
        }))
        .start()
        .await;
    let admin = fleet.paths.admin_dir();
    let rows = ps_until(
        &admin,
        &["ps", "--json"],
        "web listed with its stats",
        |rows| {
            rows.iter()
                .any(|r| r["info"]["name"] == "web" && !r["stats"].is_null())
        },
    )
    .await;
    assert_eq!(rows.len(), 1, "only the running container: {rows:?}");
    let row: ContainerRow = serde_json::from_value(rows[0].clone()).expect("a ContainerRow");
    assert_eq!(row.agent_name, "podhost");
    assert_eq!(
        (row.info.id.as_str(), row.info.image.as_str()),
        (web.as_str(), IMAGE)
    );
    assert_eq!(
        row.info.state,
        flotilla_wire::workloads::ContainerState::Running
    );
    assert!(
        row.stats.as_ref().is_some_and(|s| s.mem_used > 0),
        "{row:?}"
    );
    let all = json_rows(&admin, &["ps", "--all", "--json"]).await;
    let mut names: Vec<&str> = all
        .iter()
        .filter_map(|r| r["info"]["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["batch", "web"]);
    let (code, table, _) = flotilla(&admin, &["ps", "podhost"]).await;
    assert_eq!(code, 0);
    let line = table.lines().nth(1).expect("one row");
    assert!(
        line.starts_with("podhost") && line.contains("web") && line.contains("running"),
        "{table}"
    );

    // Removed on the engine: gone from ps once the agent's next delta says so.
    podman.run(&["rm", "-f", "web"]).await;
    ps_until(&admin, &["ps", "--all", "--json"], "web gone", |rows| {
        rows.len() == 1 && rows[0]["info"]["name"] == "batch"
    })
    .await;
    fleet.shutdown().await;
}
