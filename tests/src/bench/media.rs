//! `media`: a `--media-mib` MiB file sent with `POST /v1/media` from alice to bob while bob is
//! offline, through `--media-stores` store peers; all are child processes. Upload: POST → the
//! media is `available` on alice; alice then stops, so bob can only fetch from the store
//! peers. Download: bob started again → `complete`. Peak RSS (VmHWM) of every process beside
//! its own before the transfer, and the stated bound. Baselines: the same bytes sealed and
//! opened with raw ChaCha20-Poly1305 in 64 KiB chunks, and a plain 64 KiB read/write copy.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use chacha20poly1305::{aead::Aead, ChaCha20Poly1305, KeyInit};
use kith_protocol::DeliveryStatus;
use serde_json::{json, Value};

use super::{
    cli::Cli,
    fixture::{
        mib, nonce, ratio, round1, round3, sibling_bin, spawn_store_chain, MIB, PHASE_TIMEOUT,
    },
};
use crate::{measure::peak_rss, procs::ChildProc};

/// Plaintext chunk size of the `media` baselines: what senders use (`DEFAULT_CHUNK_SIZE`).
const MEDIA_CHUNK: usize = kith_protocol::blob::DEFAULT_CHUNK_SIZE as usize;

/// Memory a process may use above its own fixed cost while moving a file of any size: the
/// stated bound is the largest fixed cost measured in the run plus this. Chosen from the
/// design, not from a run: at most 4 transfers at once (`TransferConfig::max_active`), each
/// holding one batch of 16 chunks of 64 KiB as ciphertext and plaintext (2 MiB) on either
/// end, an upload window of 8 sealed chunks per store peer, the 1 MiB frame buffers of a
/// few streams and the HTTP body buffers: about 16 MiB, doubled for allocator slack.
const MEDIA_RSS_HEADROOM_MIB: f64 = 32.0;

/// A `kith run` child on a free loopback API port, and a client for its API.
async fn spawn_kith(
    bin: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    bootstrap: &[libp2p::Multiaddr],
    max_media_mib: u64,
) -> Result<(ChildProc, kith_node::client::ApiClient)> {
    if kith_node::run::read_token(dir).is_err() {
        kith_node::run::init(dir).with_context(|| format!("kith init of {name}"))?;
    }
    let token = kith_node::run::read_token(dir)?;
    let boot: Vec<String> = bootstrap.iter().map(|a| a.to_string()).collect();
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--data-dir")
        .arg(dir)
        .args(["--api", "127.0.0.1:0", "run"])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--bootstrap", &boot.join(",")])
        .args(["--max-media-mib", &max_media_mib.to_string()]);
    let mut child = ChildProc::spawn(name, cmd)?;
    let line = child.line(|l| l.starts_with("kith: api ")).await?;
    let api =
        kith_node::client::ApiClient::new(line.trim_start_matches("kith: api ").trim(), token)?;
    Ok((child, api))
}

/// Polls `api`'s conversation with `peer` until the media `hash` is in `state`.
async fn wait_media_state(
    api: &kith_node::client::ApiClient,
    peer: &str,
    hash: &str,
    state: kith_node::media::MediaState,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    loop {
        let page = api.conversation(peer, None, Some(20), None).await?;
        let now = page
            .messages
            .iter()
            .filter_map(|m| m.media.as_deref())
            .find(|m| m.hash == hash)
            .map(|m| m.state);
        if now == Some(state) {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "media {hash} is {now:?}, not {state:?}, after {PHASE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `api`'s conversation with `peer` until message `id` has reached `status`.
async fn wait_status(
    api: &kith_node::client::ApiClient,
    peer: &str,
    id: &str,
    status: DeliveryStatus,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    loop {
        let page = api.conversation(peer, None, Some(20), None).await?;
        let now = page.messages.iter().find(|m| m.id == id).map(|m| m.status);
        if now.is_some_and(|s| s >= status) {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "message {id} is {now:?}, not {status:?}, after {PHASE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `mib` MiB of seeded pseudo-random (incompressible) bytes to `path`.
fn write_random_file(path: &std::path::Path, mib: u64) -> Result<()> {
    use rand::{RngCore, SeedableRng};
    use std::io::Write;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b69_7468);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1024 * 1024];
    for _ in 0..mib {
        rng.fill_bytes(&mut buf);
        f.write_all(&buf)?;
    }
    f.into_inner()
        .map_err(|e| anyhow::anyhow!("flushing {}: {e}", path.display()))?
        .sync_all()?;
    Ok(())
}

/// Baseline: a plain copy of `from` to `to` in 64 KiB reads and writes, synced. Seconds.
fn baseline_copy(from: &std::path::Path, to: &std::path::Path) -> Result<f64> {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut input = std::fs::File::open(from)?;
    let mut output = std::fs::File::create(to)?;
    let mut buf = vec![0u8; MEDIA_CHUNK];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        output.write_all(&buf[..n])?;
    }
    output.sync_all()?;
    let secs = started.elapsed().as_secs_f64();
    drop(output);
    std::fs::remove_file(to)?;
    Ok(secs)
}

/// Baseline: the file read in 64 KiB chunks, each sealed and opened again with raw
/// ChaCha20-Poly1305 (what the two ends of a transfer do, without hashing, framing or I/O
/// beyond reading the file), one thread. Seconds.
fn baseline_chacha(from: &std::path::Path) -> Result<f64> {
    use std::io::Read;
    let cipher = ChaCha20Poly1305::new(&[7u8; 32].into());
    let started = Instant::now();
    let mut input = std::fs::File::open(from)?;
    let mut buf = vec![0u8; MEDIA_CHUNK];
    let mut i = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let got = input.read(&mut buf[n..])?;
            if got == 0 {
                break;
            }
            n += got;
        }
        if n == 0 {
            break;
        }
        let sealed = cipher
            .encrypt(&nonce(i).into(), &buf[..n])
            .map_err(|_| anyhow::anyhow!("seal failed"))?;
        let opened = cipher
            .decrypt(&nonce(i).into(), sealed.as_slice())
            .map_err(|_| anyhow::anyhow!("open failed"))?;
        ensure!(opened.len() == n, "open returned {} bytes", opened.len());
        i += 1;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Whether two files hold the same bytes.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

pub(super) async fn run(args: &Cli) -> Result<Value> {
    use kith_node::media::MediaState;
    ensure!(args.media_mib >= 1, "--media-mib must be at least 1");
    ensure!(args.media_stores >= 1, "--media-stores must be at least 1");
    let boot_bin = sibling_bin(args, "kith-bootstrap")?;
    let kith_bin = sibling_bin(args, "kith")?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("media.bin");
    let size = args.media_mib * 1024 * 1024;
    let file_mib = args.media_mib as f64;

    eprintln!("media: writing a {} MiB file", args.media_mib);
    {
        let (file, n) = (file.clone(), args.media_mib);
        tokio::task::spawn_blocking(move || write_random_file(&file, n)).await??;
    }
    eprintln!("media: baselines (64 KiB copy, ChaCha20-Poly1305 seal + open)");
    let (copy_s, chacha_s) = {
        let file = file.clone();
        let copy_to = dir.path().join("copy.bin");
        tokio::task::spawn_blocking(move || -> Result<(f64, f64)> {
            Ok((baseline_copy(&file, &copy_to)?, baseline_chacha(&file)?))
        })
        .await??
    };

    eprintln!("media: starting {} store peers", args.media_stores);
    let (stores, addrs) = spawn_store_chain(&boot_bin, dir.path(), args.media_stores).await?;
    let max_media_mib = args.media_mib + 1;
    let (alice_dir, bob_dir) = (dir.path().join("alice"), dir.path().join("bob"));
    let (alice, alice_api) =
        spawn_kith(&kith_bin, &alice_dir, "alice", &addrs, max_media_mib).await?;
    let (bob, bob_api) = spawn_kith(&kith_bin, &bob_dir, "bob", &addrs, max_media_mib).await?;
    let (alice_me, bob_me) = (alice_api.me().await?, bob_api.me().await?);
    alice_api.add_contact(&bob_me.invite, Some("bob")).await?;
    bob_api.add_contact(&alice_me.invite, Some("alice")).await?;
    // Give both nodes a moment to find the store peers and each other, as a user would have.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bob_fixed = peak_rss(bob.pid())?;
    eprintln!("media: bob goes offline");
    drop(bob);

    let alice_fixed = peak_rss(alice.pid())?;
    let stores_fixed: Vec<u64> = stores
        .iter()
        .map(|s| peak_rss(s.pid()))
        .collect::<Result<_>>()?;
    eprintln!("media: alice sends {} MiB", args.media_mib);
    let started = Instant::now();
    let body = tokio_util::io::ReaderStream::new(tokio::fs::File::open(&file).await?);
    let sent = alice_api
        .send_media(
            &bob_me.user_id,
            "bench.bin",
            "application/octet-stream",
            None,
            reqwest::Body::wrap_stream(body),
        )
        .await?;
    let post_s = started.elapsed().as_secs_f64();
    wait_media_state(
        &alice_api,
        &bob_me.user_id,
        &sent.hash,
        MediaState::Available,
    )
    .await?;
    let upload_s = started.elapsed().as_secs_f64();
    let alice_peak_upload = peak_rss(alice.pid())?;
    let alice_pid = alice.pid();
    // With fewer store peers than the deposit quorum (W = 2) the message itself stays in
    // alice's outbox: she must stay online to deliver it, and bob then fetches chunks from
    // her and the store peer in turn. Otherwise she stops once the message is deposited.
    let alice_stays = args.media_stores < 2;
    let alice = if alice_stays {
        eprintln!("media: available after {upload_s:.1} s; bob comes back (alice stays online)");
        Some(alice)
    } else {
        wait_status(&alice_api, &bob_me.user_id, &sent.id, DeliveryStatus::Sent).await?;
        eprintln!("media: available after {upload_s:.1} s; alice stops, bob comes back");
        drop(alice);
        None
    };

    let started = Instant::now();
    let (bob, bob_api) = spawn_kith(&kith_bin, &bob_dir, "bob", &addrs, max_media_mib).await?;
    let bob_api_s = started.elapsed().as_secs_f64();
    wait_media_state(
        &bob_api,
        &alice_me.user_id,
        &sent.hash,
        MediaState::Complete,
    )
    .await?;
    let download_s = started.elapsed().as_secs_f64();
    let bob_peak = peak_rss(bob.pid())?;
    let alice_peak = match &alice {
        Some(_) => peak_rss(alice_pid)?,
        None => alice_peak_upload,
    };
    drop(alice);
    let stores_peak: Vec<u64> = stores
        .iter()
        .map(|s| peak_rss(s.pid()))
        .collect::<Result<_>>()?;
    eprintln!("media: complete after {download_s:.1} s; comparing the files");
    // A received file is named by the message that carried it.
    let received = kith_node::media::MediaFiles::at(&bob_dir.join(kith_node::run::MEDIA_DIR))
        .received_path(&kith_node::media::MediaId {
            outgoing: false,
            peer: alice_me.user_id.parse()?,
            message: sent.id.parse()?,
        });
    let identical = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || same_file(&file, &received)).await??
    };
    ensure!(
        identical,
        "bob's copy of the media differs from the original"
    );
    drop(bob);
    drop(stores);

    let store_fixed = stores_fixed.iter().copied().max().unwrap_or(0);
    let store_peak = stores_peak.iter().copied().max().unwrap_or(0);
    let fixed_max = alice_fixed.max(bob_fixed).max(store_fixed);
    let bound_mib = (fixed_max as f64 / MIB).ceil() + MEDIA_RSS_HEADROOM_MIB;
    let peak_max = alice_peak.max(bob_peak).max(store_peak);
    let rate = |secs: f64| round1(file_mib / secs);
    let (upload_rate, download_rate) = (file_mib / upload_s, file_mib / download_s);
    let (copy_rate, chacha_rate) = (file_mib / copy_s, file_mib / chacha_s);
    Ok(json!({
        "file_mib": args.media_mib,
        "store_peers": args.media_stores,
        "alice_online_during_download": alice_stays,
        "chunk_kib": MEDIA_CHUNK / 1024,
        "post_s": round3(post_s),
        "upload_s": round3(upload_s),
        "upload_mib_per_s": rate(upload_s),
        "bob_api_up_s": round3(bob_api_s),
        "download_s": round3(download_s),
        "download_mib_per_s": rate(download_s),
        "baseline_copy_s": round3(copy_s),
        "baseline_copy_mib_per_s": rate(copy_s),
        "baseline_chacha_s": round3(chacha_s),
        "baseline_chacha_mib_per_s": rate(chacha_s),
        "upload_vs_chacha_ratio": ratio(upload_rate, chacha_rate),
        "download_vs_chacha_ratio": ratio(download_rate, chacha_rate),
        "upload_vs_copy_ratio": ratio(upload_rate, copy_rate),
        "download_vs_copy_ratio": ratio(download_rate, copy_rate),
        "alice_fixed_rss_mib": mib(alice_fixed),
        "alice_peak_rss_mib": mib(alice_peak),
        "alice_peak_to_fixed_ratio": ratio(alice_peak as f64, alice_fixed as f64),
        "bob_fixed_rss_mib": mib(bob_fixed),
        "bob_peak_rss_mib": mib(bob_peak),
        "bob_peak_to_fixed_ratio": ratio(bob_peak as f64, bob_fixed as f64),
        "store_fixed_rss_mib": mib(store_fixed),
        "store_peak_rss_mib": mib(store_peak),
        "store_peak_to_fixed_ratio": ratio(store_peak as f64, store_fixed as f64),
        "store_peak_rss_mib_each": stores_peak.iter().map(|b| mib(*b)).collect::<Vec<_>>(),
        "peak_rss_headroom_mib": MEDIA_RSS_HEADROOM_MIB,
        "peak_rss_bound_mib": bound_mib,
        "peak_rss_max_mib": mib(peak_max),
        "peak_rss_max_to_file_ratio": ratio(peak_max as f64, size as f64),
        "within_bound": (peak_max as f64 / MIB) <= bound_mib,
        "received_identical": identical,
    }))
}
