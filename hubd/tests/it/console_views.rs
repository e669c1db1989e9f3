//! Every console view rendered from real hub data at 80x24 and 160x48 and pinned with insta.
//!
//! Three agents are driven by hand over the real protocol (hello, then one metrics sample each with
//! fixed values), the console's own client subscribes to the hub, and its events build the `App`
//! that is drawn into ratatui's `TestBackend`. Ids are filtered out of the snapshots.

use crate::harness::console::render;
use crate::harness::{Client, DEADLINE, Fleet, within};
use flotilla::app::App;
use flotilla::client::{Client as ConsoleClient, Login};
use flotilla::event::Event;
use flotilla_wire::msg::{DiskUsage, MetricsSample, NetRate, OpRequest, OpResponse, ProcessInfo};

fn sample(cpu: f32, mem_gib: u64) -> MetricsSample {
    MetricsSample {
        at_ms: 1_800_000_000_000,
        cpu_pct: cpu,
        per_core_pct: vec![cpu, cpu / 2.0],
        load: [0.5, 0.25, 0.1],
        mem_used: mem_gib << 30,
        mem_total: 8 << 30,
        swap_used: 0,
        swap_total: 1 << 30,
        disks: vec![DiskUsage {
            mount: "/".into(),
            used: 60 << 30,
            total: 100 << 30,
        }],
        disk_read_bps: 0,
        disk_write_bps: 0,
        nets: vec![NetRate {
            iface: "eth0".into(),
            rx_bps: 1500,
            tx_bps: 500,
        }],
        uptime_s: 3 * 86_400 + 4 * 3600,
        procs: 123,
        temps: vec![],
        top_cpu: vec![ProcessInfo {
            pid: 4242,
            name: "postgres".into(),
            cpu_pct: cpu,
            rss: 512 << 20,
        }],
        top_mem: vec![ProcessInfo {
            pid: 4242,
            name: "postgres".into(),
            cpu_pct: cpu,
            rss: 512 << 20,
        }],
    }
}

fn snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"[ao]-[0-9a-f]{16}", "[id]");
    settings.add_filter(r"hub \d+\.\d+\.\d+", "hub [version]");
    // The offline agent was last seen at enrolment, by the hub's clock, while the app's clock is
    // fixed (the samples' time): its age depends on the day the test runs.
    settings.add_filter(r" +\d+[smhd] ago", " [age] ago");
    settings.bind(|| insta::assert_snapshot!(name, text));
}

#[tokio::test(flavor = "multi_thread")]
async fn console_views_at_80x24_and_160x48() {
    let fleet = Fleet::new().await;
    let mut agents = Vec::new();
    for (name, cpu, mem) in [("web-1", 12.0, 2), ("web-2", 95.0, 7), ("db-1", 40.0, 5)] {
        let token = fleet
            .token(
                flotilla_wire::Role::Agent,
                1,
                vec![("env".into(), "prod".into())],
            )
            .await;
        let agent = crate::harness::TestAgent::enrol(
            &token.token,
            name,
            vec![("role".into(), name[..name.len() - 2].into())],
        )
        .await
        .expect("enrol");
        let client = Client::hello(&agent.identity(), &fleet.hubs())
            .await
            .expect("agent hello");
        agents.push((agent, client, sample(cpu, mem)));
    }
    let offline = fleet.enrol_agent("cache-1", Vec::new()).await;
    let login = Login::load(&fleet.paths.admin_dir(), None).expect("admin login");
    let console = ConsoleClient::connect(&login)
        .await
        .expect("console connects");
    let mut app = App::new(1_800_000_000_000);
    app.update(Event::Connected(Box::new(console.welcome.clone())));
    let mut events = console.subscribe().await.expect("subscribe");
    let mut streams = Vec::new();
    for (_, client, sample) in &agents {
        streams.push(client.send_sample(sample.clone()).await);
    }
    within(
        DEADLINE,
        "three agents with metrics in the console",
        async {
            loop {
                let ev = events
                    .next()
                    .await
                    .expect("event")
                    .expect("subscription open");
                app.update(Event::Fleet(Box::new(ev)));
                let reporting = app.agents.values().filter(|a| a.latest.is_some()).count();
                if reporting == 3 && app.agents.len() == 4 {
                    break;
                }
            }
        },
    )
    .await;
    app.prepare();
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(&format!("fleet_{w}x{h}"), &render(&app, w, h));
    }
    // Sorted by CPU, then filtered by a label.
    app.update(Event::Key(crossterm_key('s')));
    app.prepare();
    snapshot("fleet_sorted_by_cpu_80x24", &render(&app, 80, 24));
    for c in "/role=web".chars() {
        app.update(Event::Key(crossterm_key(c)));
    }
    snapshot("fleet_filter_typing_80x24", &render(&app, 80, 24));
    app.update(Event::Key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::Enter,
    )));
    snapshot("fleet_filtered_80x24", &render(&app, 80, 24));
    app.update(Event::Key(crossterm_key('?')));
    snapshot("help_80x24", &render(&app, 80, 24));
    app.update(Event::Key(crossterm_key('x')));

    // The agent view, with the full detail the console polls for.
    app.update(Event::Key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::Enter,
    )));
    let focused = app.focused().expect("agent view open");
    match console
        .request(&OpRequest::Agent {
            query: focused.to_string(),
        })
        .await
        .expect("agent detail")
    {
        OpResponse::Agent(info) => {
            app.update(Event::Detail(Box::new(info)));
        }
        other => panic!("agent answered {other:?}"),
    }
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(&format!("agent_{w}x{h}"), &render(&app, w, h));
    }
    drop(streams);
    drop(offline);
    console.close().await;
}

fn crossterm_key(c: char) -> crossterm::event::KeyEvent {
    crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Char(c))
}
