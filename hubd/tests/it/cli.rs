//! The `hubd` and `agentd` command lines: exit codes, the reason on stderr, clean exit on SIGTERM.

use crate::harness::{DEADLINE, Fleet, HubProc, agentd_bin, files_in, hubd_bin, run_cmd, run_json};
use std::path::Path;

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn init(data: &Path) -> serde_json::Value {
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
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn init_twice_refuses_and_leaves_the_ca_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    let report = init(&data).await;
    assert_eq!(report["data_dir"], path_str(&data));
    let ca_before = std::fs::read(data.join("ca.pem")).expect("ca.pem");
    let files_before = files_in(&data);

    let out = run_cmd(
        &hubd_bin(),
        &[
            "--data-dir",
            path_str(&data),
            "init",
            "--listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("a fleet CA already exists here; refusing to overwrite it"),
        "{err}"
    );
    assert!(
        err.contains(&data.join("ca.pem").display().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read(data.join("ca.pem")).expect("ca.pem"),
        ca_before
    );
    assert_eq!(files_in(&data), files_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_with_a_bad_config_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    init(&data).await;
    let config = data.join("hub.toml");
    let good = std::fs::read_to_string(&config).expect("hub.toml");

    for (bad, names) in [
        (format!("{good}listen_port = 3\n"), "listen_port"),
        (
            good.replace("idle_timeout_s = 15", "idle_timeout_s = 1"),
            "idle_timeout_s = 1 must be between 3 and 600",
        ),
        (
            good.replace(
                "metrics_interval_ms = 5000",
                "metrics_interval_ms = \"fast\"",
            ),
            "metrics_interval_ms",
        ),
    ] {
        assert_ne!(bad, good, "the test must change the file");
        std::fs::write(&config, &bad).expect("write hub.toml");
        let out = run_cmd(&hubd_bin(), &["--data-dir", path_str(&data), "run"]).await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
        let err = stderr_of(&out);
        assert!(err.contains(names), "stderr should name {names:?}: {err}");
        assert!(!data.join("admin.sock").exists(), "nothing was started");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_exits_0_on_sigterm_and_removes_its_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    init(&data).await;
    let mut hub = HubProc::run(&data, None).await;
    assert!(data.join("admin.sock").exists());
    // The running hub answers admin commands.
    let agents = run_json(
        &hubd_bin(),
        &["--data-dir", path_str(&data), "agents", "--json"],
    )
    .await;
    assert_eq!(agents, serde_json::json!([]));

    hub.daemon.sigterm();
    let status = hub.daemon.wait_exit(DEADLINE).await;
    assert_eq!(
        status.code(),
        Some(0),
        "hubd log:\n{}",
        hub.daemon.log_text()
    );
    // Its last words, read to the end of its stderr.
    hub.daemon.wait_log("hub stopped", DEADLINE).await;
    assert!(!data.join("admin.sock").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn second_hub_on_the_same_data_dir_exits_2() {
    let fleet = Fleet::new().await;
    let bystander = fleet.spawn_agent("bystander").await;
    let out = run_cmd(
        &hubd_bin(),
        &["--data-dir", path_str(&fleet.paths.data_dir), "run"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("another hubd is already running on"),
        "{}",
        stderr_of(&out)
    );
    // The first hub lost nothing: its admin socket and agents still work.
    assert_eq!(fleet.listed_agents().await.len(), 1);
    fleet.assert_serving(&bystander).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_exit_2_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    let d = path_str(&data);

    let out = run_cmd(
        &hubd_bin(),
        &["--data-dir", d, "token", "create", "--role", "bogus"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("unknown role \"bogus\": use agent, viewer, operator or admin"),
        "{}",
        stderr_of(&out)
    );
    let out = run_cmd(
        &hubd_bin(),
        &[
            "--data-dir",
            d,
            "token",
            "create",
            "--role",
            "agent",
            "--ttl",
            "1w",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("unknown unit \"w\""),
        "{}",
        stderr_of(&out)
    );
    assert!(!data.exists(), "argument errors touch nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_before_init_and_agentd_before_enroll_say_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("hub");
    let out = run_cmd(&hubd_bin(), &["--data-dir", path_str(&data), "run"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("run `hubd init` first?"),
        "{}",
        stderr_of(&out)
    );

    let agent = dir.path().join("agent");
    let out = run_cmd(&agentd_bin(), &["--data-dir", path_str(&agent), "run"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("holds no enrolled identity: run `agentd enroll --token …` first"),
        "{}",
        stderr_of(&out)
    );

    let out = run_cmd(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(&agent),
            "enroll",
            "--token",
            "garbage",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("not a Flotilla join token (expected it to start with flt1_)"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(
        files_in(&agent),
        Vec::<String>::new(),
        "no identity written"
    );
}
