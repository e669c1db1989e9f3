//! Enrolment: a certificate-less client presents a join token and a CSR; the hub checks the token,
//! signs the public key with an identity and role it chooses, and records the new identity — all in
//! one transaction, so a failed enrolment never consumes a token use.
//!
//! The answer can be lost after the commit (the hub or the client killed, the path cut). The client
//! then asks again with the same key (it keeps it until the certificate is stored), and the hub,
//! finding a live identity enrolled with that token, name and key, signs the key again for the same
//! identity without consuming another use: an enrolment is either not committed, or committed and
//! recoverable by its own key, never an identity row nobody holds a certificate for.

use super::{close, refuse};
use crate::stats::StreamKind;
use crate::store::{self, IdentityRow, now_ms};
use crate::{HubCtx, HubError};
use flotilla_wire::io::write_frame;
use flotilla_wire::limits::MAX_CONTROL_FRAME;
use flotilla_wire::msg::{EnrollRequest, Enrolled, ServerOpen};
use flotilla_wire::{ErrorCode, IdentityId, PROTOCOL_VERSION};
use std::net::SocketAddr;
use std::time::Duration;

/// Longest name or label part: fits a table column and a host name.
const MAX_NAME_LEN: usize = 64;

fn valid_word(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || extra.contains(&c)
        })
}

/// Words a name may not be, in any case: `all` selects every agent, and `.`/`..` read as paths.
const RESERVED_NAMES: &[&str] = &["all", ".", ".."];

/// Checks a display name: letters, digits, `-`, `_`, `.`; at most 64 characters; not a word the
/// selector syntax or a path gives a meaning to, not starting with `-` (it would read as an option on
/// a command line), and not shaped like an identity id (`a-`/`o-` and 16 hex digits, in any case),
/// so that a selector or query naming it can only mean one identity.
pub(crate) fn check_name(name: &str) -> Result<(), HubError> {
    let refuse = |why: &str| {
        Err(HubError::refused(
            ErrorCode::BadRequest,
            format!("name {name:?} {why}"),
        ))
    };
    if !valid_word(name, &[]) {
        return refuse(&format!(
            "is invalid: use 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
        ));
    }
    if RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return refuse("is reserved (selectors and paths give it a meaning): choose another");
    }
    if name.starts_with('-') {
        return refuse("starts with '-' and would read as an option: choose another");
    }
    if IdentityId::parse(&name.to_ascii_lowercase()).is_some() {
        return refuse("has the shape of an identity id (a-/o- and 16 hex digits): choose another");
    }
    Ok(())
}

/// Checks a label: key and value in the name alphabet (values may also hold `/` and `:`).
pub(crate) fn check_label(key: &str, value: &str) -> Result<(), HubError> {
    if valid_word(key, &[]) && (value.is_empty() || valid_word(value, &['/', ':'])) {
        Ok(())
    } else {
        Err(HubError::refused(
            ErrorCode::BadRequest,
            // Escaped: the message reaches the log and the peer's terminal.
            format!(
                "label {}={} is invalid",
                key.escape_debug(),
                value.escape_debug()
            ),
        ))
    }
}

async fn enrol(ctx: &HubCtx, req: EnrollRequest, remote: SocketAddr) -> Result<Enrolled, HubError> {
    if !flotilla_certs::JoinToken::is_valid_id(&req.token_id) {
        return Err(HubError::refused(
            ErrorCode::BadRequest,
            "join token id is malformed: the token is damaged, ask for a new one",
        ));
    }
    if req.protocol_version != PROTOCOL_VERSION {
        return Err(HubError::refused(
            ErrorCode::VersionMismatch,
            format!(
                "hub speaks protocol {PROTOCOL_VERSION}, client {}",
                req.protocol_version
            ),
        ));
    }
    let name = if req.name.is_empty() {
        req.hello.hostname.clone()
    } else {
        req.name.clone()
    };
    check_name(&name)?;
    for (k, v) in &req.labels {
        check_label(k, v)?;
    }
    let key = flotilla_certs::csr_key_fingerprint(&req.csr_der)
        .map_err(|e| HubError::refused(ErrorCode::BadRequest, e.to_string()))?;
    let ca = ctx.ca.clone();
    let ca_der = ca.cert_der().to_vec();
    let addr = remote.to_string();
    ctx.store
        .call(move |c| {
            let tx = c.transaction()?;
            let now = now_ms();
            if let Some(row) =
                store::identities::enrolled_with_key(&tx, &req.token_id, &name, &key.0)?
            {
                store::tokens::verify(&tx, &req.token_id, &req.secret, now)?;
                let cert_der = ca
                    .sign_csr(&req.csr_der, &row.id, row.role)
                    .map_err(|e| HubError::refused(ErrorCode::BadRequest, e.to_string()))?;
                store::audit::append(&tx, now, &format!("token:{}", req.token_id), "enrol", row.id.as_str(), &format!("name={name} role={} again: the first answer was lost", row.role))?;
                tx.commit()?;
                return Ok(Enrolled { identity: row.id, role: row.role, name: row.name, labels: row.labels, cert_der, ca_der });
            }
            let grant = store::tokens::redeem(&tx, &req.token_id, &req.secret, now)?;
            if let Some((holder, held)) = store::identities::holder_of_name(&tx, &name)? {
                let variant = if held == name {
                    String::new()
                } else {
                    format!(" as {held:?} (names are compared ignoring case)")
                };
                return Err(HubError::refused(
                    ErrorCode::BadRequest,
                    format!("name {name:?} is taken by {holder}{variant}: enrol with another --name, or revoke {holder} first"),
                ));
            }
            let id = IdentityId::from_random(grant.role, flotilla_certs::random_bytes());
            let cert_der = ca
                .sign_csr(&req.csr_der, &id, grant.role)
                .map_err(|e| HubError::refused(ErrorCode::BadRequest, e.to_string()))?;
            // Token labels win over requested ones: the admin decides what a token grants.
            let mut labels = req.labels.clone();
            labels.retain(|(k, _)| !grant.labels.iter().any(|(gk, _)| gk == k));
            labels.extend(grant.labels.iter().cloned());
            labels.sort();
            let row = IdentityRow {
                id: id.clone(),
                role: grant.role,
                name: name.clone(),
                labels: labels.clone(),
                token_id: req.token_id.clone(),
                first_seen_ms: now,
                last_seen_ms: now,
                version: req.hello.software_version.clone(),
                os: req.hello.os.clone(),
                hostname: req.hello.hostname.clone(),
                addr,
                revoked_ms: None,
            };
            store::identities::insert(&tx, &row)?;
            store::identities::set_enrol_key(&tx, &id, &key.0)?;
            store::audit::append(&tx, now, &format!("token:{}", req.token_id), "enrol", id.as_str(), &format!("name={name} role={}", grant.role))?;
            tx.commit()?;
            Ok(Enrolled { identity: id, role: grant.role, name, labels, cert_der, ca_der })
        })
        .await
}

/// Runs an enrolment on the control stream and closes the connection.
pub(crate) async fn serve(
    ctx: &HubCtx,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    req: EnrollRequest,
    remote: SocketAddr,
) {
    // Whatever a peer without a certificate sends reaches the log escaped (`?`), and its token id
    // only once it has the shape of one.
    let token_id = if flotilla_certs::JoinToken::is_valid_id(&req.token_id) {
        req.token_id.clone()
    } else {
        "(malformed)".to_string()
    };
    match enrol(ctx, req, remote).await {
        Ok(enrolled) => {
            tracing::info!(id = %enrolled.identity, name = %enrolled.name, role = %enrolled.role, token_id = ?token_id, "enrolled");
            ctx.stats.enrolment(true);
            let mut out = ctx.stats.writer(StreamKind::Control, send);
            let _ = write_frame(&mut out, &ServerOpen::Enrolled(enrolled), MAX_CONTROL_FRAME).await;
            drop(out);
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            close(conn, ErrorCode::Ok, "enrolled");
        }
        Err(err) => {
            ctx.stats.enrolment(false);
            if matches!(err, HubError::Refused { .. }) {
                tracing::info!(token_id = ?token_id, reason = ?err.to_string(), "enrolment refused");
            } else {
                tracing::error!(token_id = ?token_id, error = ?err.to_string(), "enrolment failed");
            }
            refuse(conn, send, err.to_refusal()).await;
        }
    }
}
