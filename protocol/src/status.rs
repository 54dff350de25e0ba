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
