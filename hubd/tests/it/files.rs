//! Shared folders and transfers end to end: a real hub and real agents over QUIC and mTLS on
//! loopback, real SQLite, real files; the console's own library drives `ls`, `watch --files` and
//! `cp` as a user would.

use crate::harness::files::{
    DEADLINE, FileWatch, Fleet, PACED_RATE, cp_as, files_fleet, files_fleet_with, next_copy_event,
    pace_agent, partial_files, random_bytes, spawn_cp, spec,
};
use agentd::AgentConfig;
use flotilla::files::{self, CopyEvent, CopyOptions, FilesError};
use flotilla_wire::Role;
use flotilla_wire::files::{
    Change, Chunk, CopyEnd, CopyRequest, Digest, Entry, EntryKind, FileEvent, FileMeta,
    HubStreamOpen, SnapshotFrame, SnapshotReason, TransferErrorKind, TransferFrame, TransferId,
    TransferState, WriteKind,
};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_SNAPSHOT_FRAME, MAX_TRANSFER_FRAME};
use flotilla_wire::msg::StreamOpen;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

const MIB: usize = 1024 * 1024;

fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

fn transfer_error(r: Result<files::CopyReport, FilesError>) -> flotilla_wire::files::TransferError {
    match r {
        Err(FilesError::Transfer(e)) => e,
        other => panic!("expected a transfer error, got {other:?}"),
    }
}

fn paths(l: &files::Listing) -> Vec<&str> {
    l.entries.iter().map(|e| e.path.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_then_deltas_reach_ls_and_watch() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret"), b"s").expect("write");
    let target = outside.path().to_path_buf();
    let fleet = files_fleet_with(vec![spec("web-1").prepare(move |shared| {
        std::fs::create_dir_all(shared.join("docs/deep")).expect("mkdir");
        std::fs::write(shared.join("docs/a.txt"), b"hello").expect("write");
        std::fs::write(shared.join("docs/deep/b"), b"bb").expect("write");
        std::os::unix::fs::symlink(&target, shared.join("escape")).expect("link");
    })])
    .await;
    let client = fleet.admin_client().await;

    let root = files::list(&client, "web-1", "", false).await.expect("ls");
    assert_eq!(paths(&root), ["docs", "escape"]);
    assert!(root.end.online);
    assert_eq!(
        root.entries[1].kind,
        EntryKind::Symlink {
            target: outside.path().display().to_string()
        },
        "a link is listed as a link"
    );
    let docs = files::list(&client, "web-1", "docs", true)
        .await
        .expect("ls -r");
    assert_eq!(paths(&docs), ["docs/a.txt", "docs/deep", "docs/deep/b"]);
    assert_eq!(docs.entries[0].size, 5);
    let err = files::list(&client, "web-1", "escape/secret", false)
        .await
        .expect_err("never followed");
    assert_eq!(err.to_string(), "web-1:escape/secret not found");

    let mut watch = FileWatch::open(&client, Some("web-1")).await;
    watch
        .next_matching(|e| {
            matches!(
                e,
                FileEvent::Snapshot {
                    reason: SnapshotReason::Held,
                    ..
                }
            )
        })
        .await;
    std::fs::write(fleet.agents[0].shared.join("docs/new.txt"), b"0123456789").expect("write");
    watch
        .next_matching(|e| match e {
            FileEvent::Changed { changes, .. } => changes.iter().any(
                |c| matches!(c, Change::Upsert(Entry { path, size: 10, .. }) if path == "docs/new.txt"),
            ),
            _ => false,
        })
        .await;
    let docs = files::list(&client, "web-1", "docs", false)
        .await
        .expect("ls");
    assert_eq!(paths(&docs), ["docs/a.txt", "docs/deep", "docs/new.txt"]);

    std::fs::remove_dir_all(fleet.agents[0].shared.join("docs/deep")).expect("rm");
    watch
        .next_matching(|e| match e {
            FileEvent::Changed { changes, .. } => changes
                .iter()
                .any(|c| matches!(c, Change::Remove { path } if path == "docs/deep")),
            _ => false,
        })
        .await;
    let docs = files::list(&client, "web-1", "docs", true)
        .await
        .expect("ls -r");
    assert_eq!(paths(&docs), ["docs/a.txt", "docs/new.txt"]);
    client.close().await;
}

/// An agent of our own making, speaking the snapshot protocol by hand, so a gap can be sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_in_deltas_gets_a_fresh_snapshot() {
    let fleet = files_fleet(&[]).await;
    let token = fleet.token(Role::Agent, 1, Vec::new()).await.token;
    let fake = agentd::AgentPaths {
        data_dir: fleet.dir.path().join("fake"),
    };
    agentd::enroll(&fake, &token, Some("fake".into()), Vec::new())
        .await
        .expect("enrol");
    let identity = flotilla_certs::Identity::load(&fake.data_dir, flotilla_certs::IDENTITY_STEM)
        .expect("identity");
    let hubs = flotilla_certs::Identity::load_hubs(&fake.data_dir).expect("hubs");
    let endpoint = flotilla_certs::dial::client_endpoint(false).expect("endpoint");
    let config = flotilla_certs::dial::identity_config(&identity).expect("config");
    let (conn, _send, _recv, _welcome) =
        flotilla_certs::dial::hello(&endpoint, &hubs, config, agentd::local_hello())
            .await
            .expect("hello");
    let file = |p: &str| Entry {
        path: p.into(),
        kind: EntryKind::File,
        size: 1,
        mtime_ms: 0,
        mode: 0o644,
    };
    let mut snap = conn.open_uni().await.expect("uni");
    let send = |frame: SnapshotFrame| {
        let mut buf = bytes::BytesMut::new();
        flotilla_wire::encode(&frame, &mut buf, MAX_SNAPSHOT_FRAME).expect("encode");
        buf
    };
    write_frame(&mut snap, &StreamOpen::Snapshot, MAX_CONTROL_FRAME)
        .await
        .expect("open");
    for f in [
        SnapshotFrame::Begin {
            epoch: 1,
            reason: SnapshotReason::Connect,
        },
        SnapshotFrame::Entries(vec![file("a"), file("b")]),
        SnapshotFrame::End {
            epoch: 1,
            total: 2,
            truncated: false,
        },
        SnapshotFrame::Delta {
            epoch: 1,
            seq: 1,
            changes: vec![Change::Upsert(file("c"))],
        },
    ] {
        snap.write_all(&send(f)).await.expect("send");
    }
    let client = fleet.admin_client().await;
    let mut watch = FileWatch::open(&client, Some("fake")).await;
    watch
        .next_matching(|e| matches!(e, FileEvent::Snapshot { .. } | FileEvent::Changed { .. }))
        .await;
    let l = tokio::time::timeout(DEADLINE, async {
        loop {
            let l = files::list(&client, "fake", "", false).await.expect("ls");
            if l.entries.len() == 3 {
                return l;
            }
            watch.next_matching(|_| true).await;
        }
    })
    .await
    .expect("delta 1 applied");
    assert_eq!(paths(&l), ["a", "b", "c"]);

    // Delta 2 never comes: the hub must ask for a fresh snapshot rather than guess.
    let gap = SnapshotFrame::Delta {
        epoch: 1,
        seq: 3,
        changes: vec![Change::Upsert(file("e"))],
    };
    snap.write_all(&send(gap)).await.expect("send");
    let (_s, mut r) = tokio::time::timeout(DEADLINE, conn.accept_bi())
        .await
        .expect("hub opens a stream within the deadline")
        .expect("stream");
    let open = read_frame::<HubStreamOpen, _>(&mut r, MAX_CONTROL_FRAME)
        .await
        .expect("read")
        .expect("frame");
    assert!(
        matches!(&open, HubStreamOpen::Resync { reason } if reason.contains("lost changes")),
        "{open:?}"
    );
    let l = files::list(&client, "fake", "", false).await.expect("ls");
    assert_eq!(paths(&l), ["a", "b", "c"], "the gap's delta is not applied");

    for f in [
        SnapshotFrame::Begin {
            epoch: 2,
            reason: SnapshotReason::Requested,
        },
        SnapshotFrame::Entries(vec![file("a"), file("b"), file("c"), file("d"), file("e")]),
        SnapshotFrame::End {
            epoch: 2,
            total: 5,
            truncated: false,
        },
    ] {
        snap.write_all(&send(f)).await.expect("send");
    }
    watch
        .next_matching(|e| {
            matches!(
                e,
                FileEvent::Snapshot {
                    reason: SnapshotReason::Requested,
                    entries: 5,
                    ..
                }
            )
        })
        .await;
    let l = files::list(&client, "fake", "", false).await.expect("ls");
    assert_eq!(paths(&l), ["a", "b", "c", "d", "e"]);
    client.close().await;
    conn.close(0u32.into(), b"done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ten_thousand_file_folder_is_listed_whole() {
    let fleet = files_fleet_with(vec![spec("big").prepare(|shared| {
        for d in 0..100 {
            let dir = shared.join(format!("d{d:03}"));
            std::fs::create_dir(&dir).expect("mkdir");
            for f in 0..100 {
                std::fs::write(dir.join(format!("f{f:03}")), b"x").expect("write");
            }
        }
    })])
    .await;
    let client = fleet.admin_client().await;
    let all = files::list(&client, "big", "", true).await.expect("ls -r");
    assert_eq!(all.entries.len(), 10_100);
    assert_eq!(all.end.total, 10_100);
    assert!(!all.end.truncated);
    let one = files::list(&client, "big", "d042", false)
        .await
        .expect("ls");
    assert_eq!(one.entries.len(), 100);
    assert_eq!(one.entries[99].path, "d042/f099");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_agent_to_agent_and_download_arrive_verified() {
    let fleet = files_fleet(&["web-1", "web-2"]).await;
    let data = random_bytes(3 * MIB + 123, 1);
    let local = fleet.dir.path().join("src.bin");
    std::fs::write(&local, &data).expect("write");
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o640)).expect("chmod");

    let (r, up) = fleet
        .cp(local.to_str().expect("utf-8"), "web-1:in/data.bin")
        .await;
    let report = r.expect("upload");
    assert_eq!((report.files, report.bytes), (1, data.len() as u64));
    let landed = fleet.agents[0].shared.join("in/data.bin");
    assert_eq!(std::fs::read(&landed).expect("read"), data);
    let md = std::fs::metadata(&landed).expect("stat");
    assert_eq!(md.permissions().mode() & 0o777, 0o640, "mode travels");
    assert_eq!(
        md.modified()
            .expect("mtime")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_millis(),
        std::fs::metadata(&local)
            .expect("stat")
            .modified()
            .expect("mtime")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_millis(),
        "mtime travels"
    );

    let (r, a2a) = fleet.cp("web-1:in/data.bin", "web-2:out/").await;
    r.expect("agent to agent");
    // Both agents carried the copy on a bulk lane (jumbo packets), not their control connection.
    let ctx = &fleet.ctx();
    assert!(
        ctx.stats.bulk_lanes_opened.load(Ordering::Relaxed) >= 2,
        "the upload and the relay opened bulk lanes on web-1 and web-2"
    );
    assert_eq!(
        ctx.registry.bulk_count(),
        2,
        "both lanes stay open for the next copy"
    );
    assert_eq!(
        std::fs::read(fleet.agents[1].shared.join("out/data.bin")).expect("read"),
        data
    );

    let back = fleet.dir.path().join("back.bin");
    let (r, down) = fleet
        .cp("web-2:out/data.bin", back.to_str().expect("utf-8"))
        .await;
    r.expect("download");
    assert_eq!(std::fs::read(&back).expect("read"), data);

    let expected = blake3_hex(&data);
    let mut ids = Vec::new();
    for events in [&up, &a2a, &down] {
        let done = events
            .iter()
            .find_map(|e| match e {
                CopyEvent::Done {
                    transfer,
                    blake3,
                    resumed_from,
                    ..
                } => Some((transfer.clone(), blake3.clone(), *resumed_from)),
                _ => None,
            })
            .expect("a done event");
        assert_eq!(done.1, expected);
        assert_eq!(done.2, 0);
        ids.push(done.0);
    }
    for a in &fleet.agents {
        assert_eq!(partial_files(&a.shared), Vec::<std::path::PathBuf>::new());
    }
    assert!(partial_files(fleet.dir.path()).is_empty());
    let ctx = fleet.ctx().clone();
    let (rows, audit) = ctx
        .store
        .call(move |c| {
            let rows: Vec<_> = ids
                .iter()
                .map(|id| hubd::store::transfers::get(c, id))
                .collect::<Result<_, _>>()?;
            Ok((rows, hubd::store::audit::recent(c, 100)?))
        })
        .await
        .expect("store");
    for row in rows {
        let row = row.expect("a transfer row");
        assert_eq!(
            (row.state.as_str(), row.bytes, row.digest.as_str()),
            ("done", data.len() as u64, expected.as_str())
        );
    }
    assert_eq!(
        audit.iter().filter(|a| a.action == "transfer.done").count(),
        3
    );
    // What the Prometheus endpoint exports: three transfers, the relayed data counted both ways.
    use hubd::stats::{Direction, StreamKind};
    let stats = &ctx.stats;
    assert_eq!(stats.transfers_started.load(Ordering::Relaxed), 3);
    assert_eq!(stats.transfers_completed.load(Ordering::Relaxed), 3);
    assert_eq!(stats.transfers_failed.load(Ordering::Relaxed), 0);
    for dir in [Direction::In, Direction::Out] {
        assert!(
            stats.traffic.bytes(StreamKind::Transfer, dir) >= 3 * data.len() as u64,
            "{dir:?}"
        );
    }
}

/// Runs an agent-to-agent copy of `size` bytes and stops the hub once 2 MiB are written at the
/// destination; returns the fleet with the hub stopped and the copy still retrying.
async fn interrupted_by_hub(
    size: usize,
) -> (
    Fleet,
    Vec<u8>,
    tokio::task::JoinHandle<Result<files::CopyReport, FilesError>>,
    tokio::sync::mpsc::Receiver<CopyEvent>,
    crate::harness::proxy::FaultProxy,
) {
    let data = random_bytes(size, 7);
    let d = data.clone();
    let mut fleet = files_fleet_with(vec![
        spec("web-1").prepare(move |s| std::fs::write(s.join("big.bin"), &d).expect("write")),
        spec("web-2"),
    ])
    .await;
    let pace = pace_agent(&mut fleet, "web-1", PACED_RATE).await;
    let hub_cancel = fleet.hub_cancel_token();
    let stopped = Arc::new(AtomicBool::new(false));
    let (task, mut rx) = spawn_cp(
        fleet.admin_login().clone(),
        "web-1:big.bin",
        "web-2:big.bin",
        CopyOptions::default(),
        CancellationToken::new(),
        move |e| {
            if let CopyEvent::Progress { written, .. } = e
                && *written >= 2 * MIB as u64
                && !stopped.swap(true, Ordering::SeqCst)
            {
                hub_cancel.cancel();
            }
        },
    );
    next_copy_event(
        &mut rx,
        |e| matches!(e, CopyEvent::Progress { written, .. } if *written >= 2 * MIB as u64),
    )
    .await;
    fleet.stop().await;
    (fleet, data, task, rx, pace)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_resumes_after_the_hub_restarts_mid_transfer() {
    let (mut fleet, data, task, mut rx, _pace) = interrupted_by_hub(24 * MIB).await;
    let partial = partial_files(&fleet.agents[1].shared);
    assert_eq!(
        partial.len(),
        1,
        "the destination keeps its bytes: {partial:?}"
    );
    let kept = std::fs::metadata(&partial[0]).expect("stat").len();
    assert!(kept > 0 && kept < data.len() as u64, "{kept}");
    fleet.start().await;
    let resumed = tokio::time::timeout(DEADLINE, async {
        loop {
            match rx.recv().await {
                Some(e @ CopyEvent::Started { attempt, .. }) if attempt > 1 => return Some(e),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await
    .expect("a second attempt within the deadline");
    let Some(resumed) = resumed else {
        panic!("copy ended without resuming: {:?}", task.await);
    };
    let CopyEvent::Started {
        offset, discarded, ..
    } = resumed
    else {
        unreachable!()
    };
    assert!(
        offset > 0,
        "resumed from the bytes already there, not from 0"
    );
    assert_eq!(discarded, 0);
    let report = tokio::time::timeout(DEADLINE * 2, task)
        .await
        .expect("copy finishes")
        .expect("task")
        .expect("copy succeeds");
    assert_eq!(report.bytes, data.len() as u64);
    let done = next_copy_event(&mut rx, |e| matches!(e, CopyEvent::Done { .. })).await;
    let CopyEvent::Done {
        resumed_from,
        blake3,
        ..
    } = done
    else {
        unreachable!()
    };
    assert_eq!(resumed_from, offset);
    assert_eq!(blake3, blake3_hex(&data));
    assert_eq!(
        std::fs::read(fleet.agents[1].shared.join("big.bin")).expect("read"),
        data
    );
    assert!(partial_files(&fleet.agents[1].shared).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_byte_in_the_partial_file_is_caught_and_the_copy_starts_over() {
    let (mut fleet, data, task, mut rx, _pace) = interrupted_by_hub(24 * MIB).await;
    let partial = partial_files(&fleet.agents[1].shared);
    assert_eq!(partial.len(), 1);
    let mut bytes = std::fs::read(&partial[0]).expect("read");
    bytes[1000] ^= 0x40;
    std::fs::write(&partial[0], &bytes).expect("corrupt");
    fleet.start().await;
    let again = next_copy_event(
        &mut rx,
        |e| matches!(e, CopyEvent::Started { attempt, .. } if *attempt > 1),
    )
    .await;
    let CopyEvent::Started {
        offset, discarded, ..
    } = again
    else {
        unreachable!()
    };
    assert_eq!(offset, 0, "the source refused the corrupted prefix");
    assert_eq!(discarded, bytes.len() as u64);
    tokio::time::timeout(DEADLINE * 2, task)
        .await
        .expect("copy finishes")
        .expect("task")
        .expect("copy succeeds");
    assert_eq!(
        std::fs::read(fleet.agents[1].shared.join("big.bin")).expect("read"),
        data
    );
}

/// A console that lies: it sends a flipped byte with the digest of the original. The destination
/// agent must refuse the file and leave nothing under its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_byte_corrupted_in_flight_is_caught_by_the_hash() {
    let fleet = files_fleet(&["web-1"]).await;
    let data = random_bytes(MIB + 17, 3);
    let meta = FileMeta {
        size: data.len() as u64,
        mtime_ms: 1_000,
        mode: 0o644,
    };
    let client = fleet.admin_client().await;
    let (mut send, mut recv) = client.open_stream(&StreamOpen::Copy).await.expect("stream");
    let req = CopyRequest {
        transfer: TransferId(42),
        src: CopyEnd::Local {
            path: "/tampered".into(),
            meta: Some(meta),
        },
        dst: CopyEnd::Agent {
            agent: "web-1".into(),
            path: "t.bin".into(),
        },
        kind: WriteKind::File,
    };
    write_frame(&mut send, &req, MAX_CONTROL_FRAME)
        .await
        .expect("request");
    let first = read_frame::<TransferFrame, _>(&mut recv, MAX_TRANSFER_FRAME)
        .await
        .expect("read")
        .expect("frame");
    assert_eq!(
        first,
        TransferFrame::ReadFrom {
            offset: 0,
            prefix: None
        }
    );
    write_frame(
        &mut send,
        &TransferFrame::Begin { offset: 0 },
        MAX_TRANSFER_FRAME,
    )
    .await
    .expect("begin");
    let mut bad = data.clone();
    bad[MIB / 2] ^= 1;
    for c in bad.chunks(flotilla_wire::files::CHUNK_SIZE) {
        write_frame(
            &mut send,
            &TransferFrame::Chunk(Chunk(c.to_vec())),
            MAX_TRANSFER_FRAME,
        )
        .await
        .expect("chunk");
    }
    let digest = Digest(*blake3::hash(&data).as_bytes());
    write_frame(
        &mut send,
        &TransferFrame::End { digest },
        MAX_TRANSFER_FRAME,
    )
    .await
    .expect("end");
    let failure = tokio::time::timeout(DEADLINE, async {
        loop {
            match read_frame::<TransferFrame, _>(&mut recv, MAX_TRANSFER_FRAME).await {
                Ok(Some(TransferFrame::Failed(e))) => return e,
                Ok(Some(TransferFrame::Done(_))) => panic!("a corrupted file was accepted"),
                Ok(Some(_)) => {}
                other => panic!("stream ended without a verdict: {other:?}"),
            }
        }
    })
    .await
    .expect("verdict within the deadline");
    assert_eq!(failure.kind, TransferErrorKind::HashMismatch);
    assert!(
        failure.message.contains("does not match the source"),
        "{}",
        failure.message
    );
    assert!(!fleet.agents[0].shared.join("t.bin").exists());
    assert!(partial_files(&fleet.agents[0].shared).is_empty());
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traversal_and_symlink_escapes_are_refused() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret"), b"top secret").expect("write");
    let target = outside.path().to_path_buf();
    let fleet = files_fleet_with(vec![
        spec("web-1").prepare(move |shared| {
            std::os::unix::fs::symlink(&target, shared.join("out")).expect("link");
            std::os::unix::fs::symlink(target.join("secret"), shared.join("s")).expect("link");
            std::fs::write(shared.join("ok.txt"), b"fine").expect("write");
        }),
        spec("web-2"),
    ])
    .await;
    let local = fleet.dir.path().join("f.txt");
    std::fs::write(&local, b"payload").expect("write");
    let local = local.to_str().expect("utf-8");
    let got = fleet.dir.path().join("got");
    let got = got.to_str().expect("utf-8");

    let e = transfer_error(fleet.cp(local, "web-1:../f.txt").await.0);
    assert_eq!(e.kind, TransferErrorKind::Escapes);
    assert_eq!(
        e.message,
        "path \"../f.txt\" leaves the shared folder (`..`)"
    );
    let e = transfer_error(fleet.cp(local, "web-1:/etc/f.txt").await.0);
    assert_eq!(e.kind, TransferErrorKind::Escapes);
    assert!(e.message.contains("is absolute"), "{}", e.message);
    let e = transfer_error(fleet.cp("web-1:out/secret", got).await.0);
    assert_eq!(e.kind, TransferErrorKind::Escapes);
    assert_eq!(
        e.message,
        "out/secret on web-1 leads out of the shared folder through a symlink"
    );
    let e = transfer_error(fleet.cp("web-1:s", "web-2:s").await.0);
    assert_eq!(e.kind, TransferErrorKind::Escapes);
    let e = transfer_error(fleet.cp(local, "web-1:out/planted.txt").await.0);
    assert_eq!(e.kind, TransferErrorKind::Escapes);
    assert_eq!(
        e.message,
        "out on web-1 leads out of the shared folder through a symlink"
    );
    assert!(
        !outside.path().join("planted.txt").exists(),
        "nothing written outside"
    );
    assert!(!Path::new(got).exists());
    assert!(!fleet.agents[1].shared.join("s").exists());
    // The agent still serves what is inside.
    fleet
        .cp("web-1:ok.txt", got)
        .await
        .0
        .expect("inside is fine");
    assert_eq!(std::fs::read(got).expect("read"), b"fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_folder_refuses_writes_but_serves_reads() {
    let fleet = files_fleet_with(vec![
        spec("ro")
            .config(AgentConfig {
                read_only: true,
                ..AgentConfig::default()
            })
            .prepare(|s| std::fs::write(s.join("r.txt"), b"readable").expect("write")),
        spec("rw"),
    ])
    .await;
    let local = fleet.dir.path().join("up.txt");
    std::fs::write(&local, b"up").expect("write");
    let e = transfer_error(
        fleet
            .cp(local.to_str().expect("utf-8"), "ro:up.txt")
            .await
            .0,
    );
    assert_eq!(e.kind, TransferErrorKind::ReadOnly);
    assert_eq!(
        e.message,
        "the shared folder of ro is read-only (read_only = true in its agent.toml)"
    );
    assert!(!fleet.agents[0].shared.join("up.txt").exists());
    fleet
        .cp("ro:r.txt", "rw:r.txt")
        .await
        .0
        .expect("reads are served");
    assert_eq!(
        std::fs::read(fleet.agents[1].shared.join("r.txt")).expect("read"),
        b"readable"
    );
    let e = transfer_error(fleet.cp("rw:r.txt", "ro:again.txt").await.0);
    assert_eq!(e.kind, TransferErrorKind::ReadOnly);
    let client = fleet.admin_client().await;
    let l = files::list(&client, "ro", "", false).await.expect("ls");
    assert_eq!(paths(&l), ["r.txt"], "nothing was added");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_can_list_but_not_copy() {
    let fleet = files_fleet_with(vec![
        spec("web-1").prepare(|s| std::fs::write(s.join("f"), b"f").expect("write")),
        spec("web-2"),
    ])
    .await;
    let viewer = fleet.login_as(Role::Viewer, "watcher").await;
    let client = flotilla::client::Client::connect(&viewer)
        .await
        .expect("viewer connects");
    let l = files::list(&client, "web-1", "", false)
        .await
        .expect("viewers list");
    assert_eq!(paths(&l), ["f"]);
    client.close().await;
    let got = fleet.dir.path().join("got");
    for (src, dst) in [
        ("web-1:f", "web-2:f"),
        ("web-1:f", got.to_str().expect("utf-8")),
    ] {
        let e = transfer_error(cp_as(&viewer, src, dst, &CopyOptions::default()).await.0);
        assert_eq!(e.kind, TransferErrorKind::Forbidden);
        assert_eq!(e.message, "copying needs the operator role; you are viewer");
    }
    assert!(!fleet.agents[1].shared.join("f").exists());
    assert!(!got.exists());
    let ctx = fleet.ctx().clone();
    let rows: i64 = ctx
        .store
        .call(|c| Ok(c.query_row("SELECT COUNT(*) FROM transfers", [], |r| r.get(0))?))
        .await
        .expect("count");
    assert_eq!(rows, 0, "a refused copy leaves no transfer record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_copy_cleans_both_ends() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
    let data = random_bytes(24 * MIB, 5);
    let d = data.clone();
    let mut fleet = files_fleet_with(vec![
        spec("web-1").prepare(move |s| std::fs::write(s.join("big.bin"), &d).expect("write")),
        spec("web-2"),
    ])
    .await;
    let _pace = pace_agent(&mut fleet, "web-1", PACED_RATE).await;
    let local = fleet.dir.path().join("down.bin");
    // A second identity: the hub keeps one connection per identity, and the copies use the admin's.
    let viewer = fleet.login_as(Role::Viewer, "watcher").await;
    let client = flotilla::client::Client::connect(&viewer)
        .await
        .expect("viewer connects");
    let mut watch = FileWatch::open(&client, None).await;
    for dst in ["web-2:big.bin".to_string(), local.display().to_string()] {
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let (task, mut rx) = spawn_cp(
            fleet.admin_login().clone(),
            "web-1:big.bin",
            &dst,
            CopyOptions::default(),
            cancel,
            move |e| {
                if let CopyEvent::Progress { written, .. } = e
                    && *written >= MIB as u64
                {
                    trigger.cancel();
                }
            },
        );
        let started = next_copy_event(&mut rx, |e| matches!(e, CopyEvent::Started { .. })).await;
        let CopyEvent::Started { transfer, .. } = started else {
            unreachable!()
        };
        let r = tokio::time::timeout(DEADLINE, task)
            .await
            .expect("cancel ends the copy")
            .expect("task");
        assert!(matches!(r, Err(FilesError::Cancelled)), "{dst}: {r:?}");
        // The hub publishes the end once its record is written.
        watch
            .next_matching(|e| {
                matches!(e, FileEvent::Transfer(t)
                    if t.transfer.to_string() == transfer && t.state == TransferState::Cancelled)
            })
            .await;
        assert!(
            partial_files(fleet.dir.path()).is_empty(),
            "{dst}: no partial file anywhere"
        );
        assert!(!fleet.agents[1].shared.join("big.bin").exists());
        assert!(!local.exists());
        assert_eq!(
            std::fs::read(fleet.agents[0].shared.join("big.bin")).expect("read"),
            data,
            "source untouched"
        );
        let ctx = fleet.ctx().clone();
        let row = ctx
            .store
            .call(move |c| Ok(hubd::store::transfers::get(c, &transfer)?))
            .await
            .expect("store")
            .expect("row");
        assert_eq!(row.state, "cancelled", "{dst}");
    }
    client.close().await;
}

/// Copies 24 MiB from web-1 to web-2, stops the agent `restarted` (its service going down) once
/// 2 MiB are written at the destination, starts it again, and checks that the copy resumes from
/// the bytes already there and arrives whole.
async fn resumes_after_agent_restart(restarted: &str, seed: u64) {
    let data = random_bytes(24 * MIB, seed);
    let d = data.clone();
    let mut fleet = files_fleet_with(vec![
        spec("web-1").prepare(move |s| std::fs::write(s.join("big.bin"), &d).expect("write")),
        spec("web-2"),
    ])
    .await;
    let _pace = pace_agent(&mut fleet, "web-1", PACED_RATE).await;
    let stop = fleet.agent(restarted).cancel_token();
    let (task, mut rx) = spawn_cp(
        fleet.admin_login().clone(),
        "web-1:big.bin",
        "web-2:big.bin",
        CopyOptions::default(),
        CancellationToken::new(),
        move |e| {
            if let CopyEvent::Progress { written, .. } = e
                && *written >= 2 * MIB as u64
            {
                stop.cancel();
            }
        },
    );
    next_copy_event(
        &mut rx,
        |e| matches!(e, CopyEvent::Progress { written, .. } if *written >= 2 * MIB as u64),
    )
    .await;
    let agent = fleet.agent_mut(restarted);
    agent.stop().await;
    assert_eq!(
        partial_files(&fleet.agent("web-2").shared).len(),
        1,
        "the destination's partial file survives {restarted} stopping"
    );
    let agent = fleet.agent_mut(restarted);
    agent.start();
    agent.wait_connected().await;
    let resumed = next_copy_event(
        &mut rx,
        |e| matches!(e, CopyEvent::Started { attempt, .. } if *attempt > 1),
    )
    .await;
    assert!(
        matches!(resumed, CopyEvent::Started { offset, .. } if offset > 0),
        "{resumed:?}"
    );
    tokio::time::timeout(DEADLINE * 2, task)
        .await
        .expect("copy finishes")
        .expect("task")
        .expect("copy succeeds");
    assert_eq!(
        std::fs::read(fleet.agent("web-2").shared.join("big.bin")).expect("read"),
        data
    );
    assert!(partial_files(&fleet.agent("web-2").shared).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_resumes_after_the_destination_agent_restarts() {
    resumes_after_agent_restart("web-2", 9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_resumes_after_the_source_agent_restarts() {
    resumes_after_agent_restart("web-1", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_directory_tree_copies_with_minus_r() {
    let fleet = files_fleet_with(vec![
        spec("web-1").prepare(|s| {
            std::fs::create_dir_all(s.join("site/img")).expect("mkdir");
            std::fs::create_dir_all(s.join("site/empty")).expect("mkdir");
            std::fs::write(s.join("site/index.html"), b"<html>").expect("write");
            std::fs::write(s.join("site/empty.txt"), b"").expect("write");
            std::fs::write(s.join("site/img/logo.png"), random_bytes(70_000, 2)).expect("write");
            std::os::unix::fs::symlink("index.html", s.join("site/link")).expect("link");
        }),
        spec("web-2"),
    ])
    .await;
    let opts = CopyOptions {
        recursive: true,
        ..CopyOptions::default()
    };
    let viewer = fleet.login_as(Role::Viewer, "watcher").await;
    let client = flotilla::client::Client::connect(&viewer)
        .await
        .expect("viewer connects");
    let mut watch = FileWatch::open(&client, Some("web-2")).await;
    let report = cp_as(fleet.admin_login(), "web-1:site", "web-2:", &opts)
        .await
        .0
        .expect("cp -r");
    assert_eq!((report.files, report.dirs, report.skipped), (3, 3, 1));
    assert_eq!(
        std::fs::metadata(fleet.agents[1].shared.join("site/empty.txt"))
            .expect("stat")
            .len(),
        0
    );
    let dst = fleet.agents[1].shared.join("site");
    assert_eq!(
        std::fs::read(dst.join("index.html")).expect("read"),
        b"<html>"
    );
    assert_eq!(
        std::fs::read(dst.join("img/logo.png")).expect("read"),
        random_bytes(70_000, 2)
    );
    assert!(dst.join("empty").is_dir());
    assert!(!dst.join("link").exists(), "links are not copied");
    // The hub learns of the new files from web-2's watcher; listing (and so cp -r from web-2)
    // follows once the change has arrived.
    watch
        .next_matching(|e| match e {
            FileEvent::Changed { changes, .. } => changes
                .iter()
                .any(|c| matches!(c, Change::Upsert(e) if e.path == "site/img/logo.png")),
            _ => false,
        })
        .await;
    client.close().await;
    let local = fleet.dir.path().join("mirror");
    let report = cp_as(
        fleet.admin_login(),
        "web-2:site",
        local.to_str().expect("utf-8"),
        &opts,
    )
    .await
    .0
    .expect("download -r");
    assert_eq!(report.files, 3);
    assert!(local.join("empty.txt").is_file());
    assert_eq!(
        std::fs::read(local.join("img/logo.png")).expect("read"),
        random_bytes(70_000, 2)
    );
    let e = fleet
        .cp("web-1:site", "web-2:other")
        .await
        .0
        .expect_err("a directory needs -r");
    assert_eq!(e.to_string(), "web-1:site is a directory: use cp -r");
}
