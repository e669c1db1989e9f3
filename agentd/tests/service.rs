//! `agentd install`, `status`, `uninstall` and `config check` as a sysadmin runs them, into a
//! temporary root: the files written, the exit codes, and no service manager touched.

use flotilla_certs::{Ca, IDENTITY_STEM, Identity};
use flotilla_wire::{IdentityId, Role};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generous for a loaded 2-core CI machine; every wait below ends as soon as its event happens.
const DEADLINE: Duration = Duration::from_secs(10);

fn agentd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentd"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOTILLA_") || k == "NOTIFY_SOCKET" {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", "/home/tester")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run agentd")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

/// An enrolled agent directory without a hub: a CA minted here signs the identity.
fn pre_enrol(data_dir: &Path, hub: &str) {
    flotilla_certs::install_crypto_provider();
    let ca_dir = tempfile::tempdir().expect("ca dir");
    let ca = Ca::create(ca_dir.path()).expect("ca");
    let id = IdentityId::from_random(Role::Agent, flotilla_certs::random_bytes());
    let cert = ca.issue_local_identity(&id, Role::Agent).expect("cert");
    std::fs::create_dir_all(data_dir).expect("mkdir");
    Identity {
        key_der: cert.key_der,
        cert_der: cert.cert_der,
        ca_der: ca.cert_der().to_vec(),
    }
    .save(data_dir, IDENTITY_STEM)
    .expect("save");
    Identity::save_hubs(data_dir, &[hub.to_string()]).expect("hubs");
}

/// Waits until `ok` holds, looking again each time something in `dir` changes (the running
/// agent writes its status file there), for at most [`DEADLINE`]. The watch is set up before the
/// first look, so a change between the two is not missed.
fn wait_for_change(dir: &Path, what: &str, mut ok: impl FnMut() -> bool) {
    use notify::Watcher;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .expect("file watcher");
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .expect("watch");
    let start = Instant::now();
    while !ok() {
        let left = DEADLINE.saturating_sub(start.elapsed());
        assert!(
            rx.recv_timeout(left).is_ok(),
            "timed out waiting for {what}"
        );
    }
}

fn status_json(root: &Path) -> (i32, Value) {
    let out = run(agentd()
        .args(["status", "--system", "--root"])
        .arg(root)
        .arg("--json"));
    (code(&out), json(&out))
}

/// Sends SIGTERM and waits for the exit, at most [`DEADLINE`]: a thread blocks in `wait` and
/// hands the status over a channel, so the wait ends when the process does.
fn terminate(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let ok = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(ok.success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait().expect("wait"));
    });
    rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        panic!("agentd did not exit after SIGTERM")
    })
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn install_status_uninstall_round_trip_in_a_temp_root() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    let data = r.join("var/lib/flotilla/agent");
    // Nothing listens on the discard port: the agent runs but stays disconnected.
    pre_enrol(&data, "127.0.0.1:9");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_agentd"));
    // The system has every shell's completion folder and man.
    let shell_files = [
        "usr/share/bash-completion/completions/agentd",
        "usr/share/zsh/vendor-completions/_agentd",
        "usr/share/fish/vendor_completions.d/agentd.fish",
        "usr/share/man/man1/agentd.1",
        "usr/share/man/man1/agentd-install.1",
    ]
    .map(|f| r.join(f));
    for f in &shell_files {
        std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
    }

    let out = run(agentd()
        .args(["install", "--system", "--json", "--root"])
        .arg(r)
        .arg("--binary")
        .arg(&bin));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&out);
    let unit_path = r.join("etc/systemd/system/flotilla-agent.service");
    let written: Vec<&str> = report["written"]
        .as_array()
        .expect("written")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        written.contains(&unit_path.to_str().expect("utf8")),
        "{report:#}"
    );
    for f in &shell_files {
        assert!(
            written.contains(&f.to_str().expect("utf8")) && f.is_file(),
            "{} installed and reported: {report:#}",
            f.display()
        );
    }
    let bash = std::fs::read_to_string(&shell_files[0]).expect("bash");
    assert!(bash.contains("enrol") && bash.contains("install"), "{bash}");
    assert!(
        report["pending"]
            .as_array()
            .expect("pending")
            .contains(&Value::from("systemctl enable flotilla-agent")),
        "{report:#}"
    );
    assert!(
        report["pending_reason"]
            .as_str()
            .expect("reason")
            .contains("--root")
    );

    let unit = std::fs::read_to_string(&unit_path).expect("unit");
    assert_eq!(
        unit_value(&unit, "ExecStart"),
        [format!(
            "{} --config /etc/flotilla/agent.toml --data-dir /var/lib/flotilla/agent run",
            bin.display()
        )
        .as_str()]
    );
    for (k, v) in [
        ("User", "flotilla"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/flotilla/agent"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(unit_value(&unit, k), [v], "{k} in\n{unit}");
    }
    let config = r.join("etc/flotilla/agent.toml");
    #[cfg(unix)]
    assert_eq!(mode(&config), 0o640, "the config may hold a token");
    #[cfg(unix)]
    assert_eq!(mode(&data), 0o700);
    assert!(r.join("etc/sysusers.d/flotilla.conf").is_file());
    verify_unit(&unit_path);

    let (c, s) = status_json(r);
    assert_eq!(c, 3, "installed, not running: {s:#}");
    assert_eq!(s["installed"], true);
    assert_eq!(s["enrolled"], true);
    assert_eq!(s["running"], false);

    // Run it the way the unit would (with the paths under the root).
    let child = agentd()
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn agentd run");
    let pid = child.id();
    wait_for_change(&data, "a status file from the running agent", || {
        status_json(r).1["link"]["pid"] == pid
    });
    let (c, s) = status_json(r);
    assert_eq!(c, 1, "running but not connected: {s:#}");
    assert_eq!(s["running"], true);
    assert_eq!(s["connected"], false);
    assert_eq!(s["link"]["state"], "disconnected");
    assert_eq!(s["link"]["hubs"][0], "127.0.0.1:9");

    let status = terminate(child);
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    let (c, s) = status_json(r);
    assert_eq!(s["link"]["state"], "stopped", "{s:#}");
    assert_eq!(c, 3);

    let out = run(agentd()
        .args(["uninstall", "--system", "--json", "--root"])
        .arg(r));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!unit_path.exists());
    assert!(
        data.join("identity.pem").exists(),
        "keys are kept without --purge"
    );
    assert_eq!(status_json(r).0, 4, "not installed, not running");

    let out = run(agentd()
        .args(["uninstall", "--system", "--purge", "--json", "--root"])
        .arg(r));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !data.exists() && !config.exists(),
        "purge removes keys, data and config"
    );
    for f in &shell_files {
        assert!(!f.exists(), "{} removed", f.display());
    }
}

#[test]
fn completions_name_the_subcommands() {
    let out = run(agentd().args(["completions", "bash"]));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let bash = String::from_utf8(out.stdout).expect("utf8");
    for sub in ["enrol", "run", "install", "status", "completions", "man"] {
        assert!(bash.contains(sub), "{sub} missing from\n{bash}");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let out = run(agentd().arg("man").arg(dir.path()));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(dir.path().join("agentd-run.1")).expect("page");
    assert!(page.contains(".TH agentd-run 1"), "{page}");
}

/// `systemd-analyze verify` where the machine has it; CI without systemd skips with a note.
fn verify_unit(unit: &Path) {
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
    else {
        eprintln!(
            "note: systemd-analyze not installed; unit syntax checked by the assertions only"
        );
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 even for unknown keys and bad values: any line it prints is a problem, except
    // those about this machine (no running systemd in a container).
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("Failed to connect") && !l.contains("System has not been booted"))
        .collect();
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        problems.is_empty(),
        "systemd-analyze verify {}:\n{stderr}",
        unit.display()
    );
}

#[test]
fn user_install_writes_a_user_unit() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    pre_enrol(
        &r.join("home/tester/.local/share/flotilla/agent"),
        "127.0.0.1:9",
    );
    let out = run(agentd()
        .args(["install", "--user", "--json", "--root"])
        .arg(r)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_agentd")));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let unit =
        std::fs::read_to_string(r.join("home/tester/.config/systemd/user/flotilla-agent.service"))
            .expect("user unit");
    assert_eq!(unit_value(&unit, "WantedBy"), ["default.target"]);
    assert!(unit_value(&unit, "User").is_empty());
    assert!(r.join("home/tester/.config/flotilla/agent.toml").is_file());
    assert!(
        json(&out)["pending"]
            .as_array()
            .expect("pending")
            .contains(&Value::from("systemctl --user enable flotilla-agent"))
    );
}

#[test]
fn install_refuses_an_unenrolled_machine_without_a_token() {
    let root = tempfile::tempdir().expect("root");
    let out = run(agentd()
        .args(["install", "--system", "--root"])
        .arg(root.path())
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_agentd")));
    assert_eq!(code(&out), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not enrolled: pass --token"), "{stderr}");
    assert!(
        !root
            .path()
            .join("etc/systemd/system/flotilla-agent.service")
            .exists(),
        "nothing is installed"
    );
    let out = run(agentd()
        .args(["install", "--system", "--root"])
        .arg(root.path())
        .args(["--token", "not-a-token", "--binary"])
        .arg(env!("CARGO_BIN_EXE_agentd")));
    assert_eq!(code(&out), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a Flotilla join token"), "{stderr}");
}

#[test]
fn config_check_layers_file_env_and_flags_and_hides_the_token() {
    let dir = tempfile::tempdir().expect("dir");
    let secret = "flt1_config-check-secret-value";
    std::fs::write(
        dir.path().join("agent.toml"),
        format!("metrics_interval_ms = 2000\ntoken = \"{secret}\"\n"),
    )
    .expect("write");
    let check = |env: &[(&str, &str)], flags: &[&str]| {
        let mut cmd = agentd();
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(["config", "check", "--json"]);
        cmd.args(flags);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(secret), "the token leaked: {all}");
        (code(&out), json(&out), all)
    };
    let (c, v, _) = check(&[], &[]);
    assert_eq!(c, 0);
    assert_eq!(v["config"]["metrics_interval_ms"], 2000);
    assert_eq!(v["config"]["token"], "***");
    assert!(
        v["origins"]["token"]
            .as_str()
            .expect("origin")
            .starts_with("file ")
    );

    let (_, v, _) = check(&[("FLOTILLA_AGENT_METRICS_INTERVAL_MS", "3000")], &[]);
    assert_eq!(v["config"]["metrics_interval_ms"], 3000, "env beats file");
    assert_eq!(
        v["origins"]["metrics_interval_ms"],
        "env FLOTILLA_AGENT_METRICS_INTERVAL_MS"
    );
    let (_, v, _) = check(
        &[("FLOTILLA_AGENT_METRICS_INTERVAL_MS", "3000")],
        &["--metrics-interval-ms", "4000"],
    );
    assert_eq!(v["config"]["metrics_interval_ms"], 4000, "flag beats env");
    assert_eq!(
        v["origins"]["metrics_interval_ms"],
        "flag --metrics-interval-ms"
    );

    let (c, v, all) = check(&[("FLOTILLA_AGENT_METRICS_INTERVAL_MS", "10")], &[]);
    assert_eq!(c, 2, "{all}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["key"], "metrics_interval_ms");
    let (c, v, all) = check(&[("FLOTILLA_AGENT_METRICS_INTERVL_MS", "5000")], &[]);
    assert_eq!(c, 2, "{all}");
    assert!(all.contains("FLOTILLA_AGENT_METRICS_INTERVL_MS"), "{all}");
    assert_eq!(v["error"]["key"], "metrics_intervl_ms");

    std::fs::write(
        dir.path().join("agent.toml"),
        "metrics_interval_ms = \"fast\"\n",
    )
    .expect("write");
    let out = run(agentd()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["config", "check"]));
    assert_eq!(code(&out), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("metrics_interval_ms"), "{stderr}");
}

#[test]
fn enrol_at_start_leaves_the_token_to_the_service() {
    flotilla_certs::install_crypto_provider();
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    let ca_dir = tempfile::tempdir().expect("ca");
    let ca = Ca::create(ca_dir.path()).expect("ca");
    let token =
        flotilla_certs::JoinToken::generate(vec!["127.0.0.1:9".into()], ca.fingerprint()).encode();
    let out = run(agentd()
        .args([
            "install",
            "--system",
            "--enrol-at-start",
            "--json",
            "--root",
        ])
        .arg(r)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_agentd"))
        .env("FLOTILLA_TOKEN", &token));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(&token), "the token is not printed: {all}");
    assert!(
        json(&out)["notes"]
            .to_string()
            .contains("enrols at its first start")
    );
    let config = r.join("etc/flotilla/agent.toml");
    #[cfg(unix)]
    assert_eq!(mode(&config), 0o640);
    assert!(
        std::fs::read_to_string(&config)
            .expect("config")
            .contains(&token)
    );
    assert!(
        !r.join("var/lib/flotilla/agent/identity.pem").exists(),
        "not enrolled yet"
    );
    assert!(
        r.join("etc/systemd/system/flotilla-agent.service")
            .is_file()
    );
    let (c, s) = status_json(r);
    assert_eq!((c, &s["enrolled"]), (3, &Value::from(false)), "{s:#}");

    let out = run(agentd()
        .args(["install", "--system", "--enrol-at-start", "--root"])
        .arg(r)
        .args(["--token", "garbage", "--binary"])
        .arg(env!("CARGO_BIN_EXE_agentd")));
    assert_eq!(
        code(&out),
        2,
        "a token that cannot work is refused at install"
    );
}

/// `run --service` is for the Windows Service Control Manager: elsewhere it refuses, naming why,
/// with the usage exit code and without touching the data directory.
#[test]
fn service_mode_is_refused_off_windows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("agent");
    let out = run(agentd()
        .args(["--data-dir"])
        .arg(&data)
        .args(["run", "--service"]));
    assert_eq!(code(&out), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--service is for the Windows Service Control Manager"),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing was created");
}
