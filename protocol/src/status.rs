//! Delivery status of a sent message: the ticks.

use serde::{Deserialize, Serialize};

/// Where a sent message is: pending → sent (✓) → delivered (✓✓) → read (blue ✓✓).
///
/// The order is the derive order, and a status only moves forward: a late, duplicated or
/// out-of-order receipt never moves it back ([`DeliveryStatus::advance`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Accepted by the local node, not yet held by anyone else.
    Pending,
    /// Durably held by the recipient's node or by W of its store peers (single tick).
    Sent,
    /// The recipient's node stored it (double tick).
    Delivered,
    /// The recipient read it (blue ticks).
    Read,
}

impl DeliveryStatus {
    /// Moves to `to` if that is further along; returns whether the status changed.
    pub fn advance(&mut self, to: DeliveryStatus) -> bool {
        if to > *self {
            *self = to;
            true
        } else {
            false
        }
    }

    /// The lowercase name used in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DeliveryStatus::{self, *};

    const ALL: [DeliveryStatus; 4] = [Pending, Sent, Delivered, Read];

    #[test]
    fn only_moves_forward() {
        for (i, from) in ALL.iter().enumerate() {
            for (j, to) in ALL.iter().enumerate() {
                let mut s = *from;
                let changed = s.advance(*to);
                assert_eq!(changed, j > i, "{from:?} -> {to:?}");
                assert_eq!(s, if j > i { *to } else { *from }, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn late_receipts_do_not_regress() {
        let mut s = Pending;
        assert!(s.advance(Read));
        assert!(!s.advance(Delivered));
        assert!(!s.advance(Sent));
        assert!(!s.advance(Read));
        assert_eq!(s, Read);
        let mut s = Sent;
        assert!(s.advance(Delivered));
        assert!(!s.advance(Delivered));
        assert_eq!(s, Delivered);
    }

    #[test]
    fn names() {
        let names: Vec<_> = ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["pending", "sent", "delivered", "read"]);
    }
}
