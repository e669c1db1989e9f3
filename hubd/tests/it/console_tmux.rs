//! The real `flotilla` console in tmux at 80x24 against a real hub with three real agents: what a
//! sysadmin does over SSH: filter, open an agent, run a command on marked agents, copy a file from
//! one agent's shared folder to another. Keys go in with `send-keys`, the screen comes back with
//! `capture-pane`. `.ci/run` installs tmux; without it these tests fail and say so. Each case starts
//! from [`Scene::new`] (the console up, three agents online) and takes a user's steps from there.

use crate::harness::exec::{AgentSpec, Fleet, exec_fleet};
pub(crate) use crate::harness::flotilla_bin;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The screen is redrawn within a second of any change; this is generous for a loaded CI box.
const SCREEN_DEADLINE: Duration = Duration::from_secs(20);

pub(crate) struct Tmux {
    session: String,
}

impl Tmux {
    pub(crate) fn start(command: &str) -> Self {
        // Unique per console, also when `cargo test` runs several cases in one process.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let session = format!(
            "flotilla-test-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &session, "-x", "80", "-y", "24", command])
            .status()
            .expect("tmux must be installed for the console test (.ci/run installs it: apt-get install tmux)");
        assert!(status.success(), "tmux new-session failed");
        Self { session }
    }

    pub(crate) fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .status()
            .expect("send-keys");
        assert!(status.success());
    }

    /// The pane's size as tmux has it (the status line takes a row of the window).
    pub(crate) fn pane_size(&self) -> String {
        let out = Command::new("tmux")
            .args([
                "display-message",
                "-p",
                "-t",
                &self.session,
                "#{pane_height} #{pane_width}",
            ])
            .output()
            .expect("display-message");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub(crate) fn resize(&self, cols: u16, rows: u16) {
        let status = Command::new("tmux")
            .args([
                "resize-window",
                "-t",
                &self.session,
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
            ])
            .status()
            .expect("resize-window");
        assert!(status.success(), "tmux resize-window");
    }

    /// Types `text` literally (no key names).
    pub(crate) fn text(&self, text: &str) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.session, "-l", text])
            .status()
            .expect("send-keys");
        assert!(status.success());
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.session])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Waits until `ok` accepts the screen. The terminal has no change notification, so this polls
    /// the screen on a timer, bounded by the deadline.
    pub(crate) async fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < SCREEN_DEADLINE,
                "screen never showed {what}; last screen:\n{screen}"
            );
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .output();
    }
}

/// Three exec agents (db-1 sharing a report) and the real console in tmux at 80x24, logged in as
/// the hub's admin, showing all three online.
struct Scene {
    tmux: Tmux,
    first_screen: String,
    fleet: Fleet,
}

impl Scene {
    async fn new() -> Self {
        let fleet = exec_fleet(vec![
            AgentSpec::any("web-1"),
            AgentSpec::any("web-2"),
            AgentSpec::any("db-1"),
        ])
        .await;
        let db_shared = fleet.agent("db-1").shared.clone();
        std::fs::create_dir_all(&db_shared).expect("shared dir");
        std::fs::write(db_shared.join("report.txt"), b"all systems nominal\n").expect("write");
        let command = format!(
            "NO_COLOR=1 FLOTILLA_LOGIN_DIR={} {}",
            fleet.paths.admin_dir().display(),
            flotilla_bin().display()
        );
        let tmux = Tmux::start(&command);
        let first_screen = tmux
            .wait_for("three agents online", |s| {
                s.contains("3/3 online")
                    && s.contains("web-1")
                    && s.contains("web-2")
                    && s.contains("db-1")
            })
            .await;
        Self {
            tmux,
            first_screen,
            fleet,
        }
    }

    /// Types `/web` and waits for the fleet to show the web agents alone; returns that screen.
    async fn filter_web(&self) -> String {
        self.tmux.keys(&["/", "w", "e", "b"]);
        self.tmux
            .wait_for("the web filter applied", |s| {
                s.contains("/web") && !s.contains("db-1")
            })
            .await
    }

    /// Filters to the web agents and opens the first, web-1; returns its agent view.
    async fn open_web_1(&self) -> String {
        self.filter_web().await;
        self.tmux.keys(&["Enter", "Enter"]);
        self.tmux
            .wait_for("web-1's agent view", |s| {
                s.contains("top by cpu") && s.contains("web-1  a-")
            })
            .await
    }

    async fn shutdown(self) {
        drop(self.tmux);
        self.fleet.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_names_the_role_and_fits_80_columns() {
    let scene = Scene::new().await;
    let screen = &scene.first_screen;
    assert!(
        screen.contains("(admin)"),
        "header names the role:\n{screen}"
    );
    assert!(
        screen.lines().all(|l| l.chars().count() <= 80),
        "nothing drawn past 80 columns"
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_keeps_the_matching_agents() {
    let scene = Scene::new().await;
    let screen = scene.filter_web().await;
    assert!(
        screen.contains("web-1") && screen.contains("web-2"),
        "{screen}"
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn enter_opens_an_agents_view_with_its_facts() {
    let scene = Scene::new().await;
    let screen = scene.open_web_1().await;
    assert!(screen.contains("labels"), "agent facts shown:\n{screen}");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn help_opens_over_a_view_and_escape_goes_back_step_by_step() {
    let scene = Scene::new().await;
    let tmux = &scene.tmux;
    scene.open_web_1().await;
    tmux.keys(&["?"]);
    tmux.wait_for("the help overlay", |s| {
        s.contains("┌keys") && s.contains("back")
    })
    .await;
    // One key at a time: two escapes in one write read as a single escape sequence.
    tmux.keys(&["Escape"]);
    tmux.wait_for("the help closed", |s| !s.contains("┌keys"))
        .await;
    tmux.keys(&["Escape"]);
    tmux.wait_for("the fleet view again", |s| {
        s.contains("NAME") && s.contains("web-2")
    })
    .await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_runs_on_the_marked_agents_with_output_by_agent() {
    let scene = Scene::new().await;
    let tmux = &scene.tmux;
    // Run a command on both web agents, marked through the filter.
    scene.filter_web().await;
    tmux.keys(&["Enter"]);
    tmux.keys(&["*"]);
    tmux.wait_for("two agents marked", |s| s.contains("2 marked"))
        .await;
    tmux.keys(&[":"]);
    tmux.wait_for("the run prompt", |s| s.contains("run on 2 marked agents:"))
        .await;
    tmux.text("echo hi-from-tmux");
    tmux.keys(&["Enter"]);
    let screen = tmux
        .wait_for("both agents' output and the summary", |s| {
            s.matches("hi-from-tmux").count() >= 3 && s.contains("done: 2 ok")
        })
        .await;
    assert!(
        screen.contains("web-1 │ hi-from-tmux") && screen.contains("web-2 │ hi-from-tmux"),
        "output prefixed by agent:\n{screen}"
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_copies_from_one_agents_folder_to_another() {
    let scene = Scene::new().await;
    let tmux = &scene.tmux;
    // db-1 is first by name.
    tmux.keys(&["g", "f"]);
    tmux.wait_for("db-1's shared folder", |s| {
        s.contains("db-1:/") && s.contains("report.txt")
    })
    .await;
    tmux.keys(&["c"]);
    tmux.wait_for("the destination picker", |s| {
        s.contains("copy db-1:report.txt to") && s.contains("web-1")
    })
    .await;
    tmux.keys(&["Enter"]);
    tmux.wait_for("the destination path prompt", |s| {
        s.contains("copy to web-1:report.txt")
    })
    .await;
    tmux.keys(&["Enter"]);
    tmux.wait_for("the transfer done", |s| s.contains("done: 1 file(s)"))
        .await;
    let landed = scene.fleet.agent("web-1").shared.join("report.txt");
    assert_eq!(
        std::fs::read(&landed).expect("copied file"),
        b"all systems nominal\n",
        "the same bytes on web-1"
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn q_quits_the_console() {
    let scene = Scene::new().await;
    scene.tmux.keys(&["q"]);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while scene.tmux.alive() {
        tick.tick().await;
        assert!(
            started.elapsed() < SCREEN_DEADLINE,
            "q did not quit the console"
        );
    }
    scene.shutdown().await;
}

/// The real console at 80x24 over two swarm agents reporting synthetic containers and units: the
/// fleet counts them, `6` lists every container with its host (the unhealthy ones first), and an
/// agent's services tab shows its failed unit first.
#[tokio::test(flavor = "multi_thread")]
async fn six_lists_the_fleets_containers_and_tab_an_agents_services() {
    let fleet = Fleet::new().await;
    let token = fleet.token(flotilla_wire::Role::Agent, 2, Vec::new()).await;
    let dir = tempfile::tempdir().expect("swarm dir");
    let cancel = tokio_util::sync::CancellationToken::new();
    let opts = agentd::swarm::SwarmOptions {
        token: Some(token.token.clone()),
        count: 2,
        dir: dir.path().join("swarm"),
        prefix: "sw".into(),
        metrics_interval_ms: 1000,
        exec: agentd::ExecMode::Off,
        containers: 5,
        units: 7,
        overrides: None,
    };
    let swarm = tokio::spawn(agentd::swarm::run(opts, cancel.clone()));
    let command = format!(
        "NO_COLOR=1 FLOTILLA_LOGIN_DIR={} {}",
        fleet.paths.admin_dir().display(),
        flotilla_bin().display()
    );
    let tmux = Tmux::start(&command);
    tmux.wait_for("both agents with their workload counts", |s| {
        s.contains("2/2 online") && s.matches("4/5 2!").count() == 2
    })
    .await;
    tmux.keys(&["6"]);
    let screen = tmux
        .wait_for("the fleet's containers", |s| {
            s.contains("10 containers") && s.contains("sw-00001") && s.contains("app-04")
        })
        .await;
    let rows: Vec<&str> = screen
        .lines()
        .skip_while(|l| !l.contains("HOST"))
        .skip(1)
        .take(2)
        .collect();
    assert!(
        rows.iter()
            .all(|r| r.contains("app-01") && r.contains("unhealthy")),
        "unhealthy containers first:\n{screen}"
    );
    assert!(
        screen.lines().all(|l| l.chars().count() <= 80),
        "nothing drawn past 80 columns:\n{screen}"
    );
    tmux.keys(&["1", "g", "Enter", "Tab", "Tab"]);
    let screen = tmux
        .wait_for("an agent's services", |s| {
            s.contains("7 services") && s.contains("svc-06.service")
        })
        .await;
    let first = screen
        .lines()
        .skip_while(|l| !l.contains("UNIT"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        first.contains("svc-06.service") && first.contains("failed"),
        "the failed unit first:\n{screen}"
    );
    drop(tmux);
    cancel.cancel();
    crate::harness::within(crate::harness::IDLE_DEADLINE, "swarm stop", swarm)
        .await
        .expect("swarm task")
        .expect("swarm ran");
    fleet.shutdown().await;
}
