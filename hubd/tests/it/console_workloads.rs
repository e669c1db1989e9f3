//! The console's containers and services views against a real hub: two swarm agents report
//! synthetic containers and units over the real metrics stream (every fifth container stopped,
//! every tenth unhealthy, every seventh unit failed, policy `read`), and an admin console shows
//! their counts in the fleet view, the fleet-wide lists with a host column and trouble first, the
//! selected container's history, an agent's tabs, and no action key (the agents only let the hub
//! read).

use crate::harness::console::{key, keys, render, until};
use crate::harness::{Fleet, IDLE_DEADLINE, within};
use crossterm::event::KeyCode;
use flotilla::app::workloads::{LogState, WorkKind};
use flotilla::app::{App, Fetched, View};
use flotilla::console::Console;
use flotilla_wire::Role;
use tokio_util::sync::CancellationToken;

/// The clock the console renders relative times against.
const NOW_MS: u64 = 1_800_000_000_000;
/// Containers and units per swarm agent: enough for a stopped container (the fifth), an unhealthy
/// one (the second) and a failed unit (the seventh).
const CONTAINERS: usize = 5;
const UNITS: usize = 7;

fn container_rows(app: &App) -> usize {
    match &app.containers.rows {
        Fetched::Ready(r) => r.len(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_and_services_of_swarm_agents_show_in_the_console() {
    let fleet = Fleet::new().await;
    let token = fleet.token(Role::Agent, 2, Vec::new()).await;
    let dir = tempfile::tempdir().expect("swarm dir");
    let cancel = CancellationToken::new();
    let opts = agentd::swarm::SwarmOptions {
        token: Some(token.token.clone()),
        count: 2,
        dir: dir.path().join("swarm"),
        prefix: "sw".into(),
        metrics_interval_ms: 1000,
        exec: agentd::ExecMode::Off,
        containers: CONTAINERS,
        units: UNITS,
        overrides: None,
    };
    let swarm = tokio::spawn(agentd::swarm::run(opts, cancel.clone()));

    let mut console = Console::attach(fleet.admin_login().clone(), NOW_MS);
    until(
        &mut console,
        "both swarm agents' workload counts",
        |app| {
            app.can_act()
                && app.workload_counts.len() == 2
                && app
                    .workload_counts
                    .values()
                    .all(|c| c.containers_total == CONTAINERS as u32)
        },
        |_| {},
    )
    .await;
    for c in console.app.workload_counts.values() {
        assert_eq!(
            (
                c.containers_running,
                c.containers_troubled,
                c.units_total,
                c.units_failed
            ),
            (4, 1, UNITS as u32, 1)
        );
    }
    let fleet_screen = render(&console.app, 80, 24);
    assert!(
        fleet_screen.contains("CTRS !") && fleet_screen.matches("4/5 2!").count() == 2,
        "the fleet view counts containers and trouble:\n{fleet_screen}"
    );

    // `6`: every container of the fleet, the unhealthy ones first, with their host.
    keys(&mut console, "6");
    assert_eq!(
        console.app.view,
        View::Workloads {
            agent: None,
            kind: WorkKind::Containers
        }
    );
    until(
        &mut console,
        "the fleet's containers",
        |app| container_rows(app) == 2 * CONTAINERS,
        |_| {},
    )
    .await;
    let first: Vec<(String, String)> = console
        .app
        .containers
        .visible_rows()
        .take(2)
        .map(|r| (r.agent_name.clone(), r.info.name.clone()))
        .collect();
    assert_eq!(
        first,
        [
            ("sw-00000".to_string(), "app-01".to_string()),
            ("sw-00001".to_string(), "app-01".to_string())
        ],
        "unhealthy first"
    );
    // Every answer adds a sparkline point to each running container: `r` asks again at once.
    keys(&mut console, "r");
    until(
        &mut console,
        "a second answer",
        |app| !app.containers.in_flight,
        |_| {},
    )
    .await;
    let trends: Vec<usize> = console
        .app
        .containers
        .trends
        .values()
        .map(|t| t.cpu.len())
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(trends, [2; 8], "two points for each running container");
    // The selected container's hour comes from the hub's minute store (empty before its first
    // minute closes, but answered, not refused).
    until(
        &mut console,
        "the selected container's history",
        |app| {
            app.container_history
                .as_ref()
                .is_some_and(|h| matches!(h.minutes, Fetched::Ready(_)))
        },
        |_| {},
    )
    .await;
    let screen = render(&console.app, 80, 24);
    for shown in [
        "HOST",
        "sw-00000",
        "sw-00001",
        "app-04",
        "unhealthy",
        "exited",
    ] {
        assert!(screen.contains(shown), "no {shown} in\n{screen}");
    }
    // The agents only let the hub read: no action key, even for an admin.
    assert!(!console.app.grants().containers);
    keys(&mut console, "T");
    assert!(console.app.confirm.is_none());
    console.apply(key(KeyCode::Char('?')));
    let help = render(&console.app, 80, 24);
    assert!(
        help.contains("logs") && !help.contains("kill/rm"),
        "help without actions:\n{help}"
    );
    console.apply(key(KeyCode::Esc));

    // Filtered to one host and blanked of stats (they change every second), pinned.
    keys(&mut console, "/host=sw-00001");
    console.apply(key(KeyCode::Enter));
    assert_eq!(console.app.containers.visible_len(), CONTAINERS);
    let mut app_view = render(&console.app, 80, 24);
    app_view = app_view
        .lines()
        // The header names the hub's version, cut short here.
        .skip(1)
        .map(|l| {
            // Keep the name and state columns; CPU, memory and sparklines vary.
            let cut: String = l.chars().take(41).collect();
            cut.trim_end().to_string() + "\n"
        })
        .collect();
    insta::assert_snapshot!("fleet_containers_filtered_80x24", app_view);

    // `7`: units, the failed ones first.
    keys(&mut console, "7");
    until(
        &mut console,
        "the fleet's units",
        |app| matches!(&app.services.rows, Fetched::Ready(r) if r.len() == 2 * UNITS),
        |_| {},
    )
    .await;
    assert!(
        console
            .app
            .services
            .visible_rows()
            .take(2)
            .all(|r| r.info.name == "svc-06.service" && r.info.active_state == "failed"),
        "failed units first"
    );

    // An agent's tabs: its containers only, asked for by id.
    keys(&mut console, "1g");
    console.apply(key(KeyCode::Enter));
    let View::Agent(id) = console.app.view.clone() else {
        panic!("agent view expected")
    };
    console.apply(key(KeyCode::Tab));
    until(
        &mut console,
        "one agent's containers",
        |app| container_rows(app) == CONTAINERS,
        |_| {},
    )
    .await;
    assert!(
        console.app.containers.visible_rows().all(|r| r.agent == id),
        "only this agent's containers"
    );
    let tab = render(&console.app, 80, 24);
    assert!(
        tab.contains("containers 4/5") && tab.contains("1 troubled"),
        "{tab}"
    );

    // Swarm agents have no container engine: the log pane says why instead of waiting forever.
    keys(&mut console, "l");
    assert_eq!(console.app.view, View::Logs);
    until(
        &mut console,
        "the log stream's answer",
        |app| {
            app.logs
                .as_ref()
                .is_some_and(|l| matches!(l.state, LogState::Failed(_)))
        },
        |_| {},
    )
    .await;
    console.apply(key(KeyCode::Esc));
    assert!(matches!(console.app.view, View::Workloads { .. }));

    console.shutdown(flotilla::console::QUIT_WAIT).await;
    cancel.cancel();
    within(IDLE_DEADLINE, "swarm stop", swarm)
        .await
        .expect("swarm task")
        .expect("swarm ran");
}
