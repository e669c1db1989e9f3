//! What reporting N running containers costs the agent: a private Podman (its own storage and
//! configuration under a temp dir, the API on a unix socket) runs N busybox containers, then the
//! agent's workload poller and one connection's differ run as in agentd (inventory, inspect on
//! change, one-shot stats, deltas encoded as metrics frames) at the agent's 5 s interval. Prints
//! the CPU this process used per interval and as a share of one core, its RSS before and during,
//! and the bytes of metrics frames per interval. Figures in docs/benchmarks.md.
//!
//! `cargo bench -p flotilla-agentd --bench containers_200 [-- CONTAINERS [INTERVALS [agentd [ROUNDS [AGENTD…]]]]]`
//! (default 200 containers, 12 intervals = 1 minute). Needs podman, runc and busybox-static, and
//! root (rootful Podman); the containers run with `--network none` and are removed at the end.
//!
//! With `agentd` as third argument it measures a whole agent instead: the release `hubd` and
//! `agentd` (`cargo build --release -p flotilla-hubd -p flotilla-agentd` first) run on 127.0.0.1,
//! the agent enrolled with `containers_socket` set to the private engine, and the agent process's
//! CPU and RSS are read from /proc over the intervals, after two intervals of warm-up. ROUNDS
//! (default 1) runs each; given several agentd binaries (default `target/release/agentd`), they
//! run one at a time in turn, ROUNDS times, each against the same engine and containers, and the
//! median of each is printed: a baseline and a candidate compared under the same machine load.

use agentd::link::WorkloadFeed;
use agentd::workloads::{DeltaFeed, WorkloadSettings, Workloads};
use flotilla_wire::limits::MAX_METRICS_FRAME;
use flotilla_wire::msg::MetricsFrame;
use flotilla_wire::workloads::Access;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The agent's metrics interval when nobody watches.
const INTERVAL_MS: u32 = 5000;
/// Containers started at once while setting up.
const START_PARALLEL: usize = 8;

fn podman(env: &[(String, String)], args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run podman");
    assert!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// User plus system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

struct Setup {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    service: std::process::Child,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.service.kill();
        let _ = self.service.wait();
        let _ = Command::new("podman")
            .args(["rm", "--all", "--force", "--time", "0"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Each podman process may have mounted the layer folder privately on top of the last:
        // unmount until none is left, so the temp dir can go.
        for _ in 0..8 {
            let unmounted = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path().join("root/overlay"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !unmounted.is_ok_and(|s| s.success()) {
                break;
            }
        }
    }
}

fn setup(n: usize) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for sub in ["root", "runroot", "tmp", "img/bin"] {
        std::fs::create_dir_all(d.join(sub)).expect("mkdir");
    }
    std::fs::write(
        d.join("containers.conf"),
        format!(
            "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nruntime = \"runc\"\nevents_logger = \"file\"\nevents_logfile_path = \"{0}/events.log\"\ntmp_dir = \"{0}/tmp\"\n",
            d.display()
        ),
    )
    .expect("containers.conf");
    std::fs::write(
        d.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/runroot\"\n",
            d.display()
        ),
    )
    .expect("storage.conf");
    let env = vec![
        (
            "CONTAINERS_CONF".to_string(),
            d.join("containers.conf").display().to_string(),
        ),
        (
            "CONTAINERS_STORAGE_CONF".to_string(),
            d.join("storage.conf").display().to_string(),
        ),
    ];
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static");
    std::fs::copy(busybox, d.join("img/bin/busybox")).expect("copy busybox");
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", d.join("img/bin").join(applet)).expect("link");
    }
    let tar = d.join("bb.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(d.join("img"))
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(ok.success());
    podman(
        &env,
        &["import", tar.to_str().expect("utf-8"), "localhost/bb:1"],
    );
    let sock = d.join("engine.sock");
    let service = Command::new("podman")
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{}", sock.display()))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("podman system service");
    let setup = Setup { dir, env, service };
    let started = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i:04}")).collect();
    for batch in names.chunks(START_PARALLEL) {
        std::thread::scope(|s| {
            for name in batch {
                let env = &setup.env;
                s.spawn(move || {
                    podman(
                        env,
                        &[
                            "run",
                            "-d",
                            "--network",
                            "none",
                            "--name",
                            name,
                            "localhost/bb:1",
                            "sleep",
                            "3600",
                        ],
                    )
                });
            }
        });
    }
    eprintln!("{n} containers started in {:.0?}", started.elapsed());
    for _ in 0..100 {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    setup
}

/// User plus system CPU time of process `pid` so far, from /proc.
fn proc_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent's stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let t = |i: usize| fields[i].parse::<f64>().expect("clock ticks") / ticks;
    Duration::from_secs_f64(t(11) + t(12))
}

/// Resident set size of process `pid`, bytes.
fn proc_rss(pid: u32) -> u64 {
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

/// CPU share of one core and most RSS of one agent run.
struct AgentRun {
    cpu_pct: f64,
    rss_max: u64,
}

/// Runs `agentd` (enrolled in `agent_dir`) for `intervals` after two of warm-up; its CPU and RSS.
fn agent_run(agentd: &Path, agent_dir: &Path, intervals: u32) -> AgentRun {
    let mut agent = Command::new(agentd)
        .arg("--data-dir")
        .arg(agent_dir)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agentd run");
    let pid = agent.id();
    let interval = Duration::from_millis(u64::from(INTERVAL_MS));
    std::thread::sleep(interval * 2);
    let (cpu0, t0) = (proc_cpu(pid), Instant::now());
    let mut rss_max = 0;
    for _ in 0..intervals {
        std::thread::sleep(interval);
        rss_max = rss_max.max(proc_rss(pid));
    }
    let (cpu, wall) = (proc_cpu(pid) - cpu0, t0.elapsed());
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = agent.wait();
    AgentRun {
        cpu_pct: cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        rss_max,
    }
}

/// Whole agents: a release hubd on 127.0.0.1 and each of `agents` (agentd binaries, the release
/// build by default) enrolled with the private engine, run one at a time, `rounds` times in turn,
/// so that a baseline and a candidate meet the same machine load.
fn whole_agent(setup: &Setup, n: usize, intervals: u32, rounds: usize, agents: &[PathBuf]) {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    let d = setup.dir.path();
    let run = |program: &Path, args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run a release binary (build them first)");
        assert!(
            out.status.success(),
            "{} {}: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let hubd = bin.join("hubd");
    let hub_dir = d.join("hub");
    let hub_data = hub_dir.to_str().expect("utf-8");
    run(
        &hubd,
        &["--data-dir", hub_data, "init", "--listen", "127.0.0.1:0"],
        &[],
    );
    let mut hub = Command::new(&hubd)
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
    let mut agent_dirs = Vec::new();
    for (i, agentd) in agents.iter().enumerate() {
        let token_json = run(
            &hubd,
            &[
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
        let agent_dir = d.join(format!("agent-{i}"));
        std::fs::create_dir_all(&agent_dir).expect("agent dir");
        std::fs::write(
            agent_dir.join("agent.toml"),
            format!(
                "containers = \"read\"\nservices = \"off\"\ncontainers_socket = \"{}\"\n",
                d.join("engine.sock").display()
            ),
        )
        .expect("agent.toml");
        let agent_data = agent_dir.to_str().expect("utf-8");
        run(
            agentd,
            &[
                "--data-dir",
                agent_data,
                "enroll",
                "--name",
                &format!("bench-{i}"),
            ],
            &[("FLOTILLA_TOKEN", token.as_str())],
        );
        agent_dirs.push(agent_dir);
    }
    let mut runs: Vec<Vec<AgentRun>> = agents.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, agentd) in agents.iter().enumerate() {
            let r = agent_run(agentd, &agent_dirs[i], intervals);
            println!(
                "round {round}, {}: CPU {:.2} % of one core, RSS {:.1} MB at most",
                agentd.display(),
                r.cpu_pct,
                r.rss_max as f64 / 1e6
            );
            runs[i].push(r);
        }
    }
    let _ = hub.kill();
    let _ = hub.wait();
    println!("containers running:            {n}");
    println!(
        "whole agentd, {rounds} runs of {intervals} intervals of {INTERVAL_MS} ms each, in turn"
    );
    for (agentd, runs) in agents.iter().zip(&mut runs) {
        runs.sort_by(|a, b| a.cpu_pct.total_cmp(&b.cpu_pct));
        let cpu: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.cpu_pct)).collect();
        println!("{}:", agentd.display());
        println!(
            "  CPU:                         {:.2} % of one core median ({} %)",
            runs[runs.len() / 2].cpu_pct,
            cpu.join(", ")
        );
        println!(
            "  RSS:                         {:.1} MB at most",
            runs.iter().map(|r| r.rss_max).max().unwrap_or(0) as f64 / 1e6
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let intervals: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(12);
    let whole = args.next().is_some_and(|a| a == "agentd");
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let mut agents: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if agents.is_empty() {
        agents.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/agentd"));
    }
    let setup = setup(n);
    if whole {
        whole_agent(&setup, n, intervals, rounds, &agents);
        drop(setup);
        return;
    }
    let settings = WorkloadSettings {
        containers: Access::Read,
        engine_sockets: vec![setup.dir.path().join("engine.sock")],
        ..WorkloadSettings::default()
    };
    // One thread, as the cost of the work itself, not of waking idle workers.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rss_before = rss();
    rt.block_on(async {
        let workloads = Arc::new(Workloads::new(settings.clone()));
        let (_interval_tx, interval_rx) = tokio::sync::watch::channel(INTERVAL_MS);
        let (tx, rx) = tokio::sync::watch::channel(None);
        let cancel = tokio_util::sync::CancellationToken::new();
        let poller = tokio::spawn(agentd::workloads::run(
            workloads,
            interval_rx,
            tx,
            cancel.clone(),
        ));
        // The link asks the feed after each sample; here, after each inventory.
        let mut published = rx.clone();
        let mut feed = DeltaFeed::new(rx, settings.policy());
        published
            .wait_for(Option::is_some)
            .await
            .expect("first inventory");
        // The first (full) inventory is set-up: counted apart.
        let mut first_bytes = 0;
        for frame in feed.full(0) {
            let mut buf = bytes::BytesMut::new();
            flotilla_wire::encode(&MetricsFrame::Workloads(frame), &mut buf, MAX_METRICS_FRAME)
                .expect("encode");
            first_bytes += buf.len();
        }
        let (cpu0, t0) = (cpu_time(), Instant::now());
        let mut bytes = 0usize;
        let mut rss_max = rss();
        for _ in 0..intervals {
            published.changed().await.expect("poller runs");
            for frame in feed.delta(0) {
                let mut buf = bytes::BytesMut::new();
                flotilla_wire::encode(&MetricsFrame::Workloads(frame), &mut buf, MAX_METRICS_FRAME)
                    .expect("encode");
                bytes += buf.len();
            }
            rss_max = rss_max.max(rss());
        }
        let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
        cancel.cancel();
        let _ = poller.await;
        println!("containers running:            {n}");
        println!(
            "interval:                      {INTERVAL_MS} ms, {intervals} intervals over {wall:.1?}"
        );
        println!(
            "CPU:                           {:.1} ms per interval, {:.2} % of one core",
            cpu.as_secs_f64() * 1000.0 / f64::from(intervals),
            cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
        );
        println!(
            "RSS:                           {:.1} MB before, {:.1} MB at most while polling",
            rss_before as f64 / 1e6,
            rss_max as f64 / 1e6
        );
        println!("full inventory (first delta):  {first_bytes} bytes");
        println!(
            "metrics frames per interval:   {} bytes ({} bytes per container)",
            bytes / intervals as usize,
            bytes / intervals as usize / n.max(1)
        );
    });
    drop(setup);
}
