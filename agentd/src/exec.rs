//! Exec on the agent: streams the hub opens on our connection, one per command or ping.
//!
//! - `policy`: what may run here (the agent's config decides; the hub cannot raise it).
//! - `process`: running one command in its own process group, output under back-pressure, cancel
//!   and timeout killing the whole group.
//! - `health`: the `health` built-in.
//! - `account`: `run_as`, and what a command must not inherit from agentd.
//!
//! Commands are killed when the link to the hub drops: nobody would see their output, and a
//! reconnecting hub has already reported them lost.

#[cfg(unix)]
pub mod account;
pub mod health;
pub mod policy;
#[cfg(unix)]
mod process;

pub use policy::{ExecPolicy, PolicyError, Runnable};

use flotilla_certs::clock::now_ms;
use flotilla_wire::exec::{
    AgentEvent, Chunk, ExecFailure, ExecStart, ExitReport, FailureKind, HubStreamOpen,
    OutputStream, Pong,
};
use flotilla_wire::io::write_frame;
use flotilla_wire::limits::MAX_EXEC_FRAME;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Why a Windows agent refuses programs: stopping a command means stopping everything it started,
/// which agentd does with process groups on Unix and has no Windows equivalent for yet (a job
/// object). The `health` builtin still runs.
#[cfg(not(unix))]
const WINDOWS_EXEC: &str =
    "exec of programs is not supported on Windows agents yet (only the health builtin runs)";

/// Why a Windows agent refuses unit actions: there is no systemd.
#[cfg(not(unix))]
const WINDOWS_SERVICES: &str = "systemd unit actions are not supported on Windows agents";

/// Commands one agent runs at once. Each holds a hub stream (the hub's connection window is
/// shared), two pipes and a process group; more than this is a runaway script, not a fleet job.
pub const MAX_CONCURRENT_EXEC: usize = 32;

/// What exec streams share: the policy, the slots and the workloads (container actions, logs).
pub struct ExecContext {
    /// Policy and process settings.
    pub policy: ExecPolicy,
    /// Containers and compose, under the policy's workload settings.
    pub workloads: Arc<crate::workloads::Workloads>,
    /// Runs the slow host collectors when the hub asks (`None`: no host collectors, as in swarm).
    pub host: Option<crate::host::HostHandle>,
    slots: Arc<Semaphore>,
}

impl ExecContext {
    /// A context with all slots free.
    pub fn new(policy: ExecPolicy) -> Self {
        let workloads = Arc::new(crate::workloads::Workloads::new(policy.workloads.clone()));
        Self {
            policy,
            workloads,
            host: None,
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_EXEC)),
        }
    }

    fn slots_in_use(&self) -> usize {
        MAX_CONCURRENT_EXEC - self.slots.available_permits()
    }
}

async fn fail(send: &mut quinn::SendStream, kind: FailureKind, message: String) {
    let ev = AgentEvent::Failed(ExecFailure { kind, message });
    let _ = write_frame(send, &ev, MAX_EXEC_FRAME).await;
    let _ = send.finish();
}

/// Serves an exec or ping stream the hub opened, whose opener the link has read.
pub async fn serve_open(
    ctx: Arc<ExecContext>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    open: HubStreamOpen,
) {
    match open {
        HubStreamOpen::Ping { .. } => {
            let pong = Pong {
                agent_time_ms: now_ms(),
            };
            let _ = write_frame(&mut send, &pong, MAX_EXEC_FRAME).await;
            let _ = send.finish();
        }
        HubStreamOpen::Exec(start) => {
            let span = tracing::info_span!("exec", job = %start.job);
            run(ctx, conn, start, send, recv).instrument(span).await
        }
        other => {
            tracing::warn!(?other, "not an exec stream");
            let _ = send.reset(flotilla_wire::ErrorCode::BadRequest.as_u32().into());
        }
    }
}

/// The search path compose tools are looked up in (the commands' clean `PATH`).
#[cfg(unix)]
const CLEAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The process settings of a compose job: in the project folder, as agentd's own account (the one
/// with access to the engine socket), with `DOCKER_HOST` naming the engine agentd uses.
#[cfg(unix)]
fn compose_policy(ctx: &ExecContext, dir: &std::path::Path) -> Result<ExecPolicy, String> {
    let mut policy = ctx.policy.clone();
    policy.workdir = dir.to_path_buf();
    policy.run_as = None;
    policy
        .env
        .extend(ctx.policy.workloads.compose_env.iter().cloned());
    let engine = &ctx.workloads.engine;
    let socket = engine.socket().or_else(|| {
        ctx.policy
            .workloads
            .engine_sockets
            .iter()
            .find(|s| s.exists())
            .cloned()
    });
    match socket {
        Some(s) => policy
            .env
            .push(("DOCKER_HOST".into(), format!("unix://{}", s.display()))),
        None => {
            return Err(
                "no container engine socket found for compose (containers_socket in agent.toml)"
                    .into(),
            );
        }
    }
    Ok(policy)
}

async fn run(
    ctx: Arc<ExecContext>,
    conn: quinn::Connection,
    start: ExecStart,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let Ok(_slot) = ctx.slots.clone().try_acquire_owned() else {
        let message =
            format!("agent is already running {MAX_CONCURRENT_EXEC} commands; try again later");
        tracing::warn!(actor = %start.actor, "{message}");
        return fail(&mut send, FailureKind::Busy, message).await;
    };
    let runnable = match ctx.policy.check(&start.command) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(actor = %start.actor, command = %start.command.display(), reason = %e, "exec refused");
            return fail(&mut send, FailureKind::Refused, e.to_string()).await;
        }
    };
    tracing::info!(actor = %start.actor, command = %start.command.display(), timeout_ms = start.timeout_ms, "exec");
    match runnable {
        Runnable::Program { program, args } => {
            #[cfg(unix)]
            process::run(&program, &args, &ctx.policy, &start, send, recv).await;
            #[cfg(not(unix))]
            {
                let _ = (program, args, recv);
                fail(&mut send, FailureKind::Refused, WINDOWS_EXEC.into()).await;
            }
        }
        Runnable::Container {
            action,
            containers,
            stop_timeout_s,
        } => {
            let engine = &ctx.workloads.engine;
            crate::workloads::actions::run(
                engine,
                action,
                &containers,
                stop_timeout_s,
                &start,
                send,
                recv,
            )
            .await
        }
        Runnable::Compose {
            action,
            project,
            dir,
        } => {
            #[cfg(unix)]
            match compose_policy(&ctx, &dir) {
                Ok(policy) => match crate::workloads::compose::ComposeTool::find(CLEAN_PATH) {
                    Some(tool) => {
                        let (program, args) = tool.command(action, &project);
                        process::run(&program, &args, &policy, &start, send, recv).await;
                    }
                    None => {
                        let message = "no compose tool on this agent: install the docker compose plugin, docker-compose or podman-compose".to_string();
                        fail(&mut send, FailureKind::Spawn, message).await;
                    }
                },
                Err(message) => fail(&mut send, FailureKind::Spawn, message).await,
            }
            #[cfg(not(unix))]
            {
                let _ = (action, project, dir, recv);
                fail(&mut send, FailureKind::Refused, WINDOWS_EXEC.into()).await;
            }
        }
        Runnable::Service { action, units } => {
            #[cfg(unix)]
            crate::workloads::unit_actions::run(
                crate::workloads::services::Bus::for_this_process(),
                action,
                &units,
                &start,
                send,
                recv,
            )
            .await;
            #[cfg(not(unix))]
            {
                let _ = (action, units, recv);
                fail(&mut send, FailureKind::Refused, WINDOWS_SERVICES.into()).await;
            }
        }
        Runnable::Builtin(flotilla_wire::exec::Builtin::Health) => {
            let began = Instant::now();
            let facts = health::gather(
                Some(&conn),
                start.hub_time_ms,
                (ctx.slots_in_use(), MAX_CONCURRENT_EXEC),
            )
            .await;
            let (text, level) = health::report(&health::evaluate(&facts));
            let events = [
                AgentEvent::Output {
                    stream: OutputStream::Stdout,
                    data: Chunk(text.into_bytes()),
                },
                AgentEvent::Exited(ExitReport {
                    code: Some(level.code()),
                    signal: None,
                    duration_ms: began.elapsed().as_millis() as u64,
                    timed_out: false,
                    cancelled: false,
                }),
            ];
            for ev in events {
                if write_frame(&mut send, &ev, MAX_EXEC_FRAME).await.is_err() {
                    return;
                }
            }
            let _ = send.shutdown().await;
        }
    }
}
