//! A real systemd as PID 1 in a podman container, with test units, its system bus socket and its
//! journal reachable from the host, and the real `agentd` binary runnable inside it.
//!
//! The container's root is a folder here: `bin`, `sbin`, `lib`, `lib64` link into a read-only
//! `/usr` shared with the host, `/etc` is a copy with an empty machine-id. Podman runs with a
//! private `CONTAINERS_CONF` (runc, cgroupfs, no default ulimits) and private storage, and the
//! container shares the host's network, so an agent inside reaches a hub on 127.0.0.1.

use super::binaries::{Daemon, agentd_bin};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long systemd may take to boot in the container on a loaded 2-core machine.
const BOOT_DEADLINE: Duration = Duration::from_secs(40);

/// containers.conf that works on this kernel: crun refuses its hybrid cgroups, and podman's
/// default ulimits are refused too.
const CONTAINERS_CONF: &str = "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nruntime = \"runc\"\n";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// One unit file: its name and text.
pub(crate) struct UnitFile {
    /// `name.service`.
    pub(crate) name: &'static str,
    /// The file.
    pub(crate) text: &'static str,
    /// Linked into `multi-user.target.wants`, so it starts at boot and reads as enabled.
    pub(crate) enabled: bool,
}

/// A systemd container; removed (with everything in it) on drop.
pub(crate) struct SystemdBox {
    dir: TempDir,
    name: String,
}

/// Whether podman is installed; says so loudly when not, so a skipped test is never mistaken for
/// a passed one.
pub(crate) fn podman_present(test: &str) -> bool {
    let found = Command::new("podman")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!(
            "\n*** SKIPPED {test}: podman is not installed; install podman, runc and busybox-static to run the systemd tests ***\n"
        );
    }
    found
}

impl SystemdBox {
    /// Boots systemd with `units` and waits until it finished booting. `shared` is mounted at the
    /// same path inside (agent data directories live there).
    pub(crate) fn boot(units: &[UnitFile], shared: &Path) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the systemd container");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("usr")).expect("root");
        for d in ["bin", "sbin", "lib", "lib64"] {
            std::os::unix::fs::symlink(format!("usr/{d}"), root.join(d)).expect("link into usr");
        }
        for d in ["run", "tmp", "var/log", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(d)).expect("root folder");
        }
        let copied = Command::new("cp")
            .args(["-a", "/etc"])
            .arg(root.join("etc"))
            .status()
            .expect("cp /etc");
        assert!(copied.success(), "copying /etc into the container root");
        std::fs::write(root.join("etc/machine-id"), b"").expect("empty machine-id");
        let system = root.join("etc/systemd/system");
        // The host's enabled services and timers (a database, podman auto-update…) have no place
        // in the container: they would hold its boot up or collide with the host on its network.
        for entry in std::fs::read_dir(&system).expect("read etc/systemd/system") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".wants") || name.ends_with(".requires") {
                std::fs::remove_dir_all(&path).expect("remove the host's enablement");
            }
        }
        let _ = std::fs::remove_file(system.join("default.target"));
        std::os::unix::fs::symlink(
            "/lib/systemd/system/multi-user.target",
            system.join("default.target"),
        )
        .expect("default target");
        let wants = system.join("multi-user.target.wants");
        std::fs::create_dir_all(&wants).expect("wants folder");
        for unit in units {
            std::fs::write(system.join(unit.name), unit.text).expect("unit file");
            if unit.enabled {
                std::os::unix::fs::symlink(
                    format!("/etc/systemd/system/{}", unit.name),
                    wants.join(unit.name),
                )
                .expect("enable unit");
            }
        }
        std::fs::create_dir_all(dir.path().join("bus")).expect("bus folder");
        std::fs::create_dir_all(dir.path().join("journal")).expect("journal folder");
        std::fs::write(dir.path().join("containers.conf"), CONTAINERS_CONF).expect("conf");
        let name = format!(
            "flotilla-systemd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let me = Self { dir, name };
        let agentd_dir = agentd_bin()
            .parent()
            .expect("agentd's folder")
            .to_path_buf();
        let mount = |host: &Path, inside: &str, ro: bool| {
            format!("{}:{inside}{}", host.display(), if ro { ":ro" } else { "" })
        };
        let out = me.podman(&[
            "run",
            "-d",
            "--name",
            &me.name,
            "--network",
            "host",
            "--systemd=always",
            "-v",
            "/usr:/usr:ro",
            "-v",
            &mount(&me.dir.path().join("bus"), "/run/dbus", false),
            // Podman puts a tmpfs on /var/log/journal in systemd mode; a bind mount takes its
            // place, so the host can read the journal journald keeps there.
            "-v",
            &mount(&me.dir.path().join("journal"), "/var/log/journal", false),
            "-v",
            &mount(&agentd_dir, &agentd_dir.display().to_string(), true),
            "-v",
            &mount(shared, &shared.display().to_string(), false),
            "--rootfs",
            &root.display().to_string(),
            "/lib/systemd/systemd",
        ]);
        assert!(
            out.status.success(),
            "podman run systemd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        me.wait_booted();
        me
    }

    fn podman(&self, args: &[&str]) -> Output {
        let storage = self.dir.path().join("storage");
        let runroot = self.dir.path().join("runroot");
        Command::new("podman")
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .arg("--root")
            .arg(storage)
            .arg("--runroot")
            .arg(runroot)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    /// `podman --root … --runroot …` with the private config, for a long-running child.
    fn podman_args(&self) -> Vec<String> {
        vec![
            "--root".into(),
            self.dir.path().join("storage").display().to_string(),
            "--runroot".into(),
            self.dir.path().join("runroot").display().to_string(),
        ]
    }

    fn wait_booted(&self) {
        let began = Instant::now();
        loop {
            let out = self.exec(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            // `degraded`: booted with a failed unit, which the test units include on purpose.
            if state == "running" || state == "degraded" {
                return;
            }
            if began.elapsed() > BOOT_DEADLINE {
                let jobs = self.exec(&["systemctl", "list-jobs", "--no-pager"]);
                panic!(
                    "systemd did not finish booting within {BOOT_DEADLINE:?} (state {state:?}); jobs:\n{}",
                    String::from_utf8_lossy(&jobs.stdout)
                );
            }
            // Polled: `is-system-running` is the only sign of a finished boot from outside the
            // container; bounded by BOOT_DEADLINE above.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs a command inside.
    pub(crate) fn exec(&self, argv: &[&str]) -> Output {
        let mut args = vec!["exec", &self.name];
        args.extend_from_slice(argv);
        self.podman(&args)
    }

    /// `systemctl ARGS` inside; its stdout, trimmed.
    pub(crate) fn systemctl(&self, args: &[&str]) -> String {
        let mut argv = vec!["systemctl"];
        argv.extend_from_slice(args);
        String::from_utf8_lossy(&self.exec(&argv).stdout)
            .trim()
            .to_string()
    }

    /// A unit property read with `systemctl show -p NAME --value` (for assertions only).
    pub(crate) fn property(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", "-p", name, "--value", unit])
    }

    /// Polls until `check` holds for `systemctl` state of the container, under a generous deadline.
    pub(crate) fn wait_until(&self, what: &str, mut check: impl FnMut(&Self) -> bool) {
        let began = Instant::now();
        while !check(self) {
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "{what} did not happen within 60 s"
            );
            // Polled: systemd's state is read through `podman exec`, which cannot wait on a
            // change; bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The system bus of the container, as a D-Bus address the host can dial.
    pub(crate) fn bus_address(&self) -> String {
        format!(
            "unix:path={}",
            self.dir.path().join("bus/system_bus_socket").display()
        )
    }

    /// The container's persistent journal, on the host.
    pub(crate) fn journal_dir(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    /// Starts `agentd --data-dir DATA run` inside (as root: the system manager's agent).
    pub(crate) fn spawn_agentd(&self, data: &Path) -> Daemon {
        let mut args = self.podman_args();
        args.extend([
            "exec".into(),
            "-e".into(),
            "RUST_LOG=info".into(),
            self.name.clone(),
            agentd_bin().display().to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "run".into(),
        ]);
        let conf = self.dir.path().join("containers.conf");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Daemon::spawn_env(
            Path::new("podman"),
            &args,
            &[("CONTAINERS_CONF".into(), conf.display().to_string())],
        )
    }
}

impl Drop for SystemdBox {
    fn drop(&mut self) {
        let out = self.podman(&["rm", "-f", "-t", "0", &self.name]);
        if !out.status.success() {
            eprintln!(
                "removing container {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
