//! A destination that runs out of room. The room is a real OS limit: RLIMIT_FSIZE, which makes any
//! write past it fail with EFBIG, as a quota would. It applies to the whole process, so this test
//! runs in a process of its own ([`in_own_process`]) and sets the limit after the fleet's files
//! exist.

use crate::harness::files::{files_fleet_with, partial_files, random_bytes, spec};
use crate::harness::in_own_process;
use flotilla::files::{CopyEvent, FilesError};
use flotilla_wire::files::TransferErrorKind;

const MIB: usize = 1024 * 1024;

fn no_space(r: Result<flotilla::files::CopyReport, FilesError>) -> String {
    match r {
        Err(FilesError::Transfer(e)) if e.kind == TransferErrorKind::NoSpace => e.message,
        other => panic!("expected no space, got {other:?}"),
    }
}

/// Attempts that were retried.
fn retries(events: &[CopyEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, CopyEvent::Retrying { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_destination_says_no_space_and_leaves_the_source_untouched() {
    if !in_own_process(
        "files_nospace::a_full_destination_says_no_space_and_leaves_the_source_untouched",
    ) {
        return;
    }
    let data = random_bytes(6 * MIB, 11);
    let d = data.clone();
    let fleet = files_fleet_with(vec![
        spec("web-1").prepare(move |s| {
            std::fs::write(s.join("big.bin"), &d).expect("write");
            std::fs::write(s.join("small.txt"), b"fits").expect("write");
        }),
        spec("web-2"),
    ])
    .await;
    let upload = fleet.dir.path().join("upload.bin");
    std::fs::write(&upload, &data).expect("write");
    // SAFETY: process-wide settings made before any thread of ours writes a file again: ignoring
    // SIGXFSZ turns "killed at the limit" into EFBIG, and the limit caps every file at 2 MiB.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 2 * MIB as libc::rlim_t,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit),
            0,
            "set the file size limit"
        );
    }

    let (result, events) = fleet.cp("web-1:big.bin", "web-2:big.bin").await;
    let message = no_space(result);
    assert_eq!(retries(&events), 0, "no space is final: {events:?}");
    assert!(
        message.starts_with("no space left on web-2 (write big.bin: file size limit reached"),
        "{message}"
    );
    assert!(
        !fleet.agents[1].shared.join("big.bin").exists(),
        "nothing under the real name"
    );
    assert!(
        partial_files(&fleet.agents[1].shared).is_empty(),
        "the partial file is removed to give the room back"
    );
    assert_eq!(
        std::fs::read(fleet.agents[0].shared.join("big.bin")).expect("read"),
        data,
        "source untouched"
    );

    let local = fleet.dir.path().join("big.bin");
    let message = no_space(
        fleet
            .cp("web-1:big.bin", local.to_str().expect("utf-8"))
            .await
            .0,
    );
    assert!(
        message.starts_with("no space left on this machine"),
        "{message}"
    );
    assert!(!local.exists());
    assert!(partial_files(fleet.dir.path()).is_empty());

    // An upload from this machine: the agent's words, at once and without a retry (a stop that
    // raced them once read "sending stopped by peer: error 0" and was retried for 300 s).
    let (result, events) = fleet
        .cp(upload.to_str().expect("utf-8"), "web-2:up.bin")
        .await;
    let message = no_space(result);
    assert_eq!(retries(&events), 0, "no space is final: {events:?}");
    assert!(
        message.starts_with("no space left on web-2 (write up.bin: file size limit reached"),
        "{message}"
    );
    assert!(!fleet.agents[1].shared.join("up.bin").exists());
    assert!(partial_files(&fleet.agents[1].shared).is_empty());

    // What fits still goes through.
    fleet
        .cp("web-1:small.txt", "web-2:small.txt")
        .await
        .0
        .expect("a small file fits");
    assert_eq!(
        std::fs::read(fleet.agents[1].shared.join("small.txt")).expect("read"),
        b"fits"
    );
}
