//! All of Flotilla's X.509 and enrolment: the fleet CA, role-bearing certificates, CSRs, join tokens
//! that pin the CA, the rustls configurations both ends use, and private key files written 0600.
//!
//! Nothing else in the workspace mints or parses a certificate. Main types: [`Ca`] (signs), [`JoinToken`]
//! (what a new machine is handed), [`Identity`] (a key and certificate on disk), and the TLS builders
//! in [`tls`].

mod ca;
pub mod clock;
pub mod dial;
pub mod enrol;
mod error;
mod fingerprint;
mod identity;
mod keyfile;
pub mod tickets;
pub mod tls;
mod token;

pub use ca::{Ca, HubCert, csr_for_key, csr_key_fingerprint, generate_key_and_csr};
pub use error::CertError;
pub use fingerprint::{Fingerprint, fingerprint};
pub use identity::{
    IDENTITY_STEM, Identity, PeerIdentity, check_current, not_after_ms, peer_identity,
    read_cert_pem, write_cert_pem,
};
pub use keyfile::{
    PUBLIC_FILE_MODE, create_private_dir, read_private, write_private, write_with_mode,
};
pub use token::{JoinToken, TokenError, TokenSecret, hash_secret, random_bytes, secrets_match};

/// Installs ring as the process-wide rustls crypto provider. Call first thing in every `main` and test;
/// a second call is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
