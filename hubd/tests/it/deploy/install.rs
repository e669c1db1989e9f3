//! `hubd install`, `status` and `uninstall` into a temporary root; the installed hub run as its
//! unit would, telling a fake systemd it is ready; `hubd config check` layering.

use crate::harness::binaries::{
    Notifications, code, command, exited, hubd_bin, json, run, signal, stderr,
};
use std::path::Path;
use std::process::Stdio;

fn unit_value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

async fn status(root: &Path) -> (i32, serde_json::Value) {
    let out = run(command(&hubd_bin())
        .args(["status", "--system", "--json", "--root"])
        .arg(root))
    .await;
    (code(&out), json(&out))
}

/// `systemd-analyze verify` where the machine has it.
pub(crate) fn verify_unit(unit: &Path) {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
    else {
        eprintln!("note: systemd-analyze not installed; unit checked by the assertions only");
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("Failed to connect") && !l.contains("System has not been booted"))
        .collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "systemd-analyze verify {}:\n{err}",
        unit.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_install_status_uninstall_round_trip_in_a_temp_root() {
    let root = tempfile::tempdir().expect("root");
    let r = root.path();
    // The system has bash-completion and man, not zsh or fish.
    let bash_dir = r.join("usr/share/bash-completion/completions");
    let man_dir = r.join("usr/share/man/man1");
    for d in [&bash_dir, &man_dir] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let bin = hubd_bin();
    let out = run(command(&bin)
        .args(["install", "--system", "--json", "--root"])
        .arg(r)
        .args(["--listen", "127.0.0.1:0", "--name", "127.0.0.1"])
        .args(["--metrics-listen", "127.0.0.1:0", "--binary"])
        .arg(&bin))
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = json(&out);
    let written = report["written"].to_string();
    let completion = bash_dir.join("hubd");
    let bash = std::fs::read_to_string(&completion).expect("bash completion installed");
    assert!(bash.contains("token") && bash.contains("backup"), "{bash}");
    for page in ["hubd.1", "hubd-token-create.1"] {
        let path = man_dir.join(page);
        assert!(path.is_file(), "{page} installed");
        assert!(written.contains(&path.display().to_string()), "{report:#}");
    }
    assert!(
        written.contains(&completion.display().to_string()),
        "{report:#}"
    );
    assert!(
        !r.join("usr/share/zsh").exists() && !r.join("usr/share/fish").exists(),
        "no folders for shells the system lacks"
    );
    assert!(
        report["notes"].to_string().contains("vendor_completions.d"),
        "{report:#}"
    );
    assert!(
        report["pending"]
            .as_array()
            .expect("pending")
            .contains(&"systemctl restart flotilla-hub".into()),
        "{report:#}"
    );
    let data = r.join("var/lib/flotilla/hub");
    let config = r.join("etc/flotilla/hub.toml");
    assert!(data.join("hub.db").is_file() && data.join("ca.pem").is_file());
    assert!(
        !data.join("hub.toml").exists(),
        "one configuration, in /etc/flotilla"
    );
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.contains("metrics_listen = \"127.0.0.1:0\""), "{text}");
    let unit_path = r.join("etc/systemd/system/flotilla-hub.service");
    let unit = std::fs::read_to_string(&unit_path).expect("unit");
    assert_eq!(
        unit_value(&unit, "ExecStart"),
        [format!(
            "{} --config /etc/flotilla/hub.toml --data-dir /var/lib/flotilla/hub run",
            bin.display()
        )
        .as_str()]
    );
    for (k, v) in [
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Type", "notify"),
        ("ReadWritePaths", "/var/lib/flotilla/hub"),
        ("SystemCallFilter", "@system-service"),
        ("User", "flotilla"),
    ] {
        assert_eq!(
            unit_value(&unit, k).first().copied(),
            Some(v),
            "{k}:\n{unit}"
        );
    }
    verify_unit(&unit_path);

    let (c, s) = status(r).await;
    assert_eq!(c, 3, "installed, not running: {s:#}");
    assert_eq!(s["installed"], true);

    // Run it as its unit would, with a fake systemd's notification socket.
    let notify_dir = tempfile::tempdir().expect("notify");
    let notify = Notifications::bind(notify_dir.path().join("notify.sock"));
    let mut child = command(&bin)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .arg("run")
        .env("NOTIFY_SOCKET", notify.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hubd run");
    let ready = notify.next().await;
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving on 127.0.0.1:"),
        "{ready}"
    );
    let (c, s) = status(r).await;
    assert_eq!(c, 0, "serving: {s:#}");
    assert_eq!(s["serving"], true);
    assert_ne!(s["hub"]["listen"], "127.0.0.1:0");
    assert!(s["hub"]["metrics_listen"].is_string(), "{s:#}");

    signal(child.id().expect("pid"), "-TERM").await;
    assert!(exited(&mut child).await.success());
    let stopping = notify.next().await;
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    assert_eq!(status(r).await.0, 3);

    // A second install keeps the hub and its configuration.
    let out = run(command(&bin)
        .args(["install", "--system", "--json", "--root"])
        .arg(r)
        .args(["--name", "other.example", "--binary"])
        .arg(&bin))
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&config).expect("config"), text);
    assert!(
        json(&out)["notes"]
            .to_string()
            .contains("already holds a hub")
    );

    let out = run(command(&bin)
        .args(["uninstall", "--system", "--purge", "--json", "--root"])
        .arg(r))
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!unit_path.exists() && !data.exists() && !config.exists());
    assert!(!completion.exists() && !man_dir.join("hubd.1").exists());
    assert_eq!(
        std::fs::read_dir(&man_dir).expect("man1").count(),
        0,
        "every page removed"
    );
    assert_eq!(status(r).await.0, 4, "not installed, not running");
}

#[tokio::test]
async fn completions_and_man_pages_cover_the_subcommands() {
    let bin = hubd_bin();
    let out = run(command(&bin).args(["completions", "bash"])).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let bash = String::from_utf8(out.stdout).expect("utf8");
    for sub in ["install", "token", "revoke", "backup", "completions"] {
        assert!(bash.contains(sub), "{sub} missing from\n{bash}");
    }
    assert!(bash.contains("complete -F _hubd"), "{bash}");
    for (shell, marker) in [("zsh", "#compdef hubd"), ("fish", "complete -c hubd")] {
        let out = run(command(&bin).args(["completions", shell])).await;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(marker),
            "{shell}"
        );
    }
    let out = run(command(&bin).args(["completions", "tcsh"])).await;
    assert_eq!(code(&out), 2, "an unknown shell is a usage error");
    assert!(stderr(&out).contains("tcsh"), "{}", stderr(&out));

    let dir = tempfile::tempdir().expect("tmp");
    let man = dir.path().join("man1");
    let out = run(command(&bin).arg("man").arg(&man)).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let page = std::fs::read_to_string(man.join("hubd-token-create.1")).expect("page");
    assert!(page.contains(".TH hubd-token-create 1"), "{page}");
    assert!(page.contains("join token"), "{page}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hubd.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_layers_file_env_and_flags() {
    let hub = crate::harness::binaries::Hub::init().await;
    let check = async |env: &[(&str, &str)], flags: &[&str]| {
        let mut cmd = crate::harness::binaries::hubd(&hub.data);
        cmd.args(["config", "check", "--json"]).args(flags);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd).await;
        (code(&out), json(&out), stderr(&out))
    };
    let (c, v, _) = check(&[], &[]).await;
    assert_eq!(c, 0);
    assert_eq!(v["config"]["listen"], "127.0.0.1:0");
    assert!(
        v["origins"]["listen"]
            .as_str()
            .expect("origin")
            .starts_with("file ")
    );
    assert_eq!(
        v["origins"]["metrics_interval_ms"],
        "file ".to_string() + &hub.data.join("hub.toml").display().to_string()
    );

    let env = [
        ("FLOTILLA_HUB_LISTEN", "127.0.0.1:5000"),
        ("FLOTILLA_HUB_METRICS_INTERVAL_MS", "2000"),
        ("FLOTILLA_HUB_ADVERTISE", "hub.example,10.1.2.3"),
    ];
    let (_, v, _) = check(&env, &[]).await;
    assert_eq!(v["config"]["listen"], "127.0.0.1:5000", "env beats file");
    assert_eq!(v["config"]["metrics_interval_ms"], 2000);
    assert_eq!(
        v["config"]["advertise"],
        serde_json::json!(["hub.example", "10.1.2.3"])
    );
    assert_eq!(v["origins"]["listen"], "env FLOTILLA_HUB_LISTEN");
    let (_, v, _) = check(&env, &["--listen", "127.0.0.1:6000"]).await;
    assert_eq!(v["config"]["listen"], "127.0.0.1:6000", "flag beats env");
    assert_eq!(v["origins"]["listen"], "flag --listen");

    let (c, v, err) = check(&[("FLOTILLA_HUB_IDLE_TIMEOUT_S", "1")], &[]).await;
    assert_eq!(c, 2);
    assert_eq!(v["error"]["key"], "idle_timeout_s");
    assert!(err.contains("idle_timeout_s"), "{err}");
    let (c, v, err) = check(&[("FLOTILLA_HUB_LISTEN", "not-an-address")], &[]).await;
    assert_eq!(c, 2);
    assert_eq!(v["error"]["key"], "listen");
    assert!(err.contains("FLOTILLA_HUB_LISTEN"), "{err}");
    let (c, _, err) = check(&[("FLOTILLA_HUB_LISTN", "127.0.0.1:1")], &[]).await;
    assert_eq!(c, 2, "a typo under the prefix is an error");
    assert!(
        err.contains("FLOTILLA_HUB_LISTN") && err.contains("unknown field"),
        "{err}"
    );

    std::fs::write(
        hub.data.join("hub.toml"),
        "listen = \"127.0.0.1:0\"\nmax_handshake = 3\n",
    )
    .expect("write");
    let (c, _, err) = check(&[], &[]).await;
    assert_eq!(c, 2);
    assert!(err.contains("max_handshake"), "{err}");
    let out = run(crate::harness::binaries::hubd(&hub.data).arg("run")).await;
    assert_eq!(code(&out), 2, "run refuses the same configuration");
    assert!(stderr(&out).contains("max_handshake"), "{}", stderr(&out));
}
