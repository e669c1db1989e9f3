//! Transfer benchmark: a local hub and two local agents (the release `hubd`, `agentd` and `flotilla`
//! binaries next to this one), a random file of `--size-mib` MiB (1 GiB by default) copied from one
//! agent to the other through the hub with `flotilla cp`, once alone and then `--concurrent` copies at
//! once (one operator identity each). Prints MB/s and the hub's peak RSS per phase.
//!
//! Run: `cargo build --release --workspace && target/release/transfer_bench`. Files live under
//! `--dir` (default /dev/shm, so the page cache is not the bottleneck), removed afterwards unless
//! `--keep` (the daemons' logs are there; `RUST_LOG` reaches them).

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the hub gets to write its address, and agents to show up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes written per call when making the test file.
const WRITE_CHUNK: usize = 4 * 1024 * 1024;

struct Args {
    keep: bool,
    size_mib: u64,
    concurrent: usize,
    dir: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        keep: false,
        size_mib: 1024,
        concurrent: 4,
        dir: if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--size-mib" => args.size_mib = value()?.parse().context("--size-mib")?,
            "--concurrent" => args.concurrent = value()?.parse().context("--concurrent")?,
            "--dir" => args.dir = PathBuf::from(value()?),
            "--keep" => args.keep = true,
            "-h" | "--help" => {
                println!("transfer_bench [--size-mib N] [--concurrent N] [--dir PATH] [--keep]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} not found: build the workspace first (cargo build --release --workspace)",
            p.display()
        );
    }
    Ok(p)
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("start {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Peak resident set of `pid` since the last reset, in bytes.
fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM in /proc status")?;
    Ok(kib * 1024)
}

/// CPU seconds (user + system) `pid` has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    #[cfg(unix)]
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // Unreachable: no /proc off Unix, so there are no ticks to convert.
    #[cfg(not(unix))]
    let hz = 100.0;
    ticks / hz
}

/// CPU seconds of the hub and both agents.
fn cpu_of(pids: &[u32; 3]) -> [f64; 3] {
    pids.map(cpu_secs)
}

/// `hub 1.2 s, source 0.8 s, destination 0.9 s of CPU per GB`.
fn cpu_line(before: [f64; 3], after: [f64; 3], gb: f64) -> String {
    let per = |i: usize| (after[i] - before[i]) / gb;
    format!(
        "CPU per GB: hub {:.2} s, source agent {:.2} s, destination agent {:.2} s",
        per(0),
        per(1),
        per(2)
    )
}

/// Starts a new peak for `pid` (Linux: writing 5 to clear_refs resets VmHWM to the current RSS).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn random_file(path: &Path, size: u64) -> anyhow::Result<String> {
    use std::io::Write;
    let mut f =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; WRITE_CHUNK];
    let mut left = size;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = usize::try_from(left.min(WRITE_CHUNK as u64))?;
        f.write_all(&buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(hasher.finalize().to_hex().to_string())
}

fn hash_file(path: &Path) -> anyhow::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Children killed when the bench ends, even on error.
struct Fleet(Vec<Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SAFETY: signalling a child we spawned and still own.
            #[cfg(unix)]
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM)
            };
            // No SIGTERM on Windows: the daemons are killed without draining.
            #[cfg(not(unix))]
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !ok() {
        if Instant::now() > deadline {
            bail!("{what} within {} s", START_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn token(hubd: &Path, hub_dir: &Path, role: &str, uses: usize) -> anyhow::Result<String> {
    let out = run(
        Command::new(hubd)
            .arg("--data-dir")
            .arg(hub_dir)
            .args([
                "token", "create", "--role", role, "--ttl", "10m", "--json", "--uses",
            ])
            .arg(uses.to_string()),
        "hubd token create",
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("token JSON")?;
    Ok(v["token"].as_str().context("no token")?.to_owned())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let (hubd, agentd, flotilla) = (binary("hubd")?, binary("agentd")?, binary("flotilla")?);
    let root = args
        .dir
        .join(format!("flotilla-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let result = bench(&args, &root, &hubd, &agentd, &flotilla);
    if args.keep {
        eprintln!("logs and files kept in {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

fn bench(
    args: &Args,
    root: &Path,
    hubd: &Path,
    agentd: &Path,
    flotilla: &Path,
) -> anyhow::Result<()> {
    let hub_dir = root.join("hub");
    let size = args.size_mib * 1024 * 1024;
    run(
        Command::new(hubd).arg("--data-dir").arg(&hub_dir).args([
            "init",
            "--listen",
            "127.0.0.1:0",
            "--json",
        ]),
        "hubd init",
    )?;
    let log = |name: &str| std::fs::File::create(root.join(name));
    let hub = Command::new(hubd)
        .arg("--data-dir")
        .arg(&hub_dir)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log("hub.log")?)
        .spawn()
        .context("start hubd")?;
    let hub_pid = hub.id();
    let mut pids = [hub_pid, 0, 0];
    let mut fleet = Fleet(vec![hub]);
    wait_until("the hub listens", || hub_dir.join("hub.addr").exists())?;

    let agent_token = token(hubd, &hub_dir, "agent", 2)?;
    for name in ["src", "dst"] {
        let dir = root.join(name);
        run(
            Command::new(agentd)
                .arg("--data-dir")
                .arg(&dir)
                .args(["enroll", "--name", name])
                .env("FLOTILLA_TOKEN", &agent_token),
            "agentd enroll",
        )?;
        std::fs::create_dir_all(dir.join("shared"))?;
    }
    eprintln!("writing a {} MiB random file", args.size_mib);
    let digest = random_file(&root.join("src/shared/big.bin"), size)?;
    for (i, name) in ["src", "dst"].into_iter().enumerate() {
        let child = Command::new(agentd)
            .arg("--data-dir")
            .arg(root.join(name))
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log(&format!("{name}.log"))?)
            .spawn()
            .context("start agentd")?;
        pids[i + 1] = child.id();
        fleet.0.push(child);
    }
    // One operator identity per concurrent copy: the hub keeps one connection per identity.
    let op_token = token(hubd, &hub_dir, "operator", args.concurrent.max(1))?;
    let logins: Vec<PathBuf> = (0..args.concurrent.max(1))
        .map(|i| -> anyhow::Result<PathBuf> {
            let dir = root.join(format!("op-{i}"));
            run(
                Command::new(flotilla)
                    .arg("--login-dir")
                    .arg(&dir)
                    .args(["login", "--name", &format!("bench-{i}"), "--json"])
                    .env("FLOTILLA_TOKEN", &op_token),
                "flotilla login",
            )?;
            Ok(dir)
        })
        .collect::<Result<_, _>>()?;
    let ls = |agent: &str| {
        Command::new(flotilla)
            .arg("--login-dir")
            .arg(&logins[0])
            .args(["ls", agent, "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    wait_until("both agents list their folders", || ls("src") && ls("dst"))?;

    let cp = |login: &Path, dst: &str| {
        Command::new(flotilla)
            .arg("--login-dir")
            .arg(login)
            .args(["cp", "src:big.bin", dst, "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    };
    // Returns when `flotilla cp` exited: the bench's own BLAKE3 check of the copy comes after and is
    // not part of the transfer's time.
    let check = |child: Child, dst: &str| -> anyhow::Result<Instant> {
        let out = child.wait_with_output()?;
        let exited = Instant::now();
        if !out.status.success() {
            bail!(
                "cp to {dst} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let got = hash_file(&root.join("dst/shared").join(dst.trim_start_matches("dst:")))?;
        if got != digest {
            bail!("{dst}: BLAKE3 {got} differs from the source {digest}");
        }
        Ok(exited)
    };

    let mb = size as f64 / 1e6;
    println!(
        "file: {} MiB ({mb:.0} MB), blake3 {}",
        args.size_mib,
        &digest[..16]
    );

    reset_peak(hub_pid);
    let cpu = cpu_of(&pids);
    let started = Instant::now();
    let exited = check(cp(&logins[0], "dst:one.bin")?, "dst:one.bin")?;
    let secs = (exited - started).as_secs_f64();
    println!(
        "1 transfer:  {:.2} s, {:.0} MB/s, hub peak RSS {:.1} MB",
        secs,
        mb / secs,
        peak_rss(hub_pid)? as f64 / 1e6
    );
    println!("  {}", cpu_line(cpu, cpu_of(&pids), mb / 1000.0));
    std::fs::remove_file(root.join("dst/shared/one.bin"))?;

    if args.concurrent > 1 {
        reset_peak(hub_pid);
        let cpu = cpu_of(&pids);
        let started = Instant::now();
        let children = logins
            .iter()
            .enumerate()
            .map(|(i, login)| {
                Ok((
                    cp(login, &format!("dst:c{i}.bin"))?,
                    format!("dst:c{i}.bin"),
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Each copy is waited for on its own thread, so the finishing times show how evenly the
        // transfers shared the link.
        let finished: Vec<f64> = std::thread::scope(|scope| {
            let handles: Vec<_> = children
                .into_iter()
                .map(|(child, dst)| {
                    scope.spawn(move || check(child, &dst).map(|t| (t - started).as_secs_f64()))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| anyhow::anyhow!("waiter panicked"))?)
                .collect::<anyhow::Result<Vec<f64>>>()
        })?;
        let secs = finished.iter().copied().fold(0.0, f64::max);
        let n = args.concurrent as f64;
        println!(
            "{} transfers: {:.2} s, {:.0} MB/s together ({:.0} MB/s each), hub peak RSS {:.1} MB",
            args.concurrent,
            secs,
            n * mb / secs,
            mb / secs,
            peak_rss(hub_pid)? as f64 / 1e6
        );
        println!("  {}", cpu_line(cpu, cpu_of(&pids), n * mb / 1000.0));
        let times: Vec<String> = finished.iter().map(|t| format!("{t:.2} s")).collect();
        println!("  each finished after: {}", times.join(", "));
    }
    drop(fleet);
    Ok(())
}
