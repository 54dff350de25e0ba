use super::*;

fn text(body: &str) -> Text {
    Text {
        body: body.into(),
        client_meta: String::new(),
    }
}

fn media() -> MediaRef {
    MediaRef {
        hash: [1; 32],
        size: 123_456,
        chunk_size: 65_536,
        mime: "image/jpeg".into(),
        name: "cat.jpg".into(),
        key: [2; 32],
        preview: vec![3; 100],
        caption: "a cat".into(),
    }
}

fn round_trip(p: &Payload) -> Payload {
    let raw = p.to_raw().unwrap();
    // Through the codec as part of a Plaintext, as it travels.
    let pt = Plaintext {
        sent_at_ms: 77,
        payload: raw,
    };
    let back: Plaintext = codec::decode(&codec::encode(&pt).unwrap()).unwrap();
    assert_eq!(back, pt);
    back.payload.decode().unwrap()
}

#[test]
fn each_kind_round_trips() {
    let t = Payload::Text(Text {
        body: "héllo 👋".into(),
        client_meta: r#"{"quote":"abc"}"#.into(),
    });
    assert_eq!(round_trip(&t), t);
    assert_eq!(t.to_raw().unwrap().kind, kind::TEXT);

    let m = Payload::Media(media());
    assert_eq!(round_trip(&m), m);
    assert_eq!(m.to_raw().unwrap().kind, kind::MEDIA);

    for k in [ReceiptKind::Delivered, ReceiptKind::Read] {
        let r = Payload::Receipt(Receipt {
            kind: k,
            ids: vec![MessageId([1; 16]), MessageId([2; 16])],
        });
        assert_eq!(round_trip(&r), r);
        assert_eq!(r.to_raw().unwrap().kind, kind::RECEIPT);
    }
    assert_eq!(Plaintext::new(&t, 5).unwrap().sent_at_ms, 5);
}

#[test]
fn text_layout_is_two_strings() {
    let raw = Payload::Text(Text {
        body: "hi".into(),
        client_meta: "{}".into(),
    })
    .to_raw()
    .unwrap();
    assert_eq!(raw.body, b"\x02hi\x02{}");
    let pt = Plaintext {
        sent_at_ms: 300,
        payload: raw,
    };
    // sent_at_ms 300 = 251 + u16 LE; kind 1; body length 6; body.
    assert_eq!(
        codec::encode(&pt).unwrap(),
        b"\xfb\x2c\x01\x01\x06\x02hi\x02{}".to_vec()
    );
}

#[test]
fn receipt_layout() {
    let raw = Payload::Receipt(Receipt {
        kind: ReceiptKind::Read,
        ids: vec![MessageId([9; 16])],
    })
    .to_raw()
    .unwrap();
    let mut expected = vec![1u8, 1]; // variant 1 (Read), one id
    expected.extend_from_slice(&[9; 16]);
    assert_eq!(raw.body, expected);
}

#[test]
fn a_contact_card_round_trips_and_a_forged_one_is_refused() {
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let me = crate::LocalIdentity::generate(1_000, &mut rng);
    let card = ContactCard {
        bundle: me.bundle(),
        access: MailboxAccessKey::generate(&mut rng),
    };
    let p = Payload::ContactCard(Box::new(card.clone()));
    assert_eq!(round_trip(&p), p);
    assert_eq!(p.to_raw().unwrap().kind, kind::CONTACT_CARD);

    let mut forged = card;
    forged.bundle.static_key[0] ^= 1;
    let raw = RawPayload {
        kind: kind::CONTACT_CARD,
        body: codec::encode(&forged).unwrap(),
    };
    assert!(matches!(raw.decode(), Err(PayloadError::Bundle(_))));
}

#[test]
fn unknown_kind_is_reported_not_failed() {
    for k in [0u16, kind::TYPING + 1, 99, u16::MAX] {
        let raw = RawPayload {
            kind: k,
            body: vec![1, 2, 3],
        };
        assert_eq!(raw.decode().unwrap(), Payload::Unknown { kind: k });
    }
    let raw = Payload::Unknown { kind: 77 }.to_raw().unwrap();
    assert_eq!(
        raw,
        RawPayload {
            kind: 77,
            body: vec![]
        }
    );
}

#[test]
fn text_limits() {
    assert!(matches!(
        Payload::Text(text("")).to_raw(),
        Err(PayloadError::EmptyText)
    ));
    let max = "a".repeat(MAX_TEXT_LEN);
    assert!(Payload::Text(text(&max)).to_raw().is_ok());
    let over = "a".repeat(MAX_TEXT_LEN + 1);
    assert!(matches!(
        Payload::Text(text(&over)).to_raw(),
        Err(PayloadError::TooLong { field: "text", len, max }) if len == MAX_TEXT_LEN + 1 && max == MAX_TEXT_LEN
    ));
    // The limit is in bytes, not characters.
    let wide = "é".repeat(MAX_TEXT_LEN / 2 + 1);
    assert!(matches!(
        Payload::Text(text(&wide)).to_raw(),
        Err(PayloadError::TooLong { field: "text", .. })
    ));
    let meta = Text {
        body: "x".into(),
        client_meta: "m".repeat(MAX_CLIENT_META_LEN + 1),
    };
    assert!(matches!(
        Payload::Text(meta).to_raw(),
        Err(PayloadError::TooLong {
            field: "client_meta",
            ..
        })
    ));
}

#[test]
fn decoder_enforces_limits_too() {
    // A sender that skips validation: the receiver refuses anyway.
    let empty = RawPayload {
        kind: kind::TEXT,
        body: codec::encode(&text("")).unwrap(),
    };
    assert!(matches!(empty.decode(), Err(PayloadError::EmptyText)));
    let long = RawPayload {
        kind: kind::TEXT,
        body: codec::encode(&text(&"a".repeat(MAX_TEXT_LEN + 1))).unwrap(),
    };
    assert!(matches!(long.decode(), Err(PayloadError::TooLong { .. })));
    let receipt = RawPayload {
        kind: kind::RECEIPT,
        body: codec::encode(&Receipt {
            kind: ReceiptKind::Read,
            ids: vec![],
        })
        .unwrap(),
    };
    assert!(matches!(receipt.decode(), Err(PayloadError::EmptyReceipt)));
    let mut m = media();
    m.name = "n".repeat(MAX_MEDIA_NAME_LEN + 1);
    let media_raw = RawPayload {
        kind: kind::MEDIA,
        body: codec::encode(&m).unwrap(),
    };
    assert!(matches!(
        media_raw.decode(),
        Err(PayloadError::TooLong { field: "name", .. })
    ));
}

#[test]
fn receipt_limits() {
    let empty = Receipt {
        kind: ReceiptKind::Delivered,
        ids: vec![],
    };
    assert!(matches!(
        Payload::Receipt(empty).to_raw(),
        Err(PayloadError::EmptyReceipt)
    ));
    let max = Receipt {
        kind: ReceiptKind::Delivered,
        ids: vec![MessageId([0; 16]); MAX_RECEIPT_IDS],
    };
    assert!(Payload::Receipt(max).to_raw().is_ok());
    let over = Receipt {
        kind: ReceiptKind::Delivered,
        ids: vec![MessageId([0; 16]); MAX_RECEIPT_IDS + 1],
    };
    assert!(matches!(
        Payload::Receipt(over).to_raw(),
        Err(PayloadError::TooLong { field: "receipt ids", len, .. }) if len == MAX_RECEIPT_IDS + 1
    ));
}

#[test]
fn media_limits() {
    assert!(Payload::Media(media()).to_raw().is_ok());
    type Case = (&'static str, fn(&mut MediaRef));
    let cases: [Case; 4] = [
        ("mime", |m| m.mime = "m".repeat(MAX_MEDIA_NAME_LEN + 1)),
        ("name", |m| m.name = "n".repeat(MAX_MEDIA_NAME_LEN + 1)),
        ("preview", |m| m.preview = vec![0; MAX_PREVIEW_LEN + 1]),
        ("caption", |m| m.caption = "c".repeat(MAX_TEXT_LEN + 1)),
    ];
    for (field, change) in cases {
        let mut m = media();
        change(&mut m);
        assert!(
            matches!(Payload::Media(m).to_raw(), Err(PayloadError::TooLong { field: f, .. }) if f == field),
            "{field}"
        );
    }
    let mut at_max = media();
    at_max.mime = "m".repeat(MAX_MEDIA_NAME_LEN);
    at_max.name = "n".repeat(MAX_MEDIA_NAME_LEN);
    at_max.preview = vec![0; MAX_PREVIEW_LEN];
    at_max.caption = "c".repeat(MAX_TEXT_LEN);
    assert!(Payload::Media(at_max).to_raw().is_ok());
}

#[test]
fn media_ref_blob_helpers() {
    let m = media();
    assert_eq!(
        m.layout().unwrap(),
        BlobLayout::new(123_456, 65_536).unwrap()
    );
    assert_eq!(m.blob_hash(), BlobHash([1; 32]));
    assert_eq!(m.blob_key().0, [2; 32]);
    let mut bad = media();
    bad.chunk_size = 10;
    assert!(bad.layout().is_err());
    // Still a valid message: the layout is checked when downloading.
    assert!(Payload::Media(bad).to_raw().is_ok());
    let shown = format!("{m:?}");
    assert!(
        shown.contains("cat.jpg") && !shown.contains("[2, 2"),
        "{shown}"
    );
}

#[test]
fn malformed_bodies_rejected() {
    for k in [kind::TEXT, kind::MEDIA, kind::RECEIPT] {
        for body in [vec![], vec![0xff; 3], vec![5, b'a']] {
            let raw = RawPayload { kind: k, body };
            assert!(
                matches!(raw.decode(), Err(PayloadError::Codec(_))),
                "kind {k}"
            );
        }
    }
    // Invalid UTF-8 in a text.
    let raw = RawPayload {
        kind: kind::TEXT,
        body: vec![1, 0xff, 0],
    };
    assert!(matches!(raw.decode(), Err(PayloadError::Codec(_))));
    // A receipt kind that does not exist (variant 2).
    let raw = RawPayload {
        kind: kind::RECEIPT,
        body: vec![2, 0],
    };
    assert!(matches!(raw.decode(), Err(PayloadError::Codec(_))));
}

#[test]
fn group_payloads_round_trip_and_hostile_ones_fail_typed() {
    use crate::group::*;
    use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
    let (alice, bob, carol) = (
        crate::LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(1)),
        crate::LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(2)),
        crate::LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(3)),
    );
    let genesis = GroupState::genesis(
        GroupId([7; 16]),
        alice.user_id(),
        "friends",
        vec![bob.user_id(), carol.user_id()],
    )
    .unwrap()
    .sign(&alice)
    .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let mut key = SenderKey::generate(genesis.group(), 1, &mut rng);
    let gift = Payload::SenderKey(Box::new(SenderKeyGift {
        distribution: key.distribution(),
        state: genesis.clone(),
    }));
    let raw = gift.to_raw().unwrap();
    assert_eq!(raw.decode().unwrap(), gift);
    let msg = key
        .seal(&alice.user_id(), MessageId([1; 16]), 0, b"x")
        .unwrap();
    let payload = Payload::GroupMessage(Box::new(msg));
    assert_eq!(payload.to_raw().unwrap().decode().unwrap(), payload);
    let update = Payload::GroupUpdate(Box::new(GroupUpdate {
        state: genesis.clone(),
        bundles: vec![bob.bundle(), carol.bundle()],
    }));
    assert_eq!(update.to_raw().unwrap().decode().unwrap(), update);
    let mut bad = genesis.clone();
    bad.signature[0] ^= 1;
    let forged = RawPayload {
        kind: crate::payload::kind::GROUP_UPDATE,
        body: crate::codec::encode(&GroupUpdate {
            state: bad,
            bundles: vec![],
        })
        .unwrap(),
    };
    assert!(forged.decode().is_err());
    for kind in 5..=8u16 {
        let junk = RawPayload {
            kind,
            body: vec![0xff; 40],
        };
        assert!(junk.decode().is_err());
    }
}

#[test]
fn profile_round_trips_and_is_bounded() {
    let p = Payload::Profile(Profile {
        name: "Ann".into(),
        read_receipts: false,
    });
    assert_eq!(round_trip(&p), p);
    assert_eq!(p.to_raw().unwrap().kind, kind::PROFILE);
    let long = Payload::Profile(Profile {
        name: "x".repeat(MAX_PROFILE_NAME_LEN + 1),
        read_receipts: true,
    });
    assert!(matches!(long.to_raw(), Err(PayloadError::TooLong { .. })));
    // Over the limit is refused on decoding too.
    let raw = RawPayload {
        kind: kind::PROFILE,
        body: codec::encode(&("x".repeat(MAX_PROFILE_NAME_LEN + 1), true)).unwrap(),
    };
    assert!(matches!(raw.decode(), Err(PayloadError::TooLong { .. })));
}
