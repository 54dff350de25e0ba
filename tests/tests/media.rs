//! Images and videos: a file posted to `POST /v1/media` reaches the recipient byte for byte,
//! straight from the sender when both are online and through the recipient's store peers
//! when it is away; a download cut by a crash resumes at its last verified chunk; a store
//! peer serving garbage cannot corrupt the result; limits and unknown types behave; a message
//! naming another sender's blob hash gets a record of its own and cannot take that blob over.
//!
//! Everything runs in this process on `127.0.0.1` (port 0) with temporary directories; every
//! wait is bounded and names what it waited for.

use std::sync::atomic::Ordering::Relaxed;

use anyhow::{anyhow, ensure, Context, Result};
use kith_node::media::{MediaId, MediaRecord, MediaState};
use kith_protocol::{
    blob::{BlobHash, BlobKey, BlobLayout, DEFAULT_CHUNK_SIZE},
    payload::MediaRef,
    DeliveryStatus, MessageId,
};
use kith_tests::{
    init_logging, introduce,
    mesh::{wait_conversation_statuses, MailboxClient, Mesh},
    wait_for, Auth, TestNode, TIMEOUT,
};
use reqwest::Method;
use serde_json::Value;

/// The size of the big test file.
const BIG: usize = 20 * 1024 * 1024;

/// Deterministic, incompressible-looking bytes.
fn file_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Posts `bytes` as a media message from `from` to `to`; returns the answer.
async fn post_media(
    from: &TestNode,
    to: &TestNode,
    name: &str,
    mime: &str,
    bytes: Vec<u8>,
) -> Result<kith_tests::ApiResponse> {
    from.api()?
        .raw(
            Method::POST,
            &format!("/v1/media?to={}&name={name}&caption=look", to.user_id()),
            Auth::Token,
            Some((mime, bytes)),
        )
        .await
}

/// Posts and expects 201; returns the blob hash.
async fn send_media(
    from: &TestNode,
    to: &TestNode,
    name: &str,
    mime: &str,
    bytes: Vec<u8>,
) -> Result<BlobHash> {
    Ok(send_media_message(from, to, name, mime, bytes).await?.1)
}

/// [`send_media`], also returning the message's id.
async fn send_media_message(
    from: &TestNode,
    to: &TestNode,
    name: &str,
    mime: &str,
    bytes: Vec<u8>,
) -> Result<(MessageId, BlobHash)> {
    let res = post_media(from, to, name, mime, bytes).await?;
    res.expect_status(201)?;
    let field = |name: &str| {
        res.body
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("no {name} in {}", res.body))
    };
    let (id, hex) = (field("id")?, field("hash")?);
    let id = id.parse().map_err(|e| anyhow!("bad id {id}: {e:?}"))?;
    let hash = BlobHash::from_hex(hex).map_err(|e| anyhow!("bad hash {hex}: {e}"))?;
    Ok((id, hash))
}

/// Waits until `node` has a record of `hash` in `state`.
async fn wait_media(node: &TestNode, hash: &BlobHash, state: MediaState) -> Result<MediaRecord> {
    let what = format!("{} has media {hash} in state {state:?}", node.name());
    wait_for(TIMEOUT * 3, &what, || async {
        let rec = node.node()?.media(hash)?;
        Ok(rec.filter(|r| r.state == state))
    })
    .await
}

/// `GET /v1/media/{hash}` on `node` with an optional `Range`; returns status, headers, body.
async fn get_media(
    node: &TestNode,
    hash: &BlobHash,
    range: Option<&str>,
) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
    let r = node.running()?;
    let mut req = reqwest::Client::new()
        .get(format!("http://{}/v1/media/{hash}", r.api_addr))
        .bearer_auth(&r.token);
    if let Some(range) = range {
        req = req.header(reqwest::header::RANGE, range);
    }
    let res = req.send().await.context("GET media")?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.bytes().await.context("reading media body")?.to_vec();
    Ok((status, headers, body))
}

/// Starts alice and bob on `mesh` (or alone when `mesh` is `None`) and introduces them.
async fn pair(mesh: Option<&Mesh>) -> Result<(TestNode, TestNode)> {
    let (alice, bob) = match mesh {
        Some(m) => (m.node("alice", |_| {}).await?, m.node("bob", |_| {}).await?),
        None => (
            TestNode::start("alice").await?,
            TestNode::start("bob").await?,
        ),
    };
    introduce(&alice, &bob).await?;
    if let Some(m) = mesh {
        let mut probe = MailboxClient::random().await?;
        m.wait_known_by(&mut probe, &[&alice, &bob]).await?;
    }
    Ok((alice, bob))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_file_online_arrives_byte_identical() -> Result<()> {
    init_logging();
    let (alice, bob) = pair(None).await?;
    let original = file_bytes(BIG, 1);
    let hash = send_media(&alice, &bob, "clip.mp4", "video/mp4", original.clone()).await?;
    let rec = wait_media(&bob, &hash, MediaState::Complete).await?;
    ensure!(rec.size == BIG as u64 && rec.mime == "video/mp4" && rec.name == "clip.mp4");
    let (status, headers, body) = get_media(&bob, &hash, None).await?;
    ensure!(status == 200, "GET media answered {status}");
    ensure!(
        headers.get("content-type").and_then(|v| v.to_str().ok()) == Some("video/mp4"),
        "content type {:?}",
        headers.get("content-type")
    );
    ensure!(body == original, "bob's copy differs from alice's file");
    // The conversation entry shows it, with the caption as its text.
    let page = bob
        .api()?
        .get(&format!("/v1/conversations/{}", alice.user_id()))
        .await?;
    let media = &page.body["messages"][0]["media"];
    ensure!(
        media["state"] == "complete" && media["hash"] == hash.to_hex(),
        "{}",
        page.body
    );
    ensure!(page.body["messages"][0]["text"] == "look", "{}", page.body);
    // A range, as a video element asks for it.
    let (status, headers, body) = get_media(&bob, &hash, Some("bytes=1000-1999")).await?;
    ensure!(status == 206, "ranged GET answered {status}");
    ensure!(body == original[1000..2000], "ranged bytes differ");
    ensure!(
        headers.get("content-range").and_then(|v| v.to_str().ok())
            == Some(&format!("bytes 1000-1999/{BIG}")[..])
    );
    // A media link streams without the token (what a <video> element uses), for this path
    // only; a tampered one is refused.
    let link = bob
        .api()?
        .post(&format!("/v1/media/{hash}/link"), &serde_json::json!({}))
        .await?;
    link.expect_status(200)?;
    let url = link.body["url"]
        .as_str()
        .ok_or_else(|| anyhow!("no url in {}", link.body))?;
    let base = format!("http://{}", bob.running()?.api_addr);
    let http = reqwest::Client::new();
    let res = http
        .get(format!("{base}{url}"))
        .header(reqwest::header::RANGE, "bytes=0-9")
        .send()
        .await?;
    ensure!(res.status() == 206, "media link answered {}", res.status());
    ensure!(res.bytes().await?.as_ref() == &original[..10]);
    let tampered = url.replacen("cap=", "cap=00", 1);
    let res = http.get(format!("{base}{tampered}")).send().await?;
    ensure!(
        res.status() == 401,
        "tampered link answered {}",
        res.status()
    );
    let other_path = url.replacen(&hash.to_hex(), &"ab".repeat(32), 1);
    let res = http.get(format!("{base}{other_path}")).send().await?;
    ensure!(
        res.status() == 401,
        "link reused for another path answered {}",
        res.status()
    );
    let res = http
        .get(format!("{base}/v1/conversations/{}", alice.user_id()))
        .send()
        .await?;
    ensure!(res.status() == 401, "no token, no link: {}", res.status());
    let (served, _, _) = alice.node()?.media_counters();
    let count = BlobLayout::new(BIG as u64, rec.chunk_size)?.chunk_count();
    ensure!(served == count, "alice served {served} chunks for {count}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_file_offline_arrives_through_store_peers() -> Result<()> {
    init_logging();
    let mesh = Mesh::start(3, |_| {}).await?;
    let original = file_bytes(BIG, 2);
    let (_alice, mut bob, hash, _) =
        sent_while_both_away(&mesh, "holiday.mp4", "video/mp4", original.clone()).await?;
    bob.restart().await?;
    wait_media(&bob, &hash, MediaState::Complete).await?;
    let (status, _, body) = get_media(&bob, &hash, None).await?;
    ensure!(
        status == 200 && body == original,
        "bob's copy differs ({status})"
    );
    // Bob deleted the blob from the store peers once he had it.
    wait_for(TIMEOUT, "store peers let go of the blob", || async {
        let held: u64 = mesh
            .stores
            .iter()
            .filter_map(|s| s.metrics().ok())
            .map(|m| m.blobs.load(Relaxed))
            .sum();
        Ok((held == 0).then_some(()))
    })
    .await?;
    Ok(())
}

/// Alice sends `bytes` to bob while bob is away, waits until W store peers hold the blob
/// (`available`), and goes away too: from then on only the store peers have it. Returns both
/// (stopped), the hash, and alice's record at `available`.
async fn sent_while_both_away(
    mesh: &Mesh,
    name: &str,
    mime: &str,
    bytes: Vec<u8>,
) -> Result<(TestNode, TestNode, BlobHash, MediaRecord)> {
    let (mut alice, mut bob) = pair(Some(mesh)).await?;
    bob.shutdown().await?;
    let (id, hash) = send_media_message(&alice, &bob, name, mime, bytes).await?;
    let sent = wait_media(&alice, &hash, MediaState::Available).await?;
    // `available` needs W = 2 holders; the tests want all three, and alice's shutdown stops
    // her uploads (it waits for nothing unfinished), so the third must be done first.
    wait_all_stores_hold(mesh, &hash).await?;
    // The message itself goes to the store peers once its media is available: until it is
    // sent (✓) it waits in alice's outbox, and would reach bob only when she is back.
    wait_conversation_statuses(&alice, &bob.user_id(), &[id], DeliveryStatus::Sent).await?;
    alice.shutdown().await?;
    Ok((alice, bob, hash, sent))
}

/// Waits until every store peer of `mesh` holds the complete blob; returns its files there.
async fn wait_all_stores_hold(mesh: &Mesh, hash: &BlobHash) -> Result<Vec<std::path::PathBuf>> {
    let files: Vec<std::path::PathBuf> = mesh
        .stores
        .iter()
        .map(|s| s.data_dir().join("blobs").join(hash.to_hex()))
        .collect();
    wait_for(TIMEOUT, "every store peer holds the blob", || async {
        Ok(files.iter().all(|f| f.exists()).then_some(()))
    })
    .await?;
    Ok(files)
}

/// Overwrites every byte of `path` from `offset` on with garbage (same length).
fn corrupt(path: &std::path::Path, offset: u64) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(path)?.len();
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(&vec![0x5a; (len - offset) as usize])?;
    f.sync_all()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_download_resumes_and_bad_chunks_are_never_kept() -> Result<()> {
    init_logging();
    let mesh = Mesh::start(3, |_| {}).await?;
    let original = file_bytes(BIG, 3);
    let (_alice, mut bob, hash, sent) =
        sent_while_both_away(&mesh, "big.bin", "application/x-anything", original.clone()).await?;
    ensure!(
        sent.mime == "application/octet-stream",
        "unknown type kept: {}",
        sent.mime
    );
    // Wait until every store peer completed the upload (W=2 was enough for `available`).
    let layout = BlobLayout::new(BIG as u64, sent.chunk_size)?;
    let count = layout.chunk_count();
    let files = wait_all_stores_hold(&mesh, &hash).await?;
    // Every holder serves garbage from the middle on: the first half verifies, the rest
    // cannot. This is the "cut": bob gets stuck at half and must not store a bad byte.
    let half = count / 2;
    let saved: Vec<Vec<u8>> = files
        .iter()
        .map(std::fs::read)
        .collect::<std::io::Result<_>>()?;
    for f in &files {
        corrupt(f, layout.cipher_offset(half))?;
    }
    bob.restart().await?;
    wait_for(
        TIMEOUT * 3,
        "bob verified the good half and rejected bad chunks",
        || async {
            let rec = bob.node()?.media(&hash)?;
            let (_, _, rejected) = bob.node()?.media_counters();
            Ok(rec
                .filter(|r| r.done_chunks == half && rejected >= 1)
                .map(|_| ()))
        },
    )
    .await?;
    // Only verified bytes are ever served: a range past the verified prefix waits and fails.
    let (status, _, body) = get_media(&bob, &hash, Some("bytes=0-99")).await?;
    ensure!(
        status == 206 && body == original[..100],
        "verified prefix ({status})"
    );
    // Bob crashes mid-download; the stores are mended while he is down.
    bob.abort().await?;
    for (f, bytes) in files.iter().zip(&saved) {
        std::fs::write(f, bytes)?;
    }
    bob.restart().await?;
    wait_media(&bob, &hash, MediaState::Complete).await?;
    let (status, _, body) = get_media(&bob, &hash, None).await?;
    ensure!(
        status == 200 && body == original,
        "bob's copy differs ({status})"
    );
    // The restarted node fetched only what it had not verified before the crash.
    let (_, fetched, rejected) = bob.node()?.media_counters();
    ensure!(
        fetched == count - half && rejected == 0,
        "after the restart bob fetched {fetched} chunks ({rejected} bad); only the {} unverified ones were needed",
        count - half
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_store_serving_garbage_cannot_corrupt_the_result() -> Result<()> {
    init_logging();
    let mesh = Mesh::start(3, |_| {}).await?;
    let original = file_bytes(4 * 1024 * 1024, 4);
    let (_alice, mut bob, hash, _) =
        sent_while_both_away(&mesh, "a.bin", "application/octet-stream", original.clone()).await?;
    let files = wait_all_stores_hold(&mesh, &hash).await?;
    // Two of the three holders serve garbage from the first byte on.
    corrupt(&files[0], 0)?;
    corrupt(&files[1], 0)?;
    bob.restart().await?;
    wait_media(&bob, &hash, MediaState::Complete).await?;
    let (status, _, body) = get_media(&bob, &hash, None).await?;
    ensure!(
        status == 200 && body == original,
        "bob's copy differs ({status})"
    );
    let (_, fetched, rejected) = bob.node()?.media_counters();
    let bad_served: u64 = mesh.stores[..2]
        .iter()
        .filter_map(|s| s.metrics().ok())
        .map(|m| m.blob_chunks_out.load(Relaxed))
        .sum();
    ensure!(
        bad_served > 0,
        "no bad holder was asked; the test did not exercise verification"
    );
    ensure!(
        rejected >= 1 && fetched == 64,
        "bad holders served {bad_served} chunks; bob rejected {rejected} and kept {fetched}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_get_413_and_unknown_types_travel_as_octet_stream() -> Result<()> {
    init_logging();
    let alice = TestNode::start_with("alice", |c| c.max_media_bytes = 1024 * 1024).await?;
    let bob = TestNode::start("bob").await?;
    introduce(&alice, &bob).await?;
    // Streamed without a length, so the node only learns the size by reading it.
    let r = alice.running()?;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(vec![0; 512 * 1024]),
        Ok(vec![0; 512 * 1024]),
        Ok(vec![0; 1]),
    ];
    let res = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/media?to={}&name=big.bin",
            r.api_addr,
            bob.user_id()
        ))
        .bearer_auth(&r.token)
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await?;
    ensure!(
        res.status() == 413,
        "oversized upload answered {}",
        res.status()
    );
    let body: Value = res.json().await?;
    ensure!(body["error"]["code"] == "too_large", "{body}");
    // Nothing of it was kept.
    let tmp = alice.data_dir().join("media").join("tmp");
    ensure!(
        std::fs::read_dir(&tmp)?.next().is_none(),
        "a refused upload left a file in {}",
        tmp.display()
    );
    // An unknown recipient, a bad hash.
    let stranger = TestNode::start("carol").await?;
    post_media(&alice, &stranger, "x", "image/png", vec![1; 10])
        .await?
        .expect_error(404, "unknown_contact")?;
    alice
        .api()?
        .get("/v1/media/not-a-hash")
        .await?
        .expect_error(400, "invalid_path")?;
    alice
        .api()?
        .get(&format!("/v1/media/{}", "0".repeat(64)))
        .await?
        .expect_error(404, "not_found")?;

    let hash = send_media(
        &alice,
        &bob,
        "notes.xyz",
        "application/x-kith-test",
        vec![7; 5000],
    )
    .await?;
    let rec = wait_media(&bob, &hash, MediaState::Complete).await?;
    ensure!(
        rec.mime == "application/octet-stream",
        "bob sees {}",
        rec.mime
    );
    let (status, headers, body) = get_media(&bob, &hash, None).await?;
    ensure!(status == 200 && body == vec![7; 5000]);
    ensure!(
        headers.get("content-type").and_then(|v| v.to_str().ok())
            == Some("application/octet-stream")
    );
    ensure!(
        headers
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("attachment")),
        "not offered as a download: {:?}",
        headers.get("content-disposition")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_carry_a_preview() -> Result<()> {
    init_logging();
    let (alice, bob) = pair(None).await?;
    let img = image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)?;
    let png = png.into_inner();
    let hash = send_media(&alice, &bob, "photo.png", "image/png", png.clone()).await?;
    // The preview is in the message itself: bob can show it before the download ends.
    let preview = wait_for(TIMEOUT, "bob has the preview", || async {
        let r = bob.running()?;
        let res = reqwest::Client::new()
            .get(format!("http://{}/v1/media/{hash}/preview", r.api_addr))
            .bearer_auth(&r.token)
            .send()
            .await?;
        if res.status() != 200 {
            return Ok(None);
        }
        Ok(Some(res.bytes().await?.to_vec()))
    })
    .await?;
    ensure!(preview.starts_with(&[0xFF, 0xD8]), "preview is not a JPEG");
    ensure!(
        preview.len() < 16 * 1024,
        "preview is {} bytes",
        preview.len()
    );
    let thumb = image::load_from_memory(&preview)?;
    ensure!(thumb.width() <= 160 && thumb.height() <= 160);
    wait_media(&bob, &hash, MediaState::Complete).await?;
    let (_, _, body) = get_media(&bob, &hash, None).await?;
    ensure!(body == png);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_running_a_media_hash_does_not_hijack_the_media() -> Result<()> {
    init_logging();
    let (mut alice, mut bob) = pair(None).await?;
    let mallory = TestNode::start("mallory").await?;
    introduce(&mallory, &bob).await?;
    // Alice sends while bob is away, then goes away too: her message waits in her outbox.
    bob.shutdown().await?;
    let original = file_bytes(300 * 1024, 5);
    let res = post_media(&alice, &bob, "real.png", "image/png", original.clone()).await?;
    res.expect_status(201)?;
    let field = |name: &str| {
        res.body
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no {name} in {}", res.body))
    };
    let hash = BlobHash::from_hex(&field("hash")?)?;
    let alice_id: MessageId = field("id")?.parse()?;
    alice.shutdown().await?;

    // Mallory names alice's hash with a key of his own, and serves bytes of his own under it
    // (the right size, sealed under his key: every chunk opens for bob).
    let junk = file_bytes(original.len(), 6);
    let mallory_node = mallory.node()?;
    std::fs::write(mallory_node.media_files().sent_path(&hash), &junk)?;
    let forged = mallory_node
        .send_media(
            bob.user_id(),
            MediaRef {
                hash: hash.0,
                size: junk.len() as u64,
                chunk_size: DEFAULT_CHUNK_SIZE,
                mime: "image/png".into(),
                name: "real.png".into(),
                key: BlobKey::generate(&mut rand::rngs::OsRng).0,
                preview: Vec::new(),
                caption: "look".into(),
            },
        )
        .await?;
    let mallory_media = MediaId {
        outgoing: false,
        peer: mallory.user_id(),
        message: forged.id.parse()?,
    };

    // Bob comes back: mallory's message arrives first, and its download ends failed (the
    // bytes are not the blob the hash names).
    bob.restart().await?;
    introduce(&mallory, &bob).await?;
    let failed = wait_for(TIMEOUT * 2, "bob gave up mallory's media", || async {
        let rec = bob.node()?.media_record(&mallory_media)?;
        Ok(rec.filter(|r| r.state == MediaState::Failed))
    })
    .await?;
    ensure!(failed.hash == hash, "mallory's record names another hash");
    ensure!(
        !bob.node()?
            .media_files()
            .received_path(&mallory_media)
            .exists(),
        "a failed download left a file"
    );

    // Then alice's message: it gets its own record and downloads her bytes.
    alice.restart().await?;
    introduce(&alice, &bob).await?;
    let alice_media = MediaId {
        outgoing: false,
        peer: alice.user_id(),
        message: alice_id,
    };
    wait_for(TIMEOUT * 3, "bob completed alice's media", || async {
        let rec = bob.node()?.media_record(&alice_media)?;
        Ok(rec.filter(|r| r.state == MediaState::Complete))
    })
    .await?;
    let (status, _, body) = get_media(&bob, &hash, None).await?;
    ensure!(
        status == 200 && body == original,
        "GET /v1/media/{{hash}} on bob is not alice's file ({status}, {} bytes)",
        body.len()
    );
    // Both messages are in bob's conversations, each showing its own record.
    let show = |conv: Vec<kith_node::handle::MessageView>, who: &str, id: &MediaId| {
        ensure!(conv.len() == 1, "bob's conversation with {who}: {conv:?}");
        let media = conv[0]
            .media
            .as_ref()
            .ok_or_else(|| anyhow!("{who}'s message shows no media"))?;
        ensure!(
            media.hash == hash.to_hex() && media.id == id.to_hex(),
            "{who}'s message shows {} / {}",
            media.hash,
            media.id
        );
        Ok(media.state)
    };
    let conv = bob.conversation(&alice.user_id())?;
    ensure!(show(conv, "alice", &alice_media)? == MediaState::Complete);
    let conv = bob.conversation(&mallory.user_id())?;
    ensure!(show(conv, "mallory", &mallory_media)? == MediaState::Failed);
    // `?of=` names one message's record exactly.
    let of = |id: &MediaId| format!("/v1/media/{hash}?of={}", id.to_hex());
    let api = bob.api()?;
    api.get(&of(&mallory_media))
        .await?
        .expect_error(410, "media_failed")?;
    api.raw(Method::GET, &of(&alice_media), Auth::Token, None)
        .await?
        .expect_status(200)?;
    api.get(&format!("/v1/media/{hash}?of=00"))
        .await?
        .expect_error(400, "invalid_query")?;
    let records = bob.node()?.media_records(&hash)?;
    ensure!(
        records.len() == 2,
        "bob has {} records of the hash",
        records.len()
    );
    let still = bob
        .node()?
        .media_record(&mallory_media)?
        .ok_or_else(|| anyhow!("mallory's record is gone"))?;
    ensure!(
        still.state == MediaState::Failed && still.key == failed.key,
        "mallory's record changed: {:?}",
        still.state
    );
    // Alice reaches ✓✓.
    wait_for(TIMEOUT, "alice's media message is delivered", || async {
        let conv = alice.conversation(&bob.user_id())?;
        Ok(conv
            .iter()
            .find(|m| m.id == alice_id.to_string())
            .filter(|m| m.status >= DeliveryStatus::Delivered)
            .map(|_| ()))
    })
    .await?;
    Ok(())
}
