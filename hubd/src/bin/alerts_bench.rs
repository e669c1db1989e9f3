//! Alert evaluation cost: 50 rules over 20,000 agents sampling every 5 s, the target
//! fleet. Drives the hub's evaluation engine in-process exactly as the metrics streams do (one
//! `handle_sample` per live sample, one `handle_tick` a second) and prints the CPU one hub core
//! spends on it, as a share of that core. Transport, decoding and history are not included: they
//! are measured by `fleet_bench.py` and `history_ingest`, and alerting adds only this.
//!
//! Run: `cargo build --release -p flotilla-hubd --bin alerts_bench && target/release/alerts_bench`.

use flotilla_wire::msg::{DiskUsage, MetricsSample, NetRate, Temperature};
use flotilla_wire::{IdentityId, Role};
use hubd::alerts::engine::{AgentFacts, CompiledRule, Engine, Output};
use std::time::Instant;

/// Agents: the largest fleet.
const AGENTS: usize = 20_000;
/// Sample interval of every agent, ms (the hub's default).
const INTERVAL_MS: u64 = 5_000;
/// Rounds measured (each: one sample from every agent and five ticks).
const ROUNDS: u64 = 12;

fn rules() -> Vec<CompiledRule> {
    let mut texts: Vec<String> = Vec::new();
    let selectors = [
        "all",
        "env=prod",
        "role=db",
        "node-1*",
        "env=staging+role=web",
    ];
    for i in 0..10 {
        let sel = selectors[i % selectors.len()];
        texts.push(format!(
            "name = \"cpu-{i}\"\nkind = \"cpu\"\nabove = {}\nresolve = 80.0\nfor = \"5m\"\nselector = \"{sel}\"",
            90 + i
        ));
        texts.push(format!(
            "name = \"mem-{i}\"\nkind = \"mem\"\nabove = {}\nfor = \"10m\"\nselector = \"{sel}\"",
            85 + i
        ));
        texts.push(format!(
            "name = \"disk-{i}\"\nkind = \"disk\"\nabove = {}\nselector = \"{sel}\"",
            88 + i
        ));
    }
    for i in 0..5 {
        let sel = selectors[i % selectors.len()];
        texts.push(format!(
            "name = \"load-{i}\"\nkind = \"load\"\nabove = {}.0\nfor = \"5m\"\nselector = \"{sel}\"",
            8 + i
        ));
        texts.push(format!(
            "name = \"temp-{i}\"\nkind = \"temp\"\nabove = {}.0\nselector = \"{sel}\"",
            80 + i
        ));
    }
    texts.push("name = \"net\"\nkind = \"net\"\nabove = 1e9".into());
    texts.push("name = \"offline\"\nkind = \"offline\"\nfor = \"2m\"".into());
    texts.push("name = \"skew\"\nkind = \"clock_skew\"".into());
    texts.push("name = \"filling\"\nkind = \"disk_full\"\nwithin = \"24h\"".into());
    texts.push("name = \"cert\"\nkind = \"cert_expiring\"\nwithin = \"30d\"".into());
    assert_eq!(texts.len(), 45);
    for (i, sel) in selectors.iter().enumerate() {
        texts.push(format!(
            "name = \"rx-{i}\"\nkind = \"net_rx\"\nabove = {}e8\nselector = \"{sel}\"",
            5 + i
        ));
    }
    texts
        .iter()
        .map(|t| {
            let spec: flotilla_wire::alerts::RuleSpec = toml::from_str(t).expect("rule text");
            CompiledRule::new(spec.to_rule().expect("valid rule")).expect("selector")
        })
        .collect()
}

fn sample(i: usize, at_ms: u64, round: u64) -> MetricsSample {
    // One agent in a hundred runs hot for a few rounds, so alerts do change state.
    let hot = i % 100 == (round as usize / 4) % 100;
    MetricsSample {
        at_ms,
        cpu_pct: if hot { 97.0 } else { 20.0 + (i % 50) as f32 },
        load: [1.5, 1.2, 1.0],
        mem_used: 4 << 30,
        mem_total: 8 << 30,
        swap_used: 0,
        swap_total: 2 << 30,
        disks: vec![
            DiskUsage {
                mount: "/".into(),
                used: (40 + i as u64 % 40) << 30,
                total: 100 << 30,
            },
            DiskUsage {
                mount: "/var".into(),
                used: (30 + round) << 30,
                total: 100 << 30,
            },
        ],
        nets: vec![NetRate {
            iface: "eth0".into(),
            rx_bps: 1 << 20,
            tx_bps: 1 << 19,
        }],
        temps: vec![Temperature {
            label: "cpu".into(),
            celsius: 55.0,
        }],
        ..MetricsSample::default()
    }
}

fn main() {
    let base = 1_800_000_000_000u64;
    let ids: Vec<IdentityId> = (0..AGENTS)
        .map(|i| IdentityId::from_random(Role::Agent, (i as u64).to_be_bytes()))
        .collect();
    let mut engine = Engine::default();
    let mut out = Output::default();
    let t = Instant::now();
    engine.set_rules(rules(), &mut out);
    for (i, id) in ids.iter().enumerate() {
        let facts = AgentFacts {
            id: id.clone(),
            name: format!("node-{i:05}"),
            labels: vec![
                (
                    "env".into(),
                    if i % 3 == 0 { "prod" } else { "staging" }.into(),
                ),
                ("role".into(), ["web", "db", "cache", "batch"][i % 4].into()),
            ],
        };
        engine.handle_agent(facts, true, base, base, &mut out);
        engine.handle_cert(id, base + 3650 * 86_400_000, base, &mut out);
    }
    let setup = t.elapsed();
    let t = Instant::now();
    let again = rules();
    engine.set_rules(again, &mut out);
    let reload = t.elapsed();

    let mut samples: Vec<MetricsSample> = Vec::with_capacity(AGENTS);
    let mut busy = std::time::Duration::ZERO;
    let mut changes = 0usize;
    for round in 0..ROUNDS {
        let start_ms = base + round * INTERVAL_MS;
        samples.clear();
        // Samples spread over the interval, as agents' clocks are, each arriving when taken.
        let at = |i: usize| start_ms + (i as u64 * INTERVAL_MS) / AGENTS as u64;
        samples.extend((0..AGENTS).map(|i| sample(i, at(i), round)));
        let t = Instant::now();
        for (i, (id, s)) in ids.iter().zip(&samples).enumerate() {
            let now = at(i);
            let mut out = Output::default();
            engine.handle_sample(id, s, now, &mut out);
            changes += out.events.len();
        }
        for tick in 0..INTERVAL_MS / 1000 {
            let mut out = Output::default();
            engine.handle_tick(start_ms + tick * 1000, &mut out);
            changes += out.events.len();
        }
        busy += t.elapsed();
    }
    let per_round = busy / ROUNDS as u32;
    let share = per_round.as_secs_f64() / (INTERVAL_MS as f64 / 1000.0) * 100.0;
    let per_sample_us = per_round.as_secs_f64() * 1e6 / AGENTS as f64;
    println!(
        "rules 50, agents {AGENTS}, interval {} s: {:.1} ms per interval, {per_sample_us:.2} µs per sample, {share:.2} % of one core",
        INTERVAL_MS / 1000,
        per_round.as_secs_f64() * 1e3,
    );
    println!(
        "setup (rules + {AGENTS} agents) {:.0} ms, rule reload {:.0} ms, {changes} alert changes over {ROUNDS} intervals, {} alerts held",
        setup.as_secs_f64() * 1e3,
        reload.as_secs_f64() * 1e3,
        engine.alert_count()
    );
    println!(
        "{}",
        serde_json::json!({
            "rules": 50, "agents": AGENTS, "interval_ms": INTERVAL_MS,
            "ms_per_interval": per_round.as_secs_f64() * 1e3,
            "us_per_sample": per_sample_us, "core_pct": share,
            "reload_ms": reload.as_secs_f64() * 1e3,
        })
    );
}
