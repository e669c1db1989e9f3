//! Operator API requests (list, detail, tokens, revocations), shared by the QUIC operator API and the
//! local admin socket. Roles are checked here, on the hub, for every request.

use crate::store::{self, IdentityRow, TokenRow, now_ms};
use crate::{HubCtx, HubError};
use flotilla_certs::JoinToken;
use flotilla_wire::msg::{AgentInfo, CreatedToken, FleetEvent, OpRequest, OpResponse, TokenSpec};
use flotilla_wire::{ErrorCode, Role};

/// Longest token lifetime: a forgotten token should not stay valid for years.
const MAX_TOKEN_TTL_S: u64 = 366 * 24 * 3600;
/// Most enrolments one token may allow: enough for a swarm of 100,000, small enough to catch typos.
const MAX_TOKEN_USES: u32 = 1_000_000;

/// Who is asking.
#[derive(Clone, Debug)]
pub struct Actor {
    /// Audit name: an identity id, or `local-admin` for the hub's own CLI.
    pub name: String,
    /// Role the request is checked against.
    pub role: Role,
}

/// Answers one request; refusals and failures become [`OpResponse::Error`] (internals stay in the log).
pub async fn handle(ctx: &HubCtx, actor: &Actor, req: OpRequest) -> OpResponse {
    let (action, target) = audit_name(&req);
    match answer(ctx, actor, req).await {
        Ok(resp) => resp,
        Err(err) => {
            match &err {
                HubError::Refused {
                    code: ErrorCode::Forbidden,
                    message,
                } => audit_denied(ctx, actor, action, target, message).await,
                HubError::Refused { .. } => {}
                _ => tracing::error!(actor = %actor.name, error = %err, "operator request failed"),
            }
            OpResponse::Error(err.to_refusal())
        }
    }
}

/// What a request is called in the audit log, and what it acts on.
fn audit_name(req: &OpRequest) -> (&'static str, String) {
    match req {
        OpRequest::ListAgents => ("agents.list", String::new()),
        OpRequest::Agent { query } => ("agents.show", query.clone()),
        OpRequest::Metrics { query, .. } => ("metrics", query.clone()),
        OpRequest::ListOperators => ("operators.list", String::new()),
        OpRequest::TokenCreate(spec) => ("token.create", format!("role:{}", spec.role)),
        OpRequest::TokenList => ("token.list", String::new()),
        OpRequest::TokenDelete { id } => ("token.delete", id.clone()),
        OpRequest::Revoke { query } => ("revoke", query.clone()),
        other => crate::alerts::api::audit_name(other),
    }
}

/// Records a call refused for the caller's role, as `<action>.denied` with the role and the reason,
/// so an audit shows who tried what they may not do. A failure to write is logged, not returned:
/// the caller is refused either way.
pub(crate) async fn audit_denied(
    ctx: &HubCtx,
    actor: &Actor,
    action: &str,
    target: String,
    reason: &str,
) {
    let (who, action) = (actor.name.clone(), format!("{action}.denied"));
    let detail = format!("role={} reason={reason}", actor.role);
    tracing::info!(actor = %who, action = %action, target = ?target, "refused for the caller's role");
    let written = ctx
        .store
        .call(move |c| {
            Ok(store::audit::append(
                c,
                now_ms(),
                &who,
                &action,
                &target,
                &detail,
            )?)
        })
        .await;
    if let Err(e) = written {
        tracing::error!(error = %e, "could not write audit record");
    }
}

pub(crate) fn require(actor: &Actor, ok: bool, what: &str, needed: &str) -> Result<(), HubError> {
    if ok {
        Ok(())
    } else {
        Err(HubError::refused(
            ErrorCode::Forbidden,
            format!("{what} needs the {needed} role; you are {}", actor.role),
        ))
    }
}

/// Registry view of a row with live status and latest sample.
pub(crate) fn info_of(ctx: &HubCtx, row: &IdentityRow) -> AgentInfo {
    let online = ctx.registry.is_online(&row.id);
    let mut info = row.to_info(online);
    if online {
        info.latest = ctx.registry.latest(&row.id);
    }
    info
}

/// Registry view for fleet-wide lists: the latest sample summarised (see `MetricsSample::summary`).
pub(crate) fn summary_of(ctx: &HubCtx, row: &IdentityRow) -> AgentInfo {
    let mut info = info_of(ctx, row);
    info.latest = info.latest.map(|s| s.summary());
    info
}

async fn find(ctx: &HubCtx, query: String) -> Result<IdentityRow, HubError> {
    let q = query.clone();
    ctx.store
        .call(move |c| Ok(store::identities::find(c, &q)?))
        .await?
        .ok_or_else(|| {
            HubError::refused(
                ErrorCode::NotFound,
                format!("no agent or operator named or with id {query:?}"),
            )
        })
}

fn validate_spec(spec: &TokenSpec) -> Result<(), HubError> {
    let bad = |m: String| Err(HubError::refused(ErrorCode::BadRequest, m));
    if spec.uses == 0 || spec.uses > MAX_TOKEN_USES {
        return bad(format!(
            "uses = {} must be between 1 and {MAX_TOKEN_USES}",
            spec.uses
        ));
    }
    if spec.ttl_s == 0 || spec.ttl_s > MAX_TOKEN_TTL_S {
        return bad(format!(
            "ttl of {} s must be between 1 s and {MAX_TOKEN_TTL_S} s",
            spec.ttl_s
        ));
    }
    for (k, v) in &spec.labels {
        crate::session::enrol::check_label(k, v)?;
    }
    Ok(())
}

async fn answer(ctx: &HubCtx, actor: &Actor, req: OpRequest) -> Result<OpResponse, HubError> {
    if crate::alerts::api::is_alert_request(&req) {
        return crate::alerts::api::answer(ctx, actor, req).await;
    }
    match req {
        OpRequest::ListAgents => {
            let rows = ctx
                .store
                .call(|c| Ok(store::identities::list(c, true)?))
                .await?;
            Ok(OpResponse::Agents(
                rows.iter().map(|r| info_of(ctx, r)).collect(),
            ))
        }
        OpRequest::Agent { query } => Ok(OpResponse::Agent(info_of(ctx, &find(ctx, query).await?))),
        OpRequest::Metrics { query, since_s } => {
            use crate::store::metrics::Resolution;
            let row = find(ctx, query).await?;
            // Up to six hours at minute resolution (360 points); beyond, ten-minute buckets.
            let res = if since_s <= 6 * 3600 {
                Resolution::Minute
            } else {
                Resolution::TenMinutes
            };
            let since_ms = now_ms().saturating_sub(since_s.saturating_mul(1000));
            let id = row.id.clone();
            let mut points = ctx
                .store
                .call(move |c| Ok(store::metrics::series(c, &id, res, since_ms)?))
                .await?;
            if res == Resolution::Minute
                && let Some(live) = ctx.history.in_progress(&row.id)
                && live.start_ms >= since_ms
            {
                match points.last_mut() {
                    // The same minute was partly written before a reconnect.
                    Some(last) if last.start_ms == live.start_ms => *last = last.merged(&live),
                    Some(last) if last.start_ms > live.start_ms => {}
                    _ => points.push(live),
                }
            }
            Ok(OpResponse::Series(flotilla_wire::msg::MetricsSeries {
                id: row.id,
                name: row.name,
                resolution_s: res.seconds(),
                points,
            }))
        }
        OpRequest::ListOperators => {
            require(actor, actor.role.can_admin(), "listing operators", "admin")?;
            let rows = ctx
                .store
                .call(|c| Ok(store::identities::list(c, false)?))
                .await?;
            Ok(OpResponse::Agents(
                rows.iter().map(|r| info_of(ctx, r)).collect(),
            ))
        }
        OpRequest::TokenCreate(spec) => {
            require(actor, actor.role.can_admin(), "creating tokens", "admin")?;
            validate_spec(&spec)?;
            let token = JoinToken::generate(ctx.advertised.clone(), ctx.ca.fingerprint());
            let now = now_ms();
            let row = TokenRow {
                id: token.id.clone(),
                hash: token.secret_hash(),
                role: spec.role,
                labels: spec.labels.clone(),
                uses_left: spec.uses,
                expires_ms: now.saturating_add(spec.ttl_s.saturating_mul(1000)),
                created_ms: now,
            };
            let info = row.to_info();
            let actor_name = actor.name.clone();
            ctx.store
                .call(move |c| {
                    let tx = c.transaction()?;
                    store::tokens::insert(&tx, &row)?;
                    let detail = format!(
                        "role={} uses={} ttl_s={}",
                        row.role, row.uses_left, spec.ttl_s
                    );
                    store::audit::append(&tx, now, &actor_name, "token.create", &row.id, &detail)?;
                    tx.commit()?;
                    Ok(())
                })
                .await?;
            tracing::info!(actor = %actor.name, token_id = %info.id, role = %info.role, uses = info.uses_left, "token created");
            Ok(OpResponse::TokenCreated(CreatedToken {
                info,
                token: token.encode(),
            }))
        }
        OpRequest::TokenList => {
            require(actor, actor.role.can_admin(), "listing tokens", "admin")?;
            let rows = ctx.store.call(|c| Ok(store::tokens::list(c)?)).await?;
            Ok(OpResponse::Tokens(
                rows.iter().map(TokenRow::to_info).collect(),
            ))
        }
        OpRequest::TokenDelete { id } => {
            require(actor, actor.role.can_admin(), "deleting tokens", "admin")?;
            let actor_name = actor.name.clone();
            let tid = id.clone();
            let deleted = ctx
                .store
                .call(move |c| {
                    let tx = c.transaction()?;
                    let deleted = store::tokens::delete(&tx, &tid)?;
                    if deleted {
                        store::audit::append(&tx, now_ms(), &actor_name, "token.delete", &tid, "")?;
                    }
                    tx.commit()?;
                    Ok(deleted)
                })
                .await?;
            if deleted {
                Ok(OpResponse::Done)
            } else {
                Err(HubError::refused(
                    ErrorCode::NotFound,
                    format!("no token with id {id:?}"),
                ))
            }
        }
        OpRequest::Revoke { query } => {
            require(actor, actor.role.can_admin(), "revoking", "admin")?;
            let row = find(ctx, query).await?;
            let id = row.id.clone();
            let actor_name = actor.name.clone();
            let now = now_ms();
            ctx.store
                .call(move |c| {
                    let tx = c.transaction()?;
                    if store::identities::revoke(&tx, &id, now)? {
                        store::audit::append(&tx, now, &actor_name, "revoke", id.as_str(), "")?;
                    }
                    tx.commit()?;
                    Ok(())
                })
                .await?;
            // Closing after the row is committed: a reconnect racing this close is refused.
            let closed = ctx.registry.revoke(&row.id);
            ctx.workloads.forget(&row.id);
            ctx.alerts.agent_revoked(ctx, &row.id);
            ctx.host.forget(&row.id);
            ctx.registry
                .publish(FleetEvent::Revoked { id: row.id.clone() });
            tracing::info!(actor = %actor.name, id = %row.id, name = %row.name, connections_closed = closed, "identity revoked");
            let mut info = row.to_info(false);
            info.status = flotilla_wire::msg::Status::Revoked;
            Ok(OpResponse::Revoked(info))
        }
        _ => Err(HubError::refused(
            ErrorCode::BadRequest,
            "request not understood by this hub",
        )),
    }
}
