//! Exec benchmark over loopback with the real binaries as separate processes: a `hubd`, an `agentd
//! run --exec any`, and the `flotilla` CLI. Prints one line per figure.
//!
//! ```sh
//! cargo build --release --workspace
//! cargo bench -p flotilla-hubd --bench exec_bench -- [--runs 200] [--bytes 1G] [--fanout 1000,5000]
//! ```
//!
//! Figures:
//! - `flotilla exec one -- true`, a new `flotilla` process per run (dial, mTLS handshake, exec,
//!   exit): wall time p50 / p99.
//! - the same exec over one existing operator connection (what a console or script holding a
//!   connection pays): p50 / p99.
//! - a new `flotilla` process per run again, through a running `flotilla mux` (the analogue of
//!   `ssh -S SOCK host true` over a ControlMaster): p50 / p99.
//! - `flotilla exec one -- head -c 1G /dev/zero` into /dev/null: throughput, and peak RSS of the
//!   hub, the agent and the CLI meanwhile.
//! - fan-out: `true` on N agents of an `agentd swarm --exec any` (one real process each): time
//!   until every exit code is in, through the CLI.
//!
//! Every wait is bounded; everything runs on 127.0.0.1 and is stopped by pid at the end.

use flotilla::client::{Client, Login};
use flotilla_wire::exec::{ExecCommand, ExecRequest};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest any single step may take before the bench gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

struct Opts {
    runs: usize,
    bytes: u64,
    fanout: Vec<usize>,
}

fn parse_bytes(s: &str) -> u64 {
    let (num, mult) = match s.chars().last() {
        Some('G') => (&s[..s.len() - 1], 1u64 << 30),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('K') => (&s[..s.len() - 1], 1 << 10),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .expect("--bytes: a number with K, M or G")
        * mult
}

fn opts() -> Opts {
    let mut o = Opts {
        runs: 200,
        bytes: 1 << 30,
        fanout: vec![1000],
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => o.runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--bytes" => o.bytes = parse_bytes(it.next().expect("--bytes SIZE")),
            "--fanout" => {
                o.fanout = it
                    .next()
                    .expect("--fanout N,M")
                    .split(',')
                    .filter(|s| !s.is_empty() && *s != "0")
                    .map(|s| s.parse().expect("fan-out size"))
                    .collect()
            }
            _ => {} // cargo bench passes --bench
        }
    }
    o
}

fn bin(name: &str) -> PathBuf {
    let hubd = PathBuf::from(env!("CARGO_BIN_EXE_hubd"));
    let p = hubd.with_file_name(name);
    assert!(
        p.exists(),
        "{} missing: run `cargo build --release --workspace` first",
        p.display()
    );
    p
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Percentile of sorted durations, in milliseconds.
fn pct(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

/// Child processes stopped with SIGTERM (then killed) at the end.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &self.0 {
            // SAFETY: signalling a child process we spawned and still own.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        for c in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn token(hub_dir: &Path, uses: usize) -> String {
    let out = run_ok(
        Command::new(bin("hubd"))
            .arg("--data-dir")
            .arg(hub_dir)
            .args([
                "token", "create", "--role", "agent", "--ttl", "1h", "--json", "--uses",
            ])
            .arg(uses.to_string()),
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("token json");
    v["token"].as_str().expect("token").to_string()
}

/// `flotilla --login-dir LOGIN` with the bench's own runtime dir, so the mux socket (and any
/// mux of the user's) stays apart.
fn flotilla(login: &Path, run_dir: &Path) -> Command {
    let mut cmd = Command::new(bin("flotilla"));
    cmd.arg("--login-dir")
        .arg(login)
        .env("XDG_RUNTIME_DIR", run_dir)
        .env_remove("FLOTILLA_MUX_SOCKET")
        .env_remove("FLOTILLA_LOG");
    cmd
}

/// Runs `flotilla [global…] exec args…` as a process; returns its wall time, exit status and peak
/// RSS (KiB).
// Reaped by wait4 (for its rusage), which clippy does not see.
#[allow(clippy::zombie_processes)]
fn cli_exec(login: &Path, run_dir: &Path, global: &[&str], args: &[&str]) -> (Duration, i32, u64) {
    let started = Instant::now();
    let child = flotilla(login, run_dir)
        .args(global)
        .arg("exec")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn flotilla");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child; status and usage point to live locals.
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(rc, child.id() as i32, "wait4");
    let took = started.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (took, code, usage.ru_maxrss as u64)
}

fn exec_req(selector: &str, argv: &[&str]) -> ExecRequest {
    ExecRequest {
        selector: selector.into(),
        command: ExecCommand::Argv {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            shell: false,
        },
        timeout_ms: 0,
        batch: 0,
    }
}

fn main() {
    let o = opts();
    flotilla_certs::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub_dir = tmp.path().join("hub");
    let mut procs = Procs(Vec::new());
    run_ok(
        Command::new(bin("hubd"))
            .arg("--data-dir")
            .arg(&hub_dir)
            .args(["init", "--listen", "127.0.0.1:0", "--json"]),
    );
    let hub = Command::new(bin("hubd"))
        .arg("--data-dir")
        .arg(&hub_dir)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("hub.log")).expect("log"))
        .spawn()
        .expect("hubd");
    let hub_pid = hub.id();
    procs.0.push(hub);
    wait_for_file(&hub_dir.join("hub.addr"));
    let agent_dir = tmp.path().join("one");
    run_ok(
        Command::new(bin("agentd"))
            .arg("--data-dir")
            .arg(&agent_dir)
            .args(["enroll", "--name", "one"])
            .env("FLOTILLA_TOKEN", token(&hub_dir, 1)),
    );
    let agent = Command::new(bin("agentd"))
        .arg("--data-dir")
        .arg(&agent_dir)
        .args(["run", "--exec", "any"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("agent.log")).expect("log"))
        .spawn()
        .expect("agentd");
    let agent_pid = agent.id();
    procs.0.push(agent);
    let login = hub_dir.join("admin");
    let run_dir = tmp.path().join("run");
    std::fs::create_dir(&run_dir).expect("runtime dir");
    let client = rt.block_on(async {
        let client = Client::connect(&Login::load(&login, None).expect("login"))
            .await
            .expect("connect");
        // Wait for the agent: an exec that succeeds.
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let (mut out, mut err) = (std::io::sink(), std::io::sink());
            let status = flotilla::exec::run_exec(
                &client,
                &exec_req("one", &["true"]),
                flotilla::exec::RenderOptions::default(),
                &mut out,
                &mut err,
                flotilla::exec::Interrupts::Never,
            )
            .await
            .expect("exec");
            if status == 0 {
                break client;
            }
            assert!(Instant::now() < deadline, "agent never came online");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    println!(
        "machine: {} cores; runs {}; release binaries in {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        o.runs,
        bin("hubd")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );

    // 1. A new flotilla process per exec, dialling the hub.
    let mut times = Vec::with_capacity(o.runs);
    for _ in 0..o.runs {
        let (took, code, _) = cli_exec(&login, &run_dir, &["--no-mux"], &["one", "--", "true"]);
        assert_eq!(code, 0, "flotilla exec one -- true failed");
        times.push(took);
    }
    times.sort();
    println!(
        "exec one -- true, new flotilla process each: p50 {:.2} ms, p99 {:.2} ms ({} runs)",
        pct(&times, 50),
        pct(&times, 99),
        o.runs
    );

    // 2. Over one existing connection.
    let mut times = Vec::with_capacity(o.runs);
    rt.block_on(async {
        for _ in 0..o.runs {
            let (mut out, mut err) = (std::io::sink(), std::io::sink());
            let t0 = Instant::now();
            let status = flotilla::exec::run_exec(
                &client,
                &exec_req("one", &["true"]),
                flotilla::exec::RenderOptions::default(),
                &mut out,
                &mut err,
                flotilla::exec::Interrupts::Never,
            )
            .await
            .expect("exec");
            times.push(t0.elapsed());
            assert_eq!(status, 0);
        }
    });
    times.sort();
    println!(
        "exec one -- true, existing connection: p50 {:.2} ms, p99 {:.2} ms ({} runs)",
        pct(&times, 50),
        pct(&times, 99),
        o.runs
    );

    // 3. A new flotilla process per exec, through a running `flotilla mux`.
    let mut mux = flotilla(&login, &run_dir)
        .arg("mux")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flotilla mux");
    let mux_err = mux.stderr.take().expect("stderr");
    let mux = Procs(vec![mux]);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // Reads the mux's stderr to its end (so the pipe never fills) and says when it listens.
    std::thread::spawn(move || {
        for line in BufReader::new(mux_err).lines() {
            let Ok(line) = line else { return };
            if line.contains("listening on") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(STEP_TIMEOUT)
        .expect("flotilla mux never listened");
    let used = flotilla(&login, &run_dir)
        .args(["exec", "one", "--", "true"])
        .env("FLOTILLA_LOG", "flotilla=debug")
        .stdin(Stdio::null())
        .output()
        .expect("flotilla exec");
    assert!(
        used.status.success() && String::from_utf8_lossy(&used.stderr).contains("using the mux"),
        "exec did not go through the mux: {}",
        String::from_utf8_lossy(&used.stderr)
    );
    let mut times = Vec::with_capacity(o.runs);
    for _ in 0..o.runs {
        let (took, code, _) = cli_exec(&login, &run_dir, &[], &["one", "--", "true"]);
        assert_eq!(code, 0, "flotilla exec one -- true through the mux failed");
        times.push(took);
    }
    times.sort();
    println!(
        "exec one -- true, new flotilla process each, through flotilla mux: p50 {:.2} ms, p99 {:.2} ms ({} runs)",
        pct(&times, 50),
        pct(&times, 99),
        o.runs
    );
    // Stop the mux (SIGTERM, then wait): the figures below are for direct connections.
    drop(mux);

    // 4. Throughput of one agent's output into the CLI.
    reset_peak(hub_pid);
    reset_peak(agent_pid);
    let hub_before = status_kib(hub_pid, "VmRSS:");
    let size = o.bytes.to_string();
    let (took, code, cli_peak) = cli_exec(
        &login,
        &run_dir,
        &["--no-mux"],
        &["one", "--", "head", "-c", &size, "/dev/zero"],
    );
    assert_eq!(code, 0, "flood exec failed");
    println!(
        "exec one -- head -c {} /dev/zero > /dev/null: {:.2} s, {:.0} MB/s; peak RSS hub {} MiB (was {} MiB), agentd {} MiB, flotilla {} MiB",
        o.bytes,
        took.as_secs_f64(),
        o.bytes as f64 / took.as_secs_f64() / 1e6,
        status_kib(hub_pid, "VmHWM:") / 1024,
        hub_before / 1024,
        status_kib(agent_pid, "VmHWM:") / 1024,
        cli_peak / 1024
    );

    // 5. Fan-out on swarms.
    let mut swarms = Procs(Vec::new());
    for n in o.fanout.iter().copied() {
        let swarm_dir = tmp.path().join(format!("swarm-{n}"));
        let mut swarm = Command::new(bin("agentd"))
            .arg("--data-dir")
            .arg(&swarm_dir)
            .args([
                "swarm",
                "--exec",
                "any",
                "--prefix",
                &format!("s{n}"),
                "--count",
            ])
            .arg(n.to_string())
            .env("FLOTILLA_TOKEN", token(&hub_dir, n))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(tmp.path().join(format!("swarm-{n}.log"))).expect("log"))
            .spawn()
            .expect("swarm");
        let stdout = swarm.stdout.take().expect("stdout");
        swarms.0.push(swarm);
        // Keep reading the swarm's stdout to its end (it reports reconnects there), telling us
        // when every agent is connected.
        let (up_tx, up_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.contains("all_connected") {
                    let _ = up_tx.send(());
                }
            }
        });
        up_rx
            .recv_timeout(STEP_TIMEOUT)
            .unwrap_or_else(|_| panic!("swarm of {n} never connected"));
        let selector = format!("s{n}-*");
        let (took, code, _) = cli_exec(&login, &run_dir, &["--no-mux"], &[&selector, "--", "true"]);
        println!(
            "fan-out: exec {selector} -- true on {n} agents (real processes): {:.2} s until every exit code is in (exit {code}); hub RSS {} MiB",
            took.as_secs_f64(),
            status_kib(hub_pid, "VmRSS:") / 1024
        );
        let mut times = Vec::new();
        rt.block_on(async {
            for _ in 0..3 {
                let (mut out, mut err) = (std::io::sink(), std::io::sink());
                let t0 = Instant::now();
                let _ = flotilla::exec::run_exec(
                    &client,
                    &exec_req(&selector, &["true"]),
                    flotilla::exec::RenderOptions::default(),
                    &mut out,
                    &mut err,
                    flotilla::exec::Interrupts::Never,
                )
                .await;
                times.push(t0.elapsed());
            }
        });
        times.sort();
        println!(
            "fan-out over an existing connection, {n} agents: best {:.2} s, median {:.2} s (3 runs)",
            times[0].as_secs_f64(),
            times[1].as_secs_f64()
        );
    }
    drop(swarms);
    rt.block_on(client.close());
    drop(procs);
}
