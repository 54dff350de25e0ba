//! The fuzz targets of the desktop node's decoders: invites (pasted by the user, shown by
//! anyone) and the records the node reads back from its database (a disk that was damaged or
//! written by another build). Like [`crate::protocol`]'s, shared with the corpus replay test.

use kith_node::{
    invite::{Invite, MAX_ADDRS, MAX_INVITE_LEN, PREFIX},
    media::MediaRecord,
    store::{format::decode_message, Contact, OutboxEntry},
};
use kith_protocol::{codec, LocalIdentity, PeerSessions};
use serde::{de::DeserializeOwned, Serialize};

/// A fuzz target: takes any bytes, panics only when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every node target by name (the name is its corpus directory, tests/fuzz/corpus/<name>).
pub const TARGETS: &[(&str, Target)] = &[("invite", invite), ("node_store", node_store)];

/// An invite as the user pastes it: the first byte picks the text itself (even) or its
/// contents (odd: the rest is the bincode that the target wraps in `kith:` and base58, so the
/// fuzzer reaches the decoder behind the text encoding).
pub fn invite(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = if which % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        // Base58 encoding is quadratic: contents past what fits MAX_INVITE_LEN characters
        // only make the harness slow (the decoder refuses such text by its length first).
        let rest = &rest[..rest.len().min(MAX_INVITE_LEN * 3 / 4)];
        format!("{PREFIX}{}", bs58::encode(rest).into_string())
    };
    let Ok(invite) = Invite::decode(&text) else {
        return;
    };
    assert!(invite.addrs.len() <= MAX_ADDRS);
    invite
        .bundle
        .verify()
        .expect("a parsed invite's bundle verifies");
    let _ = invite.multiaddrs();
    let again = invite.encode().expect("a parsed invite encodes");
    if again.len() > MAX_INVITE_LEN {
        // Re-encoding is canonical, so no longer in bytes, but base58 may round up one
        // character: an input within a character of the limit can come back just over it.
        return;
    }
    let back = Invite::decode(&again).expect("an encoded invite parses");
    assert_eq!(back.bundle, invite.bundle);
    assert_eq!(back.addrs, invite.addrs);
    assert_eq!(back.access, invite.access);
}

/// Decodes `bytes` as `T`; a value that decodes re-encodes to bytes that decode to the same
/// encoding (for stored types without `PartialEq`).
fn stable<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let value: T = codec::decode(bytes).ok()?;
    let again = codec::encode(&value).expect("a decoded record encodes");
    let back: T = codec::decode(&again).expect("and decodes");
    assert_eq!(codec::encode(&back).expect("encodes"), again);
    Some(value)
}

/// The node's stored records, as its store reads them: the first byte picks a message (either
/// layout), a contact, an outbox entry, a media record, a peer's sessions or the identity.
pub fn node_store(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            if let Ok(m) = decode_message(rest) {
                let again = codec::encode(&m).expect("a decoded message encodes");
                assert!(decode_message(&again).is_ok());
            }
        }
        1 => {
            if let Some(c) = stable::<Contact>(rest) {
                let _ = c.bundle.verify();
            }
        }
        2 => {
            if let Some(e) = stable::<OutboxEntry>(rest) {
                let _ = e.plaintext.payload.decode();
            }
        }
        3 => {
            let _ = stable::<MediaRecord>(rest);
        }
        4 => {
            let _ = stable::<PeerSessions>(rest);
        }
        _ => {
            if let Ok(me) = LocalIdentity::from_bytes(rest) {
                me.bundle()
                    .verify_for(&me.user_id())
                    .expect("a loaded identity's bundle verifies");
            }
        }
    }
}
