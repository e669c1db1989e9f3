//! No secret in any log line: a join token is created, used to enrol with the `agentd` binary and
//! to run it, every process logging at debug level (trace for our own crates), and none of the
//! token's forms appears anywhere but where `token create` prints it.

use crate::harness::binaries::{Hub, agentd_bin, code, command, run, stderr, wait_for_change};
use std::process::Stdio;

/// Debug for everything, trace for our crates.
const VERBOSE: &str = "debug,hubd=trace,agentd=trace,flotilla_certs=trace,flotilla_wire=trace";

/// The token as text, its body, and its secret in hex and as a debug-printed byte list.
fn forms(token: &str) -> Vec<String> {
    let parsed = flotilla_certs::JoinToken::parse(token).expect("token");
    let secret = parsed.secret.0;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        token.to_string(),
        token.trim_start_matches("flt1_").to_string(),
        hex,
        format!("{secret:?}"),
        // A list of the first bytes is enough to spot a Vec<u8> printed with {:?}.
        format!("{:?}", &secret[..6])
            .trim_end_matches(']')
            .to_string(),
    ]
}

fn assert_clean(what: &str, text: &str, token: &str) {
    for form in forms(token) {
        assert!(
            !text.contains(&form),
            "{what} contains the token ({form}):\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_secret_in_debug_logs() {
    let mut hub = Hub::init().await;
    hub.env = vec![("RUST_LOG".into(), VERBOSE.into())];
    hub.start().await;

    let out = run(crate::harness::binaries::hubd(&hub.data)
        .args(["token", "create", "--role", "agent", "--json"])
        .env("RUST_LOG", VERBOSE))
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let token = crate::harness::binaries::json(&out)["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_clean("hubd token create's stderr", &stderr(&out), &token);

    let agent_dir = hub.dir.path().join("agent");
    let out = run(command(&agentd_bin())
        .arg("--data-dir")
        .arg(&agent_dir)
        .args(["enroll", "--name", "quiet-1"])
        .env("FLOTILLA_TOKEN", &token)
        .env("RUST_LOG", VERBOSE))
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).is_empty(), "debug logging was on");
    assert_clean(
        "agentd enroll's output",
        &format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)),
        &token,
    );

    // The agent runs with the (now used) token still in its configuration and environment.
    std::fs::write(
        agent_dir.join("agent.toml"),
        format!("token = \"{token}\"\n"),
    )
    .expect("config");
    let log_path = hub.dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = command(&agentd_bin())
        .arg("--data-dir")
        .arg(&agent_dir)
        .arg("run")
        .env("FLOTILLA_AGENT_TOKEN", &token)
        .env("RUST_LOG", VERBOSE)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("agentd run");
    wait_for_change(&agent_dir, "the agent to connect", || {
        agentd::status::read(&agent_dir)
            .ok()
            .flatten()
            .is_some_and(|s| s.connected())
    })
    .await;
    let out = run(command(&agentd_bin())
        .arg("--data-dir")
        .arg(&agent_dir)
        .args(["config", "check"])
        .env("FLOTILLA_AGENT_TOKEN", &token)
        .env("RUST_LOG", VERBOSE))
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_clean(
        "agentd config check",
        &format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)),
        &token,
    );

    crate::harness::binaries::signal(child.id().expect("pid"), "-TERM").await;
    assert!(crate::harness::binaries::exited(&mut child).await.success());
    assert!(hub.stop().await.success());
    let agent_log = std::fs::read_to_string(&log_path).expect("agent log");
    assert!(agent_log.contains("connected to hub"), "{agent_log}");
    assert_clean("agentd run's log", &agent_log, &token);
    let hub_log = hub.log();
    assert!(hub_log.contains("enrolled"), "{hub_log}");
    assert!(
        hub_log.contains("DEBUG") || hub_log.contains("TRACE"),
        "debug logging was on"
    );
    assert_clean("hubd's log", &hub_log, &token);
    let status =
        std::fs::read_to_string(agent_dir.join(agentd::status::STATUS_FILE)).expect("status");
    assert_clean("status.json", &status, &token);
}
