//! The hub's effective configuration: `hub.toml` < `FLOTILLA_HUB_*` environment < flags, worked
//! out at start-up and again at SIGHUP (with the environment and flags of the start), and printed
//! by `hubd config check`.

use crate::{HubConfig, HubError};
use deploy::{Daemon, LayerError, Layered};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Variables under the prefix that are not configuration keys.
pub const NOT_CONFIG_KEYS: &[&str] = &["FLOTILLA_HUB_CONFIG"];

/// Values given on the command line.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
}

/// Everything needed to work the configuration out again (SIGHUP).
#[derive(Clone, Debug)]
pub struct Source {
    /// The file.
    pub file: PathBuf,
    /// The environment at start-up.
    pub env: Vec<(String, String)>,
    /// The flags.
    pub flags: Flags,
}

/// A resolved configuration with where each key came from.
#[derive(Clone, Debug)]
pub struct Effective {
    /// The configuration.
    pub config: HubConfig,
    /// The layers, for origins.
    pub layers: Layered,
}

/// A configuration error, with the key when known.
#[derive(Debug)]
pub struct Invalid {
    /// The key at fault.
    pub key: Option<String>,
    /// The error (`HubError::Config` for a bad value, `HubError::Io` for an unreadable file).
    pub error: HubError,
}

impl From<Invalid> for HubError {
    fn from(i: Invalid) -> Self {
        i.error
    }
}

fn layer_error(e: LayerError) -> Invalid {
    let key = e.key().map(str::to_string);
    let error = match e {
        LayerError::Read { path, source } => HubError::io(
            format!("read {} (run `hubd init` first?)", path.display()),
            source,
        ),
        other => HubError::Config(other.to_string()),
    };
    Invalid { key, error }
}

impl Source {
    /// Resolves and validates.
    pub fn resolve(&self) -> Result<Effective, Invalid> {
        let mut layers = Layered::file::<HubConfig>(&self.file, true).map_err(layer_error)?;
        layers
            .env::<HubConfig>(
                Daemon::Hub.env_prefix(),
                self.env.iter().cloned(),
                NOT_CONFIG_KEYS,
            )
            .map_err(layer_error)?;
        layers
            .flag::<HubConfig, _>("listen", "--listen", self.flags.listen)
            .map_err(layer_error)?;
        layers
            .flag::<HubConfig, _>(
                "metrics_listen",
                "--metrics-listen",
                self.flags.metrics_listen,
            )
            .map_err(layer_error)?;
        // An empty or truncated file would otherwise mean the default 0.0.0.0:4433: a hub exposed
        // on every interface by accident. The address must be said somewhere.
        if layers.origin("listen") == deploy::layered::Origin::Default {
            return Err(Invalid {
                key: Some("listen".into()),
                error: HubError::Config(format!(
                    "{} sets no `listen` address (empty or truncated?): add e.g. listen = \"0.0.0.0:{}\", or pass --listen",
                    self.file.display(),
                    flotilla_wire::DEFAULT_PORT
                )),
            });
        }
        let config: HubConfig = layers.build().map_err(layer_error)?;
        if let Err(error) = config.validate() {
            let key = match &error {
                HubError::Config(m) => deploy::layered::key_in_message(m),
                _ => None,
            };
            return Err(Invalid { key, error });
        }
        Ok(Effective { config, layers })
    }
}

/// `hubd config check`: prints the effective configuration and exits 0, or names the bad key and
/// exits 2 (1 when the file cannot be read).
pub fn check(source: &Source, json: bool) -> std::process::ExitCode {
    use std::process::ExitCode;
    match source.resolve() {
        Ok(e) => {
            let described = match deploy::layered::describe(&e.config, &e.layers) {
                Ok(d) => d,
                Err(msg) => {
                    eprintln!("hubd: {msg}");
                    return ExitCode::FAILURE;
                }
            };
            if json {
                let mut out = described.to_json();
                out["ok"] = true.into();
                out["file"] = source.file.display().to_string().into();
                println!("{out:#}");
            } else {
                println!("# {}", source.file.display());
                print!("{}", described.to_toml());
            }
            ExitCode::SUCCESS
        }
        Err(Invalid { key, error }) => {
            let code = if matches!(error, HubError::Config(_)) {
                2
            } else {
                1
            };
            if json {
                let out = serde_json::json!({
                    "ok": false,
                    "error": { "key": key, "message": error.to_string() },
                });
                println!("{out:#}");
            }
            eprintln!("hubd: {error}");
            ExitCode::from(code)
        }
    }
}

/// The file `hubd init` leaves in a data directory, moved to `config_file` when that is elsewhere
/// (the system layout keeps configuration in /etc); an existing `config_file` wins and the data
/// directory's copy is removed so that only one configuration exists.
pub fn settle_config_file(data_dir: &Path, config_file: &Path) -> Result<(), HubError> {
    let in_data = data_dir.join(crate::config::CONFIG_FILE);
    if in_data == config_file || !in_data.exists() {
        return Ok(());
    }
    if config_file.exists() {
        return std::fs::remove_file(&in_data)
            .map_err(|e| HubError::io(format!("remove {}", in_data.display()), e));
    }
    let text = std::fs::read(&in_data)
        .map_err(|e| HubError::io(format!("read {}", in_data.display()), e))?;
    deploy::files::write_atomic(config_file, &text, 0o640)
        .map_err(|e| HubError::io(format!("write {}", config_file.display()), e.source))?;
    std::fs::remove_file(&in_data)
        .map_err(|e| HubError::io(format!("remove {}", in_data.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_named_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("hub.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1000\"\nmetrics_interval_ms = 2000\n",
        )
        .expect("write");
        let mut source = Source {
            file: file.clone(),
            env: vec![
                ("FLOTILLA_HUB_LISTEN".into(), "127.0.0.1:2000".into()),
                (
                    "FLOTILLA_HUB_ADVERTISE".into(),
                    "hub.example,10.0.0.1".into(),
                ),
                ("FLOTILLA_HUB_CONFIG".into(), "/ignored".into()),
            ],
            flags: Flags::default(),
        };
        let e = source.resolve().expect("env");
        assert_eq!(e.config.listen.port(), 2000);
        assert_eq!(e.config.advertise, ["hub.example", "10.0.0.1"]);
        assert_eq!(e.config.metrics_interval_ms, 2000);
        source.flags.listen = Some("127.0.0.1:3000".parse().expect("addr"));
        assert_eq!(source.resolve().expect("flag").config.listen.port(), 3000);
        source.env = vec![("FLOTILLA_HUB_IDLE_TIMEOUT_S".into(), "1".into())];
        let bad = source.resolve().expect_err("too small");
        assert_eq!(bad.key.as_deref(), Some("idle_timeout_s"));
        source.env = vec![("FLOTILLA_HUB_LOG_LEVEL".into(), "debug,quinn=shouty".into())];
        assert_eq!(
            source.resolve().expect_err("bad filter").key.as_deref(),
            Some("log_level")
        );
    }

    #[test]
    fn init_config_moves_out_of_the_data_dir() {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        std::fs::write(data.join("hub.toml"), "max_handshakes = 9\n").expect("write");
        let etc = dir.path().join("etc/hub.toml");
        settle_config_file(&data, &etc).expect("move");
        assert!(!data.join("hub.toml").exists());
        assert_eq!(
            std::fs::read_to_string(&etc).expect("read"),
            "max_handshakes = 9\n"
        );
    }
}
