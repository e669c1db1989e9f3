//! Error codes sent to peers and used as QUIC application close codes.
//!
//! The hub logs the detail and sends only a code plus a safe message: database and IO internals never
//! reach a peer.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a request, stream or connection was refused. Append-only: the numbers are on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Clean close, no error.
    Ok,
    /// The peers speak different protocol versions.
    VersionMismatch,
    /// The peer sent bytes that do not decode as the expected message.
    Malformed,
    /// A frame's length exceeds the limit of its stream kind.
    TooLarge,
    /// The identity's certificate was revoked.
    Revoked,
    /// The certificate is from our CA but the identity is not in the registry.
    UnknownIdentity,
    /// The identity's role does not allow this request.
    Forbidden,
    /// The join token is unknown, tampered with or deleted.
    BadToken,
    /// The join token's time to live has passed.
    TokenExpired,
    /// The join token has no uses left.
    TokenUsedUp,
    /// The named agent, token or job does not exist.
    NotFound,
    /// The request is well-formed but makes no sense (bad selector, bad CSR).
    BadRequest,
    /// A newer connection of the same identity replaced this one.
    Replaced,
    /// The hub is shutting down; reconnect later.
    ShuttingDown,
    /// The peer took too long.
    Timeout,
    /// Something failed on the hub; the detail is in the hub's log.
    Internal,
    /// The agent is shutting down cleanly.
    Goodbye,
    /// The operator cancelled the work this stream carried (a transfer); clean up, do not retry.
    Cancelled,
    /// The receiving side of a transfer ran out of room (full disk, quota or file-size limit). Its
    /// `Failed` frame names the agent and file; retrying cannot help until room is made.
    NoSpace,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [Self; 19] = [
        Self::Ok,
        Self::VersionMismatch,
        Self::Malformed,
        Self::TooLarge,
        Self::Revoked,
        Self::UnknownIdentity,
        Self::Forbidden,
        Self::BadToken,
        Self::TokenExpired,
        Self::TokenUsedUp,
        Self::NotFound,
        Self::BadRequest,
        Self::Replaced,
        Self::ShuttingDown,
        Self::Timeout,
        Self::Internal,
        Self::Goodbye,
        Self::Cancelled,
        Self::NoSpace,
    ];

    /// The QUIC application error code for this error.
    pub fn as_u32(self) -> u32 {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0) as u32
    }

    /// Reads a QUIC application error code; unknown numbers (a newer peer) become `None`.
    pub fn from_u32(n: u64) -> Option<Self> {
        usize::try_from(n)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// Words a sysadmin can act on.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::VersionMismatch => "protocol version mismatch",
            Self::Malformed => "malformed message",
            Self::TooLarge => "message too large",
            Self::Revoked => "certificate revoked",
            Self::UnknownIdentity => "unknown identity: not in this hub's registry",
            Self::Forbidden => "forbidden for this role",
            Self::BadToken => "invalid join token",
            Self::TokenExpired => "join token expired",
            Self::TokenUsedUp => "join token has no uses left",
            Self::NotFound => "not found",
            Self::BadRequest => "bad request",
            Self::Replaced => "replaced by a newer connection of the same identity",
            Self::ShuttingDown => "hub shutting down",
            Self::Timeout => "timed out",
            Self::Internal => "internal hub error (see the hub's log)",
            Self::Goodbye => "clean shutdown",
            Self::Cancelled => "cancelled by the operator",
            Self::NoSpace => "no space left at the destination",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The reason a stopping hub closes agents' connections with, [`ErrorCode::ShuttingDown`]: words
/// for the log, and the window over which the hub asks its agents to spread their reconnects so
/// that a restart of a hub with thousands of agents does not become a thundering herd. The window
/// travels in the text because a close frame carries only a code and a reason.
pub fn shutdown_reason(reconnect_within_ms: u32) -> String {
    format!(
        "{}; reconnect within {reconnect_within_ms} ms",
        ErrorCode::ShuttingDown.describe()
    )
}

/// The reconnect window of a [`shutdown_reason`], if `reason` is one.
pub fn reconnect_within_ms(reason: &str) -> Option<u32> {
    reason
        .rsplit_once("; reconnect within ")?
        .1
        .strip_suffix(" ms")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reconnect_window_survives_the_close_reason() {
        let reason = shutdown_reason(4_200);
        assert!(reason.starts_with("hub shutting down"), "{reason}");
        assert_eq!(reconnect_within_ms(&reason), Some(4_200));
        assert_eq!(reconnect_within_ms("hub shutting down"), None);
        assert_eq!(reconnect_within_ms("x; reconnect within lots ms"), None);
    }

    #[test]
    fn codes_round_trip_through_numbers() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u32(u64::from(c.as_u32())), Some(c));
        }
        assert_eq!(
            ErrorCode::Revoked.as_u32(),
            4,
            "close codes are on the wire: append only"
        );
        assert_eq!(ErrorCode::from_u32(1000), None);
    }

    #[test]
    fn the_newest_codes_keep_their_numbers_and_bytes() {
        assert_eq!(ErrorCode::Cancelled.as_u32(), 17);
        assert_eq!(ErrorCode::NoSpace.as_u32(), 18);
        assert_eq!(
            postcard::to_stdvec(&ErrorCode::NoSpace).expect("encode"),
            [18]
        );
        assert_eq!(
            postcard::from_bytes::<ErrorCode>(&[18]).expect("decode"),
            ErrorCode::NoSpace
        );
    }
}
