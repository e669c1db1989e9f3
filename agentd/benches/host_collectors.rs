//! What host depth costs the agent: every collector on (per-device I/O, interface errors, GPUs,
//! top processes with command lines, SMART, a custom Prometheus endpoint served here on loopback
//! and a script), sampled at the agent's 5 s interval. Prints the CPU of the sampling step (sample
//! plus host detail) per interval and as a share of one core, the process's RSS, and the bytes of
//! one sample and one detail as metrics frames. Figures in docs/benchmarks.md.
//!
//! `cargo bench -p flotilla-agentd --bench host_collectors [-- INTERVALS [agentd] [procs=N]]`
//! (default 12 intervals = 1 minute). `procs=N` starts N idle processes (`sleep`) for the run, as on
//! a machine with many services or containers: the process table is read whole each interval.
//!
//! With `agentd` as second argument it measures a whole agent instead: the release `hubd` and
//! `agentd` (`cargo build --release -p flotilla-hubd -p flotilla-agentd` first) run on 127.0.0.1,
//! the agent configured with the same custom sources, and the agent process's CPU and RSS are read
//! from /proc over the intervals, after two intervals of warm-up.

use agentd::host::config::{HostConfig, PrometheusSource, ScriptSource};
use agentd::host::{self, HostPaths};
use agentd::sampler::SampleSource;
use flotilla_wire::limits::MAX_METRICS_FRAME;
use flotilla_wire::msg::MetricsFrame;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The agent's metrics interval when nobody watches.
const INTERVAL: Duration = Duration::from_millis(5000);

/// A node-exporter-like page: 40 series of which the allow list keeps 10.
fn page() -> String {
    let mut p = String::new();
    for i in 0..40 {
        p.push_str(&format!(
            "# TYPE app_metric_{i} gauge\napp_metric_{i}{{instance=\"a\",job=\"bench\"}} {i}.5\n"
        ));
    }
    p
}

/// Serves the page on loopback from a thread, for as long as the bench runs (bounded in requests).
fn serve() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let body = page();
        for stream in listener.incoming().take(100_000) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

fn config(dir: &Path, url: String) -> HostConfig {
    let script = dir.join("queue.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho queue_depth 12\necho queue_oldest_s 3.5\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    HostConfig {
        prometheus: vec![PrometheusSource {
            name: "app".into(),
            url,
            allow: (0..10).map(|i| format!("app_metric_{i}")).collect(),
            timeout_s: 5,
        }],
        scripts: vec![ScriptSource {
            name: "queue".into(),
            command: vec![script.display().to_string()],
            timeout_s: 5,
        }],
        ..HostConfig::default()
    }
}

/// User plus system CPU time of process `pid` ("self" for this one), from /proc.
fn proc_cpu(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let t = |i: usize| fields[i].parse::<f64>().expect("clock ticks") / ticks;
    Duration::from_secs_f64(t(11) + t(12))
}

/// Resident set size of process `pid`, bytes.
fn proc_rss(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn frame_bytes(frame: &MetricsFrame) -> usize {
    let mut buf = bytes::BytesMut::new();
    flotilla_wire::encode(frame, &mut buf, MAX_METRICS_FRAME).expect("encode");
    buf.len()
}

fn in_process(intervals: u32) {
    let dir = tempfile::tempdir().expect("tmp");
    let url = serve();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rss_before = proc_rss("self");
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut parts = rt.block_on(async {
        host::start(
            &config(dir.path(), url),
            HostPaths::default(),
            cancel.clone(),
        )
    });
    // Let SMART and the custom sources run once.
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(3)).await });
    parts.sampler.sample();
    let _ = parts.outbox.next_detail();
    let (mut cpu, mut rss_max, mut sample_bytes, mut detail_bytes) = (Duration::ZERO, 0, 0, 0);
    let mut detail = None;
    for _ in 0..intervals {
        rt.block_on(async { tokio::time::sleep(INTERVAL).await });
        let c0 = proc_cpu("self");
        let sample = parts.sampler.sample();
        cpu += proc_cpu("self") - c0;
        let d = parts.outbox.next_detail().expect("detail");
        sample_bytes = frame_bytes(&MetricsFrame::Sample(sample));
        detail_bytes = frame_bytes(&MetricsFrame::HostDetail(d.clone()));
        rss_max = rss_max.max(proc_rss("self"));
        detail = Some(d);
    }
    let report = parts.outbox.report.borrow().clone();
    cancel.cancel();
    let per = cpu / intervals;
    println!("intervals: {intervals} at {} s", INTERVAL.as_secs());
    println!(
        "CPU of sample + host detail: {:.1} ms per interval, {:.3} % of one core",
        per.as_secs_f64() * 1000.0,
        per.as_secs_f64() / INTERVAL.as_secs_f64() * 100.0
    );
    println!(
        "RSS: {:.1} MB before, {:.1} MB at most while sampling",
        rss_before as f64 / 1e6,
        rss_max as f64 / 1e6
    );
    println!("bytes per interval: sample frame {sample_bytes}, host detail frame {detail_bytes}");
    if let Some(d) = detail {
        println!(
            "detail: {} block devices, {} interfaces, {} GPUs, {} custom series, collectors {:?}",
            d.block_io.len(),
            d.net_errors.len(),
            d.gpus.len(),
            d.custom.len(),
            d.collectors
                .iter()
                .map(|c| format!("{}={}", c.name, c.state.as_str()))
                .collect::<Vec<_>>()
        );
    }
    if let Some(r) = report {
        println!(
            "SMART report frame: {} bytes, {} disks",
            frame_bytes(&MetricsFrame::HostReport(r.clone())),
            r.disks.len()
        );
    }
}

fn whole_agent(intervals: u32) {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(bin.join(args[0]))
            .args(&args[1..])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run a release binary (build them first)");
        assert!(
            out.status.success(),
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let hub_dir = d.join("hub");
    let hub_data = hub_dir.to_str().expect("utf-8");
    run(
        &[
            "hubd",
            "--data-dir",
            hub_data,
            "init",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let mut hub = Command::new(bin.join("hubd"))
        .args(["--data-dir", hub_data, "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hubd run");
    let addr_file = hub_dir.join("hub.addr");
    for _ in 0..300 {
        if addr_file.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let token_json = run(
        &[
            "hubd",
            "--data-dir",
            hub_data,
            "token",
            "create",
            "--role",
            "agent",
            "--uses",
            "1",
            "--json",
        ],
        &[],
    );
    let token =
        serde_json::from_str::<serde_json::Value>(&token_json).expect("token json")["token"]
            .as_str()
            .expect("token")
            .to_string();
    let agent_dir = d.join("agent");
    std::fs::create_dir_all(&agent_dir).expect("agent dir");
    let cfg = agentd::AgentConfig {
        host: config(d, serve()),
        ..agentd::AgentConfig::default()
    };
    std::fs::write(
        agent_dir.join("agent.toml"),
        toml::to_string(&cfg).expect("toml"),
    )
    .expect("agent.toml");
    let agent_data = agent_dir.to_str().expect("utf-8");
    run(
        &[
            "agentd",
            "--data-dir",
            agent_data,
            "enroll",
            "--name",
            "bench",
        ],
        &[("FLOTILLA_TOKEN", token.as_str())],
    );
    let mut agent = Command::new(bin.join("agentd"))
        .args(["--data-dir", agent_data, "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agentd run");
    let pid = agent.id().to_string();
    std::thread::sleep(INTERVAL * 2);
    let (cpu0, t0) = (proc_cpu(&pid), Instant::now());
    let mut rss_max = 0;
    for _ in 0..intervals {
        std::thread::sleep(INTERVAL);
        rss_max = rss_max.max(proc_rss(&pid));
    }
    let (cpu, wall) = (proc_cpu(&pid) - cpu0, t0.elapsed());
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = hub.kill();
    let _ = hub.wait();
    println!(
        "whole agentd run, every host collector on, {intervals} intervals of {} s",
        INTERVAL.as_secs()
    );
    println!(
        "CPU: {:.3} % of one core; RSS at most {:.1} MB",
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        rss_max as f64 / 1e6
    );
}

/// Idle child processes for the run's length, killed when dropped.
struct IdleProcs(Vec<std::process::Child>);

impl IdleProcs {
    fn start(n: usize) -> Self {
        Self(
            (0..n)
                .map(|_| {
                    Command::new("sleep")
                        .arg("3600")
                        .stdin(Stdio::null())
                        .spawn()
                        .expect("spawn sleep")
                })
                .collect(),
        )
    }
}

impl Drop for IdleProcs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let intervals: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(12);
    let extra: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("procs=")?.parse().ok())
        .unwrap_or(0);
    let _idle = IdleProcs::start(extra);
    println!(
        "processes on the machine: {}",
        std::fs::read_dir("/proc")
            .map(|d| d
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count())
            .unwrap_or(0)
    );
    if args.get(1).map(String::as_str) == Some("agentd") {
        whole_agent(intervals);
    } else {
        in_process(intervals);
    }
}
