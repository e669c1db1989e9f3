//! Host depth end to end: a real agent with custom sources (an HTTP endpoint served by the test,
//! a script) reports through a real hub, and `flotilla agent NAME --json` shows its collectors,
//! per-device I/O, custom series, disk health, and a process the test starts burning CPU among
//! the top processes. `--health` runs SMART on the agent now, for operators only.

use crate::harness::binaries::{code, stderr};
use crate::harness::flotilla_bin;
use crate::harness::{AgentSpec, Fleet, TEST_METRICS_MS, WORK_DEADLINE, run_cmd};
use agentd::AgentConfig;
use agentd::host::config::{HostConfig, PrometheusSource, ScriptSource};
use flotilla_wire::Role;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn agent_json(login: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec![
        "--no-mux",
        "--login-dir",
        login.to_str().expect("utf-8"),
        "agent",
        "web-1",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = run_cmd(&flotilla_bin(), &args).await;
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code(&out), json, stderr(&out))
}

/// Serves a Prometheus page on loopback for as long as the test runs (bounded in requests).
async fn serve_metrics() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        for _ in 0..10_000 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let page = "# TYPE shop_orders_total counter\nshop_orders_total{shop=\"eu\"} 12\nshop_hidden 5\n";
            let reply = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{page}",
                page.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    (url, task)
}

fn has_custom(detail: &Value, name: &str, value: f64) -> bool {
    detail["custom"]
        .as_array()
        .is_some_and(|l| l.iter().any(|c| c["name"] == name && c["value"] == value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flotilla_agent_shows_collectors_custom_series_health_and_the_cpu_burner() {
    let (url, server) = serve_metrics().await;
    let dir = tempfile::tempdir().expect("tmp");
    let script = dir.path().join("queue.sh");
    std::fs::write(&script, "#!/bin/sh\necho queue_depth 7\n").expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = AgentConfig {
        metrics_interval_ms: TEST_METRICS_MS,
        host: HostConfig {
            custom_interval_s: 1,
            prometheus: vec![PrometheusSource {
                name: "shop".into(),
                url,
                allow: vec!["shop_orders_total".into()],
                timeout_s: 10,
            }],
            scripts: vec![ScriptSource {
                name: "queue".into(),
                command: vec![script.to_str().expect("utf-8").into()],
                timeout_s: 10,
            }],
            ..HostConfig::default()
        },
        ..AgentConfig::default()
    };
    let fleet = Fleet::builder()
        .agent(AgentSpec::new("web-1").config(config))
        .start()
        .await;
    let admin = fleet.admin_login().dir.clone();

    // A process burning CPU at a raised priority, so that it ranks among the top five even while
    // the machine compiles.
    let mut burner = tokio::process::Command::new("nice")
        .args(["-n", "-10", "/bin/sh", "-c", "while :; do :; done"])
        .kill_on_drop(true)
        .spawn()
        .expect("burner");
    let burner_pid = u64::from(burner.id().expect("pid"));

    let start = Instant::now();
    let found = loop {
        let (status, json, err) = agent_json(&admin, &[]).await;
        assert_eq!(status, 0, "{err}");
        let detail = &json["host"]["detail"];
        let burning = detail["top_cpu"].as_array().and_then(|l| {
            l.iter()
                // A process sysinfo has seen once shows 0 % until its second sample.
                .find(|p| {
                    p["pid"].as_u64() == Some(burner_pid)
                        && p["cpu_pct"].as_f64().is_some_and(|c| c > 5.0)
                })
                .cloned()
        });
        if let Some(p) = burning
            && has_custom(detail, "queue_depth", 7.0)
            && has_custom(detail, "shop_orders_total", 12.0)
            && !json["host"]["report"].is_null()
        {
            break (json, p);
        }
        assert!(
            start.elapsed() < WORK_DEADLINE * 2,
            "no complete host view (burner pid {burner_pid}): {:#}",
            json["host"]
        );
        // Polling: the view changes once per agent interval; no event tells a CLI that it did.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = burner.kill().await;
    let (json, proc_row) = found;
    assert!(
        proc_row["cmd"]
            .as_str()
            .is_some_and(|c| c.contains("while :; do :; done")),
        "{proc_row}"
    );
    assert!(
        proc_row["user"].as_str().is_some_and(|u| !u.is_empty()),
        "{proc_row}"
    );

    let detail = &json["host"]["detail"];
    assert!(
        !detail["custom"]
            .as_array()
            .expect("custom")
            .iter()
            .any(|c| c["name"] == "shop_hidden"),
        "a name outside the allow list is not sent"
    );
    assert!(
        detail["block_io"].as_array().is_some_and(|l| !l.is_empty()),
        "{detail}"
    );
    assert!(
        detail["net_errors"]
            .as_array()
            .is_some_and(|l| l.iter().any(|n| n["iface"] == "lo")),
        "{detail}"
    );
    let collectors = detail["collectors"].as_array().expect("collectors");
    let state_of = |name: &str| {
        collectors
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("collector {name} missing: {collectors:?}"))["state"]
            .clone()
    };
    for running in [
        "diskstats",
        "netdev",
        "processes",
        "custom",
        "custom:shop",
        "custom:queue",
    ] {
        assert_eq!(state_of(running), "running", "{running}");
    }
    // Without an NVIDIA driver (this machine) the collector is absent and says why.
    let nvidia = state_of("nvidia");
    assert!(
        nvidia == "running"
            || nvidia["absent"]
                .as_str()
                .is_some_and(|r| r.contains("NVIDIA")),
        "{nvidia}"
    );
    let report = &json["host"]["report"];
    assert_eq!(report["collectors"][0]["name"], "smart", "{report}");
    if let Some(vda) = report["disks"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["device"] == "/dev/vda"))
    {
        assert!(
            vda["health"]["nosmart"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "a virtual disk says why it has no SMART: {vda}"
        );
    }

    // Human output names the collectors and the disk health line.
    let out = run_cmd(
        &flotilla_bin(),
        &[
            "--no-mux",
            "--login-dir",
            admin.to_str().expect("utf-8"),
            "agent",
            "web-1",
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("collector:  nvidia"), "{text}");
    assert!(text.contains("custom:     queue_depth 7"), "{text}");

    // On demand: a fresh report, newer than the one held.
    let before = report["at_ms"].as_u64().expect("at_ms");
    let (status, fresh, err) = agent_json(&admin, &["--health"]).await;
    assert_eq!(status, 0, "{err}");
    let after = fresh["host"]["report"]["at_ms"].as_u64().expect("at_ms");
    assert!(after > before, "report at {after} not newer than {before}");

    // A viewer sees the view but may not start smartctl on the agent.
    let viewer = fleet.login_as(Role::Viewer, "watcher").await;
    let (status, json, err) = agent_json(&viewer.dir, &[]).await;
    assert_eq!(status, 0, "{err}");
    assert!(!json["host"]["detail"].is_null());
    let (status, _, err) = agent_json(&viewer.dir, &["--health"]).await;
    assert_ne!(status, 0);
    assert!(err.contains("needs the operator role"), "{err}");
    let held = fleet
        .ctx()
        .host
        .view(&fleet.agent("web-1").id, "web-1")
        .report
        .expect("report held");
    assert_eq!(held.at_ms, after, "the refused request changed nothing");

    server.abort();
    fleet.shutdown().await;
}
