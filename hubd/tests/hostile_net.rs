//! A hostile or broken network: a flood of handshakes that never complete must not lock real
//! clients out, and a hub that crashed and came back must tell its agents at once.

mod common;

use common::{
    Client, DEADLINE, Daemon, HubProc, TestFleet, agentd_bin, hubd_bin, mode_of, run_json,
};
use flotilla_wire::IdentityId;
use std::path::Path;
use std::time::Instant;

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `hubd init` in `data`, then `hubd run`.
async fn init_and_run(data: &Path) -> HubProc {
    let init = run_json(
        &hubd_bin(),
        &[
            "--data-dir",
            path_str(data),
            "init",
            "--listen",
            "127.0.0.1:0",
            "--json",
        ],
    )
    .await;
    assert!(init["ca_fingerprint"].as_str().is_some(), "{init}");
    HubProc::run(data, None).await
}

/// `agentd enroll` with a fresh token of the hub in `data`, then `agentd run`.
async fn enrol_and_run_agent(data: &Path, dir: &Path, name: &str) -> (IdentityId, Daemon) {
    let token = run_json(
        &hubd_bin(),
        &[
            "--data-dir",
            path_str(data),
            "token",
            "create",
            "--role",
            "agent",
            "--json",
        ],
    )
    .await;
    let token = token["token"].as_str().expect("token text");
    let json = run_json(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(dir),
            "enroll",
            "--token",
            token,
            "--name",
            name,
            "--json",
        ],
    )
    .await;
    let id = IdentityId::parse(json["id"].as_str().expect("id")).expect("id shape");
    let agent = Daemon::spawn(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(dir),
            "run",
            "--metrics-interval-ms",
            "1000",
        ],
    );
    (id, agent)
}

/// After `kill -9` of the hub and a restart on the same port, the agent learns from the new hub's
/// stateless reset that its connection is gone and is back well before its 15 s idle timeout
/// would have told it (the deadline here is [`DEADLINE`], 10 s; the measured figure is in
/// docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread")]
async fn killed_hub_resets_its_agents_and_they_are_back_before_the_idle_timeout() {
    flotilla_certs::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    let mut hub = init_and_run(&data).await;
    let addr = hub.addr;
    let key = data.join("quic-reset.key");
    assert_eq!(
        mode_of(&key),
        0o600,
        "the reset key is private from creation"
    );
    let secret = std::fs::read(&key).expect("reset key");

    let (id, mut agent) = enrol_and_run_agent(&data, &dir.path().join("agent"), "agent-1").await;
    {
        let admin = Client::from_dir(&data.join("admin"))
            .await
            .expect("admin hello");
        let mut sub = admin.subscribe().await;
        sub.all_online(std::slice::from_ref(&id), DEADLINE).await;
    }

    hub.daemon.kill9().await;
    let hub = HubProc::run(&data, Some(addr)).await;
    let listening = Instant::now();
    assert_eq!(hub.addr, addr);
    assert_eq!(
        std::fs::read(&key).expect("reset key"),
        secret,
        "the key survives restarts"
    );

    let admin = Client::from_dir(&data.join("admin"))
        .await
        .expect("admin hello after restart");
    let mut sub = admin.subscribe().await;
    sub.all_online(std::slice::from_ref(&id), DEADLINE).await;
    eprintln!(
        "agent back {:?} after the new hub listened",
        listening.elapsed()
    );
    agent.wait_log("stateless reset", DEADLINE).await;
    assert!(agent.running(), "the agent outlived its hub");
}

/// The hub's reset key is made by `hubd init`, not only at first run; a hub whose key is missing
/// (initialised before resets existed) makes one when it starts.
#[tokio::test(flavor = "multi_thread")]
async fn reset_key_is_made_at_init_and_remade_when_missing() {
    let mut fleet = TestFleet::new().await;
    let key = fleet.paths.reset_key();
    assert_eq!(mode_of(&key), 0o600);
    assert_eq!(std::fs::read(&key).expect("key").len(), 32);
    fleet.stop().await;
    std::fs::remove_file(&key).expect("remove key");
    fleet.start().await;
    assert_eq!(mode_of(&key), 0o600);
    assert_eq!(std::fs::read(&key).expect("key").len(), 32);
}
