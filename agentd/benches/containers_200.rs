//! What reporting N running containers costs the agent: a private Podman (its own storage and
//! configuration under a temp dir, the API on a unix socket) runs N busybox containers, then the
//! agent's workload poller and one connection's differ run as in agentd (inventory, inspect on
//! change, one-shot stats, deltas encoded as metrics frames) at the agent's 5 s interval. Prints
//! the CPU this process used per interval and as a share of one core, its RSS before and during,
//! and the bytes of metrics frames per interval. Figures in docs/benchmarks.md.
//!
//! `cargo bench -p flotilla-agentd --bench containers_200 [-- CONTAINERS [INTERVALS]]`
//! (default 200 containers, 12 intervals = 1 minute). Needs podman, runc and busybox-static, and
//! root (rootful Podman); the containers run with `--network none` and are removed at the end.

use agentd::link::WorkloadFeed;
use agentd::workloads::{DeltaFeed, WorkloadSettings, Workloads};
use flotilla_wire::limits::MAX_METRICS_FRAME;
use flotilla_wire::msg::MetricsFrame;
use flotilla_wire::workloads::Access;
use std::path::Path;
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
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path().join("root/overlay"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
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

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let intervals: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(12);
    let setup = setup(n);
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
