//! Agent configuration: `agent.toml` in the data directory (optional), flags override.

use crate::AgentError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Name of the optional config file in the data directory.
pub const CONFIG_FILE: &str = "agent.toml";

/// The agent's settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Metrics interval in milliseconds when nobody watches; 0 means "as the hub says".
    pub metrics_interval_ms: u32,
    /// Join token to enrol with while the data directory holds no identity (`agentd install`,
    /// `enroll` and `run` use it); unused once enrolled. Prints as `***`.
    pub token: Option<deploy::SecretString>,
}

impl AgentConfig {
    /// Reads `agent.toml` from `data_dir`, or the defaults when there is none.
    pub fn load(data_dir: &Path) -> Result<Self, AgentError> {
        let path = data_dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(AgentError::Io {
                    context: format!("read {}", path.display()),
                    source: e,
                });
            }
        };
        let cfg: Self = toml::from_str(&text)
            .map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values.
    pub fn validate(&self) -> Result<(), AgentError> {
        if self.metrics_interval_ms != 0 && self.metrics_interval_ms < 1000 {
            return Err(AgentError::Config(format!(
                "metrics_interval_ms = {} is below the 1000 ms minimum",
                self.metrics_interval_ms
            )));
        }
        Ok(())
    }
}

/// Where an agent keeps its identity and state.
#[derive(Clone, Debug)]
pub struct AgentPaths {
    /// Data directory (identity, config).
    pub data_dir: PathBuf,
}
