//! Errors of certificate and key handling.

use std::path::PathBuf;

/// Why a certificate, key or TLS configuration could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused to build or sign a certificate or request.
    #[error("cannot build certificate: {0}")]
    Build(String),
    /// A certificate signing request could not be parsed or its signature is wrong.
    #[error("invalid certificate request: {0}")]
    BadCsr(String),
    /// A certificate does not parse or lacks the Flotilla identity.
    #[error("invalid certificate: {0}")]
    BadCert(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A private key file is readable by others.
    #[error("{}: private key is readable by group or others (mode {mode:o}); run chmod 600", path.display())]
    LooseMode {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A CA already exists where one would be created.
    #[error("{}: a fleet CA already exists here; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The existing CA certificate.
        path: PathBuf,
    },
    /// A PEM file holds no usable item.
    #[error("{}: no {what} found in PEM file", path.display())]
    EmptyPem {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Tls(String),
}

impl CertError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}
