//! Layered configuration: defaults < TOML file < `FLOTILLA_*` environment < command-line flags,
//! merged key by key as TOML before one typed deserialisation, remembering where each key came from
//! so `config check` can say so and an error can name the variable or flag at fault.
//!
//! An environment variable `PREFIX_SOME_KEY` sets `some_key`. Its value is read as a TOML literal
//! when it is one (`3000`, `true`, `["a", "b"]`), else as a string, else as a comma-separated list,
//! whichever the key's type accepts; an empty value unsets the key (back to its default). A variable
//! under the prefix that names no key is an error, so a typo is not silently ignored.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Where a configuration key's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Built-in default.
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env(v) => write!(f, "env {v}"),
            Self::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a configuration could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A layer holds a value the daemon cannot accept.
    #[error("{origin}: {message}")]
    Invalid {
        /// The layer at fault.
        origin: Origin,
        /// The key, when known.
        key: Option<String>,
        /// What is wrong, naming the value.
        message: String,
    },
    /// The file exists but cannot be read.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl LayerError {
    /// The key at fault, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => key.as_deref(),
            Self::Read { .. } => None,
        }
    }
}

/// Configuration keys merged from every layer so far.
#[derive(Clone, Debug, Default)]
pub struct Layered {
    table: Table,
    origins: BTreeMap<String, Origin>,
}

fn typed<T: DeserializeOwned>(table: &Table) -> Result<T, String> {
    Value::Table(table.clone())
        .try_into::<T>()
        .map_err(|e| e.to_string().trim().to_string())
}

/// The values an environment variable's text could stand for, most specific first.
fn candidates(raw: &str) -> Vec<Value> {
    let mut out = Vec::new();
    if let Ok(t) = toml::from_str::<Table>(&format!("v = {raw}"))
        && let Some(v) = t.get("v")
    {
        out.push(v.clone());
    }
    out.push(Value::String(raw.to_string()));
    out.push(Value::Array(
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_string()))
            .collect(),
    ));
    out
}

impl Layered {
    /// No keys: everything at its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// The keys of the TOML file at `path`, checked against `T` (so the error names the line). A
    /// missing file is an empty layer unless `required`.
    pub fn file<T: DeserializeOwned>(path: &Path, required: bool) -> Result<Self, LayerError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::new());
            }
            Err(source) => {
                return Err(LayerError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let origin = Origin::File(path.to_path_buf());
        let invalid = |message: String| LayerError::Invalid {
            origin: origin.clone(),
            key: None,
            message,
        };
        toml::from_str::<T>(&text).map_err(|e| invalid(e.to_string().trim().to_string()))?;
        let table = toml::from_str::<Table>(&text).map_err(|e| invalid(e.to_string()))?;
        let origins = table.keys().map(|k| (k.clone(), origin.clone())).collect();
        Ok(Self { table, origins })
    }

    /// Applies the variables under `prefix` (in name order), skipping the names in `skip` (those
    /// that are flags' variables rather than configuration keys).
    pub fn env<T: DeserializeOwned>(
        &mut self,
        prefix: &str,
        vars: impl IntoIterator<Item = (String, String)>,
        skip: &[&str],
    ) -> Result<(), LayerError> {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(prefix) && !skip.contains(&name.as_str()))
            .collect();
        vars.sort();
        for (name, raw) in vars {
            let key = name[prefix.len()..].to_ascii_lowercase();
            let origin = Origin::Env(name.clone());
            if raw.is_empty() {
                self.table.remove(&key);
                self.origins.insert(key, origin);
                continue;
            }
            let mut first_err = None;
            let mut accepted = false;
            for value in candidates(&raw) {
                let mut table = self.table.clone();
                table.insert(key.clone(), value);
                match typed::<T>(&table) {
                    Ok(_) => {
                        self.table = table;
                        accepted = true;
                        break;
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if !accepted {
                return Err(LayerError::Invalid {
                    origin,
                    key: Some(key),
                    message: first_err.unwrap_or_default(),
                });
            }
            self.origins.insert(key, origin);
        }
        Ok(())
    }

    /// Sets `key` from the command-line flag `flag` when it was given.
    pub fn flag<T: DeserializeOwned, V: Serialize>(
        &mut self,
        key: &str,
        flag: &str,
        value: Option<V>,
    ) -> Result<(), LayerError> {
        let Some(value) = value else { return Ok(()) };
        let origin = Origin::Flag(flag.to_string());
        let invalid = |message: String| LayerError::Invalid {
            origin: origin.clone(),
            key: Some(key.to_string()),
            message,
        };
        let value = Value::try_from(value).map_err(|e| invalid(e.to_string()))?;
        let mut table = self.table.clone();
        table.insert(key.to_string(), value);
        typed::<T>(&table).map_err(invalid)?;
        self.table = table;
        self.origins.insert(key.to_string(), origin);
        Ok(())
    }

    /// The typed configuration.
    pub fn build<T: DeserializeOwned>(&self) -> Result<T, LayerError> {
        typed::<T>(&self.table).map_err(|message| LayerError::Invalid {
            origin: Origin::Default,
            key: None,
            message,
        })
    }

    /// Where `key` came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// Every key set by some layer, with its origin.
    pub fn origins(&self) -> &BTreeMap<String, Origin> {
        &self.origins
    }
}

/// The key a validation message starts with (`metrics_interval_ms = 10 is below…`), if it does.
pub fn key_in_message(message: &str) -> Option<String> {
    let word = message.split_whitespace().next()?;
    word.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        .then(|| word.to_string())
}

/// An effective configuration for printing: every key (secrets masked by their own `Serialize`)
/// with its origin, as TOML with the origin in a comment, or as JSON.
pub fn describe<T: Serialize>(config: &T, layers: &Layered) -> Result<Described, String> {
    let value = Value::try_from(config).map_err(|e| e.to_string())?;
    let Value::Table(table) = value else {
        return Err("configuration is not a table".into());
    };
    let entries = table
        .into_iter()
        .map(|(key, value)| {
            let origin = layers.origin(&key);
            (key, value, origin)
        })
        .collect();
    Ok(Described { entries })
}

/// A configuration ready to print.
#[derive(Clone, Debug)]
pub struct Described {
    /// Key, effective value, origin.
    pub entries: Vec<(String, Value, Origin)>,
}

impl Described {
    /// TOML, each key followed by where it came from.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        for (key, value, origin) in &self.entries {
            let mut one = Table::new();
            one.insert(key.clone(), value.clone());
            let line = toml::to_string(&one).unwrap_or_default();
            out.push_str(&format!("{:<48} # {origin}\n", line.trim_end()));
        }
        out
    }

    /// `{ "config": {key: value}, "origins": {key: "origin"} }`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut config = serde_json::Map::new();
        let mut origins = serde_json::Map::new();
        for (key, value, origin) in &self.entries {
            config.insert(
                key.clone(),
                serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
            );
            origins.insert(key.clone(), serde_json::Value::String(origin.to_string()));
        }
        serde_json::json!({ "config": config, "origins": origins })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretString;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Conf {
        interval_ms: u32,
        name: String,
        hosts: Vec<String>,
        listen: Option<std::net::SocketAddr>,
        token: Option<SecretString>,
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_then_env_then_flag() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "interval_ms = 1000\nname = \"file\"\nhosts = [\"a\"]\n",
        )
        .expect("write");
        let mut l = Layered::file::<Conf>(&path, true).expect("file");
        l.env::<Conf>(
            "X_",
            vars(&[
                ("X_INTERVAL_MS", "2000"),
                ("X_NAME", "123"),
                ("X_HOSTS", "b, c"),
                ("X_DIR", "/skipped"),
                ("Y_NAME", "other prefix"),
            ]),
            &["X_DIR"],
        )
        .expect("env");
        l.flag::<Conf, _>("interval_ms", "--interval-ms", Some(3000u32))
            .expect("flag");
        l.flag::<Conf, u32>("name", "--name", None).expect("absent");
        let c: Conf = l.build().expect("build");
        assert_eq!(c.interval_ms, 3000, "flag beats env beats file");
        assert_eq!(c.name, "123", "a number-looking string stays a string");
        assert_eq!(c.hosts, vec!["b", "c"], "comma list");
        assert_eq!(
            l.origin("interval_ms"),
            Origin::Flag("--interval-ms".into())
        );
        assert_eq!(l.origin("name"), Origin::Env("X_NAME".into()));
        assert_eq!(l.origin("listen"), Origin::Default);
    }

    #[test]
    fn errors_name_the_variable_and_key() {
        let mut l = Layered::new();
        let err = l
            .env::<Conf>("X_", vars(&[("X_INTERVAL_MS", "soon")]), &[])
            .expect_err("bad number");
        assert_eq!(err.key(), Some("interval_ms"));
        assert!(err.to_string().starts_with("env X_INTERVAL_MS: "), "{err}");
        let err = l
            .env::<Conf>("X_", vars(&[("X_INTERVL_MS", "5")]), &[])
            .expect_err("typo");
        assert!(
            err.to_string().contains("unknown field `intervl_ms`"),
            "{err}"
        );
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "interval_ms = \"x\"\n").expect("write");
        let err = Layered::file::<Conf>(&path, true).expect_err("bad file");
        assert!(err.to_string().contains("interval_ms"), "{err}");
        assert!(Layered::file::<Conf>(&dir.path().join("none"), false).is_ok());
        assert!(matches!(
            Layered::file::<Conf>(&dir.path().join("none"), true),
            Err(LayerError::Read { .. })
        ));
    }

    #[test]
    fn empty_env_unsets_and_secrets_print_masked() {
        let mut l = Layered::new();
        l.env::<Conf>(
            "X_",
            vars(&[("X_LISTEN", "127.0.0.1:9"), ("X_TOKEN", "flt1_secret")]),
            &[],
        )
        .expect("env");
        let c: Conf = l.build().expect("build");
        assert_eq!(
            c.token.as_ref().map(SecretString::expose),
            Some("flt1_secret")
        );
        let shown = describe(&c, &l).expect("describe");
        let text = shown.to_toml();
        assert!(text.contains("token = \"***\""), "{text}");
        assert!(!text.contains("flt1_secret"), "{text}");
        assert!(!shown.to_json().to_string().contains("flt1_secret"));
        l.env::<Conf>("X_", vars(&[("X_LISTEN", "")]), &[])
            .expect("unset");
        assert_eq!(l.build::<Conf>().expect("build").listen, None);
    }
}
