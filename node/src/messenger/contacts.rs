//! Contacts and key bundles: adding contacts from invites or the DHT, learning newer
//! bundles from handshakes, publishing our own bundle.

use super::*;

/// How often the key bundle is published in the DHT again.
pub(super) const PUBLISH_INTERVAL: Duration = Duration::from_secs(600);

/// The DHT key of a user's key bundle.
pub(super) fn bundle_record_key(user: &UserId) -> Vec<u8> {
    let mut key = b"/kith/bundle/".to_vec();
    key.extend_from_slice(&user.to_bytes());
    key
}

/// The newest of `values` (DHT records under [`bundle_record_key`]) that verifies as `user`'s
/// bundle: anyone can store a record under any key.
pub(super) fn newest_bundle(values: &[Vec<u8>], user: &UserId) -> Option<Box<KeyBundle>> {
    values
        .iter()
        .filter_map(|v| kith_protocol::codec::decode::<KeyBundle>(v).ok())
        .filter(|b| b.verify_for(user).is_ok())
        .max_by_key(|b| b.created_at_ms())
        .map(Box::new)
}

/// The contact the user adds (or updates) from a verified `bundle` and addresses
/// (multiaddr bytes): a bundle older than the one we have is not taken, known addresses are
/// not repeated and at most [`crate::invite::MAX_ADDRS`] are kept, and a name is changed
/// only when one is given. `now_ms` is when a new contact is added.
pub(super) fn merged_contact(
    old: Option<&Contact>,
    bundle: KeyBundle,
    addrs: Vec<Vec<u8>>,
    name: Option<String>,
    now_ms: u64,
) -> Contact {
    let Some(old) = old else {
        return Contact {
            user: bundle.user,
            name: name.unwrap_or_default(),
            bundle,
            addrs,
            added_at_ms: now_ms,
            access: None,
        };
    };
    let mut c = old.clone();
    if bundle.created_at_ms() >= c.bundle.created_at_ms() {
        c.bundle = bundle;
    }
    for a in &addrs {
        if !c.addrs.contains(a) {
            c.addrs.push(a.clone());
        }
    }
    c.addrs.truncate(crate::invite::MAX_ADDRS);
    if let Some(n) = name {
        c.name = n;
    }
    c
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    fn identity(seed: u64) -> LocalIdentity {
        LocalIdentity::generate(0, &mut StdRng::seed_from_u64(seed))
    }

    /// The same user's bundle, dated `created_at_ms` (unsigned: merging does not verify).
    fn bundle_at(me: &LocalIdentity, created_at_ms: u64) -> KeyBundle {
        let mut b = me.bundle();
        b.prekey.created_at_ms = created_at_ms;
        b.issued_at_ms = created_at_ms;
        b
    }

    #[test]
    fn a_new_contact_takes_the_name_addresses_and_time_given() {
        let me = identity(1);
        let c = merged_contact(
            None,
            me.bundle(),
            vec![vec![1], vec![2]],
            Some("ann".into()),
            42,
        );
        assert_eq!(c.user, me.user_id());
        assert_eq!(c.name, "ann");
        assert_eq!(c.addrs, vec![vec![1], vec![2]]);
        assert_eq!(c.added_at_ms, 42);
    }

    #[test]
    fn updating_keeps_the_name_unless_given_and_adds_only_new_addresses_up_to_the_cap() {
        let me = identity(1);
        let old = merged_contact(None, me.bundle(), vec![vec![1]], Some("ann".into()), 1);
        let c = merged_contact(Some(&old), me.bundle(), vec![vec![1], vec![2]], None, 99);
        assert_eq!(c.name, "ann");
        assert_eq!(c.addrs, vec![vec![1], vec![2]]);
        assert_eq!(c.added_at_ms, 1, "still added when first added");
        let many: Vec<Vec<u8>> = (0..=crate::invite::MAX_ADDRS as u8 + 3)
            .map(|i| vec![i])
            .collect();
        let c = merged_contact(Some(&c), me.bundle(), many, Some("bo".into()), 99);
        assert_eq!(c.addrs.len(), crate::invite::MAX_ADDRS);
        assert_eq!(c.name, "bo");
    }

    #[test]
    fn an_older_bundle_never_replaces_a_newer_one() {
        let me = identity(1);
        let c = merged_contact(None, bundle_at(&me, 1_000), Vec::new(), None, 0);
        let kept = merged_contact(Some(&c), bundle_at(&me, 500), Vec::new(), None, 0);
        assert_eq!(kept.bundle.created_at_ms(), 1_000);
        let newer = merged_contact(Some(&c), bundle_at(&me, 2_000), Vec::new(), None, 0);
        assert_eq!(newer.bundle.created_at_ms(), 2_000);
    }
}
