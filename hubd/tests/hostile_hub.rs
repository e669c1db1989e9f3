//! Hostile input on the hub side: revoked operators that stay connected, forged log lines, loose file
//! modes, confusing names and refused admin calls that leave no trace. Each test drives a real hub
//! over QUIC and mutual TLS with a real database file, and asserts what a sysadmin would check.

mod common;

use common::{Client, DEADLINE, TestFleet, test_hello, within};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_REQUEST_FRAME};
use flotilla_wire::msg::{FleetEvent, OpRequest, OpResponse, StreamOpen};
use flotilla_wire::{ErrorCode, Role};
use std::path::Path;
use std::time::{Duration, Instant};

/// How soon a revoked identity's live connections must be closed.
const REVOKE_CUTOFF: Duration = Duration::from_secs(1);

/// The code a connection was closed with by the hub, waiting at most `deadline` for the close.
async fn closed_with(conn: &quinn::Connection, deadline: Duration) -> ErrorCode {
    match within(deadline, "the hub to close the connection", conn.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            ErrorCode::from_u32(close.error_code.into_inner()).expect("a Flotilla close code")
        }
        other => panic!("expected an application close, got {other}"),
    }
}

/// Enrols a login of `role` named `name` into `dir` and says hello with it.
async fn login(fleet: &TestFleet, dir: &Path, role: Role, name: &str) -> Client {
    let token = fleet.token(role, 1, Vec::new()).await;
    agentd::create_private_dir(dir).expect("mkdir");
    let enrolled = within(
        DEADLINE,
        "operator enrolment",
        flotilla_certs::enrol::enrol(&token.token, dir, name.into(), Vec::new(), test_hello()),
    )
    .await
    .expect("enrol operator");
    assert_eq!(enrolled.enrolled.role, role);
    Client::from_dir(dir).await.expect("operator hello")
}

/// Sends one request on a fresh stream; `Err` with the hub's reset code when it refused the stream.
async fn try_request(client: &Client, req: &OpRequest) -> Result<OpResponse, ErrorCode> {
    within(DEADLINE, "operator response", async {
        let (mut send, mut recv) = match client.conn.open_bi().await {
            Ok(s) => s,
            Err(quinn::ConnectionError::ApplicationClosed(c)) => {
                return Err(ErrorCode::from_u32(c.error_code.into_inner()).expect("code"));
            }
            Err(e) => panic!("open request stream: {e}"),
        };
        let sent = async {
            write_frame(&mut send, &StreamOpen::Request, MAX_CONTROL_FRAME).await?;
            write_frame(&mut send, req, MAX_REQUEST_FRAME).await
        }
        .await;
        let _ = sent;
        let _ = send.finish();
        match read_frame::<OpResponse, _>(&mut recv, MAX_REQUEST_FRAME).await {
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => panic!("stream ended without a response or a reset"),
            Err(e) => match &e {
                flotilla_wire::io::FrameError::Io(io) => {
                    match io
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<quinn::ReadError>())
                    {
                        Some(quinn::ReadError::Reset(code)) => {
                            Err(ErrorCode::from_u32(code.into_inner()).expect("code"))
                        }
                        Some(quinn::ReadError::ConnectionLost(
                            quinn::ConnectionError::ApplicationClosed(c),
                        )) => Err(ErrorCode::from_u32(c.error_code.into_inner()).expect("code")),
                        other => panic!("request failed: {e} ({other:?})"),
                    }
                }
                _ => panic!("request failed: {e}"),
            },
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Revocation cuts an operator off.

#[tokio::test(flavor = "multi_thread")]
async fn revoking_an_operator_closes_every_connection_it_holds_at_once() {
    let fleet = TestFleet::new().await;
    let agent = fleet.agent("web-1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A console subscribed to events, a script and a mux: three connections of one identity.
    let console = login(&fleet, &dir.path().join("ops"), Role::Operator, "ops-1").await;
    let mut events = console.subscribe().await;
    events
        .until("the snapshot", DEADLINE, |ev| {
            matches!(ev, FleetEvent::Snapshot(_)).then_some(())
        })
        .await;
    let script = Client::from_dir(&dir.path().join("ops"))
        .await
        .expect("second hello");
    let mux = Client::from_dir(&dir.path().join("ops"))
        .await
        .expect("third hello");
    let bystander = login(&fleet, &dir.path().join("other"), Role::Operator, "ops-2").await;
    assert!(matches!(
        mux.request(&OpRequest::ListAgents).await,
        OpResponse::Agents(_)
    ));

    let started = Instant::now();
    match fleet
        .admin(OpRequest::Revoke {
            query: "ops-1".into(),
        })
        .await
    {
        OpResponse::Revoked(info) => assert_eq!(info.id, console.welcome.identity),
        other => panic!("revoke answered {other:?}"),
    }
    for (what, client) in [("console", &console), ("script", &script), ("mux", &mux)] {
        let left = REVOKE_CUTOFF.saturating_sub(started.elapsed());
        assert_eq!(
            closed_with(&client.conn, left.max(Duration::from_millis(1))).await,
            ErrorCode::Revoked,
            "{what} connection"
        );
    }
    assert!(
        started.elapsed() < REVOKE_CUTOFF,
        "closed after {:?}",
        started.elapsed()
    );
    // Nothing more runs through the mux's connection, and the others keep working.
    assert!(mux.conn.open_bi().await.is_err());
    assert_eq!(
        fleet.ctx().registry.operator_count(),
        1,
        "only the bystander's connection is left"
    );
    assert!(matches!(
        bystander.request(&OpRequest::ListAgents).await,
        OpResponse::Agents(list) if list.len() == 1
    ));
    fleet.assert_serving(&agent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_identity_is_refused_per_request_even_if_its_close_was_lost() {
    let fleet = TestFleet::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ops = login(&fleet, &dir.path().join("ops"), Role::Operator, "ops-1").await;
    let other = login(&fleet, &dir.path().join("other"), Role::Operator, "ops-2").await;
    assert!(matches!(
        try_request(&ops, &OpRequest::ListAgents).await,
        Ok(OpResponse::Agents(_))
    ));
    // The revocation is recorded, but its close never reaches the connection.
    fleet.ctx().registry.mark_revoked(&ops.welcome.identity);
    assert_eq!(
        try_request(&ops, &OpRequest::ListAgents).await,
        Err(ErrorCode::Revoked)
    );
    assert_eq!(closed_with(&ops.conn, DEADLINE).await, ErrorCode::Revoked);
    assert!(matches!(
        try_request(&other, &OpRequest::ListAgents).await,
        Ok(OpResponse::Agents(_))
    ));
}
