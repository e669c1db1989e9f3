//! Hostile input on the hub side: revoked operators that stay connected, forged log lines, loose file
//! modes, confusing names and refused admin calls that leave no trace. Each test drives a real hub
//! over QUIC and mutual TLS with a real database file, and asserts what a sysadmin would check.

use crate::harness::{
    self as common, Client, DEADLINE, Fleet as TestFleet, hubd_bin, run_json, test_hello, within,
};
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
    let agent = fleet.spawn_agent("web-1").await;
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
        .admin_request(OpRequest::Revoke {
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

// ---------------------------------------------------------------------------------------------
// An unauthenticated peer cannot forge lines in the hub's log.

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `hubd init` on loopback through the real binary.
async fn init_hub(data: &Path) {
    run_json(
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
}

/// A join token for the hub at `addr` with CA `data/ca.pem`, carrying whatever id we like.
fn forged_token(data: &Path, addr: std::net::SocketAddr, id: &str) -> String {
    let ca = flotilla_certs::read_cert_pem(&data.join("ca.pem")).expect("ca.pem");
    flotilla_certs::JoinToken {
        hubs: vec![addr.to_string()],
        ca_fingerprint: flotilla_certs::fingerprint(&ca),
        id: id.into(),
        secret: flotilla_certs::TokenSecret([7; 32]),
    }
    .encode()
}

#[tokio::test(flavor = "multi_thread")]
async fn enrolment_fields_cannot_forge_lines_in_the_human_log() {
    forge_attempts("human").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn enrolment_fields_cannot_forge_lines_in_the_json_log() {
    let log = forge_attempts("json").await;
    for line in log.lines() {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not one JSON object ({e}): {line}"));
        assert!(parsed.is_object(), "{line}");
    }
}

/// Runs a hub logging in `format`, sends it enrolments whose token id and labels try to start log
/// lines of their own, checks that none did, and returns the log.
async fn forge_attempts(format: &str) -> String {
    use common::Daemon;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    init_hub(&data).await;
    let mut hub = Daemon::spawn(
        &hubd_bin(),
        &["--log-format", format, "--data-dir", path_str(&data), "run"],
    );
    hub.wait_log("hub listening", DEADLINE).await;
    let addr: std::net::SocketAddr = std::fs::read_to_string(data.join("hub.addr"))
        .expect("hub.addr")
        .trim()
        .parse()
        .expect("hub.addr holds an address");
    let forged = "FORGED hubd: INFO admin logged in from 10.0.0.1 \u{1b}[2J";
    let attempts = [
        (format!("0123456789abcdef\n{forged}"), Vec::new()),
        (format!("\r{forged}"), Vec::new()),
        (
            "0123456789abcdef".to_string(),
            vec![(format!("k\n{forged}"), "v".to_string())],
        ),
        (
            "0123456789abcdef".to_string(),
            vec![("k".to_string(), format!("v\n{forged}"))],
        ),
    ];
    let mut codes = Vec::new();
    for (i, (id, labels)) in attempts.into_iter().enumerate() {
        let login = dir.path().join(format!("peer-{i}"));
        agentd::create_private_dir(&login).expect("mkdir");
        let token = forged_token(&data, addr, &id);
        let result = within(
            DEADLINE,
            "forged enrolment",
            flotilla_certs::enrol::enrol(&token, &login, format!("peer-{i}"), labels, test_hello()),
        )
        .await;
        match result {
            Err(flotilla_certs::enrol::EnrolError::Dial(
                flotilla_certs::dial::DialError::Refused(r),
            )) => codes.push(r.code),
            other => panic!("forged enrolment {i} answered {other:?}"),
        }
    }
    // A last, well-formed refusal: once its line is read, every line before it is too.
    let sentinel = forged_token(&data, addr, "feedfacefeedface");
    let login = dir.path().join("sentinel");
    agentd::create_private_dir(&login).expect("mkdir");
    let _ = within(
        DEADLINE,
        "sentinel enrolment",
        flotilla_certs::enrol::enrol(
            &sentinel,
            &login,
            "sentinel".into(),
            Vec::new(),
            test_hello(),
        ),
    )
    .await;
    hub.wait_log("feedfacefeedface", DEADLINE).await;

    let log = hub.log_text();
    assert!(
        !log.contains('\u{1b}'),
        "a raw escape reached the log:\n{log}"
    );
    assert!(
        !log.contains('\r'),
        "a raw carriage return reached the log:\n{log}"
    );
    for line in log.lines() {
        if line.contains("FORGED") {
            assert!(
                line.contains("enrolment refused"),
                "a forged line stands on its own:\n{line}\nwhole log:\n{log}"
            );
        }
    }
    let refused = log
        .lines()
        .filter(|l| l.contains("enrolment refused"))
        .count();
    assert_eq!(refused, 5, "one refusal line per attempt:\n{log}");
    assert!(log.contains("(malformed)"), "{log}");
    // A malformed id is refused as such, before the token table is asked.
    assert_eq!(codes, [ErrorCode::BadRequest; 4]);
    hub.sigterm();
    hub.wait_exit(DEADLINE).await;
    log
}

// ---------------------------------------------------------------------------------------------
// Refused admin calls leave an audit record.

/// Audit records written after `after_seq`.
async fn audit_since(fleet: &TestFleet, after_seq: i64) -> Vec<hubd::store::AuditRecord> {
    fleet
        .ctx()
        .store
        .call(|c| Ok(hubd::store::audit::recent(c, 1000)?))
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| r.seq > after_seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_calls_refused_for_the_role_are_audited_with_who_what_and_why() {
    use flotilla_wire::files::{CopyEnd, CopyRequest, TransferId, WriteKind};
    use flotilla_wire::msg::TokenSpec;
    let fleet = TestFleet::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    for role in [Role::Viewer, Role::Operator] {
        let client = login(
            &fleet,
            &dir.path().join(role.as_str()),
            role,
            &format!("{role}-1"),
        )
        .await;
        let who = client.welcome.identity.to_string();
        let start = audit_since(&fleet, 0).await.last().map_or(0, |r| r.seq);
        let spec = TokenSpec {
            role: Role::Admin,
            ttl_s: 3600,
            uses: 1,
            labels: Vec::new(),
        };
        let calls = [
            (
                OpRequest::TokenCreate(spec),
                "token.create.denied",
                "role:admin",
                "creating tokens",
            ),
            (
                OpRequest::TokenList,
                "token.list.denied",
                "",
                "listing tokens",
            ),
            (
                OpRequest::TokenDelete {
                    id: "0123456789abcdef".into(),
                },
                "token.delete.denied",
                "0123456789abcdef",
                "deleting tokens",
            ),
            (
                OpRequest::Revoke {
                    query: "admin".into(),
                },
                "revoke.denied",
                "admin",
                "revoking",
            ),
            (
                OpRequest::ListOperators,
                "operators.list.denied",
                "",
                "listing operators",
            ),
        ];
        let mut want = Vec::new();
        for (req, action, target, what) in calls {
            let reason = format!("{what} needs the admin role; you are {role}");
            match client.request(&req).await {
                OpResponse::Error(r) => {
                    assert_eq!(
                        (r.code, r.message.as_str()),
                        (ErrorCode::Forbidden, reason.as_str())
                    );
                }
                other => panic!("{action} by a {role} answered {other:?}"),
            }
            want.push((
                who.clone(),
                action.to_string(),
                target.to_string(),
                format!("role={role} reason={reason}"),
            ));
        }
        // Allowed calls add no refusal.
        assert!(matches!(
            client.request(&OpRequest::ListAgents).await,
            OpResponse::Agents(_)
        ));
        if role == Role::Viewer {
            let (mut send, mut recv) = client.conn.open_bi().await.expect("copy stream");
            write_frame(&mut send, &StreamOpen::Copy, MAX_CONTROL_FRAME)
                .await
                .expect("copy open");
            let req = CopyRequest {
                transfer: TransferId(7),
                src: CopyEnd::Agent {
                    agent: "web-1".into(),
                    path: "a".into(),
                },
                dst: CopyEnd::Local {
                    path: "a".into(),
                    meta: None,
                },
                kind: WriteKind::File,
            };
            write_frame(&mut send, &req, MAX_CONTROL_FRAME)
                .await
                .expect("copy request");
            // The refusal comes back, then the stream ends.
            let _ = within(DEADLINE, "copy refusal", recv.read_to_end(64 * 1024)).await;
            want.push((
                who.clone(),
                "copy.denied".into(),
                String::new(),
                "role=viewer reason=copying needs the operator role; you are viewer".into(),
            ));
        }
        let got: Vec<_> = audit_since(&fleet, start)
            .await
            .into_iter()
            .map(|r| (r.actor, r.action, r.target, r.detail))
            .collect();
        assert_eq!(got, want, "audit records of the {role}'s refused calls");
    }
}

// ---------------------------------------------------------------------------------------------
// State at rest: explicit modes whatever the umask, and no silent default listen address.

/// `sh -c 'umask 000; exec hubd ARGS'`: what a careless service manager or shell would give it.
fn under_umask_000(args: &[&str]) -> Vec<String> {
    let mut v = vec![
        "-c".to_string(),
        "umask 000 && exec \"$0\" \"$@\"".to_string(),
        hubd_bin().to_str().expect("utf-8 path").to_string(),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// Every file under `dir` with its mode, relative path first.
fn modes_under(dir: &Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let entry = entry.expect("dir entry");
            let meta = std::fs::symlink_metadata(entry.path()).expect("stat");
            let rel = entry
                .path()
                .strip_prefix(dir)
                .expect("under dir")
                .display()
                .to_string();
            out.push((rel, meta.permissions().mode() & 0o777));
            if meta.is_dir() {
                todo.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_data_file_has_an_explicit_mode_under_umask_000() {
    use common::{Daemon, run_cmd};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    let data_s = path_str(&data);
    let sh = Path::new("/bin/sh");
    let args = under_umask_000(&["--data-dir", data_s, "init", "--listen", "127.0.0.1:0"]);
    let out = run_cmd(sh, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = under_umask_000(&["--data-dir", data_s, "run"]);
    let mut hub = Daemon::spawn(sh, &args.iter().map(String::as_str).collect::<Vec<_>>());
    hub.wait_log("hub listening", DEADLINE).await;
    // Something in the database and its WAL, and a backup while serving.
    let backup = dir.path().join("backup.db");
    let args = under_umask_000(&["--data-dir", data_s, "backup", path_str(&backup)]);
    let out = run_cmd(sh, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let modes = modes_under(&data);
    let names: Vec<&str> = modes.iter().map(|(n, _)| n.as_str()).collect();
    for must in [
        "hub.db",
        "hub.db-wal",
        "hub.db-shm",
        "hub.toml",
        "admin.sock",
        "hub.lock",
    ] {
        assert!(names.contains(&must), "{must} missing from {names:?}");
    }
    let wrong: Vec<_> = modes
        .iter()
        .filter(|(name, mode)| {
            let path = data.join(name);
            let want: &[u32] = if path.is_dir() {
                &[0o700]
            } else if name.ends_with(".pem")
                || name.ends_with("hubs")
                || name.ends_with(".toml")
                || name.ends_with(".addr")
            {
                // Public, readable by the group at most.
                &[0o640]
            } else {
                &[0o600]
            };
            !want.contains(mode)
        })
        .map(|(n, m)| format!("{n} {m:o}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "files with the wrong mode: {wrong:?} (all: {modes:?})"
    );
    assert_eq!(common::mode_of(&backup), 0o600, "the backup");

    hub.sigterm();
    assert_eq!(
        hub.wait_exit(DEADLINE).await.code(),
        Some(0),
        "{}",
        hub.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_without_listen_is_refused_rather_than_listening_everywhere() {
    use common::run_cmd;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    init_hub(&data).await;
    let config = data.join("hub.toml");
    let good = std::fs::read_to_string(&config).expect("hub.toml");
    let truncated: String = good
        .lines()
        .filter(|l| !l.starts_with("listen"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(truncated, good, "the test must drop the listen line");
    for bad in [String::new(), truncated] {
        std::fs::write(&config, &bad).expect("write hub.toml");
        for sub in [&["run"][..], &["config", "check"][..]] {
            let mut args = vec!["--data-dir", path_str(&data)];
            args.extend(sub);
            let out = run_cmd(&hubd_bin(), &args).await;
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{sub:?}: {err}");
            assert!(
                err.contains("sets no `listen` address"),
                "{sub:?} should name the missing key: {err}"
            );
            assert!(!data.join("admin.sock").exists(), "nothing was started");
        }
    }
    // Given on the command line, the address need not be in the file.
    let out = run_cmd(
        &hubd_bin(),
        &[
            "--data-dir",
            path_str(&data),
            "config",
            "check",
            "--listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Names that would confuse selectors, queries or listings are refused.

#[tokio::test(flavor = "multi_thread")]
async fn reserved_id_shaped_and_case_variant_names_are_refused() {
    use flotilla_wire::msg::Refusal;
    let fleet = TestFleet::new().await;
    let web = fleet.spawn_agent("web-1").await;
    let token = fleet.token(Role::Agent, 1, Vec::new()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = dir.path().join("agent");
    let upper_id = web.id.as_str().to_ascii_uppercase();
    let cases = [
        (
            "all",
            "is reserved (selectors and paths give it a meaning): choose another",
        ),
        (
            "ALL",
            "is reserved (selectors and paths give it a meaning): choose another",
        ),
        (
            ".",
            "is reserved (selectors and paths give it a meaning): choose another",
        ),
        (
            "..",
            "is reserved (selectors and paths give it a meaning): choose another",
        ),
        (
            "-rf",
            "starts with '-' and would read as an option: choose another",
        ),
        (
            web.id.as_str(),
            "has the shape of an identity id (a-/o- and 16 hex digits): choose another",
        ),
        (
            upper_id.as_str(),
            "has the shape of an identity id (a-/o- and 16 hex digits): choose another",
        ),
        (
            "o-0123456789abcdef",
            "has the shape of an identity id (a-/o- and 16 hex digits): choose another",
        ),
    ];
    for (name, why) in cases {
        let r = match common::enrol_into(&agent_dir, &token.token, name, Vec::new()).await {
            Err(flotilla_certs::enrol::EnrolError::Dial(
                flotilla_certs::dial::DialError::Refused(r),
            )) => r,
            other => panic!("enrolling as {name:?} answered {other:?}"),
        };
        assert_eq!(
            r,
            Refusal {
                code: ErrorCode::BadRequest,
                message: format!("name {name:?} {why}"),
            }
        );
    }
    for variant in ["WEB-1", "Web-1"] {
        let r = match common::enrol_into(&agent_dir, &token.token, variant, Vec::new()).await {
            Err(flotilla_certs::enrol::EnrolError::Dial(
                flotilla_certs::dial::DialError::Refused(r),
            )) => r,
            other => panic!("enrolling as {variant:?} answered {other:?}"),
        };
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert_eq!(
            r.message,
            format!(
                "name {variant:?} is taken by {0} as \"web-1\" (names are compared ignoring case): enrol with another --name, or revoke {0} first",
                web.id
            )
        );
    }
    // Nothing was enrolled and the token still has its use; a plain new name works.
    assert_eq!(common::files_in(&agent_dir), Vec::<String>::new());
    assert_eq!(
        fleet
            .token_info(&token.info.id)
            .await
            .expect("token listed")
            .uses_left,
        1
    );
    assert_eq!(fleet.listed_agents().await.len(), 1);
    let ok = common::enrol_into(&agent_dir, &token.token, "web-2", Vec::new())
        .await
        .expect("a plain name enrols");
    assert_eq!(ok.enrolled.name, "web-2");
    fleet.assert_serving(&web).await;
}
