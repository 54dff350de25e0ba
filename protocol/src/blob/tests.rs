//! Unit tests of blob layout, chunk sealing and hashing.

use super::*;

const CS: u32 = MIN_CHUNK_SIZE;

fn layout(size: u64) -> BlobLayout {
    BlobLayout::new(size, CS).unwrap()
}

#[test]
fn layout_bounds() {
    for cs in [0, 1, MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1, u32::MAX] {
        assert!(matches!(
            BlobLayout::new(10, cs),
            Err(BlobError::ChunkSize { chunk_size, .. }) if chunk_size == cs
        ));
    }
    for cs in [MIN_CHUNK_SIZE, 1500, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE] {
        assert!(BlobLayout::new(10, cs).is_ok());
    }
    assert!(BlobLayout::new(MAX_BLOB_SIZE, CS).is_ok());
    assert!(matches!(
        BlobLayout::new(MAX_BLOB_SIZE + 1, CS),
        Err(BlobError::TooLarge { .. })
    ));
    assert!(BlobLayout::new(u64::MAX, CS).is_err());
}

#[test]
fn layout_arithmetic() {
    // Empty file: one empty chunk, a tag only.
    let l = layout(0);
    assert_eq!(l.chunk_count(), 1);
    assert_eq!(l.plain_len(0).unwrap(), 0);
    assert_eq!(l.cipher_len(0).unwrap(), TAG_LEN);
    assert_eq!(l.cipher_size(), TAG_LEN as u64);
    assert!(l.is_last(0));
    assert_eq!(l.chunk_of_plain_offset(0), 0);
    assert_eq!(l.chunks_in_plain_prefix(0), 1);
    // Exact multiple: no empty trailing chunk.
    let l = layout(3 * u64::from(CS));
    assert_eq!(l.chunk_count(), 3);
    assert_eq!(l.plain_len(2).unwrap(), CS as usize);
    assert!(matches!(
        l.plain_len(3),
        Err(BlobError::NoSuchChunk { index: 3, count: 3 })
    ));
    assert_eq!(l.cipher_size(), 3 * (u64::from(CS) + 16));
    assert_eq!(l.cipher_offset(2), 2 * (u64::from(CS) + 16));
    assert_eq!(l.plain_offset(2), 2 * u64::from(CS));
    assert_eq!(l.chunk_of_plain_offset(u64::from(CS) - 1), 0);
    assert_eq!(l.chunk_of_plain_offset(u64::from(CS)), 1);
    assert_eq!(l.chunk_of_plain_offset(u64::MAX), 2);
    assert_eq!(l.chunks_in_plain_prefix(u64::from(CS) + 5), 1);
    assert_eq!(l.chunks_in_plain_prefix(3 * u64::from(CS)), 3);
    assert_eq!(l.chunks_in_cipher_prefix(u64::from(CS) + 16), 1);
    assert_eq!(l.chunks_in_cipher_prefix(l.cipher_size()), 3);
    // One byte over: a 1-byte last chunk.
    let l = layout(3 * u64::from(CS) + 1);
    assert_eq!(l.chunk_count(), 4);
    assert_eq!(l.plain_len(3).unwrap(), 1);
    assert!(l.is_last(3) && !l.is_last(2));
    assert_eq!(l.chunks_in_plain_prefix(3 * u64::from(CS)), 3);
    // Absurd indexes neither panic nor wrap.
    assert_eq!(l.plain_offset(u64::MAX), u64::MAX);
    assert_eq!(l.cipher_offset(u64::MAX), u64::MAX);
    assert!(l.cipher_len(u64::MAX).is_err());
    assert!(!l.is_last(u64::MAX));
    // The largest blob with the smallest chunks.
    let l = BlobLayout::new(MAX_BLOB_SIZE, MIN_CHUNK_SIZE).unwrap();
    assert_eq!(l.chunk_count(), 4 * 1024 * 1024);
    assert_eq!(
        l.cipher_size(),
        MAX_BLOB_SIZE + 4 * 1024 * 1024 * TAG_LEN as u64
    );
}

#[test]
fn layout_from_cipher_size() {
    for size in [0u64, 1, 1023, 1024, 1025, 5000, 3 * 1024] {
        let l = layout(size);
        assert_eq!(
            BlobLayout::from_cipher_size(l.cipher_size(), CS).unwrap(),
            l
        );
    }
    for bad in [0u64, 15, 1024 + 16 + 5, 1024 + 16 + 16] {
        assert!(BlobLayout::from_cipher_size(bad, CS).is_err(), "{bad}");
    }
    assert!(BlobLayout::from_cipher_size(100, 5).is_err());
    assert!(BlobLayout::from_cipher_size(u64::MAX, CS).is_err());
}

#[test]
fn nonce_and_aad_layout() {
    let l = layout(2 * u64::from(CS) + 7);
    assert_eq!(l.nonce(1), [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(l.nonce(2), [2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    let aad = l.aad(2);
    assert_eq!(&aad[..12], b"kith-blob-v1");
    assert_eq!(&aad[12..20], &(2055u64).to_le_bytes());
    assert_eq!(&aad[20..24], &1024u32.to_le_bytes());
    assert_eq!(&aad[24..32], &2u64.to_le_bytes());
    assert_eq!(aad[32], 1);
    assert_eq!(l.aad(0)[32], 0);
}

#[test]
fn the_last_flag_is_authenticated() {
    // A chunk sealed as "not last" does not open as "last" at the same index and size,
    // even though nothing else differs: encrypt by hand with the flag flipped.
    let key = BlobKey([7; 32]);
    let l = layout(u64::from(CS) + 1);
    let plain = vec![1u8; 1];
    let mut nonce = l.nonce(1);
    let mut aad = l.aad(1);
    nonce[8] = 0;
    aad[32] = 0;
    let forged = ChaCha20Poly1305::new((&key.0).into())
        .encrypt(
            &nonce.into(),
            AeadPayload {
                msg: &plain,
                aad: &aad,
            },
        )
        .unwrap();
    assert!(matches!(
        open_chunk(&key, &l, 1, &forged),
        Err(BlobError::Corrupt { index: 1 })
    ));
    assert_eq!(
        open_chunk(&key, &l, 1, &seal_chunk(&key, &l, 1, &plain).unwrap()).unwrap(),
        plain
    );
}

#[test]
fn seal_checks_lengths() {
    let key = BlobKey([1; 32]);
    let l = layout(1500);
    assert!(matches!(
        seal_chunk(&key, &l, 0, &[0; 1000]),
        Err(BlobError::Length {
            index: 0,
            expected: 1024,
            got: 1000
        })
    ));
    assert!(matches!(
        seal_chunk(&key, &l, 1, &[0; 477]),
        Err(BlobError::Length {
            index: 1,
            expected: 476,
            got: 477
        })
    ));
    assert!(matches!(
        seal_chunk(&key, &l, 2, &[]),
        Err(BlobError::NoSuchChunk { index: 2, count: 2 })
    ));
    assert!(matches!(
        open_chunk(&key, &l, 9, &[0; 20]),
        Err(BlobError::NoSuchChunk { .. })
    ));
    // Shorter than a tag, or empty: corrupt, not a panic.
    for c in [&[][..], &[0; 5], &[0; 16]] {
        assert!(matches!(
            open_chunk(&key, &l, 1, c),
            Err(BlobError::Corrupt { index: 1 })
        ));
    }
}

#[test]
fn hex() {
    let h = BlobHash([0xab; 32]);
    assert_eq!(h.to_hex(), "ab".repeat(32));
    assert_eq!(h.to_string(), h.to_hex());
    assert_eq!(BlobHash::from_hex(&h.to_hex()).unwrap(), h);
    assert_eq!(h.to_hex().parse::<BlobHash>().unwrap(), h);
    let mut counting = [0u8; 32];
    for (i, b) in counting.iter_mut().enumerate() {
        *b = (i * 8) as u8;
    }
    let c = BlobHash(counting);
    assert_eq!(BlobHash::from_hex(&c.to_hex()).unwrap(), c);
    for bad in [
        String::new(),
        "ab".repeat(31),
        "ab".repeat(33),
        "AB".repeat(32),
        format!("0x{}", "ab".repeat(31)),
        format!("{}g", "a".repeat(63)),
        format!("{}é", "a".repeat(62)),
    ] {
        assert!(
            matches!(BlobHash::from_hex(&bad), Err(BlobError::Hex)),
            "{bad}"
        );
    }
}

#[test]
fn key_is_not_printed() {
    let k = BlobKey([0x42; 32]);
    let s = format!("{k:?}");
    assert!(!s.contains("42") && !s.contains("66"), "{s}");
}

#[test]
fn hash_is_plain_blake2s() {
    // BLAKE2s-256 of the empty string (RFC 7693 / Python hashlib.blake2s(b"")).
    assert_eq!(
        BlobHash::of(b"").to_hex(),
        "69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9"
    );
    assert_eq!(
        BlobHash::of(b"abc").to_hex(),
        "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"
    );
}

#[test]
fn open_blob_checks_hash_and_length() {
    let key = BlobKey([3; 32]);
    let (l, ct, h) = seal_blob(&key, CS, &[5; 3000]).unwrap();
    assert_eq!(open_blob(&key, &l, &h, &ct).unwrap(), vec![5; 3000]);
    assert!(matches!(
        open_blob(&key, &l, &BlobHash([0; 32]), &ct),
        Err(BlobError::HashMismatch { .. })
    ));
    assert!(matches!(
        open_blob(&key, &l, &h, &ct[..ct.len() - 1]),
        Err(BlobError::Length { .. })
    ));
    // Right hash and length but the wrong key: the chunks say so.
    assert!(matches!(
        open_blob(&BlobKey([4; 32]), &l, &h, &ct),
        Err(BlobError::Corrupt { index: 0 })
    ));
}
