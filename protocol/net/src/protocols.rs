//! The libp2p protocol ids Kith speaks, as [`StreamProtocol`]s.
//!
//! Each is built from the name `kith-protocol` defines, so a name is spelled once; nothing
//! else in the workspace may call `StreamProtocol::new` on a Kith name.

use kith_protocol::{mailbox::MAILBOX_PROTOCOL, media::MEDIA_PROTOCOL, wire::MSG_PROTOCOL};
use libp2p::StreamProtocol;

/// Kademlia's protocol name on the Kith network (a private DHT, not the public IPFS one).
pub const KAD: StreamProtocol = StreamProtocol::new("/kith/kad/1.0.0");

/// Direct message delivery between two users' nodes (`/kith/msg/1`).
pub const MSG: StreamProtocol = StreamProtocol::new(MSG_PROTOCOL);

/// Store-and-forward mailboxes on store peers (`/kith/mailbox/1`).
pub const MAILBOX: StreamProtocol = StreamProtocol::new(MAILBOX_PROTOCOL);

/// Media blobs between users' nodes and store peers (`/kith/media/1`).
pub const MEDIA: StreamProtocol = StreamProtocol::new(MEDIA_PROTOCOL);

/// The identify protocol version string Kith nodes announce.
pub const IDENTIFY_VERSION: &str = "/kith/1.0.0";

/// Whether a peer that announced `protocols` (identify) speaks `protocol`.
pub fn speaks<S: AsRef<str>>(protocols: &[S], protocol: &StreamProtocol) -> bool {
    protocols.iter().any(|p| p.as_ref() == protocol.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_protocol_crate_names() {
        assert_eq!(MSG.as_ref(), "/kith/msg/1");
        assert_eq!(MAILBOX.as_ref(), "/kith/mailbox/1");
        assert_eq!(MEDIA.as_ref(), "/kith/media/1");
        assert!(speaks(
            &["/ipfs/id/1.0.0".to_string(), "/kith/mailbox/1".into()],
            &MAILBOX
        ));
        assert!(!speaks(&["/kith/msg/1"], &MAILBOX));
    }
}
