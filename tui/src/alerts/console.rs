//! The console's alert requests, run by its network task: the full list, an acknowledgement, a
//! silence. Each answers one [`Event`] for `App::update`.

use crate::client::Client;
use crate::command::Command;
use crate::event::Event;
use flotilla_wire::alerts::SilenceSpec;
use flotilla_wire::msg::{OpRequest, OpResponse};
use std::sync::Arc;

/// Runs an alert command (`Alerts`, `AckAlert`, `SilenceAlert`) and gives the event it answers.
pub async fn answer(client: Arc<Client>, cmd: Command) -> Event {
    match cmd {
        Command::AckAlert { id, label } => {
            let req = OpRequest::AlertAck {
                id,
                comment: String::new(),
            };
            Event::AlertDone(match client.request(&req).await {
                Ok(OpResponse::Alert(a)) => {
                    Ok((format!("acknowledged {label}"), Some(Box::new(a))))
                }
                Ok(other) => Err(format!("ack {label}: unexpected reply {other:?}")),
                Err(e) => Err(format!("ack {label}: {e}")),
            })
        }
        Command::SilenceAlert {
            rule,
            agent,
            duration_ms,
            comment,
            label,
        } => {
            let spec = SilenceSpec {
                rule,
                selector: agent,
                starts_ms: None,
                duration_ms,
                comment,
            };
            Event::AlertDone(match client.request(&OpRequest::SilenceAdd(spec)).await {
                Ok(OpResponse::Silence(s)) => Ok((
                    format!(
                        "silenced {label} until {} (silence #{})",
                        crate::util::utc(s.ends_ms),
                        s.id
                    ),
                    None,
                )),
                Ok(other) => Err(format!("silence {label}: unexpected reply {other:?}")),
                Err(e) => Err(format!("silence {label}: {e}")),
            })
        }
        _ => Event::Alerts(
            super::commands::alerts(&client, true)
                .await
                .map_err(|e| e.to_string()),
        ),
    }
}

/// The event that answers an alert command when there is no session.
pub fn refused(cmd: Command, reason: String) -> Option<Event> {
    match cmd {
        Command::Alerts => Some(Event::Alerts(Err(reason))),
        Command::AckAlert { .. } | Command::SilenceAlert { .. } => {
            Some(Event::AlertDone(Err(reason)))
        }
        _ => None,
    }
}
