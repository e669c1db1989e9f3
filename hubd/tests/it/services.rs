//! systemd units against a real systemd (PID 1 in a podman container): the agent's inventory over
//! D-Bus; unit actions as jobs and unit journals through a real hub, `flotilla service` and
//! `flotilla logs --unit`, with the real agentd running inside the container under each services
//! policy; the journal reader's tail and follow on its own.

use crate::harness::exec::{exec_text, query};
use crate::harness::flotilla_bin;
use crate::harness::systemd::{SystemdBox, UnitFile, podman_present};
use crate::harness::{Daemon, Fleet, agentd_bin, run_cmd, run_json};
use agentd::workloads::journal::{self, JournalRequest};
use agentd::workloads::services::{Bus, UnitSource};
use flotilla_wire::exec::{ExecCommand, ExecRequest, OutputStream, Query, QueryReply};
use flotilla_wire::io::read_frame;
use flotilla_wire::limits::MAX_LOGS_FRAME;
use flotilla_wire::workloads::{Access, LogFrame, ServiceAction, SourceState, UnitInfo};
use flotilla_wire::{IdentityId, Role};
use std::path::Path;
use std::time::Duration;

/// A service that runs until stopped, with a reload command; enabled, so it starts at boot.
const SLEEPER: UnitFile = UnitFile {
    name: "fl-sleep.service",
    text: "[Unit]\nDescription=Flotilla test sleeper\n[Service]\nExecStart=/usr/bin/sleep infinity\nExecReload=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    enabled: true,
};
/// A service that fails as it starts.
const FAILING: UnitFile = UnitFile {
    name: "fl-fail.service",
    text: "[Unit]\nDescription=Flotilla test failure\n[Service]\nExecStart=/bin/false\n[Install]\nWantedBy=multi-user.target\n",
    enabled: true,
};
/// A service that dies every time and is restarted every time. Started after boot: its restart
/// jobs would keep the boot from ever finishing.
const FLAPPING: UnitFile = UnitFile {
    name: "fl-flap.service",
    text: "[Unit]\nDescription=Flotilla test flapper\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/false\nRestart=always\nRestartSec=1\n",
    enabled: false,
};
/// A one-shot that writes a line to stdout and an error-priority line (`<3>` prefix) per run.
const ECHO: UnitFile = UnitFile {
    name: "fl-echo.service",
    text: "[Unit]\nDescription=Flotilla test echo\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo hello-$$$$; echo \"<3>trouble-$$$$\"'\n",
    enabled: false,
};

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn unit<'a>(units: &'a [UnitInfo], name: &str) -> Option<&'a UnitInfo> {
    units.iter().find(|u| u.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_shows_running_failed_and_restarting_units_with_stats() {
    if !podman_present(
        "services::the_inventory_shows_running_failed_and_restarting_units_with_stats",
    ) {
        return;
    }
    let shared = tempfile::tempdir().expect("temp dir");
    let sd = SystemdBox::boot(&[SLEEPER, FAILING, FLAPPING, ECHO], shared.path());
    sd.systemctl(&["start", "--no-block", FLAPPING.name]);
    let mut source = UnitSource::open_on(Access::Read, Bus::Address(sd.bus_address())).await;
    let SourceState::Up { name, version } = source.state() else {
        panic!(
            "systemd answers on the container's bus: {:?}",
            source.state()
        );
    };
    assert_eq!(name, "systemd");
    assert!(!version.is_empty());

    // The flapper restarts once a second: wait until it has done so at least twice.
    let began = std::time::Instant::now();
    let (first_calls, units, stats) = loop {
        let (units, stats) = source.poll().await;
        let calls = source.calls_last_poll();
        if unit(&units, FLAPPING.name).is_some_and(|u| u.restarts >= 2) {
            break (calls, units, stats);
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the flapping unit did not restart twice: {units:#?}"
        );
        // Polled: the unit source is read as the agent reads it, one poll per interval; the
        // pause stands in for that interval, bounded by the deadline above.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = first_calls;

    let sleeper = unit(&units, SLEEPER.name).expect("sleeper listed");
    assert_eq!(sleeper.description, "Flotilla test sleeper");
    assert_eq!(
        (
            sleeper.load_state.as_str(),
            sleeper.active_state.as_str(),
            sleeper.sub_state.as_str()
        ),
        ("loaded", "active", "running")
    );
    assert_eq!(sleeper.unit_file_state, "enabled");
    let pid = sd.property(SLEEPER.name, "MainPID");
    assert_eq!(sleeper.main_pid.map(|p| p.to_string()), Some(pid));
    assert!(sleeper.since_ms.is_some_and(|ms| ms > 1_600_000_000_000));
    assert!(!sleeper.failed());
    let sleeper_stats = stats
        .iter()
        .find(|s| s.name == SLEEPER.name)
        .expect("an active unit has stats");
    // Memory comes from the unit's cgroup as systemd reports it; where the cgroup controllers are
    // not delegated to the container (cgroup v1 hosts), systemd says "[not set]" and so do we.
    match sd.property(SLEEPER.name, "MemoryCurrent").parse::<u64>() {
        Ok(_) => assert!(
            sleeper_stats.memory_bytes.is_some_and(|m| m > 0),
            "memory from the unit's cgroup: {sleeper_stats:?}"
        ),
        Err(_) => assert_eq!(sleeper_stats.memory_bytes, None, "{sleeper_stats:?}"),
    }

    let failed = unit(&units, FAILING.name).expect("failed unit listed");
    assert!(failed.failed(), "{failed:?}");
    assert_eq!(failed.main_pid, None);
    let flapper = unit(&units, FLAPPING.name).expect("flapper listed");
    let shown: u32 = sd.property(FLAPPING.name, "NRestarts").parse().expect("n");
    assert!(
        flapper.restarts >= 2 && flapper.restarts <= shown,
        "{flapper:?} vs {shown}"
    );
    assert!(
        units
            .iter()
            .all(|u| u.name.ends_with(".service") || u.failed())
    );

    // A steady poll reads only what runs: ListUnits plus one read per active service, fewer calls
    // than a poll that met every unit for the first time.
    let fresh = UnitSource::open_on(Access::Read, Bus::Address(sd.bus_address())).await;
    let mut fresh = fresh;
    let (all, _) = fresh.poll().await;
    let first = fresh.calls_last_poll();
    let (_, stats) = fresh.poll().await;
    let steady = fresh.calls_last_poll();
    eprintln!(
        "D-Bus calls per poll: {first} on the first, {steady} steady, for {} units listed",
        all.len()
    );
    assert!(steady < first, "steady poll {steady} calls, first {first}");
    assert!(
        steady as usize <= 1 + all.len(),
        "steady poll {steady} calls for {} units",
        all.len()
    );
    let cpu = stats
        .iter()
        .find(|s| s.name == SLEEPER.name)
        .expect("stats every poll while active")
        .cpu_pct;
    // Like memory: a percentage where systemd has CPU accounting for the unit, else none.
    match sd.property(SLEEPER.name, "CPUUsageNSec").parse::<u64>() {
        Ok(_) => assert!(
            cpu.is_some_and(|c| (0.0..=200.0).contains(&c)),
            "cpu over the interval: {cpu:?}"
        ),
        Err(_) => assert_eq!(cpu, None),
    }

    // A unit stopped behind the source's back shows up changed on the next poll.
    sd.systemctl(&["stop", SLEEPER.name]);
    let (units, stats) = fresh.poll().await;
    let sleeper = unit(&units, SLEEPER.name).expect("still loaded");
    assert_eq!(sleeper.active_state, "inactive");
    assert_eq!(sleeper.main_pid, None);
    assert!(
        stats.iter().all(|s| s.name != SLEEPER.name),
        "no stats once stopped"
    );

    // `services = "off"` reads nothing at all.
    let mut off = UnitSource::open_on(Access::Off, Bus::Address(sd.bus_address())).await;
    assert_eq!(off.state(), SourceState::Absent);
    assert!(off.poll().await.0.is_empty());
}

/// Enrols an agent with the real agentd binary and writes its agent.toml.
async fn enrol(fleet: &Fleet, data: &Path, name: &str, toml: &str) -> IdentityId {
    let token = fleet.token(Role::Agent, 1, Vec::new()).await.token;
    let enrolled = run_json(
        &agentd_bin(),
        &[
            "--data-dir",
            path_str(data),
            "enroll",
            "--token",
            &token,
            "--name",
            name,
            "--json",
        ],
    )
    .await;
    std::fs::write(data.join("agent.toml"), toml).expect("agent.toml");
    IdentityId::parse(enrolled["id"].as_str().expect("id")).expect("an identity id")
}

fn service(selector: &str, action: ServiceAction, units: &[&str]) -> ExecRequest {
    ExecRequest {
        selector: selector.into(),
        command: ExecCommand::Service {
            action,
            units: units.iter().map(|s| s.to_string()).collect(),
        },
        timeout_ms: 60_000,
        batch: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_actions_and_journals_through_the_hub_under_each_services_policy() {
    if !podman_present(
        "services::unit_actions_and_journals_through_the_hub_under_each_services_policy",
    ) {
        return;
    }
    let fleet = Fleet::builder().start().await;
    let shared = fleet.dir.path().join("agents");
    std::fs::create_dir_all(&shared).expect("agents dir");
    let sd = SystemdBox::boot(&[SLEEPER, FAILING, FLAPPING, ECHO], &shared);
    let policies = [
        ("sd-manage", "services = \"manage\"\n"),
        ("sd-read", ""),
        ("sd-off", "services = \"off\"\n"),
        (
            "sd-allow",
            "services = \"manage\"\nservices_allow = [\"fl-sl*\"]\n",
        ),
    ];
    let mut ids = Vec::new();
    let mut daemons: Vec<Daemon> = Vec::new();
    for (name, toml) in policies {
        let data = shared.join(name);
        ids.push(enrol(&fleet, &data, name, toml).await);
        daemons.push(sd.spawn_agentd(&data));
    }
    let refs: Vec<&IdentityId> = ids.iter().collect();
    fleet.wait_online(&refs, Duration::from_secs(60)).await;
    let admin = fleet.admin_client().await;
    let run = |req: ExecRequest| {
        let admin = &admin;
        async move { exec_text(admin, &req).await }
    };

    // manage: stop, start, restart (a new main process), reload.
    let (status, out, err) = run(service("sd-manage", ServiceAction::Stop, &[SLEEPER.name])).await;
    assert_eq!(status, 0, "{out}{err}");
    assert!(
        out.contains("fl-sleep.service: stop done, now inactive (dead)"),
        "{out}"
    );
    assert_eq!(sd.systemctl(&["is-active", SLEEPER.name]), "inactive");
    let (status, out, _) = run(service("sd-manage", ServiceAction::Start, &[SLEEPER.name])).await;
    assert_eq!(status, 0);
    assert!(
        out.contains("fl-sleep.service: start done, now active (running)"),
        "{out}"
    );
    assert_eq!(sd.systemctl(&["is-active", SLEEPER.name]), "active");
    let before = sd.property(SLEEPER.name, "MainPID");
    let (status, out, _) = run(service(
        "sd-manage",
        ServiceAction::Restart,
        &[SLEEPER.name],
    ))
    .await;
    assert_eq!(status, 0, "{out}");
    let after = sd.property(SLEEPER.name, "MainPID");
    assert_ne!(before, after, "restart gives a new main process");
    let (status, out, _) = run(service("sd-manage", ServiceAction::Reload, &[SLEEPER.name])).await;
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("fl-sleep.service: reload done"), "{out}");

    // A unit that fails to start, one without a reload command and one that does not exist: each
    // its own line on stderr, the others still run, the job exits 1.
    let (status, out, err) = run(service(
        "sd-manage",
        ServiceAction::Reload,
        &[FAILING.name, "no-such.service", SLEEPER.name],
    ))
    .await;
    assert_eq!(status, 1, "{out}{err}");
    assert!(err.contains("fl-fail.service: reload failed"), "{err}");
    assert!(err.contains("no-such.service: reload failed"), "{err}");
    assert!(out.contains("fl-sleep.service: reload done"), "{out}");

    // disable then enable: the unit file state follows.
    let (status, out, _) = run(service(
        "sd-manage",
        ServiceAction::Disable,
        &[SLEEPER.name],
    ))
    .await;
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("fl-sleep.service: disabled"), "{out}");
    assert_eq!(sd.systemctl(&["is-enabled", SLEEPER.name]), "disabled");
    let (status, out, _) = run(service("sd-manage", ServiceAction::Enable, &[SLEEPER.name])).await;
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("created symlink"), "{out}");
    assert_eq!(sd.systemctl(&["is-enabled", SLEEPER.name]), "enabled");

    // read and off refuse every action, naming the policy; nothing changes.
    for action in ServiceAction::ALL {
        for (agent, word) in [("sd-read", "read"), ("sd-off", "off")] {
            let (status, out, err) = run(service(agent, action, &[SLEEPER.name])).await;
            assert_eq!(status, 1, "{agent} {action:?}: {out}");
            assert!(
                err.contains(&format!(
                    "refused by this agent's services policy (services = \"{word}\")"
                )),
                "{agent} {action:?}: {err}"
            );
        }
    }
    assert_eq!(sd.systemctl(&["is-active", SLEEPER.name]), "active");
    assert_eq!(sd.systemctl(&["is-enabled", SLEEPER.name]), "enabled");

    // The allowlist: fl-sleep matches, fl-flap does not, and a job naming both runs on
    // neither.
    let (status, out, err) =
        run(service("sd-allow", ServiceAction::Restart, &[SLEEPER.name])).await;
    assert_eq!(status, 0, "{out}{err}");
    let (status, _, err) = run(service(
        "sd-allow",
        ServiceAction::Stop,
        &[SLEEPER.name, FLAPPING.name],
    ))
    .await;
    assert_eq!(status, 1);
    assert!(
        err.contains("services_allow = [\"fl-sl*\"]): fl-flap.service matches none of the globs"),
        "{err}"
    );
    assert_eq!(sd.systemctl(&["is-active", SLEEPER.name]), "active");

    // The same through `flotilla service`: exit 0, 1 when refused, 2 for a target without agents.
    let cli = |args: Vec<&'static str>| {
        let dir = fleet.paths.admin_dir();
        async move {
            let mut all = vec!["--no-mux", "--login-dir", path_str(&dir)];
            all.extend(args);
            let all: Vec<String> = all.into_iter().map(String::from).collect();
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            let out = run_cmd(&flotilla_bin(), &all).await;
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, out, err) = cli(vec!["service", "stop", "sd-manage/fl-sleep.service"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("fl-sleep.service: stop done, now inactive (dead)"),
        "{out}"
    );
    assert_eq!(sd.systemctl(&["is-active", SLEEPER.name]), "inactive");
    let (code, out, err) = cli(vec![
        "service",
        "start",
        "sd-manage/fl-sleep.service",
        "--json",
    ])
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e.to_string().contains("fl-sleep.service: start done")),
        "{out}"
    );
    assert_eq!(sd.systemctl(&["is-active", SLEEPER.name]), "active");
    let (code, _, err) = cli(vec!["service", "stop", "sd-read/fl-sleep.service"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("services = \"read\""), "{err}");
    let (code, _, err) = cli(vec!["service", "stop", "fl-sleep.service"]).await;
    assert_eq!(code, Some(2));
    assert!(err.contains("give SELECTOR/UNIT"), "{err}");
    assert_eq!(sd.systemctl(&["is-active", SLEEPER.name]), "active");

    // The inventory through the hub: `flotilla services` lists what systemd says, failed units
    // flagged, and follows a state change; an agent with services = "off" reports none.
    let listing = |selector: &'static str, failed: bool| {
        let cli = &cli;
        async move {
            let mut args = vec!["services", selector, "--json"];
            if failed {
                args.push("--failed");
            }
            let (code, out, err) = cli(args).await;
            assert_eq!(code, Some(0), "{out}{err}");
            let rows: Vec<serde_json::Value> = if out.trim().is_empty() {
                Vec::new()
            } else {
                serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
            };
            rows.iter()
                .map(|r| {
                    (
                        r["info"]["name"].as_str().unwrap_or_default().to_string(),
                        r["info"]["active_state"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let began = std::time::Instant::now();
    let state_of = |rows: &[(String, String)], unit: &str| {
        rows.iter().find(|(n, _)| n == unit).map(|(_, s)| s.clone())
    };
    loop {
        let rows = listing("sd-read", false).await;
        if state_of(&rows, SLEEPER.name).as_deref() == Some("active")
            && state_of(&rows, FAILING.name).as_deref() == Some("failed")
        {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "listing via the hub: {rows:?}"
        );
        // Polled: the hub pushes no event when a unit's state changes (only counts), so the
        // listing is asked again; the pause is the wait, bounded by the deadline above.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let failed = listing("sd-read", true).await;
    assert!(state_of(&failed, FAILING.name).is_some(), "{failed:?}");
    assert!(state_of(&failed, SLEEPER.name).is_none(), "{failed:?}");
    assert!(
        listing("sd-off", false).await.is_empty(),
        "services = off reports no units"
    );
    let (code, _, _) = cli(vec!["service", "stop", "sd-manage/fl-sleep.service"]).await;
    assert_eq!(code, Some(0));
    let began = std::time::Instant::now();
    while state_of(&listing("sd-read", false).await, SLEEPER.name).as_deref() != Some("inactive") {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the stop never showed in the listing"
        );
        // Polled, as above: a unit's state change is not pushed to operators.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (code, _, _) = cli(vec!["service", "start", "sd-manage/fl-sleep.service"]).await;
    assert_eq!(code, Some(0));

    // The journal through the hub's logs relay and `flotilla logs --unit`: the tail, the policy,
    // and following until the reader goes away, which stops journalctl on the agent.
    for _ in 0..2 {
        assert_eq!(sd.systemctl(&["start", ECHO.name]), "");
    }
    let began = std::time::Instant::now();
    loop {
        let (code, out, err) = cli(vec!["logs", "sd-read", "--unit", "fl-echo", "-n", "200"]).await;
        assert_eq!(code, Some(0), "{out}{err}");
        if out.matches("hello-").count() >= 2 {
            assert!(
                err.contains("trouble-"),
                "error priority goes to stderr: {err}"
            );
            assert!(!out.contains("trouble-"), "{out}");
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "journal via the hub: {out}{err}"
        );
        // Polled: journald writes the entries on its own time and says nothing; each try is a
        // fresh `flotilla logs` tail, bounded by the deadline above.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (code, out, err) = cli(vec!["logs", "sd-off", "--unit", "fl-echo"]).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(err.contains("services = \"off\""), "{err}");
    let dir = fleet.paths.admin_dir();
    let mut follower = tokio::process::Command::new(flotilla_bin())
        .args(["--no-mux", "--login-dir", path_str(&dir)])
        .args(["logs", "sd-read", "--unit", "fl-echo", "-f", "-n", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("flotilla logs -f");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        follower.stdout.take().expect("stdout"),
    ));
    // Each start while following adds a line; keep starting until one arrives (the follower may
    // not have reached journalctl's end yet when the first run writes).
    let followed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            assert_eq!(sd.systemctl(&["start", ECHO.name]), "");
            let next = tokio::time::timeout(Duration::from_secs(3), lines.next_line()).await;
            if let Ok(line) = next {
                let line = line.expect("read").expect("a line, not the end");
                if line.contains("hello-") {
                    return line;
                }
            }
        }
    })
    .await
    .expect("a new run's line arrives while following");
    assert!(followed.contains("hello-"), "{followed}");
    assert!(
        sd.exec(&["pgrep", "-x", "journalctl"]).status.success(),
        "journalctl follows on the agent while someone reads"
    );
    let _ = follower.kill().await;
    sd.wait_until("journalctl stopped after the reader left", |sd| {
        !sd.exec(&["pgrep", "-x", "journalctl"]).status.success()
    });

    // Viewers may not act at all: the hub refuses before any agent is asked.
    let viewer = fleet.client_as(Role::Viewer, "vera").await;
    let (status, _, err) = exec_text(
        &viewer,
        &service("sd-manage", ServiceAction::Stop, &[SLEEPER.name]),
    )
    .await;
    assert_eq!(status, 1);
    assert!(err.contains("exec needs the operator role"), "{err}");
    assert_eq!(sd.systemctl(&["is-active", SLEEPER.name]), "active");

    // Every action is a job with an audit record naming the command.
    let audit = query(&admin, Query::Audit { limit: 200 })
        .await
        .expect("audit");
    let details: Vec<String> = audit
        .iter()
        .filter_map(|r| match r {
            QueryReply::Audit(e) => Some(e.detail.clone()),
            _ => None,
        })
        .collect();
    for command in [
        "service stop fl-sleep.service",
        "service enable fl-sleep.service",
        "service disable fl-sleep.service",
    ] {
        assert!(
            details.iter().any(|d| d.contains(command)),
            "no audit record of {command}: {details:#?}"
        );
    }
    drop(daemons);
    admin.close().await;
    viewer.close().await;
}

/// Reads frames to `End` or until `want` data frames came (following never ends by itself).
async fn read_logs(hub: &mut tokio::io::DuplexStream, want: usize) -> (Vec<LogFrame>, bool) {
    let mut frames = Vec::new();
    let mut ended = false;
    let data = |f: &[LogFrame]| {
        f.iter()
            .filter(|f| matches!(f, LogFrame::Data { .. }))
            .count()
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        while data(&frames) < want {
            match read_frame::<LogFrame, _>(hub, MAX_LOGS_FRAME).await {
                Ok(Some(LogFrame::End)) => {
                    ended = true;
                    return;
                }
                Ok(Some(f)) => frames.push(f),
                other => panic!("logs stream broke: {other:?}"),
            }
        }
    })
    .await
    .expect("journal frames in time");
    (frames, ended)
}

fn texts(frames: &[LogFrame]) -> Vec<(OutputStream, String)> {
    frames
        .iter()
        .filter_map(|f| match f {
            LogFrame::Data { stream, data, .. } => {
                Some((*stream, String::from_utf8_lossy(&data.0).into_owned()))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_of_a_unit_is_tailed_and_followed() {
    if !podman_present("services::the_journal_of_a_unit_is_tailed_and_followed") {
        return;
    }
    let shared = tempfile::tempdir().expect("temp dir");
    let sd = SystemdBox::boot(&[SLEEPER, ECHO], shared.path());
    for _ in 0..3 {
        assert_eq!(sd.systemctl(&["start", ECHO.name]), "");
    }
    let req = |tail: u32, follow: bool| JournalRequest {
        unit: "fl-echo".into(),
        tail,
        follow,
        user: false,
        directory: Some(sd.journal_dir()),
    };
    let hellos = |frames: &[LogFrame]| {
        texts(frames)
            .into_iter()
            .filter(|(_, t)| t.starts_with("hello-"))
            .count()
    };
    // Wait until the journal holds the three runs (journald writes as it goes).
    let began = std::time::Instant::now();
    let everything = loop {
        let (mut hub, agent) = tokio::io::duplex(1 << 20);
        let serving = tokio::spawn(journal::serve(
            Access::Read,
            req(1000, false),
            agent,
            std::future::pending(),
        ));
        let (frames, ended) = read_logs(&mut hub, usize::MAX).await;
        serving.await.expect("served");
        assert!(ended, "not following: the stream ends");
        assert_eq!(
            frames.first(),
            Some(&LogFrame::Started {
                resolved: "fl-echo.service".into()
            })
        );
        if hellos(&frames) == 3 {
            break frames;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "journal: {:?}",
            texts(&frames)
        );
        // Polled: journald writes the entries on its own time and says nothing; each try is a
        // fresh tail, bounded by the deadline above.
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let lines = texts(&everything);
    let troubles: Vec<_> = lines
        .iter()
        .filter(|(_, t)| t.starts_with("trouble-"))
        .collect();
    assert_eq!(troubles.len(), 3, "{lines:?}");
    assert!(
        troubles.iter().all(|(s, _)| *s == OutputStream::Stderr),
        "priority 3 is stderr"
    );
    assert!(
        lines
            .iter()
            .filter(|(_, t)| t.starts_with("hello-"))
            .all(|(s, _)| *s == OutputStream::Stdout)
    );
    assert!(everything.iter().all(|f| match f {
        LogFrame::Data { at_ms, data, .. } =>
            at_ms.is_some_and(|ms| ms > 1_600_000_000_000) && data.0.ends_with(b"\n"),
        _ => true,
    }));

    // Tail 2: exactly the last two entries.
    let (mut hub, agent) = tokio::io::duplex(1 << 20);
    let serving = tokio::spawn(journal::serve(
        Access::Read,
        req(2, false),
        agent,
        std::future::pending(),
    ));
    let (frames, ended) = read_logs(&mut hub, usize::MAX).await;
    serving.await.expect("served");
    assert!(ended);
    let tail = texts(&frames);
    assert_eq!(tail.len(), 2, "{tail:?}");
    assert_eq!(tail[..], lines[lines.len() - 2..]);

    // Follow: the tail, then a new run's lines as they are written; closing the stream ends it.
    let (mut hub, agent) = tokio::io::duplex(1 << 20);
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(journal::serve(
        Access::Read,
        req(1, true),
        agent,
        async move {
            let _ = close_rx.await;
        },
    ));
    let (first, ended) = read_logs(&mut hub, 1).await;
    assert!(!ended);
    assert_eq!(texts(&first).len(), 1);
    assert_eq!(sd.systemctl(&["start", ECHO.name]), "");
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !seen
            .iter()
            .any(|(_, t): &(OutputStream, String)| t.starts_with("trouble-"))
        {
            let (more, ended) = read_logs(&mut hub, 1).await;
            assert!(!ended, "following does not end by itself");
            seen.extend(texts(&more));
        }
    })
    .await
    .expect("the new run's lines arrive while following");
    let fresh: Vec<&String> = seen
        .iter()
        .map(|(_, t)| t)
        .filter(|t| t.starts_with("hello-"))
        .collect();
    assert_eq!(fresh.len(), 1, "{seen:?}");
    assert!(
        !lines.iter().any(|(_, t)| t == fresh[0]),
        "the followed line is the new run's, not an old one"
    );
    let _ = close_tx.send(());
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("closing the stream stops journalctl and the server")
        .expect("served");

    // services = "off" refuses, naming the policy.
    let (mut hub, agent) = tokio::io::duplex(1 << 20);
    journal::serve(Access::Off, req(10, false), agent, std::future::pending()).await;
    match read_frame::<LogFrame, _>(&mut hub, MAX_LOGS_FRAME).await {
        Ok(Some(LogFrame::Error(r))) => {
            assert!(r.message.contains("services = \"off\""), "{}", r.message)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
