//! Enrolment from the client side: make a key here, send only a CSR with the token, pin the hub's CA
//! by the token's fingerprint, store the certificate next to the key.

use crate::dial::{self, DialError};
use crate::{CertError, Identity, JoinToken, TokenError, generate_key_and_csr};
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
    let (key_der, csr_der) = generate_key_and_csr()?;
    let (tls, pin) = crate::tls::enrol_client_config(token.ca_fingerprint)?;
    let mut config = quinn::ClientConfig::new(tls);
    config.transport_config(dial::client_transport());
    let endpoint = dial::client_endpoint(dial::wants_ipv6(&token.hubs))?;
    let conn = match dial::connect(&endpoint, &token.hubs, config).await {
        Ok(conn) => conn,
        Err(e) => return Err(pin.mismatch().map(DialError::Tls).unwrap_or(e).into()),
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
    let (_send, _recv, answer) = dial::open(&conn, &ClientOpen::Enroll(req)).await?;
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
    conn.close(0u32.into(), b"enrolled");
    endpoint.wait_idle().await;
    Ok(Enrolment {
        enrolled,
        hubs: token.hubs,
    })
}
