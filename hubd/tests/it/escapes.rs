//! What agents choose (file names, host names, OS and version strings, process names, mount
//! points) reaches operators' screens with its control characters escaped: the `flotilla` binary's
//! text output and the console's views show `\x1b`, `\u{9b}`, `\u{202e}` where an agent put an
//! escape sequence or a bidi override, and never the raw character; `--json` keeps the exact text.
//!
//! One real agent shares a folder holding hostile file names; a second agent, driven by hand over
//! the real protocol, says hello with a hostile host name, OS and version and reports a process
//! and a disk with hostile names (any unprivileged user on a host can rename a process).

use crate::harness::console::{key, keys, render, until};
use crate::harness::files::{DEADLINE, Fleet, files_fleet_with, spec};
use crate::harness::flotilla_bin;
use crate::harness::{TestAgent, run_cmd, within};
use crossterm::event::KeyCode;
use flotilla::app::View;
use flotilla::client::Login;
use flotilla::console::Console;
use flotilla_certs::dial;
use flotilla_wire::PROTOCOL_VERSION;
use flotilla_wire::io::write_frame;
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_METRICS_FRAME};
use flotilla_wire::msg::{
    DiskUsage, FleetEvent, Hello, MetricsFrame, MetricsSample, ProcessInfo, StreamOpen,
};

/// A file name that clears the screen of whoever lists it raw.
const EVIL_FILE: &str = "evil\x1b[2Jname";
/// How [`EVIL_FILE`] is shown.
const EVIL_FILE_SHOWN: &str = r"evil\x1b[2Jname";
/// A right-to-left override: `invoice<RLO>fdp.exe` reads as `invoiceexe.pdf`.
const RTL_FILE: &str = "invoice\u{202e}fdp.exe";
/// How [`RTL_FILE`] is shown.
const RTL_FILE_SHOWN: &str = r"invoice\u{202e}fdp.exe";
/// A host name that sets the terminal's title.
const EVIL_HOST: &str = "db\x1b]0;owned\x07";
/// How [`EVIL_HOST`] is shown.
const EVIL_HOST_SHOWN: &str = r"db\x1b]0;owned\x07";
/// An OS string with a C1 control sequence introducer.
const EVIL_OS: &str = "linux\u{9b}31m";
/// How [`EVIL_OS`] is shown.
const EVIL_OS_SHOWN: &str = r"linux\u{9b}31m";
/// A process name (prctl PR_SET_NAME allows 15 bytes) with an escape.
const EVIL_PROC: &str = "kw\x1b[8mhidden";
/// How [`EVIL_PROC`] is shown.
const EVIL_PROC_SHOWN: &str = r"kw\x1b[8mhidden";
/// A mount point with DEL and a first-strong isolate.
const EVIL_MOUNT: &str = "/mnt/\u{7f}\u{2068}x";
/// How [`EVIL_MOUNT`] is shown.
const EVIL_MOUNT_SHOWN: &str = r"/mnt/\x7f\u{2068}x";
/// The hand-driven agent's name (names themselves are checked by the hub).
const PROC_AGENT: &str = "proc-1";
/// The real agent sharing the hostile files.
const FILES_AGENT: &str = "web-1";

/// Characters no output meant for a terminal may hold raw.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
        })
        .collect()
}

/// An agent driven by hand: it said hello with hostile strings and sent one hostile sample.
struct HostileAgent {
    _streams: (quinn::SendStream, quinn::RecvStream, quinn::SendStream),
    _conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
    _agent: TestAgent,
}

impl HostileAgent {
    async fn connect(fleet: &Fleet) -> Self {
        let agent = fleet.enrol_agent(PROC_AGENT, Vec::new()).await;
        let endpoint = dial::client_endpoint(false).expect("endpoint");
        let config = dial::identity_config(&agent.identity()).expect("client TLS configuration");
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            software_version: "9.9.9".into(),
            hostname: EVIL_HOST.into(),
            os: EVIL_OS.into(),
        };
        let (conn, control_send, control_recv, _welcome) = within(
            DEADLINE,
            "hostile agent's hello",
            dial::hello(&endpoint, &fleet.hubs(), config, hello),
        )
        .await
        .expect("the hub welcomes the agent");
        let sample = MetricsSample {
            at_ms: 1_800_000_000_000,
            cpu_pct: 50.0,
            per_core_pct: vec![50.0],
            mem_used: 1 << 30,
            mem_total: 4 << 30,
            disks: vec![DiskUsage {
                mount: EVIL_MOUNT.into(),
                used: 1 << 30,
                total: 2 << 30,
            }],
            uptime_s: 600,
            procs: 3,
            top_cpu: vec![ProcessInfo {
                pid: 31337,
                name: EVIL_PROC.into(),
                cpu_pct: 49.0,
                rss: 1 << 20,
            }],
            top_mem: vec![ProcessInfo {
                pid: 31337,
                name: EVIL_PROC.into(),
                cpu_pct: 49.0,
                rss: 1 << 20,
            }],
            ..MetricsSample::default()
        };
        let mut metrics = conn.open_uni().await.expect("open metrics stream");
        write_frame(&mut metrics, &StreamOpen::Metrics, MAX_CONTROL_FRAME)
            .await
            .expect("write stream open");
        write_frame(
            &mut metrics,
            &MetricsFrame::Sample(sample),
            MAX_METRICS_FRAME,
        )
        .await
        .expect("write sample");
        Self {
            _streams: (control_send, control_recv, metrics),
            _conn: conn,
            _endpoint: endpoint,
            _agent: agent,
        }
    }
}

/// A hub, a real agent sharing hostile file names (its tree at the hub), and the hand-driven agent.
async fn hostile_fleet() -> (Fleet, HostileAgent) {
    let fleet = files_fleet_with(vec![spec(FILES_AGENT).prepare(|shared| {
        for name in [EVIL_FILE, RTL_FILE] {
            std::fs::write(shared.join(name), b"x").expect("write");
        }
    })])
    .await;
    let watcher = fleet.admin_client().await;
    let mut events = watcher.subscribe().await.expect("subscribe");
    let hostile = HostileAgent::connect(&fleet).await;
    within(DEADLINE, "the hostile agent's sample at the hub", async {
        loop {
            let ev = events
                .next()
                .await
                .expect("event")
                .expect("subscription open");
            let reported = match &ev {
                FleetEvent::Metrics { sample, .. } => {
                    sample.top_cpu.iter().any(|p| p.name == EVIL_PROC)
                }
                FleetEvent::Snapshot(list) | FleetEvent::SnapshotMore(list) => list
                    .iter()
                    .any(|a| a.name == PROC_AGENT && a.latest.is_some()),
                _ => false,
            };
            if reported {
                return;
            }
        }
    })
    .await;
    watcher.close().await;
    (fleet, hostile)
}

/// Runs `flotilla --no-mux --login-dir ADMIN args…`; it must succeed. Returns stdout.
async fn flotilla(fleet: &Fleet, args: &[&str]) -> String {
    let dir = fleet.paths.admin_dir();
    let mut all = vec!["--no-mux", "--login-dir", dir.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let out = run_cmd(&flotilla_bin(), &all).await;
    assert!(
        out.status.success(),
        "flotilla {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_shows_control_characters_escaped_and_json_exact() {
    let (fleet, _hostile) = hostile_fleet().await;

    let ls = flotilla(&fleet, &["ls", FILES_AGENT]).await;
    assert!(ls.contains(EVIL_FILE_SHOWN), "ls printed:\n{ls}");
    assert!(ls.contains(RTL_FILE_SHOWN), "ls printed:\n{ls}");
    assert_eq!(raw_controls(&ls), Vec::<char>::new(), "ls printed:\n{ls:?}");

    let json = flotilla(&fleet, &["ls", FILES_AGENT, "--json"]).await;
    let listing: serde_json::Value = serde_json::from_str(&json).expect("ls --json");
    let mut names: Vec<&str> = listing["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, [EVIL_FILE, RTL_FILE], "--json keeps the exact names");

    let detail = flotilla(&fleet, &["agent", PROC_AGENT]).await;
    for shown in [
        EVIL_HOST_SHOWN,
        EVIL_OS_SHOWN,
        EVIL_PROC_SHOWN,
        EVIL_MOUNT_SHOWN,
    ] {
        assert!(
            detail.contains(shown),
            "agent printed no {shown}:\n{detail}"
        );
    }
    assert_eq!(
        raw_controls(&detail),
        Vec::<char>::new(),
        "agent printed:\n{detail:?}"
    );
    let json = flotilla(&fleet, &["agent", PROC_AGENT, "--json"]).await;
    let info: serde_json::Value = serde_json::from_str(&json).expect("agent --json");
    assert_eq!(info["hostname"], EVIL_HOST);
    assert_eq!(info["latest"]["top_cpu"][0]["name"], EVIL_PROC);

    let table = flotilla(&fleet, &["agents"]).await;
    assert!(table.contains(PROC_AGENT), "agents printed:\n{table}");
    assert_eq!(
        raw_controls(&table),
        Vec::<char>::new(),
        "agents printed:\n{table:?}"
    );
}

/// Opens the agent called `name` from the fleet view through the filter.
fn select(console: &mut Console, name: &str) {
    console.apply(key(KeyCode::Esc));
    keys(console, &format!("/{name}"));
    console.apply(key(KeyCode::Enter));
    assert_eq!(
        console.app.selected_agent().map(|a| a.name.as_str()),
        Some(name)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_control_characters_escaped() {
    let (fleet, _hostile) = hostile_fleet().await;
    let login = Login::load(&fleet.paths.admin_dir(), None).expect("admin login");
    let mut console = Console::attach(login, 1_800_000_000_000);
    until(
        &mut console,
        "both agents, the hostile one with metrics",
        |app| {
            app.agents.len() == 2
                && app
                    .agents
                    .values()
                    .any(|a| a.name == PROC_AGENT && a.latest.is_some())
        },
        |_| {},
    )
    .await;

    // The agent view: host, OS, disks and top processes, from the detail polled every second.
    select(&mut console, PROC_AGENT);
    console.apply(key(KeyCode::Enter));
    assert!(matches!(console.app.view, View::Agent(_)));
    until(
        &mut console,
        "the hostile agent's detail",
        |app| app.detail.as_ref().is_some_and(|d| d.latest.is_some()),
        |_| {},
    )
    .await;
    let screen = render(&console.app, 160, 48);
    for shown in [EVIL_HOST_SHOWN, EVIL_OS_SHOWN, EVIL_PROC_SHOWN] {
        assert!(
            screen.contains(shown),
            "agent view lacks {shown}:\n{screen}"
        );
    }
    assert_eq!(
        raw_controls(&screen),
        Vec::<char>::new(),
        "agent view:\n{screen}"
    );

    // The files browser of the agent sharing hostile names.
    console.apply(key(KeyCode::Esc));
    select(&mut console, FILES_AGENT);
    keys(&mut console, "f");
    assert_eq!(console.app.view, View::Files);
    until(
        &mut console,
        "web-1's folder",
        |app| {
            app.tree
                .as_ref()
                .and_then(|t| t.entries.as_ref())
                .is_some_and(|e| e.len() == 2)
        },
        |c| {
            c.apply(key(KeyCode::Char('r')));
        },
    )
    .await;
    let screen = render(&console.app, 160, 48);
    for shown in [EVIL_FILE_SHOWN, RTL_FILE_SHOWN] {
        assert!(
            screen.contains(shown),
            "files view lacks {shown}:\n{screen}"
        );
    }
    assert_eq!(
        raw_controls(&screen),
        Vec::<char>::new(),
        "files view:\n{screen}"
    );
    drop(console);
}
