//! Shell sessions for tests: an agent with shells on, and a session opened over the operator
//! protocol the way `flotilla shell` opens one.

use super::{AgentSpec, DEADLINE, Fleet, within};
use agentd::AgentConfig;
use agentd::config::ShellMode;
use flotilla::client::{Client, RecvHalf, SendHalf};
use flotilla_wire::io::read_frame;
use flotilla_wire::limits::MAX_SHELL_FRAME;
use flotilla_wire::msg::StreamOpen;
use flotilla_wire::shell::{ShellFrame, ShellRequest, ShellSessionId, WindowSize};
use std::process::Command;

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
