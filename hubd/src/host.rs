//! Host depth as the hub holds it in memory: each agent's latest [`HostDetail`] and [`HostReport`],
//! for `flotilla agent` and the console; and [`Query::Host`](flotilla_wire::exec::Query::Host),
//! which can ask an agent to run its slow collectors (SMART) now.

use crate::admin::Actor;
use crate::session::describe_close;
use crate::store;
use crate::{HubCtx, HubError};
use flotilla_wire::exec::HubStreamOpen;
use flotilla_wire::host::{HostDetail, HostReport, HostSummary, HostView};
use flotilla_wire::io::{read_frame, write_frame};
use flotilla_wire::limits::MAX_EXEC_FRAME;
use flotilla_wire::{ErrorCode, IdentityId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Longest wait for an agent's on-demand report: `smartctl` gets 30 s per disk on the agent, and a
/// machine with a few slow disks may need that several times.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct Latest {
    detail: Option<HostDetail>,
    report: Option<HostReport>,
    /// What consoles were last told, so only a change is pushed.
    summary: HostSummary,
}

impl Latest {
    /// The new summary when it differs from the one consoles hold.
    fn resummarise(&mut self) -> Option<HostSummary> {
        let now = HostSummary::of(self.detail.as_ref(), self.report.as_ref());
        (now != self.summary).then(|| {
            self.summary = now.clone();
            now
        })
    }
}

/// Latest host detail and report per agent since the hub started. Kept after a disconnect, so
/// `flotilla agent` still shows what an offline agent last said.
#[derive(Debug, Default)]
pub struct HostState {
    latest: Mutex<HashMap<IdentityId, Latest>>,
}

impl HostState {
    fn with<R>(&self, id: &IdentityId, f: impl FnOnce(&mut Latest) -> R) -> R {
        let mut map = self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(id.clone()).or_default())
    }

    /// Keeps `detail` as the agent's latest; returns the agent's summary when that changed.
    pub fn set_detail(&self, id: &IdentityId, detail: HostDetail) -> Option<HostSummary> {
        self.with(id, |l| {
            l.detail = Some(detail);
            l.resummarise()
        })
    }

    /// Keeps `report` as the agent's latest; returns the agent's summary when that changed.
    pub fn set_report(&self, id: &IdentityId, report: HostReport) -> Option<HostSummary> {
        self.with(id, |l| {
            l.report = Some(report);
            l.resummarise()
        })
    }

    /// The summary of every agent with a GPU or a failed disk: what a console subscribing is told
    /// after the snapshot.
    pub fn summaries(&self) -> Vec<(IdentityId, HostSummary)> {
        self.latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, l)| !l.summary.is_empty())
            .map(|(id, l)| (id.clone(), l.summary.clone()))
            .collect()
    }

    /// The latest detail of `id`, if any.
    pub fn detail(&self, id: &IdentityId) -> Option<HostDetail> {
        self.with(id, |l| l.detail.clone())
    }

    /// What the hub holds for `id`.
    pub fn view(&self, id: &IdentityId, name: &str) -> HostView {
        self.with(id, |l| HostView {
            id: id.clone(),
            name: name.to_string(),
            detail: l.detail.clone(),
            report: l.report.clone(),
        })
    }

    /// Forgets an agent (revoked or removed).
    pub fn forget(&self, id: &IdentityId) {
        self.latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

/// Answers [`Query::Host`](flotilla_wire::exec::Query::Host): the agent's view, after a fresh
/// slow report when `refresh` is set.
pub(crate) async fn query(
    ctx: &HubCtx,
    actor: &Actor,
    agent: String,
    refresh: bool,
) -> Result<HostView, HubError> {
    let q = agent.clone();
    let row = ctx
        .store
        .call(move |c| Ok(store::identities::find(c, &q)?))
        .await?
        .filter(|r| r.role == flotilla_wire::Role::Agent)
        .ok_or_else(|| HubError::refused(ErrorCode::NotFound, format!("no agent {agent:?}")))?;
    if refresh {
        if !actor.role.can_act() {
            return Err(HubError::refused(
                ErrorCode::Forbidden,
                format!(
                    "refreshing disk health needs the operator role; you are {}",
                    actor.role
                ),
            ));
        }
        let conn = ctx.registry.connection(&row.id).ok_or_else(|| {
            HubError::refused(ErrorCode::NotFound, format!("{} is offline", row.name))
        })?;
        let report = match tokio::time::timeout(REFRESH_TIMEOUT, ask_report(&conn)).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                return Err(HubError::refused(
                    ErrorCode::Internal,
                    format!("{} did not report: {e}", row.name),
                ));
            }
            Err(_) => {
                return Err(HubError::refused(
                    ErrorCode::Timeout,
                    format!(
                        "{} did not report within {} s",
                        row.name,
                        REFRESH_TIMEOUT.as_secs()
                    ),
                ));
            }
        };
        publish_summary(ctx, &row.id, ctx.host.set_report(&row.id, report));
    }
    Ok(ctx.host.view(&row.id, &row.name))
}

/// Tells subscribed consoles of `id`'s new summary, if it changed.
pub(crate) fn publish_summary(ctx: &HubCtx, id: &IdentityId, changed: Option<HostSummary>) {
    if let Some(summary) = changed {
        ctx.registry.publish(flotilla_wire::msg::FleetEvent::Host {
            id: id.clone(),
            summary,
        });
    }
}

/// Opens a [`HubStreamOpen::HostReport`] stream and reads the agent's one answer.
async fn ask_report(conn: &quinn::Connection) -> Result<HostReport, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| describe_close(&e))?;
    write_frame(&mut send, &HubStreamOpen::HostReport, MAX_EXEC_FRAME)
        .await
        .map_err(|e| e.to_string())?;
    let _ = send.finish();
    match read_frame::<HostReport, _>(&mut recv, MAX_EXEC_FRAME).await {
        Ok(Some(report)) => Ok(report),
        Ok(None) => Err("the agent closed the stream without answering".into()),
        Err(e) => Err(conn
            .close_reason()
            .map(|r| describe_close(&r))
            .unwrap_or_else(|| e.to_string())),
    }
}
