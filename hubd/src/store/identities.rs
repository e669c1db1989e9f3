//! The registry table: every enrolled identity, agents and operators alike.

use flotilla_wire::msg::{AgentInfo, Labels, Status};
use flotilla_wire::{IdentityId, Role};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// One row of the identities table.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityRow {
    /// Stable id.
    pub id: IdentityId,
    /// Role from the token.
    pub role: Role,
    /// Display name, unique among identities that are not revoked.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Token it enrolled with.
    pub token_id: String,
    /// Enrolment time.
    pub first_seen_ms: u64,
    /// Last time connected.
    pub last_seen_ms: u64,
    /// Software version from the last hello.
    pub version: String,
    /// OS from the last hello.
    pub os: String,
    /// Host name from the last hello.
    pub hostname: String,
    /// Remote address of the last connection.
    pub addr: String,
    /// When revoked, if it was.
    pub revoked_ms: Option<u64>,
}

/// What choosing agents for a command reads of each: what a selector matches, and the last time
/// seen for the job's records. Not the whole row: `all`, globs and labels read every agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Selectable {
    /// Stable id.
    pub id: IdentityId,
    /// Display name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Last time connected.
    pub last_seen_ms: u64,
}

impl From<IdentityRow> for Selectable {
    fn from(row: IdentityRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            labels: row.labels,
            last_seen_ms: row.last_seen_ms,
        }
    }
}

impl IdentityRow {
    /// The registry view of this row; `online` comes from live state.
    pub fn to_info(&self, online: bool) -> AgentInfo {
        let status = match (self.revoked_ms, online) {
            (Some(_), _) => Status::Revoked,
            (None, true) => Status::Online,
            (None, false) => Status::Offline,
        };
        AgentInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role,
            labels: self.labels.clone(),
            status,
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            version: self.version.clone(),
            os: self.os.clone(),
            hostname: self.hostname.clone(),
            addr: self.addr.clone(),
            latest: None,
        }
    }
}

const COLUMNS: &str = "id, role, name, labels, token_id, first_seen_ms, last_seen_ms, version, os, hostname, addr, revoked_ms";

/// A column whose text does not parse as what it holds.
fn bad(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, what.into(), rusqlite::types::Type::Text)
}

/// The id and labels columns, parsed.
fn id_and_labels(id: &str, labels: &str) -> rusqlite::Result<(IdentityId, Labels)> {
    Ok((
        IdentityId::parse(id).ok_or_else(|| bad("id"))?,
        serde_json::from_str(labels).map_err(|_| bad("labels"))?,
    ))
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<IdentityRow> {
    let role: String = r.get(1)?;
    let (id, labels) = id_and_labels(&r.get::<_, String>(0)?, &r.get::<_, String>(3)?)?;
    Ok(IdentityRow {
        id,
        role: Role::parse(&role).ok_or_else(|| bad("role"))?,
        name: r.get(2)?,
        labels,
        token_id: r.get(4)?,
        first_seen_ms: r.get::<_, i64>(5)? as u64,
        last_seen_ms: r.get::<_, i64>(6)? as u64,
        version: r.get(7)?,
        os: r.get(8)?,
        hostname: r.get(9)?,
        addr: r.get(10)?,
        revoked_ms: r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
    })
}

/// Labels as stored: a JSON list of pairs.
pub(crate) fn labels_json(labels: &Labels) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "[]".into())
}

/// The identity with this id.
pub fn get(conn: &Connection, id: &IdentityId) -> rusqlite::Result<Option<IdentityRow>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM identities WHERE id = ?1"))?
        .query_row([id.as_str()], from_row)
        .optional()
}

/// The identity with this id, or else the non-revoked one with this name.
pub fn find(conn: &Connection, query: &str) -> rusqlite::Result<Option<IdentityRow>> {
    if let Some(id) = IdentityId::parse(query)
        && let Some(row) = get(conn, &id)?
    {
        return Ok(Some(row));
    }
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM identities WHERE name = ?1 ORDER BY revoked_ms IS NOT NULL, \
             first_seen_ms DESC LIMIT 1"
    ))?
    .query_row([query], from_row)
    .optional()
}

/// `SELECT` of the columns [`selectable`] reads, from agents that are not revoked, followed by
/// `$and` (more conditions, or nothing): one place for the column list and the liveness test that
/// every selector lookup shares.
macro_rules! live_agents_where {
    ($and:literal) => {
        concat!(
            "SELECT id, name, labels, last_seen_ms FROM identities \
             WHERE role = 'agent' AND revoked_ms IS NULL",
            $and
        )
    };
}

/// Every agent that is not revoked, in no particular order (a selector sorts what it picks).
/// Four columns and no `ORDER BY`: sorting by name walked the name index with a table lookup per
/// row and a temporary B-tree for the ids, which made a glob on a 20,000-agent hub cost 55 ms.
pub fn live_agents(conn: &Connection) -> rusqlite::Result<Vec<Selectable>> {
    let mut stmt = conn.prepare_cached(live_agents_where!(""))?;
    let rows = stmt.query_map([], selectable)?;
    rows.collect()
}

/// A [`Selectable`] from the columns of `live_agents_where!`.
fn selectable(r: &Row<'_>) -> rusqlite::Result<Selectable> {
    let (id, labels) = id_and_labels(&r.get::<_, String>(0)?, &r.get::<_, String>(2)?)?;
    Ok(Selectable {
        id,
        name: r.get(1)?,
        labels,
        last_seen_ms: r.get::<_, i64>(3)? as u64,
    })
}

/// The live agents holding exactly `name` (one, unless names were reused): by the name index.
pub fn live_agents_named(conn: &Connection, name: &str) -> rusqlite::Result<Vec<Selectable>> {
    let mut stmt = conn.prepare_cached(live_agents_where!(" AND name = ?1"))?;
    let rows = stmt.query_map([name], selectable)?;
    rows.collect()
}

/// The live agent with `id`, if it is one: by the primary key.
pub fn live_agent(conn: &Connection, id: &IdentityId) -> rusqlite::Result<Option<Selectable>> {
    conn.prepare_cached(live_agents_where!(" AND id = ?1"))?
        .query_row([id.to_string()], selectable)
        .optional()
}

/// Live agents with `?1 <= name < ?2`: a range on the name index.
const LIVE_AGENTS_IN_NAME_RANGE: &str = live_agents_where!(" AND name >= ?1 AND name < ?2");

/// The live agents whose name starts with `prefix` (what a glob such as `web-*` can match), by a
/// range on the name index instead of a walk over the fleet. `prefix` is not empty; names compare
/// bytewise, so `[prefix, prefix with its last byte raised)` holds exactly the names starting
/// with it.
pub fn live_agents_named_from(
    conn: &Connection,
    prefix: &str,
) -> rusqlite::Result<Vec<Selectable>> {
    // Selector names are ASCII, so raising the last byte gives a valid UTF-8 bound.
    let mut end = prefix.as_bytes().to_vec();
    let end = match end.last_mut() {
        Some(last) if *last < 0x7f => {
            *last += 1;
            String::from_utf8(end).ok()
        }
        _ => None,
    };
    let Some(end) = end else {
        // Not a selector's prefix; answered exactly all the same.
        let mut all = live_agents(conn)?;
        all.retain(|a| a.name.starts_with(prefix));
        return Ok(all);
    };
    let mut stmt = conn.prepare_cached(LIVE_AGENTS_IN_NAME_RANGE)?;
    let rows = stmt.query_map([prefix, end.as_str()], selectable)?;
    rows.collect()
}

/// The live agents that may carry the label `key=value`: every one that does, and no other as
/// long as keys and values keep to the selector alphabet (a caller checks the labels anyway).
/// SQLite looks for the pair as [`labels_json`] writes it, so rows without it never become Rust
/// values: a label that picks a few agents of 20,000 costs a scan in C, not 20,000 parses.
pub fn live_agents_labelled(
    conn: &Connection,
    key: &str,
    value: &str,
) -> rusqlite::Result<Vec<Selectable>> {
    let pair = labels_json(&vec![(key.to_string(), value.to_string())]);
    // `[["env","prod"]]` stored; `["env","prod"]` sought.
    let needle = pair
        .strip_prefix('[')
        .and_then(|p| p.strip_suffix(']'))
        .unwrap_or(&pair);
    let mut stmt = conn.prepare_cached(live_agents_where!(" AND instr(labels, ?1) > 0"))?;
    let rows = stmt.query_map([needle], selectable)?;
    rows.collect()
}

/// Identities that are agents (`agents = true`) or operators, by name.
pub fn list(conn: &Connection, agents: bool) -> rusqlite::Result<Vec<IdentityRow>> {
    let cond = if agents {
        "role = 'agent'"
    } else {
        "role != 'agent'"
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM identities WHERE {cond} ORDER BY name, id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    rows.collect()
}

/// The non-revoked identity holding `name` or a case variant of it (`WEB-1` for `web-1`), with the
/// name as it holds it; names are unique ignoring case (index `identities_live_name_nocase`).
pub fn holder_of_name(
    conn: &Connection,
    name: &str,
) -> rusqlite::Result<Option<(IdentityId, String)>> {
    conn.prepare_cached(
        "SELECT id, name FROM identities WHERE name = ?1 COLLATE NOCASE AND revoked_ms IS NULL LIMIT 1",
    )?
    .query_row([name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
    .optional()
    .map(|o| o.and_then(|(id, held)| IdentityId::parse(&id).map(|id| (id, held))))
}

/// Records the SHA-256 of the public key `id` enrolled with (migration 8).
pub fn set_enrol_key(conn: &Connection, id: &IdentityId, key: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE identities SET enrol_key = ?2 WHERE id = ?1")?
        .execute(params![id.as_str(), key])?;
    Ok(())
}

/// The live identity enrolled with token `token_id` under `name` with the public key whose
/// SHA-256 is `key`: an earlier attempt of the same enrolment whose answer never arrived.
pub fn enrolled_with_key(
    conn: &Connection,
    token_id: &str,
    name: &str,
    key: &[u8],
) -> rusqlite::Result<Option<IdentityRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM identities WHERE token_id = ?1 AND name = ?2 AND enrol_key = ?3 \
             AND revoked_ms IS NULL"
    ))?
    .query_row(params![token_id, name, key], from_row)
    .optional()
}

/// Inserts a new identity.
pub fn insert(conn: &Connection, row: &IdentityRow) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO identities ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
             ?11, ?12)"
    ))?
    .execute(params![
        row.id.as_str(),
        row.role.as_str(),
        row.name,
        labels_json(&row.labels),
        row.token_id,
        row.first_seen_ms as i64,
        row.last_seen_ms as i64,
        row.version,
        row.os,
        row.hostname,
        row.addr,
        row.revoked_ms.map(|v| v as i64),
    ])?;
    Ok(())
}

/// Records a connection's hello facts.
pub fn touch(
    conn: &Connection,
    id: &IdentityId,
    version: &str,
    os: &str,
    hostname: &str,
    addr: &str,
    now_ms: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE identities SET version = ?2, os = ?3, hostname = ?4, addr = ?5, last_seen_ms \
             = ?6 WHERE id = ?1",
    )?
    .execute(params![
        id.as_str(),
        version,
        os,
        hostname,
        addr,
        now_ms as i64
    ])?;
    Ok(())
}

/// Records when an identity was last seen.
pub fn set_last_seen(conn: &Connection, id: &IdentityId, now_ms: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE identities SET last_seen_ms = ?2 WHERE id = ?1")?
        .execute(params![id.as_str(), now_ms as i64])?;
    Ok(())
}

/// Marks an identity revoked; false if it already was.
pub fn revoke(conn: &Connection, id: &IdentityId, now_ms: u64) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE identities SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
        )?
        .execute(params![id.as_str(), now_ms as i64])?;
    Ok(n == 1)
}

/// Agents enrolled and not revoked, and agents revoked.
pub fn count_agents(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    conn.prepare_cached("SELECT count(*) FILTER (WHERE revoked_ms IS NULL), count(*) FILTER (WHERE revoked_ms IS NOT NULL)
         FROM identities WHERE role = 'agent'")?.query_row([],
        |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, i64>(1)?.max(0) as u64)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u8, role: Role, name: &str) -> IdentityRow {
        IdentityRow {
            id: IdentityId::from_random(role, [n; 8]),
            role,
            name: name.into(),
            labels: [("env".to_string(), "prod".to_string())]
                .into_iter()
                .collect(),
            token_id: "t".into(),
            first_seen_ms: 1,
            last_seen_ms: 100 + u64::from(n),
            version: String::new(),
            os: String::new(),
            hostname: String::new(),
            addr: String::new(),
            revoked_ms: None,
        }
    }

    #[test]
    fn live_agents_leave_out_revoked_agents_and_operators() {
        let mut c = Connection::open_in_memory().expect("open");
        super::super::migrate::migrate(&mut c).expect("migrate");
        let (kept, revoked, operator) = (
            row(1, Role::Agent, "web-1"),
            row(2, Role::Agent, "web-2"),
            row(3, Role::Operator, "ops"),
        );
        for r in [&kept, &revoked, &operator] {
            insert(&c, r).expect("insert");
        }
        assert!(revoke(&c, &revoked.id, 5).expect("revoke"));
        assert_eq!(live_agents(&c).expect("list"), [Selectable::from(kept)]);
    }

    #[test]
    fn an_enrolment_is_found_again_only_by_its_token_name_and_key() {
        let mut c = Connection::open_in_memory().expect("open");
        super::super::migrate::migrate(&mut c).expect("migrate");
        let (web, old) = (row(1, Role::Agent, "web-1"), row(2, Role::Agent, "web-2"));
        insert(&c, &web).expect("insert");
        insert(&c, &old).expect("insert");
        set_enrol_key(&c, &web.id, &[7; 32]).expect("key");
        let found = |token: &str, name: &str, key: &[u8]| {
            enrolled_with_key(&c, token, name, key)
                .expect("query")
                .map(|r| r.id)
        };
        assert_eq!(found("t", "web-1", &[7; 32]), Some(web.id.clone()));
        assert_eq!(found("t", "web-1", &[8; 32]), None, "another key");
        assert_eq!(found("u", "web-1", &[7; 32]), None, "another token");
        assert_eq!(found("t", "web-3", &[7; 32]), None, "another name");
        assert_eq!(
            found("t", "web-2", &[]),
            None,
            "enrolled before keys were kept"
        );
        assert!(revoke(&c, &web.id, 5).expect("revoke"));
        assert_eq!(found("t", "web-1", &[7; 32]), None, "revoked");
    }

    fn sorted_names(agents: Vec<Selectable>) -> Vec<String> {
        let mut names: Vec<String> = agents.into_iter().map(|a| a.name).collect();
        names.sort();
        names
    }

    #[test]
    fn a_name_prefix_reads_exactly_the_live_agents_starting_with_it_by_index() {
        let mut c = Connection::open_in_memory().expect("open");
        super::super::migrate::migrate(&mut c).expect("migrate");
        let names = [
            "web", "web-1", "web-zz", "web.", "webx", "db-1", "web-2", "web-ops", "wéb",
        ];
        let rows: Vec<IdentityRow> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let role = if *name == "web-ops" {
                    Role::Operator
                } else {
                    Role::Agent
                };
                row(i as u8 + 1, role, name)
            })
            .collect();
        for r in &rows {
            insert(&c, r).expect("insert");
        }
        assert!(revoke(&c, &rows[6].id, 5).expect("revoke web-2"));
        let got = sorted_names(live_agents_named_from(&c, "web-").expect("prefix"));
        assert_eq!(got, ["web-1", "web-zz"]);
        // The bound above the prefix is the last byte raised: "w" ends before "x".
        let w = sorted_names(live_agents_named_from(&c, "w").expect("w"));
        assert_eq!(w, ["web", "web-1", "web-zz", "web.", "webx", "wéb"]);
        // A prefix ending outside ASCII (no selector makes one) is answered by listing.
        let accented = sorted_names(live_agents_named_from(&c, "wé").expect("wé"));
        assert_eq!(accented, ["wéb"]);

        let plan = super::super::query_plan(&c, LIVE_AGENTS_IN_NAME_RANGE, ["web-", "web."]);
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX identities_name (name>? AND name<?)")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_label_reads_the_live_agents_carrying_exactly_that_pair() {
        let mut c = Connection::open_in_memory().expect("open");
        super::super::migrate::migrate(&mut c).expect("migrate");
        let with = |n: u8, role: Role, name: &str, labels: &[(&str, &str)]| IdentityRow {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..row(n, role, name)
        };
        let rows = [
            with(1, Role::Agent, "a", &[("env", "prod")]),
            with(2, Role::Agent, "b", &[("role", "db"), ("env", "prod")]),
            with(3, Role::Agent, "c", &[("env", "prodx")]),
            with(4, Role::Agent, "d", &[("env", "x"), ("role", "prod")]),
            with(5, Role::Agent, "e", &[("xenv", "prod")]),
            with(6, Role::Agent, "f", &[("env", "prod")]),
            with(7, Role::Operator, "g", &[("env", "prod")]),
        ];
        for r in &rows {
            insert(&c, r).expect("insert");
        }
        assert!(revoke(&c, &rows[5].id, 5).expect("revoke f"));
        let got = sorted_names(live_agents_labelled(&c, "env", "prod").expect("label"));
        assert_eq!(got, ["a", "b"]);
    }
}
