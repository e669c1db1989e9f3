//! Admission of new connections, decided in the accept loop before any handshake work: admit,
//! answer with a QUIC Retry (RFC 9000 §8.1: the client must echo a token, proving its address,
//! and the hub keeps no state meanwhile), or refuse.
//!
//! - Handshakes from addresses not yet validated may hold at most half of `max_handshakes`
//!   (`retry_above`); past that, or past `max_handshakes_per_source` from one address, they get a
//!   Retry. A flood of Initials that never complete (one host, or spoofed sources) thus holds at
//!   most half the slots, each for `handshake_timeout_s`, and the other half stays for clients that
//!   answered the Retry: a real client pays one round trip more while the hub is under pressure.
//! - A validated address may hold `max_handshakes_per_source` handshakes at once; past that it is
//!   refused. Validated and unvalidated handshakes are counted apart, so Initials spoofed from a
//!   victim's address cannot use up the victim's allowance.
//! - Admitted handshakes then wait their turn for one of `max_handshakes` slots, as before.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What to do with an incoming connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Start its handshake (once a slot is free).
    Admit,
    /// Ask it to prove its address first.
    Retry,
    /// Refuse it: its address has too many handshakes in flight.
    Refuse,
}

/// The limits admission works to, from the hub's configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Handshakes in flight past which unvalidated addresses get a Retry.
    pub(crate) retry_above: usize,
    /// Handshakes in flight from one address (validated and unvalidated counted apart).
    pub(crate) per_source: usize,
}

impl Limits {
    /// Limits for `max_handshakes` slots and `per_source` handshakes per address: unvalidated
    /// addresses may hold half the slots (at least one), the other half is kept for clients that
    /// proved their address.
    pub(crate) fn new(max_handshakes: usize, per_source: usize) -> Self {
        Self {
            retry_above: (max_handshakes / 2).max(1),
            per_source,
        }
    }

    /// The verdict on a connection from an address that is `validated` or not, with `in_flight`
    /// handshakes admitted in all and `from_source` admitted from that address in the same class.
    pub(crate) fn judge(&self, validated: bool, in_flight: usize, from_source: usize) -> Verdict {
        if validated {
            if from_source >= self.per_source {
                Verdict::Refuse
            } else {
                Verdict::Admit
            }
        } else if in_flight >= self.retry_above || from_source >= self.per_source {
            Verdict::Retry
        } else {
            Verdict::Admit
        }
    }
}

/// Handshakes admitted and not yet finished, per address and class.
#[derive(Default)]
struct Counts {
    in_flight: usize,
    /// (unvalidated, validated) per address; entries at (0, 0) are removed.
    per_source: HashMap<IpAddr, (usize, usize)>,
}

/// Admission state shared by the accept loop and the handshakes it admitted.
pub(crate) struct Admission {
    limits: Limits,
    slots: Arc<Semaphore>,
    counts: Mutex<Counts>,
}

impl Admission {
    /// Admission with `max_handshakes` slots and `per_source` handshakes per address.
    pub(crate) fn new(max_handshakes: usize, per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            limits: Limits::new(max_handshakes, per_source),
            slots: Arc::new(Semaphore::new(max_handshakes)),
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Judges a connection from `source`; an admitted one is counted until its guard drops.
    pub(crate) fn judge(
        self: &Arc<Self>,
        source: IpAddr,
        validated: bool,
    ) -> Result<AdmissionGuard, Verdict> {
        // A panic while counting cannot leave the counts half-updated: carry on with them.
        let mut counts = deploy::sync::lock(&self.counts);
        let (unvalidated, valid) = counts.per_source.get(&source).copied().unwrap_or((0, 0));
        let from_source = if validated { valid } else { unvalidated };
        match self.limits.judge(validated, counts.in_flight, from_source) {
            Verdict::Admit => {
                counts.in_flight += 1;
                let entry = counts.per_source.entry(source).or_insert((0, 0));
                if validated {
                    entry.1 += 1;
                } else {
                    entry.0 += 1;
                }
                Ok(AdmissionGuard {
                    admission: self.clone(),
                    source,
                    validated,
                })
            }
            other => Err(other),
        }
    }

    /// Handshakes admitted and not yet finished.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        deploy::sync::lock(&self.counts).in_flight
    }
}

/// An admitted handshake: counted against its address until dropped.
pub(crate) struct AdmissionGuard {
    admission: Arc<Admission>,
    source: IpAddr,
    validated: bool,
}

impl AdmissionGuard {
    /// Waits for a handshake slot; cancel-safe (a slot is only taken when this returns).
    pub(crate) async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.admission.slots.clone().acquire_owned().await.ok()
    }
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        let mut counts = deploy::sync::lock(&self.admission.counts);
        counts.in_flight = counts.in_flight.saturating_sub(1);
        if let Some(entry) = counts.per_source.get_mut(&self.source) {
            let n = if self.validated {
                &mut entry.1
            } else {
                &mut entry.0
            };
            *n = n.saturating_sub(1);
            if *entry == (0, 0) {
                counts.per_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unvalidated_addresses_get_a_retry_once_half_the_slots_are_taken() {
        let limits = Limits::new(256, 64);
        assert_eq!(limits.judge(false, 0, 0), Verdict::Admit);
        assert_eq!(limits.judge(false, 127, 10), Verdict::Admit);
        assert_eq!(limits.judge(false, 128, 0), Verdict::Retry);
        // A validated address still gets in: the other half is kept for it.
        assert_eq!(limits.judge(true, 200, 0), Verdict::Admit);
    }

    #[test]
    fn one_address_is_held_to_its_share() {
        let limits = Limits::new(256, 64);
        assert_eq!(limits.judge(false, 70, 64), Verdict::Retry);
        assert_eq!(limits.judge(true, 70, 63), Verdict::Admit);
        assert_eq!(limits.judge(true, 70, 64), Verdict::Refuse);
        assert_eq!(Limits::new(1, 1).retry_above, 1, "one slot still admits");
    }

    #[test]
    fn counts_follow_guards_and_classes_are_apart() {
        let admission = Admission::new(4, 1);
        let victim: IpAddr = [192, 0, 2, 1].into();
        let spoofed = admission.judge(victim, false).expect("first unvalidated");
        assert_eq!(admission.judge(victim, false).err(), Some(Verdict::Retry));
        // Initials spoofed from the victim's address do not use up its validated allowance.
        let real = admission.judge(victim, true).expect("validated");
        assert_eq!(admission.judge(victim, true).err(), Some(Verdict::Refuse));
        assert_eq!(admission.in_flight(), 2);
        drop(spoofed);
        drop(real);
        assert_eq!(admission.in_flight(), 0);
        assert!(
            admission.judge(victim, true).is_ok(),
            "a finished handshake frees its share"
        );
    }
}
