//! The clock: wall-clock milliseconds, behind a small [`Clock`] trait so that code that
//! decides by time (expiry, retries, presence) can be driven by a [`ManualClock`] in tests.
//! The protocol crate never reads the clock; it takes `now` as an argument.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Milliseconds since the unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether something expiring at `expires_at_ms` has expired at `now_ms` (the expiry instant
/// itself counts as expired).
pub fn is_expired(expires_at_ms: u64, now_ms: u64) -> bool {
    expires_at_ms <= now_ms
}

/// The expiry of something made at `now_ms` that lives `lifetime_ms` (saturating).
pub fn expiry(now_ms: u64, lifetime_ms: u64) -> u64 {
    now_ms.saturating_add(lifetime_ms)
}

/// A source of wall-clock time in unix milliseconds.
pub trait Clock: Send + Sync {
    /// Milliseconds since the unix epoch, now.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// A clock that moves only when told to (tests). Clones share one time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn at(ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(ms)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }

    /// Sets the clock to `ms`.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_expiry_includes_its_instant() {
        let clock = ManualClock::at(1_000);
        let shared = clock.clone();
        let expires = expiry(clock.now_ms(), 500);
        assert!(!is_expired(expires, shared.now_ms()));
        clock.advance(Duration::from_millis(499));
        assert!(!is_expired(expires, shared.now_ms()));
        clock.advance(Duration::from_millis(1));
        assert!(is_expired(expires, shared.now_ms()));
        assert_eq!(expiry(u64::MAX - 1, 10), u64::MAX);
        assert!(SystemClock.now_ms() > 0);
    }
}
