//! The containers, services and logs views as a user drives them: what each key shows, asks the
//! hub for, runs, and hides from viewers and from agents whose policy would refuse.

use super::*;
use crate::keymap::{self, Grants};
use crossterm::event::{KeyEventKind, KeyEventState, KeyModifiers};
use flotilla_wire::exec::{ExecCommand, ExecEvent, JobCounts, JobId, JobSummary, Target};
use flotilla_wire::workloads::{
    Access, ContainerAction, ContainerInfo, ContainerState, ContainerStats, Health, LogFrame,
    PortMap, ServiceAction, UnitInfo, UnitStats, WorkloadPolicy,
};
use workloads::WorkRow;

pub(crate) fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent {
        code,
        modifiers: KeyModifiers::NONE,
        kind: KeyEventKind::Press,
        state: KeyEventState::NONE,
    })
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        app.update(key(KeyCode::Char(c)));
    }
}

pub(crate) fn web1() -> IdentityId {
    IdentityId::from_random(Role::Agent, [1; 8])
}

pub(crate) fn db1() -> IdentityId {
    IdentityId::from_random(Role::Agent, [2; 8])
}

fn agent(id: IdentityId, name: &str) -> AgentInfo {
    AgentInfo {
        id,
        name: name.into(),
        role: Role::Agent,
        labels: vec![("env".into(), "prod".into())],
        status: Status::Online,
        first_seen_ms: 0,
        last_seen_ms: 0,
        version: "0.1.0".into(),
        os: "linux".into(),
        hostname: name.into(),
        addr: String::new(),
        latest: Some(flotilla_wire::msg::MetricsSample {
            cpu_pct: 20.0,
            mem_total: 100,
            mem_used: 50,
            ..Default::default()
        }),
    }
}

pub(crate) fn container(
    agent: &IdentityId,
    host: &str,
    name: &str,
    state: ContainerState,
    health: Health,
    cpu: f32,
) -> ContainerRow {
    let id = format!("{:0<64}", name.len().to_string() + name);
    ContainerRow {
        agent: agent.clone(),
        agent_name: host.into(),
        info: ContainerInfo {
            id: id.clone(),
            name: name.into(),
            image: format!("localhost/{name}:1"),
            state,
            health,
            restart_count: u32::from(state == ContainerState::Restarting) * 7,
            started_ms: Some(1_000_000),
            ports: vec![PortMap {
                host_ip: "0.0.0.0".into(),
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
            }],
            compose_project: None,
            compose_service: None,
        },
        stats: (state == ContainerState::Running).then(|| ContainerStats {
            id,
            cpu_pct: cpu,
            mem_used: 64 << 20,
            mem_limit: 256 << 20,
            ..ContainerStats::default()
        }),
    }
}

pub(crate) fn unit(agent: &IdentityId, host: &str, name: &str, active: &str, sub: &str) -> UnitRow {
    UnitRow {
        agent: agent.clone(),
        agent_name: host.into(),
        info: UnitInfo {
            name: name.into(),
            description: format!("The {name} daemon"),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: sub.into(),
            since_ms: Some(1_000_000),
            main_pid: (active == "active").then_some(42),
            restarts: 0,
            unit_file_state: "enabled".into(),
        },
        stats: (active == "active").then(|| UnitStats {
            name: name.into(),
            cpu_pct: Some(3.0),
            memory_bytes: Some(12 << 20),
        }),
    }
}

pub(crate) fn all_containers() -> Vec<ContainerRow> {
    let (w, d) = (web1(), db1());
    vec![
        container(
            &w,
            "web-1",
            "web",
            ContainerState::Running,
            Health::Healthy,
            12.0,
        ),
        container(
            &w,
            "web-1",
            "worker",
            ContainerState::Running,
            Health::Unhealthy,
            95.0,
        ),
        container(
            &w,
            "web-1",
            "old",
            ContainerState::Exited,
            Health::None,
            0.0,
        ),
        container(
            &d,
            "db-1",
            "pg",
            ContainerState::Running,
            Health::None,
            40.0,
        ),
        container(
            &d,
            "db-1",
            "cache",
            ContainerState::Restarting,
            Health::None,
            0.0,
        ),
    ]
}

pub(crate) fn all_units() -> Vec<UnitRow> {
    let (w, d) = (web1(), db1());
    vec![
        unit(&w, "web-1", "nginx.service", "active", "running"),
        unit(&w, "web-1", "sshd.service", "active", "running"),
        unit(&w, "web-1", "backup.service", "failed", "failed"),
        unit(&d, "db-1", "postgresql.service", "active", "running"),
    ]
}

/// Two agents: web-1 lets the hub manage its containers and nginx units, db-1 only read.
pub(crate) fn fixture(role: Role) -> App {
    let mut app = App::new(2_000_000);
    app.update(Event::Fleet(Box::new(FleetEvent::Snapshot(vec![
        agent(web1(), "web-1"),
        agent(db1(), "db-1"),
    ]))));
    app.update(Event::Connected(Box::new(flotilla_wire::msg::Welcome {
        protocol_version: flotilla_wire::PROTOCOL_VERSION,
        hub_version: "0.1.0".into(),
        identity: IdentityId::from_random(Role::Operator, [9; 8]),
        role,
        name: "ops".into(),
        metrics_interval_ms: 5000,
    })));
    app.update(Event::Fleet(Box::new(FleetEvent::Workloads {
        id: web1(),
        counts: WorkloadCounts {
            containers_running: 2,
            containers_total: 3,
            containers_troubled: 1,
            units_total: 3,
            units_failed: 1,
            policy: WorkloadPolicy {
                containers: Access::Manage,
                compose: false,
                services: Access::Manage,
                services_allow: vec!["nginx*.service".into()],
            },
        },
    })));
    app.update(Event::Fleet(Box::new(FleetEvent::Workloads {
        id: db1(),
        counts: WorkloadCounts {
            containers_running: 1,
            containers_total: 2,
            containers_troubled: 1,
            units_total: 1,
            units_failed: 0,
            policy: WorkloadPolicy::default(),
        },
    })));
    app
}

/// The fixture with the fleet's containers list open and answered.
pub(crate) fn containers_open(role: Role) -> App {
    let mut app = fixture(role);
    app.update(key(KeyCode::Char('6')));
    let cmds = app.take_commands();
    assert_eq!(
        cmds,
        [Command::Containers {
            selector: "all".into()
        }]
    );
    app.update(Event::Containers {
        selector: "all".into(),
        result: Ok(all_containers()),
    });
    // The first row (db-1's restarting cache) is selected: its last hour is asked for.
    assert_eq!(
        app.take_commands(),
        [Command::ContainerHistory {
            agent: db1().to_string(),
            container: all_containers()[4].info.id.clone(),
        }]
    );
    app
}

fn shown(app: &App) -> Vec<String> {
    app.containers
        .visible_rows()
        .map(|r| format!("{}/{}", r.agent_name, r.info.name))
        .collect()
}

fn select(app: &mut App, host: &str, name: &str) {
    let pos = app
        .containers
        .visible_rows()
        .position(|r| r.agent_name == host && r.info.name == name)
        .expect("row");
    app.containers.selected = pos;
}

fn select_unit(app: &mut App, name: &str) {
    let pos = app
        .services
        .visible_rows()
        .position(|r| r.info.name == name)
        .expect("row");
    app.services.selected = pos;
}

#[test]
fn the_fleet_containers_list_shows_trouble_first_then_sorts_and_filters() {
    let mut app = containers_open(Role::Operator);
    assert_eq!(
        app.view,
        View::Workloads {
            agent: None,
            kind: WorkKind::Containers
        }
    );
    assert_eq!(
        shown(&app),
        [
            "db-1/cache",
            "web-1/worker",
            "web-1/old",
            "db-1/pg",
            "web-1/web"
        ],
        "restarting and unhealthy first, then by name"
    );
    app.update(key(KeyCode::Char('s')));
    assert_eq!(
        shown(&app),
        [
            "db-1/cache",
            "web-1/old",
            "db-1/pg",
            "web-1/web",
            "web-1/worker"
        ]
    );
    app.update(key(KeyCode::Char('s')));
    assert_eq!(
        shown(&app)[..3],
        ["web-1/worker", "db-1/pg", "web-1/web"],
        "busiest first"
    );
    app.update(key(KeyCode::Char('/')));
    typed(&mut app, "host=web-1 state=running");
    assert_eq!(shown(&app), ["web-1/worker", "web-1/web"]);
    app.update(key(KeyCode::Enter));
    assert!(!app.filtering);
    assert_eq!(app.containers.filter, "host=web-1 state=running");
    assert!(app.filter.is_empty(), "the fleet's own filter is untouched");
    // The selection follows its row across answers.
    app.update(key(KeyCode::Char('j')));
    assert_eq!(
        app.containers.selected_row().map(|r| r.info.name.as_str()),
        Some("web")
    );
    let mut rows = all_containers();
    rows.reverse();
    app.update(Event::Containers {
        selector: "all".into(),
        result: Ok(rows),
    });
    assert_eq!(
        app.containers.selected_row().map(|r| r.info.name.as_str()),
        Some("web")
    );
}

#[test]
fn an_open_list_is_asked_for_again_every_two_seconds_one_query_at_a_time() {
    let mut app = containers_open(Role::Viewer);
    app.update(Event::Tick);
    app.update(Event::Tick);
    assert_eq!(
        app.take_commands(),
        [Command::Containers {
            selector: "all".into()
        }]
    );
    app.update(Event::Tick);
    app.update(Event::Tick);
    assert!(
        app.take_commands().is_empty(),
        "the last query has not been answered: no second one"
    );
    let mut rows = all_containers();
    if let Some(s) = rows[0].stats.as_mut() {
        s.cpu_pct = 50.0;
    }
    app.update(Event::Containers {
        selector: "all".into(),
        result: Ok(rows),
    });
    let trend = &app.containers.trends[&all_containers()[0].key()];
    assert_eq!(trend.cpu, [12.0, 50.0], "a sparkline point per answer");
    app.update(key(KeyCode::Char('1')));
    app.update(Event::Tick);
    app.update(Event::Tick);
    assert!(
        app.take_commands().is_empty(),
        "no polling once it is closed"
    );
    // An answer for a list since replaced is dropped.
    assert!(!app.update(Event::Containers {
        selector: web1().to_string(),
        result: Ok(Vec::new()),
    }));
}

#[test]
fn tab_walks_an_agents_overview_containers_and_services_and_esc_returns_to_the_fleet() {
    let mut app = fixture(Role::Operator);
    let pos = app
        .visible()
        .position(|a| a.name == "web-1")
        .expect("web-1");
    app.selected = pos;
    app.update(key(KeyCode::Enter));
    assert_eq!(app.view, View::Agent(web1()));
    app.update(key(KeyCode::Tab));
    assert_eq!(
        app.view,
        View::Workloads {
            agent: Some(web1()),
            kind: WorkKind::Containers
        }
    );
    assert_eq!(app.focused(), Some(web1()), "the agent stays watched (1 s)");
    assert_eq!(
        app.take_commands(),
        [Command::Containers {
            selector: web1().to_string()
        }]
    );
    app.update(key(KeyCode::Tab));
    assert_eq!(
        app.take_commands(),
        [Command::Services {
            selector: web1().to_string()
        }]
    );
    app.update(key(KeyCode::Tab));
    assert_eq!(app.view, View::Agent(web1()));
    app.update(key(KeyCode::BackTab));
    assert!(matches!(
        app.view,
        View::Workloads {
            kind: WorkKind::Services,
            ..
        }
    ));
    app.update(key(KeyCode::Esc));
    assert_eq!(app.view, View::Fleet, "tabs do not stack");
}

#[test]
fn start_runs_at_once_and_stop_asks_first_as_a_job_on_that_agent() {
    let mut app = containers_open(Role::Operator);
    select(&mut app, "web-1", "web");
    app.update(key(KeyCode::Char('S')));
    let cmds = app.take_commands();
    let [Command::Exec { run, request }] = cmds.as_slice() else {
        panic!("one exec expected, got {cmds:?}")
    };
    assert_eq!(request.selector, web1().to_string());
    assert_eq!(
        request.command,
        ExecCommand::Container {
            action: ContainerAction::Start,
            containers: vec!["web".into()],
            stop_timeout_s: None
        }
    );
    assert!(app.notice.as_deref().is_some_and(|n| n.contains("running")));
    assert!(matches!(app.view, View::Workloads { .. }), "the list stays");
    let run = *run;

    // Its end is told in the footer and the list is asked for again.
    for ev in [
        ExecEvent::Accepted {
            job: JobId(7),
            targets: 1,
        },
        ExecEvent::Targets(vec![Target {
            id: web1(),
            name: "web-1".into(),
            online: true,
        }]),
        ExecEvent::Agent {
            agent: web1(),
            event: flotilla_wire::exec::AgentEvent::Exited(flotilla_wire::exec::ExitReport {
                code: Some(0),
                ..Default::default()
            }),
        },
        ExecEvent::Done(JobSummary {
            job: JobId(7),
            targets: 1,
            counts: JobCounts {
                succeeded: 1,
                ..JobCounts::default()
            },
            duration_ms: 5,
        }),
    ] {
        app.update(Event::Exec {
            run,
            update: ExecUpdate::Event(Box::new(ev)),
        });
    }
    assert_eq!(
        app.notice.as_deref(),
        Some("container start web on web-1: ok")
    );
    assert_eq!(
        app.take_commands(),
        [
            Command::Containers {
                selector: "all".into()
            },
            Command::ContainerHistory {
                agent: web1().to_string(),
                container: all_containers()[0].info.id.clone(),
            }
        ]
    );

    for (k, action) in [
        ('T', ContainerAction::Stop),
        ('R', ContainerAction::Restart),
        ('K', ContainerAction::Kill),
        ('D', ContainerAction::Remove),
    ] {
        app.update(key(KeyCode::Char(k)));
        assert_eq!(
            app.confirm.as_ref().map(|c| c.question.as_str()),
            Some(format!("{} web on web-1? y/N", action.as_str()).as_str())
        );
        assert!(app.take_commands().is_empty(), "nothing runs before y");
        app.update(key(KeyCode::Char('n')));
        assert!(app.confirm.is_none());
        assert!(app.take_commands().is_empty(), "n runs nothing");
        assert!(
            app.notice
                .as_deref()
                .is_some_and(|n| n.starts_with("not run"))
        );
    }
    app.update(key(KeyCode::Char('T')));
    app.update(key(KeyCode::Char('y')));
    let cmds = app.take_commands();
    assert!(
        matches!(cmds.as_slice(), [Command::Exec { request, .. }]
        if request.command == ExecCommand::Container {
            action: ContainerAction::Stop,
            containers: vec!["web".into()],
            stop_timeout_s: None,
        }),
        "{cmds:?}"
    );
}

#[test]
fn a_refused_action_says_why_in_the_agents_words() {
    let mut app = containers_open(Role::Operator);
    select(&mut app, "web-1", "web");
    app.update(key(KeyCode::Char('S')));
    let Some(Command::Exec { run, .. }) = app.take_commands().into_iter().next() else {
        panic!("exec expected")
    };
    for ev in [
        ExecEvent::Targets(vec![Target {
            id: web1(),
            name: "web-1".into(),
            online: true,
        }]),
        ExecEvent::Agent {
            agent: web1(),
            event: flotilla_wire::exec::AgentEvent::Failed(flotilla_wire::exec::ExecFailure {
                kind: flotilla_wire::exec::FailureKind::Refused,
                message: "containers = \"read\" on this agent".into(),
            }),
        },
        ExecEvent::Done(JobSummary {
            job: JobId(8),
            targets: 1,
            counts: JobCounts {
                refused: 1,
                ..JobCounts::default()
            },
            duration_ms: 1,
        }),
    ] {
        app.update(Event::Exec {
            run,
            update: ExecUpdate::Event(Box::new(ev)),
        });
    }
    assert_eq!(
        app.notice.as_deref(),
        Some("container start web on web-1: refused: containers = \"read\" on this agent")
    );
}

#[test]
fn action_keys_are_hidden_from_viewers_and_where_the_policy_refuses() {
    // A viewer: no action key works, none is listed.
    let mut app = containers_open(Role::Viewer);
    select(&mut app, "web-1", "web");
    assert_eq!(app.grants(), Grants::acting(false));
    for k in ['S', 'T', 'R', 'K', 'D'] {
        app.update(key(KeyCode::Char(k)));
        assert!(app.confirm.is_none() && app.take_commands().is_empty());
    }
    let help: Vec<_> = keymap::help(&app.view, app.grants())
        .iter()
        .map(|b| b.help)
        .collect();
    assert!(!help.contains(&"kill/rm"), "{help:?}");

    // An operator, on an agent whose policy only reads containers.
    let mut app = containers_open(Role::Operator);
    select(&mut app, "db-1", "pg");
    assert!(!app.grants().containers);
    app.update(key(KeyCode::Char('T')));
    assert!(app.confirm.is_none() && app.take_commands().is_empty());
    // The same operator on web-1, which manages them: the keys are there.
    select(&mut app, "web-1", "worker");
    assert!(app.grants().containers);
    let help: Vec<_> = keymap::help(&app.view, app.grants())
        .iter()
        .map(|b| b.help)
        .collect();
    assert!(help.contains(&"kill/rm"), "{help:?}");
}

#[test]
fn unit_actions_follow_the_allowlist_and_ask_before_interrupting() {
    let mut app = fixture(Role::Admin);
    app.update(key(KeyCode::Char('7')));
    assert_eq!(
        app.take_commands(),
        [Command::Services {
            selector: "all".into()
        }]
    );
    app.update(Event::Services {
        selector: "all".into(),
        result: Ok(all_units()),
    });
    assert_eq!(
        app.services
            .visible_rows()
            .next()
            .map(|r| r.info.name.as_str()),
        Some("backup.service"),
        "failed units first"
    );
    select_unit(&mut app, "sshd.service");
    assert!(!app.grants().services, "not in web-1's allowlist");
    app.update(key(KeyCode::Char('R')));
    assert!(app.confirm.is_none() && app.take_commands().is_empty());

    select_unit(&mut app, "nginx.service");
    assert!(app.grants().services);
    app.update(key(KeyCode::Char('L')));
    let cmds = app.take_commands();
    assert!(
        matches!(cmds.as_slice(), [Command::Exec { request, .. }]
            if request.command == ExecCommand::Service {
                action: ServiceAction::Reload,
                units: vec!["nginx.service".into()],
            } && request.selector == web1().to_string()),
        "reload does not interrupt: it runs at once, {cmds:?}"
    );
    for (k, action) in [
        ('T', ServiceAction::Stop),
        ('R', ServiceAction::Restart),
        ('D', ServiceAction::Disable),
    ] {
        app.update(key(KeyCode::Char(k)));
        assert!(
            app.confirm
                .as_ref()
                .is_some_and(|c| c.question.starts_with(action.as_str())),
            "{k}"
        );
        app.update(key(KeyCode::Esc));
        assert!(app.take_commands().is_empty());
    }
    app.update(key(KeyCode::Char('E')));
    assert!(matches!(
        app.take_commands().as_slice(),
        [Command::Exec { .. }]
    ));
    select_unit(&mut app, "postgresql.service");
    assert!(!app.grants().services, "db-1 only reads its units");
}

#[test]
fn l_follows_a_log_with_search_and_pause_and_esc_closes_it() {
    let mut app = containers_open(Role::Viewer);
    select(&mut app, "web-1", "web");
    app.update(key(KeyCode::Char('l')));
    assert_eq!(app.view, View::Logs);
    let cmds = app.take_commands();
    let [Command::Logs { id, request }] = cmds.as_slice() else {
        panic!("a logs stream expected, got {cmds:?}")
    };
    assert_eq!(
        *request,
        LogsRequest {
            agent: web1().to_string(),
            source: LogSource::Container(all_containers()[0].info.id.clone()),
            tail: workloads::LOG_TAIL,
            follow: true,
        }
    );
    let id = *id;
    let data = |s: &str| Event::Log {
        id,
        update: LogUpdate::Frame(Box::new(LogFrame::Data {
            stream: flotilla_wire::exec::OutputStream::Stdout,
            at_ms: None,
            data: flotilla_wire::Chunk(s.as_bytes().to_vec()),
        })),
    };
    app.update(Event::Log {
        id,
        update: LogUpdate::Frame(Box::new(LogFrame::Started {
            resolved: "abc".into(),
        })),
    });
    assert!(app.update(data("GET /\nGET /health\nPOST /login\n")));
    app.update(key(KeyCode::Char('/')));
    typed(&mut app, "GET");
    app.update(key(KeyCode::Enter));
    let logs = app.logs.as_ref().expect("logs");
    assert_eq!(logs.shown().count(), 2);
    app.update(key(KeyCode::Char(' ')));
    assert!(app.logs.as_ref().is_some_and(|l| l.paused));
    app.update(data("GET /again\n"));
    assert_eq!(
        app.logs.as_ref().map(|l| l.scroll),
        Some(1),
        "paused: the screen holds still"
    );
    app.update(key(KeyCode::Char('p')));
    assert_eq!(
        app.logs.as_ref().map(|l| l.scroll),
        Some(0),
        "following again"
    );
    app.update(key(KeyCode::Char('p')));
    app.update(key(KeyCode::Char('k')));
    assert!(app.logs.as_ref().is_some_and(|l| l.paused && l.scroll == 1));
    app.update(key(KeyCode::Char('G')));
    assert!(
        app.logs
            .as_ref()
            .is_some_and(|l| !l.paused && l.scroll == 0),
        "G follows the newest line again"
    );
    // A stale stream's frames are dropped.
    assert!(!app.update(Event::Log {
        id: id + 1,
        update: LogUpdate::Failed("x".into())
    }));
    app.update(key(KeyCode::Esc));
    assert_eq!(
        app.take_commands(),
        [
            Command::CloseLogs { id },
            Command::Containers {
                selector: "all".into()
            },
            Command::ContainerHistory {
                agent: web1().to_string(),
                container: all_containers()[0].info.id.clone(),
            }
        ],
        "the stream ends; the list it came from is asked for again"
    );
    assert!(matches!(app.view, View::Workloads { .. }));
}

#[test]
fn workload_counts_arrive_with_the_fleet_and_are_cleared_by_a_new_snapshot() {
    let mut app = fixture(Role::Operator);
    assert_eq!(app.workload_counts.len(), 2);
    assert_eq!(app.workload_counts[&web1()].units_failed, 1);
    app.update(Event::Fleet(Box::new(FleetEvent::Snapshot(vec![agent(
        web1(),
        "web-1",
    )]))));
    assert!(
        app.workload_counts.is_empty(),
        "the hub sends them again after its snapshot"
    );
}

#[test]
fn the_selected_containers_hour_is_asked_for_when_the_selection_moves_and_every_30_s() {
    let mut app = containers_open(Role::Viewer);
    let cache = all_containers()[4].info.id.clone();
    let minute = |cpu: f32| flotilla_wire::workloads::ContainerMinute {
        start_ms: 0,
        cpu_avg: cpu,
        cpu_max: cpu,
        mem_avg: 1 << 20,
        ..Default::default()
    };
    assert!(app.update(Event::ContainerHistory {
        agent: db1().to_string(),
        container: cache.clone(),
        result: Ok(vec![minute(5.0), minute(7.0)]),
    }));
    assert!(matches!(
        app.container_history.as_ref().map(|h| &h.minutes),
        Some(Fetched::Ready(m)) if m.len() == 2
    ));
    // Same selection: the next refreshes ask for the list only.
    app.update(Event::Tick);
    app.update(Event::Tick);
    assert_eq!(
        app.take_commands(),
        [Command::Containers {
            selector: "all".into()
        }]
    );
    app.update(Event::Containers {
        selector: "all".into(),
        result: Ok(all_containers()),
    });
    // Another container: its hour, and the old answer is no longer shown.
    app.update(key(KeyCode::Char('j')));
    app.update(Event::Tick);
    app.update(Event::Tick);
    let worker = all_containers()[1].info.id.clone();
    assert_eq!(
        app.take_commands(),
        [
            Command::Containers {
                selector: "all".into()
            },
            Command::ContainerHistory {
                agent: web1().to_string(),
                container: worker.clone(),
            }
        ]
    );
    assert!(matches!(
        app.container_history.as_ref().map(|h| &h.minutes),
        Some(Fetched::Loading)
    ));
    assert!(
        !app.update(Event::ContainerHistory {
            agent: db1().to_string(),
            container: cache,
            result: Ok(Vec::new()),
        }),
        "a late answer for the old selection is dropped"
    );
    // Thirty seconds on, the same container's hour is asked for again.
    app.update(Event::Containers {
        selector: "all".into(),
        result: Ok(all_containers()),
    });
    for _ in 0..30 {
        app.update(Event::Tick);
        if let Some(h) = app.container_history.as_mut() {
            h.minutes = Fetched::Ready(Vec::new());
        }
        app.containers.in_flight = false;
    }
    let cmds = app.take_commands();
    assert!(
        cmds.contains(&Command::ContainerHistory {
            agent: web1().to_string(),
            container: worker,
        }),
        "{cmds:?}"
    );
}

#[test]
fn colon_in_a_list_runs_on_the_agent_of_the_row_under_the_cursor() {
    let mut app = containers_open(Role::Operator);
    // A mark from the fleet view does not decide here: the row's agent does.
    app.marks.insert(web1());
    app.update(key(KeyCode::Char(':')));
    let Some(Prompt {
        kind: PromptKind::Exec { selector, who },
        ..
    }) = &app.prompt
    else {
        panic!("exec prompt expected")
    };
    assert_eq!((selector.as_str(), who.as_str()), (db1().as_str(), "db-1"));
    app.update(key(KeyCode::Esc));
    let mut app = containers_open(Role::Viewer);
    app.update(key(KeyCode::Char(':')));
    assert!(app.prompt.is_none(), "a viewer runs nothing");
}
