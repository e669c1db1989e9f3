//! `flotilla shell` end to end: the real `flotilla` binary (in tmux where a person would type, or
//! with its output read by the test), a real hub, and agents that start real programs on real
//! PTYs: echo, `stty size` after a resize, Ctrl-C, exit status, piped input, the idle timeout,
//! policy and role refusals, a 100 MiB burst with memory bounded, a hub killed under a session,
//! and a shell in a Podman container.

use crate::console_tmux::{Tmux, flotilla_bin};
use crate::harness::binaries::{Hub, code, stderr};
use crate::harness::exec::rss;
use crate::harness::podman::Podman;
use crate::harness::shell::{flotilla_shell, shell_agent_process, shell_fleet, shell_on};
use crate::harness::{AgentSpec, DEADLINE, Fleet, WORK_DEADLINE, in_own_process, within};
use agentd::AgentConfig;
use agentd::config::{Access, ShellMode};
use flotilla_wire::Role;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `flotilla --no-mux --login-dir DIR shell ARGS…` with no terminal; (exit code, stdout, stderr).
async fn shell_as(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec![
        "--no-mux",
        "--login-dir",
        dir.to_str().expect("utf-8"),
        "shell",
    ];
    all.extend_from_slice(args);
    // Not `run_cmd`'s 10 s: a container exec through Podman on a busy 2-core box takes longer.
    let out = within(
        WORK_DEADLINE,
        "flotilla shell",
        tokio::process::Command::new(flotilla_bin())
            .args(&all)
            .env_remove("FLOTILLA_LOGIN_DIR")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run flotilla");
    (
        code(&out),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

async fn audit_lines(fleet: &Fleet) -> Vec<String> {
    fleet
        .ctx()
        .store
        .call(|c| Ok(hubd::store::audit::recent(c, 100)?))
        .await
        .expect("audit")
        .into_iter()
        .map(|r| format!("{} {} {} {}", r.actor, r.action, r.target, r.detail))
        .collect()
}

/// `flotilla shell ARGS` in tmux, the pane kept after it exits with its status printed.
fn shell_in_tmux(fleet: &Fleet, args: &str) -> Tmux {
    let command = format!(
        "{} --no-mux --login-dir {} shell {args}; echo \"flotilla-status=$?\"; sleep 600",
        flotilla_bin().display(),
        fleet.admin_login().dir.display(),
    );
    Tmux::start(&command)
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_echo_resize_reaches_stty_and_the_exit_status_is_flotillas() {
    let fleet = shell_fleet(shell_on()).await;
    let tmux = shell_in_tmux(&fleet, "web-1 -- sh");
    tmux.text("echo typed-$((40+2))");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the echo", |s| s.contains("typed-42")).await;
    let size = tmux.pane_size();
    assert!(size.ends_with(" 80"), "{size}");
    tmux.text("stty size");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the first size", |s| s.contains(&size)).await;
    tmux.resize(100, 30);
    let resized = tmux.pane_size();
    assert!(resized.ends_with(" 100"), "{resized}");
    tmux.text("stty size");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the size after the resize", |s| s.contains(&resized))
        .await;
    tmux.text("exit 7");
    tmux.keys(&["Enter"]);
    tmux.wait_for("flotilla's exit status", |s| {
        s.contains("flotilla-status=7")
    })
    .await;
    let audit = audit_lines(&fleet).await;
    assert!(
        audit.iter().any(|l| l.contains("shell.open web-1")),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("shell.end web-1") && l.contains("exit=7")),
        "{audit:?}"
    );
    drop(tmux);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_interrupts_a_sleep_on_the_agent() {
    let fleet = shell_fleet(shell_on()).await;
    let tmux = shell_in_tmux(&fleet, "web-1 -- sh");
    tmux.text("echo ready-$((1+1))");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the shell", |s| s.contains("ready-2")).await;
    tmux.text("sleep 600");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the command echoed", |s| s.contains("sleep 600"))
        .await;
    tmux.keys(&["C-c"]);
    // A shell reports a foreground job killed by SIGINT as 130.
    tmux.text("echo after-sleep-$?");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the sleep interrupted", |s| s.contains("after-sleep-130"))
        .await;
    tmux.text("exit");
    tmux.keys(&["Enter"]);
    tmux.wait_for("flotilla's exit status", |s| {
        s.contains("flotilla-status=0")
    })
    .await;
    drop(tmux);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_runs_on_a_pty_and_its_status_is_returned() {
    let fleet = shell_fleet(shell_on()).await;
    let dir = fleet.admin_login().dir.clone();
    let (status, out, err) = shell_as(
        &dir,
        &[
            "web-1",
            "--",
            "sh",
            "-c",
            "test -t 0 && echo on-a-tty-$TERM; exit 3",
        ],
    )
    .await;
    assert_eq!(status, 3, "{out}{err}");
    let term = flotilla::shell::local_term();
    assert!(out.contains(&format!("on-a-tty-{term}")), "{out:?}");
    // A signal's death is 128 + N, as a shell reports it.
    let (status, _, err) = shell_as(&dir, &["web-1", "--", "sh", "-c", "kill -9 $$"]).await;
    assert_eq!(status, 137, "{err}");
    assert!(err.contains("killed by signal 9"), "{err}");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn input_piped_in_reaches_the_program_line_by_line() {
    // Standard input a pipe, not a terminal: the keyboard is watched by the client's runtime, and
    // a second line written only after the first was echoed must still be read.
    let fleet = shell_fleet(shell_on()).await;
    let mut child = tokio::process::Command::new(flotilla_bin())
        .args(["--no-mux", "--login-dir"])
        .arg(&fleet.admin_login().dir)
        .args([
            "shell",
            "web-1",
            "--",
            "sh",
            "-c",
            "read a; read b; echo \"got $a $b\"",
        ])
        .env_remove("FLOTILLA_LOGIN_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn flotilla");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    stdin.write_all(b"one\n").await.expect("write");
    within(DEADLINE, "the first line's echo", async {
        while !String::from_utf8_lossy(&seen).contains("one") {
            let n = stdout.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "output ended early: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    stdin.write_all(b"two\n").await.expect("write");
    drop(stdin);
    within(WORK_DEADLINE, "the program's answer", async {
        loop {
            let n = stdout.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let status = within(WORK_DEADLINE, "flotilla exit", child.wait())
        .await
        .expect("wait");
    let out = String::from_utf8_lossy(&seen);
    assert!(out.contains("got one two"), "{out:?}");
    assert_eq!(status.code(), Some(0), "{out:?}");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_policy_refuses_and_names_the_key() {
    let fleet = Fleet::builder()
        .agent(AgentSpec::new("off-1"))
        .agent(AgentSpec::new("rootless-1").config(AgentConfig {
            shell: ShellMode::On,
            ..AgentConfig::default()
        }))
        .start()
        .await;
    let dir = fleet.admin_login().dir.clone();
    let (status, out, err) = shell_as(&dir, &["off-1", "--", "true"]).await;
    assert_eq!(status, 1, "{out}{err}");
    assert!(
        err.contains("shells are off on this agent (shell = \"off\" in agent.toml"),
        "{err}"
    );
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let (status, _, err) = shell_as(&dir, &["rootless-1", "--", "true"]).await;
        assert_eq!(status, 1, "{err}");
        assert!(
            err.contains("agentd runs as root and shell_user is unset"),
            "{err}"
        );
    }
    let (status, _, err) = shell_as(&dir, &["web-9", "--", "true"]).await;
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("no agent named \"web-9\""), "{err}");
    let (status, _, err) = shell_as(&dir, &["off-1/"]).await;
    assert_eq!(status, 2, "{err}");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn viewers_never_get_a_shell() {
    let fleet = shell_fleet(shell_on()).await;
    let viewer = fleet.login_as(Role::Viewer, "vera").await;
    let (status, out, err) = shell_as(&viewer.dir, &["web-1", "--", "true"]).await;
    assert_eq!(status, 1, "{out}{err}");
    assert!(
        err.contains("shells need the operator or admin role; you are viewer"),
        "{err}"
    );
    let audit = audit_lines(&fleet).await;
    assert!(
        audit.iter().any(|l| l.contains("shell.denied web-1")),
        "{audit:?}"
    );
    assert!(
        !audit.iter().any(|l| l.contains("shell.open")),
        "nothing opened: {audit:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_session_is_closed_and_the_client_says_why() {
    let fleet = shell_fleet(AgentConfig {
        shell_idle_timeout: "2s".into(),
        ..shell_on()
    })
    .await;
    let dir = fleet.admin_login().dir.clone();
    let (status, out, err) = shell_as(&dir, &["web-1", "--", "sleep", "600"]).await;
    assert_eq!(status, 255, "{out}{err}");
    assert!(
        err.contains("shell ended: idle timeout (no input or output for 2 s)"),
        "{err}"
    );
    fleet.shutdown().await;
}

/// 100 MiB out of `yes` through agent, hub and client, all read: the hub and agent (this
/// process) stay within a few MiB of where they started, since each holds at most a chunk or two
/// per session and QUIC flow control holds `yes` back.
#[tokio::test(flavor = "multi_thread")]
async fn a_100_mib_burst_arrives_whole_with_memory_bounded() {
    if !in_own_process("shell::a_100_mib_burst_arrives_whole_with_memory_bounded") {
        return;
    }
    const BURST: usize = 100 * 1024 * 1024;
    /// Growth allowed: buffers, a recording's queue and the allocator's slack, far below the
    /// burst itself.
    const MAX_GROWTH: u64 = 48 * 1024 * 1024;
    let fleet = shell_fleet(shell_on()).await;
    let (before, _) = rss();
    let mut child = flotilla_shell(
        &fleet.admin_login().dir,
        &["web-1", "--", "sh", "-c", "stty -opost; yes | head -c 100M"],
    );
    let mut stdout = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 64 * 1024];
    let (mut total, mut peak) = (0usize, before);
    let mut last_sample = Instant::now();
    within(Duration::from_secs(300), "the burst", async {
        loop {
            let n = stdout.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|&b| b == b'y' || b == b'\n'));
            total += n;
            if last_sample.elapsed() > Duration::from_millis(50) {
                peak = peak.max(rss().0);
                last_sample = Instant::now();
            }
        }
    })
    .await;
    let status = within(WORK_DEADLINE, "flotilla exit", child.wait())
        .await
        .expect("wait");
    assert_eq!(total, BURST, "every byte arrived, none doubled");
    assert_eq!(status.code(), Some(0));
    let growth = peak.saturating_sub(before);
    assert!(
        growth < MAX_GROWTH,
        "hub and agent grew by {} MiB during a {} MiB burst",
        growth >> 20,
        BURST >> 20
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_killed_mid_session_ends_the_client_with_a_message() {
    let mut hub = Hub::init().await;
    hub.start().await;
    let mut agent = shell_agent_process(&hub, "box-1").await;
    let mut client = flotilla_shell(
        &hub.data.join("admin"),
        &["box-1", "--", "sh", "-c", "echo live; sleep 600"],
    );
    let mut stdout = client.stdout.take().expect("stdout");
    let mut first = [0u8; 4];
    within(
        DEADLINE,
        "the session's first output",
        stdout.read_exact(&mut first),
    )
    .await
    .expect("output");
    assert_eq!(&first, b"live");
    let pid = hub.pid();
    crate::harness::binaries::signal(pid, "-KILL").await;
    let status = within(Duration::from_secs(60), "flotilla's exit", client.wait())
        .await
        .expect("wait");
    let mut err = String::new();
    let mut stderr = client.stderr.take().expect("stderr");
    let _ = stderr.read_to_string(&mut err).await;
    assert_eq!(status.code(), Some(255), "{err}");
    assert!(
        err.contains("flotilla: shell ended: connection to the hub lost"),
        "{err}"
    );
    agent.sigterm();
    agent.wait_exit(DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_runs_in_a_container_under_the_manage_policy() {
    let podman = Podman::start().await;
    let name = format!("sh{}", std::process::id());
    podman.container(&name, "sleep 3600").await;
    let container_cfg = |containers| AgentConfig {
        containers,
        containers_socket: Some(podman.socket.clone()),
        ..shell_on()
    };
    let fleet = Fleet::builder()
        .agent(AgentSpec::new("box-1").config(container_cfg(Access::Manage)))
        .agent(AgentSpec::new("box-2").config(container_cfg(Access::Read)))
        .start()
        .await;
    let dir = fleet.admin_login().dir.clone();
    let target = format!("box-1/{name}");
    let (status, out, err) = shell_as(
        &dir,
        &[
            &target,
            "--",
            "sh",
            "-c",
            "test -t 0 && echo in-container-$((6*7)) $TERM; exit 3",
        ],
    )
    .await;
    assert_eq!(status, 3, "{out}{err}");
    let term = flotilla::shell::local_term();
    assert!(out.contains(&format!("in-container-42 {term}")), "{out:?}");
    let (status, _, err) = shell_as(&dir, &[&format!("box-2/{name}"), "--", "true"]).await;
    assert_eq!(status, 1, "{err}");
    assert!(
        err.contains(
            "container shells need containers = \"manage\" in agent.toml (it is \"read\")"
        ),
        "{err}"
    );
    let (status, _, err) = shell_as(&dir, &["box-1/no-such-box", "--", "true"]).await;
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("no-such-box"), "{err}");
    podman.run(&["rm", "-f", &name]).await;
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s_in_the_console_hands_the_terminal_to_a_shell_and_takes_it_back() {
    let fleet = shell_fleet(shell_on()).await;
    let command = format!(
        "NO_COLOR=1 {} --no-mux --login-dir {}",
        flotilla_bin().display(),
        fleet.admin_login().dir.display(),
    );
    let tmux = Tmux::start(&command);
    tmux.wait_for("the agent online", |s| {
        s.contains("1/1 online") && s.contains("web-1")
    })
    .await;
    tmux.keys(&["Enter"]);
    let agent_view = tmux
        .wait_for("web-1's agent view", |s| s.contains("s shell"))
        .await;
    tmux.keys(&["s"]);
    // Typed once the shell shows its prompt, as a person would.
    tmux.wait_for("the shell's prompt", |s| {
        let s = s.trim_end();
        !s.contains("s shell") && (s.ends_with('#') || s.ends_with('$'))
    })
    .await;
    tmux.text("echo in-shell-$((2+3))");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the shell on the normal screen", |s| {
        s.contains("in-shell-5") && !s.contains("s shell")
    })
    .await;
    tmux.text("exit 4");
    tmux.keys(&["Enter"]);
    let back = tmux
        .wait_for("the console back with the shell's end", |s| {
            s.contains("shell on web-1: exited with status 4")
        })
        .await;
    assert!(
        !back.contains("in-shell-5"),
        "the console redrew the whole screen:\n{back}"
    );
    assert!(
        back.contains("web-1") && agent_view.contains("web-1"),
        "{back}"
    );
    // Keys reach the console again.
    tmux.keys(&["Escape"]);
    tmux.wait_for("the fleet view", |s| s.contains("NAME"))
        .await;
    drop(tmux);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_stops_ends_the_session_and_leaves_no_process() {
    let mut fleet = shell_fleet(shell_on()).await;
    let mut client = flotilla_shell(
        &fleet.admin_login().dir,
        &["web-1", "--", "sh", "-c", "echo pid=$$.; exec sleep 600"],
    );
    let mut stdout = client.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let pid: i32 = within(DEADLINE, "the program's pid", async {
        let mut buf = [0u8; 256];
        loop {
            let n = stdout.read(&mut buf).await.expect("read");
            assert!(n > 0, "output ended before the pid");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if let Some(rest) = text.split("pid=").nth(1)
                && let Some((pid, _)) = rest.split_once('.')
            {
                return pid.parse().expect("pid");
            }
        }
    })
    .await;
    fleet.stop_agent("web-1").await;
    assert!(
        crate::harness::exec::process_gone(pid).await,
        "the shell's program outlived its agent's link"
    );
    let status = within(WORK_DEADLINE, "flotilla's exit", client.wait())
        .await
        .expect("wait");
    let mut err = String::new();
    let mut stderr = client.stderr.take().expect("stderr");
    let _ = stderr.read_to_string(&mut err).await;
    assert_eq!(status.code(), Some(255), "{err}");
    assert!(err.contains("shell ended: agent shutting down"), "{err}");
    fleet.shutdown().await;
}
