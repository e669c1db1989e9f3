//! The fleet CA: created once by `hubd init`, signs the hub certificate and every enrolled identity.

use crate::{CertError, fingerprint, keyfile};
use flotilla_wire::{HUB_SERVER_NAME, IdentityId, Role};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// CA lifetime: long enough that no fleet meets it in practice; rotation is a documented procedure.
const CA_VALIDITY: Duration = Duration::days(3650 * 2);
/// Hub and identity certificates share the CA's horizon minus a margin: Flotilla does not yet renew
/// certificates automatically (docs/architecture.md), and revocation is the control for compromise.
const LEAF_VALIDITY: Duration = Duration::days(3650);
/// Backdating absorbs clock skew between hub and agents, a common cause of "certificate not yet valid".
const BACKDATE: Duration = Duration::hours(1);

/// File names of the CA inside the hub's data directory.
pub(crate) const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";

/// The fleet certificate authority: its certificate and signing key.
pub struct Ca {
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

/// A certificate and private key (PKCS#8 DER) minted on the hub for its own use.
pub struct HubCert {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

fn build_err(e: rcgen::Error) -> CertError {
    CertError::Build(e.to_string())
}

fn validity(params: &mut CertificateParams, span: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + span;
}

/// Identity URI carried in the subject alternative name: `flotilla:<role>:<id>`.
pub(crate) fn identity_uri(id: &IdentityId, role: Role) -> String {
    format!("flotilla:{}:{}", role.as_str(), id)
}

fn leaf_params(id: &IdentityId, role: Role) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, id.as_str());
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    params.distinguished_name = dn;
    let uri = identity_uri(id, role).try_into().map_err(build_err)?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, LEAF_VALIDITY);
    Ok(params)
}

/// Makes a fresh P-256 key pair and a CSR for it. The key never leaves the caller's machine; only the
/// CSR travels. Returns (PKCS#8 key DER, CSR DER).
pub fn generate_key_and_csr() -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(build_err)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(build_err)?;
    Ok((key.serialize_der(), csr.der().to_vec()))
}

/// A CSR for a key made earlier (PKCS#8 DER): an enrolment that is tried again asks with the key
/// of its first attempt, so the hub can tell the retry from a new agent.
pub fn csr_for_key(key_der: &[u8]) -> Result<Vec<u8>, CertError> {
    let key = KeyPair::try_from(key_der).map_err(build_err)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(build_err)?;
    Ok(csr.der().to_vec())
}

/// SHA-256 of the public key a CSR asks to have signed: what the hub keeps of an enrolment to
/// recognise the same key asking again.
pub fn csr_key_fingerprint(csr_der: &[u8]) -> Result<crate::Fingerprint, CertError> {
    use rcgen::PublicKeyData;
    let csr =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
            .map_err(|e| CertError::BadCsr(e.to_string()))?;
    Ok(fingerprint(csr.public_key.der_bytes()))
}

impl Ca {
    /// Creates a CA in `dir`, refusing to overwrite an existing one.
    pub fn create(dir: &Path) -> Result<Self, CertError> {
        let cert_path = dir.join(CA_CERT_FILE);
        if cert_path.exists() || dir.join(CA_KEY_FILE).exists() {
            return Err(CertError::AlreadyExists { path: cert_path });
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(build_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // A name unique to this fleet: a certificate from another fleet then fails as "unknown CA"
        // rather than as a bad signature under a same-named CA, and `openssl x509` tells fleets apart.
        let tag: String = crate::random_bytes::<4>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        dn.push(DnType::CommonName, format!("Flotilla fleet CA {tag}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key).map_err(build_err)?;
        keyfile::write_private(&dir.join(CA_KEY_FILE), key.serialize_pem().as_bytes())?;
        keyfile::write_with_mode(&cert_path, cert.pem().as_bytes(), keyfile::PUBLIC_FILE_MODE)?;
        Ok(Self {
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// Loads the CA from `dir`.
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let key_path = dir.join(CA_KEY_FILE);
        let key_pem = keyfile::read_private(&key_path)?;
        let key_pem = String::from_utf8(key_pem).map_err(|_| CertError::EmptyPem {
            path: key_path.clone(),
            what: "key",
        })?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| CertError::BadCert(format!("{}: {e}", key_path.display())))?;
        let cert_der = crate::identity::read_cert_pem(&dir.join(CA_CERT_FILE))?;
        Ok(Self { cert_der, key })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// SHA-256 of the CA certificate: what tokens pin.
    pub fn fingerprint(&self) -> crate::Fingerprint {
        fingerprint(&self.cert_der)
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, CertError> {
        Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(build_err)
    }

    /// Mints the hub's server certificate for `names` plus [`HUB_SERVER_NAME`].
    pub fn issue_hub_cert(&self, names: &[String]) -> Result<HubCert, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(build_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, HUB_SERVER_NAME);
        params.distinguished_name = dn;
        let mut sans = vec![SanType::DnsName(
            HUB_SERVER_NAME.try_into().map_err(build_err)?,
        )];
        for name in names {
            match name.parse::<std::net::IpAddr>() {
                Ok(ip) => sans.push(SanType::IpAddress(ip)),
                Err(_) => sans.push(SanType::DnsName(
                    name.as_str().try_into().map_err(build_err)?,
                )),
            }
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, LEAF_VALIDITY);
        let cert = params.signed_by(&key, &self.issuer()?).map_err(build_err)?;
        Ok(HubCert {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// Signs a CSR for `id` with `role`. Only the public key is taken from the request: subject,
    /// usages, validity and identity come from the hub (the join token), never from the requester.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        id: &IdentityId,
        role: Role,
    ) -> Result<Vec<u8>, CertError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| CertError::BadCsr(e.to_string()))?;
        let params = leaf_params(id, role)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(build_err)?;
        Ok(cert.der().to_vec())
    }

    /// Mints a key and certificate on the hub itself: used once, for the admin identity `hubd init`
    /// leaves in the hub's data directory so the hub's own CLI can manage a running hub.
    pub fn issue_local_identity(&self, id: &IdentityId, role: Role) -> Result<HubCert, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(build_err)?;
        let cert = leaf_params(id, role)?
            .signed_by(&key, &self.issuer()?)
            .map_err(build_err)?;
        Ok(HubCert {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_refuses_overwrite_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::create(dir.path()).expect("create");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
        let err = Ca::create(dir.path()).err().expect("second create refused");
        assert!(matches!(err, CertError::AlreadyExists { .. }), "{err}");
        let loaded = Ca::load(dir.path()).expect("load");
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
    }

    #[test]
    fn signed_csr_carries_hub_chosen_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::create(dir.path()).expect("create");
        let (_key, csr) = generate_key_and_csr().expect("csr");
        let id = IdentityId::from_random(Role::Agent, [3; 8]);
        let cert = ca.sign_csr(&csr, &id, Role::Agent).expect("sign");
        let peer = crate::peer_identity(&cert).expect("identity");
        assert_eq!(peer.id, id);
        assert_eq!(peer.role, Role::Agent);
        assert!(ca.sign_csr(b"not a csr", &id, Role::Agent).is_err());
    }

    #[test]
    fn a_csr_for_the_same_key_has_the_same_key_fingerprint() {
        let (key, first) = generate_key_and_csr().expect("csr");
        let again = csr_for_key(&key).expect("csr for the kept key");
        let (_other_key, other) = generate_key_and_csr().expect("csr");
        let of = |csr: &[u8]| csr_key_fingerprint(csr).expect("fingerprint");
        assert_eq!(of(&first), of(&again));
        assert_ne!(of(&first), of(&other));
        assert!(csr_key_fingerprint(b"not a csr").is_err());
        assert!(csr_for_key(b"not a key").is_err());
    }
}
