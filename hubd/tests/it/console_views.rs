//! Every console view rendered from real hub data at 80x24 and 160x48 and pinned with insta.
//!
//! Three agents are driven by hand over the real protocol (hello, then one metrics sample each with
//! fixed values), the console's own client subscribes to the hub, and its events build the `App`
//! that is drawn into ratatui's `TestBackend`. Ids are filtered out of the snapshots. Each case
//! starts from [`Scene::new`] and presses the keys a user would to reach its view.

use crate::harness::TestAgent;
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

/// A hub with three agents driven by hand, each having sent one fixed sample, and a fourth enrolled
/// but never connected; an admin console whose `App` holds all four, three with metrics.
struct Scene {
    app: App,
    console: ConsoleClient,
    _streams: Vec<quinn::SendStream>,
    _agents: Vec<(TestAgent, Client)>,
    _offline: TestAgent,
    _fleet: Fleet,
}

impl Scene {
    async fn new() -> Self {
        let fleet = Fleet::new().await;
        let mut agents = Vec::new();
        let mut samples = Vec::new();
        for (name, cpu, mem) in [("web-1", 12.0, 2), ("web-2", 95.0, 7), ("db-1", 40.0, 5)] {
            let token = fleet
                .token(
                    flotilla_wire::Role::Agent,
                    1,
                    vec![("env".into(), "prod".into())],
                )
                .await;
            let agent = TestAgent::enrol(
                &token.token,
                name,
                vec![("role".into(), name[..name.len() - 2].into())],
            )
            .await
            .expect("enrol");
            let client = Client::hello(&agent.identity(), &fleet.hubs())
                .await
                .expect("agent hello");
            agents.push((agent, client));
            samples.push(sample(cpu, mem));
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
        for ((_, client), sample) in agents.iter().zip(samples) {
            streams.push(client.send_sample(sample).await);
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
        Self {
            app,
            console,
            _streams: streams,
            _agents: agents,
            _offline: offline,
            _fleet: fleet,
        }
    }

    fn key(&mut self, c: char) {
        self.app.update(Event::Key(crossterm_key(c)));
    }

    fn enter(&mut self) {
        self.app.update(Event::Key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Enter,
        )));
    }

    /// Sorted by CPU (`s`), then `/role=web` typed into the filter.
    fn sort_and_type_filter(&mut self) {
        self.key('s');
        self.app.prepare();
        for c in "/role=web".chars() {
            self.key(c);
        }
    }

    async fn close(self) {
        self.console.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_view_shows_every_agent_with_its_metrics() {
    let scene = Scene::new().await;
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(&format!("fleet_{w}x{h}"), &render(&scene.app, w, h));
    }
    scene.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s_sorts_the_fleet_by_cpu() {
    let mut scene = Scene::new().await;
    scene.key('s');
    scene.app.prepare();
    snapshot("fleet_sorted_by_cpu_80x24", &render(&scene.app, 80, 24));
    scene.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_filter_shows_what_is_being_typed() {
    let mut scene = Scene::new().await;
    scene.sort_and_type_filter();
    snapshot("fleet_filter_typing_80x24", &render(&scene.app, 80, 24));
    scene.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_label_filter_keeps_the_matching_agents() {
    let mut scene = Scene::new().await;
    scene.sort_and_type_filter();
    scene.enter();
    snapshot("fleet_filtered_80x24", &render(&scene.app, 80, 24));
    scene.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn help_lists_the_keys() {
    let mut scene = Scene::new().await;
    scene.sort_and_type_filter();
    scene.enter();
    scene.key('?');
    snapshot("help_80x24", &render(&scene.app, 80, 24));
    scene.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_view_shows_the_full_detail_the_console_polls_for() {
    let mut scene = Scene::new().await;
    scene.sort_and_type_filter();
    scene.enter();
    scene.key('?');
    scene.key('x');
    scene.enter();
    let focused = scene.app.focused().expect("agent view open");
    match scene
        .console
        .request(&OpRequest::Agent {
            query: focused.to_string(),
        })
        .await
        .expect("agent detail")
    {
        OpResponse::Agent(info) => {
            scene.app.update(Event::Detail(Box::new(info)));
        }
        other => panic!("agent answered {other:?}"),
    }
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(&format!("agent_{w}x{h}"), &render(&scene.app, w, h));
    }
    scene.close().await;
}

fn crossterm_key(c: char) -> crossterm::event::KeyEvent {
    crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Char(c))
}
