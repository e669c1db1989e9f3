//! Shell sessions for tests: an agent with shells on, and a session opened over the operator
//! protocol the way `flotilla shell` opens one.

use super::binaries::{Daemon, Hub, enrol};
use super::{AgentSpec, DEADLINE, Fleet, agentd_bin, flotilla_bin, within};
use agentd::AgentConfig;
use agentd::config::ShellMode;
use flotilla::client::{Client, RecvHalf, SendHalf};
use flotilla_wire::io::read_frame;
use flotilla_wire::limits::MAX_SHELL_FRAME;
use flotilla_wire::msg::StreamOpen;
use flotilla_wire::shell::{ShellFrame, ShellRequest, ShellSessionId, WindowSize};
use std::path::Path;
use std::process::{Command, Stdio};

/// The account the tests run as, by name.
pub(crate) fn current_user() -> String {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let out = Command::new("id")
        .args(["-un", &uid.to_string()])
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Shells on, as the account the tests run as (root must be named explicitly).
pub(crate) fn shell_on() -> AgentConfig {
    AgentConfig {
        shell: ShellMode::On,
        shell_user: Some(current_user()),
        ..AgentConfig::default()
    }
}

/// A hub with one agent, `web-1`, configured as given.
pub(crate) async fn shell_fleet(config: AgentConfig) -> Fleet {
    Fleet::builder()
        .agent(AgentSpec::new("web-1").config(config))
        .start()
        .await
}

/// Opens a shell on web-1 running `command` in an 80x24 terminal; returns the stream and the
/// session id once the hub says it started.
pub(crate) async fn open_shell(
    client: &Client,
    command: &[&str],
) -> (SendHalf, RecvHalf, ShellSessionId) {
    let (mut send, mut recv) = client.open_bi().await.expect("open stream");
    let req = ShellRequest {
        agent: "web-1".into(),
        container: None,
        command: command.iter().map(ToString::to_string).collect(),
        term: "xterm".into(),
        size: WindowSize { cols: 80, rows: 24 },
    };
    send.write_opening(&StreamOpen::Shell, &req, MAX_SHELL_FRAME)
        .await
        .expect("send request");
    let first = within(
        DEADLINE,
        "the shell's start",
        read_frame::<ShellFrame, _>(&mut recv, MAX_SHELL_FRAME),
    )
    .await
    .expect("read")
    .expect("a frame");
    let ShellFrame::Started { session_id } = first else {
        panic!("shell not started: {first:?}");
    };
    (send, recv, session_id)
}

/// `agentd run` as a process of its own, enrolled to `hub` as `name` with shells on, once it has
/// connected: for tests that kill the hub under a session.
pub(crate) async fn shell_agent_process(hub: &Hub, name: &str) -> Daemon {
    let token = hub.token("agent", 1).await;
    let paths = enrol(hub.dir.path(), name, &token).await;
    std::fs::write(
        paths.data_dir.join(agentd::config::CONFIG_FILE),
        toml::to_string(&shell_on()).expect("toml"),
    )
    .expect("agent.toml");
    let data = paths.data_dir.to_str().expect("utf-8").to_string();
    let mut agent = Daemon::spawn(&agentd_bin(), &["--data-dir", &data, "run"]);
    agent.wait_log("connected to hub", DEADLINE).await;
    agent
}

/// `flotilla --no-mux --login-dir LOGIN shell ARGS…` with no terminal: standard input empty,
/// output and errors piped to the test, killed if the test drops it.
pub(crate) fn flotilla_shell(login: &Path, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(flotilla_bin())
        .args(["--no-mux", "--login-dir"])
        .arg(login)
        .arg("shell")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn flotilla")
}
