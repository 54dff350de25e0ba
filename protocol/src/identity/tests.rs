//! Unit tests of identities, prekey rings and bundles that need the crate's internals.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;

fn identity(seed: u64) -> LocalIdentity {
    LocalIdentity::generate(1_000, &mut ChaCha20Rng::seed_from_u64(seed))
}

/// 32 bytes that are not a valid (decompressible) Ed25519 point.
fn invalid_ed25519_key() -> [u8; 32] {
    (0u8..=255)
        .map(|b| [b; 32])
        .find(|k| ed25519::PublicKey::try_from_bytes(k).is_err())
        .unwrap()
}

#[test]
fn bundle_verifies_and_is_deterministic() {
    let me = identity(1);
    let bundle = me.bundle();
    assert_eq!(bundle.verify(), Ok(()));
    assert_eq!(bundle.verify_for(&me.user_id()), Ok(()));
    assert_eq!(bundle.user, me.user_id());
    assert_eq!(bundle.identity_key, me.keypair().public().to_bytes());
    assert_eq!(bundle.static_key, x25519_public(me.static_private()));
    assert_eq!(bundle.prekey, me.prekeys().current().to_public());
    assert_eq!(bundle.created_at_ms(), 1_000);
    assert_eq!(bundle.signature.len(), 64);
    assert_eq!(me.bundle(), bundle, "Ed25519 signatures are deterministic");
    // The bundle survives the codec.
    let decoded: KeyBundle = codec::decode(&codec::encode(&bundle).unwrap()).unwrap();
    assert_eq!(decoded, bundle);
    assert_eq!(decoded.verify(), Ok(()));
}

#[test]
fn bundle_signing_bytes_layout() {
    let me = identity(2);
    let b = me.bundle();
    let mut expected = b"kith-bundle/2\0".to_vec();
    let user = b.user.to_bytes();
    expected.push(user.len() as u8);
    expected.extend_from_slice(&user);
    expected.extend_from_slice(&b.identity_key);
    expected.extend_from_slice(&b.static_key);
    expected.push(1); // prekey id 1 (varint, one byte)
    expected.push(251); // created_at_ms 1000 = 251, then u16 little-endian
    expected.extend_from_slice(&1000u16.to_le_bytes());
    expected.extend_from_slice(&b.prekey.public);
    expected.push(0); // no mailboxes named
    expected.push(251); // issued_at_ms 1000, as the prekey
    expected.extend_from_slice(&1000u16.to_le_bytes());
    let unsigned = UnsignedBundle {
        user: b.user,
        identity_key: b.identity_key,
        static_key: b.static_key,
        prekey: b.prekey,
        mailboxes: b.mailboxes.clone(),
        issued_at_ms: b.issued_at_ms,
    };
    assert_eq!(unsigned.signing_bytes(), expected);
    let key = ed25519::PublicKey::try_from_bytes(&b.identity_key).unwrap();
    assert!(key.verify(&expected, &b.signature));
}

#[test]
fn bad_signature_rejected() {
    let me = identity(3);
    let good = me.bundle();

    let mut b = good.clone();
    b.signature[0] ^= 1;
    assert_eq!(b.verify(), Err(BundleError::BadSignature));

    let mut b = good.clone();
    b.signature.truncate(63);
    assert_eq!(b.verify(), Err(BundleError::BadSignature));

    let mut b = good.clone();
    b.signature.clear();
    assert_eq!(b.verify(), Err(BundleError::BadSignature));

    // Every signed field is covered.
    let mut b = good.clone();
    b.static_key[5] ^= 1;
    assert_eq!(b.verify(), Err(BundleError::BadSignature));
    let mut b = good.clone();
    b.prekey.public[0] ^= 1;
    assert_eq!(b.verify(), Err(BundleError::BadSignature));
    let mut b = good.clone();
    b.prekey.id += 1;
    assert_eq!(b.verify(), Err(BundleError::BadSignature));
    let mut b = good.clone();
    b.prekey.created_at_ms -= 1;
    assert_eq!(b.verify(), Err(BundleError::BadSignature));
    let mut b = good.clone();
    b.issued_at_ms += 1;
    assert_eq!(b.verify(), Err(BundleError::BadSignature));
    let mut b = good.clone();
    b.mailboxes.push(MailboxPeer {
        peer: identity(9).user_id(),
        addrs: Vec::new(),
    });
    assert_eq!(b.verify(), Err(BundleError::BadSignature));
    let mut b = good.clone();
    b.prekey.created_at_ms += 1;
    assert_eq!(b.verify(), Err(BundleError::IssuedBeforePrekey));

    // A signature by somebody else's key over the same fields.
    let other = identity(4);
    let mut b = good.clone();
    let unsigned = UnsignedBundle {
        user: b.user,
        identity_key: b.identity_key,
        static_key: b.static_key,
        prekey: b.prekey,
        mailboxes: Vec::new(),
        issued_at_ms: b.issued_at_ms,
    };
    b.signature = other.sign(&unsigned.signing_bytes());
    assert_eq!(b.verify(), Err(BundleError::BadSignature));
}

#[test]
fn user_id_mismatch_rejected() {
    let me = identity(5);
    let other = identity(6);
    // Claims to be `other` but carries my identity key (and my valid signature).
    let mut b = me.bundle();
    b.user = other.user_id();
    assert_eq!(b.verify(), Err(BundleError::UserIdMismatch));
    // Claims to be me but carries other's identity key and other's signature.
    let mut b = other.bundle();
    b.user = me.user_id();
    assert_eq!(b.verify(), Err(BundleError::UserIdMismatch));
    // Or swaps just the identity key.
    let mut b = me.bundle();
    b.identity_key = other.keypair().public().to_bytes();
    assert_eq!(b.verify(), Err(BundleError::UserIdMismatch));
}

#[test]
fn bad_identity_key_rejected() {
    let mut b = identity(7).bundle();
    b.identity_key = invalid_ed25519_key();
    assert_eq!(b.verify(), Err(BundleError::BadIdentityKey));
}

#[test]
fn verify_for_wrong_user_rejected() {
    let me = identity(8);
    let other = identity(9);
    assert_eq!(
        me.bundle().verify_for(&other.user_id()),
        Err(BundleError::WrongUser)
    );
    assert_eq!(me.bundle().verify_for(&me.user_id()), Ok(()));
    // verify_for still verifies the signature for the right user.
    let mut b = me.bundle();
    b.signature[10] ^= 0x80;
    assert_eq!(b.verify_for(&me.user_id()), Err(BundleError::BadSignature));
}

#[test]
fn local_identity_round_trip() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let mut me = LocalIdentity::generate(0, &mut rng);
    // With a retired prekey too.
    assert!(me.maintain_prekeys(
        PrekeyPolicy::default().rotation_ms,
        &PrekeyPolicy::default(),
        &mut rng
    ));
    let bytes = me.to_bytes().unwrap();
    let back = LocalIdentity::from_bytes(&bytes).unwrap();
    assert_eq!(back.user_id(), me.user_id());
    assert_eq!(back.keypair().to_bytes(), me.keypair().to_bytes());
    assert_eq!(back.static_private(), me.static_private());
    assert_eq!(back.bundle(), me.bundle());
    assert_eq!(back.prekeys().retired_ids(), vec![1]);
    assert_eq!(back.prekeys().current().id, 2);
    assert_eq!(
        back.prekeys().find(1).unwrap().private,
        me.prekeys().find(1).unwrap().private
    );
    assert_eq!(back.to_bytes().unwrap(), bytes);
    assert!(!format!("{back:?}").contains(&format!("{:?}", me.static_private())));
}

#[test]
fn from_ed25519_secret_is_deterministic() {
    let a = LocalIdentity::from_ed25519_secret([9; 32], 5, &mut ChaCha20Rng::seed_from_u64(1));
    let b = LocalIdentity::from_ed25519_secret([9; 32], 5, &mut ChaCha20Rng::seed_from_u64(1));
    let c = LocalIdentity::from_ed25519_secret([9; 32], 5, &mut ChaCha20Rng::seed_from_u64(2));
    assert_eq!(a.to_bytes().unwrap(), b.to_bytes().unwrap());
    assert_eq!(
        a.user_id(),
        c.user_id(),
        "the user id depends only on the Ed25519 secret"
    );
    assert_ne!(a.bundle().static_key, c.bundle().static_key);
}

#[test]
fn from_bytes_garbage_is_an_error() {
    assert!(LocalIdentity::from_bytes(&[]).is_err());
    assert!(LocalIdentity::from_bytes(&[0; 10]).is_err());
    assert!(LocalIdentity::from_bytes(&[0xff; 300]).is_err());
    let good = identity(11).to_bytes().unwrap();
    for cut in [1, 10, 64, 65, 100, good.len() - 1] {
        assert!(
            LocalIdentity::from_bytes(&good[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        LocalIdentity::from_bytes(&long),
        Err(IdentityError::Codec(codec::CodecError::TrailingBytes(1)))
    ));
}

#[test]
fn from_bytes_rejects_inconsistent_keys() {
    let me = identity(12);
    // Static public key that is not the private key's.
    let mut bad = me.clone();
    bad.static_public[0] ^= 1;
    assert!(matches!(
        LocalIdentity::from_bytes(&bad.to_bytes().unwrap()),
        Err(IdentityError::BadIdentityKey)
    ));
    // Ed25519 pair whose public half (bytes 32..64 of the 64) is not the secret's.
    let mut bytes = me.to_bytes().unwrap();
    assert_eq!(bytes[0], 64, "keypair is a 64-byte string first");
    bytes[1 + 32] ^= 1;
    assert!(matches!(
        LocalIdentity::from_bytes(&bytes),
        Err(IdentityError::Codec(_))
    ));
    // A prekey, current or retired, whose public half is not its private key's.
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut bad = me.clone();
    bad.prekeys.current.public[31] ^= 1;
    assert!(matches!(
        LocalIdentity::from_bytes(&bad.to_bytes().unwrap()),
        Err(IdentityError::BadIdentityKey)
    ));
    let mut bad = me.clone();
    bad.maintain_prekeys(u64::MAX / 2, &PrekeyPolicy::default(), &mut rng);
    assert!(LocalIdentity::from_bytes(&bad.to_bytes().unwrap()).is_ok());
    bad.prekeys.retired[0].0.private[0] ^= 0x40;
    assert!(matches!(
        LocalIdentity::from_bytes(&bad.to_bytes().unwrap()),
        Err(IdentityError::BadIdentityKey)
    ));
}

fn policy() -> PrekeyPolicy {
    PrekeyPolicy {
        rotation_ms: 100,
        grace_ms: 250,
        max_retired: 8,
    }
}

#[test]
fn default_prekey_policy() {
    let p = PrekeyPolicy::default();
    assert_eq!(p.rotation_ms, 7 * 24 * 3600 * 1000);
    assert_eq!(p.grace_ms, 35 * 24 * 3600 * 1000);
    assert_eq!(p.max_retired, 8);
    // Every prekey retired within the grace window fits under max_retired.
    assert!(p.grace_ms / p.rotation_ms < p.max_retired as u64);
}

#[test]
fn prekey_rotates_after_rotation_ms() {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let mut ring = PrekeyRing::new(1_000, &mut rng);
    let first = ring.current().clone();
    assert_eq!(first.id, 1);
    assert_eq!(first.public, x25519_public(&first.private));
    assert!(!ring.maintain(1_000, &policy(), &mut rng));
    assert!(!ring.maintain(1_099, &policy(), &mut rng));
    assert_eq!(ring.current().id, 1);
    assert!(ring.maintain(1_100, &policy(), &mut rng));
    assert_eq!(ring.current().id, 2);
    assert_eq!(ring.current().created_at_ms, 1_100);
    assert_ne!(ring.current().private, first.private);
    assert_eq!(
        ring.current().public,
        x25519_public(&ring.current().private)
    );
    assert_eq!(ring.retired_ids(), vec![1]);
    assert!(!ring.maintain(1_150, &policy(), &mut rng));
    assert_eq!(ring.current().id, 2);
}

#[test]
fn retired_prekey_findable_within_grace_then_deleted() {
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let mut ring = PrekeyRing::new(0, &mut rng);
    let first = ring.current().clone();
    assert!(ring.maintain(100, &policy(), &mut rng)); // 1 retired at 100
    assert_eq!(ring.find(1).unwrap().private, first.private);
    assert_eq!(ring.find(2).unwrap().id, 2);
    assert!(ring.find(3).is_none());
    assert!(ring.maintain(200, &policy(), &mut rng)); // 2 retired at 200
    assert!(ring.maintain(300, &policy(), &mut rng)); // 3 retired at 300
                                                      // 349 - 100 = 249 < 250: still kept.
    assert!(!ring.maintain(349, &policy(), &mut rng));
    assert_eq!(ring.retired_ids(), vec![1, 2, 3]);
    assert!(ring.find(1).is_some());
    // 350 - 100 = 250: the grace window is over, the private key is gone.
    assert!(!ring.maintain(350, &policy(), &mut rng));
    assert!(ring.find(1).is_none());
    assert_eq!(ring.retired_ids(), vec![2, 3]);
    assert!(ring.find(2).is_some());
    assert!(ring.maintain(400, &policy(), &mut rng)); // 4 retired at 400
    assert!(!ring.maintain(450, &policy(), &mut rng));
    assert_eq!(ring.retired_ids(), vec![3, 4]);
    assert_eq!(ring.current().id, 5);
}

#[test]
fn max_retired_respected() {
    let mut rng = ChaCha20Rng::seed_from_u64(15);
    let p = PrekeyPolicy {
        rotation_ms: 10,
        grace_ms: u64::MAX,
        max_retired: 3,
    };
    let mut ring = PrekeyRing::new(0, &mut rng);
    for i in 1..=10u64 {
        assert!(ring.maintain(i * 10, &p, &mut rng));
        assert!(ring.retired_ids().len() <= 3);
    }
    assert_eq!(ring.current().id, 11);
    assert_eq!(
        ring.retired_ids(),
        vec![8, 9, 10],
        "the oldest are dropped first"
    );
    assert!(ring.find(7).is_none());
    assert!(ring.find(8).is_some());
    // max_retired 0 keeps nothing retired.
    let p0 = PrekeyPolicy {
        max_retired: 0,
        ..p
    };
    assert!(ring.maintain(1_000, &p0, &mut rng));
    assert!(ring.retired_ids().is_empty());
    assert!(ring.find(11).is_none());
}

#[test]
fn identity_maintain_changes_the_bundle() {
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let mut me = LocalIdentity::generate(0, &mut rng);
    let before = me.bundle();
    assert!(!me.maintain_prekeys(1, &PrekeyPolicy::default(), &mut rng));
    assert_eq!(me.bundle(), before);
    let week = PrekeyPolicy::default().rotation_ms;
    assert!(me.maintain_prekeys(week, &PrekeyPolicy::default(), &mut rng));
    let after = me.bundle();
    assert_ne!(after, before);
    assert_eq!(after.prekey.id, 2);
    assert_eq!(after.created_at_ms(), week);
    assert_eq!(
        after.static_key, before.static_key,
        "the static key does not rotate"
    );
    assert_eq!(after.verify(), Ok(()));
    // Still there 34 days after retirement, gone at 35.
    let day = 24 * 3600 * 1000;
    me.maintain_prekeys(
        week + 34 * day,
        &PrekeyPolicy {
            rotation_ms: u64::MAX,
            ..Default::default()
        },
        &mut rng,
    );
    assert!(me.prekeys().find(1).is_some());
    me.maintain_prekeys(
        week + 35 * day,
        &PrekeyPolicy {
            rotation_ms: u64::MAX,
            ..Default::default()
        },
        &mut rng,
    );
    assert!(me.prekeys().find(1).is_none());
}

#[test]
fn prekey_secret_debug_hides_the_key() {
    let ring = PrekeyRing::new(0, &mut ChaCha20Rng::seed_from_u64(17));
    let text = format!("{:?}", ring.current());
    assert!(text.contains("id: 1"));
    assert!(!text.contains("private"));
}

#[test]
fn the_named_mailboxes_are_signed_and_date_the_bundle() {
    let mut me = identity(7);
    let store = MailboxPeer {
        peer: identity(8).user_id(),
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
    };
    let before = me.bundle();
    me.set_mailboxes(vec![store.clone()], 5_000).unwrap();
    let after = me.bundle();
    after.verify().unwrap();
    assert_eq!(after.mailboxes, vec![store.clone()]);
    assert_eq!(after.created_at_ms(), 5_000);
    assert!(after.created_at_ms() > before.created_at_ms());
    assert_eq!(me.mailboxes(), std::slice::from_ref(&store));
    assert!(matches!(
        me.set_mailboxes(vec![store.clone(), store], 6_000),
        Err(crate::access::AccessError::DuplicatePeer)
    ));
    // The stored identity does not carry the choice: the node keeps it.
    let back = LocalIdentity::from_bytes(&me.to_bytes().unwrap()).unwrap();
    assert!(back.mailboxes().is_empty());
}
