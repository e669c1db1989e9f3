//! Metrics history end to end: live samples become minutes in SQLite, an outage is back-filled,
//! expired history is pruned, watching an agent speeds its sampling up, and a 200-agent swarm runs
//! against a real hub over the real protocol.

use crate::harness::{DEADLINE, Fleet, IDLE_DEADLINE, within};
use agentd::{AgentConfig, LinkState};
use flotilla_wire::io::write_frame;
use flotilla_wire::limits::MAX_CONTROL_FRAME;
use flotilla_wire::msg::{
    FleetEvent, MetricsSeries, MinuteAggregate, OpRequest, OpResponse, StreamOpen,
};
use flotilla_wire::{IdentityId, Role};
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn series(fleet: &Fleet, name: &str, since_s: u64) -> MetricsSeries {
    match fleet
        .admin_request(OpRequest::Metrics {
            query: name.into(),
            since_s,
        })
        .await
    {
        OpResponse::Series(s) => s,
        other => panic!("metrics answered {other:?}"),
    }
}

fn total_samples(s: &MetricsSeries) -> u64 {
    s.points.iter().map(|p| u64::from(p.samples)).sum()
}

async fn wait_connected(state: &mut tokio::sync::watch::Receiver<LinkState>, deadline: Duration) {
    within(
        deadline,
        "agent connected",
        state.wait_for(|s| matches!(s, LinkState::Connected { .. })),
    )
    .await
    .expect("agent state feed");
}

#[tokio::test(flavor = "multi_thread")]
async fn live_samples_become_minutes_that_survive_a_restart() {
    let mut fleet = Fleet::new().await;
    let mut events = fleet.events();
    let mut agent = fleet.enrol_agent("hist-1", Vec::new()).await;
    agent.start();
    events.online(&agent.id).await;
    let mut seen = 0u64;
    for _ in 0..3 {
        events.metrics(&agent.id).await;
        seen += 1;
    }
    agent.stop().await;
    events.offline(&agent.id, DEADLINE).await;
    // A clean restart writes everything queued; the history must come back from the database file.
    fleet.restart().await;
    let s = series(&fleet, "hist-1", 3600).await;
    assert_eq!(s.resolution_s, 60);
    assert!(!s.points.is_empty(), "no minutes stored");
    assert!(
        total_samples(&s) >= seen,
        "stored {} samples, saw {seen}",
        total_samples(&s)
    );
    let p = &s.points[0];
    assert!(
        p.mem_total > 0 && p.mem_avg > 0 && p.mem_max >= p.mem_avg,
        "real memory figures: {p:?}"
    );
    assert!(p.cpu_max >= p.cpu_avg);
    // Ten-minute buckets are rolled up from the same minutes.
    let long = series(&fleet, "hist-1", 24 * 3600).await;
    assert_eq!(long.resolution_s, 600);
    assert_eq!(total_samples(&long), total_samples(&s));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agents_first_minute_shows_before_it_closes() {
    let fleet = Fleet::new().await;
    let mut events = fleet.events();
    let mut agent = fleet.enrol_agent("fresh-1", Vec::new()).await;
    agent.start();
    events.online(&agent.id).await;
    events.metrics(&agent.id).await;
    // Still connected, most likely still in its first minute: nothing is in the database yet, and
    // the history must show the minute in progress rather than nothing.
    let s = series(&fleet, "fresh-1", 3600).await;
    assert!(
        total_samples(&s) >= 1,
        "the minute in progress is missing: {s:?}"
    );
    let last = s.points.last().expect("a point");
    assert!(last.mem_total > 0 && last.samples >= 1, "{last:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_is_back_filled_after_the_hub_returns() {
    let mut fleet = Fleet::new().await;
    let mut events = fleet.events();
    let agent = fleet.enrol_agent("outage-1", Vec::new()).await;
    let cancel = CancellationToken::new();
    let config = AgentConfig::default().with_metrics_interval(1000);
    let running = agentd::start(&agent.paths, config, cancel.clone()).expect("agent start");
    let mut state = running.state.clone();
    let mut buffered = running.buffered.clone();
    events.online(&agent.id).await;
    let mut live = 0u64;
    for _ in 0..2 {
        events.metrics(&agent.id).await;
        live += 1;
    }
    fleet.stop().await;
    within(
        DEADLINE,
        "agent sees the hub gone",
        state.wait_for(|s| matches!(s, LinkState::Disconnected(_))),
    )
    .await
    .expect("state");
    // The agent keeps sampling into its back-fill buffer while the hub is down.
    let during = *within(
        IDLE_DEADLINE,
        "samples buffered during the outage",
        buffered.wait_for(|n| *n >= 3),
    )
    .await
    .expect("buffered feed");
    fleet.start().await;
    let mut events = fleet.events();
    wait_connected(&mut state, Duration::from_secs(90)).await;
    events.metrics(&agent.id).await;
    live += 1;
    cancel.cancel();
    within(DEADLINE, "agent stop", running.wait()).await;
    fleet.restart().await;
    let s = series(&fleet, "outage-1", 3600).await;
    let stored = total_samples(&s);
    assert!(
        stored >= live + during,
        "history has {stored} samples; {live} arrived live and {during} were buffered in the outage"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_past_retention_is_pruned() {
    let mut fleet = Fleet::new().await;
    let agent = fleet.spawn_agent("old-1").await;
    let id = agent.id.clone();
    fleet.stop().await;
    let day = 86_400_000u64;
    let now = hubd::store::now_ms();
    let minute = |start_ms: u64| MinuteAggregate {
        start_ms: start_ms - start_ms % 60_000,
        samples: 1,
        cpu_avg: 1.0,
        ..Default::default()
    };
    {
        // Rows written straight into the database file, as an old hub would have left them.
        let (store, thread) = hubd::store::Store::open(&fleet.paths.db()).expect("open store");
        let rows = vec![
            (id.clone(), minute(now - 40 * day)),
            (id.clone(), minute(now - 2 * day)),
            (id.clone(), minute(now - 60_000)),
        ];
        let ten = vec![
            (id.clone(), minute(now - 400 * day)),
            (id.clone(), minute(now - 40 * day)),
        ];
        store
            .call(move |c| {
                hubd::store::metrics::upsert_minutes(c, &rows)?;
                for (id, m) in &ten {
                    c.execute(
                        "INSERT INTO metrics_10m (agent_id, start_ms, samples, cpu_avg, cpu_max, mem_avg, mem_max, mem_total, load1_avg,
                            disk_pct_max, net_rx_avg, net_tx_avg, net_max, disk_read_avg, disk_write_avg)
                         VALUES (?1, ?2, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)",
                        rusqlite::params![id.as_str(), m.start_ms as i64],
                    )?;
                }
                Ok(())
            })
            .await
            .expect("insert old history");
        drop(store);
        thread.join().expect("store thread");
    }
    fleet.start().await;
    let minutes = series(&fleet, "old-1", 60 * 86_400).await;
    let oldest_minute = now - 30 * day;
    // Asked for 60 days, so this reads 10-minute buckets: the 400-day one is gone, the 40-day one kept.
    assert_eq!(minutes.resolution_s, 600);
    assert!(
        minutes.points.iter().all(|p| p.start_ms >= now - 365 * day),
        "year-old bucket pruned: {:?}",
        minutes.points
    );
    assert!(
        minutes.points.iter().any(|p| p.start_ms < oldest_minute),
        "40-day-old 10-minute bucket kept"
    );
    let two_days = minute(now - 2 * day).start_ms;
    let (pruned_left, kept) = {
        let ctx = fleet.ctx().clone();
        let id = id.clone();
        ctx.store
            .call(move |c| {
                let old: i64 = c.query_row(
                    "SELECT count(*) FROM metrics_1m WHERE agent_id = ?1 AND start_ms < ?2",
                    rusqlite::params![id.as_str(), oldest_minute as i64],
                    |r| r.get(0),
                )?;
                let kept: i64 = c.query_row(
                    "SELECT count(*) FROM metrics_1m WHERE agent_id = ?1 AND start_ms = ?2",
                    rusqlite::params![id.as_str(), two_days as i64],
                    |r| r.get(0),
                )?;
                Ok((old, kept))
            })
            .await
            .expect("count")
    };
    assert_eq!(pruned_left, 0, "minutes older than 30 days pruned at start");
    assert_eq!(kept, 1, "the 2-day-old minute is within retention and kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn watching_an_agent_samples_it_every_second() {
    let fleet = Fleet::new().await;
    let mut events = fleet.events();
    let agent = fleet.enrol_agent("watched-1", Vec::new()).await;
    let cancel = CancellationToken::new();
    // No override: the hub's 5 s default applies until someone watches.
    let running =
        agentd::start(&agent.paths, AgentConfig::default(), cancel.clone()).expect("agent start");
    events.online(&agent.id).await;
    events.metrics(&agent.id).await;
    let admin = crate::harness::Client::hello(&fleet.admin_identity(), &fleet.hubs())
        .await
        .expect("admin client");
    let (mut watch, _watch_recv) = admin.conn.open_bi().await.expect("open watch stream");
    let open = StreamOpen::WatchAgent {
        query: "watched-1".into(),
    };
    write_frame(&mut watch, &open, MAX_CONTROL_FRAME)
        .await
        .expect("write watch open");
    // Consecutive samples now come about a second apart (their own timestamps, not our clock).
    let mut last = events.metrics(&agent.id).await.at_ms;
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let at = events.metrics(&agent.id).await.at_ms;
        gaps.push(at - last);
        last = at;
    }
    assert!(
        gaps.iter().all(|g| *g < 3000),
        "watched agent sampled every {gaps:?} ms, expected about 1000"
    );
    drop(watch);
    cancel.cancel();
    within(DEADLINE, "agent stop", running.wait()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swarm_of_200_agents_reports_to_a_real_hub() {
    const N: usize = 200;
    let fleet = Fleet::new().await;
    let token = fleet.token(Role::Agent, N as u32, Vec::new()).await;
    let mut events = fleet.events();
    let dir = tempfile::tempdir().expect("swarm dir");
    let cancel = CancellationToken::new();
    let opts = agentd::swarm::SwarmOptions {
        token: Some(token.token.clone()),
        count: N,
        dir: dir.path().join("swarm"),
        prefix: "sw".into(),
        metrics_interval_ms: 1000,
        exec: agentd::ExecMode::Off,
        containers: 0,
        units: 0,
        overrides: None,
    };
    let swarm = tokio::spawn(agentd::swarm::run(opts, cancel.clone()));
    let mut online: HashSet<IdentityId> = HashSet::new();
    let mut reporting: HashSet<IdentityId> = HashSet::new();
    events
        .until(
            "200 swarm agents online and reporting",
            Duration::from_secs(240),
            |ev| {
                match ev {
                    FleetEvent::Online(a) if a.name.starts_with("sw-") => {
                        online.insert(a.id);
                    }
                    FleetEvent::Metrics { id, sample } if online.contains(&id) => {
                        assert!(
                            sample.mem_total > 0 && !sample.nets.is_empty(),
                            "swarm sends full samples"
                        );
                        reporting.insert(id);
                    }
                    _ => {}
                }
                (reporting.len() == N).then_some(())
            },
        )
        .await;
    let agents = fleet.listed_agents().await;
    let names: HashSet<&str> = agents
        .iter()
        .filter(|a| a.name.starts_with("sw-"))
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(
        names.len(),
        N,
        "each swarm agent is its own enrolled identity"
    );
    assert_eq!(
        fleet.token_info(&token.info.id).await.map(|t| t.uses_left),
        Some(0)
    );
    cancel.cancel();
    within(IDLE_DEADLINE, "swarm stop", swarm)
        .await
        .expect("swarm task")
        .expect("swarm ran");
}
