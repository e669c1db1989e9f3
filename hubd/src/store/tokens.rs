//! Join tokens: only the SHA-256 of each secret is stored.

use crate::HubError;
use flotilla_wire::msg::{Labels, TokenInfo};
use flotilla_wire::{ErrorCode, Role};
use rusqlite::{Connection, OptionalExtension, params};

/// One stored token.
#[derive(Clone, Debug)]
pub struct TokenRow {
    /// Public id.
    pub id: String,
    /// SHA-256 of the secret.
    pub hash: Vec<u8>,
    /// Role granted.
    pub role: Role,
    /// Labels granted.
    pub labels: Labels,
    /// Enrolments left.
    pub uses_left: u32,
    /// Expiry.
    pub expires_ms: u64,
    /// Creation.
    pub created_ms: u64,
}

impl TokenRow {
    /// The listing view (no hash).
    pub fn to_info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            role: self.role,
            uses_left: self.uses_left,
            expires_ms: self.expires_ms,
            created_ms: self.created_ms,
            labels: self.labels.clone(),
        }
    }
}

/// What a redeemed token grants.
#[derive(Clone, Debug)]
pub struct EnrolGrant {
    /// Role for the new identity.
    pub role: Role,
    /// Labels for the new identity.
    pub labels: Labels,
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    let role: String = r.get(2)?;
    let labels: String = r.get(3)?;
    let bad = |what: &str| {
        rusqlite::Error::InvalidColumnType(0, what.into(), rusqlite::types::Type::Text)
    };
    Ok(TokenRow {
        id: r.get(0)?,
        hash: r.get(1)?,
        role: Role::parse(&role).ok_or_else(|| bad("role"))?,
        labels: serde_json::from_str(&labels).map_err(|_| bad("labels"))?,
        uses_left: r.get(4)?,
        expires_ms: r.get::<_, i64>(5)? as u64,
        created_ms: r.get::<_, i64>(6)? as u64,
    })
}

/// Stores a new token.
pub fn insert(conn: &Connection, row: &TokenRow) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO tokens (id, hash, role, labels, uses_left, expires_ms, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            row.id,
            row.hash,
            row.role.as_str(),
            super::identities::labels_json(&row.labels),
            row.uses_left,
            row.expires_ms as i64,
            row.created_ms as i64
        ],
    )?;
    Ok(())
}

/// Every token, newest first.
pub fn list(conn: &Connection) -> rusqlite::Result<Vec<TokenRow>> {
    let mut stmt =
        conn.prepare("SELECT id, hash, role, labels, uses_left, expires_ms, created_ms FROM tokens ORDER BY created_ms DESC")?;
    let rows = stmt.query_map([], from_row)?;
    rows.collect()
}

/// Deletes a token; false if there was none.
pub fn delete(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM tokens WHERE id = ?1", [id])? == 1)
}

/// The token `id` if `secret` is its secret and it has not expired.
fn checked(conn: &Connection, id: &str, secret: &[u8], now_ms: u64) -> Result<TokenRow, HubError> {
    let row = conn
        .query_row(
            "SELECT id, hash, role, labels, uses_left, expires_ms, created_ms FROM tokens WHERE id = ?1",
            [id],
            from_row,
        )
        .optional()?;
    let bad = || {
        HubError::refused(
            ErrorCode::BadToken,
            "join token not recognised by this hub (deleted, or altered)",
        )
    };
    let row = row.ok_or_else(bad)?;
    if !flotilla_certs::secrets_match(&row.hash, &flotilla_certs::hash_secret(secret)) {
        return Err(bad());
    }
    if now_ms >= row.expires_ms {
        return Err(HubError::refused(
            ErrorCode::TokenExpired,
            "join token expired: ask an admin for a new one",
        ));
    }
    Ok(row)
}

/// Checks a presented secret and the token's expiry without consuming a use: for an enrolment
/// tried again whose first attempt the hub committed (and counted) already.
pub fn verify(conn: &Connection, id: &str, secret: &[u8], now_ms: u64) -> Result<(), HubError> {
    checked(conn, id, secret, now_ms).map(drop)
}

/// Checks a presented secret and consumes one use. Call inside the enrolment transaction so the use
/// is given back if the enrolment fails afterwards.
pub fn redeem(
    conn: &Connection,
    id: &str,
    secret: &[u8],
    now_ms: u64,
) -> Result<EnrolGrant, HubError> {
    let row = checked(conn, id, secret, now_ms)?;
    if row.uses_left == 0 {
        return Err(HubError::refused(
            ErrorCode::TokenUsedUp,
            "join token already used up: ask an admin for a new one",
        ));
    }
    conn.execute(
        "UPDATE tokens SET uses_left = uses_left - 1 WHERE id = ?1",
        [id],
    )?;
    Ok(EnrolGrant {
        role: row.role,
        labels: row.labels,
    })
}
