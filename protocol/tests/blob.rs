//! Media blobs through the public API: round trips, every way of moving or changing a chunk,
//! the streaming hasher, `/kith/media/1` decoders under hostile bytes, and the test vectors in
//! `tests/vectors/blob.json`.
//!
//! Regenerate the vectors with
//! `KITH_WRITE_VECTORS=1 cargo test -p kith-protocol --test blob -- --ignored generate_blob_vectors`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use kith_protocol::{
    blob::{
        open_blob, open_chunk, seal_blob, seal_chunk, BlobError, BlobHash, BlobHasher, BlobKey,
        BlobLayout, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, TAG_LEN,
    },
    frame,
    media::{MediaRequest, MediaResponse, MAX_CHUNKS_PER_REQUEST},
};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

const CS: u32 = MIN_CHUNK_SIZE;

fn plaintext(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn key(seed: u64) -> BlobKey {
    BlobKey::generate(&mut ChaCha20Rng::seed_from_u64(seed))
}

/// The encrypted chunks of a blob, separately.
fn chunks(layout: &BlobLayout, cipher: &[u8]) -> Vec<Vec<u8>> {
    (0..layout.chunk_count())
        .map(|i| {
            let start = layout.cipher_offset(i) as usize;
            cipher[start..start + layout.cipher_len(i).unwrap()].to_vec()
        })
        .collect()
}

fn is_corrupt(r: Result<Vec<u8>, BlobError>, at: u64) -> bool {
    matches!(r, Err(BlobError::Corrupt { index }) if index == at)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_any_size(
        chunk_size in prop_oneof![Just(MIN_CHUNK_SIZE), Just(1500u32), Just(4096u32)],
        pick in 0usize..7,
        extra in 0usize..5000,
        seed in any::<u64>(),
    ) {
        let c = chunk_size as usize;
        let len = [0, 1, c - 1, c, c + 1, 3 * c, extra][pick];
        let plain = plaintext(len, seed);
        let k = key(seed);
        let (layout, cipher, hash) = seal_blob(&k, chunk_size, &plain).unwrap();
        prop_assert_eq!(layout, BlobLayout::new(len as u64, chunk_size).unwrap());
        prop_assert_eq!(cipher.len() as u64, layout.cipher_size());
        prop_assert_eq!(BlobHash::of(&cipher), hash);
        prop_assert_eq!(open_blob(&k, &layout, &hash, &cipher).unwrap(), plain.clone());
        // Chunk by chunk, in any order (multi-holder downloads).
        let cs = chunks(&layout, &cipher);
        for i in (0..layout.chunk_count()).rev() {
            let p = open_chunk(&k, &layout, i, &cs[i as usize]).unwrap();
            let start = layout.plain_offset(i) as usize;
            prop_assert_eq!(&p[..], &plain[start..start + layout.plain_len(i).unwrap()]);
        }
        // Any single flipped bit anywhere is caught by the chunk holding it.
        if !cipher.is_empty() {
            let at = (seed as usize) % cipher.len();
            let i = at as u64 / (u64::from(chunk_size) + TAG_LEN as u64);
            let mut bad = cs[i as usize].clone();
            bad[at - layout.cipher_offset(i) as usize] ^= 1 << (seed % 8);
            prop_assert!(is_corrupt(open_chunk(&k, &layout, i, &bad), i));
        }
    }

    #[test]
    fn streaming_hash_equals_one_shot(
        data in proptest::collection::vec(any::<u8>(), 0..5000),
        cuts in proptest::collection::vec(0usize..5000, 0..10),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        cuts.sort_unstable();
        let mut h = BlobHasher::new();
        let mut at = 0;
        for c in cuts {
            h.update(&data[at..c]);
            at = c;
        }
        h.update(&data[at..]);
        prop_assert_eq!(h.finish(), BlobHash::of(&data));
    }

    #[test]
    fn media_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        // Raw bodies, framed bodies, and the bytes as they come.
        let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        for buf in [&bytes[..], &framed[..]] {
            if let Ok(Some((r, used))) = MediaRequest::decode_frame(buf) {
                prop_assert!(used <= buf.len());
                prop_assert!(r.validate().is_ok());
            }
            if let Ok(Some((r, used))) = MediaResponse::decode_frame(buf) {
                prop_assert!(used <= buf.len());
                prop_assert!(r.validate().is_ok());
            }
        }
        let _ = kith_protocol::codec::decode::<MediaRequest>(&bytes);
        let _ = kith_protocol::codec::decode::<MediaResponse>(&bytes);
    }

    #[test]
    fn mutated_media_frames_never_panic(
        pick in 0usize..3,
        at in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let h = BlobHash([1; 32]);
        let mut buf = Vec::new();
        match pick {
            0 => MediaRequest::Get { hash: h, first: 5, count: 2 }.encode_frame(&mut buf),
            1 => MediaRequest::Chunk { hash: h, index: 5, bytes: vec![3; 40] }.encode_frame(&mut buf),
            _ => MediaResponse::Chunk { hash: h, index: 5, bytes: vec![3; 40] }.encode_frame(&mut buf),
        }
        .unwrap();
        let i = at % buf.len();
        buf[i] = byte;
        let _ = MediaRequest::decode_frame(&buf);
        let _ = MediaResponse::decode_frame(&buf);
    }
}

#[test]
fn tampering_is_corrupt() {
    let plain = plaintext(3 * CS as usize + 100, 1);
    let k = key(1);
    let (layout, cipher, _) = seal_blob(&k, CS, &plain).unwrap();
    let cs = chunks(&layout, &cipher);
    assert_eq!(cs.len(), 4);
    let last = layout.chunk_count() - 1;

    // A flipped byte in the body and in the tag.
    for at in [0, 5, cs[1].len() - 1] {
        let mut bad = cs[1].clone();
        bad[at] ^= 0x80;
        assert!(is_corrupt(open_chunk(&k, &layout, 1, &bad), 1), "{at}");
    }
    // Two chunks swapped (same length, so only the index binding catches it).
    assert!(is_corrupt(open_chunk(&k, &layout, 1, &cs[2]), 1));
    assert!(is_corrupt(open_chunk(&k, &layout, 2, &cs[1]), 2));
    // A chunk repeated in place of another.
    assert!(is_corrupt(open_chunk(&k, &layout, 0, &cs[1]), 0));
    // A chunk from another blob of the same layout, under another key.
    let other_plain = plaintext(plain.len(), 2);
    let k2 = key(2);
    let (other_layout, other_cipher, _) = seal_blob(&k2, CS, &other_plain).unwrap();
    assert_eq!(other_layout, layout);
    let other = chunks(&layout, &other_cipher);
    for i in 0..=last {
        assert!(is_corrupt(
            open_chunk(&k, &layout, i, &other[i as usize]),
            i
        ));
    }
    // The right chunks under the wrong key.
    assert!(is_corrupt(open_chunk(&k2, &layout, 0, &cs[0]), 0));
    // The last chunk truncated (by one byte, or to the tag), or extended.
    let l = cs[last as usize].clone();
    assert!(is_corrupt(
        open_chunk(&k, &layout, last, &l[..l.len() - 1]),
        last
    ));
    assert!(is_corrupt(
        open_chunk(&k, &layout, last, &l[l.len() - TAG_LEN..]),
        last
    ));
    let mut longer = l.clone();
    longer.push(0);
    assert!(is_corrupt(open_chunk(&k, &layout, last, &longer), last));
    // A claimed size that differs by one byte, either way: every chunk fails, even the ones
    // whose length and position are unchanged.
    for size in [layout.size - 1, layout.size + 1] {
        let lie = BlobLayout::new(size, CS).unwrap();
        for i in 0..=last {
            assert!(
                is_corrupt(open_chunk(&k, &lie, i, &cs[i as usize]), i),
                "{size} {i}"
            );
        }
    }
    // Another claimed chunk size (a 2 KiB layout: chunk 0 would need to be 2 KiB + tag).
    let lie = BlobLayout::new(layout.size, 2 * CS).unwrap();
    let joined = [cs[0].clone(), cs[1].clone()].concat();
    assert!(is_corrupt(
        open_chunk(&k, &lie, 0, &joined[..lie.cipher_len(0).unwrap()]),
        0
    ));
    // The last chunk dropped and the size claimed to end at the previous one: that chunk was
    // sealed as "not last" under another size, so it fails.
    let cut = BlobLayout::new(layout.plain_offset(last), CS).unwrap();
    assert_eq!(cut.chunk_count(), last);
    assert!(is_corrupt(
        open_chunk(&k, &cut, last - 1, &cs[last as usize - 1]),
        last - 1
    ));
    // The whole blob truncated at a chunk boundary: the hash and the length say so.
    let (_, _, hash) = seal_blob(&k, CS, &plain).unwrap();
    let prefix = &cipher[..layout.cipher_offset(last) as usize];
    assert!(open_blob(&k, &layout, &hash, prefix).is_err());
    assert!(matches!(
        open_blob(&k, &cut, &BlobHash::of(prefix), prefix),
        Err(BlobError::Corrupt { index: 0 })
    ));
    // Nothing above changed the genuine chunks.
    for i in 0..=last {
        assert!(open_chunk(&k, &layout, i, &cs[i as usize]).is_ok());
    }
}

#[test]
fn exact_multiple_has_no_empty_trailing_chunk_and_empty_file_authenticates() {
    let k = key(3);
    let (l, c, h) = seal_blob(&k, CS, &plaintext(2 * CS as usize, 3)).unwrap();
    assert_eq!(l.chunk_count(), 2);
    assert_eq!(c.len(), 2 * (CS as usize + TAG_LEN));
    assert!(open_blob(&k, &l, &h, &c).is_ok());
    // An empty chunk appended is not part of the blob.
    assert!(open_chunk(&k, &l, 2, &[0; TAG_LEN]).is_err());

    let (l, c, h) = seal_blob(&k, CS, &[]).unwrap();
    assert_eq!((l.chunk_count(), c.len()), (1, TAG_LEN));
    assert_eq!(open_blob(&k, &l, &h, &c).unwrap(), Vec::<u8>::new());
    // A forged empty blob (a zero tag) does not authenticate.
    assert!(is_corrupt(open_chunk(&k, &l, 0, &[0; TAG_LEN]), 0));
}

#[test]
fn chunk_by_chunk_equals_whole() {
    // What a node does with a large file: seal each chunk, hash as it goes.
    let plain = plaintext(5 * DEFAULT_CHUNK_SIZE as usize / 2, 4);
    let k = key(4);
    let layout = BlobLayout::new(plain.len() as u64, DEFAULT_CHUNK_SIZE).unwrap();
    let mut hasher = BlobHasher::new();
    let mut all = Vec::new();
    for i in 0..layout.chunk_count() {
        let start = layout.plain_offset(i) as usize;
        let c = seal_chunk(
            &k,
            &layout,
            i,
            &plain[start..start + layout.plain_len(i).unwrap()],
        )
        .unwrap();
        hasher.update(&c);
        all.extend_from_slice(&c);
    }
    let (l2, whole, h2) = seal_blob(&k, DEFAULT_CHUNK_SIZE, &plain).unwrap();
    assert_eq!((layout, &all, hasher.finish()), (l2, &whole, h2));
}

#[test]
fn largest_chunk_travels_in_one_frame() {
    let k = key(5);
    let layout = BlobLayout::new(u64::from(MAX_CHUNK_SIZE) * 2, MAX_CHUNK_SIZE).unwrap();
    let c = seal_chunk(&k, &layout, 1, &vec![7; MAX_CHUNK_SIZE as usize]).unwrap();
    let resp = MediaResponse::Chunk {
        hash: BlobHash([0; 32]),
        index: 1,
        bytes: c.clone(),
    };
    let mut buf = Vec::new();
    resp.encode_frame(&mut buf).unwrap();
    assert!(buf.len() - frame::LEN_PREFIX <= frame::MAX_FRAME_LEN);
    let (back, _) = MediaResponse::decode_frame(&buf).unwrap().unwrap();
    let MediaResponse::Chunk { bytes, .. } = back else {
        panic!("not a chunk")
    };
    assert_eq!(
        open_chunk(&k, &layout, 1, &bytes).unwrap(),
        vec![7; MAX_CHUNK_SIZE as usize]
    );
    assert!(MediaRequest::Get {
        hash: BlobHash([0; 32]),
        first: 0,
        count: MAX_CHUNKS_PER_REQUEST
    }
    .validate()
    .is_ok());
}

// ---- Test vectors ----

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    key_hex: String,
    size: u64,
    chunk_size: u32,
    plaintext_hex: String,
    ciphertext_hex: String,
    hash_hex: String,
}

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/blob.json")
}

fn generate() -> Vec<Vector> {
    // Empty, one byte, one byte short of a chunk, exactly two chunks, and two and a bit.
    let cases: [(u64, u32, usize); 6] = [
        (1, 1024, 0),
        (2, 1024, 1),
        (3, 1024, 1023),
        (4, 1024, 2048),
        (5, 1500, 3100),
        (6, 1024, 2100),
    ];
    cases
        .into_iter()
        .map(|(seed, chunk_size, len)| {
            let k = key(seed);
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (layout, cipher, hash) = seal_blob(&k, chunk_size, &plain).unwrap();
            Vector {
                key_hex: hex::encode(k.0),
                size: layout.size,
                chunk_size,
                plaintext_hex: hex::encode(&plain),
                ciphertext_hex: hex::encode(&cipher),
                hash_hex: hash.to_hex(),
            }
        })
        .collect()
}

#[test]
fn blob_vectors_open() {
    let text = std::fs::read_to_string(vectors_path()).unwrap();
    let vectors: Vec<Vector> = serde_json::from_str(&text).unwrap();
    assert!(!vectors.is_empty());
    for v in &vectors {
        let k = BlobKey(hex::decode(&v.key_hex).unwrap().try_into().unwrap());
        let layout = BlobLayout::new(v.size, v.chunk_size).unwrap();
        let cipher = hex::decode(&v.ciphertext_hex).unwrap();
        let hash = BlobHash::from_hex(&v.hash_hex).unwrap();
        assert_eq!(
            open_blob(&k, &layout, &hash, &cipher).unwrap(),
            hex::decode(&v.plaintext_hex).unwrap()
        );
    }
    assert_eq!(vectors, generate(), "vectors are reproducible");
}

#[test]
#[ignore = "writes tests/vectors/blob.json"]
fn generate_blob_vectors() {
    if std::env::var_os("KITH_WRITE_VECTORS").is_none() {
        return;
    }
    let json = serde_json::to_string_pretty(&generate()).unwrap();
    std::fs::write(vectors_path(), json + "\n").unwrap();
}
