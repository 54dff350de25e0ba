//! Attacks on a store peer's resources, each against a real in-process store peer over
//! loopback: floods of `Get`, `Subscribe` and `Delete`, a stalled frame (slow-loris), uploads
//! that announce more than they send, a full disk, one peer taking every stream slot, and
//! connections past the limit. Each test states the bound the store peer keeps — read from
//! its own accounting (metrics) — and checks that an honest client is still served.

use std::{sync::atomic::Ordering::Relaxed, time::Duration};

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures::{AsyncReadExt, AsyncWriteExt};
use kith_bootstrap::Config as StorePeerConfig;
use kith_net::{
    frames::FrameReader,
    protocols::{MAILBOX, MEDIA},
};
use kith_node::time::now_ms;
use kith_protocol::{
    blob::{BlobHash, BlobHasher, BlobLayout, MAX_CHUNK_SIZE},
    frame,
    mailbox::{EnvelopeRef, MailboxRequest, MailboxResponse, RefuseReason},
    media::{MediaRefusal, MediaRequest, MediaResponse, MAX_CHUNKS_PER_REQUEST},
    EnvelopeDigest, LocalIdentity, MessageId,
};
use kith_tests::{
    init_logging,
    mesh::{start_store_with, MailboxClient, Sealer, StorePeer},
    wait_for, TIMEOUT,
};
use libp2p::Stream;

/// Writes media `requests` on `stream`, one frame each, in one write.
async fn send_media(stream: &mut Stream, requests: &[MediaRequest]) -> Result<()> {
    let mut buf = Vec::new();
    for r in requests {
        frame::encode(r, &mut buf)?;
    }
    write_all(stream, &buf).await
}

/// Writes mailbox `requests` on `stream`, one frame each, in one write.
async fn send_mailbox(stream: &mut Stream, requests: &[MailboxRequest]) -> Result<()> {
    let mut buf = Vec::new();
    for r in requests {
        frame::encode(r, &mut buf)?;
    }
    write_all(stream, &buf).await
}

async fn write_all(stream: &mut Stream, buf: &[u8]) -> Result<()> {
    stream.write_all(buf).await?;
    stream.flush().await?;
    Ok(())
}

/// An honest client deposits one envelope for a stranger and is answered `Stored`.
async fn honest_client_is_served(store: &StorePeer) -> Result<()> {
    let mut sender = Sealer::new();
    let bob_id = LocalIdentity::generate(now_ms(), &mut rand::rngs::OsRng);
    let bob = bob_id.bundle();
    let mut client = MailboxClient::as_user(&sender.identity).await?;
    let mut stream = client.open(store).await?;
    let key = stream.register(&bob_id).await?;
    let env = sender.text(&bob, "still served", now_ms() + 3_600_000)?;
    stream
        .send(&[MailboxRequest::Deposit(env.clone(), Some(key))])
        .await?;
    let id = env.id();
    let (_, answer) = stream
        .recv_until("the honest deposit's answer", |r| {
            matches!(r, MailboxResponse::Stored(i) | MailboxResponse::Refused(i, _) if *i == id)
        })
        .await?;
    ensure!(
        answer == MailboxResponse::Stored(id),
        "honest deposit: {answer:?}"
    );
    Ok(())
}

/// Uploads a complete blob of `chunks` maximum chunks for `owner`; returns its hash.
async fn upload_blob(store: &StorePeer, owner: &LocalIdentity, chunks: u64) -> Result<BlobHash> {
    let layout = BlobLayout::new(chunks * u64::from(MAX_CHUNK_SIZE), MAX_CHUNK_SIZE)?;
    let cipher: Vec<Vec<u8>> = (0..layout.chunk_count())
        .map(|i| Ok(vec![i as u8; layout.cipher_len(i)?]))
        .collect::<Result<_>>()?;
    let mut hasher = BlobHasher::new();
    for c in &cipher {
        hasher.update(c);
    }
    let hash = hasher.finish();
    let mut uploader = MailboxClient::random().await?;
    let mut stream = uploader
        .open_raw_at(store.peer_id(), store.addrs(), MEDIA)
        .await?;
    send_media(
        &mut stream,
        &[MediaRequest::Put {
            mailbox: owner.user_id(),
            hash,
            size: layout.size,
            chunk_size: MAX_CHUNK_SIZE,
            expires_ms: now_ms() + 3_600_000,
        }],
    )
    .await?;
    let (r, mut w) = stream.split();
    let mut reader = FrameReader::new(r);
    let first = tokio::time::timeout(TIMEOUT, reader.next_batch::<MediaResponse>(1))
        .await??
        .ok_or_else(|| anyhow!("closed"))?;
    ensure!(
        matches!(first[0], MediaResponse::PutAccepted { .. }),
        "{first:?}"
    );
    for (index, bytes) in cipher.into_iter().enumerate() {
        let mut buf = Vec::new();
        frame::encode(
            &MediaRequest::Chunk {
                hash,
                index: index as u64,
                bytes,
            },
            &mut buf,
        )?;
        w.write_all(&buf).await?;
        w.flush().await?;
        let answer = tokio::time::timeout(TIMEOUT, reader.next_batch::<MediaResponse>(1))
            .await??
            .ok_or_else(|| anyhow!("closed"))?;
        if matches!(answer[0], MediaResponse::Complete { .. }) {
            return Ok(hash);
        }
        ensure!(
            matches!(answer[0], MediaResponse::ChunkAck { .. }),
            "{answer:?}"
        );
    }
    bail!("the upload never completed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_flood_leaves_the_store_peer_within_its_memory_bound_and_serving_others() -> Result<()>
{
    init_logging();
    const STREAMS: usize = 4;
    let store = StorePeer::start("store", &[], |_| {}).await?;
    let bob = LocalIdentity::generate(now_ms(), &mut rand::rngs::OsRng);
    let hash = upload_blob(&store, &bob, 16).await?;

    // Bob's own peer floods: on each of several streams, 64 Gets of 16 maximum chunks
    // (what used to be built in memory at once: 512 MiB a stream), and reads nothing.
    let mut flooder = MailboxClient::as_user(&bob).await?;
    let gets: Vec<MediaRequest> = (0..64)
        .map(|_| MediaRequest::Get {
            hash,
            first: 0,
            count: MAX_CHUNKS_PER_REQUEST,
        })
        .collect();
    let mut streams = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while streams.len() < STREAMS {
        let mut s = flooder
            .open_raw_at(store.peer_id(), store.addrs(), MEDIA)
            .await?;
        match send_media(&mut s, &gets).await {
            Ok(()) => streams.push(s),
            // libp2p-stream drops a stream that arrives while the connection's previous one
            // still waits to be accepted (a loaded machine): that is not the store peer's
            // answer to the flood, so the flooder opens another, as a real one would.
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "a flood stream was dropped on arrival; reopening");
            }
            Err(e) => return Err(e.context("opening the flood's streams")),
        }
    }
    let metrics = store.metrics()?.clone();
    wait_for(TIMEOUT, "the store peer to start serving the flood", || {
        let m = metrics.clone();
        async move { Ok((m.blob_chunks_out.load(Relaxed) > 0).then_some(())) }
    })
    .await?;
    // The bound: one chunk per stream being written, whatever was asked.
    let bound = (STREAMS * (MAX_CHUNK_SIZE as usize + 16)) as u64;
    for _ in 0..20 {
        let in_flight = metrics.blob_bytes_in_flight.load(Relaxed);
        ensure!(
            in_flight <= bound,
            "{in_flight} chunk bytes held for unread streams (bound {bound})"
        );
        honest_client_is_served(&store).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_flood_reads_a_page_at_a_time_and_leaves_others_served() -> Result<()> {
    init_logging();
    const PAGE: usize = 16 * 1024;
    const QUEUE_BYTES: usize = 64 * 1024;
    const HELD: usize = 200;
    let store = StorePeer::start("store", &[], |c| {
        c.page_bytes = PAGE;
        c.stream_queue_bytes = QUEUE_BYTES;
        c.rates.subscribes.per_peer_per_minute = 20;
    })
    .await?;
    let bob = LocalIdentity::generate(now_ms(), &mut rand::rngs::OsRng);
    let bob_bundle = bob.bundle();
    let mut sender = Sealer::new();
    let mut depositor = MailboxClient::as_user(&sender.identity).await?;
    let mut deposits = depositor.open(&store).await?;
    let key = deposits.register(&bob).await?;
    let mut largest = 0;
    for i in 0..HELD {
        let env = sender.text(&bob_bundle, &format!("held {i}"), now_ms() + 3_600_000)?;
        largest = largest.max(env.to_bytes()?.len());
        deposits
            .send(&[MailboxRequest::Deposit(env, Some(key))])
            .await?;
    }
    let metrics = store.metrics()?.clone();
    wait_for(TIMEOUT, "every deposit to be held", || {
        let m = metrics.clone();
        async move { Ok((m.stored_messages.load(Relaxed) >= HELD as u64).then_some(())) }
    })
    .await?;

    // Bob's peer asks for its whole mailbox 500 times on one stream and reads nothing.
    let mut flooder = MailboxClient::as_user(&bob).await?;
    let mut stream = flooder.open(&store).await?;
    stream.send(&vec![MailboxRequest::Subscribe; 500]).await?;
    wait_for(TIMEOUT, "subscriptions over the rate to be refused", || {
        let m = metrics.clone();
        async move { Ok((m.rate_limited.load(Relaxed) > 0).then_some(())) }
    })
    .await?;
    honest_client_is_served(&store).await?;
    // The bound: one page of the listing read at a time, never the mailbox.
    let listed = metrics.largest_listing_bytes.load(Relaxed);
    ensure!(
        listed <= (PAGE + largest) as u64,
        "{listed} bytes of the mailbox read for one answer (page {PAGE})"
    );
    // And what waits on the stream that is not read stays within the stream's byte bound.
    let queued = metrics.largest_stream_queue_bytes.load(Relaxed);
    ensure!(
        queued <= (QUEUE_BYTES + PAGE + largest) as u64,
        "{queued} bytes queued on one unread stream (bound {QUEUE_BYTES})"
    );
    // And the subscriber that does read gets everything held.
    let me = bob.user_id();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < HELD {
        match stream.recv().await.context("reading the listing")? {
            MailboxResponse::Deliver(envs) => seen.extend(envs.iter().map(|e| e.id())),
            MailboxResponse::Presence(u, _) if u == me => {}
            other => bail!("unexpected {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_flood_writes_bounded_tombstones_and_leaves_others_served() -> Result<()> {
    init_logging();
    const PER_MAILBOX: usize = 300;
    let store = StorePeer::start("store", &[], |c| {
        c.limits.max_tombstones_per_mailbox = PER_MAILBOX;
        c.rates.deletes.per_peer_per_minute = 10;
    })
    .await?;
    let mallory = LocalIdentity::generate(now_ms(), &mut rand::rngs::OsRng);
    let mut flooder = MailboxClient::as_user(&mallory).await?;
    let mut stream = flooder.open(&store).await?;
    // 40 deletes of 4,096 made-up envelopes each: 163,840 tombstones asked for.
    let mut n = 0u64;
    for _ in 0..40 {
        let refs: Vec<EnvelopeRef> = (0..4096)
            .map(|_| {
                n += 1;
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&n.to_be_bytes());
                EnvelopeRef {
                    id: MessageId(id),
                    digest: EnvelopeDigest([7; 16]),
                }
            })
            .collect();
        stream.send(&[MailboxRequest::Delete(refs)]).await?;
    }
    // Processed in order: the answer to this comes after every delete was handled.
    stream.barrier(&mallory.user_id()).await?;
    let metrics = store.metrics()?.clone();
    let tombstones = metrics.tombstones.load(Relaxed);
    ensure!(
        tombstones <= PER_MAILBOX as u64,
        "{tombstones} tombstones written (bound {PER_MAILBOX} per mailbox)"
    );
    ensure!(
        metrics.rate_limited.load(Relaxed) > 0,
        "deletes past the rate were not refused"
    );
    honest_client_is_served(&store).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_stream_is_closed_by_its_timeout() -> Result<()> {
    init_logging();
    let store = StorePeer::start("store", &[], |c| {
        c.stream_timeouts.stalled_frame = Duration::from_millis(300);
    })
    .await?;
    let mut client = MailboxClient::random().await?;
    let mut stream = client
        .open_raw_at(store.peer_id(), store.addrs(), MAILBOX)
        .await?;
    // A frame header announcing 1,000 bytes, then two of them, then nothing.
    let mut bytes = 1000u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0, 0]);
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
        .await
        .map_err(|_| anyhow!("the stalled stream was still open after {TIMEOUT:?}"))?;
    ensure!(
        matches!(read, Ok(0) | Err(_)),
        "the store peer answered a stalled frame: {read:?}"
    );
    honest_client_is_served(&store).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_put_reserves_only_bytes_received() -> Result<()> {
    init_logging();
    let store = StorePeer::start("store", &[], |c| {
        c.blobs.max_uploads_per_mailbox = 2;
    })
    .await?;
    let bob = LocalIdentity::generate(now_ms(), &mut rand::rngs::OsRng);
    let mut mallory = MailboxClient::random().await?;
    let stream = mallory
        .open_raw_at(store.peer_id(), store.addrs(), MEDIA)
        .await?;
    let (r, mut w) = stream.split();
    let mut reader = FrameReader::new(r);
    // Three uploads announcing 256 MiB each, for bob's mailbox (1 GiB quota).
    let layout = BlobLayout::new(256 * 1024 * 1024, MAX_CHUNK_SIZE)?;
    let puts: Vec<MediaRequest> = (0..3u8)
        .map(|i| MediaRequest::Put {
            mailbox: bob.user_id(),
            hash: BlobHash([i; 32]),
            size: layout.size,
            chunk_size: MAX_CHUNK_SIZE,
            expires_ms: now_ms() + 3_600_000,
        })
        .collect();
    let mut buf = Vec::new();
    for p in &puts {
        frame::encode(p, &mut buf)?;
    }
    w.write_all(&buf).await?;
    w.flush().await?;
    let answers = recv_media_split(&mut reader, 3).await?;
    ensure!(
        matches!(answers[0], MediaResponse::PutAccepted { .. })
            && matches!(answers[1], MediaResponse::PutAccepted { .. }),
        "{answers:?}"
    );
    ensure!(
        matches!(
            answers[2],
            MediaResponse::Refused {
                reason: MediaRefusal::QuotaExceeded,
                ..
            }
        ),
        "a third upload under way for one mailbox: {:?}",
        answers[2]
    );
    let metrics = store.metrics()?.clone();
    ensure!(
        metrics.blob_bytes.load(Relaxed) == 0,
        "announced uploads charged {} bytes before sending any",
        metrics.blob_bytes.load(Relaxed)
    );
    // One chunk sent: exactly its bytes are charged.
    let chunk = vec![1u8; layout.cipher_len(0)?];
    let mut buf = Vec::new();
    frame::encode(
        &MediaRequest::Chunk {
            hash: BlobHash([0; 32]),
            index: 0,
            bytes: chunk.clone(),
        },
        &mut buf,
    )?;
    w.write_all(&buf).await?;
    w.flush().await?;
    let ack = recv_media_split(&mut reader, 1).await?;
    ensure!(
        matches!(ack[0], MediaResponse::ChunkAck { next_index: 1, .. }),
        "{ack:?}"
    );
    ensure!(
        metrics.blob_bytes.load(Relaxed) == chunk.len() as u64,
        "charged {} bytes for one chunk of {}",
        metrics.blob_bytes.load(Relaxed),
        chunk.len()
    );
    Ok(())
}

/// Reads media answers until `want` of them arrived.
async fn recv_media_split(
    reader: &mut FrameReader<futures::io::ReadHalf<Stream>>,
    want: usize,
) -> Result<Vec<MediaResponse>> {
    let mut got = Vec::new();
    while got.len() < want {
        let batch = tokio::time::timeout(TIMEOUT, reader.next_batch::<MediaResponse>(64))
            .await
            .map_err(|_| anyhow!("no media answer within {TIMEOUT:?}"))??
            .ok_or_else(|| anyhow!("media stream closed"))?;
        got.extend(batch);
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_full_is_refused_clearly() -> Result<()> {
    init_logging();
    const CAP: u64 = 20_000;
    let store = StorePeer::start("store", &[], |c| c.max_store_bytes = CAP).await?;
    let mut sender = Sealer::new();
    let mut client = MailboxClient::as_user(&sender.identity).await?;
    let mut stream = client.open(&store).await?;
    let mut stored = 0u64;
    for i in 0..100 {
        // A new recipient each time: no mailbox is near its own quota.
        let to_id = LocalIdentity::generate(now_ms(), &mut rand::rngs::OsRng);
        let key = stream.register(&to_id).await?;
        let env = sender.text(&to_id.bundle(), &format!("{i}"), now_ms() + 3_600_000)?;
        let id = env.id();
        stream
            .send(&[MailboxRequest::Deposit(env.clone(), Some(key))])
            .await?;
        let (_, answer) = stream
            .recv_until("a deposit's answer", |r| {
                matches!(r, MailboxResponse::Stored(x) | MailboxResponse::Refused(x, _) if *x == id)
            })
            .await?;
        match answer {
            MailboxResponse::Stored(_) => stored += env.to_bytes()?.len() as u64,
            MailboxResponse::Refused(_, RefuseReason::StoreFull) => {
                ensure!(
                    stored <= CAP,
                    "{stored} bytes stored past the {CAP}-byte cap"
                );
                ensure!(
                    store.metrics()?.rejected(RefuseReason::StoreFull) == 1,
                    "the refusal is counted as store_full"
                );
                return Ok(());
            }
            other => bail!("deposit {i}: {other:?}"),
        }
    }
    bail!("{stored} bytes stored and never refused with StoreFull")
}

/// Whether a fresh stream of `client` to `peer` is served (a `GetPresence` answered) or
/// refused (closed at once).
async fn stream_is_served(
    client: &mut MailboxClient,
    peer: libp2p::PeerId,
    addrs: Vec<libp2p::Multiaddr>,
) -> Result<bool> {
    let mut stream = match client.open_raw_at(peer, addrs, MAILBOX).await {
        Ok(s) => s,
        Err(_) => return Ok(false),
    };
    let who = LocalIdentity::generate(now_ms(), &mut rand::rngs::OsRng).user_id();
    // A refused stream may already be closed when written to.
    if send_mailbox(&mut stream, &[MailboxRequest::GetPresence(who, None)])
        .await
        .is_err()
    {
        return Ok(false);
    }
    let mut reader = FrameReader::new(stream);
    Ok(matches!(
        tokio::time::timeout(TIMEOUT, reader.next_batch::<MailboxResponse>(1)).await,
        Ok(Ok(Some(_)))
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_take_every_stream_slot() -> Result<()> {
    init_logging();
    let store = StorePeer::start("store", &[], |c| {
        c.max_streams = 8;
        c.max_streams_per_peer = 2;
    })
    .await?;
    let mut mallory = MailboxClient::random().await?;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(mallory.open(&store).await?);
    }
    ensure!(
        !stream_is_served(&mut mallory, store.peer_id(), store.addrs()).await?,
        "a third stream of one peer was served past its cap of 2"
    );
    let mut alice = MailboxClient::random().await?;
    ensure!(
        stream_is_served(&mut alice, store.peer_id(), store.addrs()).await?,
        "another peer was refused a stream"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused() -> Result<()> {
    init_logging();
    let dir = tempfile::tempdir()?;
    let mut config = StorePeerConfig::loopback_store(dir.path().join("store"));
    config.connections.max_established_incoming = 2;
    let running = start_store_with(config).await?;
    let addrs = running.listen_addrs.clone();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut c = MailboxClient::random().await?;
        c.open_at(running.peer_id, addrs.clone()).await?;
        clients.push(c);
    }
    let mut third = MailboxClient::random().await?;
    let refused = !stream_is_served(&mut third, running.peer_id, addrs.clone()).await?;
    ensure!(
        refused,
        "a third inbound connection was accepted past the cap of 2"
    );
    running.shutdown().await;
    Ok(())
}
