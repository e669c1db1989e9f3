//! The console's sessions view against a real hub and a real agent: a shell session recorded by
//! the hub appears in the view (`9`), `Enter` suspends the console and replays its output in the
//! terminal, and any key gives back the console as it was. The real `flotilla` runs in tmux at
//! 80x24 and the test reads the screen as a person would.

use crate::console_tmux::{Tmux, flotilla_bin};
use crate::harness::shell::{open_shell, shell_on};
use crate::harness::{AgentSpec, DEADLINE, Fleet, within};
use flotilla_wire::io::read_frame;
use flotilla_wire::limits::MAX_SHELL_FRAME;
use flotilla_wire::msg::StreamOpen;
use flotilla_wire::sessions::SessionState;
use flotilla_wire::shell::{ShellExit, ShellFrame, ShellRequest, WindowSize};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_session_is_listed_and_enter_replays_it_then_gives_the_console_back() {
    let fleet = Fleet::builder()
        .agent(AgentSpec::new("web-1").config(shell_on()))
        .start()
        .await;

    // A session on the record: two lines of output a moment apart, then exit 3.
    let client = fleet.admin_client().await;
    let (mut send, mut recv) = client.open_bi().await.expect("open stream");
    let req = ShellRequest {
        agent: "web-1".into(),
        container: None,
        command: [
            "sh",
            "-c",
            // The pause is the recorded program's own, not a wait of the test's: the recording
            // must keep the two lines' times apart for the replay to reproduce it.
            "echo replayed-$((6*7)); sleep 0.3; echo second-line; exit 3",
        ]
        .iter()
        .map(ToString::to_string)
        .collect(),
        term: "xterm".into(),
        size: WindowSize { cols: 80, rows: 24 },
    };
    send.write_opening(&StreamOpen::Shell, &req, MAX_SHELL_FRAME)
        .await
        .expect("send request");
    let id = within(DEADLINE, "the session's end", async {
        let mut id = None;
        loop {
            match read_frame::<ShellFrame, _>(&mut recv, MAX_SHELL_FRAME).await {
                Ok(Some(ShellFrame::Started { session_id })) => id = Some(session_id),
                Ok(Some(ShellFrame::Exit(exit))) => {
                    assert_eq!(exit, ShellExit::Code(3));
                    return id.expect("started before it exited");
                }
                Ok(Some(f)) if f.is_last() => panic!("session ended without an exit: {f:?}"),
                Ok(Some(_)) => {}
                other => panic!("stream ended without a last frame: {other:?}"),
            }
        }
    })
    .await;
    within(DEADLINE, "the session's row to say ended", async {
        loop {
            let row = fleet
                .ctx()
                .store
                .call(move |c| Ok(hubd::store::sessions::get(c, id)?))
                .await
                .expect("store");
            if row.is_some_and(|(r, _)| r.state == SessionState::Ended) {
                return;
            }
            // No event marks a row written; the store answers in microseconds.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

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
    tmux.keys(&["9"]);
    let id_text = id.to_string();
    let listed = tmux
        .wait_for("the session in the sessions view", |s| {
            s.contains(&id_text) && s.contains("enter replay")
        })
        .await;
    let line = listed
        .lines()
        .find(|l| l.contains(&id_text))
        .expect("the session's line");
    assert!(
        line.contains("admin") && line.contains("web-1") && line.contains("ended"),
        "who, where and state on the line: {line}"
    );
    assert!(line.contains(" 3 "), "exit status 3 on the line: {line}");
    assert!(
        listed.lines().all(|l| l.chars().count() <= 80),
        "fits 80 columns:\n{listed}"
    );

    tmux.keys(&["Enter"]);
    let played = tmux
        .wait_for("the recording played to its end", |s| {
            s.contains("second-line") && s.contains("any key returns to the console")
        })
        .await;
    assert!(played.contains("replayed-42"), "{played}");
    assert!(
        !played.contains("enter replay"),
        "the console stepped aside:\n{played}"
    );

    tmux.keys(&["q"]);
    let back = tmux
        .wait_for("the console back in the sessions view", |s| {
            s.contains(&format!("replay of {id_text}: end of recording"))
        })
        .await;
    assert!(
        back.contains("SESSION") && back.contains(&id_text),
        "the sessions view as it was:\n{back}"
    );
    assert!(
        !back.contains("replayed-42"),
        "the console redrew the whole screen:\n{back}"
    );
    // Keys reach the console again.
    tmux.keys(&["Escape"]);
    tmux.wait_for("the fleet view", |s| s.contains("NAME"))
        .await;
    drop(tmux);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn j_joins_a_live_session_read_only_and_any_key_leaves_it() {
    let fleet = Fleet::builder()
        .agent(AgentSpec::new("web-1").config(shell_on()))
        .start()
        .await;
    // A live session: a shell reading what the test types.
    let client = fleet.admin_client().await;
    let (mut send, mut recv, id) = open_shell(&client, &["sh"]).await;

    let command = format!(
        "NO_COLOR=1 {} --no-mux --login-dir {}",
        flotilla_bin().display(),
        fleet.admin_login().dir.display(),
    );
    let tmux = Tmux::start(&command);
    tmux.wait_for("the agent online", |s| s.contains("1/1 online"))
        .await;
    tmux.keys(&["9"]);
    let id_text = id.to_string();
    tmux.wait_for("the live session listed", |s| {
        s.lines()
            .any(|l| l.contains(&id_text) && l.contains("live"))
            && s.contains("j join live")
    })
    .await;
    tmux.keys(&["j"]);
    // The owner is told of the join: from then on the joiner sees the output.
    within(DEADLINE, "the join notice", async {
        loop {
            match read_frame::<ShellFrame, _>(&mut recv, MAX_SHELL_FRAME).await {
                Ok(Some(ShellFrame::Notice(text))) if text.contains("joined") => return,
                Ok(Some(f)) if f.is_last() => panic!("session ended: {f:?}"),
                Ok(Some(_)) => {}
                other => panic!("stream ended: {other:?}"),
            }
        }
    })
    .await;
    flotilla_wire::io::write_frame(
        &mut send,
        &ShellFrame::Data(flotilla_wire::Chunk(b"echo joined-$((5*5))\n".to_vec())),
        MAX_SHELL_FRAME,
    )
    .await
    .expect("type into the session");
    let watching = tmux
        .wait_for("the live output in the joiner's terminal", |s| {
            s.contains("joined-25")
        })
        .await;
    assert!(
        watching.contains(&format!("watching {id_text}")),
        "{watching}"
    );
    tmux.keys(&["x"]);
    let back = tmux
        .wait_for("the console back", |s| {
            s.contains(&format!("watching {id_text}: stopped"))
        })
        .await;
    assert!(back.contains("SESSION"), "{back}");
    // The session itself goes on after the joiner left.
    flotilla_wire::io::write_frame(
        &mut send,
        &ShellFrame::Data(flotilla_wire::Chunk(b"exit 5\n".to_vec())),
        MAX_SHELL_FRAME,
    )
    .await
    .expect("type into the session");
    within(DEADLINE, "the session's exit", async {
        loop {
            match read_frame::<ShellFrame, _>(&mut recv, MAX_SHELL_FRAME).await {
                Ok(Some(ShellFrame::Exit(exit))) => {
                    assert_eq!(exit, ShellExit::Code(5));
                    return;
                }
                Ok(Some(f)) if f.is_last() => panic!("session ended otherwise: {f:?}"),
                Ok(Some(_)) => {}
                other => panic!("stream ended: {other:?}"),
            }
        }
    })
    .await;
    drop(tmux);
    fleet.shutdown().await;
}
