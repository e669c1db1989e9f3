//! SIGTERM to a hub serving agents: a clean exit 0, every agent told the hub is shutting down,
//! and a database that is whole, checkpointed, and records when each agent was last seen.

use crate::harness::binaries::{Agent, Hub, enrol};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_serving_hub() {
    let mut hub = Hub::init().await;
    hub.start().await;
    let token = hub.token("agent", 3).await;
    let dir = hub.dir.path().to_path_buf();
    let mut agents = Vec::new();
    for name in ["db-1", "db-2", "db-3"] {
        let paths = enrol(&dir, name, &token).await;
        let mut a = Agent::start(&paths);
        a.connected().await;
        agents.push(a);
    }
    let before = hubd::store::now_ms();

    let status = hub.stop().await;
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    for a in &mut agents {
        let reason = a.disconnected().await;
        assert!(reason.contains("shutting down"), "agent was told: {reason}");
    }
    assert!(!hub.data.join("admin.sock").exists());
    assert!(!hub.data.join(hubd::maint::SOCKET).exists());
    let wal = hub.data.join("hub.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).expect("wal").len() == 0,
        "the WAL was checkpointed into hub.db at close"
    );
    let conn = rusqlite::Connection::open_with_flags(
        hub.data.join("hub.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    let mut stmt = conn
        .prepare("SELECT name, last_seen_ms FROM identities WHERE role = 'agent' ORDER BY name")
        .expect("query");
    let seen: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(seen.len(), 3);
    for (name, at) in seen {
        assert!(
            at as u64 >= before,
            "{name}'s disconnection at shutdown was recorded ({at} < {before})"
        );
    }
    let log = hub.log();
    assert!(log.contains("hub stopped"), "{log}");
    for a in agents {
        a.stop().await;
    }
}
