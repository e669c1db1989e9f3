//! Join tokens: `flt1_` then base64url of the body. Self-contained (hub addresses, CA fingerprint,
//! id, secret), single- or few-use, hashed on the hub.

use crate::Fingerprint;
use base64::Engine;
use flotilla_wire::token::{JoinTokenBody, decode_token_body, encode_token_body};
use std::fmt;

/// Text prefix: says what the string is and its format version.
const TOKEN_PREFIX: &str = "flt1_";
/// 256 bits of secret: far above the 128-bit floor, costs nothing.
const SECRET_LEN: usize = 32;
/// Random bytes in a token id: 64 bits tell tokens apart; the id is public and never a credential.
const ID_BYTES: usize = 8;

/// Why a token string cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// It does not start with `flt1_`.
    #[error("not a Flotilla join token (expected it to start with {TOKEN_PREFIX})")]
    Prefix,
    /// The text after the prefix is damaged.
    #[error("join token is damaged (truncated or altered): {0}")]
    Damaged(String),
    /// It lists no hub address.
    #[error("join token names no hub address")]
    NoHub,
}

/// A secret whose `Debug`/`Display` print `***` and whose comparison takes constant time.
#[derive(Clone)]
pub struct TokenSecret(pub [u8; SECRET_LEN]);

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A parsed join token.
#[derive(Clone, Debug)]
pub struct JoinToken {
    /// Hub addresses, `host:port`.
    pub hubs: Vec<String>,
    /// The fleet CA the hub must present.
    pub ca_fingerprint: Fingerprint,
    /// Public id.
    pub id: String,
    /// The secret.
    pub secret: TokenSecret,
}

/// Fills `N` bytes from the operating system's generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    // SystemRandom only fails if the OS has no entropy source, in which case nothing here is safe.
    if ring::rand::SystemRandom::new().fill(&mut out).is_err() {
        panic!("operating system random generator unavailable");
    }
    out
}

/// SHA-256 of a secret: what the hub stores instead of the secret.
pub fn hash_secret(secret: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, secret)
        .as_ref()
        .to_vec()
}

/// Compares two byte strings in time independent of where they differ.
pub fn secrets_match(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl JoinToken {
    /// A new token for `hubs` pinning `ca`, with a fresh id and secret.
    pub fn generate(hubs: Vec<String>, ca: Fingerprint) -> Self {
        let id: String = random_bytes::<ID_BYTES>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self {
            hubs,
            ca_fingerprint: ca,
            id,
            secret: TokenSecret(random_bytes()),
        }
    }

    /// Whether `id` has the shape of the ids [`JoinToken::generate`] makes (lowercase hex of
    /// 8 bytes). What a peer claims as a token id is checked with this before it is logged or looked
    /// up, so a forged id cannot carry a newline or a terminal escape into the hub's log.
    pub fn is_valid_id(id: &str) -> bool {
        id.len() == 2 * ID_BYTES && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// The hash the hub stores.
    pub fn secret_hash(&self) -> Vec<u8> {
        hash_secret(&self.secret.0)
    }

    /// The text handed to a new machine. This is the secret: never log it.
    pub fn encode(&self) -> String {
        let body = JoinTokenBody {
            hubs: self.hubs.clone(),
            ca_fingerprint: self.ca_fingerprint.0,
            token_id: self.id.clone(),
            secret: self.secret.0,
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(encode_token_body(&body));
        format!("{TOKEN_PREFIX}{b64}")
    }

    /// Parses a token string (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let rest = text
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::Prefix)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(rest)
            .map_err(|e| TokenError::Damaged(e.to_string()))?;
        let body = decode_token_body(&bytes).map_err(|e| TokenError::Damaged(e.to_string()))?;
        if body.hubs.is_empty() {
            return Err(TokenError::NoHub);
        }
        Ok(Self {
            hubs: body.hubs,
            ca_fingerprint: Fingerprint(body.ca_fingerprint),
            id: body.token_id,
            secret: TokenSecret(body.secret),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_round_trips() {
        let t = JoinToken::generate(vec!["127.0.0.1:4433".into()], Fingerprint([5; 32]));
        let text = t.encode();
        assert!(text.starts_with("flt1_"));
        let back = JoinToken::parse(&format!("  {text}\n")).expect("parse");
        assert_eq!(back.id, t.id);
        assert_eq!(back.secret.0, t.secret.0);
        assert_eq!(back.ca_fingerprint, t.ca_fingerprint);
        assert!(JoinToken::is_valid_id(&t.id));
        for bad in [
            "",
            "0123456789abcdeF",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123\n56789abcdef",
        ] {
            assert!(!JoinToken::is_valid_id(bad), "{bad:?}");
        }
        assert!(!format!("{back:?}").contains(&text[10..20]));
    }

    #[test]
    fn damaged_tokens_are_refused_specifically() {
        let text = JoinToken::generate(vec!["h:1".into()], Fingerprint([0; 32])).encode();
        assert_eq!(JoinToken::parse("hello").err(), Some(TokenError::Prefix));
        assert!(matches!(
            JoinToken::parse(&text[..text.len() - 10]),
            Err(TokenError::Damaged(_))
        ));
        assert!(matches!(
            JoinToken::parse(&format!("{text}!!")),
            Err(TokenError::Damaged(_))
        ));
        let none = JoinToken::generate(vec![], Fingerprint([0; 32])).encode();
        assert_eq!(JoinToken::parse(&none).err(), Some(TokenError::NoHub));
    }

    #[test]
    fn secret_comparison() {
        assert!(secrets_match(&hash_secret(b"a"), &hash_secret(b"a")));
        assert!(!secrets_match(&hash_secret(b"a"), &hash_secret(b"b")));
        assert!(!secrets_match(b"ab", b"abc"));
        assert_eq!(format!("{}", TokenSecret([1; 32])), "***");
    }
}
