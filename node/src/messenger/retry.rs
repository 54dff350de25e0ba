//! When the next attempt to reach a peer (or a store peer) may start, and how long to wait
//! after each failure: the wait doubles up to a cap and falls back to the shortest once an
//! attempt works.
//!
//! Pure: the caller passes `now`. It never dials or opens anything itself.

use std::time::{Duration, Instant};

use kith_net::Backoff;

/// The reconnection pacing of one peer.
#[derive(Debug)]
pub(super) struct Retry {
    /// The wait after the next failure: doubles up to a cap, so a peer that was away a long
    /// time is still tried now and then.
    backoff: Backoff,
    /// No attempt before this instant.
    not_before: Option<Instant>,
}

impl Retry {
    /// Pacing that starts at `min` and doubles up to `max`.
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        Retry {
            backoff: Backoff::new(min, max),
            not_before: None,
        }
    }

    /// An attempt failed: none before `now` plus the current wait, and the wait doubles.
    pub(super) fn failed(&mut self, now: Instant) {
        self.not_before = Some(now + self.backoff.next_delay());
    }

    /// What we had was lost (a connection closed): try again after the current wait, which
    /// does not grow, since nothing failed yet.
    pub(super) fn lost(&mut self, now: Instant) {
        self.not_before = Some(now + self.backoff.current());
    }

    /// An attempt worked: the next failure waits the shortest time again.
    pub(super) fn succeeded(&mut self) {
        self.backoff.reset();
        self.not_before = None;
    }

    /// Lets the next attempt start at once (e.g. fresh addresses were learned).
    pub(super) fn allow_now(&mut self) {
        self.not_before = None;
    }

    /// Whether an attempt may start at `now`.
    pub(super) fn is_due(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| t <= now)
    }

    /// The wait the next failure will impose.
    #[cfg(test)]
    pub(super) fn wait(&self) -> Duration {
        self.backoff.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(4);

    #[test]
    fn each_failure_doubles_the_wait_up_to_the_cap() {
        let now = Instant::now();
        let mut r = Retry::new(MIN, MAX);
        let waits: Vec<Duration> = (0..6)
            .map(|_| {
                r.failed(now);
                r.wait()
            })
            .collect();
        let ms: Vec<u128> = waits.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![1000, 2000, 4000, 4000, 4000, 4000]);
    }

    #[test]
    fn no_attempt_before_the_wait_has_passed() {
        let now = Instant::now();
        let mut r = Retry::new(MIN, MAX);
        assert!(r.is_due(now));
        r.failed(now);
        assert!(!r.is_due(now));
        assert!(!r.is_due(now + MIN - Duration::from_millis(1)));
        assert!(r.is_due(now + MIN));
        // The second failure waits twice as long.
        r.failed(now);
        assert!(!r.is_due(now + MIN));
        assert!(r.is_due(now + MIN * 2));
    }

    #[test]
    fn success_resets_the_wait_to_the_shortest() {
        let now = Instant::now();
        let mut r = Retry::new(MIN, MAX);
        r.failed(now);
        r.failed(now);
        r.succeeded();
        assert!(r.is_due(now));
        assert_eq!(r.wait(), MIN);
    }

    #[test]
    fn a_lost_connection_waits_without_growing_the_wait() {
        let now = Instant::now();
        let mut r = Retry::new(MIN, MAX);
        r.lost(now);
        assert!(!r.is_due(now));
        assert!(r.is_due(now + MIN));
        assert_eq!(r.wait(), MIN);
    }

    #[test]
    fn fresh_addresses_allow_an_attempt_at_once() {
        let now = Instant::now();
        let mut r = Retry::new(MIN, MAX);
        r.failed(now);
        r.allow_now();
        assert!(r.is_due(now));
        // The wait keeps its growth: the addresses may be stale too.
        assert_eq!(r.wait(), MIN * 2);
    }
}
