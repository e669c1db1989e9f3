//! Console frame time with 20,000 agents: one metrics event applied and the fleet view redrawn, at
//! 80x24 and 160x48, into ratatui's TestBackend (the cost of building the frame; a real terminal adds
//! only the diff it writes). Run: `cargo bench -p flotilla-tui --bench frame_time`.

use flotilla::app::App;
use flotilla::event::Event;
use flotilla::ui::{self, Theme};
use flotilla_wire::msg::{AgentInfo, DiskUsage, FleetEvent, MetricsSample, NetRate, Status};
use flotilla_wire::{IdentityId, Role};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::time::Instant;

/// The largest fleet.
const AGENTS: usize = 20_000;
/// Frames timed per size.
const FRAMES: usize = 300;

fn agent(i: usize) -> AgentInfo {
    AgentInfo {
        id: IdentityId::from_random(Role::Agent, (i as u64).to_be_bytes()),
        name: format!("node-{i:05}"),
        role: Role::Agent,
        labels: vec![
            (
                "env".into(),
                if i.is_multiple_of(3) {
                    "prod"
                } else {
                    "staging"
                }
                .into(),
            ),
            ("rack".into(), format!("r{}", i % 40)),
        ],
        status: if i.is_multiple_of(10) {
            Status::Offline
        } else {
            Status::Online
        },
        first_seen_ms: 0,
        last_seen_ms: 0,
        version: "0.1.0".into(),
        os: "linux".into(),
        hostname: format!("node-{i:05}"),
        addr: String::new(),
        latest: Some(sample(i)),
    }
}

fn sample(i: usize) -> MetricsSample {
    MetricsSample {
        at_ms: 0,
        cpu_pct: (i % 100) as f32,
        mem_used: (i as u64 % 8) << 30,
        mem_total: 8 << 30,
        disks: vec![DiskUsage {
            mount: "/".into(),
            used: 50,
            total: 100,
        }],
        nets: vec![NetRate {
            iface: "eth0".into(),
            rx_bps: 1000,
            tx_bps: 2000,
        }],
        uptime_s: 86_400,
        ..Default::default()
    }
}

fn main() {
    let theme = Theme { color: true };
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        let mut app = App::new(0);
        app.update(Event::Fleet(Box::new(FleetEvent::Snapshot(
            (0..AGENTS).map(agent).collect(),
        ))));
        // Sorted by CPU, so every metrics event re-sorts the whole fleet: the worst case.
        app.update(Event::Key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Char('s'),
        )));
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        let mut times = Vec::with_capacity(FRAMES);
        for f in 0..FRAMES {
            let started = Instant::now();
            let id =
                IdentityId::from_random(Role::Agent, (((f * 7919) % AGENTS) as u64).to_be_bytes());
            let mut s = sample(f);
            s.cpu_pct = (f % 100) as f32;
            app.update(Event::Fleet(Box::new(FleetEvent::Metrics {
                id,
                sample: s,
            })));
            app.prepare();
            terminal
                .draw(|frame| ui::render(&app, theme, frame))
                .expect("draw");
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let p = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
        println!(
            "frame_time {w}x{h}, {AGENTS} agents, sorted by cpu: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            p(0.5),
            p(0.99),
            p(1.0)
        );
    }
}
