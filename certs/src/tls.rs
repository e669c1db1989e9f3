//! rustls configurations for QUIC: the hub's server side, an enrolled client, and the enrolment client
//! that pins the CA fingerprint from a join token.
//!
//! Always TLS 1.3 (QUIC requires it), always ring, always the Flotilla ALPN.

use crate::{CertError, Fingerprint, Identity, fingerprint};
use flotilla_wire::ALPN;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex};

/// ring with AES-128-GCM first. Both AES suites stay allowed, but 128 is what any two Flotilla
/// parties pick: ten AES rounds instead of fourteen, on every hop of a relayed transfer (each
/// byte is sealed and opened twice). Cipher work was about 15 % of the hub's relay profile; the
/// gain on a 1 GiB relay was within this machine's noise. AES-128 is TLS 1.3's mandatory suite
/// and QUIC's own for Initial packets; ChaCha20 remains for peers without AES instructions.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

fn tls_err(e: impl std::fmt::Display) -> CertError {
    CertError::Tls(e.to_string())
}

fn roots(ca_der: &[u8]) -> Result<Arc<RootCertStore>, CertError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(tls_err)?;
    Ok(Arc::new(roots))
}

/// Session tickets a hub issues per handshake. One: a client uses each ticket once and every
/// resumed handshake brings a new one, and each ticket carries the client's certificate chain
/// (about 700 bytes sealed), so a second would only add bytes to every handshake.
const TICKETS_PER_HANDSHAKE: usize = 1;

/// The hub's TLS: presents `hub_cert` with the CA in its chain (enrolling clients pin the CA from it),
/// verifies client certificates against the CA, and lets certificate-less clients in so they can enrol;
/// the hub then allows them nothing but an enrolment request. Sessions resume with `tickets`
/// (see [`crate::tickets`]): a restarted hub with the same ticket key resumes its clients' sessions.
pub fn server_config(
    ca_der: &[u8],
    hub_cert_der: &[u8],
    hub_key_der: &[u8],
    tickets: Arc<crate::tickets::SessionTickets>,
) -> Result<Arc<QuicServerConfig>, CertError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_der)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(tls_err)?;
    let chain = vec![
        CertificateDer::from(hub_cert_der.to_vec()),
        CertificateDer::from(ca_der.to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(hub_key_der.to_vec()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.ticketer = tickets;
    cfg.send_tls13_tickets = TICKETS_PER_HANDSHAKE;
    Ok(Arc::new(QuicServerConfig::try_from(cfg).map_err(tls_err)?))
}

/// An enrolled client: trusts only the fleet CA and presents its own certificate.
pub fn client_config(identity: &Identity) -> Result<Arc<QuicClientConfig>, CertError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_root_certificates(roots(&identity.ca_der)?)
        .with_client_auth_cert(
            vec![CertificateDer::from(identity.cert_der.clone())],
            identity.private_key(),
        )
        .map_err(tls_err)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(QuicClientConfig::try_from(cfg).map_err(tls_err)?))
}

/// What the pinning verifier saw, for a specific error message after a failed handshake.
#[derive(Clone, Default)]
pub struct PinOutcome(Arc<Mutex<Option<String>>>);

impl PinOutcome {
    /// The mismatch message, if the hub presented another CA.
    pub fn mismatch(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }

    fn record(&self, msg: String) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(msg);
        }
    }
}

/// The enrolment client: no certificate of its own, and trusts the hub only if the hub's chain holds a
/// CA whose SHA-256 equals the token's and the hub certificate verifies against that CA.
pub fn enrol_client_config(
    pin: Fingerprint,
) -> Result<(Arc<QuicClientConfig>, PinOutcome), CertError> {
    let outcome = PinOutcome::default();
    let verifier = Arc::new(PinnedCaVerifier {
        pin,
        outcome: outcome.clone(),
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok((
        Arc::new(QuicClientConfig::try_from(cfg).map_err(tls_err)?),
        outcome,
    ))
}

#[derive(Debug)]
struct PinnedCaVerifier {
    pin: Fingerprint,
    outcome: PinOutcome,
}

impl std::fmt::Debug for PinOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinOutcome")
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| fingerprint(c) == self.pin) else {
            let seen = intermediates
                .first()
                .map(|c| fingerprint(c).short())
                .unwrap_or_else(|| "none".into());
            let msg = format!(
                "hub CA {seen} does not match token ({}): this is not the hub the token was made for",
                self.pin.short()
            );
            self.outcome.record(msg.clone());
            return Err(rustls::Error::General(msg));
        };
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(ca).map_err(|e| rustls::Error::General(e.to_string()))?,
            provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The first certificate the peer presented on a QUIC connection, if any.
pub fn peer_certificate(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().map(|c| c.to_vec())
}
