//! Enrolment from the client side: make a key here, send only a CSR with the token, pin the hub's CA
//! by the token's fingerprint, store the certificate next to the key.
//!
//! The key is written (0600) to [`PENDING_KEY_FILE`] before the request goes out and kept until the
//! certificate is stored: if the hub commits the enrolment and its answer never arrives (the hub
//! or this process killed, the path cut), the next attempt asks with the same key, and the hub
//! hands back the identity it committed instead of counting a new agent against the token.

use crate::dial::{self, DialError};
use crate::{CertError, Identity, JoinToken, TokenError, generate_key_and_csr, keyfile};
use flotilla_wire::PROTOCOL_VERSION;
use flotilla_wire::msg::{ClientOpen, EnrollRequest, Enrolled, Hello, Labels, ServerOpen};
use std::path::Path;

/// Why enrolment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The token text is unusable.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// This directory already holds an identity.
    #[error("{0} already holds an enrolled identity; remove it first to enrol again")]
    AlreadyEnrolled(String),
    /// Dialling or the exchange failed (includes a CA that does not match the token).
    #[error(transparent)]
    Dial(#[from] DialError),
    /// A key or file could not be made or written.
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// Key of an enrolment whose answer has not arrived yet, in the identity's directory.
pub const PENDING_KEY_FILE: &str = "enrol.key";

/// The key and CSR of this enrolment: the pending key of an earlier attempt, or a new one saved
/// as pending before anything is sent.
fn pending_key_and_csr(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let path = dir.join(PENDING_KEY_FILE);
    if path.exists() {
        let pem = keyfile::read_private(&path)?;
        let Ok(PrivateKeyDer::Pkcs8(key)) = PrivateKeyDer::from_pem_slice(&pem) else {
            return Err(CertError::EmptyPem {
                path,
                what: "PKCS#8 private key",
            });
        };
        let key_der = key.secret_pkcs8_der().to_vec();
        let csr_der = crate::csr_for_key(&key_der)?;
        return Ok((key_der, csr_der));
    }
    let (key_der, csr_der) = generate_key_and_csr()?;
    keyfile::write_private(
        &path,
        crate::identity::to_pem("PRIVATE KEY", &key_der).as_bytes(),
    )?;
    Ok((key_der, csr_der))
}

/// Removes the pending key once the enrolment's outcome is known.
fn drop_pending_key(dir: &Path) -> Result<(), CertError> {
    let path = dir.join(PENDING_KEY_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CertError::io(&path, e)),
    }
}

/// A finished enrolment.
#[derive(Debug)]
pub struct Enrolment {
    /// What the hub registered.
    pub enrolled: Enrolled,
    /// Hub addresses from the token.
    pub hubs: Vec<String>,
}

/// Enrols with `token_text` and saves the identity (key 0600) and hub list in `dir`.
pub async fn enrol(
    token_text: &str,
    dir: &Path,
    name: String,
    labels: Labels,
    hello: Hello,
) -> Result<Enrolment, EnrolError> {
    let token = JoinToken::parse(token_text)?;
    if Identity::exists(dir, crate::IDENTITY_STEM) {
        return Err(EnrolError::AlreadyEnrolled(dir.display().to_string()));
    }
    let (key_der, csr_der) = pending_key_and_csr(dir)?;
    let (tls, pin) = crate::tls::enrol_client_config(token.ca_fingerprint)?;
    let mut config = quinn::ClientConfig::new(tls);
    config.transport_config(dial::client_transport());
    let endpoint = dial::client_endpoint(dial::wants_ipv6(&token.hubs))?;
    let conn = match dial::connect(&endpoint, &token.hubs, config).await {
        Ok(conn) => conn,
        Err(e) => {
            // Nothing was sent: no hub can have committed anything for this key.
            drop_pending_key(dir)?;
            return Err(pin.mismatch().map(DialError::Tls).unwrap_or(e).into());
        }
    };
    let req = EnrollRequest {
        protocol_version: PROTOCOL_VERSION,
        token_id: token.id.clone(),
        secret: token.secret.0.to_vec(),
        csr_der,
        name,
        labels,
        hello,
    };
    let answer = match dial::open(&conn, &ClientOpen::Enroll(req)).await {
        Ok((_send, _recv, answer)) => answer,
        Err(e @ DialError::Refused(_)) => {
            // A refusal rolls the hub's transaction back: nothing to recover by this key.
            drop_pending_key(dir)?;
            return Err(e.into());
        }
        // Anything else may have come after the hub's commit: keep the key for the next attempt.
        Err(e) => return Err(e.into()),
    };
    let ServerOpen::Enrolled(enrolled) = answer else {
        return Err(DialError::Protocol(
            "hub answered enrolment with something other than a certificate".into(),
        )
        .into());
    };
    if crate::fingerprint(&enrolled.ca_der) != token.ca_fingerprint {
        return Err(DialError::Tls("hub sent a CA that does not match the token".into()).into());
    }
    let identity = Identity {
        key_der,
        cert_der: enrolled.cert_der.clone(),
        ca_der: enrolled.ca_der.clone(),
    };
    identity.save(dir, crate::IDENTITY_STEM)?;
    Identity::save_hubs(dir, &token.hubs)?;
    drop_pending_key(dir)?;
    conn.close(0u32.into(), b"enrolled");
    endpoint.wait_idle().await;
    Ok(Enrolment {
        enrolled,
        hubs: token.hubs,
    })
}
