//! SHA-256 fingerprints of certificates, printed as `sha256:` and 64 hex digits.

use std::fmt;

/// SHA-256 of a certificate's DER: what a join token pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// Computes the fingerprint of a DER certificate.
pub fn fingerprint(der: &[u8]) -> Fingerprint {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Fingerprint(out)
}

impl Fingerprint {
    /// Short form for messages: the first 8 bytes.
    pub fn short(&self) -> String {
        let hex: String = self.0[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}…")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
