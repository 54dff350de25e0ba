//! Frames of the `/kith/msg/1` stream protocol between two users' nodes.
//!
//! One long-lived stream per peer carries envelopes in one direction and acknowledgements in
//! the other. An acknowledgement means "durably stored" (the *sent* tick); the delivered and
//! read ticks travel as sealed receipts inside ordinary envelopes.

use serde::{Deserialize, Serialize};

use crate::{Envelope, MessageId, PresenceRecord};

/// The libp2p protocol name of direct delivery.
pub const MSG_PROTOCOL: &str = "/kith/msg/1";

/// Most ids one [`MsgFrame::Ack`] carries.
pub const MAX_ACK_IDS: usize = 4096;

/// Why an envelope was refused by the receiving node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// It is not addressed to this node's user.
    Misaddressed,
    /// It has expired.
    Expired,
    /// It could not be opened or parsed; retrying will not help.
    Invalid,
    /// The receiver is overloaded; retry later.
    Busy,
}

/// One frame on a `/kith/msg/1` stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgFrame {
    /// An envelope for the receiving node's user.
    Envelope(Envelope),
    /// These envelopes are durably stored (or were already held: duplicates are acked too).
    Ack(Vec<MessageId>),
    /// This envelope was refused for good or for now.
    Reject(MessageId, RejectReason),
    /// The sender's current presence (a heartbeat).
    Presence(PresenceRecord),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn layout() {
        // Variant indexes are the declaration order.
        assert_eq!(
            codec::encode(&MsgFrame::Ack(vec![MessageId([7; 16])])).unwrap(),
            [&[1u8, 1][..], &[7; 16]].concat()
        );
        let reject =
            codec::encode(&MsgFrame::Reject(MessageId([0; 16]), RejectReason::Busy)).unwrap();
        assert_eq!(reject[0], 2);
        assert_eq!(reject[17], 3);
        assert_eq!(reject.len(), 18);
        for (i, r) in [
            RejectReason::Misaddressed,
            RejectReason::Expired,
            RejectReason::Invalid,
            RejectReason::Busy,
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(codec::encode(&r).unwrap(), vec![i as u8]);
            assert_eq!(codec::decode::<RejectReason>(&[i as u8]).unwrap(), r);
        }
        assert!(codec::decode::<RejectReason>(&[4]).is_err());
        assert!(codec::decode::<MsgFrame>(&[4]).is_err());
    }
}
