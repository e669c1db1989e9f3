//! `flotilla mux`: run it in the foreground, `--check` whether one runs, `--stop` it.

use crate::client::Login;
use crate::mux::{self, Master, MuxEnd, MuxOptions};
use anyhow::Context;

/// How long `flotilla mux --stop` waits for the mux to remove its socket: it resets its streams
/// (up to 2 s) and closes its connection (up to 1 s) first.
const MUX_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `flotilla mux`: runs the mux in the foreground until SIGINT, SIGTERM, `--persist` idle time, or
/// the hub connection ends (exit 1).
pub(super) async fn mux_run(login: &Login, opts: MuxOptions) -> anyhow::Result<u8> {
    use tokio::signal::unix::{SignalKind, signal};
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let on_signal = cancel.clone();
    let signals = tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        on_signal.cancel();
    });
    // Dialling may take a while (10 s per hub address); a signal meanwhile stops it.
    let master = tokio::select! {
        m = Master::start(login, &opts) => m,
        _ = cancel.cancelled() => {
            eprintln!("flotilla mux: stopped before it started");
            return Ok(0);
        }
    };
    let master = match master {
        Ok(m) => m,
        Err(e) => {
            signals.abort();
            return Err(e).context("mux not started");
        }
    };
    let w = master.welcome();
    eprintln!(
        "flotilla mux: {} ({}) on hub {}; listening on {}; Ctrl-C stops it",
        w.name,
        w.role,
        w.hub_version,
        master.socket().display()
    );
    let ended = master.run(cancel).await;
    signals.abort();
    match ended.context("mux stopped")? {
        MuxEnd::Stopped => eprintln!("flotilla mux: stopped"),
        MuxEnd::Idle => eprintln!("flotilla mux: no clients for the --persist time; stopped"),
    }
    Ok(0)
}

/// `flotilla mux --check`: exit 0 and say who it is when a mux answers, else exit 1.
pub(super) async fn mux_check(path: &std::path::Path, json: bool) -> anyhow::Result<u8> {
    match mux::probe(path).await {
        mux::Probe::Answered(a) => {
            let w = &a.welcome;
            if json {
                crate::util::outln!(
                    "{}",
                    serde_json::json!({
                        "running": true, "socket": path, "pid": a.pid, "identity": w.identity,
                        "name": w.name, "role": w.role, "hub_version": w.hub_version,
                    })
                )?;
            } else {
                crate::util::outln!(
                    "mux running (pid {}): {} ({}) on hub {} at {}",
                    a.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    w.name,
                    w.role,
                    w.hub_version,
                    path.display()
                )?;
            }
            Ok(0)
        }
        other => {
            if json {
                crate::util::outln!(
                    "{}",
                    serde_json::json!({ "running": false, "socket": path, "state": other.to_string() })
                )?;
            } else {
                eprintln!("flotilla: no mux at {}: {other}", path.display());
            }
            Ok(1)
        }
    }
}

/// `flotilla mux --stop`: exit 0 once the mux is gone, 1 when none ran.
pub(super) async fn mux_stop(path: &std::path::Path) -> anyhow::Result<u8> {
    match mux::stop(path, MUX_STOP_WAIT).await {
        Ok(Some(pid)) => {
            eprintln!("flotilla: mux (pid {pid}) stopped");
            Ok(0)
        }
        Ok(None) => {
            eprintln!("flotilla: no mux at {}", path.display());
            Ok(1)
        }
        Err(e) => anyhow::bail!("cannot stop the mux at {}: {e}", path.display()),
    }
}
