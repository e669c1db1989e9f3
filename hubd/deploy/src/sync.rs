//! A mutex lock that survives a panicked holder, for the short critical sections both daemons use.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking the data over from a holder that panicked. The daemons hold these locks only
/// for short updates (a map insert or removal) that leave the data usable at every step, so one
/// panicked task must not become a panic in every other connection touching the same map.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_hands_out_its_data() {
        let m = Mutex::new(1);
        let poisoner = std::thread::scope(|s| {
            s.spawn(|| {
                let mut g = m.lock().expect("first lock");
                *g = 2;
                panic!("holder panics");
            })
            .join()
        });
        assert!(poisoner.is_err(), "the holder panicked");
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), 2);
    }
}
