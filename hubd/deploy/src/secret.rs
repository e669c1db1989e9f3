//! A secret read from configuration (a join token): it prints and serialises as `***`, so printing
//! an effective configuration or logging a config struct cannot leak it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// What a secret prints as.
const MASK: &str = "***";

/// A secret string. `Debug`, `Display` and `Serialize` all give `***`; [`SecretString::expose`] is
/// the one way to the text, so every use of it is easy to find.
#[derive(Clone, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret itself: hand it to the code that needs it, never to a formatter.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl PartialEq for SecretString {
    /// Constant time in the position of the first difference.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for SecretString {}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = SecretString::new("flt1_topsecret");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(
            serde_json::to_string(&s).expect("json"),
            "\"***\"",
            "serialising masks too"
        );
        let back: SecretString = serde_json::from_str("\"flt1_topsecret\"").expect("de");
        assert_eq!(back, s);
        assert_eq!(back.expose(), "flt1_topsecret");
        assert_ne!(back, SecretString::new("flt1_topsecreT"));
    }
}
