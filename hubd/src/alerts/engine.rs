//! The evaluation state machine: rules, agents, alerts and silences in memory, driven by what the
//! hub sees (`handle_*`) and by time (`handle_tick`), every call given `now`. It does no IO: each
//! call returns an [`Output`] (events for consoles, transitions for receivers, rows to store) that
//! the caller acts on outside the lock.
//!
//! Cost: a sample is checked against the rules that match its agent only (precompiled selectors,
//! matched once per agent when it connects or the rules change), so a sample costs
//! O(rules matching that agent), not O(rules).

use super::{AlertTransition, TransitionState};
use crate::exec::selector::{Selector, glob_matches};
use flotilla_wire::IdentityId;
use flotilla_wire::alerts::{
    AlertId, AlertInfo, AlertKind, AlertRule, AlertState, Comparison, ContainerCondition, Series,
    Silence, SilenceId,
};
use flotilla_wire::msg::{Labels, MetricsSample};
use flotilla_wire::workloads::{ContainerInfo, ContainerState, Health, UnitInfo};
use std::collections::{HashMap, HashSet, VecDeque};

/// Points a disk forecast keeps per mount: one every lookback / 360 (a minute over 6 hours), so a
/// forecast costs the same memory whatever its lookback.
const FIT_POINTS: u64 = 360;
/// Points a forecast needs before it says anything.
const FIT_MIN_POINTS: usize = 3;
/// Share of the lookback the points must span before a forecast counts (a line through a few
/// seconds of noise predicts nonsense).
const FIT_MIN_SPAN_DIVISOR: u64 = 20;
/// How long resolved alerts stay listed (`flotilla alerts --resolved`) before they are forgotten.
pub const RESOLVED_KEPT_MS: u64 = 24 * 3_600_000;
/// How often certificate expiry is looked at: it changes by the day.
const CERT_CHECK_EVERY_MS: u64 = 60_000;

/// A rule with its selector parsed once.
#[derive(Debug)]
pub struct CompiledRule {
    /// The rule.
    pub rule: AlertRule,
    selector: Selector,
}

impl CompiledRule {
    /// Parses the rule's selector; the error names the rule.
    pub fn new(rule: AlertRule) -> Result<Self, String> {
        let selector = Selector::parse(&rule.selector)
            .map_err(|e| format!("alert rule {:?}: selector: {e}", rule.name))?;
        Ok(Self { rule, selector })
    }

    fn matches(&self, agent: &IdentityId, a: &Agent) -> bool {
        self.selector.matches(agent, &a.name, &a.labels)
    }
}

/// What the hub knows of one agent that rules select on.
#[derive(Clone, Debug)]
pub struct AgentFacts {
    /// Id.
    pub id: IdentityId,
    /// Display name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
}

#[derive(Debug)]
struct Agent {
    name: String,
    labels: Labels,
    online: bool,
    /// Indices into the rules that select this agent.
    rules: Vec<usize>,
    /// Its alerts (any state), so that per-agent work never scans every alert.
    alerts: HashSet<AlertId>,
    /// Disk forecasts by (rule index, mount).
    fits: HashMap<usize, Vec<(String, DiskFit)>>,
    cert_expires_ms: Option<u64>,
}

/// One alert with what the state machine needs beyond what operators see.
#[derive(Clone, Debug)]
struct Slot {
    info: AlertInfo,
    rule: usize,
    /// The condition held at the last observation (a pending alert fires on time alone).
    breach: bool,
    /// The condition was clear at the last observation (a firing alert held by `keep_firing`
    /// resolves on time alone).
    clear: bool,
    /// A firing transition reached the sink: only then is its resolution sent too.
    notified: bool,
}

/// What one call changed.
#[derive(Debug, Default)]
pub struct Output {
    /// Alerts that changed (state, acknowledgement, silence): pushed to consoles.
    pub events: Vec<AlertInfo>,
    /// Firing and resolved changes no silence mutes: handed to the notifier.
    pub transitions: Vec<AlertTransition>,
    /// Alerts to write (insert or replace).
    pub upserts: Vec<AlertInfo>,
    /// Alerts to delete (a pending alert that never fired, a resolved one forgotten, a removed
    /// rule's).
    pub deletes: Vec<AlertId>,
}

impl Output {
    /// Whether nothing happened.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.transitions.is_empty()
            && self.upserts.is_empty()
            && self.deletes.is_empty()
    }
}

/// One observation of a rule's condition on one subject.
#[derive(Clone, Copy, Debug)]
struct Obs {
    /// The condition holds: start or keep the alert.
    breach: bool,
    /// The condition is over, hysteresis included: a firing alert may resolve.
    clear: bool,
    value: f64,
}

/// The engine.
#[derive(Debug, Default)]
pub struct Engine {
    rules: Vec<CompiledRule>,
    by_name: HashMap<String, usize>,
    agents: HashMap<IdentityId, Agent>,
    alerts: HashMap<AlertId, Slot>,
    silences: Vec<(Silence, Selector)>,
    last_cert_check_ms: u64,
}

impl Engine {
    /// Replaces the rules. Alerts of rules that are gone, or whose definition changed, are
    /// dropped (their notifications, if any, were sent); alerts of unchanged rules carry on.
    pub fn set_rules(&mut self, rules: Vec<CompiledRule>, out: &mut Output) {
        let old: HashMap<String, AlertRule> = self
            .rules
            .drain(..)
            .map(|r| (r.rule.name.clone(), r.rule))
            .collect();
        self.rules = rules;
        self.by_name = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.rule.name.clone(), i))
            .collect();
        let mut dropped = Vec::new();
        for (id, slot) in &mut self.alerts {
            match self.by_name.get(&slot.info.rule) {
                Some(&i) if old.get(&slot.info.rule) == Some(&self.rules[i].rule) => {
                    slot.rule = i;
                }
                _ => dropped.push(*id),
            }
        }
        for id in dropped {
            self.forget(id, out);
        }
        for (id, agent) in &mut self.agents {
            agent.rules = matching(&self.rules, id, agent);
            agent.fits.clear();
        }
        // A new certificate rule looks at every agent at the next tick, not a minute later.
        self.last_cert_check_ms = 0;
    }

    /// The rules, in order.
    pub fn rules(&self) -> impl Iterator<Item = &AlertRule> {
        self.rules.iter().map(|r| &r.rule)
    }

    /// Alerts restored from the database at start-up; those of rules no longer defined are
    /// dropped.
    pub fn restore(&mut self, alerts: Vec<AlertInfo>, out: &mut Output) {
        for info in alerts {
            // A pending alert starts again from fresh observations: its condition may have
            // ended while the hub was down.
            if info.state == AlertState::Pending {
                out.deletes.push(info.id);
                continue;
            }
            let Some(&rule) = self.by_name.get(&info.rule) else {
                out.deletes.push(info.id);
                continue;
            };
            if let Some(agent) = self.agents.get_mut(&info.agent) {
                agent.alerts.insert(info.id);
            }
            let firing = info.state == AlertState::Firing;
            self.alerts.insert(
                info.id,
                Slot {
                    breach: info.state != AlertState::Resolved,
                    clear: false,
                    // A firing alert was told (or muted on purpose) before the restart.
                    notified: firing && info.silenced_by.is_none(),
                    rule,
                    info,
                },
            );
        }
    }

    /// Replaces the silences (at start-up and after each change).
    pub fn set_silences(&mut self, silences: Vec<Silence>) {
        self.silences = silences
            .into_iter()
            .filter_map(|s| Selector::parse(&s.selector).ok().map(|sel| (s, sel)))
            .collect();
    }

    /// An agent known to the hub: enrolled (offline until it connects) or connecting now.
    /// `online_since_ms` is when to count an offline agent gone from: its last connection, or
    /// the hub's start, whichever is later, so that a hub restart does not page for every agent.
    pub fn handle_agent(
        &mut self,
        facts: AgentFacts,
        online: bool,
        offline_since_ms: u64,
        now: u64,
        out: &mut Output,
    ) {
        let AgentFacts { id, name, labels } = facts;
        let alerts = self
            .agents
            .remove(&id)
            .map(|a| (a.alerts, a.fits, a.cert_expires_ms))
            .unwrap_or_default();
        let mut agent = Agent {
            name,
            labels,
            online,
            rules: Vec::new(),
            alerts: alerts.0,
            fits: alerts.1,
            cert_expires_ms: alerts.2,
        };
        agent.rules = matching(&self.rules, &id, &agent);
        // Alerts restored before the agent was known.
        for (aid, slot) in &self.alerts {
            if slot.info.agent == id {
                agent.alerts.insert(*aid);
            }
        }
        let offline_rules: Vec<usize> = agent
            .rules
            .iter()
            .copied()
            .filter(|&r| self.rules[r].rule.kind == AlertKind::AgentOffline)
            .collect();
        self.agents.insert(id.clone(), agent);
        for r in offline_rules {
            let obs = Obs {
                breach: !online,
                clear: online,
                value: 0.0,
            };
            self.observe_at(r, &id, "", obs, offline_since_ms.min(now), now, out);
        }
    }

    /// `id` disconnected at `now`.
    pub fn handle_offline(&mut self, id: &IdentityId, now: u64, out: &mut Output) {
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        agent.online = false;
        let rules: Vec<usize> = agent.rules.clone();
        for r in rules {
            if self.rules[r].rule.kind == AlertKind::AgentOffline {
                let obs = Obs {
                    breach: true,
                    clear: false,
                    value: 0.0,
                };
                self.observe(r, id, "", obs, now, out);
            }
        }
    }

    /// `id` was revoked: its alerts go (resolved to anyone who was told they fired).
    pub fn handle_forget(&mut self, id: &IdentityId, now: u64, out: &mut Output) {
        let Some(agent) = self.agents.remove(id) else {
            return;
        };
        for aid in agent.alerts {
            if let Some(slot) = self.alerts.get(&aid)
                && slot.info.state == AlertState::Firing
            {
                let (r, subject) = (slot.rule, slot.info.subject.clone());
                self.resolve(aid, r, &subject, now, out);
            }
            self.forget(aid, out);
        }
    }

    /// `id`'s certificate expires at `expires_ms`.
    pub fn handle_cert(&mut self, id: &IdentityId, expires_ms: u64, now: u64, out: &mut Output) {
        if let Some(agent) = self.agents.get_mut(id) {
            agent.cert_expires_ms = Some(expires_ms);
            self.check_cert(id, now, out);
        }
    }

    /// A live sample from `id`, received at `now` (the hub's clock).
    ///
    /// The hot path of a large fleet: no allocation per rule, and an agent without alerts skips
    /// every observation whose condition does not hold.
    pub fn handle_sample(
        &mut self,
        id: &IdentityId,
        sample: &MetricsSample,
        now: u64,
        out: &mut Output,
    ) {
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        if agent.rules.is_empty() {
            return;
        }
        // Taken out while observing (nothing below reads an agent's rules) and put back after.
        let rules = std::mem::take(&mut agent.rules);
        let mut quiet = agent.alerts.is_empty();
        let mut values: Vec<(&str, f64)> = Vec::new();
        for &r in &rules {
            let watch = match &self.rules[r].rule.kind {
                AlertKind::Threshold {
                    series,
                    cmp,
                    threshold,
                } => Watch::Threshold(*series, *cmp, *threshold),
                AlertKind::DiskFull {
                    within_ms,
                    lookback_ms,
                } => Watch::DiskFull(*within_ms, *lookback_ms),
                AlertKind::ClockSkew { max_ms } => Watch::Skew(*max_ms),
                _ => continue,
            };
            values.clear();
            match watch {
                Watch::Threshold(series, cmp, threshold) => {
                    series_values(series, sample, &mut values);
                    let resolve = self.rules[r].rule.resolve.unwrap_or(threshold);
                    for (subject, v) in values.iter().copied() {
                        let obs = match cmp {
                            Comparison::Above => Obs {
                                breach: v > threshold,
                                clear: v <= resolve,
                                value: v,
                            },
                            Comparison::Below => Obs {
                                breach: v < threshold,
                                clear: v >= resolve,
                                value: v,
                            },
                        };
                        if obs.breach || !quiet {
                            quiet &= !obs.breach;
                            self.observe(r, id, subject, obs, now, out);
                        }
                    }
                }
                Watch::DiskFull(within_ms, lookback_ms) => {
                    let Some(agent) = self.agents.get_mut(id) else {
                        break;
                    };
                    let fits = agent.fits.entry(r).or_default();
                    let mut verdicts: Vec<(&str, Option<f64>)> = Vec::new();
                    for d in sample.disks.iter().filter(|d| d.total > 0) {
                        let pct = d.used as f64 * 100.0 / d.total as f64;
                        let at = match fits.iter().position(|(m, _)| *m == d.mount) {
                            Some(at) => at,
                            None => {
                                fits.push((d.mount.clone(), DiskFit::new(lookback_ms)));
                                fits.len() - 1
                            }
                        };
                        let fit = &mut fits[at].1;
                        fit.push(now, pct);
                        verdicts.push((d.mount.as_str(), fit.hours_to_full(now)));
                    }
                    for (mount, hours) in verdicts {
                        values.push((mount, 0.0));
                        let Some(hours) = hours else { continue };
                        let full = hours * 3_600_000.0 <= within_ms as f64;
                        let obs = Obs {
                            breach: full,
                            clear: !full,
                            // Never full (a flat or shrinking disk) is shown as a million hours:
                            // JSON has no infinity.
                            value: hours.min(1e6),
                        };
                        if obs.breach || !quiet {
                            quiet &= !obs.breach;
                            self.observe(r, id, mount, obs, now, out);
                        }
                    }
                }
                Watch::Skew(max_ms) => {
                    let skew = now.abs_diff(sample.at_ms);
                    let obs = Obs {
                        breach: skew > max_ms,
                        clear: skew <= max_ms,
                        value: skew as f64,
                    };
                    if obs.breach || !quiet {
                        quiet &= !obs.breach;
                        self.observe(r, id, "", obs, now, out);
                    }
                    continue;
                }
            }
            if !quiet {
                self.clear_missing(r, id, values.iter().map(|(s, _)| *s), now, out);
            }
        }
        if let Some(agent) = self.agents.get_mut(id) {
            agent.rules = rules;
        }
    }

    /// Whether any rule of `id` looks at containers or units (the caller skips gathering them
    /// otherwise).
    pub fn wants_workloads(&self, id: &IdentityId) -> bool {
        self.agents.get(id).is_some_and(|a| {
            a.rules.iter().any(|&r| {
                matches!(
                    self.rules[r].rule.kind,
                    AlertKind::Container { .. } | AlertKind::UnitFailed { .. }
                )
            })
        })
    }

    /// `id`'s containers and units as its latest delta left them.
    pub fn handle_workloads<'a>(
        &mut self,
        id: &IdentityId,
        containers: impl Iterator<Item = &'a ContainerInfo> + Clone,
        units: impl Iterator<Item = &'a UnitInfo> + Clone,
        now: u64,
        out: &mut Output,
    ) {
        let Some(agent) = self.agents.get(id) else {
            return;
        };
        let rules = agent.rules.clone();
        for r in rules {
            let mut seen: Vec<(String, Obs)> = Vec::new();
            match &self.rules[r].rule.kind {
                AlertKind::Container { condition, name } => {
                    for c in containers.clone().filter(|c| glob_matches(name, &c.name)) {
                        let bad = match condition {
                            ContainerCondition::Stopped => {
                                matches!(c.state, ContainerState::Exited | ContainerState::Dead)
                            }
                            ContainerCondition::Unhealthy => c.health == Health::Unhealthy,
                            ContainerCondition::Restarting => c.state == ContainerState::Restarting,
                        };
                        let value = f64::from(c.restart_count);
                        seen.push((
                            c.name.clone(),
                            Obs {
                                breach: bad,
                                clear: !bad,
                                value,
                            },
                        ));
                    }
                }
                AlertKind::UnitFailed { name } => {
                    for u in units.clone().filter(|u| glob_matches(name, &u.name)) {
                        let bad = u.failed();
                        seen.push((
                            u.name.clone(),
                            Obs {
                                breach: bad,
                                clear: !bad,
                                value: f64::from(u.restarts),
                            },
                        ));
                    }
                }
                _ => continue,
            }
            for (subject, obs) in &seen {
                self.observe(r, id, subject, *obs, now, out);
            }
            self.clear_missing(r, id, seen.iter().map(|(s, _)| s.as_str()), now, out);
        }
    }

    /// A job ended on `id`: `failed` when it exited non-zero, timed out, failed to start or was
    /// lost; a success resolves the alert.
    pub fn handle_job(
        &mut self,
        id: &IdentityId,
        failed: bool,
        code: f64,
        now: u64,
        out: &mut Output,
    ) {
        let Some(agent) = self.agents.get(id) else {
            return;
        };
        let rules: Vec<usize> = agent
            .rules
            .iter()
            .copied()
            .filter(|&r| self.rules[r].rule.kind == AlertKind::JobFailed)
            .collect();
        for r in rules {
            let obs = Obs {
                breach: failed,
                clear: !failed,
                value: code,
            };
            self.observe(r, id, "", obs, now, out);
        }
    }

    /// Time passing: pending alerts whose `for` elapsed fire, firing ones held by `keep_firing`
    /// resolve, silences start and end, certificates age, old resolved alerts are forgotten.
    pub fn handle_tick(&mut self, now: u64, out: &mut Output) {
        let mut fire = Vec::new();
        let mut resolve = Vec::new();
        let mut forget = Vec::new();
        let mut recheck = Vec::new();
        for (id, slot) in &self.alerts {
            let rule = &self.rules[slot.rule].rule;
            match slot.info.state {
                AlertState::Pending
                    if slot.breach && now.saturating_sub(slot.info.started_ms) >= rule.for_ms =>
                {
                    fire.push(*id)
                }
                AlertState::Firing
                    if slot.clear
                        && now.saturating_sub(slot.info.since_ms) >= rule.keep_firing_ms =>
                {
                    resolve.push(*id)
                }
                AlertState::Firing => recheck.push(*id),
                AlertState::Resolved
                    if now.saturating_sub(slot.info.since_ms) >= RESOLVED_KEPT_MS =>
                {
                    forget.push(*id)
                }
                _ => {}
            }
        }
        for id in fire {
            if let Some(slot) = self.alerts.get(&id) {
                let (r, subject) = (slot.rule, slot.info.subject.clone());
                let value = slot.info.value;
                self.fire(id, r, &subject, value, now, out);
            }
        }
        for id in resolve {
            if let Some(slot) = self.alerts.get(&id) {
                let (r, subject) = (slot.rule, slot.info.subject.clone());
                self.resolve(id, r, &subject, now, out);
            }
        }
        for id in forget {
            self.forget(id, out);
        }
        // A silence that started or ended changes what a firing alert shows; one that ended on
        // an alert still firing lets its notification out now.
        for id in recheck {
            let silenced = self.alerts.get(&id).and_then(|s| self.silence_of(s, now));
            let Some(slot) = self.alerts.get_mut(&id) else {
                continue;
            };
            if slot.info.silenced_by != silenced {
                slot.info.silenced_by = silenced;
                out.events.push(slot.info.clone());
                out.upserts.push(slot.info.clone());
            }
            if silenced.is_none() && !slot.notified {
                slot.notified = true;
                let t = self.transition(&self.alerts[&id], TransitionState::Firing, now);
                out.transitions.push(t);
            }
        }
        if now.saturating_sub(self.last_cert_check_ms) >= CERT_CHECK_EVERY_MS {
            self.last_cert_check_ms = now;
            let ids: Vec<IdentityId> = self
                .agents
                .iter()
                .filter(|(_, a)| a.cert_expires_ms.is_some())
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                self.check_cert(&id, now, out);
            }
        }
    }

    /// Acknowledges a firing alert.
    pub fn ack(&mut self, id: AlertId, by: &str, out: &mut Output) -> Result<AlertInfo, String> {
        let slot = self
            .alerts
            .get_mut(&id)
            .ok_or_else(|| format!("no alert with id {id} (see `flotilla alerts`)"))?;
        if slot.info.state != AlertState::Firing {
            return Err(format!(
                "alert {id} is {}, not firing: only a firing alert can be acknowledged",
                slot.info.state.as_str()
            ));
        }
        slot.info.acked_by = Some(by.to_owned());
        out.events.push(slot.info.clone());
        out.upserts.push(slot.info.clone());
        Ok(slot.info.clone())
    }

    /// Every alert, pending and firing first, then by rule, agent and subject; resolved ones
    /// only with `resolved`.
    pub fn alerts(&self, resolved: bool) -> Vec<AlertInfo> {
        let mut out: Vec<AlertInfo> = self
            .alerts
            .values()
            .filter(|s| resolved || s.info.state != AlertState::Resolved)
            .map(|s| s.info.clone())
            .collect();
        out.sort_by(|a, b| {
            let rank = |s: AlertState| match s {
                AlertState::Firing => 0,
                AlertState::Pending => 1,
                AlertState::Resolved => 2,
            };
            rank(a.state)
                .cmp(&rank(b.state))
                .then_with(|| a.rule.cmp(&b.rule))
                .then_with(|| a.agent_name.cmp(&b.agent_name))
                .then_with(|| a.subject.cmp(&b.subject))
        });
        out
    }

    /// Alerts of one rule.
    pub fn alerts_of(&self, rule: &str) -> Vec<AlertInfo> {
        let mut all = self.alerts(true);
        all.retain(|a| a.rule == rule);
        all
    }

    /// Number of alerts held (any state).
    pub fn alert_count(&self) -> usize {
        self.alerts.len()
    }

    fn check_cert(&mut self, id: &IdentityId, now: u64, out: &mut Output) {
        let Some(agent) = self.agents.get(id) else {
            return;
        };
        let Some(expires) = agent.cert_expires_ms else {
            return;
        };
        let rules: Vec<(usize, u64)> = agent
            .rules
            .iter()
            .filter_map(|&r| match self.rules[r].rule.kind {
                AlertKind::CertExpiring { within_ms } => Some((r, within_ms)),
                _ => None,
            })
            .collect();
        for (r, within_ms) in rules {
            let left_ms = expires.saturating_sub(now);
            let obs = Obs {
                breach: left_ms <= within_ms,
                clear: left_ms > within_ms,
                value: left_ms as f64 / 86_400_000.0,
            };
            self.observe(r, id, "", obs, now, out);
        }
    }

    /// Subjects of rule `r` on `id` that the last observation did not mention (an unmounted
    /// disk, a removed container) are clear.
    fn clear_missing<'a>(
        &mut self,
        r: usize,
        id: &IdentityId,
        seen: impl Iterator<Item = &'a str>,
        now: u64,
        out: &mut Output,
    ) {
        let Some(agent) = self.agents.get(id) else {
            return;
        };
        if agent.alerts.is_empty() {
            return;
        }
        let seen: HashSet<&str> = seen.collect();
        let gone: Vec<String> = agent
            .alerts
            .iter()
            .filter_map(|aid| self.alerts.get(aid))
            .filter(|s| s.rule == r && s.info.state != AlertState::Resolved)
            .filter(|s| !seen.contains(s.info.subject.as_str()))
            .map(|s| s.info.subject.clone())
            .collect();
        for subject in gone {
            let obs = Obs {
                breach: false,
                clear: true,
                value: 0.0,
            };
            self.observe(r, id, &subject, obs, now, out);
        }
    }

    fn observe(
        &mut self,
        r: usize,
        agent: &IdentityId,
        subject: &str,
        obs: Obs,
        now: u64,
        out: &mut Output,
    ) {
        self.observe_at(r, agent, subject, obs, now, now, out);
    }

    /// The state machine. `started` is when the condition began (now, except for an agent
    /// found offline at start-up).
    #[allow(clippy::too_many_arguments)]
    fn observe_at(
        &mut self,
        r: usize,
        agent: &IdentityId,
        subject: &str,
        obs: Obs,
        started: u64,
        now: u64,
        out: &mut Output,
    ) {
        let id = AlertId::of(&self.rules[r].rule.name, agent, subject);
        let for_ms = self.rules[r].rule.for_ms;
        let keep_ms = self.rules[r].rule.keep_firing_ms;
        let offline = self.rules[r].rule.kind == AlertKind::AgentOffline;
        let value_at = |slot_started: u64| {
            if offline {
                now.saturating_sub(slot_started) as f64 / 1000.0
            } else {
                obs.value
            }
        };
        match self.alerts.get_mut(&id) {
            None => {
                if !obs.breach {
                    return;
                }
                let Some(a) = self.agents.get_mut(agent) else {
                    return;
                };
                a.alerts.insert(id);
                let info = AlertInfo {
                    id,
                    rule: self.rules[r].rule.name.clone(),
                    severity: self.rules[r].rule.severity,
                    agent: agent.clone(),
                    agent_name: a.name.clone(),
                    subject: subject.to_owned(),
                    state: AlertState::Pending,
                    since_ms: started,
                    started_ms: started,
                    value: value_at(started),
                    summary: String::new(),
                    acked_by: None,
                    silenced_by: None,
                };
                self.alerts.insert(
                    id,
                    Slot {
                        info,
                        rule: r,
                        breach: true,
                        clear: false,
                        notified: false,
                    },
                );
                self.pending_or_fire(id, r, subject, now, for_ms, out);
            }
            Some(slot) => match slot.info.state {
                AlertState::Resolved => {
                    if !obs.breach {
                        return;
                    }
                    slot.info.state = AlertState::Pending;
                    slot.info.since_ms = started;
                    slot.info.started_ms = started;
                    slot.info.value = value_at(started);
                    slot.info.acked_by = None;
                    slot.breach = true;
                    slot.clear = false;
                    slot.notified = false;
                    self.pending_or_fire(id, r, subject, now, for_ms, out);
                }
                AlertState::Pending => {
                    slot.breach = obs.breach;
                    slot.clear = obs.clear;
                    if !obs.breach {
                        // Never fired: consoles drop it, receivers never hear of it.
                        slot.info.state = AlertState::Resolved;
                        slot.info.since_ms = now;
                        slot.info.value = obs.value;
                        out.events.push(slot.info.clone());
                        self.forget(id, out);
                        return;
                    }
                    slot.info.value = value_at(slot.info.started_ms);
                    if now.saturating_sub(slot.info.started_ms) >= for_ms {
                        let value = slot.info.value;
                        self.fire(id, r, subject, value, now, out);
                    }
                }
                AlertState::Firing => {
                    slot.breach = obs.breach;
                    slot.clear = obs.clear;
                    if !obs.clear {
                        slot.info.value = value_at(slot.info.started_ms);
                        return;
                    }
                    if now.saturating_sub(slot.info.since_ms) >= keep_ms {
                        slot.info.value = obs.value;
                        self.resolve(id, r, subject, now, out);
                    }
                }
            },
        }
    }

    fn pending_or_fire(
        &mut self,
        id: AlertId,
        r: usize,
        subject: &str,
        now: u64,
        for_ms: u64,
        out: &mut Output,
    ) {
        let Some(slot) = self.alerts.get_mut(&id) else {
            return;
        };
        if now.saturating_sub(slot.info.started_ms) >= for_ms {
            let value = slot.info.value;
            self.fire(id, r, subject, value, now, out);
        } else {
            slot.info.summary = render(&self.rules[r].rule, &slot.info);
            out.events.push(slot.info.clone());
            out.upserts.push(slot.info.clone());
        }
    }

    fn fire(
        &mut self,
        id: AlertId,
        r: usize,
        _subject: &str,
        value: f64,
        now: u64,
        out: &mut Output,
    ) {
        let silenced = self.alerts.get(&id).and_then(|s| self.silence_of(s, now));
        let Some(slot) = self.alerts.get_mut(&id) else {
            return;
        };
        slot.info.state = AlertState::Firing;
        slot.info.since_ms = now;
        slot.info.value = if self.rules[r].rule.kind == AlertKind::AgentOffline {
            now.saturating_sub(slot.info.started_ms) as f64 / 1000.0
        } else {
            value
        };
        slot.info.silenced_by = silenced;
        slot.info.summary = render(&self.rules[r].rule, &slot.info);
        slot.notified = silenced.is_none();
        out.events.push(slot.info.clone());
        out.upserts.push(slot.info.clone());
        if silenced.is_none() {
            let t = self.transition(&self.alerts[&id], TransitionState::Firing, now);
            out.transitions.push(t);
        }
    }

    fn resolve(&mut self, id: AlertId, r: usize, _subject: &str, now: u64, out: &mut Output) {
        let Some(slot) = self.alerts.get_mut(&id) else {
            return;
        };
        slot.info.state = AlertState::Resolved;
        slot.info.since_ms = now;
        slot.info.acked_by = None;
        slot.info.summary = render(&self.rules[r].rule, &slot.info);
        let notified = std::mem::take(&mut slot.notified);
        slot.breach = false;
        slot.clear = true;
        out.events.push(slot.info.clone());
        out.upserts.push(slot.info.clone());
        if notified {
            let t = self.transition(&self.alerts[&id], TransitionState::Resolved, now);
            out.transitions.push(t);
        }
    }

    fn forget(&mut self, id: AlertId, out: &mut Output) {
        if let Some(slot) = self.alerts.remove(&id) {
            if let Some(a) = self.agents.get_mut(&slot.info.agent) {
                a.alerts.remove(&id);
            }
            out.deletes.push(id);
        }
    }

    fn silence_of(&self, slot: &Slot, now: u64) -> Option<SilenceId> {
        let agent = self.agents.get(&slot.info.agent);
        self.silences
            .iter()
            .find(|(s, sel)| {
                s.active_at(now)
                    && glob_matches(&s.rule, &slot.info.rule)
                    && agent.is_some_and(|a| sel.matches(&slot.info.agent, &a.name, &a.labels))
            })
            .map(|(s, _)| s.id)
    }

    fn transition(&self, slot: &Slot, state: TransitionState, now: u64) -> AlertTransition {
        let rule = &self.rules[slot.rule].rule;
        AlertTransition {
            alert_id: slot.info.id,
            rule: rule.name.clone(),
            severity: rule.severity,
            agent: slot.info.agent.clone(),
            agent_name: slot.info.agent_name.clone(),
            subject: slot.info.subject.clone(),
            state,
            value: slot.info.value,
            summary: slot.info.summary.clone(),
            at_ms: now,
            receivers: rule.receivers.clone(),
        }
    }
}

fn matching(rules: &[CompiledRule], id: &IdentityId, agent: &Agent) -> Vec<usize> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.matches(id, agent))
        .map(|(i, _)| i)
        .collect()
}

/// What a sample rule reads, copied out of the rule so the engine can change while it looks.
#[derive(Clone, Copy)]
enum Watch {
    Threshold(Series, Comparison, f64),
    DiskFull(u64, u64),
    Skew(u64),
}

/// The values of `series` in `sample`, with their subjects.
fn series_values<'a>(series: Series, s: &'a MetricsSample, out: &mut Vec<(&'a str, f64)>) {
    let pct = |used: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            used as f64 * 100.0 / total as f64
        }
    };
    match series {
        Series::Cpu => out.push(("", f64::from(s.cpu_pct))),
        Series::Mem => out.push(("", pct(s.mem_used, s.mem_total))),
        Series::Swap => out.push(("", pct(s.swap_used, s.swap_total))),
        Series::Load => out.push(("", f64::from(s.load[0]))),
        Series::Disk => out.extend(
            s.disks
                .iter()
                .filter(|d| d.total > 0)
                .map(|d| (d.mount.as_str(), pct(d.used, d.total))),
        ),
        Series::Temp => out.extend(
            s.temps
                .iter()
                .map(|t| (t.label.as_str(), f64::from(t.celsius))),
        ),
        Series::NetRx => out.extend(s.nets.iter().map(|n| (n.iface.as_str(), n.rx_bps as f64))),
        Series::NetTx => out.extend(s.nets.iter().map(|n| (n.iface.as_str(), n.tx_bps as f64))),
        Series::Net => out.extend(
            s.nets
                .iter()
                .map(|n| (n.iface.as_str(), n.rx_bps.saturating_add(n.tx_bps) as f64)),
        ),
    }
}

/// The summary line: the rule's template, or the kind's default, with `{rule}`, `{agent}`,
/// `{subject}`, `{value}`, `{threshold}` and `{severity}` filled in.
pub fn render(rule: &AlertRule, a: &AlertInfo) -> String {
    let value = if a.value.fract() == 0.0 && a.value.abs() < 1e15 {
        format!("{}", a.value as i64)
    } else {
        format!("{:.1}", a.value)
    };
    let template = if rule.summary.is_empty() {
        default_summary(rule)
    } else {
        rule.summary.clone()
    };
    let threshold = match &rule.kind {
        AlertKind::Threshold { threshold, .. } => format!("{threshold}"),
        _ => String::new(),
    };
    template
        .replace("{rule}", &rule.name)
        .replace("{agent}", &a.agent_name)
        .replace("{subject}", &a.subject)
        .replace("{value}", &value)
        .replace("{threshold}", &threshold)
        .replace("{severity}", rule.severity.as_str())
}

fn default_summary(rule: &AlertRule) -> String {
    match &rule.kind {
        AlertKind::AgentOffline => "{agent} offline for {value} s".into(),
        AlertKind::Threshold { series, cmp, .. } => {
            let on = match series {
                Series::Disk => " {subject}",
                Series::Temp | Series::NetRx | Series::NetTx | Series::Net => " {subject}",
                _ => "",
            };
            let side = match cmp {
                Comparison::Above => "above",
                Comparison::Below => "below",
            };
            format!(
                "{{agent}} {}{on} at {{value}}{} ({side} {{threshold}})",
                series.as_str(),
                series.unit()
            )
        }
        AlertKind::DiskFull { .. } => "{agent} disk {subject} full in {value} h".into(),
        AlertKind::Container { condition, .. } => {
            format!("{{agent}} container {{subject}} {}", condition.as_str())
        }
        AlertKind::UnitFailed { .. } => "{agent} unit {subject} failed".into(),
        AlertKind::JobFailed => "{agent} job failed (exit {value})".into(),
        AlertKind::CertExpiring { .. } => "{agent} certificate expires in {value} days".into(),
        AlertKind::ClockSkew { .. } => "{agent} clock off by {value} ms".into(),
    }
}

/// A least-squares line through a mount's use over the lookback, kept as running sums so each
/// point costs O(1). Times are hours since the first point, which keeps the sums precise.
#[derive(Clone, Debug)]
pub struct DiskFit {
    lookback_ms: u64,
    step_ms: u64,
    base_ms: Option<u64>,
    points: VecDeque<(f64, f64)>,
    last_ms: u64,
    sums: [f64; 4], // t, y, t·y, t²
}

impl DiskFit {
    /// An empty fit over `lookback_ms`.
    pub fn new(lookback_ms: u64) -> Self {
        Self {
            lookback_ms,
            step_ms: (lookback_ms / FIT_POINTS).max(1000),
            base_ms: None,
            points: VecDeque::new(),
            last_ms: 0,
            sums: [0.0; 4],
        }
    }

    /// Adds the use `pct` seen at `now` (at most one point per step).
    pub fn push(&mut self, now: u64, pct: f64) {
        let base = *self.base_ms.get_or_insert(now);
        if !self.points.is_empty() && now.saturating_sub(self.last_ms) < self.step_ms {
            return;
        }
        self.last_ms = now;
        let t = now.saturating_sub(base) as f64 / 3_600_000.0;
        self.points.push_back((t, pct));
        self.add(t, pct, 1.0);
        let oldest = now.saturating_sub(base).saturating_sub(self.lookback_ms) as f64 / 3_600_000.0;
        while let Some(&(t0, y0)) = self.points.front() {
            if t0 >= oldest || self.points.len() <= 1 {
                break;
            }
            self.points.pop_front();
            self.add(t0, y0, -1.0);
        }
    }

    fn add(&mut self, t: f64, y: f64, sign: f64) {
        self.sums[0] += sign * t;
        self.sums[1] += sign * y;
        self.sums[2] += sign * t * y;
        self.sums[3] += sign * t * t;
    }

    /// Hours until the fitted line reaches 100 % from `now`; `f64::INFINITY` when the use is
    /// flat or shrinking; `None` until the points span enough of the lookback.
    pub fn hours_to_full(&self, now: u64) -> Option<f64> {
        let n = self.points.len();
        let (first, last) = (self.points.front()?, self.points.back()?);
        let span_ms = (last.0 - first.0) * 3_600_000.0;
        if n < FIT_MIN_POINTS || span_ms < (self.lookback_ms / FIT_MIN_SPAN_DIVISOR) as f64 {
            return None;
        }
        let nf = n as f64;
        let [st, sy, sty, stt] = self.sums;
        let denom = nf * stt - st * st;
        if denom.abs() < f64::EPSILON {
            return None;
        }
        let slope = (nf * sty - st * sy) / denom;
        let intercept = (sy - slope * st) / nf;
        if slope <= 0.0 {
            return Some(f64::INFINITY);
        }
        let t_now = now.saturating_sub(self.base_ms?) as f64 / 3_600_000.0;
        let y_now = intercept + slope * t_now;
        Some(((100.0 - y_now) / slope).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::Role;
    use flotilla_wire::alerts::RuleSpec;
    use flotilla_wire::msg::DiskUsage;

    fn agent(n: u8, name: &str, labels: &[(&str, &str)]) -> AgentFacts {
        AgentFacts {
            id: IdentityId::from_random(Role::Agent, [n; 8]),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn rule(text: &str) -> CompiledRule {
        let spec: RuleSpec = toml::from_str(text).expect("rule text");
        CompiledRule::new(spec.to_rule().expect("valid")).expect("selector")
    }

    fn engine(rules: &[&str], agents: &[AgentFacts]) -> Engine {
        let mut e = Engine::default();
        let mut out = Output::default();
        e.set_rules(rules.iter().map(|r| rule(r)).collect(), &mut out);
        for a in agents {
            e.handle_agent(a.clone(), true, 0, 0, &mut out);
        }
        e
    }

    fn cpu(at: u64, pct: f32) -> MetricsSample {
        MetricsSample {
            at_ms: at,
            cpu_pct: pct,
            ..MetricsSample::default()
        }
    }

    /// Feeds a sample at `at` and returns the states of what changed.
    fn feed(e: &mut Engine, id: &IdentityId, at: u64, s: &MetricsSample) -> Output {
        let mut out = Output::default();
        e.handle_sample(id, s, at, &mut out);
        out
    }

    fn states(out: &Output) -> Vec<AlertState> {
        out.events.iter().map(|a| a.state).collect()
    }

    const CPU_HOT: &str = r#"name = "hot"
kind = "cpu"
above = 90.0
resolve = 50.0
for = "10s""#;

    #[test]
    fn pending_fires_after_for_then_resolves_past_the_resolve_line_once() {
        let a = agent(1, "web-1", &[]);
        let mut e = engine(&[CPU_HOT], std::slice::from_ref(&a));
        assert!(feed(&mut e, &a.id, 1_000, &cpu(1_000, 20.0)).is_empty());
        assert_eq!(
            states(&feed(&mut e, &a.id, 2_000, &cpu(2_000, 95.0))),
            [AlertState::Pending]
        );
        // Still inside `for`: no change, no duplicate.
        assert!(feed(&mut e, &a.id, 7_000, &cpu(7_000, 96.0)).is_empty());
        let fired = feed(&mut e, &a.id, 12_000, &cpu(12_000, 97.0));
        assert_eq!(states(&fired), [AlertState::Firing]);
        assert_eq!(fired.transitions.len(), 1);
        assert_eq!(fired.transitions[0].state, TransitionState::Firing);
        assert_eq!(fired.transitions[0].value, 97.0);
        // Hovering between the lines: nothing, however often.
        for t in 0..20 {
            let at = 13_000 + t * 1000;
            let v = if t % 2 == 0 { 85.0 } else { 92.0 };
            assert!(feed(&mut e, &a.id, at, &cpu(at, v)).is_empty(), "at {at}");
        }
        let resolved = feed(&mut e, &a.id, 40_000, &cpu(40_000, 40.0));
        assert_eq!(states(&resolved), [AlertState::Resolved]);
        assert_eq!(resolved.transitions.len(), 1);
        assert!(feed(&mut e, &a.id, 41_000, &cpu(41_000, 30.0)).is_empty());
    }

    #[test]
    fn a_pending_alert_that_clears_is_dropped_without_a_notification() {
        let a = agent(1, "web-1", &[]);
        let mut e = engine(&[CPU_HOT], std::slice::from_ref(&a));
        feed(&mut e, &a.id, 1_000, &cpu(1_000, 95.0));
        let out = feed(&mut e, &a.id, 3_000, &cpu(3_000, 80.0));
        assert_eq!(states(&out), [AlertState::Resolved]);
        assert!(out.transitions.is_empty());
        assert_eq!(out.deletes.len(), 1);
        assert_eq!(e.alert_count(), 0);
    }

    #[test]
    fn for_elapses_on_the_clock_without_new_samples() {
        let a = agent(1, "web-1", &[]);
        let mut e = engine(&[CPU_HOT], std::slice::from_ref(&a));
        feed(&mut e, &a.id, 1_000, &cpu(1_000, 95.0));
        let mut out = Output::default();
        e.handle_tick(10_999, &mut out);
        assert!(out.transitions.is_empty());
        e.handle_tick(11_000, &mut out);
        assert_eq!(out.transitions.len(), 1);
    }

    #[test]
    fn keep_firing_holds_an_alert_for_its_minimum_time() {
        let a = agent(1, "web-1", &[]);
        let text = "name = \"spiky\"\nkind = \"cpu\"\nabove = 90.0\nkeep_firing = \"30s\"";
        let mut e = engine(&[text], std::slice::from_ref(&a));
        assert_eq!(
            states(&feed(&mut e, &a.id, 0, &cpu(0, 95.0))),
            [AlertState::Firing]
        );
        assert!(feed(&mut e, &a.id, 5_000, &cpu(5_000, 10.0)).is_empty());
        let mut out = Output::default();
        e.handle_tick(29_000, &mut out);
        assert!(out.events.is_empty());
        e.handle_tick(30_000, &mut out);
        assert_eq!(states(&out), [AlertState::Resolved]);
    }

    #[test]
    fn selectors_scope_rules_and_subjects_are_separate_alerts() {
        let prod = agent(1, "db-1", &[("env", "prod")]);
        let dev = agent(2, "db-2", &[("env", "dev")]);
        let text = "name = \"disk\"\nkind = \"disk\"\nabove = 90.0\nselector = \"env=prod\"";
        let mut e = engine(&[text], &[prod.clone(), dev.clone()]);
        let s = MetricsSample {
            disks: vec![
                DiskUsage {
                    mount: "/".into(),
                    used: 95,
                    total: 100,
                },
                DiskUsage {
                    mount: "/var".into(),
                    used: 99,
                    total: 100,
                },
            ],
            ..MetricsSample::default()
        };
        let out = feed(&mut e, &prod.id, 0, &s);
        let mut subjects: Vec<&str> = out.events.iter().map(|a| a.subject.as_str()).collect();
        subjects.sort();
        assert_eq!(subjects, ["/", "/var"]);
        assert!(
            feed(&mut e, &dev.id, 0, &s).is_empty(),
            "dev is out of scope"
        );
        // /var unmounted: its alert resolves; / keeps firing.
        let only_root = MetricsSample {
            disks: vec![s.disks[0].clone()],
            ..MetricsSample::default()
        };
        let out = feed(&mut e, &prod.id, 1_000, &only_root);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].subject, "/var");
        assert_eq!(out.events[0].state, AlertState::Resolved);
    }

    #[test]
    fn a_silence_mutes_the_notification_and_its_end_lets_it_out() {
        let a = agent(1, "web-1", &[]);
        let text = "name = \"hot\"\nkind = \"cpu\"\nabove = 90.0";
        let mut e = engine(&[text], std::slice::from_ref(&a));
        e.set_silences(vec![Silence {
            id: SilenceId(7),
            rule: "h*".into(),
            selector: "web-*".into(),
            starts_ms: 0,
            ends_ms: 5_000,
            comment: "deploy".into(),
            created_by: "alice".into(),
            created_ms: 0,
        }]);
        let out = feed(&mut e, &a.id, 1_000, &cpu(1_000, 95.0));
        assert_eq!(out.events[0].silenced_by, Some(SilenceId(7)));
        assert!(out.transitions.is_empty());
        let mut out = Output::default();
        e.handle_tick(4_999, &mut out);
        assert!(out.transitions.is_empty());
        e.handle_tick(5_000, &mut out);
        assert_eq!(out.transitions.len(), 1);
        assert_eq!(out.events[0].silenced_by, None);
        // Told once: later ticks add nothing.
        let mut later = Output::default();
        e.handle_tick(6_000, &mut later);
        assert!(later.transitions.is_empty());
    }

    #[test]
    fn agents_offline_at_start_get_their_for_from_the_hub_start() {
        let a = agent(1, "web-1", &[]);
        let mut e = Engine::default();
        let mut out = Output::default();
        e.set_rules(
            vec![rule("name = \"gone\"\nkind = \"offline\"\nfor = \"1m\"")],
            &mut out,
        );
        // Last seen long ago, hub started at 1,000,000: counted from the start.
        e.handle_agent(a.clone(), false, 1_000_000, 1_000_000, &mut out);
        assert_eq!(states(&out), [AlertState::Pending]);
        let mut out = Output::default();
        e.handle_tick(1_059_999, &mut out);
        assert!(out.transitions.is_empty());
        e.handle_tick(1_060_000, &mut out);
        assert_eq!(out.transitions.len(), 1);
        assert_eq!(out.transitions[0].value, 60.0);
        let mut out = Output::default();
        e.handle_agent(a, true, 1_070_000, 1_070_000, &mut out);
        assert_eq!(out.transitions[0].state, TransitionState::Resolved);
    }

    #[test]
    fn restored_firing_alerts_are_not_told_again_and_pending_ones_start_over() {
        let a = agent(1, "web-1", &[]);
        let mut e = engine(&[CPU_HOT], std::slice::from_ref(&a));
        feed(&mut e, &a.id, 0, &cpu(0, 95.0));
        feed(&mut e, &a.id, 10_000, &cpu(10_000, 95.0));
        let firing = e.alerts(false);
        assert_eq!(firing[0].state, AlertState::Firing);
        let mut pending = firing[0].clone();
        pending.state = AlertState::Pending;
        pending.subject = "x".into();
        pending.id = AlertId(1);

        let mut again = Engine::default();
        let mut out = Output::default();
        again.set_rules(vec![rule(CPU_HOT)], &mut out);
        again.restore(vec![firing[0].clone(), pending], &mut out);
        again.handle_agent(a.clone(), true, 20_000, 20_000, &mut out);
        assert_eq!(out.deletes, [AlertId(1)]);
        assert!(feed(&mut again, &a.id, 21_000, &cpu(21_000, 96.0)).is_empty());
        let resolved = feed(&mut again, &a.id, 22_000, &cpu(22_000, 10.0));
        assert_eq!(resolved.transitions.len(), 1, "its end is still told");
    }

    #[test]
    fn changing_a_rule_drops_its_alerts_and_keeps_the_others() {
        let a = agent(1, "web-1", &[]);
        let other = "name = \"any\"\nkind = \"cpu\"\nabove = 1.0";
        let mut e = engine(&[CPU_HOT, other], std::slice::from_ref(&a));
        feed(&mut e, &a.id, 0, &cpu(0, 95.0));
        assert_eq!(e.alert_count(), 2);
        let mut out = Output::default();
        let changed = CPU_HOT.replace("90.0", "80.0");
        e.set_rules(vec![rule(&changed), rule(other)], &mut out);
        assert_eq!(out.deletes.len(), 1);
        assert_eq!(e.alerts(true)[0].rule, "any");
    }

    #[test]
    fn acks_need_a_firing_alert() {
        let a = agent(1, "web-1", &[]);
        let mut e = engine(&[CPU_HOT], std::slice::from_ref(&a));
        feed(&mut e, &a.id, 0, &cpu(0, 95.0));
        let id = e.alerts(false)[0].id;
        let mut out = Output::default();
        assert_eq!(
            e.ack(id, "bob", &mut out).expect_err("pending"),
            format!("alert {id} is pending, not firing: only a firing alert can be acknowledged")
        );
        feed(&mut e, &a.id, 10_000, &cpu(10_000, 95.0));
        assert_eq!(
            e.ack(id, "bob", &mut out)
                .expect("acked")
                .acked_by
                .as_deref(),
            Some("bob")
        );
        assert!(e.ack(AlertId(3), "bob", &mut out).is_err());
    }

    #[test]
    fn disk_forecast_fits_a_line_and_says_when_it_reaches_full() {
        let mut fit = DiskFit::new(3_600_000);
        // 50 % growing 10 points an hour: full in 5 hours.
        for minute in 0..=60u64 {
            let at = minute * 60_000;
            fit.push(at, 50.0 + minute as f64 / 6.0);
        }
        let hours = fit.hours_to_full(3_600_000).expect("enough points");
        assert!((hours - 4.0).abs() < 0.01, "{hours}");
        let mut flat = DiskFit::new(3_600_000);
        for minute in 0..=60u64 {
            flat.push(minute * 60_000, 70.0);
        }
        assert_eq!(flat.hours_to_full(3_600_000), Some(f64::INFINITY));
        let mut young = DiskFit::new(3_600_000);
        young.push(0, 10.0);
        young.push(60_000, 20.0);
        assert_eq!(young.hours_to_full(60_000), None, "too little history");
    }

    #[test]
    fn disk_full_fires_within_its_horizon() {
        let a = agent(1, "db-1", &[]);
        let text = "name = \"filling\"\nkind = \"disk_full\"\nwithin = \"2h\"\nlookback = \"1h\"";
        let mut e = engine(&[text], std::slice::from_ref(&a));
        let mut fired_at = None;
        for minute in 0..=60u64 {
            let at = minute * 60_000;
            let used = 80 + minute / 6; // 10 points an hour, from 80 %
            let s = MetricsSample {
                disks: vec![DiskUsage {
                    mount: "/".into(),
                    used,
                    total: 100,
                }],
                ..MetricsSample::default()
            };
            let out = feed(&mut e, &a.id, at, &s);
            if !out.transitions.is_empty() && fired_at.is_none() {
                fired_at = Some(minute);
            }
        }
        // From 80 % at 10 points an hour the disk is full in 2 h; use grows in whole points
        // every 6 minutes, so the line needs a few steps to show the slope.
        assert!(
            fired_at.is_some_and(|m| (6..=15).contains(&m)),
            "{fired_at:?}"
        );
    }

    #[test]
    fn summaries_fill_their_placeholders() {
        let r = rule("name = \"t\"\nkind = \"temp\"\nabove = 80.0\nseverity = \"critical\"");
        let info = AlertInfo {
            id: AlertId(1),
            rule: "t".into(),
            severity: r.rule.severity,
            agent: IdentityId::from_random(Role::Agent, [1; 8]),
            agent_name: "web-1".into(),
            subject: "cpu".into(),
            state: AlertState::Firing,
            since_ms: 0,
            started_ms: 0,
            value: 85.25,
            summary: String::new(),
            acked_by: None,
            silenced_by: None,
        };
        assert_eq!(
            render(&r.rule, &info),
            "web-1 temp cpu at 85.2°C (above 80)"
        );
        let mut custom = r.rule.clone();
        custom.summary = "{severity}: {rule} on {agent}/{subject} = {value} > {threshold}".into();
        assert_eq!(
            render(&custom, &info),
            "critical: t on web-1/cpu = 85.2 > 80"
        );
    }
}
