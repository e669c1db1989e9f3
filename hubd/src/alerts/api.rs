//! The alert requests of the operator API: rules, alerts, acknowledgements and silences. Roles
//! are checked here: viewers read, operators change.

use super::engine::{CompiledRule, Engine, Output};
use crate::admin::{Actor, require};
use crate::exec::selector::Selector;
use crate::store::{self, now_ms};
use crate::{HubCtx, HubError};
use flotilla_wire::ErrorCode;
use flotilla_wire::alerts::{
    AlertInfo, MAX_COMMENT, MAX_RULE_NAME, RuleDetail, RuleInfo, RuleOrigin, SilenceSpec,
};
use flotilla_wire::msg::{OpRequest, OpResponse};

/// Whether `req` is one of the alert requests this module answers.
pub(crate) fn is_alert_request(req: &OpRequest) -> bool {
    matches!(
        req,
        OpRequest::AlertRules
            | OpRequest::AlertRuleAdd(_)
            | OpRequest::AlertRuleRemove { .. }
            | OpRequest::AlertRuleShow { .. }
            | OpRequest::AlertRuleTest(_)
            | OpRequest::Alerts { .. }
            | OpRequest::AlertAck { .. }
            | OpRequest::SilenceAdd(_)
            | OpRequest::Silences { .. }
            | OpRequest::SilenceExpire { .. }
    )
}

/// What an alert request is called in the audit log, and what it acts on.
pub(crate) fn audit_name(req: &OpRequest) -> (&'static str, String) {
    match req {
        OpRequest::AlertRules => ("alert.rules", String::new()),
        OpRequest::AlertRuleAdd(rule) => ("alert.add", rule.name.clone()),
        OpRequest::AlertRuleRemove { name } => ("alert.rm", name.clone()),
        OpRequest::AlertRuleShow { name } => ("alert.show", name.clone()),
        OpRequest::AlertRuleTest(rule) => ("alert.test", rule.name.clone()),
        OpRequest::Alerts { .. } => ("alerts.list", String::new()),
        OpRequest::AlertAck { id, .. } => ("alert.ack", id.to_string()),
        OpRequest::SilenceAdd(spec) => ("silence.add", spec.rule.clone()),
        OpRequest::Silences { .. } => ("silence.list", String::new()),
        OpRequest::SilenceExpire { id } => ("silence.expire", id.to_string()),
        _ => ("unknown", String::new()),
    }
}

/// Answers one alert request.
pub(crate) async fn answer(
    ctx: &HubCtx,
    actor: &Actor,
    req: OpRequest,
) -> Result<OpResponse, HubError> {
    let bad = |m: String| HubError::refused(ErrorCode::BadRequest, m);
    match req {
        OpRequest::AlertRules => Ok(OpResponse::AlertRules(ctx.alerts.rule_infos())),
        OpRequest::AlertRuleShow { name } => {
            let info = ctx
                .alerts
                .rule_infos()
                .into_iter()
                .find(|r| r.rule.name == name)
                .ok_or_else(|| not_found_rule(&name))?;
            Ok(OpResponse::AlertRuleDetail(RuleDetail {
                alerts: ctx.alerts.list_rule(&name),
                info,
            }))
        }
        OpRequest::AlertRuleAdd(rule) => {
            require(
                actor,
                actor.role.can_act(),
                "adding alert rules",
                "operator",
            )?;
            let receivers = Some(ctx.notifier.receiver_names());
            let compiled = super::compile_one(rule, receivers.as_deref()).map_err(bad)?;
            let rule = compiled.rule;
            if let Some(origin) = ctx.alerts.origin_of(&rule.name) {
                return Err(HubError::refused(
                    ErrorCode::BadRequest,
                    format!(
                        "alert rule {:?} already exists ({}): remove it first, or pick another name",
                        rule.name,
                        match origin {
                            RuleOrigin::Config => "in the hub's config file",
                            RuleOrigin::Live => "added live",
                        }
                    ),
                ));
            }
            let now = now_ms();
            let by = operator_name(ctx, actor).await?;
            let stored = store::alerts::StoredRule {
                spec: rule.to_spec(),
                added_by: by.clone(),
                added_ms: now,
            };
            let (who, name, detail) = (
                actor.name.clone(),
                rule.name.clone(),
                format!(
                    "kind={} selector={} severity={}",
                    rule.kind.word(),
                    rule.selector,
                    rule.severity.as_str()
                ),
            );
            let inserted = ctx
                .store
                .call(move |c| {
                    let tx = c.transaction()?;
                    let ok = store::alerts::insert_rule(&tx, &stored)?;
                    if ok {
                        store::audit::append(&tx, now, &who, "alert.add", &name, &detail)?;
                    }
                    tx.commit()?;
                    Ok(ok)
                })
                .await?;
            if !inserted {
                return Err(bad(format!("alert rule {:?} already exists", rule.name)));
            }
            tracing::info!(actor = %actor.name, rule = %rule.name, "alert rule added");
            ctx.alerts.add_live(ctx, rule.clone(), by.clone(), now);
            Ok(OpResponse::AlertRule(RuleInfo {
                rule,
                origin: RuleOrigin::Live,
                added_by: by,
                added_ms: now,
            }))
        }
        OpRequest::AlertRuleRemove { name } => {
            require(
                actor,
                actor.role.can_act(),
                "removing alert rules",
                "operator",
            )?;
            match ctx.alerts.origin_of(&name) {
                None => return Err(not_found_rule(&name)),
                Some(RuleOrigin::Config) => {
                    return Err(bad(format!(
                        "alert rule {name:?} is defined in the hub's config file: remove its [[alert]] table there and reload (SIGHUP)"
                    )));
                }
                Some(RuleOrigin::Live) => {}
            }
            let (who, n) = (actor.name.clone(), name.clone());
            ctx.store
                .call(move |c| {
                    let tx = c.transaction()?;
                    if store::alerts::delete_rule(&tx, &n)? {
                        store::audit::append(&tx, now_ms(), &who, "alert.rm", &n, "")?;
                    }
                    tx.commit()?;
                    Ok(())
                })
                .await?;
            tracing::info!(actor = %actor.name, rule = %name, "alert rule removed");
            ctx.alerts.remove_live(ctx, &name);
            Ok(OpResponse::Done)
        }
        OpRequest::AlertRuleTest(rule) => {
            let receivers = Some(ctx.notifier.receiver_names());
            let compiled = super::compile_one(rule, receivers.as_deref()).map_err(bad)?;
            dry_run(ctx, compiled).await.map(OpResponse::AlertTest)
        }
        OpRequest::Alerts { include_resolved } => {
            Ok(OpResponse::Alerts(ctx.alerts.list(include_resolved)))
        }
        OpRequest::AlertAck { id, comment } => {
            require(
                actor,
                actor.role.can_act(),
                "acknowledging alerts",
                "operator",
            )?;
            check_comment(&comment, false)?;
            let by = operator_name(ctx, actor).await?;
            let info = ctx
                .alerts
                .ack(ctx, id, &by)
                .map_err(|m| HubError::refused(ErrorCode::NotFound, m))?;
            audit(ctx, actor, "alert.ack", id.to_string(), comment).await?;
            Ok(OpResponse::Alert(info))
        }
        OpRequest::SilenceAdd(spec) => {
            require(actor, actor.role.can_act(), "adding silences", "operator")?;
            check_silence(&spec)?;
            let now = now_ms();
            let starts = spec.starts_ms.unwrap_or(now);
            let by = operator_name(ctx, actor).await?;
            let (who, detail) = (
                actor.name.clone(),
                format!(
                    "rule={} selector={} duration_ms={} comment={}",
                    spec.rule, spec.selector, spec.duration_ms, spec.comment
                ),
            );
            let silence = ctx
                .store
                .call(move |c| {
                    let tx = c.transaction()?;
                    let s = store::alerts::insert_silence(&tx, &spec, starts, &by, now)?;
                    store::audit::append(
                        &tx,
                        now,
                        &who,
                        "silence.add",
                        &s.id.to_string(),
                        &detail,
                    )?;
                    tx.commit()?;
                    Ok(s)
                })
                .await?;
            tracing::info!(actor = %actor.name, silence = %silence.id, "silence added");
            ctx.alerts.reload_silences(ctx).await?;
            Ok(OpResponse::Silence(silence))
        }
        OpRequest::Silences { include_expired } => {
            let now = now_ms();
            let list = ctx
                .store
                .call(move |c| Ok(store::alerts::silences(c, now, include_expired)?))
                .await?;
            Ok(OpResponse::Silences(list))
        }
        OpRequest::SilenceExpire { id } => {
            require(actor, actor.role.can_act(), "expiring silences", "operator")?;
            let (who, now) = (actor.name.clone(), now_ms());
            let silence = ctx
                .store
                .call(move |c| {
                    let tx = c.transaction()?;
                    let s = store::alerts::expire_silence(&tx, id, now)?;
                    if s.is_some() {
                        store::audit::append(
                            &tx,
                            now,
                            &who,
                            "silence.expire",
                            &id.to_string(),
                            "",
                        )?;
                    }
                    tx.commit()?;
                    Ok(s)
                })
                .await?
                .ok_or_else(|| {
                    HubError::refused(ErrorCode::NotFound, format!("no silence with id {id}"))
                })?;
            ctx.alerts.reload_silences(ctx).await?;
            Ok(OpResponse::Silence(silence))
        }
        _ => Err(bad("not an alert request".into())),
    }
}

fn not_found_rule(name: &str) -> HubError {
    HubError::refused(
        ErrorCode::NotFound,
        format!("no alert rule named {name:?} (see `flotilla alert list`)"),
    )
}

fn check_comment(comment: &str, required: bool) -> Result<(), HubError> {
    let bad = |m: String| Err(HubError::refused(ErrorCode::BadRequest, m));
    if required && comment.trim().is_empty() {
        return bad("a silence needs a comment saying why".into());
    }
    if comment.len() > MAX_COMMENT || comment.chars().any(char::is_control) {
        return bad(format!(
            "comment must be one line of at most {MAX_COMMENT} bytes"
        ));
    }
    Ok(())
}

fn check_silence(spec: &SilenceSpec) -> Result<(), HubError> {
    let bad = |m: String| Err(HubError::refused(ErrorCode::BadRequest, m));
    check_comment(&spec.comment, true)?;
    if spec.rule.is_empty()
        || spec.rule.len() > MAX_RULE_NAME
        || !spec
            .rule
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.*?".contains(c))
    {
        return bad(format!(
            "silence rule {:?} must be a rule name or glob (letters, digits, '-', '_', '.', '*', '?')",
            spec.rule
        ));
    }
    if let Err(e) = Selector::parse(&spec.selector) {
        return bad(format!("silence selector: {e}"));
    }
    if spec.duration_ms == 0 || spec.duration_ms > MAX_SILENCE_MS {
        return bad(format!(
            "silence duration of {} ms must be between 1 ms and 366 days",
            spec.duration_ms
        ));
    }
    Ok(())
}

/// The name an operator is shown by in `acked_by`, `created_by` and `added_by`: the name its
/// certificate was issued to (as `flotilla operators` lists it), or the actor's audit name
/// (`local-admin`) where the request did not come from a certificate. The audit log keeps the
/// identity id, which a name reused after a revocation cannot be confused with.
async fn operator_name(ctx: &HubCtx, actor: &Actor) -> Result<String, HubError> {
    let Some(id) = flotilla_wire::IdentityId::parse(&actor.name) else {
        return Ok(actor.name.clone());
    };
    let row = ctx
        .store
        .call(move |c| Ok(store::identities::get(c, &id)?))
        .await?;
    Ok(row.map_or_else(|| actor.name.clone(), |r| r.name))
}

/// Longest silence: a year; a longer one is a disabled rule and should be removed instead.
const MAX_SILENCE_MS: u64 = 366 * 86_400_000;

async fn audit(
    ctx: &HubCtx,
    actor: &Actor,
    action: &'static str,
    target: String,
    detail: String,
) -> Result<(), HubError> {
    let who = actor.name.clone();
    ctx.store
        .call(move |c| {
            Ok(store::audit::append(
                c,
                now_ms(),
                &who,
                action,
                &target,
                &detail,
            )?)
        })
        .await
}

/// What `rule` says about every agent now, in a throwaway engine fed with the registry's
/// latest samples, connections, workloads and certificates: nothing is stored or sent.
async fn dry_run(ctx: &HubCtx, rule: CompiledRule) -> Result<Vec<AlertInfo>, HubError> {
    let rows = ctx
        .store
        .call(|c| Ok(store::identities::list(c, true)?))
        .await?;
    let now = now_ms();
    let mut engine = Engine::default();
    let mut out = Output::default();
    engine.set_rules(vec![rule], &mut out);
    for row in rows.iter().filter(|r| r.revoked_ms.is_none()) {
        let online = ctx.registry.is_online(&row.id);
        engine.handle_agent(
            super::facts_of(row),
            online,
            row.last_seen_ms,
            now,
            &mut out,
        );
        if let Some(exp) = ctx.alerts.cert_of(&row.id) {
            engine.handle_cert(&row.id, exp, now, &mut out);
        }
        if online && let Some(sample) = ctx.registry.latest(&row.id) {
            // The sample's own time stands for its arrival: a dry run has no arrival to go by.
            engine.handle_sample(
                &row.id,
                &sample,
                sample.at_ms.max(now.saturating_sub(60_000)),
                &mut out,
            );
        }
        if engine.wants_workloads(&row.id) {
            ctx.workloads.with_agent(&row.id, |w| {
                engine.handle_workloads(&row.id, w.containers(), w.units(), now, &mut out);
            });
        }
    }
    Ok(engine.alerts(false))
}
