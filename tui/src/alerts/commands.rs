//! Runs the alert commands against the hub: one request each (one per rule for a rule file), the
//! answer printed as a table or JSON. A rule the hub refuses as invalid (an unknown receiver, a
//! selector that does not parse) is a usage error, exit 2, as one refused here is.

use super::EXIT_FIRING;
use super::args::{AlertCommand, SilenceCommand};
use super::text;
use crate::client::{Client, ClientError};
use crate::util::{Escaped, now_ms, outln, utc};
use flotilla_wire::ErrorCode;
use flotilla_wire::alerts::{AlertInfo, AlertRule, SilenceSpec};
use flotilla_wire::msg::{OpRequest, OpResponse};
use serde_json::json;

fn unexpected(what: &str, reply: &OpResponse) -> ClientError {
    ClientError::Stream(format!("unexpected reply to {what}: {reply:?}"))
}

fn print(text: impl std::fmt::Display) -> Result<(), ClientError> {
    outln!("{text}").map_err(ClientError::Output)
}

fn print_json(v: &serde_json::Value) -> Result<(), ClientError> {
    print(serde_json::to_string_pretty(v).unwrap_or_default())
}

/// A request whose refusal as a bad request (a rule or silence the hub's checks refuse) ends the
/// command with exit 2 and the hub's words; `Ok(Err(2))` then.
async fn ask(client: &Client, req: &OpRequest) -> Result<Result<OpResponse, u8>, ClientError> {
    match client.request(req).await {
        Ok(r) => Ok(Ok(r)),
        Err(ClientError::Refused(r)) if r.code == ErrorCode::BadRequest => {
            eprintln!("flotilla: {}", Escaped(&r.message));
            Ok(Err(crate::exec::EXIT_USAGE))
        }
        Err(e) => Err(e),
    }
}

/// `flotilla alert …`; `rules` are the checked rules of `add` and `test` (empty for the others).
pub async fn alert_command(
    client: &Client,
    cmd: &AlertCommand,
    rules: &[AlertRule],
) -> Result<u8, ClientError> {
    match cmd {
        AlertCommand::Add { json, .. } => {
            let mut added = Vec::new();
            for rule in rules {
                let info = match ask(client, &OpRequest::AlertRuleAdd(rule.clone())).await? {
                    Ok(OpResponse::AlertRule(info)) => info,
                    Ok(other) => return Err(unexpected("alert add", &other)),
                    Err(code) => {
                        if !added.is_empty() {
                            eprintln!(
                                "flotilla: rule {} not added; added before it: {}",
                                Escaped(&rule.name),
                                Escaped(&added.join(", "))
                            );
                        }
                        return Ok(code);
                    }
                };
                if !json {
                    print(format_args!(
                        "added rule {}: {}",
                        Escaped(&info.rule.name),
                        text::condition(&info.rule)
                    ))?;
                }
                added.push(info.rule.name.clone());
                if *json {
                    print(serde_json::to_string(&text::rule_json(&info)).unwrap_or_default())?;
                }
            }
            Ok(0)
        }
        AlertCommand::List { json } => match client.request(&OpRequest::AlertRules).await? {
            OpResponse::AlertRules(mut rules) => {
                rules.sort_by(|a, b| a.rule.name.cmp(&b.rule.name));
                if *json {
                    print_json(&serde_json::Value::Array(
                        rules.iter().map(text::rule_json).collect(),
                    ))?;
                } else {
                    crate::util::out!("{}", text::rules_table(&rules))
                        .map_err(ClientError::Output)?;
                }
                Ok(0)
            }
            other => Err(unexpected("alert list", &other)),
        },
        AlertCommand::Show { name, json } => {
            let req = OpRequest::AlertRuleShow { name: name.clone() };
            match client.request(&req).await? {
                OpResponse::AlertRuleDetail(mut d) => {
                    d.alerts.sort_by(text::compare);
                    if *json {
                        print_json(&json!({
                            "rule": text::rule_json(&d.info),
                            "alerts": text::alerts_json(&d.alerts),
                        }))?;
                    } else {
                        crate::util::out!("{}", text::rule_detail(&d.info, &d.alerts, now_ms()))
                            .map_err(ClientError::Output)?;
                    }
                    Ok(0)
                }
                other => Err(unexpected("alert show", &other)),
            }
        }
        AlertCommand::Rm { name, json } => {
            let req = OpRequest::AlertRuleRemove { name: name.clone() };
            match client.request(&req).await? {
                OpResponse::Done | OpResponse::AlertRule(_) => {
                    if *json {
                        print_json(&json!({ "removed": name }))?;
                    } else {
                        print(format_args!("removed rule {}", Escaped(name)))?;
                    }
                    Ok(0)
                }
                other => Err(unexpected("alert rm", &other)),
            }
        }
        AlertCommand::Test { json, .. } => {
            let mut all = Vec::new();
            for rule in rules {
                let mut found = match ask(client, &OpRequest::AlertRuleTest(rule.clone())).await? {
                    Ok(OpResponse::AlertTest(found)) => found,
                    Ok(other) => return Err(unexpected("alert test", &other)),
                    Err(code) => return Ok(code),
                };
                found.sort_by(text::compare);
                if !json {
                    let verdict = if found.is_empty() {
                        "nothing would fire now".to_string()
                    } else {
                        format!("{} alert(s) now", found.len())
                    };
                    print(format_args!(
                        "rule {} ({}): {verdict}",
                        Escaped(&rule.name),
                        text::condition(rule)
                    ))?;
                    if !found.is_empty() {
                        crate::util::out!("{}", text::alerts_table(&found, now_ms()))
                            .map_err(ClientError::Output)?;
                    }
                }
                all.extend(found);
            }
            if *json {
                print_json(&text::alerts_json(&all))?;
            }
            Ok(0)
        }
        AlertCommand::Ack { id, comment, json } => {
            let req = OpRequest::AlertAck {
                id: *id,
                comment: comment.clone(),
            };
            let alert = match ask(client, &req).await? {
                Ok(OpResponse::Alert(a)) => a,
                Ok(other) => return Err(unexpected("alert ack", &other)),
                Err(code) => return Ok(code),
            };
            if *json {
                print_json(&text::alert_json(&alert))?;
            } else {
                print(format_args!(
                    "acknowledged {} ({} on {})",
                    alert.id,
                    Escaped(&alert.rule),
                    Escaped(&alert.agent_name)
                ))?;
            }
            Ok(0)
        }
    }
}

/// The alerts the hub holds now (recently resolved ones too with `all`), in list order.
pub async fn alerts(client: &Client, all: bool) -> Result<Vec<AlertInfo>, ClientError> {
    let req = OpRequest::Alerts {
        include_resolved: all,
    };
    match client.request(&req).await? {
        OpResponse::Alerts(mut list) => {
            list.sort_by(text::compare);
            Ok(list)
        }
        other => Err(unexpected("alerts", &other)),
    }
}

/// `flotilla alerts`: exit 0, or [`EXIT_FIRING`] with `firing_exit` when an alert fires unsilenced.
pub async fn alerts_command(
    client: &Client,
    all: bool,
    firing_exit: bool,
    json: bool,
) -> Result<u8, ClientError> {
    let list = alerts(client, all).await?;
    if json {
        print_json(&text::alerts_json(&list))?;
    } else if list.is_empty() {
        print(if all {
            "no alerts"
        } else {
            "no alerts firing or pending"
        })?;
    } else {
        crate::util::out!("{}", text::alerts_table(&list, now_ms()))
            .map_err(ClientError::Output)?;
    }
    Ok(if firing_exit && list.iter().any(text::firing_loud) {
        EXIT_FIRING
    } else {
        0
    })
}

/// `flotilla silence …`.
pub async fn silence_command(client: &Client, cmd: &SilenceCommand) -> Result<u8, ClientError> {
    match cmd {
        SilenceCommand::Add {
            rule,
            selector,
            length,
            comment,
            json,
        } => {
            let spec = SilenceSpec {
                rule: rule.clone(),
                selector: selector.clone(),
                starts_ms: None,
                duration_ms: u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
                comment: comment.clone(),
            };
            let s = match ask(client, &OpRequest::SilenceAdd(spec)).await? {
                Ok(OpResponse::Silence(s)) => s,
                Ok(other) => return Err(unexpected("silence add", &other)),
                Err(code) => return Ok(code),
            };
            if *json {
                print_json(&serde_json::to_value(&s).unwrap_or_default())?;
            } else {
                print(format_args!(
                    "silence #{}: rule {} on {} until {}",
                    s.id,
                    Escaped(&s.rule),
                    Escaped(&s.selector),
                    utc(s.ends_ms)
                ))?;
            }
            Ok(0)
        }
        SilenceCommand::List { all, json } => {
            let req = OpRequest::Silences {
                include_expired: *all,
            };
            match client.request(&req).await? {
                OpResponse::Silences(list) => {
                    if *json {
                        print_json(&serde_json::to_value(&list).unwrap_or_default())?;
                    } else if list.is_empty() {
                        print("no silences")?;
                    } else {
                        crate::util::out!("{}", text::silences_table(&list, now_ms()))
                            .map_err(ClientError::Output)?;
                    }
                    Ok(0)
                }
                other => Err(unexpected("silence list", &other)),
            }
        }
        SilenceCommand::Rm { id, json } => {
            match client
                .request(&OpRequest::SilenceExpire { id: *id })
                .await?
            {
                OpResponse::Silence(s) => {
                    if *json {
                        print_json(&serde_json::to_value(&s).unwrap_or_default())?;
                    } else {
                        print(format_args!("silence #{} ended", s.id))?;
                    }
                    Ok(0)
                }
                OpResponse::Done => {
                    if *json {
                        print_json(&json!({ "ended": id.0 }))?;
                    } else {
                        print(format_args!("silence #{id} ended"))?;
                    }
                    Ok(0)
                }
                other => Err(unexpected("silence rm", &other)),
            }
        }
    }
}
