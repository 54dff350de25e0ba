//! Wall-clock helpers for the node's users: times as people read and type them. The clock
//! itself lives in `kith-net` ([`kith_net::clock`]; the protocol crate takes `now`).

use std::time::{Duration, UNIX_EPOCH};

pub use kith_net::clock::now_ms;

/// RFC 3339 (UTC, milliseconds) of a unix-millisecond time.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Parses a `since` value: unix milliseconds, or an RFC 3339 time.
pub fn parse_since(s: &str) -> Option<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Some(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}
