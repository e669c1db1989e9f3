//! The agent's effective configuration: `agent.toml` < `FLOTILLA_AGENT_*` environment < flags,
//! worked out once at start-up (and by `agentd config check`, which prints it with its origins and
//! the token masked).

use crate::{AgentConfig, AgentError};
use deploy::{Daemon, LayerError, Layered, SecretString};
use std::path::{Path, PathBuf};

/// Environment variables under the prefix that are flags' (paths), not configuration keys.
pub const NOT_CONFIG_KEYS: &[&str] = &["FLOTILLA_AGENT_DIR", "FLOTILLA_AGENT_CONFIG"];

/// Values given on the command line, which win over file and environment.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--metrics-interval-ms`.
    pub metrics_interval_ms: Option<u32>,
    /// `--token` (or its variable `FLOTILLA_TOKEN`).
    pub token: Option<SecretString>,
}

/// A resolved configuration with where each key came from.
#[derive(Clone, Debug)]
pub struct Effective {
    /// The configuration.
    pub config: AgentConfig,
    /// The layers, for origins.
    pub layers: Layered,
    /// The file read (it may not exist).
    pub file: PathBuf,
    /// Problems worth a warning that do not stop the agent.
    pub warnings: Vec<String>,
}

/// A configuration error: which key (when known) and the message naming the value.
#[derive(Debug)]
pub struct Invalid {
    /// The key at fault.
    pub key: Option<String>,
    /// The whole error.
    pub error: AgentError,
}

impl From<Invalid> for AgentError {
    fn from(i: Invalid) -> Self {
        i.error
    }
}

fn layer_error(e: LayerError) -> Invalid {
    let key = e.key().map(str::to_string);
    let error = match e {
        LayerError::Read { path, source } => AgentError::Io {
            context: format!("read {}", path.display()),
            source,
        },
        other => AgentError::Config(other.to_string()),
    };
    Invalid { key, error }
}

/// Resolves the configuration from `file` (required when `explicit`), `env` and `flags`, and
/// validates it.
pub fn resolve(
    file: &Path,
    explicit: bool,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &Flags,
) -> Result<Effective, Invalid> {
    let mut layers = Layered::file::<AgentConfig>(file, explicit).map_err(layer_error)?;
    layers
        .env::<AgentConfig>(Daemon::Agent.env_prefix(), env, NOT_CONFIG_KEYS)
        .map_err(layer_error)?;
    layers
        .flag::<AgentConfig, _>(
            "metrics_interval_ms",
            "--metrics-interval-ms",
            flags.metrics_interval_ms,
        )
        .map_err(layer_error)?;
    layers
        .flag::<AgentConfig, _>(
            "token",
            "--token",
            flags.token.as_ref().map(|t| t.expose().to_string()),
        )
        .map_err(layer_error)?;
    let config: AgentConfig = layers.build().map_err(layer_error)?;
    if let Err(error) = config.validate() {
        let key = match &error {
            AgentError::Config(m) => deploy::layered::key_in_message(m),
            _ => None,
        };
        return Err(Invalid { key, error });
    }
    let mut warnings = Vec::new();
    if config.token.is_some() && layers.origin("token") == deploy::Origin::File(file.into()) {
        warnings.extend(loose_mode_warning(file));
    }
    Ok(Effective {
        config,
        layers,
        file: file.to_path_buf(),
        warnings,
    })
}

/// [`template`] with `token` set, for `agentd install --enrol-at-start`.
pub fn template_with_token(token: &str) -> String {
    let quoted = toml::Value::String(token.to_string()).to_string();
    format!("{}token = {quoted}\n", template())
}

#[cfg(unix)]
fn loose_mode_warning(file: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
    (mode & 0o007 != 0).then(|| {
        format!(
            "{} holds a join token and is readable by everyone (mode {mode:o}): chmod 0640 it",
            file.display()
        )
    })
}

#[cfg(not(unix))]
fn loose_mode_warning(_file: &Path) -> Option<String> {
    None
}

/// The text `agentd install` writes when there is no configuration yet.
pub fn template() -> String {
    "# Flotilla agent configuration. Every key can also be set with FLOTILLA_AGENT_<KEY>\n\
     # (environment) or a flag; `agentd config check` shows the result and where each key\n\
     # came from. See docs/deploy.md.\n\
     \n\
     # Metrics interval in milliseconds when nobody watches this machine; 0: as the hub says.\n\
     # metrics_interval_ms = 0\n\
     \n\
     # Join token, only used while this machine is not enrolled (agentd run enrols with it).\n\
     # Keep this file 0640 if you set it.\n\
     # token = \"flt1_...\"\n"
        .to_string()
}

/// `agentd config check`: prints the effective configuration (TOML with each key's origin, or
/// JSON) and exits 0, or names the bad key and exits 2 (1 if the file cannot be read).
pub fn check(
    file: &Path,
    explicit: bool,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &Flags,
    json: bool,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    match resolve(file, explicit, env, flags) {
        Ok(e) => {
            let described = match deploy::layered::describe(&e.config, &e.layers) {
                Ok(d) => d,
                Err(msg) => {
                    eprintln!("agentd: {msg}");
                    return ExitCode::FAILURE;
                }
            };
            if json {
                let mut out = described.to_json();
                out["ok"] = true.into();
                out["file"] = e.file.display().to_string().into();
                out["file_exists"] = e.file.exists().into();
                out["warnings"] = e.warnings.clone().into();
                println!("{out:#}");
            } else {
                let state = if e.file.exists() {
                    ""
                } else {
                    " (not found: defaults)"
                };
                println!("# {}{state}", e.file.display());
                print!("{}", described.to_toml());
                for w in &e.warnings {
                    eprintln!("agentd: warning: {w}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(Invalid { key, error }) => {
            let code = match error {
                AgentError::Config(_) => 2,
                _ => 1,
            };
            if json {
                let out = serde_json::json!({
                    "ok": false,
                    "error": { "key": key, "message": error.to_string() },
                });
                println!("{out:#}");
            }
            eprintln!("agentd: {error}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn template_parses_and_precedence_is_file_env_flag() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, template()).expect("write");
        let e = resolve(&file, true, env(&[]), &Flags::default()).expect("template");
        assert_eq!(e.config, AgentConfig::default());
        std::fs::write(&file, template_with_token("flt1_a\"b")).expect("write");
        let e = resolve(&file, true, env(&[]), &Flags::default()).expect("with token");
        assert_eq!(
            e.config.token.as_ref().map(|t| t.expose()),
            Some("flt1_a\"b")
        );
        std::fs::write(&file, "metrics_interval_ms = 2000\n").expect("write");
        let e = resolve(
            &file,
            true,
            env(&[
                ("FLOTILLA_AGENT_METRICS_INTERVAL_MS", "3000"),
                ("FLOTILLA_AGENT_DIR", "/ignored"),
            ]),
            &Flags::default(),
        )
        .expect("env");
        assert_eq!(e.config.metrics_interval_ms, 3000);
        let e = resolve(
            &file,
            true,
            env(&[("FLOTILLA_AGENT_METRICS_INTERVAL_MS", "3000")]),
            &Flags {
                metrics_interval_ms: Some(4000),
                token: None,
            },
        )
        .expect("flag");
        assert_eq!(e.config.metrics_interval_ms, 4000);
        let bad = resolve(
            &file,
            true,
            env(&[("FLOTILLA_AGENT_METRICS_INTERVAL_MS", "10")]),
            &Flags::default(),
        )
        .expect_err("too small");
        assert_eq!(bad.key.as_deref(), Some("metrics_interval_ms"));
        assert!(matches!(bad.error, AgentError::Config(_)));
        let missing = resolve(
            &dir.path().join("none.toml"),
            true,
            env(&[]),
            &Flags::default(),
        )
        .expect_err("explicit file must exist");
        assert!(matches!(missing.error, AgentError::Io { .. }));
    }
}
