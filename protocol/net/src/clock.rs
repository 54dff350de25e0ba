//! The clock: wall-clock milliseconds and the one expiry rule. Code that decides by time
//! (the store peer's expiry, the messenger's parts) takes `now` as an argument and is tested
//! with plain numbers; only the tasks that drive it call [`now_ms`]. The protocol crate never
//! reads the clock.

use std::time::{SystemTime, UNIX_EPOCH};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_includes_its_instant_and_saturates() {
        let expires = expiry(1_000, 500);
        assert!(!is_expired(expires, 1_499));
        assert!(is_expired(expires, 1_500));
        assert_eq!(expiry(u64::MAX - 1, 10), u64::MAX);
        assert!(now_ms() > 0);
    }
}
