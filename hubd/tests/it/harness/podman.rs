//! A private Podman for the workload tests: its own storage, run directory and configuration
//! (`CONTAINERS_CONF`, `CONTAINERS_STORAGE_CONF`) under a temp dir, a busybox image imported
//! offline, and `podman system service` answering the Docker Engine API on a unix socket. Every
//! container it made is removed when it drops.
//!
//! Containers run with `--network none`: no bridge, no firewall rules shared with other tests.

use super::DEADLINE;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The image every test container runs: busybox, imported from the host's static binary.
pub(crate) const IMAGE: &str = "localhost/bb:1";

/// Applets linked into the image (busybox runs the one named by its link).
const APPLETS: [&str; 10] = [
    "sh", "sleep", "echo", "cat", "yes", "seq", "head", "dd", "true", "printf",
];

/// A private Podman with its API service.
pub(crate) struct Podman {
    dir: tempfile::TempDir,
    /// The API socket.
    pub(crate) socket: PathBuf,
    env: Vec<(String, String)>,
    service: Option<Child>,
}

impl Podman {
    /// Sets up storage, imports the image and starts the API service.
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().expect("podman dir");
        let d = dir.path();
        for sub in ["root", "runroot", "tmp", "img/bin"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let conf = d.join("containers.conf");
        std::fs::write(
            &conf,
            format!(
                "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nruntime = \"runc\"\nevents_logger = \"file\"\nevents_logfile_path = \"{}\"\ntmp_dir = \"{}\"\n",
                d.join("events.log").display(),
                d.join("tmp").display()
            ),
        )
        .expect("containers.conf");
        let storage = d.join("storage.conf");
        std::fs::write(
            &storage,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                d.join("root").display(),
                d.join("runroot").display()
            ),
        )
        .expect("storage.conf");
        let env = vec![
            ("CONTAINERS_CONF".to_string(), conf.display().to_string()),
            (
                "CONTAINERS_STORAGE_CONF".to_string(),
                storage.display().to_string(),
            ),
        ];
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static installed");
        std::fs::copy(busybox, d.join("img/bin/busybox")).expect("copy busybox");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", d.join("img/bin").join(applet)).expect("link");
        }
        let tar = d.join("bb.tar");
        let status = std::process::Command::new("tar")
            .arg("-C")
            .arg(d.join("img"))
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(status.success(), "tar the image");
        let mut podman = Self {
            socket: d.join("engine.sock"),
            dir,
            env,
            service: None,
        };
        podman
            .run(&["import", tar.to_str().expect("utf-8"), IMAGE])
            .await;
        podman.start_service().await;
        podman
    }

    /// The environment the `podman` command (and `podman-compose`) needs to see this Podman.
    pub(crate) fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Its temp dir (for compose projects and the like).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `podman args…`; its standard output, trimmed, if it succeeded.
    pub(crate) async fn try_run(&self, args: &[&str]) -> Option<String> {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("podman {} took over a minute", args.join(" ")))
            .expect("spawn podman");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs `podman args…`, which must succeed; returns its standard output, trimmed.
    pub(crate) async fn run(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("podman {} took over a minute", args.join(" ")))
            .expect("spawn podman");
        assert!(
            out.status.success(),
            "podman {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts a detached container `name` running `script` under `sh -c`; returns its id.
    pub(crate) async fn container(&self, name: &str, script: &str) -> String {
        self.run(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            name,
            IMAGE,
            "sh",
            "-c",
            script,
        ])
        .await
    }

    /// A container's state as the engine reports it (`running`, `exited`…), `None` once gone.
    pub(crate) async fn state(&self, name: &str) -> Option<String> {
        let out = self
            .command(&["inspect", "--format", "{{.State.Status}}", name])
            .output()
            .await
            .expect("spawn podman");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Waits until `name`'s state is `want` (`None`: removed).
    pub(crate) async fn wait_state(&self, name: &str, want: Option<&str>) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let now = self.state(name).await;
            if now.as_deref() == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is {now:?}, not {want:?}"
            );
            // Polled: read through `podman inspect`, which cannot wait on a change; bounded by
            // the deadline above.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts the API service and waits for its socket.
    pub(crate) async fn start_service(&mut self) {
        let sock = format!("unix://{}", self.socket.display());
        let child = self
            .command(&["system", "service", "--time=0", &sock])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman system service");
        self.service = Some(child);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "podman's API socket did not open"
            );
            // Polled: `podman system service` gives no readiness signal but the socket itself;
            // bounded by the deadline above.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the API service (containers keep running) and removes its socket, as a stopped
    /// engine leaves things.
    pub(crate) async fn stop_service(&mut self) {
        if let Some(mut child) = self.service.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Some(child) = self.service.as_mut() {
            let _ = child.start_kill();
            // Reaped by tokio; give it a moment to let go of the storage before removing.
            if let Some(pid) = child.id() {
                for _ in 0..50 {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        break;
                    }
                    // Polled: the child is tokio's to reap, so its exit is seen only in /proc;
                    // bounded to 50 tries.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let _ = std::process::Command::new("podman")
            .args(["rm", "--all", "--force", "--time", "0"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The storage driver may keep its layer folder mounted: unmount it so the temp dir goes.
        // Podman mounts the layer folder privately (each of its processes may stack one more) and a
        // container's rootfs and shm under it: unmount whatever is left below our dir, deepest
        // first, so the temp dir can go.
        let root = self.dir.path().to_string_lossy().into_owned();
        // A container's monitor runs `podman container cleanup` after it dies, which mounts again:
        // wait (bounded) until no process names our dir any more.
        for _ in 0..100 {
            if !processes_naming(&root) {
                break;
            }
            // Polled: those cleanup processes are not ours to wait on; bounded to 100 tries.
            std::thread::sleep(Duration::from_millis(100));
        }
        for _ in 0..8 {
            let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
                .filter(|m| m.starts_with(&root))
                .collect();
            if points.is_empty() {
                break;
            }
            points.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in points {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&m)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Whether a process other than this one has `needle` in its command line.
fn processes_naming(needle: &str) -> bool {
    let own = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let name = p.file_name();
        let name = name.to_string_lossy();
        name.bytes().all(|b| b.is_ascii_digit())
            && name != own
            && std::fs::read(p.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
    })
}
