//! Alerts over a real hub and real agents: swarm agents whose samples a test forces through the
//! swarm's override file, and full agents for connections and jobs. Each test watches what an
//! operator sees (alert events, `alerts` lists) and what receivers would be told (the transitions
//! handed to the notifier, recorded here by a sink of the test's own).

use crate::harness::binaries::{Hub, signal};
use crate::harness::exec::exec_text;
use crate::harness::{AgentSpec, Events, Fleet, WORK_DEADLINE};
use flotilla_wire::IdentityId;
use flotilla_wire::alerts::{
    AlertId, AlertInfo, AlertRule, AlertState, ContainerCondition, RuleOrigin, RuleSpec,
    SilenceSpec,
};
use flotilla_wire::exec::{ExecCommand, ExecRequest};
use flotilla_wire::msg::{FleetEvent, OpRequest, OpResponse};
use hubd::alerts::{AlertTransition, Routed, TransitionSink, TransitionState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Samples every second: a `for` of a few seconds spans several of them.
const INTERVAL_MS: u32 = 1000;

/// Records what the engine hands to the notifier.
#[derive(Default)]
struct Recorder(Mutex<Vec<AlertTransition>>);

impl TransitionSink for Recorder {
    fn route(&self, batch: Vec<AlertTransition>) -> Vec<Routed> {
        self.0.lock().expect("recorder").extend(batch);
        Vec::new()
    }
}

impl Recorder {
    fn all(&self) -> Vec<AlertTransition> {
        self.0.lock().expect("recorder").clone()
    }

    fn of(&self, rule: &str, agent: &IdentityId) -> Vec<TransitionState> {
        self.all()
            .into_iter()
            .filter(|t| t.rule == rule && &t.agent == agent)
            .map(|t| t.state)
            .collect()
    }

    /// Waits until `pick` holds for what was recorded (submission follows the alert's event by
    /// a moment, on the hub's thread).
    async fn until(&self, what: &str, pick: impl Fn(&[AlertTransition]) -> bool) {
        crate::harness::within(WORK_DEADLINE, what, async {
            loop {
                if pick(&self.all()) {
                    return;
                }
                // Bounded by the deadline above; nothing to subscribe to in a plain list.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
}

fn recorder(fleet: &Fleet) -> Arc<Recorder> {
    let rec = Arc::new(Recorder::default());
    fleet.ctx().alerts.set_sink(rec.clone());
    rec
}

fn spec(name: &str, kind: &str) -> RuleSpec {
    RuleSpec {
        name: name.into(),
        kind: kind.into(),
        ..RuleSpec::default()
    }
}

async fn add(fleet: &Fleet, spec: RuleSpec) -> AlertRule {
    let rule = spec.to_rule().expect("valid rule");
    match fleet
        .admin_request(OpRequest::AlertRuleAdd(rule.clone()))
        .await
    {
        OpResponse::AlertRule(info) => {
            assert_eq!(info.origin, RuleOrigin::Live);
            info.rule
        }
        other => panic!("alert add: {other:?}"),
    }
}

async fn alerts(fleet: &Fleet) -> Vec<AlertInfo> {
    match fleet
        .admin_request(OpRequest::Alerts {
            include_resolved: true,
        })
        .await
    {
        OpResponse::Alerts(list) => list,
        other => panic!("alerts: {other:?}"),
    }
}

async fn refusal(fleet: &Fleet, req: OpRequest) -> String {
    match fleet.admin_request(req).await {
        OpResponse::Error(r) => r.message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Writes the swarm's override file atomically (the swarm re-reads it at every sample).
fn force(path: &Path, json: serde_json::Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json.to_string()).expect("write overrides");
    std::fs::rename(&tmp, path).expect("install overrides");
}

/// A running swarm of `count` agents named `al-00000`…, forced by its override file.
struct Swarm {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), agentd::AgentError>>,
    overrides: PathBuf,
    ids: Vec<IdentityId>,
    _dir: tempfile::TempDir,
}

impl Swarm {
    async fn start(fleet: &Fleet, count: usize, containers: usize, units: usize) -> Self {
        let dir = tempfile::tempdir().expect("swarm dir");
        let overrides = dir.path().join("overrides.json");
        force(
            &overrides,
            serde_json::json!({ "*": { "cpu_pct": 10, "mem_pct": 20 } }),
        );
        let token = fleet
            .token(flotilla_wire::Role::Agent, count as u32, Vec::new())
            .await;
        let mut events = fleet.events();
        let cancel = CancellationToken::new();
        let opts = agentd::swarm::SwarmOptions {
            token: Some(token.token.clone()),
            count,
            dir: dir.path().join("swarm"),
            prefix: "al".into(),
            metrics_interval_ms: INTERVAL_MS,
            exec: agentd::ExecMode::Off,
            containers,
            units,
            overrides: Some(overrides.clone()),
        };
        let task = tokio::spawn(agentd::swarm::run(opts, cancel.clone()));
        let mut ids: Vec<(String, IdentityId)> = Vec::new();
        events
            .until("the swarm online", WORK_DEADLINE * 3, |ev| {
                if let FleetEvent::Online(a) = ev
                    && a.name.starts_with("al-")
                    && !ids.iter().any(|(_, id)| *id == a.id)
                {
                    ids.push((a.name, a.id));
                }
                (ids.len() == count).then_some(())
            })
            .await;
        ids.sort();
        Self {
            cancel,
            task,
            overrides,
            ids: ids.into_iter().map(|(_, id)| id).collect(),
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(WORK_DEADLINE, self.task).await;
    }
}

/// The next event about rule `rule` on `agent` in state `state`.
async fn alert_event(
    events: &mut Events,
    rule: &str,
    agent: &IdentityId,
    state: AlertState,
) -> AlertInfo {
    events
        .until(
            &format!("alert {rule} {} on {agent}", state.as_str()),
            WORK_DEADLINE * 2,
            |ev| match ev {
                FleetEvent::Alert(a) if a.rule == rule && &a.agent == agent && a.state == state => {
                    Some(a)
                }
                _ => None,
            },
        )
        .await
}

/// `n` samples from `id` whose CPU is `cpu` (the forced value has reached the hub).
async fn samples_at(events: &mut Events, id: &IdentityId, cpu: f32, n: usize) {
    let mut seen = 0;
    events
        .until(
            &format!("{n} samples at cpu {cpu}"),
            WORK_DEADLINE * 2,
            |ev| {
                if let FleetEvent::Metrics { id: got, sample } = ev
                    && &got == id
                    && sample.cpu_pct == cpu
                {
                    seen += 1;
                }
                (seen >= n).then_some(())
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_fires_after_for_and_resolves_only_past_the_resolve_line() {
    let fleet = Fleet::new().await;
    let rec = recorder(&fleet);
    let swarm = Swarm::start(&fleet, 2, 0, 0).await;
    let (calm, hot) = (swarm.ids[0].clone(), swarm.ids[1].clone());
    let mut hot_spec = spec("cpu-hot", "cpu");
    hot_spec.above = Some(90.0);
    hot_spec.resolve = Some(50.0);
    hot_spec.for_ = Some("3s".into());
    hot_spec.severity = flotilla_wire::alerts::Severity::Critical;
    hot_spec.summary = Some("{agent} cpu {value}%".into());
    add(&fleet, hot_spec).await;

    let mut events = fleet.events();
    force(
        &swarm.overrides,
        serde_json::json!({ "*": { "cpu_pct": 10 }, "al-00001": { "cpu_pct": 97 } }),
    );
    let pending = alert_event(&mut events, "cpu-hot", &hot, AlertState::Pending).await;
    assert_eq!(pending.id, AlertId::of("cpu-hot", &hot, ""));
    assert_eq!(pending.value, 97.0);
    let firing = alert_event(&mut events, "cpu-hot", &hot, AlertState::Firing).await;
    assert!(
        firing.since_ms >= firing.started_ms + 3000,
        "fired {} ms after the crossing, before its `for` of 3 s",
        firing.since_ms - firing.started_ms
    );
    assert_eq!(firing.summary, "al-00001 cpu 97%");
    rec.until("the firing notification", |t| !t.is_empty())
        .await;
    let told = rec.all();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].state, TransitionState::Firing);
    assert_eq!(told[0].alert_id, firing.id);
    assert_eq!(told[0].severity, flotilla_wire::alerts::Severity::Critical);

    // Below the threshold but above the resolve line: still firing, sample after sample.
    force(
        &swarm.overrides,
        serde_json::json!({ "*": { "cpu_pct": 10 }, "al-00001": { "cpu_pct": 70 } }),
    );
    samples_at(&mut events, &hot, 70.0, 3).await;
    let list = alerts(&fleet).await;
    let still = list
        .iter()
        .find(|a| a.id == firing.id)
        .expect("alert listed");
    assert_eq!(still.state, AlertState::Firing, "hysteresis holds it");
    assert!(
        list.iter().all(|a| a.agent != calm),
        "the calm agent never alerted: {list:?}"
    );

    // Past the resolve line: resolved, and receivers told once.
    force(
        &swarm.overrides,
        serde_json::json!({ "*": { "cpu_pct": 10 } }),
    );
    let resolved = alert_event(&mut events, "cpu-hot", &hot, AlertState::Resolved).await;
    assert_eq!(resolved.value, 10.0);
    rec.until("the resolved notification", |t| t.len() == 2)
        .await;
    assert_eq!(
        rec.of("cpu-hot", &hot),
        [TransitionState::Firing, TransitionState::Resolved]
    );
    assert!(rec.of("cpu-hot", &calm).is_empty());
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_mutes_notifications_until_it_is_expired() {
    let fleet = Fleet::new().await;
    let rec = recorder(&fleet);
    let swarm = Swarm::start(&fleet, 2, 0, 0).await;
    let (loud, quiet) = (swarm.ids[0].clone(), swarm.ids[1].clone());
    let mut mem = spec("mem-full", "mem");
    mem.above = Some(80.0);
    add(&fleet, mem).await;
    let silence = match fleet
        .admin_request(OpRequest::SilenceAdd(SilenceSpec {
            rule: "mem-*".into(),
            selector: "al-00001".into(),
            starts_ms: None,
            duration_ms: 3_600_000,
            comment: "memory upgrade".into(),
        }))
        .await
    {
        OpResponse::Silence(s) => s,
        other => panic!("silence add: {other:?}"),
    };
    assert_eq!(silence.comment, "memory upgrade");
    let missing_comment = refusal(
        &fleet,
        OpRequest::SilenceAdd(SilenceSpec {
            rule: "*".into(),
            selector: "all".into(),
            starts_ms: None,
            duration_ms: 1000,
            comment: " ".into(),
        }),
    )
    .await;
    assert_eq!(missing_comment, "a silence needs a comment saying why");

    let mut events = fleet.events();
    force(
        &swarm.overrides,
        serde_json::json!({ "*": { "mem_pct": 20 }, "al-00001": { "mem_pct": 95 } }),
    );
    let muted = alert_event(&mut events, "mem-full", &quiet, AlertState::Firing).await;
    assert_eq!(muted.silenced_by, Some(silence.id));
    // The unsilenced agent's alert is told; the silenced one's, which fired first, is not.
    force(
        &swarm.overrides,
        serde_json::json!({ "*": { "mem_pct": 95 } }),
    );
    alert_event(&mut events, "mem-full", &loud, AlertState::Firing).await;
    rec.until("the loud agent's notification", |t| {
        t.iter().any(|t| t.agent == loud)
    })
    .await;
    assert!(rec.of("mem-full", &quiet).is_empty(), "{:?}", rec.all());

    // Expired while the alert still fires: now it is told.
    match fleet
        .admin_request(OpRequest::SilenceExpire { id: silence.id })
        .await
    {
        OpResponse::Silence(s) => assert!(s.ends_ms <= flotilla_certs::clock::now_ms()),
        other => panic!("expire: {other:?}"),
    }
    rec.until("the quiet agent's notification after the silence", |t| {
        t.iter().any(|t| t.agent == quiet)
    })
    .await;
    assert_eq!(rec.of("mem-full", &quiet), [TransitionState::Firing]);
    let listed = alerts(&fleet).await;
    let now_loud = listed.iter().find(|a| a.agent == quiet).expect("listed");
    assert_eq!(now_loud.silenced_by, None);
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_fires_after_for_survives_a_hub_restart_and_resolves_on_reconnect() {
    let mut fleet = Fleet::builder()
        .agent(AgentSpec::new("app-1"))
        .start()
        .await;
    let id = fleet.agent("app-1").id.clone();
    let mut gone = spec("gone", "offline");
    gone.for_ = Some("2s".into());
    add(&fleet, gone).await;
    let rec = recorder(&fleet);
    let mut events = fleet.events();
    fleet.stop_agent("app-1").await;
    alert_event(&mut events, "gone", &id, AlertState::Pending).await;
    let firing = alert_event(&mut events, "gone", &id, AlertState::Firing).await;
    assert!(firing.value >= 2.0, "offline for {} s", firing.value);
    rec.until("the offline notification", |t| t.len() == 1)
        .await;

    // A restarted hub remembers the firing alert and does not tell it again.
    fleet.restart().await;
    let rec = recorder(&fleet);
    let listed = alerts(&fleet).await;
    let kept = listed.iter().find(|a| a.id == firing.id).expect("kept");
    assert_eq!(kept.state, AlertState::Firing);
    assert_eq!(kept.since_ms, firing.since_ms);

    let mut events = fleet.events();
    fleet.agent_mut("app-1").start();
    fleet.agent_mut("app-1").wait_connected().await;
    alert_event(&mut events, "gone", &id, AlertState::Resolved).await;
    rec.until("the resolved notification", |t| !t.is_empty())
        .await;
    assert_eq!(rec.of("gone", &id), [TransitionState::Resolved]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_fires_and_a_later_success_resolves() {
    let fleet = Fleet::builder()
        .agent(AgentSpec::any("job-1"))
        .start()
        .await;
    let id = fleet.agent("job-1").id.clone();
    add(&fleet, spec("job-broke", "job_failed")).await;
    let client = fleet.admin_client().await;
    let run = |word: &str| ExecRequest {
        selector: "job-1".into(),
        command: ExecCommand::Argv {
            argv: vec![word.into()],
            shell: false,
        },
        timeout_ms: 0,
        batch: 0,
    };
    let mut events = fleet.events();
    exec_text(&client, &run("false")).await;
    let firing = alert_event(&mut events, "job-broke", &id, AlertState::Firing).await;
    assert_eq!(firing.value, 1.0, "exit code");
    assert_eq!(firing.summary, "job-1 job failed (exit 1)");
    exec_text(&client, &run("true")).await;
    alert_event(&mut events, "job-broke", &id, AlertState::Resolved).await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_disks_clocks_certificates_containers_and_units_fire_and_sensors_disks_clocks_resolve()
 {
    let fleet = Fleet::new().await;
    let swarm = Swarm::start(&fleet, 2, 3, 7).await;
    let hot = swarm.ids[1].clone();
    let mut events = fleet.events();
    let mut rules = Vec::new();
    let mut temp = spec("hot-cpu", "temp");
    temp.above = Some(85.0);
    rules.push(temp);
    let mut disk = spec("data-full", "disk");
    disk.above = Some(98.0);
    rules.push(disk);
    let mut skew = spec("skew", "clock_skew");
    skew.max_skew = Some("3s".into());
    rules.push(skew);
    let mut cert = spec("cert-soon", "cert_expiring");
    // Agent certificates last ten years: a horizon beyond that catches every one.
    cert.within = Some("4000d".into());
    rules.push(cert);
    let mut sick = spec("sick", "container");
    sick.state = Some(ContainerCondition::Unhealthy);
    rules.push(sick);
    let mut units = spec("units", "unit_failed");
    units.matches = Some("svc-*".into());
    rules.push(units);
    for r in rules.iter().cloned() {
        add(&fleet, r).await;
    }
    force(
        &swarm.overrides,
        serde_json::json!({ "al-00001": {
            "temps": { "cpu": 95 }, "disk_pct": { "/data": 99.5 }, "clock_offset_ms": 30000
        } }),
    );
    let mut want: Vec<(&str, &str)> = vec![
        ("hot-cpu", "cpu"),
        ("data-full", "/data"),
        ("skew", ""),
        ("cert-soon", ""),
        ("sick", "app-01"),
        ("units", "svc-06.service"),
    ];
    events
        .until("every kind firing on al-00001", WORK_DEADLINE * 3, |ev| {
            if let FleetEvent::Alert(a) = ev
                && a.agent == hot
                && a.state == AlertState::Firing
            {
                want.retain(|(rule, subject)| !(a.rule == *rule && a.subject == *subject));
            }
            want.is_empty().then_some(())
        })
        .await;
    let listed = alerts(&fleet).await;
    let skewed = listed
        .iter()
        .find(|a| a.rule == "skew" && a.agent == hot)
        .expect("skew");
    assert!(skewed.value >= 25_000.0, "skew {}", skewed.value);
    assert!(
        !listed
            .iter()
            .any(|a| a.agent != hot && ["hot-cpu", "data-full", "skew"].contains(&a.rule.as_str())),
        "only the forced agent: {listed:?}"
    );

    // `alert show` lists the rule's alerts; `alert test` answers without changing anything.
    match fleet
        .admin_request(OpRequest::AlertRuleShow {
            name: "hot-cpu".into(),
        })
        .await
    {
        OpResponse::AlertRuleDetail(d) => {
            assert_eq!(d.alerts.len(), 1);
            assert_eq!(d.alerts[0].subject, "cpu");
        }
        other => panic!("show: {other:?}"),
    }
    let mut probe = spec("probe", "cpu");
    probe.above = Some(-1.0);
    match fleet
        .admin_request(OpRequest::AlertRuleTest(probe.to_rule().expect("rule")))
        .await
    {
        OpResponse::AlertTest(list) => {
            assert_eq!(list.len(), 2, "every agent is above -1 %: {list:?}");
            assert!(list.iter().all(|a| a.state == AlertState::Firing));
        }
        other => panic!("test: {other:?}"),
    }
    assert!(
        alerts(&fleet).await.iter().all(|a| a.rule != "probe"),
        "a dry run leaves nothing behind"
    );

    // Back to normal: the sensor, the mount and the clock resolve. (The certificate stays within
    // the horizon until it is renewed; the container and unit rules resolve in their own test.)
    force(
        &swarm.overrides,
        serde_json::json!({ "al-00001": {
            "temps": { "cpu": 40 }, "disk_pct": { "/data": 50 }, "clock_offset_ms": 0
        } }),
    );
    let mut want: Vec<(&str, &str)> =
        vec![("hot-cpu", "cpu"), ("data-full", "/data"), ("skew", "")];
    events
        .until(
            "sensor, mount and clock resolved on al-00001",
            WORK_DEADLINE * 3,
            |ev| {
                if let FleetEvent::Alert(a) = ev
                    && a.agent == hot
                    && a.state == AlertState::Resolved
                {
                    want.retain(|(rule, subject)| !(a.rule == *rule && a.subject == *subject));
                }
                want.is_empty().then_some(())
            },
        )
        .await;
    let firing: Vec<String> = alerts(&fleet)
        .await
        .into_iter()
        .filter(|a| a.agent == hot && a.state == AlertState::Firing)
        .map(|a| a.rule)
        .collect();
    assert!(
        !firing
            .iter()
            .any(|r| ["hot-cpu", "data-full", "skew"].contains(&r.as_str())),
        "still firing: {firing:?}"
    );
    swarm.stop().await;
}

/// A mount filling fast is forecast full within the horizon (a line fitted over the lookback, as
/// `predict_linear`) and fires; a clean-up that empties it resolves the alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_disk_is_forecast_full_and_resolves_after_a_clean_up() {
    let fleet = Fleet::new().await;
    let swarm = Swarm::start(&fleet, 1, 0, 0).await;
    let agent = swarm.ids[0].clone();
    let mut events = fleet.events();
    let mut rule = spec("filling", "disk_full");
    rule.within = Some("1h".into());
    rule.lookback = Some("1m".into());
    add(&fleet, rule).await;
    // Two points a second (a real disk at this rate is full in under a minute), bounded: the
    // forecast needs a few seconds of history before it says anything.
    let overrides = swarm.overrides.clone();
    let stop_ramp = CancellationToken::new();
    let ramp = tokio::spawn({
        let stop = stop_ramp.clone();
        async move {
            for step in 0..100u32 {
                let pct = (40 + step).min(95);
                force(
                    &overrides,
                    serde_json::json!({ "al-00000": { "disk_pct": { "/data": pct } } }),
                );
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    });
    let firing = alert_event(&mut events, "filling", &agent, AlertState::Firing).await;
    stop_ramp.cancel();
    let _ = ramp.await;
    assert_eq!(firing.subject, "/data");
    assert!(
        firing.value < 1.0,
        "forecast {} h to full; at two points a second it is minutes",
        firing.value
    );
    let other = alerts(&fleet).await;
    assert!(
        other
            .iter()
            .all(|a| a.rule != "filling" || a.subject == "/data"),
        "only the filling mount: {other:?}"
    );
    force(
        &swarm.overrides,
        serde_json::json!({ "al-00000": { "disk_pct": { "/data": 20 } } }),
    );
    let resolved = alert_event(&mut events, "filling", &agent, AlertState::Resolved).await;
    assert_eq!(resolved.subject, "/data");
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_stopped_unhealthy_restarting_and_failed_units_fire_and_resolve() {
    let fleet = Fleet::new().await;
    let rec = recorder(&fleet);
    // app-00…app-03 run (app-01 is drawn unhealthy and matched by no rule), svc-00/01 are active.
    let swarm = Swarm::start(&fleet, 1, 4, 2).await;
    let agent = swarm.ids[0].clone();
    let watched = [
        ("down", ContainerCondition::Stopped, "app-00"),
        ("sick", ContainerCondition::Unhealthy, "app-02"),
        ("looping", ContainerCondition::Restarting, "app-03"),
    ];
    for (name, state, container) in watched {
        let mut r = spec(name, "container");
        r.state = Some(state);
        r.matches = Some(container.into());
        add(&fleet, r).await;
    }
    let mut units = spec("units", "unit_failed");
    units.matches = Some("svc-*".into());
    add(&fleet, units).await;
    let subjects = [
        ("down", "app-00"),
        ("sick", "app-02"),
        ("looping", "app-03"),
        ("units", "svc-00.service"),
    ];
    let mut events = fleet.events();
    let base = serde_json::json!({ "cpu_pct": 10, "mem_pct": 20 });
    force(
        &swarm.overrides,
        serde_json::json!({ "*": base, "al-00000": {
            "containers": { "app-00": "exited", "app-02": "unhealthy", "app-03": "restarting" },
            "units": { "svc-00.service": "failed" }
        } }),
    );
    let mut want = subjects.to_vec();
    events
        .until("every workload alert firing", WORK_DEADLINE * 2, |ev| {
            if let FleetEvent::Alert(a) = ev
                && a.agent == agent
                && a.state == AlertState::Firing
            {
                want.retain(|(rule, subject)| !(a.rule == *rule && a.subject == *subject));
            }
            want.is_empty().then_some(())
        })
        .await;
    let listed = alerts(&fleet).await;
    let looping = listed
        .iter()
        .find(|a| a.rule == "looping")
        .expect("restarting alert");
    assert_eq!(looping.value, 1.0, "the restart count: {looping:?}");
    assert!(
        listed
            .iter()
            .all(|a| a.subject != "app-01" && a.subject != "svc-01.service"),
        "only the forced workloads: {listed:?}"
    );

    // The container started again, healthy, settled; the unit active: every alert resolves.
    force(&swarm.overrides, serde_json::json!({ "*": base }));
    let mut want = subjects.to_vec();
    events
        .until("every workload alert resolved", WORK_DEADLINE * 2, |ev| {
            if let FleetEvent::Alert(a) = ev
                && a.agent == agent
                && a.state == AlertState::Resolved
            {
                want.retain(|(rule, subject)| !(a.rule == *rule && a.subject == *subject));
            }
            want.is_empty().then_some(())
        })
        .await;
    rec.until("four firings and four resolutions told", |t| t.len() >= 8)
        .await;
    for (rule, _) in subjects {
        assert_eq!(
            rec.of(rule, &agent),
            [TransitionState::Firing, TransitionState::Resolved],
            "{rule}"
        );
    }
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_are_refused_at_add_and_at_load_and_the_hub_keeps_serving() {
    let fleet = Fleet::builder()
        .agent(AgentSpec::new("app-1"))
        .start()
        .await;
    let mut cpu = spec("cpu-high", "cpu");
    cpu.above = Some(90.0);
    let good = add(&fleet, cpu).await;

    let mut bad_selector = good.clone();
    bad_selector.name = "other".into();
    bad_selector.selector = "web-1+".into();
    assert_eq!(
        refusal(&fleet, OpRequest::AlertRuleAdd(bad_selector)).await,
        "alert rule \"other\": selector: selector \"web-1+\" has an empty term (doubled or trailing ',' or '+')"
    );
    let mut wrong_side = good.clone();
    wrong_side.name = "other".into();
    wrong_side.resolve = Some(95.0);
    assert_eq!(
        refusal(&fleet, OpRequest::AlertRuleAdd(wrong_side)).await,
        "alert rule \"other\": resolve 95 must be on the good side of the threshold 90 (at or below it)"
    );
    let mut bad_name = good.clone();
    bad_name.name = "no spaces".into();
    assert!(
        refusal(&fleet, OpRequest::AlertRuleAdd(bad_name))
            .await
            .starts_with("alert rule name \"no spaces\" is invalid")
    );
    assert_eq!(
        refusal(&fleet, OpRequest::AlertRuleAdd(good.clone())).await,
        "alert rule \"cpu-high\" already exists (added live): remove it first, or pick another name"
    );
    assert_eq!(
        refusal(
            &fleet,
            OpRequest::AlertRuleRemove {
                name: "nope".into()
            }
        )
        .await,
        "no alert rule named \"nope\" (see `flotilla alert list`)"
    );
    match fleet.admin_request(OpRequest::AlertRules).await {
        OpResponse::AlertRules(list) => {
            assert_eq!(list.len(), 1, "nothing refused was kept: {list:?}");
            assert_eq!(list[0].rule, good);
        }
        other => panic!("rules: {other:?}"),
    }
    fleet.assert_serving(fleet.agent("app-1")).await;

    // Removing is audited and takes the rule away.
    assert_eq!(
        fleet
            .admin_request(OpRequest::AlertRuleRemove {
                name: "cpu-high".into()
            })
            .await,
        OpResponse::Done
    );
    let audit = fleet
        .ctx()
        .store
        .call(|c| Ok(hubd::store::audit::recent(c, 50)?))
        .await
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.action == "alert.add" && a.target == "cpu-high")
    );
    assert!(
        audit
            .iter()
            .any(|a| a.action == "alert.rm" && a.target == "cpu-high")
    );

    // At load: a hub whose config has a bad rule does not start, and says which.
    let mut config = fleet.config.clone();
    let mut typo = spec("disk", "dsik");
    typo.above = Some(1.0);
    config.alert = vec![typo];
    let err = config.validate().expect_err("refused");
    assert_eq!(
        err.to_string(),
        "config: alert rule \"disk\": unknown kind or series \"dsik\" (use offline, cpu, mem, swap, disk, load, temp, net_rx, net_tx, net, disk_full, container, unit_failed, job_failed, cert_expiring or clock_skew)"
    );
}

fn append_rule(file: &Path, table: &str) {
    let mut text = std::fs::read_to_string(file).expect("read hub.toml");
    text.push_str(table);
    std::fs::write(file, text).expect("write hub.toml");
}

async fn rule_names(hub: &Hub) -> Vec<String> {
    match hubd::admin_request(&hub.data.join("admin.sock"), &OpRequest::AlertRules)
        .await
        .expect("admin socket")
        .expect("hub running")
    {
        OpResponse::AlertRules(list) => list.into_iter().map(|r| r.rule.name).collect(),
        other => panic!("rules: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_good_rules_and_refuses_a_bad_one_keeping_the_old() {
    let mut hub = Hub::init().await;
    hub.start().await;
    let file = hub.data.join("hub.toml");
    append_rule(
        &file,
        "\n[[alert]]\nname = \"root-full\"\nkind = \"disk\"\nabove = 90.0\nfor = \"5m\"\n",
    );
    signal(hub.pid(), "-HUP").await;
    hub.reloaded().await;
    assert_eq!(rule_names(&hub).await, ["root-full"]);
    assert!(hub.log().contains("alert root-full added"), "{}", hub.log());

    append_rule(
        &file,
        "\n[[alert]]\nname = \"slow\"\nkind = \"load\"\nabove = 4.0\nfor = \"5 minutes\"\n",
    );
    signal(hub.pid(), "-HUP").await;
    hub.reloaded().await;
    let log = hub.log();
    assert!(log.contains("configuration reload failed"), "{log}");
    assert!(
        log.contains(r#"alert rule \"slow\": for: duration \"5 minutes\": unknown unit"#)
            || log.contains("alert rule \"slow\": for: duration \"5 minutes\": unknown unit"),
        "{log}"
    );
    assert_eq!(
        rule_names(&hub).await,
        ["root-full"],
        "the running rules are kept"
    );
    assert!(hub.stop().await.success());
}
