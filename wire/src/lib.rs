//! Flotilla's wire protocol: every message type, the framing, per-stream limits, ids and close codes.
//!
//! This crate does no IO beyond the framing helpers in [`io`] (feature `io`): the daemons and the
//! console share one vocabulary, and golden-byte tests pin it. postcard encodes enum variants by index,
//! so every enum here is append-only; a changed field means a new variant and a [`PROTOCOL_VERSION`] bump.

pub mod aggregate;
pub mod alerts;
mod chunk;
pub mod codes;
pub mod exec;
pub mod files;
pub mod frame;
pub mod history;
pub mod host;
pub mod ids;
#[cfg(feature = "io")]
pub mod io;
pub mod limits;
pub mod msg;
pub mod sessions;
pub mod shell;
pub mod text;
pub mod token;
pub mod workloads;

pub use chunk::Chunk;
pub use codes::ErrorCode;
pub use frame::{DecodeError, EncodeError, decode, decode_body, encode};
pub use ids::{IdentityId, Role};
pub use limits::StreamKind;

/// Version of the message set below; a peer speaking another one is refused with both numbers named.
pub const PROTOCOL_VERSION: u16 = 1;

/// ALPN identifier: a TLS peer that is not Flotilla fails the handshake instead of sending garbage.
pub const ALPN: &[u8] = b"flotilla/1";

/// Server name every client asks for: the hub certificate always carries it, so agents can dial the hub
/// by IP address or any DNS name without the certificate having to list each one.
pub const HUB_SERVER_NAME: &str = "flotilla-hub";

/// Default UDP port of the hub.
pub const DEFAULT_PORT: u16 = 4433;
