//! The real `flotilla` console in tmux at 80x24 against a real hub with three real agents: what a
//! sysadmin does over SSH: filter, open an agent, run a command on marked agents, copy a file from
//! one agent's shared folder to another. Keys go in with `send-keys`, the screen comes back with
//! `capture-pane`. `.ci/run` installs tmux; without it this test fails and says so.

use crate::harness::exec::{AgentSpec, exec_fleet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The screen is redrawn within a second of any change; this is generous for a loaded CI box.
const SCREEN_DEADLINE: Duration = Duration::from_secs(20);

struct Tmux {
    session: String,
}

impl Tmux {
    fn start(command: &str) -> Self {
        let session = format!("flotilla-test-{}", std::process::id());
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &session, "-x", "80", "-y", "24", command])
            .status()
            .expect("tmux must be installed for the console test (.ci/run installs it: apt-get install tmux)");
        assert!(status.success(), "tmux new-session failed");
        Self { session }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .status()
            .expect("send-keys");
        assert!(status.success());
    }

    /// Types `text` literally (no key names).
    fn text(&self, text: &str) {
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
    async fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
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

fn flotilla_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_hubd")).with_file_name("flotilla");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn console_filters_opens_an_agent_runs_a_command_and_copies_a_file_at_80x24() {
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

    let screen = tmux
        .wait_for("three agents online", |s| {
            s.contains("3/3 online")
                && s.contains("web-1")
                && s.contains("web-2")
                && s.contains("db-1")
        })
        .await;
    assert!(
        screen.contains("(admin)"),
        "header names the role:\n{screen}"
    );
    assert!(
        screen.lines().all(|l| l.chars().count() <= 80),
        "nothing drawn past 80 columns"
    );

    tmux.keys(&["/", "w", "e", "b"]);
    let screen = tmux
        .wait_for("the web filter applied", |s| {
            s.contains("/web") && !s.contains("db-1")
        })
        .await;
    assert!(
        screen.contains("web-1") && screen.contains("web-2"),
        "{screen}"
    );

    tmux.keys(&["Enter", "Enter"]);
    let screen = tmux
        .wait_for("web-1's agent view", |s| {
            s.contains("top by cpu") && s.contains("web-1  a-")
        })
        .await;
    assert!(screen.contains("labels"), "agent facts shown:\n{screen}");

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

    // Run a command on both web agents (marked through the filter that is still on).
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

    // Copy db-1's report to web-1: back to the fleet, clear the filter, db-1 is first by name.
    tmux.keys(&["Escape"]);
    tmux.wait_for("the fleet view", |s| s.contains("NAME"))
        .await;
    tmux.keys(&["Escape"]);
    tmux.wait_for("the filter cleared", |s| s.contains("db-1"))
        .await;
    tmux.keys(&["u", "g", "f"]);
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
    let landed = fleet.agent("web-1").shared.join("report.txt");
    assert_eq!(
        std::fs::read(&landed).expect("copied file"),
        b"all systems nominal\n",
        "the same bytes on web-1"
    );

    tmux.keys(&["q"]);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while tmux.alive() {
        tick.tick().await;
        assert!(
            started.elapsed() < SCREEN_DEADLINE,
            "q did not quit the console"
        );
    }
    fleet.shutdown().await;
}
