//! A program with a TTY in a container, through the engine's exec API (Docker or Podman): create
//! an exec with `Tty`, start it attached, resize it, and read its exit code once its output ends.
//!
//! The engine offers no call to end an exec. Hanging up closes the attached connection (the
//! engine closes the TTY, and shells exit on the hang-up); a program that survives it is sent
//! SIGHUP by its host process id when agentd can see it.

use crate::workloads::containers::Engine;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use flotilla_wire::shell::{MAX_SHELL_CHUNK, ShellExit, ShellOpen};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Program when the request names none: every image with a shell has this one.
const CONTAINER_SHELL: &str = "/bin/sh";
/// Times the exit code is asked for after the output ended: the engine records it a moment
/// after it closes the stream.
const EXIT_POLLS: u32 = 50;
/// Pause between those asks: [`EXIT_POLLS`] of them span five seconds.
const EXIT_POLL_PAUSE: Duration = Duration::from_millis(100);

type OutputStream = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// The exec's output.
pub(super) struct Output {
    stream: OutputStream,
    /// What is left of a chunk larger than a frame takes.
    rest: Vec<u8>,
    ended: tokio::sync::watch::Sender<bool>,
}

/// The exec's input.
pub(super) struct Input(Pin<Box<dyn AsyncWrite + Send>>);

/// Resizes the exec and learns how it ended.
pub(super) struct ExecControl {
    docker: bollard::Docker,
    exec_id: String,
    ended: tokio::sync::watch::Receiver<bool>,
    exit: Option<ShellExit>,
}

/// Starts `open`'s command (or `/bin/sh`) in `container` with a TTY of the requested size.
pub(super) async fn start(
    engine: &Engine,
    container: &str,
    open: &ShellOpen,
) -> Result<(Output, Input, ExecControl), String> {
    let docker = engine.docker().await.map_err(|e| e.to_string())?;
    let cmd = if open.command.is_empty() {
        vec![CONTAINER_SHELL.to_string()]
    } else {
        open.command.clone()
    };
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(true),
                env: Some(vec![format!("TERM={}", open.term)]),
                cmd: Some(cmd),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| engine.error(container, e).to_string())?;
    let started = docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty: true,
                output_capacity: Some(MAX_SHELL_CHUNK),
            }),
        )
        .await
        .map_err(|e| engine.error(container, e).to_string())?;
    let StartExecResults::Attached { output, input } = started else {
        return Err(format!("the engine detached the shell in {container}"));
    };
    let (ended_tx, ended_rx) = tokio::sync::watch::channel(false);
    let mut control = ExecControl {
        docker,
        exec_id: created.id,
        ended: ended_rx,
        exit: None,
    };
    control.resize(open.size.cols, open.size.rows).await;
    Ok((
        Output {
            stream: output,
            rest: Vec::new(),
            ended: ended_tx,
        },
        Input(input),
        control,
    ))
}

impl Output {
    /// Next output, at most a chunk; `Ok(None)` when the exec's stream ended. Cancel-safe.
    pub(super) async fn read(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.rest.is_empty() {
            match self.stream.next().await {
                Some(Ok(out)) => self.rest = out.into_bytes().to_vec(),
                Some(Err(e)) => {
                    let _ = self.ended.send(true);
                    return Err(std::io::Error::other(e));
                }
                None => {
                    let _ = self.ended.send(true);
                    return Ok(None);
                }
            }
        }
        let n = self.rest.len().min(MAX_SHELL_CHUNK);
        Ok(Some(self.rest.drain(..n).collect()))
    }
}

impl Input {
    /// Writes some of `data`. Cancel-safe (tokio's `write`).
    pub(super) async fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(data).await?;
        self.0.flush().await?;
        Ok(n)
    }
}

impl ExecControl {
    /// Sets the TTY's size.
    pub(super) async fn resize(&mut self, cols: u16, rows: u16) {
        let size = ResizeExecOptions {
            height: rows,
            width: cols,
        };
        if let Err(e) = self.docker.resize_exec(&self.exec_id, size).await {
            tracing::debug!(error = %e, "container shell resize failed");
        }
    }

    /// Waits until the output ended, then for the engine to record the exit code. Cancel-safe.
    pub(super) async fn wait(&mut self) -> ShellExit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let _ = self.ended.wait_for(|e| *e).await;
        let mut exit = ShellExit::Code(255);
        for _ in 0..EXIT_POLLS {
            match self.docker.inspect_exec(&self.exec_id).await {
                Ok(r) if r.running != Some(true) => {
                    let code = r.exit_code.unwrap_or(255);
                    exit = ShellExit::Code(i32::try_from(code).unwrap_or(255));
                    break;
                }
                Ok(_) => tokio::time::sleep(EXIT_POLL_PAUSE).await,
                Err(e) => {
                    tracing::debug!(error = %e, "container shell exit unknown");
                    break;
                }
            }
        }
        self.exit = Some(exit);
        exit
    }

    /// Ends the exec if it still runs: the attach was dropped by then; SIGHUP by host pid when
    /// the engine reports one.
    pub(super) async fn hang_up(self) {
        if self.exit.is_some() {
            return;
        }
        if let Ok(r) = self.docker.inspect_exec(&self.exec_id).await
            && r.running == Some(true)
            && let Some(pid) = r.pid.and_then(|p| i32::try_from(p).ok())
            && pid > 0
        {
            // SAFETY: a signal to a process id the engine reported for this exec.
            unsafe { libc::kill(pid, libc::SIGHUP) };
        }
    }
}
