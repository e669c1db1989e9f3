//! Comings and goings: agent before hub, hub and agent restarts, clean and unclean deaths of both,
//! with the real binaries where a process has to die.

use crate::harness::{
    Client, DEADLINE, Daemon, Fleet, HubProc, IDLE_DEADLINE, agentd_bin, hubd_bin, run_json,
};
use flotilla_certs::dial::DialError;
use flotilla_wire::msg::{FleetEvent, Refusal};
use flotilla_wire::{ErrorCode, IdentityId, Role};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `agentd enroll` with a fresh single-use token of `fleet`; returns the new id.
async fn enrol_agentd(fleet: &Fleet, dir: &Path, name: &str) -> IdentityId {
    let token = fleet.token(Role::Agent, 1, Vec::new()).await;
    let args = [
        "--data-dir",
        path_str(dir),
        "enroll",
        "--token",
        &token.token,
        "--name",
        name,
        "--json",
    ];
    let json = run_json(&agentd_bin(), &args).await;
    assert_eq!(json["name"], name);
    IdentityId::parse(json["id"].as_str().expect("id in enroll output")).expect("id shape")
}

/// `agentd run` sampling every second.
fn run_agentd(dir: &Path) -> Daemon {
    Daemon::spawn(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(dir),
            "run",
            "--metrics-interval-ms",
            "1000",
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_come_back_after_a_clean_hub_restart() {
    let mut fleet = Fleet::new().await;
    let a = fleet.spawn_agent("a").await;
    let b = fleet.spawn_agent("b").await;
    let mut events = fleet.events();
    fleet.restart().await;
    let mut reasons = HashMap::new();
    events
        .until("both agents offline", DEADLINE, |ev| {
            if let FleetEvent::Offline { id, reason, .. } = ev {
                reasons.insert(id, reason);
            }
            (reasons.len() == 2).then_some(())
        })
        .await;
    for agent in [&a, &b] {
        assert_eq!(reasons[&agent.id], "hub shutting down");
    }
    fleet.wait_online(&[&a.id, &b.id], DEADLINE).await;
    fleet.assert_serving(&a).await;
    fleet.assert_serving(&b).await;
    assert_eq!(fleet.listed_agents().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_started_before_its_hub_connects_once_the_hub_is_up() {
    let mut fleet = Fleet::new().await;
    let mut agent = fleet.enrol_agent("early", Vec::new()).await;
    fleet.stop().await;
    let mut state = agent.start();
    // The first attempt has to fail before the hub exists (dial timeout 10 s).
    let failed = crate::harness::within(
        Duration::from_secs(20),
        "the first dial to fail",
        state.wait_for(|s| matches!(s, agentd::LinkState::Disconnected(m) if m != "starting")),
    )
    .await
    .expect("link state")
    .clone();
    match failed {
        agentd::LinkState::Disconnected(m) => {
            assert!(m.starts_with("hub unreachable"), "{m}")
        }
        other => panic!("unexpected state {other:?}"),
    }
    fleet.start().await;
    fleet
        .wait_online(&[&agent.id], Duration::from_secs(20))
        .await;
    fleet.assert_serving(&agent).await;
    assert!(matches!(
        &*agent.state().borrow(),
        agentd::LinkState::Connected { id, .. } if id == &agent.id
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_restart_goes_offline_then_online_with_the_same_identity() {
    let fleet = Fleet::new().await;
    let mut agent = fleet.spawn_agent("web-1").await;
    let bystander = fleet.spawn_agent("bystander").await;
    let mut events = fleet.events();
    agent.stop().await;
    assert_eq!(events.offline(&agent.id, DEADLINE).await, "agent shut down");
    assert!(!fleet.ctx().registry.is_online(&agent.id));
    agent.start();
    let info = events.online(&agent.id).await;
    assert_eq!(info.name, "web-1");
    fleet.assert_serving(&agent).await;
    fleet.assert_serving(&bystander).await;
    assert_eq!(
        fleet.listed_agents().await.len(),
        2,
        "no duplicate registration"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_agent_shows_offline_after_the_idle_timeout() {
    let fleet = Fleet::new().await;
    let bystander = fleet.spawn_agent("bystander").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = dir.path().join("agent");
    let id = enrol_agentd(&fleet, &agent_dir, "doomed").await;
    let mut events = fleet.events();
    let mut agent = run_agentd(&agent_dir);
    events.online(&id).await;

    // kill -9: no goodbye, so only the idle timeout (15 s) can tell.
    agent.kill9().await;
    assert_eq!(
        events.offline(&id, IDLE_DEADLINE).await,
        "no packets within the idle timeout (killed or cut off)"
    );
    assert!(!fleet.ctx().registry.is_online(&id));
    fleet.assert_serving(&bystander).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn terminated_agent_says_goodbye_and_shows_offline_at_once() {
    let fleet = Fleet::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = dir.path().join("agent");
    let id = enrol_agentd(&fleet, &agent_dir, "polite").await;
    let mut events = fleet.events();
    let mut agent = run_agentd(&agent_dir);
    events.online(&id).await;

    agent.sigterm();
    // The reason proves the goodbye path (a killed agent reads "no packets within the idle
    // timeout"); the deadline only has to absorb a loaded CI machine.
    let reason = events.offline(&id, DEADLINE).await;
    let status = agent.wait_exit(DEADLINE).await;
    assert_eq!(
        reason,
        "agent shut down",
        "agentd log:\n{}",
        agent.log_text()
    );
    assert_eq!(status.code(), Some(0), "agentd log:\n{}", agent.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_hub_restarts_with_its_agents_tokens_and_revocations() {
    flotilla_certs::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    let d = path_str(&data);
    let hubd = hubd_bin();
    let init = run_json(
        &hubd,
        &["--data-dir", d, "init", "--listen", "127.0.0.1:0", "--json"],
    )
    .await;
    assert!(init["ca_fingerprint"].as_str().is_some(), "{init}");
    let mut hub = HubProc::run(&data, None).await;
    let addr = hub.addr;

    let agent_token = run_json(
        &hubd,
        &[
            "--data-dir",
            d,
            "token",
            "create",
            "--role",
            "agent",
            "--uses",
            "3",
            "--json",
        ],
    )
    .await;
    let token = agent_token["token"].as_str().expect("token text");
    let mut ids = Vec::new();
    let mut dirs = Vec::new();
    for name in ["agent-1", "agent-2", "agent-3"] {
        let agent_dir = dir.path().join(name);
        let json = run_json(
            &agentd_bin(),
            &[
                "--data-dir",
                path_str(&agent_dir),
                "enroll",
                "--token",
                token,
                "--name",
                name,
                "--json",
            ],
        )
        .await;
        ids.push(IdentityId::parse(json["id"].as_str().expect("id")).expect("id shape"));
        dirs.push(agent_dir);
    }
    let revoked = run_json(&hubd, &["--data-dir", d, "revoke", "agent-3", "--json"]).await;
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["id"], ids[2].as_str());
    let viewer_token = run_json(
        &hubd,
        &[
            "--data-dir",
            d,
            "token",
            "create",
            "--role",
            "viewer",
            "--uses",
            "5",
            "--json",
        ],
    )
    .await;
    let viewer_token_id = viewer_token["info"]["id"].as_str().expect("token id");

    let mut agents = vec![run_agentd(&dirs[0]), run_agentd(&dirs[1])];
    let live = [ids[0].clone(), ids[1].clone()];
    {
        let admin = Client::from_dir(&data.join("admin"))
            .await
            .expect("admin hello");
        let mut sub = admin.subscribe().await;
        sub.all_online(&live, DEADLINE).await;
    }

    hub.daemon.kill9().await;
    for a in &mut agents {
        assert!(a.running(), "agents outlive their hub");
    }
    let mut hub = HubProc::run(&data, Some(addr)).await;
    assert_eq!(hub.addr, addr);

    // The agents notice the dead link only at the idle timeout, then reconnect on their own.
    let admin = Client::from_dir(&data.join("admin"))
        .await
        .expect("admin hello after restart");
    let mut sub = admin.subscribe().await;
    sub.all_online(&live, IDLE_DEADLINE).await;

    let tokens = run_json(&hubd, &["--data-dir", d, "token", "list", "--json"]).await;
    let tokens = tokens.as_array().expect("token list");
    let find = |id: &str| {
        tokens
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("token {id} survived the kill: {tokens:?}"))
    };
    assert_eq!(find(viewer_token_id)["uses_left"], 5);
    assert_eq!(find(viewer_token_id)["role"], "viewer");
    let agent_token_id = agent_token["info"]["id"].as_str().expect("token id");
    assert_eq!(find(agent_token_id)["uses_left"], 0);

    let list = run_json(&hubd, &["--data-dir", d, "agents", "--json"]).await;
    let status_of = |name: &str| {
        list.as_array()
            .expect("agents list")
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed: {list}"))["status"]
            .clone()
    };
    assert_eq!(status_of("agent-1"), "online");
    assert_eq!(status_of("agent-2"), "online");
    assert_eq!(status_of("agent-3"), "revoked");
    match Client::from_dir(&dirs[2]).await {
        Err(DialError::Refused(r)) => assert_eq!(
            r,
            Refusal {
                code: ErrorCode::Revoked,
                message: "certificate revoked".into()
            }
        ),
        Err(other) => panic!("expected a revocation refusal, got {other:?}"),
        Ok(_) => panic!("a revoked agent was welcomed after the restart"),
    }

    // And the restarted hub still shuts down cleanly with agents attached.
    hub.daemon.sigterm();
    let status = hub.daemon.wait_exit(DEADLINE).await;
    assert_eq!(
        status.code(),
        Some(0),
        "hubd log:\n{}",
        hub.daemon.log_text()
    );
}
