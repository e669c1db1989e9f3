//! Shared folders from the console: `flotilla ls`, `flotilla watch --files` and `flotilla cp`.
//!
//! A copy's ends are each `AGENT:PATH` or a local path (upload, download, agent to agent). Each file
//! is one transfer with an id chosen here and kept across retries: when the hub, an agent or this
//! console's link drops, [`copy`] reconnects and asks again, and the destination resumes from the
//! bytes it already holds once the source has checked them. Ctrl-C cancels: both ends drop the
//! partial file.

mod copy;
mod listing;
mod local;
pub mod progress;
mod watch;

pub use crate::util::utc_minute;
pub use copy::{CopyEvent, CopyOptions, CopyReport, copy};
pub use listing::{Listing, list, listing_table, mode_string};
pub use watch::{event_line, next_event, watch_stream};

use crate::client::ClientError;
use flotilla_wire::files::TransferError;
use std::path::PathBuf;

/// One side of a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// `AGENT:PATH`: a path in an agent's shared folder.
    Agent {
        /// Agent name or id.
        agent: String,
        /// Path relative to its shared folder (empty: the folder itself).
        path: String,
    },
    /// A path on this machine.
    Local(PathBuf),
}

impl Place {
    /// `AGENT:PATH` when the part before the first `:` names an agent (no `/` in it), else a local
    /// path (write `./a:b` for a local file with a colon, as with scp).
    pub fn parse(s: &str) -> Self {
        match s.split_once(':') {
            Some((agent, path)) if !agent.is_empty() && !agent.contains('/') => Self::Agent {
                agent: agent.to_owned(),
                path: path.to_owned(),
            },
            _ => Self::Local(PathBuf::from(s)),
        }
    }

    fn label(&self) -> String {
        match self {
            Self::Agent { agent, path } => format!("{agent}:{path}"),
            Self::Local(p) => p.display().to_string(),
        }
    }

    fn join(&self, name: &str) -> Self {
        match self {
            Self::Agent { agent, path } => Self::Agent {
                agent: agent.clone(),
                path: join_rel(path, name),
            },
            Self::Local(p) => Self::Local(p.join(name)),
        }
    }

    fn basename(&self) -> Option<String> {
        match self {
            Self::Agent { path, .. } => path
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            Self::Local(p) => p.file_name().and_then(|n| n.to_str()).map(str::to_owned),
        }
    }
}

fn join_rel(dir: &str, name: &str) -> String {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Why a copy, listing or watch failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The hub could not be reached, or refused the request.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A transfer failed (the message names the agent and path).
    #[error("{0}")]
    Transfer(TransferError),
    /// A local file operation failed.
    #[error("{0}")]
    Local(String),
    /// The command line asked for something that cannot be done.
    #[error("{0}")]
    Usage(String),
    /// Ctrl-C.
    #[error("cancelled")]
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_parse_like_scp() {
        assert_eq!(
            Place::parse("web-1:docs/a.txt"),
            Place::Agent {
                agent: "web-1".into(),
                path: "docs/a.txt".into()
            }
        );
        assert_eq!(
            Place::parse("web-1:"),
            Place::Agent {
                agent: "web-1".into(),
                path: "".into()
            }
        );
        assert_eq!(Place::parse("./a:b"), Place::Local("./a:b".into()));
        assert_eq!(Place::parse("/tmp/x"), Place::Local("/tmp/x".into()));
        assert_eq!(Place::parse(":x"), Place::Local(":x".into()));
        assert_eq!(
            Place::parse("web-1:dir/").basename(),
            Some("dir".to_string())
        );
        assert_eq!(Place::parse("web-1:").join("f"), Place::parse("web-1:f"));
    }
}
