//! TLS session resumption across hub restarts: agents come back with the session tickets the hub
//! sealed under the key in its data directory, and resuming changes nothing about who gets in.

use crate::harness::{DEADLINE, Fleet, test_hello};
use flotilla_certs::dial::{self, DialError};
use flotilla_wire::ErrorCode;
use flotilla_wire::msg::{OpRequest, OpResponse};
use std::os::unix::fs::PermissionsExt;

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// After a restart every agent resumes the session it had with the old hub process; with the
/// ticket key gone they still come back, through full handshakes, and nothing resumes.
#[tokio::test(flavor = "multi_thread")]
async fn agents_resume_their_sessions_after_a_hub_restart_with_the_same_ticket_key() {
    let mut fleet = Fleet::new().await;
    let key = fleet.paths.ticket_key();
    assert_eq!(
        mode_of(&key),
        0o600,
        "the ticket key is private from creation"
    );
    assert_eq!(std::fs::read(&key).expect("ticket key").len(), 32);
    let a = fleet.spawn_agent("res-a").await;
    let b = fleet.spawn_agent("res-b").await;
    assert_eq!(
        fleet.ctx().tickets.accepted(),
        0,
        "first connections have no ticket"
    );

    fleet.restart().await;
    fleet.wait_online(&[&a.id, &b.id], DEADLINE).await;
    assert!(
        fleet.ctx().tickets.accepted() >= 2,
        "both agents resumed: {} tickets accepted",
        fleet.ctx().tickets.accepted()
    );
    fleet.assert_serving(&a).await;

    // A hub whose ticket key was lost makes a new one and cannot open the old tickets.
    fleet.stop().await;
    std::fs::remove_file(&key).expect("remove ticket key");
    fleet.start().await;
    fleet.wait_online(&[&a.id, &b.id], DEADLINE).await;
    assert_eq!(mode_of(&key), 0o600, "the new key is private too");
    assert_eq!(
        fleet.ctx().tickets.accepted(),
        0,
        "tickets sealed with the lost key open nowhere"
    );
    fleet.assert_serving(&b).await;
}

/// A client holding a valid ticket from before its revocation resumes its TLS session with the
/// restarted hub, and the hub refuses it all the same: the registry is checked at every hello.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_client_is_refused_even_when_its_session_resumes() {
    let mut fleet = Fleet::new().await;
    let victim = fleet.enrol_agent("res-victim", Vec::new()).await;
    let bystander = fleet.spawn_agent("res-bystander").await;
    // One configuration across dials, as an agent keeps: its ticket store lives in it.
    let config = dial::identity_config(&victim.identity()).expect("client config");
    let endpoint = dial::client_endpoint(false).expect("client endpoint");
    let (conn, ..) = dial::hello(&endpoint, &fleet.hubs(), config.clone(), test_hello())
        .await
        .expect("welcomed before revocation");
    conn.close(ErrorCode::Goodbye.as_u32().into(), b"bye");

    match fleet
        .admin_request(OpRequest::Revoke {
            query: "res-victim".into(),
        })
        .await
    {
        OpResponse::Revoked(info) => assert_eq!(info.id, victim.id),
        other => panic!("revoke answered {other:?}"),
    }
    fleet.restart().await;
    fleet.wait_online(&[&bystander.id], DEADLINE).await;
    let before = fleet.ctx().tickets.accepted();

    match dial::hello(&endpoint, &fleet.hubs(), config, test_hello()).await {
        Err(DialError::Refused(r)) => {
            assert_eq!(r.code, ErrorCode::Revoked);
            assert_eq!(r.message, "certificate revoked");
        }
        Err(other) => panic!("expected a revocation, got {other:?}"),
        Ok((_, _, _, w)) => panic!("a revoked client was welcomed as {}", w.identity),
    }
    assert_eq!(
        fleet.ctx().tickets.accepted(),
        before + 1,
        "the refused dial resumed its session"
    );
    fleet.assert_serving(&bystander).await;
}
