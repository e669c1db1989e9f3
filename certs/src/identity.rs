//! An identity on disk (key, certificate, CA) and reading the identity out of a peer's certificate.

use crate::{CertError, keyfile};
use base64::Engine;
use flotilla_wire::{IdentityId, Role};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// File beside an identity listing the hub addresses to dial.
const HUBS_FILE: &str = "hubs";

/// File stem of the identity every Flotilla directory holds (`identity.key`, `identity.pem`).
pub const IDENTITY_STEM: &str = "identity";

/// A key pair, its certificate and the CA that signed it, as an agent or operator keeps them.
#[derive(Clone)]
pub struct Identity {
    /// Private key, PKCS#8 DER. Never leaves the machine.
    pub key_der: Vec<u8>,
    /// Certificate, DER.
    pub cert_der: Vec<u8>,
    /// Fleet CA certificate, DER.
    pub ca_der: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("key_der", &"***")
            .finish_non_exhaustive()
    }
}

/// The Flotilla identity inside a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Stable id.
    pub id: IdentityId,
    /// Role.
    pub role: Role,
}

/// Refuses a certificate outside its validity period. The TLS verifier checks validity at a full
/// handshake; a resumed session (see [`crate::tickets`]) carries the chain as verified then, up to
/// a week earlier, so the hub checks again at every hello.
pub fn check_current(der: &[u8]) -> Result<(), CertError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CertError::BadCert(e.to_string()))?;
    let validity = cert.validity();
    if validity.is_valid() {
        Ok(())
    } else {
        Err(CertError::BadCert(format!(
            "certificate valid from {} to {}, not now",
            validity.not_before, validity.not_after
        )))
    }
}

/// When a certificate stops being valid, ms since the epoch (0 for a date before 1970): what the
/// hub's certificate-expiry alerts count down to.
pub fn not_after_ms(der: &[u8]) -> Result<u64, CertError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CertError::BadCert(e.to_string()))?;
    let secs = cert.validity().not_after.timestamp();
    Ok(u64::try_from(secs).unwrap_or(0).saturating_mul(1000))
}

/// Reads the identity from a certificate the TLS layer already verified against our CA.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, CertError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CertError::BadCert(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::BadCert(e.to_string()))?
        .ok_or_else(|| CertError::BadCert("no subject alternative name".into()))?;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && let Some(rest) = uri.strip_prefix("flotilla:")
            && let Some((role, id)) = rest.split_once(':')
        {
            let role = Role::parse(role)
                .ok_or_else(|| CertError::BadCert(format!("unknown role {role:?}")))?;
            let id = IdentityId::parse(id)
                .ok_or_else(|| CertError::BadCert(format!("malformed identity {id:?}")))?;
            return Ok(PeerIdentity { id, role });
        }
    }
    Err(CertError::BadCert(
        "no flotilla identity in certificate".into(),
    ))
}

pub(crate) fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Reads a PEM certificate file.
pub fn read_cert_pem(path: &Path) -> Result<CertificateDer<'static>, CertError> {
    let bytes = std::fs::read(path).map_err(|e| CertError::io(path, e))?;
    CertificateDer::from_pem_slice(&bytes).map_err(|_| CertError::EmptyPem {
        path: path.to_owned(),
        what: "certificate",
    })
}

/// Writes a certificate as PEM (not secret, but never writable by others: mode
/// [`keyfile::PUBLIC_FILE_MODE`] whatever the umask).
pub fn write_cert_pem(path: &Path, der: &[u8]) -> Result<(), CertError> {
    keyfile::write_with_mode(
        path,
        to_pem("CERTIFICATE", der).as_bytes(),
        keyfile::PUBLIC_FILE_MODE,
    )
}

impl Identity {
    fn paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf, PathBuf) {
        (
            dir.join(format!("{stem}.key")),
            dir.join(format!("{stem}.pem")),
            dir.join(crate::ca::CA_CERT_FILE),
        )
    }

    /// Whether an identity named `stem` exists in `dir`.
    pub fn exists(dir: &Path, stem: &str) -> bool {
        let (key, cert, _) = Self::paths(dir, stem);
        key.exists() && cert.exists()
    }

    /// Saves as `<stem>.key` (0600), `<stem>.pem` and `ca.pem` in `dir`.
    pub fn save(&self, dir: &Path, stem: &str) -> Result<(), CertError> {
        let (key, cert, ca) = Self::paths(dir, stem);
        keyfile::write_private(&key, to_pem("PRIVATE KEY", &self.key_der).as_bytes())?;
        write_cert_pem(&cert, &self.cert_der)?;
        // Always rewritten: a ca.pem left from another fleet would make every handshake fail.
        write_cert_pem(&ca, &self.ca_der)
    }

    /// Loads `<stem>.key`, `<stem>.pem` and `ca.pem` from `dir`.
    pub fn load(dir: &Path, stem: &str) -> Result<Self, CertError> {
        let (key, cert, ca) = Self::paths(dir, stem);
        let key_pem = keyfile::read_private(&key)?;
        let key_der = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(PrivateKeyDer::Pkcs8(k)) => k.secret_pkcs8_der().to_vec(),
            _ => {
                return Err(CertError::EmptyPem {
                    path: key,
                    what: "PKCS#8 private key",
                });
            }
        };
        Ok(Self {
            key_der,
            cert_der: read_cert_pem(&cert)?.to_vec(),
            ca_der: read_cert_pem(&ca)?.to_vec(),
        })
    }

    /// Saves the hub addresses to try, one per line, beside the identity (file `hubs`).
    pub fn save_hubs(dir: &Path, hubs: &[String]) -> Result<(), CertError> {
        let path = dir.join(HUBS_FILE);
        let mut text = hubs.join("\n");
        text.push('\n');
        keyfile::write_with_mode(&path, text.as_bytes(), keyfile::PUBLIC_FILE_MODE)
    }

    /// Loads the hub addresses saved by [`Identity::save_hubs`].
    pub fn load_hubs(dir: &Path) -> Result<Vec<String>, CertError> {
        let path = dir.join(HUBS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| CertError::io(&path, e))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The identity in the certificate.
    pub fn peer(&self) -> Result<PeerIdentity, CertError> {
        peer_identity(&self.cert_der)
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ca;

    /// A self-signed certificate valid from `from` to `to` days from now.
    fn cert_valid(from: i64, to: i64) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).expect("params");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(to);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn only_a_certificate_within_its_validity_is_current() {
        assert!(check_current(&cert_valid(-1, 1)).is_ok());
        let expired = check_current(&cert_valid(-10, -1)).expect_err("expired");
        assert!(expired.to_string().contains("not now"), "{expired}");
        assert!(check_current(&cert_valid(1, 10)).is_err(), "not yet valid");
        assert!(matches!(check_current(b"junk"), Err(CertError::BadCert(_))));
    }

    #[test]
    fn identity_round_trips_through_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::create(dir.path()).expect("ca");
        let id = IdentityId::from_random(Role::Admin, [9; 8]);
        let minted = ca.issue_local_identity(&id, Role::Admin).expect("mint");
        let ident = Identity {
            key_der: minted.key_der,
            cert_der: minted.cert_der,
            ca_der: ca.cert_der().to_vec(),
        };
        let sub = dir.path().join("admin");
        std::fs::create_dir(&sub).expect("mkdir");
        ident.save(&sub, "admin").expect("save");
        let back = Identity::load(&sub, "admin").expect("load");
        assert_eq!(
            back.peer().expect("peer"),
            PeerIdentity {
                id,
                role: Role::Admin
            }
        );
        assert_eq!(back.key_der, ident.key_der);
        assert!(format!("{back:?}").contains("***"));
    }
}
