//! Recorded shell sessions end to end: real programs on real PTYs on an agent, the hub recording
//! them, and the real `flotilla` binary listing (`sessions`), replaying (`replay --raw`) and
//! joining (`shell --join`) them: byte-identical replay of what the client saw (bytes that are
//! not UTF-8 included), a join that sees live output while the owner is told, viewers and
//! operators refused a join, a hub killed mid-session keeping its recording, a recording that
//! cannot be written refusing the session, and retention by size and age.

use crate::harness::binaries::Hub;
use crate::harness::flotilla_bin;
use crate::harness::shell::{
    flotilla_shell, open_shell, shell_agent_process, shell_fleet, shell_on,
};
use crate::harness::{DEADLINE, Fleet, run_cmd, within};
use flotilla::client::{Client, RecvHalf};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::MAX_SHELL_FRAME;
use flotilla_wire::msg::StreamOpen;
use flotilla_wire::sessions::{SessionRow, SessionState};
use flotilla_wire::shell::{ShellFrame, ShellJoin, ShellRequest, ShellSessionId, WindowSize};
use flotilla_wire::{Chunk, ErrorCode, Role};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// `flotilla --no-mux --login-dir DIR args…`: exit code, stdout bytes, stderr.
async fn flotilla(login_dir: &Path, args: &[&str]) -> (i32, Vec<u8>, String) {
    let mut all = vec![
        "--no-mux",
        "--login-dir",
        login_dir.to_str().expect("utf-8"),
    ];
    all.extend_from_slice(args);
    let out = run_cmd(&flotilla_bin(), &all).await;
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `flotilla sessions --json`, which must succeed.
async fn sessions_json(login_dir: &Path) -> Vec<Value> {
    let (code, out, err) = flotilla(login_dir, &["sessions", "--json"]).await;
    assert_eq!(code, 0, "flotilla sessions failed: {err}");
    match serde_json::from_slice(&out) {
        Ok(Value::Array(rows)) => rows,
        other => panic!("no JSON array ({other:?})"),
    }
}

/// Reads frames up to the last one: the output bytes seen and that last frame.
async fn read_to_end(recv: &mut RecvHalf) -> (Vec<u8>, ShellFrame) {
    let mut seen = Vec::new();
    within(DEADLINE, "the session's end", async {
        loop {
            match read_frame::<ShellFrame, _>(recv, MAX_SHELL_FRAME).await {
                Ok(Some(ShellFrame::Data(Chunk(bytes)))) => seen.extend_from_slice(&bytes),
                Ok(Some(f)) if f.is_last() => return (std::mem::take(&mut seen), f),
                Ok(Some(_)) => {}
                other => panic!("stream ended without a last frame: {other:?}"),
            }
        }
    })
    .await
}

async fn row(fleet: &Fleet, id: ShellSessionId) -> Option<SessionRow> {
    fleet
        .ctx()
        .store
        .call(move |c| Ok(hubd::store::sessions::get(c, id)?))
        .await
        .expect("store")
        .map(|(row, _)| row)
}

/// Waits until the session's row says `state` (the hub records the end just after the last frame).
async fn wait_state(fleet: &Fleet, id: ShellSessionId, state: SessionState) -> SessionRow {
    within(DEADLINE, "the session's row", async {
        loop {
            if let Some(r) = row(fleet, id).await
                && r.state == state
            {
                return r;
            }
            // No event marks a row written; the store answers in microseconds.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_replays_byte_identically_with_bytes_that_are_not_utf8() {
    let fleet = shell_fleet(shell_on()).await;
    let admin = fleet.paths.data_dir.join("admin");
    let client = fleet.admin_client().await;
    // Valid UTF-8, invalid bytes, and a character split across two writes (and so, likely,
    // across two chunks).
    let script =
        r"printf 'caf\303\251 \377\376 raw\n'; printf '\342\202'; sleep 0.2; printf '\254 end\n'";
    let (_send, mut recv, id) = open_shell(&client, &["sh", "-c", script]).await;
    let (seen, last) = read_to_end(&mut recv).await;
    assert_eq!(
        last,
        ShellFrame::Exit(flotilla_wire::shell::ShellExit::Code(0))
    );
    assert!(
        seen.windows(2).any(|w| w == [0xff, 0xfe]),
        "the client saw the raw bytes: {seen:?}"
    );
    let ended = wait_state(&fleet, id, SessionState::Ended).await;
    assert_eq!(ended.exit, Some(0));
    assert_eq!(ended.bytes, seen.len() as u64);
    assert!(ended.recorded && ended.size > 0);

    let (code, replayed, err) = flotilla(&admin, &["replay", &id.to_string(), "--raw"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        replayed, seen,
        "replay --raw gives exactly what the client saw"
    );

    let rows = sessions_json(&admin).await;
    let listed = rows
        .iter()
        .find(|r| r["id"] == id.to_string())
        .expect("the session is listed");
    assert_eq!(listed["state"], "ended");
    assert_eq!(listed["agent"], "web-1");
    assert_eq!(listed["operator_name"], "admin");
    assert_eq!(listed["exit"], 0);
    assert_eq!(listed["bytes"], seen.len() as u64);
    assert!(
        listed["command"]
            .as_str()
            .is_some_and(|c| c.starts_with("sh -c"))
    );

    let dir = fleet.paths.recordings_dir();
    let file = dir.join(format!("{id}.cast.gz"));
    assert_eq!(crate::harness::mode_of(&dir), 0o700);
    assert_eq!(crate::harness::mode_of(&file), 0o600);
    // Keystrokes are not recorded unless the hub is told to.
    let (_, events, _) = hubd::shell::recording::read_all(&file).expect("read the recording");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.data, flotilla_wire::sessions::CastData::Input(_)))
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_join_sees_live_output_and_the_owner_is_told() {
    let fleet = shell_fleet(shell_on()).await;
    let admin = fleet.paths.data_dir.join("admin");
    let alice = fleet.client_as(Role::Operator, "alice").await;
    let (mut send, mut recv, id) = open_shell(&alice, &["cat"]).await;

    let mut joiner = tokio::process::Command::new(flotilla_bin())
        .args(["--no-mux", "--login-dir"])
        .arg(&admin)
        .args(["shell", "--join", &id.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn flotilla shell --join");
    // The owner is told, once the joiner is subscribed.
    within(DEADLINE, "the join notice", async {
        loop {
            match read_frame::<ShellFrame, _>(&mut recv, MAX_SHELL_FRAME).await {
                Ok(Some(ShellFrame::Notice(text))) => {
                    assert_eq!(text, "admin joined (read-only)");
                    return;
                }
                Ok(Some(ShellFrame::Data(_))) => {}
                other => panic!("no notice: {other:?}"),
            }
        }
    })
    .await;
    write_frame(
        &mut send,
        &ShellFrame::Data(Chunk(b"hello-join\r".to_vec())),
        MAX_SHELL_FRAME,
    )
    .await
    .expect("type");
    let mut stdout = joiner.stdout.take().expect("stdout");
    let mut watched = Vec::new();
    within(DEADLINE, "the joiner's view of the output", async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&watched).contains("hello-join") {
            let n = stdout.read(&mut buf).await.expect("read joiner");
            assert!(
                n > 0,
                "joiner ended early: {:?}",
                String::from_utf8_lossy(&watched)
            );
            watched.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    // Ctrl-D ends cat; the joiner sees the end and exits 0.
    write_frame(
        &mut send,
        &ShellFrame::Data(Chunk(vec![4])),
        MAX_SHELL_FRAME,
    )
    .await
    .expect("ctrl-d");
    let (_, last) = read_to_end(&mut recv).await;
    assert!(matches!(last, ShellFrame::Exit(_)), "{last:?}");
    let status = within(DEADLINE, "the joiner's exit", joiner.wait())
        .await
        .expect("wait");
    let mut err = String::new();
    let _ = joiner
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .await;
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("session {id} ended")), "{err}");
    let audit = fleet
        .ctx()
        .store
        .call(|c| Ok(hubd::store::audit::recent(c, 100)?))
        .await
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.action == "shell.join" && a.target == id.to_string()),
        "{audit:?}"
    );
    fleet.shutdown().await;
}

/// Opens a join of `id` and returns the hub's first answer.
async fn join_answer(client: &Client, id: ShellSessionId) -> ShellFrame {
    let (mut send, mut recv) = client.open_bi().await.expect("open");
    send.write_opening(
        &StreamOpen::ShellJoin,
        &ShellJoin { session_id: id },
        MAX_SHELL_FRAME,
    )
    .await
    .expect("send join");
    within(
        DEADLINE,
        "the join answer",
        read_frame::<ShellFrame, _>(&mut recv, MAX_SHELL_FRAME),
    )
    .await
    .expect("read")
    .expect("a frame")
}

#[tokio::test(flavor = "multi_thread")]
async fn viewers_and_operators_are_refused_a_join_and_unknown_sessions_are_named() {
    let fleet = shell_fleet(shell_on()).await;
    let alice = fleet.client_as(Role::Operator, "alice").await;
    let (_send, _recv, id) = open_shell(&alice, &["cat"]).await;
    for (role, name) in [(Role::Viewer, "vic"), (Role::Operator, "olga")] {
        let client = fleet.client_as(role, name).await;
        let ShellFrame::Refused(r) = join_answer(&client, id).await else {
            panic!("{role} joined");
        };
        assert_eq!(r.code, ErrorCode::Forbidden);
        assert_eq!(
            r.message,
            format!("joining a shell session needs the admin role; you are {role}")
        );
        // Nor may they replay someone else's session.
        let login = fleet.dir.path().join(format!("login-{name}"));
        let (code, _, err) = flotilla(&login, &["replay", &id.to_string(), "--raw"]).await;
        assert_ne!(code, 0);
        assert!(
            err.contains("needs the operator role") || err.contains("another operator's"),
            "{err}"
        );
    }
    let admin = fleet.admin_client().await;
    let unknown = ShellSessionId(0x1234);
    let ShellFrame::Refused(r) = join_answer(&admin, unknown).await else {
        panic!("joined a session that does not exist");
    };
    assert_eq!(r.code, ErrorCode::NotFound);
    assert!(
        r.message.contains("no live session s-0000000000001234"),
        "{}",
        r.message
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recording_that_cannot_be_written_refuses_the_session() {
    let fleet = shell_fleet(shell_on()).await;
    // A file where the recordings directory should be: nothing can be recorded there.
    std::fs::write(fleet.paths.recordings_dir(), b"not a directory").expect("block the dir");
    let client = fleet.admin_client().await;
    let (mut send, mut recv) = client.open_bi().await.expect("open");
    let req = ShellRequest {
        agent: "web-1".into(),
        container: None,
        command: vec!["true".into()],
        term: "xterm".into(),
        size: WindowSize { cols: 80, rows: 24 },
    };
    send.write_opening(&StreamOpen::Shell, &req, MAX_SHELL_FRAME)
        .await
        .expect("send");
    let answer = within(
        DEADLINE,
        "the answer",
        read_frame::<ShellFrame, _>(&mut recv, MAX_SHELL_FRAME),
    )
    .await
    .expect("read")
    .expect("frame");
    let ShellFrame::Refused(r) = answer else {
        panic!("a session ran unrecorded: {answer:?}");
    };
    assert!(r.message.contains("cannot record"), "{}", r.message);
    let listed = fleet
        .ctx()
        .store
        .call(|c| Ok(hubd::store::sessions::list(c, 10, None)?))
        .await
        .expect("list");
    assert!(listed.is_empty(), "{listed:?}");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_the_oldest_recordings_by_size_then_by_age() {
    let mut fleet = shell_fleet(shell_on()).await;
    let client = fleet.admin_client().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let script = format!("seq 1 {}", 2000 * (i + 1));
        let (_send, mut recv, id) = open_shell(&client, &["sh", "-c", &script]).await;
        read_to_end(&mut recv).await;
        wait_state(&fleet, id, SessionState::Ended).await;
        ids.push(id);
    }
    drop(client);
    let newest = row(&fleet, ids[2]).await.expect("row");
    // Room for the newest only: a restart prunes the two older ones, keeping their rows.
    fleet.config.recordings_max_bytes = newest.size;
    fleet.restart().await;
    for id in &ids[..2] {
        let r = row(&fleet, *id).await.expect("row kept");
        assert!(!r.recorded && r.size == 0, "{r:?}");
        assert!(
            !fleet
                .paths
                .recordings_dir()
                .join(format!("{id}.cast.gz"))
                .exists()
        );
    }
    assert!(row(&fleet, ids[2]).await.expect("row").recorded);
    let admin = fleet.paths.data_dir.join("admin");
    let (code, _, err) = flotilla(&admin, &["replay", &ids[0].to_string(), "--raw"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("no recording"), "{err}");
    // By age: everything older than a second goes at the next prune (start).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fleet.config.recordings_max_bytes = u64::MAX;
    fleet.config.recordings_max_age = "1s".into();
    fleet.restart().await;
    assert!(!row(&fleet, ids[2]).await.expect("row").recorded);
    assert!(crate::harness::files_in(&fleet.paths.recordings_dir()).is_empty());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_killed_mid_session_keeps_the_recording_and_marks_it_interrupted() {
    let mut hub = Hub::init().await;
    hub.start().await;
    let mut agent = shell_agent_process(&hub, "web-1").await;
    let admin = hub.data.join("admin");
    let mut client = flotilla_shell(
        &admin,
        &["web-1", "--", "sh", "-c", "echo before-the-kill; sleep 600"],
    );
    let mut stdout = client.stdout.take().expect("stdout");
    let mut first = [0u8; 15];
    within(DEADLINE, "the first output", stdout.read_exact(&mut first))
        .await
        .expect("output");
    assert_eq!(&first, b"before-the-kill");
    // Wait for the periodic flush to put the output on disk, as a user would find it.
    let dir = hub.data.join("recordings");
    let copy = hub.dir.path().join("copy.cast.gz");
    within(DEADLINE, "the recording flushed", async {
        loop {
            let file = crate::harness::files_in(&dir).into_iter().next();
            if let Some(file) = file
                && std::fs::copy(dir.join(&file), &copy).is_ok()
                && let Ok((_, events, _)) = hubd::shell::recording::read_all(&copy)
                && events.iter().any(|e| matches!(&e.data,
                    flotilla_wire::sessions::CastData::Output(c) if String::from_utf8_lossy(&c.0).contains("before-the-kill")))
            {
                return;
            }
            // The flush comes within a second; nothing announces it.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    crate::harness::binaries::signal(hub.pid(), "-KILL").await;
    let _ = within(Duration::from_secs(60), "flotilla's exit", client.wait()).await;
    let _ = hub.child.take().expect("hub process").wait().await;
    hub.start().await;
    let rows = sessions_json(&admin).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["state"], "interrupted");
    assert!(
        rows[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("hub stopped")),
        "{rows:?}"
    );
    let id = rows[0]["id"].as_str().expect("id").to_string();
    let (code, replayed, err) = flotilla(&admin, &["replay", &id, "--raw"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        String::from_utf8_lossy(&replayed).contains("before-the-kill"),
        "{replayed:?}"
    );
    assert!(err.contains("stops here"), "{err}");
    agent.sigterm();
    agent.wait_exit(DEADLINE).await;
}
