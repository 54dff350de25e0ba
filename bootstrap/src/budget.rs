//! The store peer's disk cap: one budget of bytes shared by its mailboxes and its blobs, so
//! that however many mailboxes strangers fill, the peer as a whole stops at what its operator
//! gave it, and says so (`StoreFull`, a blob upload's `QuotaExceeded`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes held on disk by a store peer (envelopes and blob bytes received), against a cap.
#[derive(Debug)]
pub struct DiskBudget {
    held: AtomicU64,
    cap: AtomicU64,
}

impl DiskBudget {
    /// An empty budget of `cap` bytes.
    pub fn new(cap: u64) -> Self {
        DiskBudget {
            held: AtomicU64::new(0),
            cap: AtomicU64::new(cap),
        }
    }

    /// Changes the cap (bytes already held stay held, even above it).
    pub fn set_cap(&self, cap: u64) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Charges `n` bytes if they fit under the cap; false (nothing charged) if not.
    pub fn try_charge(&self, n: u64) -> bool {
        let cap = self.cap.load(Ordering::Relaxed);
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| *total <= cap)
            })
            .is_ok()
    }

    /// Charges `n` bytes whatever the cap (what is found on disk at start).
    pub fn charge(&self, n: u64) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some(h.saturating_add(n))
            });
    }

    /// Gives back `n` bytes.
    pub fn release(&self, n: u64) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some(h.saturating_sub(n))
            });
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_cap_and_releases_make_room() {
        let b = DiskBudget::new(100);
        assert!(b.try_charge(60));
        assert!(!b.try_charge(41));
        assert_eq!(b.held(), 60);
        assert!(b.try_charge(40));
        b.release(50);
        assert!(b.try_charge(50));
        assert!(!b.try_charge(1));
    }
}
