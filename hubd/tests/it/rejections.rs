//! Every way a connected peer can be refused: foreign certificates, revocation, roles, malformed or
//! oversized frames, other protocol versions. Each asserts the exact code and that the rest of the
//! fleet keeps working.

use crate::harness::{Client, DEADLINE, Fleet, dial_raw, test_hello, within};
use flotilla_certs::Identity;
use flotilla_certs::dial::{self, DialError};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::{MAX_CONTROL_FRAME, MAX_METRICS_FRAME};
use flotilla_wire::msg::{
    ClientOpen, FleetEvent, Hello, MetricsSample, OpRequest, OpResponse, Refusal, ServerOpen,
    Status, StreamOpen, TokenSpec,
};
use flotilla_wire::{ErrorCode, IdentityId, PROTOCOL_VERSION, Role};
use hubd::store;
use std::time::{Duration, Instant};

/// The code a connection was closed with by the hub, waiting for the close.
async fn closed_with(conn: &quinn::Connection) -> (ErrorCode, String) {
    match within(DEADLINE, "connection close", conn.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => (
            ErrorCode::from_u32(close.error_code.into_inner()).expect("a Flotilla close code"),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        other => panic!("expected an application close, got {other}"),
    }
}

/// The code the hub stopped a stream with.
async fn stopped_with(send: &quinn::SendStream) -> ErrorCode {
    let code = within(DEADLINE, "the hub to stop the stream", send.stopped())
        .await
        .expect("stream state")
        .expect("stopped with a code, not finished");
    ErrorCode::from_u32(code.into_inner()).expect("a Flotilla stop code")
}

fn refused(result: Result<Client, DialError>) -> Refusal {
    match result {
        Err(DialError::Refused(r)) => r,
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(c) => panic!(
            "expected a refusal, got a welcome as {}",
            c.welcome.identity
        ),
    }
}

fn tls_error(result: Result<Client, DialError>) -> String {
    match result {
        Err(DialError::Tls(m)) => m,
        Err(other) => panic!("expected a TLS failure, got {other:?}"),
        Ok(c) => panic!(
            "expected a TLS failure, got a welcome as {}",
            c.welcome.identity
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_from_another_ca_is_rejected_in_the_handshake() {
    let fleet_a = Fleet::new().await;
    let fleet_b = Fleet::new().await;
    let bystander = fleet_a.spawn_agent("bystander").await;
    let foreign = fleet_b.enrol_agent("foreign", Vec::new()).await;
    let foreign_id = foreign.identity();

    // Trusting A's CA but presenting B's certificate. Each fleet CA has its own name, so hub A finds
    // no issuer for it: alert 48, unknown_ca.
    let sneaky = Identity {
        ca_der: fleet_a.ctx().ca.cert_der().to_vec(),
        ..foreign_id.clone()
    };
    let message = tls_error(Client::hello(&sneaky, &fleet_a.hubs()).await);
    assert_eq!(
        message,
        "the hub does not trust our certificate: it was issued by another fleet's CA (TLS alert 48)"
    );
    // As stored (trusting only B): the client itself refuses hub A's certificate.
    let message = tls_error(Client::hello(&foreign_id, &fleet_a.hubs()).await);
    assert!(message.starts_with("TLS handshake failed"), "{message}");
    assert!(
        message.contains("invalid peer certificate: UnknownIssuer"),
        "{message}"
    );

    assert_eq!(
        fleet_a.listed_agents().await.len(),
        1,
        "hub A registered nothing"
    );
    assert!(!fleet_a.ctx().registry.is_online(&foreign.id));
    fleet_a.assert_serving(&bystander).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_unknown_to_the_registry_or_with_another_role_is_refused() {
    let fleet = Fleet::new().await;
    let bystander = fleet.spawn_agent("bystander").await;
    let ca = fleet.ctx().ca.clone();
    let ca_der = ca.cert_der().to_vec();

    // Signed by our CA, but for an id the registry never recorded (a restored or foreign database).
    let ghost = IdentityId::from_random(Role::Agent, [7; 8]);
    let minted = ca.issue_local_identity(&ghost, Role::Agent).expect("mint");
    let ghost_identity = Identity {
        key_der: minted.key_der,
        cert_der: minted.cert_der,
        ca_der: ca_der.clone(),
    };
    let r = refused(Client::hello(&ghost_identity, &fleet.hubs()).await);
    assert_eq!(
        r,
        Refusal {
            code: ErrorCode::UnknownIdentity,
            message: "unknown identity: not in this hub's registry".into()
        }
    );

    // A certificate claiming admin for an id the registry holds as an agent.
    let minted = ca
        .issue_local_identity(&bystander.id, Role::Admin)
        .expect("mint");
    let forged = Identity {
        key_der: minted.key_der,
        cert_der: minted.cert_der,
        ca_der: ca_der.clone(),
    };
    let r = refused(Client::hello(&forged, &fleet.hubs()).await);
    assert_eq!(
        r,
        Refusal {
            code: ErrorCode::UnknownIdentity,
            message: "certificate role does not match the registry".into()
        }
    );

    // No certificate at all, saying hello instead of enrolling.
    let (tls, _pin) =
        flotilla_certs::tls::enrol_client_config(ca.fingerprint()).expect("enrol TLS config");
    let mut config = quinn::ClientConfig::new(tls);
    config.transport_config(dial::client_transport());
    let (_endpoint, conn) = dial_raw(&fleet.hubs(), config).await.expect("connect");
    match dial::open(&conn, &ClientOpen::Hello(test_hello())).await {
        Err(DialError::Refused(r)) => assert_eq!(
            r,
            Refusal {
                code: ErrorCode::UnknownIdentity,
                message: "no client certificate: enrol first with a join token".into()
            }
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }

    fleet.assert_serving(&bystander).await;
    let list = fleet.listed_agents().await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].role, Role::Agent, "nothing changed in the registry");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_agent_is_cut_off_at_once_and_stays_out_after_restart() {
    let mut fleet = Fleet::new().await;
    let victim = fleet.spawn_agent("victim").await;
    let bystander = fleet.spawn_agent("bystander").await;
    let mut state = victim.state();
    let mut events = fleet.events();

    let resp = fleet
        .admin_request(OpRequest::Revoke {
            query: "victim".into(),
        })
        .await;
    let replied = Instant::now();
    match resp {
        OpResponse::Revoked(info) => {
            assert_eq!(info.id, victim.id);
            assert_eq!(info.status, Status::Revoked);
        }
        other => panic!("revoke answered {other:?}"),
    }
    // The live connection is closed by the hub itself, not at the next handshake.
    let is_revoked = |s: &agentd::LinkState| matches!(s, agentd::LinkState::Disconnected(m) if m.contains("revoked"));
    within(
        Duration::from_secs(1),
        "the agent to see its revocation",
        state.wait_for(is_revoked),
    )
    .await
    .expect("agent link state");
    assert!(replied.elapsed() < Duration::from_secs(1));
    match &*state.borrow() {
        agentd::LinkState::Disconnected(m) => assert_eq!(
            m,
            "hub says this agent's certificate is revoked: enrol again with a new token"
        ),
        other => panic!("unexpected state {other:?}"),
    }
    events
        .until("the revoked event", DEADLINE, |ev| match ev {
            FleetEvent::Revoked { id } if id == victim.id => Some(()),
            _ => None,
        })
        .await;
    assert!(!fleet.ctx().registry.is_online(&victim.id));

    let identity = victim.identity();
    let revoked = Refusal {
        code: ErrorCode::Revoked,
        message: "certificate revoked".into(),
    };
    assert_eq!(
        refused(Client::hello(&identity, &fleet.hubs()).await),
        revoked
    );
    fleet.assert_serving(&bystander).await;

    // The revocation is in the database, not only in memory.
    fleet.restart().await;
    assert_eq!(
        refused(Client::hello(&identity, &fleet.hubs()).await),
        revoked
    );
    let victim_row = fleet
        .listed_agents()
        .await
        .into_iter()
        .find(|a| a.id == victim.id)
        .expect("victim still listed");
    assert_eq!(victim_row.status, Status::Revoked);
    let id = victim.id.clone();
    let row = fleet
        .ctx()
        .store
        .call(move |c| Ok(store::identities::get(c, &id)?))
        .await
        .expect("store")
        .expect("row");
    assert!(row.revoked_ms.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn viewer_and_operator_cannot_make_admin_calls() {
    let fleet = Fleet::new().await;
    let agent = fleet.spawn_agent("web-1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens_before = match fleet.admin_request(OpRequest::TokenList).await {
        OpResponse::Tokens(t) => t.len(),
        other => panic!("{other:?}"),
    };

    for role in [Role::Viewer, Role::Operator] {
        let token = fleet.token(role, 1, Vec::new()).await;
        let login = dir.path().join(role.as_str());
        agentd::create_private_dir(&login).expect("mkdir");
        let enrolled = flotilla_certs::enrol::enrol(
            &token.token,
            &login,
            format!("{role}-1"),
            Vec::new(),
            test_hello(),
        )
        .await
        .expect("enrol operator");
        assert_eq!(enrolled.enrolled.role, role);
        let client = Client::from_dir(&login).await.expect("hello");
        assert_eq!(client.welcome.role, role);

        let spec = TokenSpec {
            role: Role::Admin,
            ttl_s: 3600,
            uses: 1,
            labels: Vec::new(),
        };
        let forbidden = |what: &str| {
            OpResponse::Error(Refusal {
                code: ErrorCode::Forbidden,
                message: format!("{what} needs the admin role; you are {role}"),
            })
        };
        assert_eq!(
            client.request(&OpRequest::TokenCreate(spec)).await,
            forbidden("creating tokens")
        );
        assert_eq!(
            client
                .request(&OpRequest::Revoke {
                    query: "web-1".into()
                })
                .await,
            forbidden("revoking")
        );
        assert_eq!(
            client.request(&OpRequest::TokenList).await,
            forbidden("listing tokens")
        );
        // Reading the fleet is allowed.
        match client.request(&OpRequest::ListAgents).await {
            OpResponse::Agents(list) => {
                assert_eq!(list.len(), 1);
                assert_eq!(list[0].id, agent.id);
                assert_eq!(list[0].status, Status::Online);
            }
            other => panic!("list agents answered {other:?}"),
        }
    }

    // Nothing the refused calls asked for happened.
    let tokens_after = match fleet.admin_request(OpRequest::TokenList).await {
        OpResponse::Tokens(t) => t.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(tokens_after, tokens_before + 2, "only the two login tokens");
    fleet.assert_serving(&agent).await;

    // The admin identity `hubd init` made may do all of it over QUIC.
    let admin = Client::hello(&fleet.admin_identity(), &fleet.hubs())
        .await
        .expect("admin hello");
    assert_eq!(admin.welcome.role, Role::Admin);
    match admin.request(&OpRequest::TokenList).await {
        OpResponse::Tokens(t) => assert_eq!(t.len(), tokens_after),
        other => panic!("admin token list answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_or_oversized_metrics_frame_stops_only_that_stream() {
    let fleet = Fleet::new().await;
    let bystander = fleet.spawn_agent("bystander").await;
    let raw_agent = fleet.enrol_agent("raw", Vec::new()).await;
    let mut events = fleet.events();
    let client = Client::hello(&raw_agent.identity(), &fleet.hubs())
        .await
        .expect("hello");
    events.online(&raw_agent.id).await;

    // A valid length with a body that is no MetricsFrame.
    let mut send = client.conn.open_uni().await.expect("open uni");
    write_frame(&mut send, &StreamOpen::Metrics, MAX_CONTROL_FRAME)
        .await
        .expect("stream open");
    send.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
        .await
        .expect("garbage");
    assert_eq!(stopped_with(&send).await, ErrorCode::Malformed);

    // A length over the metrics limit: refused from the prefix alone, before any body.
    let mut send = client.conn.open_uni().await.expect("open uni");
    write_frame(&mut send, &StreamOpen::Metrics, MAX_CONTROL_FRAME)
        .await
        .expect("stream open");
    let too_long = u32::try_from(MAX_METRICS_FRAME + 1).expect("fits");
    send.write_all(&too_long.to_be_bytes())
        .await
        .expect("prefix");
    assert_eq!(stopped_with(&send).await, ErrorCode::TooLarge);

    // An oversized stream header, and a stream kind agents may not open.
    let mut send = client.conn.open_uni().await.expect("open uni");
    send.write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("prefix");
    assert_eq!(stopped_with(&send).await, ErrorCode::TooLarge);
    let mut send = client.conn.open_uni().await.expect("open uni");
    write_frame(&mut send, &StreamOpen::Request, MAX_CONTROL_FRAME)
        .await
        .expect("stream open");
    assert_eq!(stopped_with(&send).await, ErrorCode::Forbidden);

    // The connection is untouched: still online, and a good stream on it still delivers.
    assert!(
        client.conn.close_reason().is_none(),
        "connection still open"
    );
    assert!(fleet.ctx().registry.is_online(&raw_agent.id));
    let sample = MetricsSample {
        at_ms: 1,
        cpu_pct: 42.5,
        ..MetricsSample::default()
    };
    let _stream = client.send_sample(sample.clone()).await;
    assert_eq!(events.metrics(&raw_agent.id).await, sample);
    assert_eq!(fleet.ctx().registry.latest(&raw_agent.id), Some(sample));
    fleet.assert_serving(&bystander).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn other_protocol_version_is_refused_naming_both_versions() {
    let fleet = Fleet::new().await;
    let bystander = fleet.spawn_agent("bystander").await;
    let raw_agent = fleet.enrol_agent("raw", Vec::new()).await;
    let config = dial::identity_config(&raw_agent.identity()).expect("TLS config");

    let newer = Hello {
        protocol_version: 99,
        ..test_hello()
    };
    let (_e, conn) = dial_raw(&fleet.hubs(), config.clone())
        .await
        .expect("connect");
    match dial::open(&conn, &ClientOpen::Hello(newer)).await {
        Err(DialError::Refused(r)) => assert_eq!(
            r,
            Refusal {
                code: ErrorCode::VersionMismatch,
                message: "hub speaks protocol 1, client 99: upgrade hubd".into()
            }
        ),
        other => panic!("expected a version refusal, got {other:?}"),
    }
    let (code, _) = closed_with(&conn).await;
    assert_eq!(code, ErrorCode::VersionMismatch);

    // A future client whose hello this hub cannot even decode: the version is still read first.
    let (_e, conn) = dial_raw(&fleet.hubs(), config.clone())
        .await
        .expect("connect");
    let (mut send, mut recv) = conn.open_bi().await.expect("control stream");
    send.write_all(&[0, 0, 0, 2, 0, 99]).await.expect("write");
    let answer = within(
        DEADLINE,
        "refusal",
        read_frame::<ServerOpen, _>(&mut recv, MAX_CONTROL_FRAME),
    )
    .await
    .expect("read")
    .expect("an answer");
    assert_eq!(
        answer,
        ServerOpen::Refused(Refusal {
            code: ErrorCode::VersionMismatch,
            message: "hub speaks protocol 1, client 99: upgrade hubd".into()
        })
    );

    // An older client is told to upgrade itself.
    let (_e, conn) = dial_raw(&fleet.hubs(), config).await.expect("connect");
    let older = Hello {
        protocol_version: PROTOCOL_VERSION - 1,
        ..test_hello()
    };
    match dial::open(&conn, &ClientOpen::Hello(older)).await {
        Err(DialError::Refused(r)) => {
            assert_eq!(r.code, ErrorCode::VersionMismatch);
            assert_eq!(
                r.message,
                "hub speaks protocol 1, client 0: upgrade the client"
            );
        }
        other => panic!("expected a version refusal, got {other:?}"),
    }

    assert!(!fleet.ctx().registry.is_online(&raw_agent.id));
    fleet.assert_serving(&bystander).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_control_stream_closes_that_connection_only() {
    let fleet = Fleet::new().await;
    let bystander = fleet.spawn_agent("bystander").await;
    let raw_agent = fleet.enrol_agent("raw", Vec::new()).await;
    let config = dial::identity_config(&raw_agent.identity()).expect("TLS config");

    // Before hello: an undecodable opening frame.
    let (_e, conn) = dial_raw(&fleet.hubs(), config.clone())
        .await
        .expect("connect");
    let (mut send, mut recv) = conn.open_bi().await.expect("control stream");
    send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .expect("write");
    match within(
        DEADLINE,
        "refusal",
        read_frame::<ServerOpen, _>(&mut recv, MAX_CONTROL_FRAME),
    )
    .await
    {
        Ok(Some(ServerOpen::Refused(r))) => assert_eq!(r.code, ErrorCode::Malformed),
        other => panic!("expected a Malformed refusal, got {other:?}"),
    }
    assert_eq!(closed_with(&conn).await.0, ErrorCode::Malformed);

    // Before hello: an opening frame longer than the control limit.
    let (_e, conn) = dial_raw(&fleet.hubs(), config).await.expect("connect");
    let (mut send, mut recv) = conn.open_bi().await.expect("control stream");
    let too_long = u32::try_from(MAX_CONTROL_FRAME + 1).expect("fits");
    send.write_all(&too_long.to_be_bytes())
        .await
        .expect("write");
    match within(
        DEADLINE,
        "refusal",
        read_frame::<ServerOpen, _>(&mut recv, MAX_CONTROL_FRAME),
    )
    .await
    {
        Ok(Some(ServerOpen::Refused(r))) => assert_eq!(r.code, ErrorCode::TooLarge),
        other => panic!("expected a TooLarge refusal, got {other:?}"),
    }
    assert_eq!(closed_with(&conn).await.0, ErrorCode::TooLarge);

    // After the welcome: agents send nothing more on the control stream.
    let mut events = fleet.events();
    let mut client = Client::hello(&raw_agent.identity(), &fleet.hubs())
        .await
        .expect("hello");
    events.online(&raw_agent.id).await;
    client
        .control_send
        .write_all(b"junk")
        .await
        .expect("write junk");
    assert_eq!(
        closed_with(&client.conn).await,
        (
            ErrorCode::Malformed,
            "unexpected data on control stream".into()
        )
    );
    events.offline(&raw_agent.id, DEADLINE).await;
    assert!(!fleet.ctx().registry.is_online(&raw_agent.id));
    fleet.assert_serving(&bystander).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_that_finishes_its_control_stream_does_not_stall_the_hub() {
    // The hub runs on one worker thread: a session loop that spins on a finished stream would stall
    // the whole hub, and neither sample below would arrive.
    let fleet = Fleet::new().await;
    let bystander = fleet.spawn_agent("bystander").await;
    let raw_agent = fleet.enrol_agent("raw", Vec::new()).await;
    let mut events = fleet.events();
    let mut client = Client::hello(&raw_agent.identity(), &fleet.hubs())
        .await
        .expect("hello");
    events.online(&raw_agent.id).await;
    client.control_send.finish().expect("finish control stream");

    let sample = MetricsSample {
        at_ms: 2,
        cpu_pct: 7.0,
        ..MetricsSample::default()
    };
    let _stream = client.send_sample(sample.clone()).await;
    assert_eq!(events.metrics(&raw_agent.id).await, sample);
    assert!(fleet.ctx().registry.is_online(&raw_agent.id));
    fleet.assert_serving(&bystander).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn enrolled_identity_cannot_enrol_again_with_its_certificate() {
    let fleet = Fleet::new().await;
    let agent = fleet.enrol_agent("web-1", Vec::new()).await;
    let token = fleet.token(Role::Admin, 1, Vec::new()).await;
    let config = dial::identity_config(&agent.identity()).expect("TLS config");
    let (_e, conn) = dial_raw(&fleet.hubs(), config).await.expect("connect");
    let parsed = flotilla_certs::JoinToken::parse(&token.token).expect("parse");
    let (_key, csr_der) = flotilla_certs::generate_key_and_csr().expect("csr");
    let req = flotilla_wire::msg::EnrollRequest {
        protocol_version: PROTOCOL_VERSION,
        token_id: parsed.id.clone(),
        secret: parsed.secret.0.to_vec(),
        csr_der,
        name: "escalated".into(),
        labels: Vec::new(),
        hello: test_hello(),
    };
    match dial::open(&conn, &ClientOpen::Enroll(req)).await {
        Err(DialError::Refused(r)) => assert_eq!(
            r,
            Refusal {
                code: ErrorCode::BadRequest,
                message: "already holds a certificate: connect with hello, not enrol".into()
            }
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        fleet
            .token_info(&token.info.id)
            .await
            .expect("listed")
            .uses_left,
        1
    );
    assert_eq!(
        fleet.listed_agents().await.len(),
        1,
        "no identity was added"
    );
}
