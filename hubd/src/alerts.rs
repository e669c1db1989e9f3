//! Alerts: rules evaluated against what the hub already sees (samples, connections, workloads,
//! jobs), their alerts, silences and acknowledgements, and the handoff of state changes to
//! notification delivery.
//!
//! Delivery is not this module's business: every change of an alert to firing or resolved that
//! no silence mutes becomes an [`AlertTransition`] handed to a [`TransitionSink`] (the notifier),
//! which routes it to receivers. The outbox rows it returns are committed here, in the same
//! transaction as the alert rows of that change; the notifier groups and sends them from there.

use crate::HubCtx;
pub use crate::store::outbox::Routed;
use crate::store::{self, now_ms};
use deploy::sync::lock;
use engine::{AgentFacts, CompiledRule, Engine, Output};
use flotilla_wire::IdentityId;
use flotilla_wire::alerts::{
    AlertId, AlertInfo, AlertRule, RuleInfo, RuleOrigin, RuleSpec, Severity,
};
use flotilla_wire::msg::{FleetEvent, MetricsSample};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The change a notification reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransitionState {
    /// The condition held for the rule's `for`.
    Firing,
    /// It is over.
    Resolved,
}

/// One alert changing to firing or resolved: what a receiver is told.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlertTransition {
    /// Stable id of the alert (rule, agent, subject): receivers deduplicate on it with `state`
    /// and `at_ms`.
    pub alert_id: AlertId,
    /// Rule name.
    pub rule: String,
    /// The rule's severity (quiet hours let only critical through).
    pub severity: Severity,
    /// Which agent.
    pub agent: IdentityId,
    /// Its display name.
    pub agent_name: String,
    /// Mount, sensor, interface, container, unit; empty when the rule has none.
    pub subject: String,
    /// Firing or resolved.
    pub state: TransitionState,
    /// The value that decided it.
    pub value: f64,
    /// The rendered summary line.
    pub summary: String,
    /// When it changed, ms since the epoch.
    pub at_ms: u64,
    /// Receiver names the rule routes to.
    pub receivers: Vec<String>,
}

/// Where transitions go. The notifier implements it. Evaluation calls [`TransitionSink::route`]
/// with each batch of changes, outside any lock, and never waits on it: the rows it returns are
/// committed to the outbox in the same store transaction as the alert state of that change (so a
/// hub killed before the commit has stored neither, and evaluates the change again after its
/// restart), then [`TransitionSink::committed`] is called.
pub trait TransitionSink: Send + Sync {
    /// Takes a batch of transitions, in the order they happened; returns the outbox rows that
    /// queue them (none for a sink that keeps nothing). Must not block.
    fn route(&self, batch: Vec<AlertTransition>) -> Vec<Routed>;
    /// Rows returned by `route` were committed: time to send them.
    fn committed(&self) {}
}

/// The sink of a hub without receivers: logs each transition at info, so that an alert firing
/// still leaves a trace.
#[derive(Debug, Default)]
pub struct LogSink;

impl TransitionSink for LogSink {
    fn route(&self, batch: Vec<AlertTransition>) -> Vec<Routed> {
        for t in batch {
            tracing::info!(
                alert_id = %t.alert_id,
                rule = %t.rule,
                agent = %t.agent_name,
                subject = %t.subject,
                state = ?t.state,
                value = t.value,
                "alert {}",
                match t.state {
                    TransitionState::Firing => "firing",
                    TransitionState::Resolved => "resolved",
                }
            );
        }
        Vec::new()
    }
}

/// One engine call's rows for the database: alert state and the outbox rows of its transitions,
/// committed together.
struct Write {
    rows: Output,
    routed: Vec<Routed>,
}

pub mod api;
pub mod engine;

/// How often time-driven changes are looked for (a `for` elapsing, a silence ending): alerts
/// fire at most this late after their `for`.
const TICK: Duration = Duration::from_secs(1);
/// Batches of alert rows queued for the database: each is one call's changes, so this many calls
/// may be ahead of the writer before rows are dropped (and logged): the engine's memory stays
/// right, only a restart would lose the dropped rows. A batch carrying notifications is never
/// dropped: it waits for room in a task of its own.
const WRITE_QUEUE: usize = 1024;

/// Checks rule texts and compiles them: every error names the rule. `receivers` are the names
/// the hub's config defines, or `None` where this hub has no receiver configuration to check
/// against.
pub fn compile(
    specs: &[RuleSpec],
    receivers: Option<&[String]>,
) -> Result<Vec<CompiledRule>, String> {
    let mut out: Vec<CompiledRule> = Vec::with_capacity(specs.len());
    for spec in specs {
        let rule = spec.to_rule().map_err(|e| e.to_string())?;
        if out.iter().any(|r| r.rule.name == rule.name) {
            return Err(format!("alert rule {:?} is defined twice", rule.name));
        }
        check_receivers(&rule, receivers)?;
        out.push(CompiledRule::new(rule)?);
    }
    Ok(out)
}

fn check_receivers(rule: &AlertRule, receivers: Option<&[String]>) -> Result<(), String> {
    if let Some(known) = receivers
        && let Some(bad) = rule.receivers.iter().find(|r| !known.contains(r))
    {
        return Err(format!(
            "alert rule {:?}: unknown receiver {bad:?} (defined: {})",
            rule.name,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ));
    }
    Ok(())
}

/// Checks one rule as `alert add` and `alert test` receive it.
pub fn compile_one(rule: AlertRule, receivers: Option<&[String]>) -> Result<CompiledRule, String> {
    // The wire form goes through the text form's checks too: one set of rules for every door.
    let checked = rule.to_spec().to_rule().map_err(|e| e.to_string())?;
    check_receivers(&checked, receivers)?;
    CompiledRule::new(checked)
}

/// A live rule with who added it.
#[derive(Clone, Debug)]
struct LiveRule {
    rule: AlertRule,
    added_by: String,
    added_ms: u64,
}

/// The hub's alerting: the engine behind a lock (held for microseconds, never across an await),
/// the sink transitions go to, and the queue of rows for the database.
pub struct Alerts {
    engine: Mutex<Engine>,
    config_rules: Mutex<Vec<AlertRule>>,
    live_rules: Mutex<Vec<LiveRule>>,
    certs: Mutex<HashMap<IdentityId, u64>>,
    /// Cancelled when the hub stops: agents dropped by the shutdown are not "offline".
    stopping: Mutex<CancellationToken>,
    sink: RwLock<Arc<dyn TransitionSink>>,
    writes: mpsc::Sender<Write>,
    writes_rx: Mutex<Option<mpsc::Receiver<Write>>>,
    /// Calls whose rows were dropped because the writer fell behind.
    pub dropped_writes: std::sync::atomic::AtomicU64,
}

impl Default for Alerts {
    fn default() -> Self {
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        Self {
            engine: Mutex::new(Engine::default()),
            config_rules: Mutex::new(Vec::new()),
            live_rules: Mutex::new(Vec::new()),
            certs: Mutex::new(HashMap::new()),
            stopping: Mutex::new(CancellationToken::new()),
            sink: RwLock::new(Arc::new(LogSink)),
            writes,
            writes_rx: Mutex::new(None),
            dropped_writes: Default::default(),
        }
        .with_rx(rx)
    }
}

impl Alerts {
    fn with_rx(self, rx: mpsc::Receiver<Write>) -> Self {
        *lock(&self.writes_rx) = Some(rx);
        self
    }

    /// Sends transitions to `sink` from now on (the notifier, once it runs).
    pub fn set_sink(&self, sink: Arc<dyn TransitionSink>) {
        *self
            .sink
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = sink;
    }

    /// Runs `f` on the engine and acts on what it changed: events to consoles, transitions to
    /// the sink to be routed, then the alert rows with the routed transitions to the writer,
    /// which commits them together. Never blocks on the database.
    fn with_engine<T>(&self, ctx: &HubCtx, f: impl FnOnce(&mut Engine, &mut Output) -> T) -> T {
        let mut out = Output::default();
        let t = f(&mut lock(&self.engine), &mut out);
        self.dispatch(ctx, out);
        t
    }

    fn dispatch(&self, ctx: &HubCtx, mut out: Output) {
        if out.is_empty() {
            return;
        }
        for ev in out.events.drain(..) {
            ctx.registry.publish(FleetEvent::Alert(ev));
        }
        let routed = if out.transitions.is_empty() {
            Vec::new()
        } else {
            let batch = std::mem::take(&mut out.transitions);
            self.sink().route(batch)
        };
        if out.upserts.is_empty() && out.deletes.is_empty() && routed.is_empty() {
            return;
        }
        let write = Write { rows: out, routed };
        let write = match self.writes.try_send(write) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(w) | mpsc::error::TrySendError::Closed(w)) => w,
        };
        if !write.routed.is_empty()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            // Notifications are not dropped: this batch waits for room (it may then commit
            // after a later one). Ends once queued, or at once when the writer has stopped.
            let writes = self.writes.clone();
            drop(rt.spawn(async move {
                if writes.send(write).await.is_err() {
                    tracing::warn!("alert writer stopped: notifications of this change are sent after the next start");
                }
            }));
            return;
        }
        let before = self
            .dropped_writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Logged at the 1st, 2nd, 4th, 8th… drop: a backlog must not flood the log too.
        if (before + 1).is_power_of_two() {
            tracing::warn!(
                dropped = before + 1,
                "alert state writer behind: changes kept in memory only"
            );
        }
    }

    fn sink(&self) -> Arc<dyn TransitionSink> {
        self.sink
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every rule with its origin.
    pub fn rule_infos(&self) -> Vec<RuleInfo> {
        let mut out: Vec<RuleInfo> = lock(&self.config_rules)
            .iter()
            .map(|r| RuleInfo {
                rule: r.clone(),
                origin: RuleOrigin::Config,
                added_by: String::new(),
                added_ms: 0,
            })
            .collect();
        out.extend(lock(&self.live_rules).iter().map(|r| RuleInfo {
            rule: r.rule.clone(),
            origin: RuleOrigin::Live,
            added_by: r.added_by.clone(),
            added_ms: r.added_ms,
        }));
        out
    }

    /// Gives the engine the config rules plus the live ones (config wins on a name both have).
    fn install_rules(&self, ctx: &HubCtx) {
        let config = lock(&self.config_rules).clone();
        let live = lock(&self.live_rules).clone();
        let mut compiled = Vec::with_capacity(config.len() + live.len());
        for rule in config.iter().cloned() {
            if let Ok(c) = CompiledRule::new(rule) {
                compiled.push(c);
            }
        }
        for l in live {
            if config.iter().any(|c| c.name == l.rule.name) {
                tracing::warn!(rule = %l.rule.name, "live alert rule shadowed by the config rule of the same name");
                continue;
            }
            if let Ok(c) = CompiledRule::new(l.rule) {
                compiled.push(c);
            }
        }
        self.with_engine(ctx, |e, out| e.set_rules(compiled, out));
    }

    /// Replaces the config rules (start-up, SIGHUP); they were checked by the config's
    /// validation. Returns the names added, changed and removed, for the reload report.
    pub fn set_config_rules(&self, ctx: &HubCtx, specs: &[RuleSpec]) -> Vec<String> {
        let rules: Vec<AlertRule> = specs.iter().filter_map(|s| s.to_rule().ok()).collect();
        let mut changes = Vec::new();
        {
            let old = lock(&self.config_rules);
            for r in &rules {
                match old.iter().find(|o| o.name == r.name) {
                    None => changes.push(format!("alert {} added", r.name)),
                    Some(o) if o != r => changes.push(format!("alert {} changed", r.name)),
                    _ => {}
                }
            }
            for o in old.iter() {
                if !rules.iter().any(|r| r.name == o.name) {
                    changes.push(format!("alert {} removed", o.name));
                }
            }
        }
        *lock(&self.config_rules) = rules;
        self.install_rules(ctx);
        changes
    }

    /// Whether a rule of this name exists, and where.
    pub fn origin_of(&self, name: &str) -> Option<RuleOrigin> {
        if lock(&self.config_rules).iter().any(|r| r.name == name) {
            Some(RuleOrigin::Config)
        } else if lock(&self.live_rules).iter().any(|r| r.rule.name == name) {
            Some(RuleOrigin::Live)
        } else {
            None
        }
    }

    /// Adds a live rule already stored.
    pub(crate) fn add_live(&self, ctx: &HubCtx, rule: AlertRule, added_by: String, added_ms: u64) {
        lock(&self.live_rules).push(LiveRule {
            rule,
            added_by,
            added_ms,
        });
        self.install_rules(ctx);
    }

    /// Removes a live rule already deleted from the store.
    pub(crate) fn remove_live(&self, ctx: &HubCtx, name: &str) {
        lock(&self.live_rules).retain(|r| r.rule.name != name);
        self.install_rules(ctx);
    }

    /// Loads live rules, silences, alerts and the enrolled agents from the database, then
    /// starts the writer and the clock. Call once, at start-up.
    pub async fn start(
        ctx: Arc<HubCtx>,
        tracker: &tokio_util::task::TaskTracker,
        cancel: CancellationToken,
    ) -> Result<(), crate::HubError> {
        let now = now_ms();
        let (stored, silences, alerts, agents) = ctx
            .store
            .call(move |c| {
                Ok((
                    store::alerts::rules(c)?,
                    store::alerts::silences(c, now, false)?,
                    store::alerts::alerts(c)?,
                    store::identities::list(c, true)?,
                ))
            })
            .await?;
        let mut live = Vec::new();
        for s in stored {
            match s.spec.to_rule() {
                Ok(rule) => live.push(LiveRule {
                    rule,
                    added_by: s.added_by,
                    added_ms: s.added_ms,
                }),
                Err(e) => tracing::warn!(error = %e, "stored alert rule no longer valid; ignored"),
            }
        }
        *lock(&ctx.alerts.live_rules) = live;
        *lock(&ctx.alerts.stopping) = cancel.clone();
        ctx.alerts.set_config_rules(&ctx, &ctx.config.alert);
        let alerts_ctx = ctx.clone();
        ctx.alerts.with_engine(&ctx, |e, out| {
            e.set_silences(silences);
            // Restored first: an agent still offline keeps its firing alert instead of starting
            // a new pending one.
            e.restore(alerts, out);
            for row in agents.iter().filter(|r| r.revoked_ms.is_none()) {
                let online = alerts_ctx.registry.is_online(&row.id);
                e.handle_agent(facts_of(row), online, row.last_seen_ms.max(now), now, out);
            }
        });
        if let Some(rx) = lock(&ctx.alerts.writes_rx).take() {
            tracker.spawn(write_rows(ctx.clone(), rx, cancel.clone()));
        }
        tracker.spawn(clock(ctx, cancel));
        Ok(())
    }

    /// Reloads the silences from the database (after one is added or expired).
    pub(crate) async fn reload_silences(&self, ctx: &HubCtx) -> Result<(), crate::HubError> {
        let now = now_ms();
        let silences = ctx
            .store
            .call(move |c| Ok(store::alerts::silences(c, now, false)?))
            .await?;
        self.with_engine(ctx, |e, out| {
            e.set_silences(silences);
            e.handle_tick(now, out);
        });
        Ok(())
    }

    /// The certificate `id` presents expires at `expires_ms` (noted at its hello, used when it
    /// comes online).
    pub fn note_cert(&self, id: &IdentityId, expires_ms: u64) {
        let mut certs = lock(&self.certs);
        // Bounded by the number of identities: one entry each, replaced at every hello.
        certs.insert(id.clone(), expires_ms);
    }

    /// The certificate expiry noted for `id`.
    pub fn cert_of(&self, id: &IdentityId) -> Option<u64> {
        lock(&self.certs).get(id).copied()
    }

    /// An agent connected.
    pub fn agent_online(&self, ctx: &HubCtx, facts: AgentFacts) {
        let now = now_ms();
        let id = facts.id.clone();
        let cert_expires_ms = lock(&self.certs).get(&id).copied();
        self.with_engine(ctx, |e, out| {
            e.handle_agent(facts, true, now, now, out);
            if let Some(exp) = cert_expires_ms {
                e.handle_cert(&id, exp, now, out);
            }
        });
    }

    /// An agent disconnected.
    pub fn agent_offline(&self, ctx: &HubCtx, id: &IdentityId) {
        if lock(&self.stopping).is_cancelled() {
            return;
        }
        self.with_engine(ctx, |e, out| e.handle_offline(id, now_ms(), out));
    }

    /// An agent was revoked.
    pub fn agent_revoked(&self, ctx: &HubCtx, id: &IdentityId) {
        self.with_engine(ctx, |e, out| e.handle_forget(id, now_ms(), out));
    }

    /// A live sample.
    pub fn sample(&self, ctx: &HubCtx, id: &IdentityId, sample: &MetricsSample) {
        self.with_engine(ctx, |e, out| e.handle_sample(id, sample, now_ms(), out));
    }

    /// An agent's workloads changed (called after each delta is applied).
    pub fn workloads(&self, ctx: &HubCtx, id: &IdentityId) {
        if !lock(&self.engine).wants_workloads(id) {
            return;
        }
        let now = now_ms();
        let mut out = Output::default();
        ctx.workloads.with_agent(id, |w| {
            lock(&self.engine).handle_workloads(id, w.containers(), w.units(), now, &mut out);
        });
        self.dispatch(ctx, out);
    }

    /// A job ended on an agent.
    pub fn job_result(&self, ctx: &HubCtx, id: &IdentityId, failed: bool, code: Option<i32>) {
        let code = f64::from(code.unwrap_or(-1));
        self.with_engine(ctx, |e, out| e.handle_job(id, failed, code, now_ms(), out));
    }

    /// Acknowledges a firing alert.
    pub(crate) fn ack(&self, ctx: &HubCtx, id: AlertId, by: &str) -> Result<AlertInfo, String> {
        self.with_engine(ctx, |e, out| e.ack(id, by, out))
    }

    /// Alerts now.
    pub fn list(&self, resolved: bool) -> Vec<AlertInfo> {
        lock(&self.engine).alerts(resolved)
    }

    /// Alerts of one rule.
    pub fn list_rule(&self, rule: &str) -> Vec<AlertInfo> {
        lock(&self.engine).alerts_of(rule)
    }

    /// Number of alerts held, any state.
    pub fn count(&self) -> usize {
        lock(&self.engine).alert_count()
    }
}

/// The facts rules select on, from a registry row.
pub(crate) fn facts_of(row: &store::IdentityRow) -> AgentFacts {
    AgentFacts {
        id: row.id.clone(),
        name: row.name.clone(),
        labels: row.labels.clone(),
    }
}

/// Writes alert rows and the outbox rows of their transitions in the order the engine changed
/// them, one transaction per batch of calls, then tells the sink its rows are committed; at
/// shutdown, writes what is queued and ends.
async fn write_rows(ctx: Arc<HubCtx>, mut rx: mpsc::Receiver<Write>, cancel: CancellationToken) {
    let mut batch: Vec<Write> = Vec::new();
    let mut stopping = false;
    while !stopping {
        // Cancel-safe: `recv` loses nothing when the other branch wins.
        let first = tokio::select! {
            got = rx.recv() => match got {
                Some(o) => o,
                None => break,
            },
            _ = cancel.cancelled() => {
                stopping = true;
                match rx.try_recv() {
                    Ok(o) => o,
                    Err(_) => break,
                }
            }
        };
        batch.push(first);
        while stopping || batch.len() < 256 {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let work = std::mem::take(&mut batch);
        let notifies = work.iter().any(|w| !w.routed.is_empty());
        let written = ctx
            .store
            .call(move |c| {
                let now = now_ms();
                let tx = c.transaction()?;
                for w in &work {
                    store::alerts::save_alerts(&tx, &w.rows.upserts, &w.rows.deletes)?;
                    store::outbox::enqueue(&tx, &w.routed, now)?;
                }
                tx.commit()?;
                Ok(())
            })
            .await;
        match written {
            Ok(()) if notifies => ctx.alerts.sink().committed(),
            Ok(()) => {}
            Err(e) => tracing::error!(
                error = %e,
                "could not store alert state and notifications: they are evaluated again after a restart"
            ),
        }
    }
}

/// Time-driven changes, once per [`TICK`], until the hub stops.
async fn clock(ctx: Arc<HubCtx>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        ctx.alerts
            .with_engine(&ctx, |e, out| e.handle_tick(now_ms(), out));
    }
}
