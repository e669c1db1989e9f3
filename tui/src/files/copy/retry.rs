//! The retry policy of one file's copy as a sans-IO state machine: each attempt's end (and a
//! Ctrl-C) goes in through `handle_*` with the time, what to do next comes out of
//! [`Retries::poll_action`], and the wait before the next attempt is [`Retries::poll_timeout`]. The
//! attempts themselves (streams, files) run in `attempt.rs`; `copy.rs` only feeds this.

use super::Attempt;
use crate::files::FilesError;
use flotilla_wire::files::{TransferDone, TransferError, TransferErrorKind};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// First wait before a retry; doubles up to [`RETRY_MAX`].
pub(super) const RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between retries: an agent reconnecting after a hub restart waits up to its own
/// back-off, so polling faster than this would only add load.
pub(super) const RETRY_MAX: Duration = Duration::from_secs(5);

/// What the driver must do next.
#[derive(Debug)]
pub(super) enum RetryAction {
    /// Run this attempt (1 for the first) and feed its end to [`Retries::handle_attempt`].
    Attempt(u32),
    /// Tell the user the attempt failed for `why` and the next follows after `delay`.
    Retrying {
        /// What went wrong.
        why: String,
        /// The attempt that failed.
        attempt: u32,
        /// Wait before the next.
        delay: Duration,
    },
    /// The file is in place.
    Done(TransferDone),
    /// The copy of this file failed for good (or was cancelled).
    Fail(FilesError),
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// An attempt runs.
    Attempting,
    /// Waiting until the next attempt.
    Waiting { until: Instant },
    /// Done or failed.
    Finished,
}

/// One file's attempts. See the module doc.
#[derive(Debug)]
pub(super) struct Retries {
    /// `src -> dst`, for the final message.
    label: String,
    retry_for: Duration,
    deadline: Instant,
    delay: Duration,
    attempt: u32,
    state: State,
    actions: VecDeque<RetryAction>,
}

impl Retries {
    /// The first attempt starts at `now`; retries stop `retry_for` later.
    pub(super) fn new(label: String, retry_for: Duration, now: Instant) -> Self {
        let mut actions = VecDeque::new();
        actions.push_back(RetryAction::Attempt(1));
        Self {
            label,
            retry_for,
            deadline: now + retry_for,
            delay: RETRY_MIN,
            attempt: 1,
            state: State::Attempting,
            actions,
        }
    }

    /// The next thing to do, if any.
    pub(super) fn poll_action(&mut self) -> Option<RetryAction> {
        self.actions.pop_front()
    }

    /// When the next attempt is due, while waiting for it.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { until } => Some(until),
            State::Attempting | State::Finished => None,
        }
    }

    /// Whether the copy of this file is over.
    #[cfg(test)]
    pub(super) fn is_finished(&self) -> bool {
        self.state == State::Finished && self.actions.is_empty()
    }

    fn finish(&mut self, action: RetryAction) {
        self.actions.push_back(action);
        self.state = State::Finished;
    }

    /// The running attempt ended with `result`; `cancelled` says whether Ctrl-C came meanwhile.
    pub(super) fn handle_attempt(
        &mut self,
        result: Result<TransferDone, Attempt>,
        cancelled: bool,
        now: Instant,
    ) {
        if self.state != State::Attempting {
            return;
        }
        match result {
            Ok(done) => self.finish(RetryAction::Done(done)),
            Err(Attempt::Cancelled) => self.finish(RetryAction::Fail(FilesError::Cancelled)),
            Err(Attempt::Fatal(e)) => self.finish(RetryAction::Fail(e)),
            Err(Attempt::Retry(_)) if cancelled => {
                self.finish(RetryAction::Fail(FilesError::Cancelled));
            }
            Err(Attempt::Retry(why)) if now + self.delay > self.deadline => {
                let err = TransferError::new(
                    TransferErrorKind::Interrupted,
                    format!(
                        "{}: gave up after {} s of retries: {why}",
                        self.label,
                        self.retry_for.as_secs()
                    ),
                );
                self.finish(RetryAction::Fail(FilesError::Transfer(err)));
            }
            Err(Attempt::Retry(why)) => {
                self.actions.push_back(RetryAction::Retrying {
                    why,
                    attempt: self.attempt,
                    delay: self.delay,
                });
                self.state = State::Waiting {
                    until: now + self.delay,
                };
                self.delay = (self.delay * 2).min(RETRY_MAX);
            }
        }
    }

    /// Ctrl-C between attempts (during one, the attempt itself cancels and ends `Cancelled`).
    pub(super) fn handle_cancel(&mut self, _now: Instant) {
        if matches!(self.state, State::Waiting { .. }) {
            self.finish(RetryAction::Fail(FilesError::Cancelled));
        }
    }

    /// Time passed: starts the next attempt once its wait is over.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        if let State::Waiting { until } = self.state
            && now >= until
        {
            self.attempt += 1;
            self.actions.push_back(RetryAction::Attempt(self.attempt));
            self.state = State::Attempting;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_wire::files::Digest;

    fn done() -> TransferDone {
        TransferDone {
            size: 10,
            digest: Digest([1; 32]),
            resumed_from: 0,
        }
    }

    fn drain(r: &mut Retries) -> Vec<RetryAction> {
        std::iter::from_fn(|| r.poll_action()).take(100).collect()
    }

    fn retry(why: &str) -> Result<TransferDone, Attempt> {
        Err(Attempt::Retry(why.into()))
    }

    #[test]
    fn retries_back_off_from_half_a_second_doubling_to_five() {
        let t0 = Instant::now();
        let mut r = Retries::new("web-1:a -> web-2:a".into(), Duration::from_secs(300), t0);
        assert!(matches!(drain(&mut r)[..], [RetryAction::Attempt(1)]));
        let mut now = t0;
        let mut delays = Vec::new();
        for n in 1..=6u32 {
            r.handle_attempt(retry("the source dropped the transfer"), false, now);
            let actions = drain(&mut r);
            let [RetryAction::Retrying { attempt, delay, .. }] = actions[..] else {
                panic!("expected a retry, got {actions:?}");
            };
            assert_eq!(attempt, n);
            delays.push(delay.as_millis());
            assert_eq!(r.poll_timeout(), Some(now + delay));
            r.handle_timeout(now + delay - Duration::from_millis(1));
            assert!(drain(&mut r).is_empty(), "not before the wait is over");
            now += delay;
            r.handle_timeout(now);
            assert!(matches!(drain(&mut r)[..], [RetryAction::Attempt(a)] if a == n + 1));
        }
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
        r.handle_attempt(Ok(done()), false, now);
        assert!(matches!(drain(&mut r)[..], [RetryAction::Done(_)]));
        assert!(r.is_finished());
    }

    #[test]
    fn retrying_stops_at_the_deadline_and_says_why() {
        let t0 = Instant::now();
        let mut r = Retries::new("web-1:a -> web-2:a".into(), Duration::from_secs(2), t0);
        drain(&mut r);
        r.handle_attempt(retry("agent web-2 is offline"), false, t0);
        drain(&mut r);
        r.handle_timeout(t0 + Duration::from_millis(500));
        drain(&mut r);
        // 1.9 s in, the next wait (1 s) would pass the 2 s budget.
        r.handle_attempt(
            retry("agent web-2 is offline"),
            false,
            t0 + Duration::from_millis(1900),
        );
        let actions = drain(&mut r);
        let [RetryAction::Fail(FilesError::Transfer(e))] = &actions[..] else {
            panic!("expected to give up, got {actions:?}");
        };
        assert_eq!(e.kind, TransferErrorKind::Interrupted);
        assert_eq!(
            e.message,
            "web-1:a -> web-2:a: gave up after 2 s of retries: agent web-2 is offline"
        );
        assert!(r.is_finished());
    }

    #[test]
    fn a_final_error_such_as_no_space_ends_at_once_without_a_retry() {
        let t0 = Instant::now();
        let mut r = Retries::new("a -> web-2:a".into(), Duration::from_secs(300), t0);
        drain(&mut r);
        let e = TransferError::new(TransferErrorKind::NoSpace, "no space left on web-2");
        r.handle_attempt(Err(Attempt::from(e.clone())), false, t0);
        let actions = drain(&mut r);
        assert!(
            matches!(&actions[..], [RetryAction::Fail(FilesError::Transfer(got))] if *got == e),
            "{actions:?}"
        );
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn busy_and_dropped_parties_are_retried_other_kinds_are_not() {
        for (kind, retried) in [
            (TransferErrorKind::Interrupted, true),
            (TransferErrorKind::Offline, true),
            (TransferErrorKind::Busy, true),
            (TransferErrorKind::NoSpace, false),
            (TransferErrorKind::NotFound, false),
            (TransferErrorKind::HashMismatch, false),
            (TransferErrorKind::SourceChanged, false),
            (TransferErrorKind::Io, false),
        ] {
            let t0 = Instant::now();
            let mut r = Retries::new("a -> b".into(), Duration::from_secs(300), t0);
            drain(&mut r);
            let e = TransferError::new(kind, "why");
            r.handle_attempt(Err(Attempt::from(e)), false, t0);
            let actions = drain(&mut r);
            assert_eq!(
                matches!(actions[..], [RetryAction::Retrying { .. }]),
                retried,
                "{kind:?}: {actions:?}"
            );
        }
    }

    #[test]
    fn a_cancel_while_waiting_or_during_a_failing_attempt_ends_as_cancelled() {
        let t0 = Instant::now();
        let mut r = Retries::new("a -> b".into(), Duration::from_secs(300), t0);
        drain(&mut r);
        r.handle_attempt(retry("dropped"), false, t0);
        drain(&mut r);
        r.handle_cancel(t0);
        assert!(matches!(
            drain(&mut r)[..],
            [RetryAction::Fail(FilesError::Cancelled)]
        ));
        assert_eq!(r.poll_timeout(), None);
        r.handle_timeout(t0 + RETRY_MAX);
        assert!(drain(&mut r).is_empty(), "no attempt after a cancel");

        let mut r = Retries::new("a -> b".into(), Duration::from_secs(300), t0);
        drain(&mut r);
        r.handle_attempt(retry("dropped"), true, t0);
        assert!(matches!(
            drain(&mut r)[..],
            [RetryAction::Fail(FilesError::Cancelled)]
        ));
        let mut r = Retries::new("a -> b".into(), Duration::from_secs(300), t0);
        drain(&mut r);
        r.handle_attempt(Err(Attempt::Cancelled), false, t0);
        assert!(matches!(
            drain(&mut r)[..],
            [RetryAction::Fail(FilesError::Cancelled)]
        ));
    }
}
