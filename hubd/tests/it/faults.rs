//! A bad network between everyone and the hub: a userspace proxy loses 5 % of datagrams, delays
//! each by 100 ms each way (200 ms round trip) with jitter that reorders them, and duplicates some.
//! Commands, metrics and copies must still come out exact; a copy must resume after the path is
//! cut for 30 s.

use crate::harness::console::render;
use crate::harness::files::{
    DEADLINE, Fleet, files_fleet_with, next_copy_event, partial_files, random_bytes, spawn_cp, spec,
};
use crate::harness::proxy::{FaultProxy, Faults};
use agentd::{AgentConfig, ExecMode};
use flotilla::app::App;
use flotilla::client::{Client, Login};
use flotilla::event::Event;
use flotilla::files::{CopyEvent, CopyOptions};
use flotilla_certs::Identity;
use flotilla_wire::exec::{ExecCommand, ExecRequest};
use flotilla_wire::msg::{FleetEvent, OpRequest, OpResponse};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The copy on the lossy path: hundreds of bulk packets, so losses land in it, yet short in a
/// debug build at 200 ms.
const LOSSY_LEN: usize = 1 << 20;
/// The copy that the cut interrupts: long enough to be running when the cut comes.
const CUT_LEN: usize = 4 << 20;

fn exec_any() -> AgentConfig {
    AgentConfig {
        exec: ExecMode::Any,
        kill_grace_ms: 500,
        ..AgentConfig::default()
    }
    .with_metrics_interval(1000)
}

/// A fleet of `src` (holding `big.bin`) and `dst` whose agents, and the returned login, reach the
/// hub only through the proxy.
async fn fleet_behind(file_len: usize) -> (Fleet, FaultProxy, Login) {
    let mut fleet = files_fleet_with(vec![
        spec("src").config(exec_any()).prepare(move |dir| {
            std::fs::write(dir.join("big.bin"), random_bytes(file_len, 7)).expect("file")
        }),
        spec("dst").config(exec_any()),
    ])
    .await;
    let hub = fleet.addr();
    let proxy = FaultProxy::start(hub).await;
    for name in ["src", "dst"] {
        let agent = fleet.agent_mut(name);
        agent.stop().await;
        Identity::save_hubs(&agent.paths.data_dir, &[proxy.hub()])
            .expect("point the agent at the proxy");
        let _ = agent.start();
        agent.wait_connected().await;
    }
    let login = Login::load(&fleet.paths.admin_dir(), Some(proxy.hub())).expect("login via proxy");
    (fleet, proxy, login)
}

async fn samples_of(client: &Client, name: &str) -> u64 {
    match client
        .request(&OpRequest::Metrics {
            query: name.into(),
            since_s: 3600,
        })
        .await
        .expect("metrics query")
    {
        OpResponse::Series(s) => s.points.iter().map(|p| u64::from(p.samples)).sum(),
        other => panic!("metrics answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_metrics_and_copies_stay_exact_at_5_percent_loss_and_200_ms() {
    let (fleet, proxy, login) = fleet_behind(LOSSY_LEN).await;
    proxy.set(Faults::lossy(0.05, Duration::from_millis(200)));
    let client = tokio::time::timeout(DEADLINE, Client::connect(&login))
        .await
        .expect("connects through a lossy path in time")
        .expect("connects");

    // A command whose 24 KB of output must arrive whole and in order.
    let req = ExecRequest {
        selector: "src".into(),
        command: ExecCommand::Argv {
            argv: vec!["seq".into(), "1".into(), "5000".into()],
            shell: false,
        },
        timeout_ms: 0,
        batch: 0,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = tokio::time::timeout(
        DEADLINE * 2,
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
    .expect("the command finishes in time")
    .expect("the command runs");
    assert_eq!(status, 0, "stderr: {}", String::from_utf8_lossy(&err));
    let numbers: Vec<u32> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| {
            l.rsplit(' ')
                .next()
                .unwrap_or(l)
                .trim()
                .parse()
                .expect("a number per line")
        })
        .collect();
    assert_eq!(
        numbers,
        (1..=5_000).collect::<Vec<u32>>(),
        "output lost, doubled or reordered"
    );

    // Metrics keep arriving from both agents: three live samples each reach a subscriber, and
    // the history holds them.
    let before: Vec<u64> = vec![
        samples_of(&client, "src").await,
        samples_of(&client, "dst").await,
    ];
    let ids = [fleet.agent("src").id.clone(), fleet.agent("dst").id.clone()];
    let mut feed = client.subscribe().await.expect("subscribe");
    let mut seen = [0u32; 2];
    tokio::time::timeout(DEADLINE, async {
        while seen.iter().any(|n| *n < 3) {
            let ev = feed
                .next()
                .await
                .expect("event")
                .expect("subscription open");
            if let FleetEvent::Metrics { id, .. } = ev
                && let Some(i) = ids.iter().position(|x| *x == id)
            {
                seen[i] += 1;
            }
        }
    })
    .await
    .expect("metrics samples keep arriving through the lossy path");
    for (name, before) in ["src", "dst"].into_iter().zip(before) {
        let now = samples_of(&client, name).await;
        assert!(
            now >= before + 3,
            "{name}'s history grew from {before} to {now} samples"
        );
    }

    // A 1 MiB copy relayed by the hub arrives byte for byte.
    let (task, _events) = spawn_cp(
        login.clone(),
        "src:big.bin",
        "dst:big.bin",
        CopyOptions::default(),
        CancellationToken::new(),
        |_| {},
    );
    tokio::time::timeout(DEADLINE * 4, task)
        .await
        .expect("copy finishes in time")
        .expect("copy task")
        .expect("copy succeeds");
    let dst = fleet
        .agents
        .iter()
        .find(|a| a.name == "dst")
        .expect("dst")
        .shared
        .join("big.bin");
    assert!(
        std::fs::read(&dst).expect("copied file") == random_bytes(LOSSY_LEN, 7),
        "copy differs"
    );

    // The console, fed by its own subscription through the same path, shows both agents with live
    // metrics, drawn at 80x24.
    let console = tokio::time::timeout(DEADLINE, Client::connect(&login))
        .await
        .expect("console connects in time")
        .expect("console connects");
    let mut app = App::new(flotilla::util::now_ms());
    app.update(Event::Connected(Box::new(console.welcome.clone())));
    let mut events = console.subscribe().await.expect("subscribe");
    tokio::time::timeout(DEADLINE, async {
        loop {
            let ev = events
                .next()
                .await
                .expect("event")
                .expect("subscription open");
            app.update(Event::Fleet(Box::new(ev)));
            if app.agents.values().filter(|a| a.latest.is_some()).count() == 2 {
                break;
            }
        }
    })
    .await
    .expect("both agents report metrics to the console");
    app.prepare();
    let screen = render(&app, 80, 24);
    for name in ["src", "dst"] {
        assert!(
            screen.lines().any(|l| l.contains(name) && l.contains('%')),
            "{name} with its CPU figure is on the console:\n{screen}"
        );
    }
    console.close().await;

    let c = &proxy.counts;
    let dropped = c.dropped.load(std::sync::atomic::Ordering::Relaxed);
    let forwarded = c.forwarded.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        dropped > 0 && forwarded > dropped * 5,
        "the faults happened: {dropped} dropped of {forwarded}"
    );
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_resumes_after_the_path_is_cut_for_30_s() {
    let (fleet, proxy, login) = fleet_behind(CUT_LEN).await;
    // Slow enough that the copy is still running when the cut comes.
    proxy.set(Faults::lossy(0.01, Duration::from_millis(100)));
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = attempts.clone();
    let (task, mut events) = spawn_cp(
        login.clone(),
        "src:big.bin",
        "dst:big.bin",
        CopyOptions::default(),
        CancellationToken::new(),
        move |e| {
            if let CopyEvent::Started { attempt, .. } = e {
                seen.fetch_max(*attempt, std::sync::atomic::Ordering::Relaxed);
            }
        },
    );
    next_copy_event(&mut events, |e| matches!(e, CopyEvent::Progress { .. })).await;
    proxy.cut(true);
    // The cut itself is the event under test (a sleep on purpose): 30 s, twice the idle timeout,
    // so every connection through the proxy is declared dead on both sides.
    tokio::time::sleep(Duration::from_secs(30)).await;
    proxy.cut(false);
    let report = tokio::time::timeout(Duration::from_secs(240), task)
        .await
        .expect("copy finishes after the path is back")
        .expect("copy task")
        .expect("copy succeeds after the cut");
    let dst_agent = fleet.agents.iter().find(|a| a.name == "dst").expect("dst");
    let dst = dst_agent.shared.join("big.bin");
    assert!(
        std::fs::read(&dst).expect("copied file") == random_bytes(CUT_LEN, 7),
        "copy differs after resuming"
    );
    assert!(
        partial_files(&dst_agent.shared).is_empty(),
        "partial files left behind"
    );
    let attempts = attempts.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        attempts > 1,
        "the copy did not resume in a later attempt ({attempts}): {report:?}"
    );
}
