//! Test vectors for safety numbers (README §21): `tests/vectors/safety.json`.
//!
//! Regenerate with
//! `KITH_WRITE_VECTORS=1 cargo test -p kith-protocol --test safety_vectors -- --ignored generate_safety_vectors`.
//! `safety_vectors_match_the_spec` recomputes every number from the README's text with
//! `sha2` alone and checks Kith's [`SafetyNumber`] gives the same digits, in either order;
//! `open_safety_vectors.py` checks them with Python's `hashlib`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use kith_protocol::{LocalIdentity, SafetyNumber, UserId};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    /// Each party's user id: base58 text and binary (hex).
    a_user_id: String,
    a_user_id_hex: String,
    b_user_id: String,
    b_user_id_hex: String,
    /// Each party's Ed25519 identity key (the last 32 bytes of its id).
    a_identity_key_hex: String,
    b_identity_key_hex: String,
    /// Each party's 30 digits.
    a_digits: String,
    b_digits: String,
    /// The 60 digits both compute.
    safety_number: String,
    /// The same in 12 groups of 5, as shown.
    display: String,
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/safety.json")
}

fn user(secret_byte: u8) -> UserId {
    LocalIdentity::from_ed25519_secret([secret_byte; 32], 0, &mut ChaCha20Rng::seed_from_u64(1))
        .user_id()
}

/// One party's digits, written from the README alone.
fn spec_digits(id: &[u8]) -> String {
    let key = &id[id.len() - 32..];
    let mut h = Sha512::new();
    h.update([0u8, 0u8]);
    h.update(key);
    h.update(id);
    let mut hash = h.finalize().to_vec();
    for _ in 0..5200 {
        let mut h = Sha512::new();
        h.update(&hash);
        h.update(key);
        hash = h.finalize().to_vec();
    }
    (0..6)
        .map(|i| {
            let mut n = 0u64;
            for b in &hash[i * 5..i * 5 + 5] {
                n = n * 256 + u64::from(*b);
            }
            format!("{:05}", n % 100_000)
        })
        .collect()
}

fn vector(a: UserId, b: UserId) -> Vector {
    let (ab, bb) = (a.to_bytes(), b.to_bytes());
    let number = SafetyNumber::of(&a, &b);
    Vector {
        a_user_id: a.to_string(),
        a_user_id_hex: hex::encode(&ab),
        b_user_id: b.to_string(),
        b_user_id_hex: hex::encode(&bb),
        a_identity_key_hex: hex::encode(&ab[6..]),
        b_identity_key_hex: hex::encode(&bb[6..]),
        a_digits: kith_protocol::safety::party_digits(&a),
        b_digits: kith_protocol::safety::party_digits(&b),
        safety_number: number.digits().to_string(),
        display: number.to_string(),
    }
}

fn generate() -> Vec<Vector> {
    vec![
        vector(user(0xa1), user(0xb0)),
        vector(user(0xb0), user(0xa1)),
        vector(user(0xc0), user(0xd0)),
    ]
}

#[test]
#[ignore = "writes tests/vectors/safety.json; run with KITH_WRITE_VECTORS=1"]
fn generate_safety_vectors() {
    let vectors = generate();
    let json = serde_json::to_string_pretty(&vectors).unwrap() + "\n";
    if std::env::var_os("KITH_WRITE_VECTORS").is_some() {
        std::fs::write(path(), json).unwrap();
        eprintln!("wrote {} vectors to {}", vectors.len(), path().display());
    } else {
        eprintln!("set KITH_WRITE_VECTORS=1 to write {}", path().display());
    }
}

fn load() -> Vec<Vector> {
    serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap()
}

#[test]
fn safety_vectors_match_the_spec() {
    let vectors = load();
    assert!(vectors.len() >= 3);
    for v in &vectors {
        let (a, b) = (
            hex::decode(&v.a_user_id_hex).unwrap(),
            hex::decode(&v.b_user_id_hex).unwrap(),
        );
        assert_eq!(hex::encode(&a[a.len() - 32..]), v.a_identity_key_hex);
        assert_eq!(hex::encode(&b[b.len() - 32..]), v.b_identity_key_hex);
        let (da, db) = (spec_digits(&a), spec_digits(&b));
        assert_eq!((&da, &db), (&v.a_digits, &v.b_digits));
        // The smaller half first, whoever computes it.
        let expected = if da <= db { da + &db } else { db + &da };
        assert_eq!(expected, v.safety_number);
        let (ua, ub) = (
            UserId::from_bytes(&a).unwrap(),
            UserId::from_bytes(&b).unwrap(),
        );
        assert_eq!(ua.to_string(), v.a_user_id);
        for n in [SafetyNumber::of(&ua, &ub), SafetyNumber::of(&ub, &ua)] {
            assert_eq!(n.digits(), v.safety_number);
            assert_eq!(n.to_string(), v.display);
        }
    }
    // The first two are the same pair in both orders: one number.
    assert_eq!(vectors[0].safety_number, vectors[1].safety_number);
}

#[test]
fn safety_vectors_are_reproducible() {
    assert_eq!(load(), generate());
}
