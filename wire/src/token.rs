//! The body of a join token. `certs` wraps it in text and keeps its secrecy; this module pins its bytes.

use serde::{Deserialize, Serialize};

/// What a join token carries: enough for a machine with nothing but the token to find the hub, pin its
/// CA and prove it may enrol.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenBody {
    /// Hub addresses to try, `host:port`.
    pub hubs: Vec<String>,
    /// SHA-256 of the fleet CA certificate.
    pub ca_fingerprint: [u8; 32],
    /// Public id of the token (looks up its hash on the hub).
    pub token_id: String,
    /// The secret: 256 random bits.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for JoinTokenBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTokenBody")
            .field("hubs", &self.hubs)
            .field("token_id", &self.token_id)
            .field("secret", &"***")
            .finish_non_exhaustive()
    }
}

/// Encodes the body to bytes.
pub fn encode_token_body(body: &JoinTokenBody) -> Vec<u8> {
    postcard::to_stdvec(body).unwrap_or_default()
}

/// Decodes bytes to a body, refusing trailing bytes.
pub fn decode_token_body(bytes: &[u8]) -> Result<JoinTokenBody, crate::DecodeError> {
    crate::decode_body(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_body_round_trips_and_hides_secret() {
        let body = JoinTokenBody {
            hubs: vec!["127.0.0.1:4433".into()],
            ca_fingerprint: [1; 32],
            token_id: "abcd".into(),
            secret: [2; 32],
        };
        let bytes = encode_token_body(&body);
        assert_eq!(decode_token_body(&bytes).expect("decode"), body);
        assert!(!format!("{body:?}").contains("2, 2"));
        let mut longer = bytes;
        longer.push(0);
        assert!(decode_token_body(&longer).is_err());
    }
}
