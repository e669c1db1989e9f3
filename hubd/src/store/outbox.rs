//! The alert outbox: one row per message to one receiver, written before anything is sent.
//!
//! A row is open for grouping while it is queued, untried and not yet due: transitions for the
//! same receiver join it (up to [`MAX_GROUP`]). A new row is due after the group wait, and no
//! sooner than the group interval after the receiver's previous row: the first transition of a
//! quiet receiver goes out at once, later ones in the interval share the next message. The delivery task claims due rows (attempts + 1
//! and a lease as the next try, so that a crash mid-send retries after restart), then marks them
//! sent after a 2xx, or schedules the next try, or gives up.

use crate::notify::AlertTransition;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// Most transitions in one message: a fleet-wide outage still reads as a list, not a book.
pub const MAX_GROUP: u32 = 100;
/// Delivered and given-up rows kept this long, for `hubd notify list` and duplicate questions.
pub const KEEP_DONE_MS: u64 = 7 * 86_400_000;

/// One transition routed to one receiver.
#[derive(Clone, Debug)]
pub struct Routed {
    /// The receiver's name.
    pub receiver: String,
    /// The transition (its `receivers` list emptied).
    pub transition: AlertTransition,
    /// When its message is due: after the group wait, or at the end of quiet hours.
    pub due_ms: u64,
    /// Shortest time between the due times of two messages to this receiver (not held ones).
    pub group_interval_ms: u64,
    /// Held by quiet hours.
    pub held: bool,
}

/// Where a message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting to be sent (or to be tried again).
    Queued,
    /// A receiver answered 2xx.
    Sent,
    /// Still undelivered after `give_up_after_s`, or its receiver was removed.
    GaveUp,
}

impl OutboxState {
    fn parse(s: &str) -> rusqlite::Result<Self> {
        match s {
            "queued" => Ok(Self::Queued),
            "sent" => Ok(Self::Sent),
            "gave_up" => Ok(Self::GaveUp),
            _ => Err(rusqlite::Error::InvalidColumnType(
                0,
                "state".into(),
                rusqlite::types::Type::Text,
            )),
        }
    }
}

/// One message as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxRow {
    /// Stable notification id (`X-Flotilla-Delivery`): the same on every try.
    pub id: String,
    /// The receiver's name.
    pub receiver: String,
    /// The transitions it carries, oldest first.
    pub transitions: Vec<AlertTransition>,
    /// When it was first written, ms since the epoch.
    pub created_ms: u64,
    /// When it first became due (after grouping or quiet hours): `give_up_after_s` counts from here.
    pub due_ms: u64,
    /// Held by quiet hours (until due).
    pub held: bool,
    /// Tries so far.
    pub attempts: u32,
    /// Next try, ms since the epoch (meaningful while queued).
    pub next_try_ms: u64,
    /// Where it stands.
    pub state: OutboxState,
    /// Why the last try failed; empty if none did. Never holds a URL or secret.
    pub last_error: String,
    /// When it was sent or given up.
    pub done_ms: Option<u64>,
}

fn bad_payload() -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, "payload".into(), rusqlite::types::Type::Text)
}

fn new_id() -> String {
    let bytes: [u8; 16] = flotilla_certs::random_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ntf-{hex}")
}

/// Writes each routed transition into its receiver's open message, or a new one. Run inside a
/// transaction so that a batch is queued whole or not at all. A message written by this same
/// batch (same `now_ms`, still untried) stays open even when already due, so that with no group
/// wait one batch still makes one message per receiver.
pub fn enqueue(conn: &Connection, routed: &[Routed], now_ms: u64) -> rusqlite::Result<()> {
    for r in routed {
        let open: Option<(i64, String)> = conn
            .prepare_cached(
                "SELECT seq, payload FROM notify_outbox WHERE receiver = ?1 AND state = 'queued' \
                 AND attempts = 0 AND held = ?2 AND (next_try_ms > ?3 OR created_ms = ?3) \
                 AND items < ?4 \
                 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row(
                params![r.receiver, r.held, now_ms as i64, MAX_GROUP],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        match open {
            Some((seq, payload)) => {
                let mut list: Vec<AlertTransition> =
                    serde_json::from_str(&payload).map_err(|_| bad_payload())?;
                list.push(r.transition.clone());
                let payload = serde_json::to_string(&list).map_err(|_| bad_payload())?;
                conn.prepare_cached(
                    "UPDATE notify_outbox SET payload = ?2, items = items + 1 WHERE seq = ?1",
                )?
                .execute(params![seq, payload])?;
            }
            None => {
                let due_ms = if r.held {
                    r.due_ms
                } else {
                    let last: Option<i64> = conn
                        .prepare_cached(
                            "SELECT MAX(due_ms) FROM notify_outbox WHERE receiver = ?1 AND held = 0",
                        )?
                        .query_row([&r.receiver], |row| row.get(0))?;
                    last.map_or(r.due_ms, |last| {
                        r.due_ms
                            .max((last as u64).saturating_add(r.group_interval_ms))
                    })
                };
                let payload = serde_json::to_string(&[&r.transition]).map_err(|_| bad_payload())?;
                conn.prepare_cached(
                    "INSERT INTO notify_outbox (id, receiver, payload, items, created_ms, due_ms, \
                     held, attempts, next_try_ms, state, last_error) \
                     VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, 0, ?5, 'queued', '')",
                )?
                .execute(params![
                    new_id(),
                    r.receiver,
                    payload,
                    now_ms as i64,
                    due_ms as i64,
                    r.held
                ])?;
            }
        }
    }
    Ok(())
}

const COLUMNS: &str = "id, receiver, payload, created_ms, due_ms, held, attempts, next_try_ms, \
                       state, last_error, done_ms";

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let payload: String = row.get(2)?;
    let state: String = row.get(8)?;
    Ok(OutboxRow {
        id: row.get(0)?,
        receiver: row.get(1)?,
        transitions: serde_json::from_str(&payload).map_err(|_| bad_payload())?,
        created_ms: row.get::<_, i64>(3)? as u64,
        due_ms: row.get::<_, i64>(4)? as u64,
        held: row.get(5)?,
        attempts: row.get(6)?,
        next_try_ms: row.get::<_, i64>(7)? as u64,
        state: OutboxState::parse(&state)?,
        last_error: row.get(9)?,
        done_ms: row.get::<_, Option<i64>>(10)?.map(|v| v as u64),
    })
}

/// Takes up to `limit` due messages for sending: each gets one more attempt and `lease_ms` before
/// it is due again, so a hub killed mid-send tries it again rather than forgetting it.
pub fn claim(
    conn: &mut Connection,
    now_ms: u64,
    limit: u32,
    lease_ms: u64,
) -> rusqlite::Result<Vec<OutboxRow>> {
    let tx = conn.transaction()?;
    let rows: Vec<OutboxRow> = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM notify_outbox WHERE state = 'queued' AND next_try_ms <= ?1 \
             ORDER BY next_try_ms, seq LIMIT ?2"
        ))?
        .query_map(params![now_ms as i64, limit], read_row)?
        .collect::<Result<_, _>>()?;
    {
        let mut up = tx.prepare_cached(
            "UPDATE notify_outbox SET attempts = attempts + 1, next_try_ms = ?2, held = 0 \
             WHERE id = ?1",
        )?;
        for r in &rows {
            up.execute(params![r.id, (now_ms + lease_ms) as i64])?;
        }
    }
    tx.commit()?;
    Ok(rows
        .into_iter()
        .map(|mut r| {
            r.attempts += 1;
            r.held = false;
            r
        })
        .collect())
}

/// Marks a message delivered.
pub fn mark_sent(conn: &Connection, id: &str, now_ms: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE notify_outbox SET state = 'sent', done_ms = ?2, last_error = '' WHERE id = ?1",
    )?
    .execute(params![id, now_ms as i64])?;
    Ok(())
}

/// Records a failed try and when to try next.
pub fn mark_retry(
    conn: &Connection,
    id: &str,
    error: &str,
    next_try_ms: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE notify_outbox SET last_error = ?2, next_try_ms = ?3 WHERE id = ?1",
    )?
    .execute(params![id, error, next_try_ms as i64])?;
    Ok(())
}

/// Gives a message up and says so in the audit log (actor `hub`, action `notify.give_up`).
pub fn give_up(
    conn: &Connection,
    row: &OutboxRow,
    error: &str,
    now_ms: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE notify_outbox SET state = 'gave_up', done_ms = ?2, last_error = ?3 WHERE id = ?1",
    )?
    .execute(params![row.id, now_ms as i64, error])?;
    let detail = format!(
        "receiver={} attempts={} transitions={} last_error={error}",
        row.receiver,
        row.attempts,
        row.transitions.len()
    );
    super::audit::append(conn, now_ms, "hub", "notify.give_up", &row.id, &detail)
}

/// At start-up: messages a previous run had claimed (or was backing off) are due now — "on start,
/// queued rows are resent". Messages held by quiet hours keep their time.
pub fn release_claims(conn: &Connection, now_ms: u64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE notify_outbox SET next_try_ms = ?1 WHERE state = 'queued' AND attempts > 0 \
         AND next_try_ms > ?1",
    )?
    .execute(params![now_ms as i64])
}

/// Moves the untried messages of `receiver` held by quiet hours to `due_ms` (the new end of its
/// quiet hours, or now once they no longer apply).
pub fn reschedule_held(conn: &Connection, receiver: &str, due_ms: u64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE notify_outbox SET next_try_ms = ?2, due_ms = ?2 WHERE receiver = ?1 \
         AND state = 'queued' AND held = 1 AND attempts = 0",
    )?
    .execute(params![receiver, due_ms as i64])
}

/// How many messages are queued.
pub fn queued(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM notify_outbox WHERE state = 'queued'")?
        .query_row([], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

/// When the next queued message is due, if any.
pub fn next_due(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached("SELECT MIN(next_try_ms) FROM notify_outbox WHERE state = 'queued'")?
        .query_row([], |r| r.get::<_, Option<i64>>(0))
        .map(|v| v.map(|v| v as u64))
}

/// The newest `limit` messages, newest first.
pub fn recent(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<OutboxRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM notify_outbox ORDER BY seq DESC LIMIT ?1"
    ))?
    .query_map([limit], read_row)?
    .collect()
}

/// Deletes messages delivered or given up before `before_ms`.
pub fn prune(conn: &Connection, before_ms: u64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM notify_outbox WHERE state != 'queued' AND done_ms < ?1")?
        .execute(params![before_ms as i64])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Severity, TransitionState};

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().expect("db");
        crate::store::migrate::migrate(&mut c).expect("migrate");
        c
    }

    fn t(alert: &str, severity: Severity) -> AlertTransition {
        let agent = flotilla_wire::IdentityId::from_random(flotilla_wire::Role::Agent, [1; 8]);
        AlertTransition {
            alert_id: flotilla_wire::alerts::AlertId::of("disk", &agent, alert),
            rule: "disk".into(),
            severity,
            agent,
            agent_name: "web-1".into(),
            subject: alert.into(),
            state: TransitionState::Firing,
            value: 97.0,
            summary: "disk / at 97%".into(),
            at_ms: 1,
            receivers: Vec::new(),
        }
    }

    fn routed(receiver: &str, alert: &str, due_ms: u64, held: bool) -> Routed {
        Routed {
            receiver: receiver.into(),
            transition: t(alert, Severity::Warning),
            due_ms,
            group_interval_ms: 0,
            held,
        }
    }

    #[test]
    fn transitions_group_until_due_then_claim_lease_and_finish() {
        let mut c = db();
        enqueue(
            &c,
            &[
                routed("ops", "a1", 5000, false),
                routed("dev", "a1", 5000, false),
            ],
            0,
        )
        .expect("enqueue");
        enqueue(&c, &[routed("ops", "a2", 6000, false)], 1000).expect("join");
        // A held transition does not join an unheld message, and vice versa.
        enqueue(&c, &[routed("ops", "a3", 90_000, true)], 1000).expect("held");
        let rows = recent(&c, 10).expect("rows");
        assert_eq!(rows.len(), 3);
        let ops: Vec<_> = rows
            .iter()
            .filter(|r| r.receiver == "ops" && !r.held)
            .collect();
        assert_eq!(ops[0].transitions.len(), 2, "grouped");
        assert_eq!(
            ops[0].next_try_ms, 5000,
            "the first transition sets the time"
        );
        assert_eq!(next_due(&c).expect("due"), Some(5000));

        assert!(claim(&mut c, 4999, 10, 60_000).expect("early").is_empty());
        let got = claim(&mut c, 5000, 10, 60_000).expect("claim");
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|r| r.attempts == 1));
        // Once due, a transition opens a new message rather than joining one being sent.
        enqueue(&c, &[routed("ops", "a4", 7000, false)], 5001).expect("after");
        assert_eq!(recent(&c, 10).expect("rows").len(), 4);

        let ops_id = got
            .iter()
            .find(|r| r.receiver == "ops")
            .expect("ops")
            .id
            .clone();
        mark_sent(&c, &ops_id, 5100).expect("sent");
        let dev = got
            .iter()
            .find(|r| r.receiver == "dev")
            .expect("dev")
            .clone();
        mark_retry(&c, &dev.id, "HTTP 503", 9000).expect("retry");
        // A restart makes the backing-off message due at once, but not the held one.
        assert_eq!(release_claims(&c, 6000).expect("release"), 1);
        let due = claim(&mut c, 6000, 10, 60_000).expect("again");
        assert_eq!(
            due.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            [dev.id.as_str()]
        );
        assert_eq!(due[0].attempts, 2);
        give_up(&c, &due[0], "HTTP 503", 7000).expect("give up");
        let audit = crate::store::audit::recent(&c, 5).expect("audit");
        assert_eq!(
            audit.last().map(|a| a.action.as_str()),
            Some("notify.give_up")
        );
        assert_eq!(
            audit.last().map(|a| a.target.as_str()),
            Some(dev.id.as_str())
        );
        // Quiet hours ended early (reload): the held message is due now.
        assert_eq!(reschedule_held(&c, "ops", 7000).expect("release held"), 1);
        let held = claim(&mut c, 7000, 10, 60_000).expect("held due");
        assert_eq!(held.len(), 2, "the held message and a4's");
        assert_eq!(
            prune(&c, 10_000_000).expect("prune"),
            2,
            "sent and gave_up rows"
        );
    }

    #[test]
    fn a_quiet_receiver_gets_the_first_at_once_and_the_rest_after_the_interval() {
        let mut c = db();
        let at = |alert: &str, now: u64| Routed {
            group_interval_ms: 5000,
            ..routed("ops", alert, now, false)
        };
        enqueue(&c, &[at("a1", 1000)], 1000).expect("first");
        assert_eq!(claim(&mut c, 1000, 10, 60_000).expect("now").len(), 1);
        // Within the interval: one message, due 5 s after the first.
        enqueue(&c, &[at("a2", 2000)], 2000).expect("second");
        enqueue(&c, &[at("a3", 3000)], 3000).expect("third");
        assert!(claim(&mut c, 5999, 10, 60_000).expect("early").is_empty());
        let grouped = claim(&mut c, 6000, 10, 60_000).expect("grouped");
        assert_eq!(grouped.len(), 1);
        assert_eq!(grouped[0].transitions.len(), 2);
        // Quiet for longer than the interval: at once again.
        enqueue(&c, &[at("a4", 20_000)], 20_000).expect("later");
        let later = claim(&mut c, 20_000, 10, 60_000).expect("later");
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].transitions[0].subject, "a4");
    }
}
