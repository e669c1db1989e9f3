//! Enrolment through the real code paths, and every way a join token or a hub can be wrong.

use crate::harness::{Fleet, TestAgent, enrol_into, files_in, hubd_bin, mode_of, run_json};
use flotilla_certs::dial::DialError;
use flotilla_certs::enrol::EnrolError;
use flotilla_certs::{JoinToken, TokenError};
use flotilla_wire::msg::{AgentInfo, Refusal, Status};
use flotilla_wire::{ErrorCode, Role};
use hubd::store::{self, TokenRow};

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The hub's refusal inside an enrolment error, or a panic naming what came instead.
fn refusal(result: Result<impl std::fmt::Debug, EnrolError>) -> Refusal {
    match result {
        Err(EnrolError::Dial(DialError::Refused(r))) => r,
        other => panic!("expected a refusal from the hub, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn enrolled_agent_comes_online_with_its_name_and_labels() {
    let fleet = Fleet::new().await;
    let token = fleet
        .token(Role::Agent, 1, labels(&[("env", "test")]))
        .await;
    // The agent asks for env=prod too: the token's labels win.
    let mut agent = TestAgent::enrol(
        &token.token,
        "web-1",
        labels(&[("rack", "r1"), ("env", "prod")]),
    )
    .await
    .expect("enrol");
    assert_eq!(agent.enrolment.enrolled.role, Role::Agent);
    assert_eq!(agent.enrolment.hubs, fleet.hubs());

    let dir = &agent.paths.data_dir;
    assert_eq!(mode_of(dir), 0o700, "agent data dir");
    assert_eq!(mode_of(&dir.join("identity.key")), 0o600, "private key");
    assert_eq!(
        files_in(dir),
        ["ca.pem", "hubs", "identity.key", "identity.pem"]
    );
    assert_eq!(
        agent.identity().peer().expect("identity in certificate").id,
        agent.id
    );

    let mut events = fleet.events();
    agent.start();
    let info: AgentInfo = events.online(&agent.id).await;
    assert_eq!(info.name, "web-1");
    assert_eq!(info.role, Role::Agent);
    assert_eq!(info.status, Status::Online);
    assert_eq!(info.labels, labels(&[("env", "test"), ("rack", "r1")]));
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert!(info.addr.starts_with("127.0.0.1:"), "addr {}", info.addr);
    fleet.assert_serving(&agent).await;

    let token_left = fleet
        .token_info(&token.info.id)
        .await
        .expect("token listed");
    assert_eq!(token_left.uses_left, 0);

    // What the sysadmin sees with `hubd agents --json` (through the running hub's admin socket).
    let data = fleet.paths.data_dir.to_str().expect("utf-8 path");
    let json = run_json(&hubd_bin(), &["--data-dir", data, "agents", "--json"]).await;
    let list = json.as_array().expect("agents JSON is a list");
    assert_eq!(list.len(), 1, "{json}");
    let a = &list[0];
    assert_eq!(a["id"], agent.id.as_str());
    assert_eq!(a["name"], "web-1");
    assert_eq!(a["role"], "agent");
    assert_eq!(a["status"], "online");
    assert_eq!(
        a["labels"],
        serde_json::json!({"env": "test", "rack": "r1"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_token_is_refused_and_nothing_changes() {
    let fleet = Fleet::new().await;
    let bystander = fleet.spawn_agent("bystander").await;
    let ctx = fleet.ctx().clone();
    // A token whose time to live passed a second ago, stored as `hubd token create` would.
    let token = JoinToken::generate(ctx.advertised.clone(), ctx.ca.fingerprint());
    let now = store::now_ms();
    let row = TokenRow {
        id: token.id.clone(),
        hash: token.secret_hash(),
        role: Role::Agent,
        labels: Vec::new(),
        uses_left: 5,
        expires_ms: now - 1000,
        created_ms: now - 3_600_000,
    };
    ctx.store
        .call(move |c| Ok(store::tokens::insert(c, &row)?))
        .await
        .expect("insert expired token");

    let dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = dir.path().join("agent");
    let r = refusal(enrol_into(&agent_dir, &token.encode(), "late", Vec::new()).await);
    assert_eq!(
        r,
        Refusal {
            code: ErrorCode::TokenExpired,
            message: "join token expired: ask an admin for a new one".into()
        }
    );
    assert_eq!(
        files_in(&agent_dir),
        Vec::<String>::new(),
        "no identity written"
    );
    let info = fleet
        .token_info(&token.id)
        .await
        .expect("token still listed");
    assert_eq!(info.uses_left, 5, "a refused enrolment uses nothing");
    let names: Vec<String> = fleet
        .listed_agents()
        .await
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["bystander"]);
    fleet.assert_serving(&bystander).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn used_up_token_is_refused_after_its_last_use() {
    let fleet = Fleet::new().await;
    let token = fleet.token(Role::Agent, 1, Vec::new()).await;
    let mut first = TestAgent::enrol(&token.token, "first", Vec::new())
        .await
        .expect("the single use enrols");

    let dir = tempfile::tempdir().expect("tempdir");
    let second_dir = dir.path().join("second");
    let r = refusal(enrol_into(&second_dir, &token.token, "second", Vec::new()).await);
    assert_eq!(
        r,
        Refusal {
            code: ErrorCode::TokenUsedUp,
            message: "join token already used up: ask an admin for a new one".into()
        }
    );
    assert_eq!(
        files_in(&second_dir),
        Vec::<String>::new(),
        "no identity written"
    );
    let names: Vec<String> = fleet
        .listed_agents()
        .await
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["first"], "only the first enrolment is registered");

    // The first enrolment is a working agent.
    let mut events = fleet.events();
    first.start();
    events.online(&first.id).await;
    fleet.assert_serving(&first).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_or_garbage_token_is_refused_without_using_the_token() {
    let fleet = Fleet::new().await;
    let bystander = fleet.spawn_agent("bystander").await;
    let token = fleet.token(Role::Agent, 1, Vec::new()).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let mut tampered = JoinToken::parse(&token.token).expect("parse real token");
    tampered.secret.0[0] ^= 0x01;
    let tampered_dir = dir.path().join("tampered");
    let r = refusal(enrol_into(&tampered_dir, &tampered.encode(), "evil", Vec::new()).await);
    assert_eq!(
        r,
        Refusal {
            code: ErrorCode::BadToken,
            message: "join token not recognised by this hub (deleted, or altered)".into()
        }
    );
    assert_eq!(files_in(&tampered_dir), Vec::<String>::new());

    // An id the hub never issued reads the same: no oracle for which ids exist.
    let mut unknown = JoinToken::parse(&token.token).expect("parse real token");
    unknown.id = "0000000000000000".into();
    let r = refusal(enrol_into(&tampered_dir, &unknown.encode(), "evil", Vec::new()).await);
    assert_eq!(r.code, ErrorCode::BadToken);

    let garbage_dir = dir.path().join("garbage");
    match enrol_into(&garbage_dir, "hello there", "g", Vec::new()).await {
        Err(EnrolError::Token(TokenError::Prefix)) => {}
        other => panic!("expected a prefix error, got {other:?}"),
    }
    match enrol_into(&garbage_dir, "flt1_@@not-base64@@", "g", Vec::new()).await {
        Err(EnrolError::Token(TokenError::Damaged(_))) => {}
        other => panic!("expected a damaged-token error, got {other:?}"),
    }
    let truncated = &token.token[..token.token.len() - 7];
    match enrol_into(&garbage_dir, truncated, "g", Vec::new()).await {
        Err(EnrolError::Token(TokenError::Damaged(_))) => {}
        other => panic!("expected a damaged-token error, got {other:?}"),
    }
    assert_eq!(files_in(&garbage_dir), Vec::<String>::new());

    let info = fleet
        .token_info(&token.info.id)
        .await
        .expect("token listed");
    assert_eq!(info.uses_left, 1, "tampering used nothing");
    fleet.assert_serving(&bystander).await;
    // The genuine token still works.
    TestAgent::enrol(&token.token, "genuine", Vec::new())
        .await
        .expect("genuine token enrols");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_name_label_or_taken_name_is_refused_and_the_use_given_back() {
    let fleet = Fleet::new().await;
    let taken = fleet.spawn_agent("web-1").await;
    let token = fleet.token(Role::Agent, 1, Vec::new()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = dir.path().join("agent");

    let r = refusal(enrol_into(&agent_dir, &token.token, "../../etc", Vec::new()).await);
    assert_eq!(
        r,
        Refusal {
            code: ErrorCode::BadRequest,
            message: "name \"../../etc\" is invalid: use 1-64 letters, digits, '-', '_' or '.'"
                .into()
        }
    );
    let r = refusal(enrol_into(&agent_dir, &token.token, "ok", labels(&[("a/b", "x")])).await);
    assert_eq!(
        r,
        Refusal {
            code: ErrorCode::BadRequest,
            message: "label a/b=x is invalid".into()
        }
    );
    // The name check runs after the token is redeemed: the transaction must give the use back.
    let r = refusal(enrol_into(&agent_dir, &token.token, "web-1", Vec::new()).await);
    assert_eq!(r.code, ErrorCode::BadRequest);
    assert_eq!(
        r.message,
        format!(
            "name \"web-1\" is taken by {0}: enrol with another --name, or revoke {0} first",
            taken.id
        )
    );
    assert_eq!(files_in(&agent_dir), Vec::<String>::new());
    let info = fleet
        .token_info(&token.info.id)
        .await
        .expect("token listed");
    assert_eq!(info.uses_left, 1, "refused enrolments used nothing");
    assert_eq!(fleet.listed_agents().await.len(), 1);
    fleet.assert_serving(&taken).await;

    // A directory that already holds an identity is refused before anything is sent.
    match enrol_into(&taken.paths.data_dir, &token.token, "again", Vec::new()).await {
        Err(EnrolError::AlreadyEnrolled(d)) => {
            assert_eq!(d, taken.paths.data_dir.display().to_string())
        }
        other => panic!("expected AlreadyEnrolled, got {other:?}"),
    }
    assert_eq!(
        fleet
            .token_info(&token.info.id)
            .await
            .expect("listed")
            .uses_left,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_pinning_another_ca_is_refused_before_anything_is_sent() {
    let fleet_a = Fleet::new().await;
    let fleet_b = Fleet::new().await;
    let bystander = fleet_a.spawn_agent("bystander").await;
    // A genuine token of hub B, pointed at hub A: A presents its own CA, not the one pinned.
    let token_b = fleet_b.token(Role::Agent, 1, Vec::new()).await;
    let mut wrong = JoinToken::parse(&token_b.token).expect("parse");
    wrong.hubs = fleet_a.hubs();

    let dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = dir.path().join("agent");
    match enrol_into(&agent_dir, &wrong.encode(), "lost", Vec::new()).await {
        Err(EnrolError::Dial(DialError::Tls(message))) => assert_eq!(
            message,
            format!(
                "hub CA {} does not match token ({}): this is not the hub the token was made for",
                fleet_a.ctx().ca.fingerprint().short(),
                fleet_b.ctx().ca.fingerprint().short()
            )
        ),
        other => panic!("expected a CA mismatch, got {other:?}"),
    }
    assert_eq!(
        files_in(&agent_dir),
        Vec::<String>::new(),
        "no identity written"
    );
    assert_eq!(
        fleet_b
            .token_info(&token_b.info.id)
            .await
            .expect("listed")
            .uses_left,
        1,
        "hub B never saw the token"
    );
    let names: Vec<String> = fleet_a
        .listed_agents()
        .await
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["bystander"], "hub A registered nothing");
    fleet_a.assert_serving(&bystander).await;
}
