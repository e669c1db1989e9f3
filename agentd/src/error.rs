//! Agent errors.

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data directory holds no identity.
    #[error("{0} holds no enrolled identity: run `agentd enroll --token …` first")]
    NotEnrolled(String),
    /// A certificate or key problem.
    #[error(transparent)]
    Cert(#[from] flotilla_certs::CertError),
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(String),
    /// A file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}
