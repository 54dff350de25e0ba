//! Rate limits of a store peer's requests, per peer id and per IP address.
//!
//! Peer ids are free, so a limit per peer alone is no limit: every request a store peer
//! serves is counted against its peer id *and* the IP address it connected from. Counting is
//! `governor`'s (GCRA, one small state per key); this module only chooses the keys and keeps
//! the keyed maps bounded: past [`Rate::max_keys`] keys, the idle ones are pruned, and while
//! the map is still full a new key is refused (so a flood of fresh peer ids is stopped by its
//! IP's limit first, and never grows memory).

use std::{hash::Hash, net::IpAddr, num::NonZeroU32};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use libp2p::PeerId;

/// One request kind's allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Most requests one peer id makes per minute (also its burst).
    pub per_peer_per_minute: u32,
    /// Most requests from one IP address per minute, whatever peer ids it uses: higher than
    /// a peer's, since several honest users may share an address (NAT, loopback in tests).
    pub per_ip_per_minute: u32,
    /// Most peer ids and most IP addresses tracked at once.
    pub max_keys: usize,
}

impl Rate {
    /// `per_peer` a minute per peer, ten times that per IP address, 100,000 keys of each.
    pub const fn per_minute(per_peer: u32) -> Self {
        Rate {
            per_peer_per_minute: per_peer,
            per_ip_per_minute: per_peer.saturating_mul(10),
            max_keys: 100_000,
        }
    }
}

/// One bounded keyed limiter.
struct Keyed<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(per_minute: u32, max_keys: usize) -> Self {
        let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Keyed {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            max_keys: max_keys.max(1),
        }
    }

    fn check(&self, key: &K) -> bool {
        if self.limiter.len() >= self.max_keys {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            if self.limiter.len() >= self.max_keys {
                // Full of keys still counting: a key already there is counted as usual (it is
                // found in place), a new one is refused rather than stored.
                tracing::debug!(keys = self.limiter.len(), "rate limiter full");
                return false;
            }
        }
        self.limiter.check_key(key).is_ok()
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// A limiter of one request kind, per peer id and per IP address.
pub struct PeerLimiter {
    by_peer: Keyed<PeerId>,
    by_ip: Keyed<IpAddr>,
}

impl PeerLimiter {
    /// A limiter allowing `rate`.
    pub fn new(rate: Rate) -> Self {
        PeerLimiter {
            by_peer: Keyed::new(rate.per_peer_per_minute, rate.max_keys),
            by_ip: Keyed::new(rate.per_ip_per_minute, rate.max_keys),
        }
    }

    /// Counts one request of `peer` from `ip` (unknown when the peer just left); false when
    /// either is over its rate. The IP is checked first, so a flood of fresh peer ids from one
    /// address stops there and never fills the per-peer map.
    pub fn allow(&self, peer: &PeerId, ip: Option<IpAddr>) -> bool {
        if let Some(ip) = ip {
            if !self.by_ip.check(&ip) {
                return false;
            }
        }
        self.by_peer.check(peer)
    }

    /// Forgets peers and addresses whose allowance is back to full (nothing to remember).
    pub fn prune(&self) {
        self.by_peer.prune();
        self.by_ip.prune();
    }

    /// Keys tracked (peer ids plus IP addresses).
    pub fn len(&self) -> usize {
        self.by_peer.len() + self.by_ip.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The allowances of the mailbox requests a store peer rate-limits besides deposits (blob
/// requests have theirs in [`BlobLimits`](crate::blobs::BlobLimits)).
#[derive(Clone, Debug)]
pub struct Rates {
    /// `Subscribe` requests (each lists a mailbox).
    pub subscribes: Rate,
    /// `Delete` requests (each may name many envelopes, up to the per-request cap).
    pub deletes: Rate,
    /// Most peer ids and IP addresses each deposit limiter tracks (the deposit rates
    /// themselves are the mailbox [`Limits`](crate::mailboxes::Limits)).
    pub max_deposit_keys: usize,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            subscribes: Rate::per_minute(120),
            deletes: Rate::per_minute(120),
            max_deposit_keys: 100_000,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_burst_then_is_refused() {
        let l = PeerLimiter::new(Rate::per_minute(3));
        let p = PeerId::random();
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        assert!((0..3).all(|_| l.allow(&p, ip)));
        assert!(!l.allow(&p, ip));
        // Another peer is not charged for it.
        assert!(l.allow(&PeerId::random(), ip));
    }

    #[test]
    fn fresh_peer_ids_from_one_address_are_stopped_by_its_ip_limit() {
        let l = PeerLimiter::new(Rate {
            per_peer_per_minute: 5,
            per_ip_per_minute: 10,
            max_keys: 1000,
        });
        let ip = Some(IpAddr::from([10, 0, 0, 2]));
        let allowed = (0..100).filter(|_| l.allow(&PeerId::random(), ip)).count();
        assert_eq!(allowed, 10);
        assert!(l.len() <= 11);
    }

    #[test]
    fn keyed_maps_stay_within_their_bound() {
        let l = PeerLimiter::new(Rate {
            per_peer_per_minute: 5,
            per_ip_per_minute: 5,
            max_keys: 50,
        });
        for i in 0..1000u32 {
            l.allow(&PeerId::random(), Some(IpAddr::from(i.to_be_bytes())));
        }
        assert!(l.len() <= 100, "{} keys", l.len());
    }
}
