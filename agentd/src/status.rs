//! `status.json` in the data directory: the link state as the running agent sees it, rewritten
//! (atomically) at every change, so `agentd status` and monitoring scripts can tell "running" from
//! "connected" without talking to the hub.

use crate::LinkState;
use flotilla_certs::clock::now_ms;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::sync::watch;

/// File name inside the data directory.
pub const STATUS_FILE: &str = "status.json";

/// What the file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// `connected`, `disconnected` or `stopped`.
    pub state: String,
    /// When this state began, milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// The agent's process id (a stale file names a dead one).
    pub pid: u32,
    /// agentd's version.
    pub version: String,
    /// Hub addresses the agent dials.
    pub hubs: Vec<String>,
    /// Identity as the hub knows it, once connected.
    pub id: Option<String>,
    /// Name in the registry, once connected.
    pub name: Option<String>,
    /// Why it is not connected.
    pub reason: Option<String>,
}

impl AgentStatus {
    /// Whether the link is up (the hub's welcome arrived).
    pub fn connected(&self) -> bool {
        self.state == "connected"
    }
}

fn of(state: &LinkState, hubs: &[String], stopped: bool) -> AgentStatus {
    let (word, id, name, reason) = match state {
        _ if stopped => ("stopped", None, None, Some("agent stopped".to_string())),
        LinkState::Connected { id, name } => {
            ("connected", Some(id.to_string()), Some(name.clone()), None)
        }
        LinkState::Disconnected(reason) => ("disconnected", None, None, Some(reason.clone())),
    };
    AgentStatus {
        state: word.into(),
        since_ms: now_ms(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        hubs: hubs.to_vec(),
        id,
        name,
        reason,
    }
}

/// Reads the status file of the agent whose data directory is `data_dir`; `None` if it never ran.
pub fn read(data_dir: &Path) -> std::io::Result<Option<AgentStatus>> {
    match std::fs::read(data_dir.join(STATUS_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

async fn write(path: PathBuf, status: AgentStatus) {
    let Ok(bytes) = serde_json::to_vec_pretty(&status) else {
        return;
    };
    let res =
        tokio::task::spawn_blocking(move || deploy::files::write_atomic(&path, &bytes, 0o600))
            .await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not write the status file"),
        Err(e) => tracing::warn!(error = %e, "status file writer failed"),
    }
}

/// Writes the status at every link state change until the link's sender is dropped (the agent
/// stopped), then a last time as `stopped`.
pub(crate) async fn run(path: PathBuf, hubs: Vec<String>, mut state: watch::Receiver<LinkState>) {
    loop {
        let current = state.borrow_and_update().clone();
        write(path.clone(), of(&current, &hubs, false)).await;
        if state.changed().await.is_err() {
            break;
        }
    }
    let last = state.borrow().clone();
    write(path, of(&last, &hubs, true)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_follows_the_link_and_ends_stopped() {
        let dir = tempfile::tempdir().expect("tmp");
        let (tx, rx) = watch::channel(LinkState::Disconnected("starting".into()));
        let task = tokio::spawn(run(
            dir.path().join(STATUS_FILE),
            vec!["127.0.0.1:4433".into()],
            rx,
        ));
        let id = flotilla_wire::IdentityId::from_random(flotilla_wire::Role::Agent, [7; 8]);
        tx.send_replace(LinkState::Connected {
            id: id.clone(),
            name: "web-1".into(),
        });
        drop(tx);
        task.await.expect("writer");
        let status = read(dir.path()).expect("read").expect("written");
        assert_eq!(status.state, "stopped");
        assert_eq!(status.pid, std::process::id());
        assert_eq!(status.hubs, ["127.0.0.1:4433"]);
        assert_eq!(read(&dir.path().join("none")).expect("missing"), None);
    }
}
