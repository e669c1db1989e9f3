//! One command as a process: its own process group, a clean environment, no stdin, the configured
//! working directory; output pumped in chunks of at most 64 KiB under back-pressure; the whole group
//! terminated on cancel or timeout (SIGTERM, then SIGKILL after the grace period), and whatever is
//! left of the group killed once the command itself exits, so nothing it started lingers.
//!
//! Generic over the stream halves so unit tests drive it through in-memory pipes.

use super::policy::ExecPolicy;
use bytes::{Bytes, BytesMut};
use flotilla_wire::exec::{
    AgentEvent, ExecControl, ExecFailure, ExecStart, ExitReport, FailureKind, MAX_CHUNK,
    OutputStream, encode_output,
};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::MAX_EXEC_FRAME;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Events waiting for the hub stream. Small: a command that outpaces the hub waits on its pipe
/// instead of filling agent memory (at most this many 64 KiB chunks per command).
const OUTPUT_QUEUE: usize = 4;
/// After the command exits, how long its pipes may stay silent before we stop reading them: a
/// process that escaped the group (setsid) could hold them open for ever.
const PIPE_DRAIN: Duration = Duration::from_secs(2);

/// Signals the command's process group; SIGKILLs it when dropped while still armed (the exec task
/// was aborted: the link dropped or agentd is stopping).
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl GroupGuard {
    fn signal(&self, sig: i32) {
        if self.armed && self.pgid > 1 {
            // SAFETY: kill(2) with a negative pid signals the process group we created; no memory
            // is involved.
            unsafe { libc::kill(-self.pgid, sig) };
        }
    }

    /// Kills what is left of the group after the leader exited, then disarms: from here on the
    /// group id may be reused by an unrelated process group.
    fn finish(&mut self) {
        self.signal(libc::SIGKILL);
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

async fn send_one<W: AsyncWrite + Unpin>(send: &mut W, ev: AgentEvent) {
    let _ = write_frame(send, &ev, MAX_EXEC_FRAME).await;
    let _ = send.shutdown().await;
}

/// Runs `program` for `start` and reports on `send` until its exit; `recv` carries cancels.
pub(super) async fn run<W, R>(
    program: &Path,
    args: &[String],
    policy: &ExecPolicy,
    start: &ExecStart,
    mut send: W,
    recv: R,
) where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    if !policy.workdir.is_dir() {
        let message = format!(
            "working directory {} does not exist (workdir in agent.toml)",
            policy.workdir.display()
        );
        return send_one(&mut send, spawn_failed(message)).await;
    }
    // A bare name is looked up here, in the commands' clean PATH: handing the C library a path lets
    // it spawn without copying agentd's address space (posix_spawn instead of fork), which is what
    // keeps a fan-out to a thousand agents in one swarm process cheap.
    let resolved;
    let program = if program.components().count() == 1 && !program.is_absolute() {
        let path = policy
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        match search_path(program, path) {
            Some(p) => {
                resolved = p;
                resolved.as_path()
            }
            None => {
                let message = format!("cannot run {}: not found in PATH {path}", program.display());
                return send_one(&mut send, spawn_failed(message)).await;
            }
        }
    } else {
        program
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(policy.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("FLOTILLA_JOB", start.job.to_string())
        .current_dir(&policy.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // Under `run_as` the child switches accounts between fork and exec (the standard library forks
    // then anyway) and marks what it inherited close-on-exec there too. Without it, agentd marked
    // every inherited descriptor at start (`account::cloexec_from_3`) and everything it opens since
    // is close-on-exec, so the command is started with posix_spawn, without a pre-exec hook.
    if let Some(account) = &policy.run_as {
        let (uid, gid, groups) = (account.uid, account.gid, account.groups.clone());
        // SAFETY: the hook only makes async-signal-safe system calls (setgroups, setgid, setuid,
        // close_range or fcntl) and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                super::account::become_account(uid, gid, &groups)?;
                super::account::cloexec_from_3();
                Ok(())
            });
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let message = format!("cannot run {}: {e}", program.display());
            return send_one(&mut send, spawn_failed(message)).await;
        }
    };
    let started = Instant::now();
    let pid = child.id().unwrap_or(0);
    let group = GroupGuard {
        pgid: pid as i32,
        armed: true,
    };
    tracing::debug!(pid, "started");
    let (tx, rx) = mpsc::channel::<Bytes>(OUTPUT_QUEUE);
    let _ = tx.try_send(frame(&AgentEvent::Started { pid }));
    let (exited_tx, exited_rx) = watch::channel(false);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let timeout = (start.timeout_ms > 0).then(|| Duration::from_millis(start.timeout_ms));
    let grace = policy.kill_grace;
    let work = async move {
        let mut group = group;
        let mut recv = recv;
        let supervise = supervise(
            &mut child, &mut group, &mut recv, started, timeout, grace, exited_tx,
        );
        let (report, (), ()) = tokio::join!(
            supervise,
            pump(stdout, OutputStream::Stdout, tx.clone(), exited_rx.clone()),
            pump(stderr, OutputStream::Stderr, tx.clone(), exited_rx),
        );
        tracing::debug!(?report, "exited");
        let _ = tx.send(frame(&AgentEvent::Exited(report))).await;
    };
    tokio::join!(work, write_events(&mut send, rx));
    let _ = send.shutdown().await;
}

/// The first executable file called `name` in the `:`-separated `path`.
fn search_path(name: &Path, path: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn spawn_failed(message: String) -> AgentEvent {
    AgentEvent::Failed(ExecFailure {
        kind: FailureKind::Spawn,
        message,
    })
}

/// One event, framed. Ours are small and always encode; an impossible failure yields an empty
/// frame that the writer skips.
fn frame(ev: &AgentEvent) -> Bytes {
    let mut buf = BytesMut::new();
    if let Err(e) = flotilla_wire::encode(ev, &mut buf, MAX_EXEC_FRAME) {
        tracing::error!(error = %e, "cannot encode an exec event");
    }
    buf.freeze()
}

/// Writes framed events until every sender is gone or the hub stream fails.
async fn write_events<W: AsyncWrite + Unpin>(send: &mut W, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(frame) = rx.recv().await {
        if let Err(e) = send.write_all(&frame).await {
            tracing::debug!(error = %e, "hub stream failed");
            return;
        }
    }
}

/// Reads one pipe in chunks until it closes, the hub stream fails, or it stays silent for
/// [`PIPE_DRAIN`] after the command exited.
async fn pump<P: AsyncRead + Unpin>(
    pipe: Option<P>,
    stream: OutputStream,
    tx: mpsc::Sender<Bytes>,
    mut exited: watch::Receiver<bool>,
) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let silent_after_exit = async {
            let _ = exited.wait_for(|e| *e).await;
            tokio::time::sleep(PIPE_DRAIN).await;
        };
        // Both branches are cancel-safe: a read either completed or consumed nothing.
        let n = tokio::select! {
            read = pipe.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = silent_after_exit => return,
        };
        // Framed straight from the read buffer: one copy per byte on its way to QUIC.
        let mut frame = BytesMut::with_capacity(n + 16);
        encode_output(stream, &buf[..n], &mut frame);
        if tx.send(frame.freeze()).await.is_err() {
            return;
        }
    }
}

/// Waits for the command to exit, applying timeout and cancel to its whole group.
async fn supervise<R: AsyncRead + Unpin>(
    child: &mut tokio::process::Child,
    group: &mut GroupGuard,
    recv: &mut R,
    started: Instant,
    timeout: Option<Duration>,
    grace: Duration,
    exited: watch::Sender<bool>,
) -> ExitReport {
    use tokio::time::{Instant as TokioInstant, sleep_until};
    let far = TokioInstant::now() + Duration::from_secs(100 * 365 * 86_400);
    let deadline = timeout.map(|t| TokioInstant::now() + t);
    // Cancel, end of stream and a broken stream all mean the hub no longer wants this to run.
    let control = read_frame::<ExecControl, _>(recv, MAX_EXEC_FRAME);
    tokio::pin!(control);
    let (mut control_done, mut timed_out, mut cancelled) = (false, false, false);
    let mut kill_at: Option<TokioInstant> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && !timed_out && !cancelled => {
                tracing::info!("timed out: terminating the process group");
                timed_out = true;
                group.signal(libc::SIGTERM);
                kill_at = Some(TokioInstant::now() + grace);
            }
            end = &mut control, if !control_done => {
                control_done = true;
                if !timed_out && !cancelled {
                    tracing::info!(control = ?end.as_ref().map(|c| c.is_some()), "cancelled: terminating the process group");
                    cancelled = true;
                    group.signal(libc::SIGTERM);
                    kill_at = Some(TokioInstant::now() + grace);
                }
            }
            _ = sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                tracing::info!(grace_ms = grace.as_millis() as u64, "still running after the grace period: killing the process group");
                group.signal(libc::SIGKILL);
                kill_at = None;
            }
        }
    };
    group.finish();
    let _ = exited.send(true);
    let duration_ms = started.elapsed().as_millis() as u64;
    match status {
        Ok(st) => ExitReport {
            code: st.code(),
            signal: st.signal(),
            duration_ms,
            timed_out,
            cancelled,
        },
        Err(e) => {
            tracing::warn!(error = %e, "could not wait for the command");
            ExitReport {
                code: None,
                signal: None,
                duration_ms,
                timed_out,
                cancelled,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AgentConfig, ExecMode};
    use flotilla_wire::exec::{ExecCommand, JobId};
    use flotilla_wire::io::FrameError;

    fn policy() -> ExecPolicy {
        ExecPolicy::from_config(&AgentConfig {
            exec: ExecMode::Any,
            kill_grace_ms: 300,
            ..AgentConfig::default()
        })
        .expect("policy")
    }

    fn start(timeout_ms: u64) -> ExecStart {
        ExecStart {
            job: JobId(1),
            command: ExecCommand::Argv {
                argv: vec![],
                shell: false,
            },
            timeout_ms,
            hub_time_ms: 0,
            actor: "test".into(),
        }
    }

    /// Runs `sh -c script`, optionally cancelling once `cancel_after` appears on stdout; returns
    /// every event.
    async fn sh(script: &str, timeout_ms: u64, cancel_after: Option<&str>) -> Vec<AgentEvent> {
        let (agent_send, mut hub_recv) = tokio::io::duplex(1 << 20);
        let (mut hub_send, agent_recv) = tokio::io::duplex(1024);
        let p = policy();
        let st = start(timeout_ms);
        let args = vec!["-c".to_string(), script.to_string()];
        let runner = run(Path::new("/bin/sh"), &args, &p, &st, agent_send, agent_recv);
        let hub = async {
            let mut events = Vec::new();
            let mut seen = String::new();
            let mut sent = false;
            for _ in 0..10_000 {
                match read_frame::<AgentEvent, _>(&mut hub_recv, MAX_EXEC_FRAME).await {
                    Ok(Some(ev)) => {
                        if let AgentEvent::Output { data, .. } = &ev {
                            seen.push_str(&String::from_utf8_lossy(&data.0));
                        }
                        if let Some(marker) = cancel_after
                            && !sent
                            && seen.contains(marker)
                        {
                            write_frame(&mut hub_send, &ExecControl::Cancel, 64)
                                .await
                                .expect("cancel");
                            sent = true;
                        }
                        events.push(ev);
                    }
                    Ok(None) => return events,
                    Err(FrameError::Io(_)) => return events,
                    Err(e) => panic!("bad frame: {e}"),
                }
            }
            panic!("too many events");
        };
        let ((), events) =
            tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(runner, hub) })
                .await
                .expect("exec finished in time");
        events
    }

    fn exit(events: &[AgentEvent]) -> ExitReport {
        match events.last() {
            Some(AgentEvent::Exited(r)) => r.clone(),
            other => panic!("last event {other:?}"),
        }
    }

    fn output(events: &[AgentEvent], which: OutputStream) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::Output { stream, data } if *stream == which => {
                    Some(String::from_utf8_lossy(&data.0).into_owned())
                }
                _ => None,
            })
            .collect()
    }

    /// Waits (on a pidfd, no polling) until `pid` has exited; false if it still runs at the
    /// deadline. A zombie waiting for its reaper counts as exited.
    async fn gone(pid: i32) -> bool {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        }
        // SAFETY: the descriptor was just created and is owned here alone.
        let owned =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        // SAFETY: `owned` is an open pidfd that the AsyncFd owns until it is dropped.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(owned) }.expect("register pidfd");
        tokio::time::timeout(Duration::from_secs(10), fd.readable())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn output_streams_and_exit_code_come_back() {
        let events = sh("echo out; echo err >&2; exit 3", 0, None).await;
        assert!(matches!(events.first(), Some(AgentEvent::Started { .. })));
        assert_eq!(output(&events, OutputStream::Stdout), "out\n");
        assert_eq!(output(&events, OutputStream::Stderr), "err\n");
        let r = exit(&events);
        assert_eq!(
            (r.code, r.signal, r.timed_out, r.cancelled),
            (Some(3), None, false, false)
        );
    }

    #[tokio::test]
    async fn environment_is_clean_and_stdin_empty() {
        let events = sh("env | sort; cat; pwd", 0, None).await;
        let out = output(&events, OutputStream::Stdout);
        let keys: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        for k in &keys {
            assert!(
                [
                    "PATH",
                    "LANG",
                    "HOME",
                    "USER",
                    "LOGNAME",
                    "FLOTILLA_JOB",
                    "PWD",
                    "SHLVL",
                    "_"
                ]
                .contains(k),
                "unexpected variable {k} in {out}"
            );
        }
        assert!(out.contains("FLOTILLA_JOB=1\n"));
        assert!(out.ends_with("/\n"), "runs in / by default: {out}");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let events = sh("sleep 100 & echo $!; sleep 100", 300, None).await;
        let r = exit(&events);
        assert!(r.timed_out && !r.cancelled);
        assert_eq!(r.signal, Some(libc::SIGTERM));
        let grandchild: i32 = output(&events, OutputStream::Stdout)
            .trim()
            .parse()
            .expect("pid");
        assert!(gone(grandchild).await, "grandchild {grandchild} survived");
    }

    #[tokio::test]
    async fn cancel_escalates_to_sigkill_when_term_is_ignored() {
        let events = sh(
            "trap '' TERM; echo ready; while :; do sleep 1; done",
            0,
            Some("ready"),
        )
        .await;
        let r = exit(&events);
        assert!(r.cancelled && !r.timed_out);
        assert_eq!(r.signal, Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn leftovers_die_with_the_command() {
        let events = sh("sleep 100 & echo $!", 0, None).await;
        let r = exit(&events);
        assert_eq!(r.code, Some(0));
        let pid: i32 = output(&events, OutputStream::Stdout)
            .trim()
            .parse()
            .expect("pid");
        assert!(
            gone(pid).await,
            "background process {pid} outlived its command"
        );
    }

    #[test]
    fn bare_names_are_found_in_the_clean_path() {
        let path = "/nonexistent:/bin:/usr/bin";
        let sh = search_path(Path::new("sh"), path).expect("sh");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(search_path(Path::new("no-such-program-here"), path), None);
        assert_eq!(search_path(Path::new("sh"), ""), None);
    }

    #[tokio::test]
    async fn missing_program_and_workdir_are_spawn_failures() {
        let (send, mut hub) = tokio::io::duplex(4096);
        let (_keep, recv) = tokio::io::duplex(64);
        run(
            Path::new("no-such-prog"),
            &[],
            &policy(),
            &start(0),
            send,
            recv,
        )
        .await;
        match read_frame::<AgentEvent, _>(&mut hub, MAX_EXEC_FRAME).await {
            Ok(Some(AgentEvent::Failed(f))) => assert_eq!(
                f.message,
                "cannot run no-such-prog: not found in PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ),
            other => panic!("{other:?}"),
        }
        let (send, mut hub) = tokio::io::duplex(4096);
        let (_keep, recv) = tokio::io::duplex(64);
        run(
            Path::new("/no/such/prog"),
            &[],
            &policy(),
            &start(0),
            send,
            recv,
        )
        .await;
        match read_frame::<AgentEvent, _>(&mut hub, MAX_EXEC_FRAME).await {
            Ok(Some(AgentEvent::Failed(f))) => {
                assert_eq!(f.kind, FailureKind::Spawn);
                assert!(
                    f.message.starts_with("cannot run /no/such/prog: "),
                    "{}",
                    f.message
                );
            }
            other => panic!("{other:?}"),
        }
        let mut p = policy();
        p.workdir = "/no/such/dir".into();
        let (send, mut hub) = tokio::io::duplex(4096);
        let (_keep, recv) = tokio::io::duplex(64);
        run(Path::new("/bin/true"), &[], &p, &start(0), send, recv).await;
        match read_frame::<AgentEvent, _>(&mut hub, MAX_EXEC_FRAME).await {
            Ok(Some(AgentEvent::Failed(f))) => assert_eq!(
                f.message,
                "working directory /no/such/dir does not exist (workdir in agent.toml)"
            ),
            other => panic!("{other:?}"),
        }
    }
}
