//! TLS 1.3 session tickets sealed with a key the hub keeps in its data directory, so that a hub
//! restarted after a crash, `kill -9` or an upgrade resumes its clients' sessions instead of
//! running a full mutual-TLS handshake with each of them.
//!
//! A resumed handshake skips both certificate chains and all three signatures (the hub's, the
//! client's, and the client chain's verification), which is most of the crypto of a reconnect storm
//! on both ends. It keeps what matters:
//! - **Forward secrecy.** rustls resumes only in `psk_dhe_ke` mode: every resumed handshake still
//!   runs a fresh key exchange, so the ticket key cannot decrypt recorded traffic.
//! - **Revocation and identity.** The ticket carries the client's certificate chain as verified at
//!   the full handshake; the hub reads the identity from it and checks the registry (revoked,
//!   unknown, wrong role) on every hello, resumed or not. Expiry is checked there too, since a
//!   resumed session does not re-verify the chain.
//! - **Bounded age.** rustls does not enforce a ticket's lifetime on the server, so [`SessionTickets`]
//!   seals the issue time into each ticket and refuses one older than [`TICKET_LIFETIME_S`].
//! - **No 0-RTT.** Early data stays off on both ends: a resumed client still waits one round trip.
//!
//! Whoever reads the ticket key can forge tickets for any identity, which is no more than the CA
//! key beside it in the data directory already allows; both are 0600.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bytes of the ticket key: an AES-256 key.
pub const TICKET_KEY_LEN: usize = 32;

/// Longest a ticket stays valid, in seconds: TLS 1.3's maximum (RFC 8446 §4.6.1), seven days. A
/// client whose last handshake is older than this (a hub up for weeks before it crashed) runs a
/// full handshake, as without tickets. Shorter would only add full handshakes to the reconnect
/// storm after a longer-running hub dies.
pub const TICKET_LIFETIME_S: u32 = 7 * 24 * 60 * 60;

/// A ticket issued up to this many seconds in the future still counts: the clock may step back a
/// little (NTP) between issue and use.
const CLOCK_SKEW_S: u64 = 60;

/// First byte of every ticket: the format, so that a later format can be told apart (and this one
/// refused) instead of misread.
const FORMAT: u8 = 1;

/// Bytes of the issue time sealed in front of the session state.
const ISSUED_LEN: usize = 8;

/// Seals and opens the hub's session tickets with a key that outlives the process.
///
/// Each ticket is `FORMAT || nonce || AES-256-GCM(issued_s || state)`, with a random 96-bit nonce:
/// the key is good for about 2^32 tickets (the birthday bound on random nonces), one per handshake
/// here, which a 100,000-agent fleet reconnecting every day reaches in over a hundred years.
pub struct SessionTickets {
    key: LessSafeKey,
    rng: SystemRandom,
    accepted: AtomicU64,
}

impl std::fmt::Debug for SessionTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTickets")
            .field("key", &"***")
            .field("accepted", &self.accepted())
            .finish()
    }
}

impl SessionTickets {
    /// Tickets sealed with `key` ([`TICKET_KEY_LEN`] bytes).
    pub fn new(key: &[u8]) -> Result<Self, crate::CertError> {
        let key = UnboundKey::new(&AES_256_GCM, key).map_err(|_| {
            crate::CertError::Tls(format!(
                "session ticket key must be {TICKET_KEY_LEN} bytes, got {}",
                key.len()
            ))
        })?;
        Ok(Self {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
            accepted: AtomicU64::new(0),
        })
    }

    /// Tickets opened and found valid since start: handshakes that could resume.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }

    /// Seals `state` as issued at `now_s` (seconds since the Unix epoch).
    fn seal_at(&self, state: &[u8], now_s: u64) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut body = Vec::with_capacity(ISSUED_LEN + state.len() + AES_256_GCM.tag_len());
        body.extend_from_slice(&now_s.to_be_bytes());
        body.extend_from_slice(state);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from([FORMAT]),
                &mut body,
            )
            .ok()?;
        let mut ticket = Vec::with_capacity(1 + NONCE_LEN + body.len());
        ticket.push(FORMAT);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&body);
        Some(ticket)
    }

    /// Opens `ticket` at `now_s`: the session state if this key sealed it, unaltered, and it is
    /// younger than [`TICKET_LIFETIME_S`].
    fn open_at(&self, ticket: &[u8], now_s: u64) -> Option<Vec<u8>> {
        let (&format, rest) = ticket.split_first()?;
        if format != FORMAT || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from([FORMAT]), &mut body)
            .ok()?;
        if plain.len() < ISSUED_LEN {
            return None;
        }
        let (issued, state) = plain.split_at(ISSUED_LEN);
        let issued = u64::from_be_bytes(issued.try_into().ok()?);
        let fresh = issued <= now_s.saturating_add(CLOCK_SKEW_S)
            && now_s.saturating_sub(issued) < u64::from(TICKET_LIFETIME_S);
        fresh.then(|| state.to_vec())
    }
}

/// Seconds since the Unix epoch.
fn now_s() -> u64 {
    crate::clock::now_ms() / 1000
}

impl rustls::server::ProducesTickets for SessionTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_S
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(plain, now_s())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let state = self.open_at(cipher, now_s())?;
        self.accepted.fetch_add(1, Relaxed);
        Some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn tickets(key: u8) -> SessionTickets {
        SessionTickets::new(&[key; TICKET_KEY_LEN]).expect("key")
    }

    #[test]
    fn a_ticket_opens_with_the_same_key_in_another_process() {
        let sealed = tickets(7).seal_at(b"session state", NOW).expect("seal");
        // A new instance from the same key stands for the restarted hub.
        assert_eq!(
            tickets(7).open_at(&sealed, NOW + 5).as_deref(),
            Some(&b"session state"[..])
        );
        assert_eq!(tickets(8).open_at(&sealed, NOW + 5), None, "another key");
    }

    #[test]
    fn a_ticket_expires_after_its_lifetime() {
        let t = tickets(1);
        let sealed = t.seal_at(b"s", NOW).expect("seal");
        let life = u64::from(TICKET_LIFETIME_S);
        assert!(t.open_at(&sealed, NOW + life - 1).is_some());
        assert_eq!(t.open_at(&sealed, NOW + life), None);
        assert!(
            t.open_at(&sealed, NOW - CLOCK_SKEW_S).is_some(),
            "a small step back of the clock"
        );
        assert_eq!(
            t.open_at(&sealed, NOW - CLOCK_SKEW_S - 1),
            None,
            "issued in the future"
        );
    }

    #[test]
    fn altered_or_truncated_tickets_are_refused() {
        let t = tickets(2);
        let sealed = t.seal_at(b"state", NOW).expect("seal");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(t.open_at(&bad, NOW), None, "byte {i} flipped");
        }
        for len in 0..sealed.len() {
            assert_eq!(t.open_at(&sealed[..len], NOW), None, "cut to {len} bytes");
        }
        assert_eq!(t.accepted(), 0, "the sealed-at tests do not count");
    }

    #[test]
    fn nonces_differ_between_tickets() {
        let t = tickets(3);
        let a = t.seal_at(b"same", NOW).expect("seal");
        let b = t.seal_at(b"same", NOW).expect("seal");
        assert_ne!(a, b);
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused_by_name() {
        let err = SessionTickets::new(&[0u8; 16]).expect_err("short key");
        assert!(err.to_string().contains("got 16"), "{err}");
    }
}
