//! Alert delivery: alert transitions become notifications to the receivers of `[[receiver]]`
//! (generic webhook, Slack-compatible webhook, ntfy, e-mail), through a durable outbox.
//!
//! [`Notifier::submit`] routes transitions to receivers (by the rule's list and each receiver's
//! severities), writes them to the outbox table in one store transaction and only then returns; a
//! delivery task ([`Notifier::deliver`]) sends what is due, retries with back-off, gives up after
//! `give_up_after_s` (with an audit entry), and marks a row sent after a 2xx. A receiver's first
//! transition goes out after `group_wait_ms` (none by default); those arriving within
//! `group_interval_ms` of its last message share the next one; during a receiver's quiet hours only
//! critical ones go out and the others are held until the quiet hours end. Each message has a
//! stable id (`X-Flotilla-Delivery`) so that a receiver can drop the duplicate a crash between
//! "2xx received" and "marked sent" can cause.

pub mod cli;
pub mod config;
pub mod deliver;
pub mod email;
pub mod http;
pub mod render;
pub mod test;

pub use config::{NotifyConfig, QuietHours, ReceiverConfig, ReceiverKind};

use crate::store::{self, Store, outbox};
use std::sync::{Arc, RwLock};

pub use crate::alerts::{AlertTransition, TransitionState};
pub use flotilla_wire::alerts::Severity;

/// Parses a severity as written on the command line (`info`, `warning`, `critical`).
pub fn parse_severity(s: &str) -> Result<Severity, String> {
    match s {
        "info" => Ok(Severity::Info),
        "warning" => Ok(Severity::Warning),
        "critical" => Ok(Severity::Critical),
        other => Err(format!(
            "severity {other:?} is not one of info, warning, critical"
        )),
    }
}

/// The lowercase word of a transition state, as payloads and the audit log write it.
pub fn state_str(state: TransitionState) -> &'static str {
    match state {
        TransitionState::Firing => "firing",
        TransitionState::Resolved => "resolved",
    }
}

/// Why transitions could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The outbox could not be written (database error, or the hub is shutting down): nothing of
    /// this batch was queued, so the caller may submit it again.
    #[error("alert outbox not written: {0}")]
    Outbox(#[source] crate::HubError),
}

/// The receivers and settings in force; replaced whole at SIGHUP.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) receivers: Vec<ReceiverConfig>,
    pub(crate) settings: NotifyConfig,
}

impl Plan {
    fn receiver(&self, name: &str) -> Option<&ReceiverConfig> {
        self.receivers.iter().find(|r| r.name == name)
    }
}

struct Inner {
    store: Store,
    plan: RwLock<Arc<Plan>>,
    /// Wakes the delivery task: something was queued or the plan changed.
    wake: tokio::sync::Notify,
}

/// The front of alert delivery: cheap to clone; the hub owns one and runs its delivery task.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier writing to `store`'s outbox for the receivers of `config` (already validated).
    pub fn new(store: Store, config: &crate::HubConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                plan: RwLock::new(Arc::new(Plan {
                    receivers: config.receiver.clone(),
                    settings: config.notify.clone(),
                })),
                wake: tokio::sync::Notify::new(),
            }),
        }
    }

    pub(crate) fn plan(&self) -> Arc<Plan> {
        match self.inner.plan.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn wake(&self) {
        self.inner.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.inner.wake.notified().await;
    }

    /// Names of the configured receivers.
    pub fn receiver_names(&self) -> Vec<String> {
        self.plan()
            .receivers
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }

    /// Routes `transitions` to their receivers and writes them to the outbox, in one transaction,
    /// before returning; the delivery task sends them once due. A receiver name that is not
    /// configured is skipped with a warning (the rule's other receivers still get it).
    /// Cancel-safe only before the store job is queued: once queued, the write happens anyway.
    pub async fn submit(&self, transitions: Vec<AlertTransition>) -> Result<(), NotifyError> {
        let now = store::now_ms();
        let routed = route(&self.plan(), transitions, now);
        if routed.is_empty() {
            return Ok(());
        }
        self.inner
            .store
            .call(move |c| {
                let tx = c.transaction()?;
                outbox::enqueue(&tx, &routed, now)?;
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(NotifyError::Outbox)?;
        self.wake();
        Ok(())
    }

    /// Puts in force the receivers and settings of a reloaded configuration: held messages of a
    /// receiver whose quiet hours changed are rescheduled for the new end (or released now), and
    /// the delivery task is woken to pick them up.
    pub async fn reconfigure(&self, config: &crate::HubConfig) -> Result<(), crate::HubError> {
        let plan = Arc::new(Plan {
            receivers: config.receiver.clone(),
            settings: config.notify.clone(),
        });
        match self.inner.plan.write() {
            Ok(mut p) => *p = plan.clone(),
            Err(poisoned) => *poisoned.into_inner() = plan.clone(),
        }
        let now = store::now_ms();
        let releases: Vec<(String, u64)> = plan
            .receivers
            .iter()
            .map(|r| (r.name.clone(), r.quiet_release_ms(now).unwrap_or(now)))
            .collect();
        self.inner
            .store
            .call(move |c| {
                let tx = c.transaction()?;
                for (receiver, due) in &releases {
                    outbox::reschedule_held(&tx, receiver, *due)?;
                }
                tx.commit()?;
                Ok(())
            })
            .await?;
        self.wake();
        Ok(())
    }
}

impl crate::alerts::TransitionSink for Notifier {
    /// Routes the batch now (receivers, severities, quiet hours as configured at this moment);
    /// the alert writer commits the rows with the alert state of the same change, so
    /// a transition is in the outbox exactly when the state that caused it is in the database.
    fn route(&self, batch: Vec<AlertTransition>) -> Vec<outbox::Routed> {
        route(&self.plan(), batch, store::now_ms())
    }

    fn committed(&self) {
        self.wake();
    }
}

/// Routes each transition to the receivers that take it, marking those a receiver's quiet hours
/// hold (non-critical, during quiet hours) with the end of the quiet hours as their due time.
fn route(plan: &Plan, transitions: Vec<AlertTransition>, now: u64) -> Vec<outbox::Routed> {
    let group_wait = u64::from(plan.settings.group_wait_ms);
    let group_interval = u64::from(plan.settings.group_interval_ms);
    let mut out = Vec::new();
    for mut t in transitions {
        let names: Vec<String> = if t.receivers.is_empty() {
            plan.receivers.iter().map(|r| r.name.clone()).collect()
        } else {
            std::mem::take(&mut t.receivers)
        };
        t.receivers.clear();
        for name in names {
            let Some(receiver) = plan.receiver(&name) else {
                tracing::warn!(receiver = %name, rule = %t.rule, "alert routed to a receiver that is not configured; skipped");
                continue;
            };
            if !receiver.accepts(t.severity) {
                continue;
            }
            let held_until = if t.severity == Severity::Critical {
                None
            } else {
                receiver.quiet_release_ms(now)
            };
            out.push(outbox::Routed {
                receiver: name,
                transition: t.clone(),
                due_ms: held_until.unwrap_or(now + group_wait),
                group_interval_ms: group_interval,
                held: held_until.is_some(),
            });
        }
    }
    out
}
