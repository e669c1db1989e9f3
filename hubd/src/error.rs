//! Hub errors: what went wrong, and the safe code a peer is told.

use flotilla_wire::ErrorCode;
use flotilla_wire::msg::Refusal;

/// Errors of hub operations. Each maps to a [`ErrorCode`] and a message safe to send to a peer.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The database failed; the detail stays in the hub's log.
    #[error("database: {0}")]
    Store(#[from] rusqlite::Error),
    /// The store thread is gone (hub shutting down).
    #[error("store closed")]
    StoreClosed,
    /// A request refused for a reason the peer may know.
    #[error("{message}")]
    Refused {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable, safe to send.
        message: String,
    },
    /// A certificate operation failed.
    #[error(transparent)]
    Cert(#[from] flotilla_certs::CertError),
    /// A file or socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(String),
}

impl HubError {
    /// A refusal with `code` and `message`.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
        }
    }

    /// Wraps an IO error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// What the peer is told: refusals verbatim, everything else as an internal error.
    pub fn to_refusal(&self) -> Refusal {
        match self {
            Self::Refused { code, message } => Refusal {
                code: *code,
                message: message.clone(),
            },
            Self::StoreClosed => Refusal {
                code: ErrorCode::ShuttingDown,
                message: ErrorCode::ShuttingDown.describe().into(),
            },
            _ => Refusal {
                code: ErrorCode::Internal,
                message: ErrorCode::Internal.describe().into(),
            },
        }
    }
}
