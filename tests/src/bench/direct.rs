//! `direct`: two nodes in this process, 160-byte texts over the full path (sealed, stored
//! durably on both sides, delivered receipt back). Throughput over `--messages` with many
//! sends in flight, and latency (send → delivered receipt) at 200/s. Baseline: raw tokio TCP
//! on loopback with ChaCha20-Poly1305 framing of the same payloads, an encrypted ack per
//! message. With `--vs-ejabberd`, also the central-server anchor (ejabberd one-to-one, see
//! [`super::ejabberd`]) in the same invocation, and Kith's ratio to it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use chacha20poly1305::{aead::Aead, ChaCha20Poly1305, KeyInit};
use kith_node::{Event, Node};
use kith_protocol::DeliveryStatus;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::fixture::{blast, introduce, nonce, ratio, start, text, PHASE_TIMEOUT};
use crate::measure::percentile;

/// Light fixed rate for latency runs, messages per second.
const LATENCY_RATE: u64 = 200;
/// Messages measured at the light rate.
const LATENCY_MESSAGES: usize = 1_000;

pub(super) async fn run(messages: usize, ejabberd: Option<std::path::PathBuf>) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let alice = start(dir.path(), "alice", vec![]).await?;
    let bob = start(dir.path(), "bob", vec![]).await?;
    introduce(&alice.node, &bob.node).await?;
    // Warm up: one message end to end (connection, first handshake).
    blast(&alice.node, bob.user_id(), 1, DeliveryStatus::Delivered).await?;

    eprintln!("direct: throughput over {messages} messages");
    let t = blast(
        &alice.node,
        bob.user_id(),
        messages,
        DeliveryStatus::Delivered,
    )
    .await?;
    let throughput = messages as f64 / t.as_secs_f64();

    eprintln!("direct: latency at {LATENCY_RATE}/s");
    let lat = latency(&alice.node, bob.user_id()).await?;
    alice.shutdown().await?;
    bob.shutdown().await?;

    eprintln!("baseline: raw TCP + ChaCha20-Poly1305");
    let (base_tp, base_lat) = baseline_tcp(messages).await?;
    let anchor = match ejabberd {
        Some(dir) => vs_ejabberd(&dir, throughput, &lat),
        None => json!(null),
    };
    Ok(json!({
        "ejabberd": anchor,
        "messages": messages,
        "throughput_msgs_per_s": throughput.round(),
        "baseline_throughput_msgs_per_s": base_tp.round(),
        "throughput_ratio": ratio(throughput, base_tp),
        "latency_p50_us": percentile(&lat, 0.50),
        "latency_p99_us": percentile(&lat, 0.99),
        "latency_max_us": lat.last().copied().unwrap_or(0),
        "baseline_latency_p50_us": percentile(&base_lat, 0.50),
        "baseline_latency_p99_us": percentile(&base_lat, 0.99),
        "baseline_latency_max_us": base_lat.last().copied().unwrap_or(0),
        "latency_p50_ratio": ratio(percentile(&lat, 0.50) as f64, percentile(&base_lat, 0.50) as f64),
        "latency_p99_ratio": ratio(percentile(&lat, 0.99) as f64, percentile(&base_lat, 0.99) as f64),
    }))
}

/// ejabberd's one-to-one throughput and latency at 200/s, and Kith's ratios to them (above 1
/// for throughput and below 1 for latency mean Kith is ahead). A failure to run the anchor is
/// reported in the figures, not as the benchmark's failure.
fn vs_ejabberd(dir: &std::path::Path, throughput: f64, lat: &[u64]) -> Value {
    let figures = || -> Result<Value> {
        let tp = super::ejabberd::run(dir, "throughput")?;
        let l = super::ejabberd::run(dir, "latency")?;
        let (tp, l) = (&tp[0], &l[0]);
        let rate = super::ejabberd::number(tp, "steady_rate")?;
        let p50 = super::ejabberd::number(l, "lat_p50_us")?;
        let p99 = super::ejabberd::number(l, "lat_p99_us")?;
        Ok(json!({
            "throughput_msgs_per_s": rate.round(),
            "server_cpu_percent": tp.get("srv_cpu"),
            "latency_p50_us": p50,
            "latency_p99_us": p99,
            "kith_throughput_ratio": ratio(throughput, rate),
            "kith_latency_p50_ratio": ratio(percentile(lat, 0.50) as f64, p50),
            "kith_latency_p99_ratio": ratio(percentile(lat, 0.99) as f64, p99),
        }))
    };
    super::ejabberd::figures_or_error(figures())
}

/// Send → delivered-receipt latency of [`LATENCY_MESSAGES`] messages at [`LATENCY_RATE`]/s,
/// sorted, in microseconds.
async fn latency(from: &Node, to: kith_protocol::UserId) -> Result<Vec<u64>> {
    let mut events = from.subscribe();
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let mut out = Vec::with_capacity(LATENCY_MESSAGES);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE));
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    while out.len() < LATENCY_MESSAGES {
        tokio::select! {
            _ = tick.tick(), if sent < LATENCY_MESSAGES => {
                let t0 = Instant::now();
                let r = from.send_text(to, text(sent), json!({})).await?;
                sent_at.insert(r.id, t0);
                sent += 1;
            }
            ev = events.recv() => {
                if let Ok(Event::Status { id, status: DeliveryStatus::Delivered, .. }) = ev {
                    if let Some(t0) = sent_at.remove(&id) {
                        out.push(t0.elapsed().as_micros() as u64);
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => bail!("latency run timed out"),
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Raw tokio TCP on loopback, each 160-byte payload sealed with ChaCha20-Poly1305 in a
/// length-prefixed frame, opened by the server, which answers with a sealed 16-byte ack.
/// Returns (throughput in messages/s, sorted latencies in µs at the light rate).
async fn baseline_tcp(messages: usize) -> Result<(f64, Vec<u64>)> {
    let key = [7u8; 32];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let cipher = ChaCha20Poly1305::new(&key.into());
        while let Ok((sock, _)) = listener.accept().await {
            sock.set_nodelay(true)?;
            let (mut r, mut w) = sock.into_split();
            let cipher = cipher.clone();
            tokio::spawn(async move {
                let mut n: u64 = 0;
                let mut len = [0u8; 4];
                let mut buf = Vec::new();
                let mut out = Vec::new();
                loop {
                    if r.read_exact(&mut len).await.is_err() {
                        break;
                    }
                    buf.resize(u32::from_be_bytes(len) as usize, 0);
                    if r.read_exact(&mut buf).await.is_err() {
                        break;
                    }
                    let nonce = nonce(n);
                    n += 1;
                    let Ok(plain) = cipher.decrypt(&nonce.into(), buf.as_slice()) else {
                        break;
                    };
                    let ack = cipher
                        .encrypt(&nonce.into(), &plain[..16])
                        .unwrap_or_default();
                    out.clear();
                    out.extend_from_slice(&(ack.len() as u32).to_be_bytes());
                    out.extend_from_slice(&ack);
                    if w.write_all(&out).await.is_err() {
                        break;
                    }
                }
            });
        }
        anyhow::Ok(())
    });
    let cipher = ChaCha20Poly1305::new(&key.into());
    // Throughput: a writer pipelines every frame, a reader counts acks.
    let sock = tokio::net::TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    let (mut r, mut w) = sock.into_split();
    let started = Instant::now();
    let wc = cipher.clone();
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(256 * 1024);
        for i in 0..messages {
            let ct = wc
                .encrypt(&nonce(i as u64).into(), text(i).as_bytes())
                .unwrap_or_default();
            batch.extend_from_slice(&(ct.len() as u32).to_be_bytes());
            batch.extend_from_slice(&ct);
            if batch.len() >= 64 * 1024 {
                w.write_all(&batch).await?;
                batch.clear();
            }
        }
        w.write_all(&batch).await?;
        anyhow::Ok(w)
    });
    let mut len = [0u8; 4];
    let mut buf = Vec::new();
    for i in 0..messages {
        r.read_exact(&mut len).await?;
        buf.resize(u32::from_be_bytes(len) as usize, 0);
        r.read_exact(&mut buf).await?;
        cipher
            .decrypt(&nonce(i as u64).into(), buf.as_slice())
            .map_err(|_| anyhow::anyhow!("baseline ack does not open"))?;
    }
    let throughput = messages as f64 / started.elapsed().as_secs_f64();
    let mut w = writer.await??;
    // Latency: one frame, wait for its ack, at the light rate.
    let mut lat = Vec::with_capacity(LATENCY_MESSAGES);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE));
    for j in 0..LATENCY_MESSAGES {
        tick.tick().await;
        let i = (messages + j) as u64;
        let t0 = Instant::now();
        let ct = cipher
            .encrypt(&nonce(i).into(), text(j).as_bytes())
            .unwrap_or_default();
        let mut frame = (ct.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&ct);
        w.write_all(&frame).await?;
        r.read_exact(&mut len).await?;
        buf.resize(u32::from_be_bytes(len) as usize, 0);
        r.read_exact(&mut buf).await?;
        cipher
            .decrypt(&nonce(i).into(), buf.as_slice())
            .map_err(|_| anyhow::anyhow!("baseline ack does not open"))?;
        lat.push(t0.elapsed().as_micros() as u64);
    }
    server.abort();
    lat.sort_unstable();
    Ok((throughput, lat))
}
