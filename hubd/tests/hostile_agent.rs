//! Hostile content on an agent's machine: what sits in its shared folder, and what a command it runs
//! could reach. A real hub and real agents over QUIC and mutual TLS; where shutdown matters, a real
//! `agentd` process.

mod common;
mod files_support;

use agentd::AgentConfig;
use common::{Daemon, agentd_bin, run_json};
use files_support::{DEADLINE, Fleet, spec, token, wait_listing};
use flotilla::files::FilesError;
use flotilla_wire::Role;
use flotilla_wire::files::TransferErrorKind;
use std::path::Path;

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Makes a FIFO at `path`, as `mkfifo` would.
fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: a valid NUL-terminated path; mkfifo reads it and nothing else.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A FIFO in the shared folder used to wedge the agent: the read opened it and waited for a writer
/// forever, in a thread per attempt, and SIGTERM then waited for those threads. Now each attempt is
/// refused at once by name and kind, other copies from that agent go on, and it stops promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fifo_in_the_shared_folder_is_refused_and_wedges_nothing() {
    let fleet = Fleet::start_with(vec![spec("web-1")]).await;
    // A real agentd process, so that its exit on SIGTERM is what a service manager would see.
    let data = fleet.dir.path().join("web-9");
    let token = token(&fleet.hub_paths, Role::Agent, 1).await;
    let enrolled = run_json(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(&data),
            "enroll",
            "--token",
            &token,
            "--name",
            "web-9",
            "--json",
        ],
    )
    .await;
    assert_eq!(enrolled["name"], "web-9");
    let shared = AgentConfig::default().shared_dir(&data);
    std::fs::create_dir_all(&shared).expect("shared dir");
    mkfifo(&shared.join("pipe"));
    std::fs::write(shared.join("ok.txt"), b"still served").expect("write");
    let mut agent = Daemon::spawn(&agentd_bin(), &["--data-dir", path_str(&data), "run"]);
    let client = fleet.client().await;
    wait_listing(&client, "web-9").await;
    client.close().await;

    // Each attempt is refused at once (a blocked one would end at the copy's deadline instead).
    for attempt in 1..=3 {
        let local = fleet.dir.path().join(format!("pipe-{attempt}"));
        match fleet.cp("web-9:pipe", path_str(&local)).await.0 {
            Err(FilesError::Transfer(e)) => {
                assert_eq!(e.kind, TransferErrorKind::WrongKind, "{e:?}");
                assert_eq!(e.message, "not a regular file: pipe (fifo) on web-9");
            }
            other => panic!("attempt {attempt}: expected a refusal, got {other:?}"),
        }
        assert!(!local.exists(), "nothing written locally");
    }

    // The same agent still serves its files, to another agent and to this machine.
    fleet
        .cp("web-9:ok.txt", "web-1:ok.txt")
        .await
        .0
        .expect("a regular file is still served");
    assert_eq!(
        std::fs::read(fleet.agents[0].shared.join("ok.txt")).expect("read"),
        b"still served"
    );
    let local = fleet.dir.path().join("ok.txt");
    fleet
        .cp("web-9:ok.txt", path_str(&local))
        .await
        .0
        .expect("and downloaded");
    assert_eq!(std::fs::read(&local).expect("read"), b"still served");

    // And it stops on SIGTERM, cleanly and at once.
    agent.sigterm();
    let status = agent.wait_exit(DEADLINE).await;
    assert!(status.success(), "agentd exited with {status}");
}
