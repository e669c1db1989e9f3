//! A destination that runs out of room. The room is a real OS limit: RLIMIT_FSIZE, which makes any
//! write past it fail with EFBIG, as a quota would. It applies to the whole process, so this test
//! has a binary of its own (its only test) and sets the limit after the fleet's files exist.

mod files_support;

use files_support::{Fleet, partial_files, random_bytes, spec};
use flotilla::files::FilesError;
use flotilla_wire::files::TransferErrorKind;

const MIB: usize = 1024 * 1024;

fn no_space(r: Result<flotilla::files::CopyReport, FilesError>) -> String {
    match r {
        Err(FilesError::Transfer(e)) if e.kind == TransferErrorKind::NoSpace => e.message,
        other => panic!("expected no space, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_destination_says_no_space_and_leaves_the_source_untouched() {
    let data = random_bytes(6 * MIB, 11);
    let d = data.clone();
    let fleet = Fleet::start_with(vec![
        spec("web-1").prepare(move |s| {
            std::fs::write(s.join("big.bin"), &d).expect("write");
            std::fs::write(s.join("small.txt"), b"fits").expect("write");
        }),
        spec("web-2"),
    ])
    .await;
    std::fs::write(fleet.dir.path().join("upload.bin"), &data).expect("write the upload");
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

    let message = no_space(fleet.cp("web-1:big.bin", "web-2:big.bin").await.0);
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

    // An upload: the hub stops reading the console's stream once the destination gave up, and the
    // console must report why (final) rather than the stopped write (which it would retry).
    let upload = fleet.dir.path().join("upload.bin");
    let (result, events) = fleet
        .cp(upload.to_str().expect("utf-8"), "web-2:upload.bin")
        .await;
    let message = no_space(result);
    assert!(
        message.starts_with("no space left on web-2 (write upload.bin: file size limit reached"),
        "{message}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, flotilla::files::CopyEvent::Retrying { .. })),
        "no space is not retried: {events:?}"
    );
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
