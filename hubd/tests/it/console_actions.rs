//! The console's acting views, driven through its real network task against a real hub with three
//! real agents (exec = any, shared folders on disk): run a command on marked agents, a failing one on
//! one agent, browse a shared folder, copy a file to another agent (and check the bytes landed),
//! then the jobs, job detail and audit views; and a viewer who gets none of the acting keys. Every
//! view is pinned with insta at 80x24 (and the wide ones at 160x48); times, durations and ids are
//! filtered out.
//!
//! Each case starts from [`Scene::new`] and takes the steps its view needs as a user would
//! ([`Scene::run_on_web`], [`Scene::fail_on_db`], [`Scene::open_db_folder`], [`Scene::copy_report`]),
//! so that every view shows what it showed at that point of one long session.

use crate::harness::console::{key, keys, render, until};
use crate::harness::exec::{AgentSpec, Fleet, exec_fleet};
use crossterm::event::KeyCode;
use flotilla::app::tree::TransferState;
use flotilla::app::{App, Fetched, View};
use flotilla::client::Login;
use flotilla::console::Console;
use flotilla::history::HistoryFile;
use flotilla_wire::Role;
use flotilla_wire::msg::Status;
use tempfile::TempDir;

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

fn online(app: &App) -> usize {
    app.agents
        .values()
        .filter(|a| a.status == Status::Online)
        .count()
}

/// Yesterday's command, in the history file before the console starts.
const YESTERDAY: &str = "echo yesterday";
/// The command run on the two web agents.
const WEB_COMMAND: &str = "echo hello; uname -s";
/// What db-1 shares, copied to web-1 by the copy cases.
const CSV: &[u8] = b"day,orders\nmon,12\ntue,15\n";

/// Three exec agents (two web, one db with a report and a note in its shared folder) and an admin
/// console attached to their hub, all three online, with yesterday's command in its history file.
struct Scene {
    fleet: Fleet,
    console: Console,
    history: HistoryFile,
    _state: TempDir,
}

impl Scene {
    async fn new() -> Self {
        let fleet = exec_fleet(vec![
            AgentSpec::any("web-1").label("role", "web"),
            AgentSpec::any("web-2").label("role", "web"),
            AgentSpec::any("db-1").label("role", "db"),
        ])
        .await;
        let db_shared = fleet.agent("db-1").shared.clone();
        std::fs::create_dir_all(db_shared.join("reports")).expect("mkdir");
        std::fs::write(db_shared.join("reports/q3.csv"), CSV).expect("write");
        std::fs::write(db_shared.join("notes.txt"), b"rotate keys\n").expect("write");

        let login = Login::load(&fleet.paths.admin_dir(), None).expect("admin login");
        let state = tempfile::tempdir().expect("tempdir");
        let history = HistoryFile::at(state.path().join("flotilla/console_history"));
        history.append(YESTERDAY).expect("history");
        let mut console = Console::attach(login, NOW_MS).with_history(history.clone());
        until(
            &mut console,
            "three agents online",
            |app| app.can_act() && online(app) == 3,
            |_| {},
        )
        .await;
        Self {
            fleet,
            console,
            history,
            _state: state,
        }
    }

    /// Marks the web agents through the filter and types the command, without running it.
    fn type_web_command(&mut self) {
        keys(&mut self.console, "/web");
        self.console.apply(key(KeyCode::Enter));
        keys(&mut self.console, "*");
        keys(&mut self.console, &format!(":{WEB_COMMAND}"));
    }

    /// Runs the typed command and waits for its summary.
    async fn submit(&mut self, what: &str) {
        self.console.apply(key(KeyCode::Enter));
        assert_eq!(self.console.app.view, View::Output);
        until(
            &mut self.console,
            what,
            |app| app.run.as_ref().is_some_and(|r| !r.running()),
            |_| {},
        )
        .await;
    }

    /// Job 1: the command on the marked web agents, to its summary, then the per-agent view.
    async fn run_on_web(&mut self) {
        self.type_web_command();
        self.submit("the first job's summary").await;
        keys(&mut self.console, "m");
    }

    /// Job 2: marks and filter cleared, a failing command on db-1 (the first agent), to its summary,
    /// then the merged view.
    async fn fail_on_db(&mut self) {
        self.console.apply(key(KeyCode::Esc));
        self.console.apply(key(KeyCode::Esc));
        keys(&mut self.console, "ug");
        assert!(self.console.app.marks.is_empty() && self.console.app.filter.is_empty());
        assert_eq!(
            self.console.app.selected_agent().map(|a| a.name.as_str()),
            Some("db-1")
        );
        keys(
            &mut self.console,
            ":printf 'one\\ntwo\\n'; echo disk full >&2; exit 3",
        );
        self.submit("the second job's summary").await;
        keys(&mut self.console, "m");
        assert!(self.console.app.merged);
    }

    /// The selected agent's (db-1's) shared folder, both files listed, the first folder opened.
    async fn open_db_folder(&mut self) {
        assert_eq!(
            self.console.app.selected_agent().map(|a| a.name.as_str()),
            Some("db-1")
        );
        keys(&mut self.console, "f");
        assert_eq!(self.console.app.view, View::Files);
        until(
            &mut self.console,
            "db-1's folder with its files",
            |app| {
                // Both files: they were written while db-1 ran, and the agent may report them in
                // two batches (the first can close between the two writes on a loaded machine).
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
        self.console.apply(key(KeyCode::Enter));
    }

    /// In the open folder, picks reports/q3.csv and opens the copy picker.
    fn pick_report(&mut self) {
        keys(&mut self.console, "j");
        let picked = self
            .console
            .app
            .tree
            .as_ref()
            .and_then(|t| t.selected_entry())
            .map(|e| e.path.clone());
        assert_eq!(picked.as_deref(), Some("reports/q3.csv"));
        keys(&mut self.console, "c");
    }

    /// Copies reports/q3.csv from db-1's folder to web-1 and waits for the copy to end.
    async fn copy_report(&mut self) {
        self.open_db_folder().await;
        self.pick_report();
        self.console.apply(key(KeyCode::Enter));
        self.console.apply(key(KeyCode::Enter));
        assert_eq!(self.console.app.view, View::Transfers);
        until(
            &mut self.console,
            "the copy to finish",
            |app| app.transfers.first().is_some_and(|t| t.state.is_final()),
            |_| {},
        )
        .await;
    }

    /// Snapshots the screen at 80x24 and 160x48 as `NAME_WxH`.
    fn snapshot_both(&self, name: &str) {
        for (w, h) in [(80, 24), (160, 48)] {
            snapshot(&format!("{name}_{w}x{h}"), &render(&self.console.app, w, h));
        }
    }

    async fn shutdown(self) {
        drop(self.console);
        self.fleet.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prompt_shows_the_command_for_the_marked_agents() {
    let mut scene = Scene::new().await;
    scene.type_web_command();
    without_metrics(&mut scene.console.app);
    snapshot("exec_prompt_80x24", &render(&scene.console.app, 80, 24));
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_on_marked_agents_shows_each_agents_output() {
    let mut scene = Scene::new().await;
    scene.run_on_web().await;
    let run = scene.console.app.run.as_ref().expect("run");
    assert_eq!(run.error, None);
    assert_eq!(run.panes.len(), 2, "the two marked agents ran it");
    for pane in &run.panes {
        let text: Vec<&str> = pane.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(&text[..2], ["hello", "Linux"], "{}: {text:?}", pane.name);
    }
    scene.snapshot_both("output_per_agent");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_run_goes_to_the_history_after_earlier_ones() {
    let mut scene = Scene::new().await;
    scene.run_on_web().await;
    assert_eq!(
        std::fs::read_to_string(scene.history.path()).expect("history"),
        format!("{YESTERDAY}\n{WEB_COMMAND}\n"),
        "the command went to the history file after yesterday's"
    );
    assert_eq!(
        scene.console.app.exec_history,
        [YESTERDAY, WEB_COMMAND],
        "Up recalls both"
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_command_shows_its_stderr_and_exit_status() {
    let mut scene = Scene::new().await;
    scene.run_on_web().await;
    scene.fail_on_db().await;
    scene.snapshot_both("output_merged");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_files_view_lists_a_shared_folder() {
    let mut scene = Scene::new().await;
    scene.open_db_folder().await;
    scene.snapshot_both("files");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_copy_picker_offers_the_other_agents() {
    let mut scene = Scene::new().await;
    scene.open_db_folder().await;
    scene.pick_report();
    snapshot("copy_picker_80x24", &render(&scene.console.app, 80, 24));
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_lands_the_same_bytes_on_the_other_agent() {
    let mut scene = Scene::new().await;
    scene.copy_report().await;
    assert!(
        matches!(scene.console.app.transfers[0].state, TransferState::Done(_)),
        "{:?}",
        scene.console.app.transfers[0].state
    );
    let landed = scene.fleet.agent("web-1").shared.join("reports/q3.csv");
    assert_eq!(
        std::fs::read(&landed).expect("copied file"),
        CSV,
        "the same bytes on web-1"
    );
    scene.snapshot_both("transfers");
    scene.shutdown().await;
}

/// Both jobs run, then the jobs view with both listed.
async fn jobs_listed(scene: &mut Scene) {
    scene.run_on_web().await;
    scene.fail_on_db().await;
    keys(&mut scene.console, "4");
    until(
        &mut scene.console,
        "both jobs listed",
        |app| matches!(&app.jobs, Fetched::Ready(j) if j.len() == 2),
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jobs_view_lists_every_job() {
    let mut scene = Scene::new().await;
    jobs_listed(&mut scene).await;
    scene.snapshot_both("jobs");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_detail_shows_each_agents_result_and_output() {
    let mut scene = Scene::new().await;
    jobs_listed(&mut scene).await;
    scene.console.apply(key(KeyCode::Enter));
    until(
        &mut scene.console,
        "the newest job's results",
        |app| matches!(&app.job_detail, Some(Fetched::Ready(_))),
        |_| {},
    )
    .await;
    scene.snapshot_both("job_detail");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_shows_the_jobs_and_the_copy() {
    let mut scene = Scene::new().await;
    scene.run_on_web().await;
    scene.fail_on_db().await;
    scene.console.apply(key(KeyCode::Esc));
    scene.copy_report().await;
    keys(&mut scene.console, "5");
    until(
        &mut scene.console,
        "the audit log",
        |app| matches!(&app.audit, Fetched::Ready(a) if a.iter().any(|e| e.action == "transfer.done")),
        |c| {
            c.apply(key(KeyCode::Char('r')));
        },
    )
    .await;
    scene.snapshot_both("audit");
    scene.shutdown().await;
}

/// A viewer's console attached to a fleet of three, all online.
async fn viewer_console(fleet: &Fleet) -> Console {
    let login = fleet.login_as(Role::Viewer, "viewer").await;
    let mut console = Console::attach(login, NOW_MS);
    until(
        &mut console,
        "the viewer attached",
        |app| app.role() == Some(Role::Viewer) && online(app) == 3,
        |_| {},
    )
    .await;
    console
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_gets_no_prompt_and_no_acting_keys() {
    let scene = Scene::new().await;
    let mut console = viewer_console(&scene.fleet).await;
    keys(&mut console, ":");
    assert!(console.app.prompt.is_none(), "a viewer gets no prompt");
    without_metrics(&mut console.app);
    snapshot("viewer_fleet_80x24", &render(&console.app, 80, 24));
    drop(console);
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_is_refused_the_jobs_view() {
    let scene = Scene::new().await;
    let mut console = viewer_console(&scene.fleet).await;
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
    scene.shutdown().await;
}
