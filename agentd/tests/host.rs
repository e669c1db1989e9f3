//! Host collectors on this machine's real `/proc`, sysfs and processes, and custom sources served
//! by the test itself (a real HTTP server on loopback, real scripts).

use agentd::host::config::{HostConfig, PrometheusSource, ScriptSource};
use agentd::host::{self, HostPaths, custom};
use agentd::sampler::SampleSource;
use flotilla_wire::host::{CollectorState, HostDetail};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Generous: a loaded two-core machine may take seconds to flush 16 MiB.
const DEADLINE: Duration = Duration::from_secs(30);

fn quiet_config() -> HostConfig {
    HostConfig {
        smart: false,
        gpus: false,
        ..HostConfig::default()
    }
}

fn take_detail(parts: &mut host::HostParts) -> HostDetail {
    parts.sampler.sample();
    parts
        .outbox
        .next_detail()
        .expect("each sample publishes a detail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_io_shows_a_file_written_with_fsync() {
    const SIZE: usize = 16 << 20;
    let cancel = CancellationToken::new();
    let mut parts = host::start(&quiet_config(), HostPaths::default(), cancel.clone());
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir on disk");
    let path = dir.path().join("blob");
    let before = tokio::task::block_in_place(|| take_detail(&mut parts));
    assert!(!before.block_io.is_empty(), "this machine has a disk");
    assert!(
        before
            .block_io
            .iter()
            .all(|b| !b.device.starts_with("loop"))
    );
    // Incompressible, so no layer can shrink it: the bytes must reach the device.
    let mut rng = fastrand::Rng::with_seed(7);
    let data: Vec<u8> = (0..SIZE).map(|_| rng.u8(..)).collect();
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(&data).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    // Bytes between two samples are rate × interval; sum over devices (a partition and its disk
    // both count it, which only adds).
    let mut seen = 0.0;
    let mut last_at = before.at_ms;
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        // Polled: the kernel's /proc/diskstats counters move when the writeback lands and
        // announce nothing; each pass samples them afresh, bounded by DEADLINE.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let d = tokio::task::block_in_place(|| take_detail(&mut parts));
        let secs = (d.at_ms - last_at) as f64 / 1000.0;
        last_at = d.at_ms;
        seen += d
            .block_io
            .iter()
            .map(|b| b.write_bps as f64 * secs)
            .sum::<f64>();
        if seen >= 0.9 * SIZE as f64 {
            cancel.cancel();
            return;
        }
    }
    panic!("only {seen} bytes written seen after an fsync of {SIZE}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interfaces_list_their_error_and_drop_counters() {
    let cancel = CancellationToken::new();
    let mut parts = host::start(&quiet_config(), HostPaths::default(), cancel.clone());
    let d = tokio::task::block_in_place(|| take_detail(&mut parts));
    let text = std::fs::read_to_string("/proc/net/dev").expect("/proc/net/dev");
    let listed: Vec<&str> = d.net_errors.iter().map(|n| n.iface.as_str()).collect();
    for line in text.lines().skip(2) {
        let name = line.split(':').next().expect("name").trim();
        assert!(listed.contains(&name), "{name} missing from {listed:?}");
    }
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "sorted: {listed:?}");
    assert!(listed.contains(&"lo"));
    let names: Vec<&str> = d.collectors.iter().map(|c| c.name.as_str()).collect();
    for expected in [
        "diskstats",
        "netdev",
        "processes",
        "nvidia",
        "amd",
        "custom",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let custom = d
        .collectors
        .iter()
        .find(|c| c.name == "custom")
        .expect("custom");
    assert!(
        matches!(&custom.state, CollectorState::Absent(r) if r.contains("[[host.prometheus]]")),
        "{custom:?}"
    );
    cancel.cancel();
}

/// A one-page HTTP server on loopback answering every request with `page`.
async fn serve_page(page: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        // Bounded: the tests scrape a handful of times.
        for _ in 0..100 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{page}",
                page.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    (url, task)
}

fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_str().expect("utf-8").to_string()
}

const PAGE: &str = "# HELP app_requests_total Requests.
# TYPE app_requests_total counter
app_requests_total{code=\"200\"} 41
app_requests_total{code=\"500\"} 2
app_up 1
app_secret_metric 99
";

#[tokio::test]
async fn custom_sources_report_allowed_series_and_their_failures() {
    let (url, server) = serve_page(PAGE).await;
    let dir = tempfile::tempdir().expect("tmp");
    let good = script(
        dir.path(),
        "queue.sh",
        "echo queue_depth 7\necho '# note'\necho jobs 2",
    );
    let bad = script(
        dir.path(),
        "broken.sh",
        "echo 'cannot reach the queue' >&2; exit 4",
    );
    // A port nothing listens on: bind, read the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_url = format!("http://{}/metrics", closed.local_addr().expect("addr"));
    drop(closed);
    let config = HostConfig {
        prometheus: vec![
            PrometheusSource {
                name: "app".into(),
                url,
                allow: vec!["app_requests_total".into(), "app_up".into()],
                timeout_s: 10,
            },
            PrometheusSource {
                name: "down".into(),
                url: closed_url,
                allow: vec!["x".into()],
                timeout_s: 10,
            },
        ],
        scripts: vec![
            ScriptSource {
                name: "queue".into(),
                command: vec![good],
                timeout_s: 10,
            },
            ScriptSource {
                name: "broken".into(),
                command: vec![bad],
                timeout_s: 10,
            },
        ],
        ..HostConfig::default()
    };
    config.validate().expect("valid");
    let mut warned = false;
    let latest = custom::collect(&config, &mut warned).await;
    let values: Vec<(String, f64)> = latest
        .values
        .iter()
        .map(|v| (v.name.clone(), v.value))
        .collect();
    assert_eq!(
        values,
        [
            ("app_requests_total".to_string(), 41.0),
            ("app_requests_total".to_string(), 2.0),
            ("app_up".to_string(), 1.0),
            ("queue_depth".to_string(), 7.0),
            ("jobs".to_string(), 2.0),
        ],
        "allowed names only, in configuration order"
    );
    assert_eq!(
        latest.values[0].labels,
        [("code".to_string(), "200".to_string())]
    );
    let state = |name: &str| {
        latest
            .statuses
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .state
            .clone()
    };
    assert_eq!(state("custom"), CollectorState::Running);
    assert_eq!(state("custom:app"), CollectorState::Running);
    assert_eq!(state("custom:queue"), CollectorState::Running);
    assert!(!warned);
    match state("custom:down") {
        CollectorState::Failed(e) => assert!(e.contains("refused"), "{e}"),
        other => panic!("{other:?}"),
    }
    match state("custom:broken") {
        CollectorState::Failed(e) => {
            assert!(
                e.contains("exit status: 4") && e.contains("cannot reach the queue"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }

    // The cap: five series found, three kept, the collector degraded with the reason, warned once.
    let capped = HostConfig {
        max_custom_series: 3,
        ..config
    };
    let latest = custom::collect(&capped, &mut warned).await;
    assert_eq!(latest.values.len(), 3);
    assert_eq!(latest.values[2].name, "app_up");
    match &latest.statuses[0].state {
        CollectorState::Degraded(r) => {
            assert!(r.contains("5 series found, 2 over the cap of 3"), "{r}");
            assert!(r.contains("host.max_custom_series"), "{r}");
        }
        other => panic!("{other:?}"),
    }
    assert!(warned, "the cap is logged");
    server.abort();
}
