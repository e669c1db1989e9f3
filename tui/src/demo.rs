//! `flotilla demo`: a local hub and N agents in a temporary directory, enrolled with real tokens over
//! the real protocol, with the console attached. Spawns the `hubd` and `agentd` binaries that sit next
//! to this one (or on PATH); Ctrl-C stops all of it and removes the directory.

use crate::client::Login;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long the demo waits for the hub to write its address.
const HUB_START_TIMEOUT: Duration = Duration::from_secs(15);
/// Names of demo agents cycle through these roles, so filters and labels have something to show.
const ROLES: [&str; 3] = ["web", "db", "cache"];

fn binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name(name))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

async fn run_ok(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("start {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    std::fs::File::create(dir.join(name)).with_context(|| format!("create log {name}"))
}

/// Children stopped with SIGTERM (then killed) when the demo ends, even on error.
struct Fleet {
    children: Vec<Child>,
}

impl Fleet {
    async fn stop(&mut self) {
        for child in &self.children {
            if let Some(pid) = child.id() {
                // SAFETY: signalling a child process we spawned and still own.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// Starts the demo fleet and attaches the console (or prints events with `no_console`).
pub async fn run(agents: u32, no_console: bool) -> anyhow::Result<u8> {
    let dir = std::env::temp_dir().join(format!("flotilla-demo-{}", std::process::id()));
    crate::util::create_private_dir(&dir)?;
    let mut fleet = Fleet {
        children: Vec::new(),
    };
    let result = run_in(&dir, agents, no_console, &mut fleet).await;
    fleet.stop().await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("demo files (logs) kept in {}", dir.display());
    }
    result
}

async fn run_in(
    dir: &Path,
    agents: u32,
    no_console: bool,
    fleet: &mut Fleet,
) -> anyhow::Result<u8> {
    let hub_dir = dir.join("hub");
    let hubd = binary("hubd");
    let agentd = binary("agentd");
    eprintln!("starting demo hub and {agents} agents in {}", dir.display());
    run_ok(
        Command::new(&hubd).arg("--data-dir").arg(&hub_dir).args([
            "init",
            "--listen",
            "127.0.0.1:0",
            "--json",
        ]),
        "hubd init",
    )
    .await?;
    let hub = Command::new(&hubd)
        .arg("--data-dir")
        .arg(&hub_dir)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(dir, "hub.log")?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", hubd.display()))?;
    fleet.children.push(hub);
    let addr_file = hub_dir.join("hub.addr");
    let deadline = tokio::time::Instant::now() + HUB_START_TIMEOUT;
    // The hub writes its address once it listens; a short poll is the simplest cross-process signal.
    while !addr_file.exists() {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "hub did not start within {} s; see {}",
                HUB_START_TIMEOUT.as_secs(),
                dir.join("hub.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token_json = run_ok(
        Command::new(&hubd)
            .arg("--data-dir")
            .arg(&hub_dir)
            .args([
                "token", "create", "--role", "agent", "--ttl", "10m", "--json", "--label",
                "env=demo", "--uses",
            ])
            .arg(agents.max(1).to_string()),
        "hubd token create",
    )
    .await?;
    let token: serde_json::Value = serde_json::from_str(&token_json).context("token JSON")?;
    let token = token["token"]
        .as_str()
        .context("no token in hubd output")?
        .to_string();
    for i in 1..=agents {
        let role = ROLES[(i as usize - 1) % ROLES.len()];
        let name = format!("{role}-{i}");
        let agent_dir = dir.join(&name);
        run_ok(
            Command::new(&agentd)
                .arg("--data-dir")
                .arg(&agent_dir)
                .args([
                    "enroll",
                    "--name",
                    &name,
                    "--label",
                    &format!("role={role}"),
                ])
                .env("FLOTILLA_TOKEN", &token),
            "agentd enroll",
        )
        .await?;
        // Something to browse and copy in the console (files view, `c`).
        let shared = agent_dir.join("shared");
        std::fs::create_dir_all(shared.join("logs")).context("demo shared folder")?;
        std::fs::write(
            shared.join("welcome.txt"),
            format!("Hello from {name}. Copy me to another agent: select me and press c.\n"),
        )
        .context("demo file")?;
        std::fs::write(
            shared.join("logs").join(format!("{role}.log")),
            format!("{name}: service started\n"),
        )
        .context("demo file")?;
        let child = Command::new(&agentd)
            .arg("--data-dir")
            .arg(&agent_dir)
            .args(["run", "--exec", "any"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(dir, &format!("{name}.log"))?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", agentd.display()))?;
        fleet.children.push(child);
    }
    let login = Login::load(&hub_dir.join("admin"), None)?;
    if no_console || !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        eprintln!("demo fleet running; Ctrl-C stops it");
        let client = crate::client::Client::connect(&login).await?;
        crate::watch::watch(&client, false, false).await?;
        client.close().await;
        Ok(0)
    } else {
        // A throwaway fleet: its commands stay out of the user's history.
        crate::console::run_attached(login, None).await
    }
}
