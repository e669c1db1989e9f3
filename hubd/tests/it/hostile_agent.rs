//! Hostile content on an agent's machine: what sits in its shared folder, and what a command it runs
//! could reach. A real hub and real agents over QUIC and mutual TLS; where shutdown matters, a real
//! `agentd` process.

use crate::harness::files::{DEADLINE, Fleet, files_fleet_with, spec, wait_listing};
use crate::harness::{Daemon, agentd_bin, run_json};
use agentd::AgentConfig;
use flotilla::files::FilesError;
use flotilla_wire::Role;
use flotilla_wire::files::TransferErrorKind;
use std::path::Path;

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Makes a FIFO at `path`, as `mkfifo` would.
fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: a valid NUL-terminated path; mkfifo reads it and nothing else.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A FIFO in the shared folder used to wedge the agent: the read opened it and waited for a writer
/// forever, in a thread per attempt, and SIGTERM then waited for those threads. Now each attempt is
/// refused at once by name and kind, other copies from that agent go on, and it stops promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fifo_in_the_shared_folder_is_refused_and_wedges_nothing() {
    let fleet = files_fleet_with(vec![spec("web-1")]).await;
    // A real agentd process, so that its exit on SIGTERM is what a service manager would see.
    let data = fleet.dir.path().join("web-9");
    let token = fleet.token(Role::Agent, 1, Vec::new()).await.token;
    let enrolled = run_json(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(&data),
            "enroll",
            "--token",
            &token,
            "--name",
            "web-9",
            "--json",
        ],
    )
    .await;
    assert_eq!(enrolled["name"], "web-9");
    let shared = AgentConfig::default().shared_dir(&data);
    std::fs::create_dir_all(&shared).expect("shared dir");
    mkfifo(&shared.join("pipe"));
    std::fs::write(shared.join("ok.txt"), b"still served").expect("write");
    let mut agent = Daemon::spawn(&agentd_bin(), &["--data-dir", path_str(&data), "run"]);
    let client = fleet.admin_client().await;
    wait_listing(&client, "web-9").await;
    client.close().await;

    // Each attempt is refused at once (a blocked one would end at the copy's deadline instead).
    for attempt in 1..=3 {
        let local = fleet.dir.path().join(format!("pipe-{attempt}"));
        match fleet.cp("web-9:pipe", path_str(&local)).await.0 {
            Err(FilesError::Transfer(e)) => {
                assert_eq!(e.kind, TransferErrorKind::WrongKind, "{e:?}");
                assert_eq!(e.message, "not a regular file: pipe (fifo) on web-9");
            }
            other => panic!("attempt {attempt}: expected a refusal, got {other:?}"),
        }
        assert!(!local.exists(), "nothing written locally");
    }

    // The same agent still serves its files, to another agent and to this machine.
    fleet
        .cp("web-9:ok.txt", "web-1:ok.txt")
        .await
        .0
        .expect("a regular file is still served");
    assert_eq!(
        std::fs::read(fleet.agents[0].shared.join("ok.txt")).expect("read"),
        b"still served"
    );
    let local = fleet.dir.path().join("ok.txt");
    fleet
        .cp("web-9:ok.txt", path_str(&local))
        .await
        .0
        .expect("and downloaded");
    assert_eq!(std::fs::read(&local).expect("read"), b"still served");

    // And it stops on SIGTERM, cleanly and at once.
    agent.sigterm();
    let status = agent.wait_exit(DEADLINE).await;
    assert!(status.success(), "agentd exited with {status}");
}

/// The uid and gid of the account `name`, if it exists.
fn account(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: getpwnam returns static storage or null; the ids are copied out at once, and nothing
    // else in this test looks accounts up meanwhile.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// Gives `path` and everything below it to `uid:gid`.
fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("entry").path(), uid, gid);
        }
    }
}

/// What a command run by a real agentd said about itself: `key:value` lines.
struct Probe(String);

impl Probe {
    fn said(&self, key: &str) -> &str {
        self.0
            .lines()
            .filter_map(|l| l.split_once(" | ").map(|(_, rest)| rest.trim()))
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} line in:\n{}", self.0))
    }
}

/// Enrols and runs a real agentd called `name` with `agent_toml`, as `owner` (uid, gid) if given,
/// with a secret in its environment and a descriptor inherited without close-on-exec; runs a probe
/// command there, then stops agentd with SIGTERM.
async fn probe_commands(
    fleet: &Fleet,
    base: &Path,
    name: &str,
    agent_toml: &str,
    owner: Option<(u32, u32)>,
) -> Probe {
    let data = base.join(name);
    let token = fleet.token(Role::Agent, 1, Vec::new()).await.token;
    run_json(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(&data),
            "enroll",
            "--token",
            &token,
            "--name",
            name,
            "--json",
        ],
    )
    .await;
    std::fs::write(data.join("agent.toml"), agent_toml).expect("agent.toml");
    std::fs::create_dir_all(AgentConfig::default().shared_dir(&data)).expect("shared");
    if let Some((uid, gid)) = owner {
        chown_tree(&data, uid, gid);
    }

    // A descriptor agentd inherits without close-on-exec, as from a careless parent.
    let leaked = tempfile::tempfile().expect("tempfile");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&leaked);
    // SAFETY: fcntl on a descriptor `leaked` owns.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let mut cmd = tokio::process::Command::new(agentd_bin());
    cmd.args(["--data-dir", path_str(&data), "run"])
        .env("FLOTILLA_PROBE_SECRET", "s3cret-in-agentd-env")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    let mut agent = cmd.spawn().expect("agentd runs");
    drop(leaked);
    let client = fleet.admin_client().await;
    wait_listing(&client, name).await;

    let script = format!(
        "echo uid:$(id -u); \
         test -e /proc/self/fd/{fd} && echo fd:open || echo fd:closed; \
         cat /proc/$PPID/environ >/dev/null 2>&1 && echo environ:readable || echo environ:refused; \
         echo probe:$(env | grep -c FLOTILLA_PROBE); \
         echo user:$USER"
    );
    let req = flotilla_wire::exec::ExecRequest {
        selector: name.into(),
        command: flotilla_wire::exec::ExecCommand::Argv {
            argv: vec![script],
            shell: true,
        },
        timeout_ms: 0,
        batch: 0,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = tokio::time::timeout(
        DEADLINE,
        flotilla::exec::run_exec(
            &client,
            &req,
            flotilla::exec::RenderOptions::default(),
            &mut out,
            &mut err,
            flotilla::exec::Interrupts::Never,
        ),
    )
    .await
    .expect("job ends within the deadline")
    .expect("job runs");
    let out = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(
        status,
        0,
        "stdout:\n{out}\nstderr:\n{}",
        String::from_utf8_lossy(&err)
    );
    client.close().await;

    let pid = i32::try_from(agent.id().expect("running")).expect("pid");
    // SAFETY: kill(2) on the pid of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopped = tokio::time::timeout(DEADLINE, agent.wait())
        .await
        .expect("agentd stops within the deadline")
        .expect("wait");
    assert!(stopped.success(), "agentd exited with {stopped}");
    Probe(out)
}

/// A command run by exec gets none of agentd's: not a descriptor agentd inherited without
/// close-on-exec, not its environment (directly or through `/proc/$PPID/environ`), and under
/// `run_as` not its account. As root it runs commands as `nobody`; as anyone else, under agentd's
/// own account, where agentd being non-dumpable is what keeps its environ unreadable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_inherit_no_descriptor_environment_or_account_of_agentd() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let nobody = account("nobody");
    if root && nobody.is_none() {
        eprintln!("skipped: running as root without a `nobody` account to run commands as");
        return;
    }
    let fleet = files_fleet_with(vec![spec("web-1")]).await;
    let toml = if root {
        "exec = \"any\"\nrun_as = \"nobody\"\n"
    } else {
        "exec = \"any\"\n"
    };
    let probe = probe_commands(&fleet, fleet.dir.path(), "web-8", toml, None).await;
    assert_eq!(
        probe.said("fd:"),
        "closed",
        "an inherited descriptor reached the command"
    );
    assert_eq!(
        probe.said("environ:"),
        "refused",
        "the command read agentd's environment"
    );
    assert_eq!(
        probe.said("probe:"),
        "0",
        "agentd's environment was passed on"
    );
    if let (true, Some((uid, _))) = (root, nobody) {
        assert_eq!(probe.said("uid:"), uid.to_string());
        assert_eq!(probe.said("user:"), "nobody");
    }
}

/// Without `run_as` a command runs as agentd's own account, and the kernel would let it read
/// `/proc/$PPID/environ`, agentd's environment, but for agentd making itself non-dumpable. Run
/// here with agentd itself started as `nobody` (the test needs root for that).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_under_agentds_own_account_cannot_read_its_environment() {
    // SAFETY: geteuid has no preconditions.
    let (true, Some((uid, gid))) = (unsafe { libc::geteuid() } == 0, account("nobody")) else {
        eprintln!("skipped: needs root and a `nobody` account to start agentd as another user");
        return;
    };
    let fleet = files_fleet_with(vec![spec("web-1")]).await;
    // A folder `nobody` can reach: the fleet's own is private to root.
    let base = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        base.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let probe = probe_commands(
        &fleet,
        base.path(),
        "web-7",
        "exec = \"any\"\n",
        Some((uid, gid)),
    )
    .await;
    assert_eq!(
        probe.said("uid:"),
        uid.to_string(),
        "runs as agentd's account"
    );
    assert_eq!(
        probe.said("environ:"),
        "refused",
        "the command read agentd's environment"
    );
    assert_eq!(probe.said("fd:"), "closed");
}
