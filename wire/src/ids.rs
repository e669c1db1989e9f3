//! Identity newtypes and roles shared by certificates, the hub registry and the console.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable id of an enrolled identity (agent or operator), minted by the hub at enrolment and carried in
/// the certificate. Shared text (`Arc<str>`): the hub and the console copy ids into maps and sorted
/// views thousands of times a second, and a clone is then a reference count, not an allocation. Agents start with `a-`, operators with `o-`, so a log line says which it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdentityId(std::sync::Arc<str>);

impl TryFrom<String> for IdentityId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or_else(|| format!("malformed identity id {s:?}"))
    }
}

impl From<IdentityId> for String {
    fn from(id: IdentityId) -> Self {
        id.0.to_string()
    }
}

/// Number of random hex digits after the prefix: 64 bits make a collision in a 100,000-agent fleet
/// vanishingly unlikely while keeping ids short enough to type.
pub const ID_HEX_DIGITS: usize = 16;

impl IdentityId {
    /// Wraps an id read from a trusted place (certificate, database) after checking its shape.
    pub fn parse(s: &str) -> Option<Self> {
        let (prefix, hex) = s.split_at_checked(2)?;
        let ok_prefix = prefix == "a-" || prefix == "o-";
        let ok_hex = hex.len() == ID_HEX_DIGITS
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        (ok_prefix && ok_hex).then(|| Self(s.into()))
    }

    /// Builds an id for `role` from 8 random bytes supplied by the caller (wire owns no randomness).
    pub fn from_random(role: Role, bytes: [u8; 8]) -> Self {
        let prefix = if role == Role::Agent { "a-" } else { "o-" };
        let mut s = String::with_capacity(2 + ID_HEX_DIGITS);
        s.push_str(prefix);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        Self(s.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an identity may do. Enforced by the hub on every request, never by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A machine running agentd: reports metrics, runs what it is asked within its own policy.
    Agent,
    /// Reads fleet state; cannot exec, copy or manage.
    Viewer,
    /// Reads and acts: exec, transfers.
    Operator,
    /// Operator plus tokens and revocations.
    Admin,
}

impl Role {
    /// Every role, in the order the CLI lists them.
    pub const ALL: [Self; 4] = [Self::Agent, Self::Viewer, Self::Operator, Self::Admin];

    /// Lowercase name used on the command line, in certificates and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// Parses [`Role::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role uses the operator API at all (everything but agents).
    pub fn is_operator_kind(self) -> bool {
        self != Self::Agent
    }

    /// Whether this role may run commands and transfers.
    pub fn can_act(self) -> bool {
        matches!(self, Self::Operator | Self::Admin)
    }

    /// Whether this role may manage tokens and revocations.
    pub fn can_admin(self) -> bool {
        self == Self::Admin
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_shape_is_checked() {
        let id = IdentityId::from_random(Role::Agent, [0xab; 8]);
        assert_eq!(id.as_str(), "a-abababababababab");
        assert_eq!(IdentityId::parse(id.as_str()), Some(id));
        assert_eq!(IdentityId::parse("a-ABABABABABABABAB"), None);
        assert_eq!(IdentityId::parse("x-abababababababab"), None);
        assert_eq!(IdentityId::parse("a-abab"), None);
        assert_eq!(IdentityId::parse("a-../../etc/passwd00"), None);
        assert!(
            IdentityId::from_random(Role::Viewer, [1; 8])
                .as_str()
                .starts_with("o-")
        );
    }

    #[test]
    fn roles_round_trip_and_rank() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert!(!Role::Viewer.can_act());
        assert!(Role::Operator.can_act() && !Role::Operator.can_admin());
        assert!(Role::Admin.can_admin());
    }
}
