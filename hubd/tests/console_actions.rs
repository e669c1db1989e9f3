//! The console's acting views, driven through its real network task against a real hub with three
//! real agents (exec = any, shared folders on disk): run a command on marked agents, a failing one on
//! one agent, browse a shared folder, copy a file to another agent (and check the bytes landed),
//! then the jobs, job detail and audit views; and a viewer who gets none of the acting keys. Every
//! view is pinned with insta at 80x24 (and the wide ones at 160x48); times, durations and ids are
//! filtered out.

mod console_support;
mod exec_support;

use console_support::render;
use crossterm::event::{KeyCode, KeyEvent};
use exec_support::{AgentSpec, DEADLINE, Fleet};
use flotilla::app::tree::TransferState;
use flotilla::app::{App, Fetched, View};
use flotilla::client::Login;
use flotilla::console::Console;
use flotilla::event::Event;
use flotilla::history::HistoryFile;
use flotilla_wire::Role;
use flotilla_wire::msg::Status;
use std::time::Duration;

/// The clock the console renders relative times against.
const NOW_MS: u64 = 1_800_000_000_000;

fn snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    // Ids, also cut short by narrow columns; token, transfer and hash hex.
    settings.add_filter(r"\b[aot]-[0-9a-f]{4,16}\b", "[id]");
    settings.add_filter(r"\b[0-9a-f]{8,64}\b", "[hex]");
    settings.add_filter(r"hub \d+\.\d+\.\d+", "hub [version]");
    settings.add_filter(r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?Z?", "[date time]");
    settings.add_filter(r"\b\d\d:\d\d:\d\dZ", "[time]");
    settings.add_filter(r"(after|in) \d+(\.\d+)?m?s", "$1 [t]");
    settings.add_filter(r"(after|in) \d+m\d\ds", "$1 [t]");
    settings.add_filter(r"\b\d+(\.\d)?s\b", "[t]");
    settings.add_filter(r"\(\d+ms\)", "([t])");
    settings.add_filter(r"\b\d+ms\b", "[t]");
    settings.add_filter(r"\b\d+ ms\b", "[t]");
    settings.bind(|| insta::assert_snapshot!(name, text));
}

/// Real agents report real (changing) metrics; the fleet table's rendering of metrics is pinned by
/// `console_views` with fixed samples, so here they are blanked before a fleet snapshot.
fn without_metrics(app: &mut App) {
    for a in app.agents.values_mut() {
        a.latest = None;
    }
    app.cpu_history.clear();
}

fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::from(code))
}

fn keys(console: &mut Console, text: &str) {
    for c in text.chars() {
        console.apply(key(KeyCode::Char(c)));
    }
}

/// Applies events from the hub until `done` accepts the state. `nudge` runs every half second
/// without news (to ask again for a listing the agent has not reported yet).
async fn until(
    console: &mut Console,
    what: &str,
    done: impl Fn(&App) -> bool,
    mut nudge: impl FnMut(&mut Console),
) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(&console.app) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "console never showed {what}; screen:\n{}",
            render(&console.app, 120, 30)
        );
        match tokio::time::timeout(Duration::from_millis(500), console.step()).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("console queue closed while waiting for {what}"),
            Err(_) => nudge(console),
        }
    }
}

fn online(app: &App) -> usize {
    app.agents
        .values()
        .filter(|a| a.status == Status::Online)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn console_runs_commands_copies_files_and_shows_jobs_and_audit() {
    let fleet = Fleet::start(vec![
        AgentSpec::any("web-1").label("role", "web"),
        AgentSpec::any("web-2").label("role", "web"),
        AgentSpec::any("db-1").label("role", "db"),
    ])
    .await;
    let db_shared = fleet.agent("db-1").dir.join("shared");
    std::fs::create_dir_all(db_shared.join("reports")).expect("mkdir");
    let csv = b"day,orders\nmon,12\ntue,15\n".to_vec();
    std::fs::write(db_shared.join("reports/q3.csv"), &csv).expect("write");
    std::fs::write(db_shared.join("notes.txt"), b"rotate keys\n").expect("write");

    let login = Login::load(&fleet.paths.admin_dir(), None).expect("admin login");
    // Yesterday's console left a command in the history file.
    let state = tempfile::tempdir().expect("tempdir");
    let history = HistoryFile::at(state.path().join("flotilla/console_history"));
    history.append("echo yesterday").expect("history");
    let mut console = Console::attach(login, NOW_MS).with_history(history.clone());
    until(
        &mut console,
        "three agents online",
        |app| app.can_act() && online(app) == 3,
        |_| {},
    )
    .await;

    // Mark the web agents through the filter and run a command on them.
    keys(&mut console, "/web");
    console.apply(key(KeyCode::Enter));
    keys(&mut console, "*");
    keys(&mut console, ":echo hello; uname -s");
    without_metrics(&mut console.app);
    snapshot("exec_prompt_80x24", &render(&console.app, 80, 24));
    console.apply(key(KeyCode::Enter));
    assert_eq!(console.app.view, View::Output);
    until(
        &mut console,
        "the first job's summary",
        |app| app.run.as_ref().is_some_and(|r| !r.running()),
        |_| {},
    )
    .await;
    let run = console.app.run.as_ref().expect("run");
    assert_eq!(run.error, None);
    assert_eq!(run.panes.len(), 2, "the two marked agents ran it");
    assert_eq!(
        std::fs::read_to_string(history.path()).expect("history"),
        "echo yesterday\necho hello; uname -s\n",
        "the command went to the history file after yesterday's"
    );
    assert_eq!(
        console.app.exec_history,
        ["echo yesterday", "echo hello; uname -s"],
        "Up recalls both"
    );
    for pane in &run.panes {
        let text: Vec<&str> = pane.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(&text[..2], ["hello", "Linux"], "{}: {text:?}", pane.name);
    }
    keys(&mut console, "m");
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(
            &format!("output_per_agent_{w}x{h}"),
            &render(&console.app, w, h),
        );
    }

    // A failing command on one agent: stderr, exit code and a failed summary.
    console.apply(key(KeyCode::Esc));
    console.apply(key(KeyCode::Esc));
    keys(&mut console, "ug");
    assert!(console.app.marks.is_empty() && console.app.filter.is_empty());
    assert_eq!(
        console.app.selected_agent().map(|a| a.name.as_str()),
        Some("db-1")
    );
    keys(
        &mut console,
        ":printf 'one\\ntwo\\n'; echo disk full >&2; exit 3",
    );
    console.apply(key(KeyCode::Enter));
    until(
        &mut console,
        "the second job's summary",
        |app| app.run.as_ref().is_some_and(|r| !r.running()),
        |_| {},
    )
    .await;
    keys(&mut console, "m");
    assert!(console.app.merged);
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(
            &format!("output_merged_{w}x{h}"),
            &render(&console.app, w, h),
        );
    }

    // db-1's shared folder, then copy reports/q3.csv to web-1.
    console.apply(key(KeyCode::Esc));
    keys(&mut console, "f");
    assert_eq!(console.app.view, View::Files);
    until(
        &mut console,
        "db-1's folder with its files",
        |app| {
            // Both files: they were written while db-1 ran, and the agent may report them in two
            // batches (the first can close between the two writes on a loaded machine).
            app.tree
                .as_ref()
                .and_then(|t| t.entries.as_ref())
                .is_some_and(|e| {
                    ["reports/q3.csv", "notes.txt"]
                        .iter()
                        .all(|want| e.iter().any(|e| e.path == *want))
                })
        },
        |c| {
            c.apply(key(KeyCode::Char('r')));
        },
    )
    .await;
    console.apply(key(KeyCode::Enter));
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(&format!("files_{w}x{h}"), &render(&console.app, w, h));
    }
    keys(&mut console, "j");
    let picked = console
        .app
        .tree
        .as_ref()
        .and_then(|t| t.selected_entry())
        .map(|e| e.path.clone());
    assert_eq!(picked.as_deref(), Some("reports/q3.csv"));
    keys(&mut console, "c");
    snapshot("copy_picker_80x24", &render(&console.app, 80, 24));
    console.apply(key(KeyCode::Enter));
    console.apply(key(KeyCode::Enter));
    assert_eq!(console.app.view, View::Transfers);
    until(
        &mut console,
        "the copy to finish",
        |app| app.transfers.first().is_some_and(|t| t.state.is_final()),
        |_| {},
    )
    .await;
    assert!(
        matches!(console.app.transfers[0].state, TransferState::Done(_)),
        "{:?}",
        console.app.transfers[0].state
    );
    let landed = fleet.agent("web-1").dir.join("shared/reports/q3.csv");
    assert_eq!(
        std::fs::read(&landed).expect("copied file"),
        csv,
        "the same bytes on web-1"
    );
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(&format!("transfers_{w}x{h}"), &render(&console.app, w, h));
    }

    // Jobs, one job's results, and the audit log.
    keys(&mut console, "4");
    until(
        &mut console,
        "both jobs listed",
        |app| matches!(&app.jobs, Fetched::Ready(j) if j.len() == 2),
        |_| {},
    )
    .await;
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(&format!("jobs_{w}x{h}"), &render(&console.app, w, h));
    }
    console.apply(key(KeyCode::Enter));
    until(
        &mut console,
        "the newest job's results",
        |app| matches!(&app.job_detail, Some(Fetched::Ready(_))),
        |_| {},
    )
    .await;
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(&format!("job_detail_{w}x{h}"), &render(&console.app, w, h));
    }
    keys(&mut console, "5");
    until(
        &mut console,
        "the audit log",
        |app| matches!(&app.audit, Fetched::Ready(a) if a.iter().any(|e| e.action == "transfer.done")),
        |c| {
            c.apply(key(KeyCode::Char('r')));
        },
    )
    .await;
    for (w, h) in [(80, 24), (160, 48)] {
        snapshot(&format!("audit_{w}x{h}"), &render(&console.app, w, h));
    }
    drop(console);

    // A viewer: no run or copy keys in the footer, ':' does nothing, the hub refuses jobs.
    let viewer = fleet.client(Role::Viewer, "viewer").await;
    viewer.close().await;
    let login = Login::load(&fleet.tmp.path().join("login-viewer"), None).expect("viewer login");
    let mut console = Console::attach(login, NOW_MS);
    until(
        &mut console,
        "the viewer attached",
        |app| app.role() == Some(Role::Viewer) && online(app) == 3,
        |_| {},
    )
    .await;
    keys(&mut console, ":");
    assert!(console.app.prompt.is_none(), "a viewer gets no prompt");
    without_metrics(&mut console.app);
    snapshot("viewer_fleet_80x24", &render(&console.app, 80, 24));
    keys(&mut console, "4");
    until(
        &mut console,
        "the hub's answer to a viewer's jobs query",
        |app| !matches!(app.jobs, Fetched::Loading),
        |_| {},
    )
    .await;
    assert!(
        matches!(&console.app.jobs, Fetched::Failed(_)),
        "viewers may not read jobs"
    );
    snapshot("viewer_jobs_80x24", &render(&console.app, 80, 24));
    drop(console);
    fleet.shutdown().await;
}
