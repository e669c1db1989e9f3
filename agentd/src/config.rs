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
    /// The folder shared with the fleet; a relative path is taken from the data directory.
    /// Default: `shared` in the data directory.
    pub shared_dir: Option<PathBuf>,
    /// Refuse every transfer into the shared folder (it can still be listed and read).
    pub read_only: bool,
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
        if self
            .shared_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(AgentError::Config(
                "shared_dir is empty: give a folder, or leave it out for `shared` in the data directory"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The shared folder for an agent whose data directory is `data_dir`.
    pub fn shared_dir(&self, data_dir: &Path) -> PathBuf {
        match &self.shared_dir {
            Some(d) => data_dir.join(d),
            None => data_dir.join(DEFAULT_SHARED_DIR),
        }
    }
}

/// Default shared folder, inside the data directory: every agent shares something out of the box,
/// and nothing outside its own directory unless configured.
pub const DEFAULT_SHARED_DIR: &str = "shared";

/// Where an agent keeps its identity and state.
#[derive(Clone, Debug)]
pub struct AgentPaths {
    /// Data directory (identity, config).
    pub data_dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_dir_defaults_inside_the_data_dir_and_unknown_fields_fail() {
        let cfg: AgentConfig = toml::from_str("read_only = true\n").expect("parse");
        assert!(cfg.read_only);
        assert_eq!(
            cfg.shared_dir(Path::new("/var/lib/agent")),
            Path::new("/var/lib/agent/shared")
        );
        let cfg: AgentConfig = toml::from_str("shared_dir = \"/srv/share\"\n").expect("parse");
        assert_eq!(
            cfg.shared_dir(Path::new("/var/lib/agent")),
            Path::new("/srv/share")
        );
        let err = toml::from_str::<AgentConfig>("shared_folder = \"x\"\n").expect_err("unknown");
        assert!(err.to_string().contains("shared_folder"), "{err}");
        let empty = AgentConfig {
            shared_dir: Some(PathBuf::new()),
            ..AgentConfig::default()
        };
        assert!(
            empty
                .validate()
                .expect_err("empty")
                .to_string()
                .contains("shared_dir is empty")
        );
    }
}
