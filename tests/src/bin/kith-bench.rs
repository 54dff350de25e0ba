//! `kith-bench`: Kith's figures side by side with a baseline measured in the same run.
//!
//! ```text
//! cargo run --release -p kith-tests --bin kith-bench -- [direct] [offline] [--json out.json]
//! ```
//!
//! - `direct`: two nodes in this process, 160-byte texts over the full path (sealed, stored
//!   durably on both sides, delivered receipt back). Throughput over `--messages` (default
//!   50,000) with many sends in flight, and latency (send → delivered receipt) at 200/s.
//!   Baseline: raw tokio TCP on loopback with ChaCha20-Poly1305 framing of the same payloads,
//!   an encrypted ack per message.
//! - `offline`: 10,000 messages to an offline user through R=3 store peers (W=2): deposit
//!   rate, time for the returning user to hold all of them, bytes per message on a store peer.
//!   Baseline: the same number of envelope-sized values inserted into sled with a flush every
//!   batch (the durable write the store peers must do anyway).
//!
//! Figures carry their unit in their name; every figure is printed with its baseline and the
//! ratio. Machines here are noisy: compare ratios, not absolute numbers across runs.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use chacha20poly1305::{aead::Aead, ChaCha20Poly1305, KeyInit};
use kith_node::{Config, Event, Node, RunningNode};
use kith_protocol::DeliveryStatus;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Semaphore,
};

/// Payload size of the design's average message.
const TEXT_LEN: usize = 160;
/// Sends in flight during throughput runs.
const IN_FLIGHT: usize = 512;
/// Light fixed rate for latency runs, messages per second.
const LATENCY_RATE: u64 = 200;
/// Messages measured at the light rate.
const LATENCY_MESSAGES: usize = 1_000;
/// Longest any phase may take before the benchmark gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

struct Args {
    scenarios: Vec<String>,
    json: Option<PathBuf>,
    messages: usize,
    offline_messages: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        scenarios: Vec::new(),
        json: None,
        messages: 50_000,
        offline_messages: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => args.json = Some(it.next().context("--json needs a path")?.into()),
            "--messages" => {
                args.messages = it.next().context("--messages needs a number")?.parse()?
            }
            "--offline-messages" => {
                args.offline_messages = it
                    .next()
                    .context("--offline-messages needs a number")?
                    .parse()?
            }
            "-h" | "--help" => {
                println!("kith-bench [direct] [offline] [--json out.json] [--messages N] [--offline-messages N]");
                std::process::exit(0);
            }
            "direct" | "offline" => args.scenarios.push(a),
            other => bail!("unknown argument {other:?} (scenarios: direct, offline)"),
        }
    }
    if args.scenarios.is_empty() {
        args.scenarios = vec!["direct".into(), "offline".into()];
    }
    Ok(args)
}

fn main() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut report = serde_json::Map::new();
    for s in &args.scenarios {
        let figures = match s.as_str() {
            "direct" => rt.block_on(direct(args.messages))?,
            "offline" => rt.block_on(offline(args.offline_messages))?,
            _ => unreachable!("parse_args only accepts known scenarios"),
        };
        print_table(s, &figures);
        report.insert(s.clone(), figures);
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(report))?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn print_table(scenario: &str, figures: &Value) {
    println!("\n== {scenario}");
    if let Value::Object(map) = figures {
        for (k, v) in map {
            println!("  {k:<42} {v}");
        }
    }
}

fn text(i: usize) -> String {
    let mut t = format!("m{i:08} ");
    while t.len() < TEXT_LEN {
        t.push('x');
    }
    t
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        (a / b * 1000.0).round() / 1000.0
    }
}

fn progress(label: &str, done: usize, total: usize) {
    if total >= 10 && done.is_multiple_of((total / 10).max(1)) {
        eprintln!("  {label}: {done}/{total}");
    }
}

async fn start(
    dir: &std::path::Path,
    name: &str,
    bootstrap: Vec<libp2p::Multiaddr>,
) -> Result<RunningNode> {
    let mut cfg = Config::loopback(dir.join(name));
    cfg.bootstrap = bootstrap;
    kith_node::start(cfg)
        .await
        .with_context(|| format!("starting {name}"))
}

async fn introduce(a: &Node, b: &Node) -> Result<()> {
    let ai = a.me().await?.invite;
    let bi = b.me().await?.invite;
    a.add_contact(&bi, Some("b".into())).await?;
    b.add_contact(&ai, Some("a".into())).await?;
    Ok(())
}

/// Sends `n` texts from `from` to `to` with [`IN_FLIGHT`] sends outstanding, and waits until
/// `until` statuses are seen. Returns the elapsed time.
async fn blast(
    from: &Node,
    to: kith_protocol::UserId,
    n: usize,
    until: DeliveryStatus,
) -> Result<Duration> {
    let mut events = from.subscribe();
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let sender = {
        let from = from.clone();
        tokio::spawn(async move {
            for i in 0..n {
                let permit = limit.clone().acquire_owned().await?;
                let node = from.clone();
                tokio::spawn(async move {
                    let _p = permit;
                    if let Err(e) = node.send_text(to, text(i), json!({})).await {
                        eprintln!("send failed: {e}");
                    }
                });
            }
            anyhow::Ok(())
        })
    };
    let mut reached = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    while reached.len() < n {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("timed out waiting for statuses")?;
        match ev {
            Ok(Event::Status { id, status, .. }) if status >= until => {
                if reached.insert(id) {
                    progress("acknowledged", reached.len(), n);
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => {
                bail!("event stream lagged by {k}; raise the broadcast depth")
            }
            Err(e) => bail!("event stream closed: {e}"),
        }
    }
    sender.await??;
    Ok(started.elapsed())
}

async fn direct(messages: usize) -> Result<Value> {
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
    Ok(json!({
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

fn nonce(n: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[4..].copy_from_slice(&n.to_le_bytes());
    out
}

async fn offline(messages: usize) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let mut stores = Vec::new();
    let mut addrs: Vec<libp2p::Multiaddr> = Vec::new();
    for i in 0..3 {
        let mut cfg = kith_bootstrap::Config::loopback_store(dir.path().join(format!("store{i}")));
        cfg.peers = addrs.clone();
        if let Some(store) = cfg.store.as_mut() {
            // Room for the whole run in one mailbox, and no depositor rate limit: this
            // measures the store path, not the quotas.
            store.limits.max_messages_per_mailbox =
                store.limits.max_messages_per_mailbox.max(2 * messages + 16);
            store.limits.deposits_per_minute = u32::MAX;
        }
        let s = kith_bootstrap::start(cfg).await?;
        addrs.extend(s.listen_addrs.iter().cloned());
        stores.push(s);
    }
    let alice = start(dir.path(), "alice", addrs.clone()).await?;
    let bob = start(dir.path(), "bob", addrs.clone()).await?;
    introduce(&alice.node, &bob.node).await?;
    blast(&alice.node, bob.user_id(), 1, DeliveryStatus::Delivered).await?;
    let bob_id = bob.user_id();
    bob.shutdown().await?;

    eprintln!("offline: depositing {messages} messages for an offline user");
    // The first attempt finds bob gone; wait until deposits flow before timing.
    blast(&alice.node, bob_id, 1, DeliveryStatus::Sent).await?;
    let t = blast(&alice.node, bob_id, messages, DeliveryStatus::Sent).await?;
    let deposit_rate = messages as f64 / t.as_secs_f64();
    let (held, bytes) = stores.iter().fold((0u64, 0u64), |acc, s| {
        use std::sync::atomic::Ordering::Relaxed;
        (
            acc.0.max(s.metrics.stored_messages.load(Relaxed)),
            acc.1.max(s.metrics.stored_bytes.load(Relaxed)),
        )
    });
    let per_msg = if held > 0 {
        bytes as f64 / held as f64
    } else {
        0.0
    };

    eprintln!("offline: bob returns");
    let started = Instant::now();
    let bob = start(dir.path(), "bob", addrs.clone()).await?;
    let mut events = bob.node.subscribe();
    let mut got: BTreeMap<String, ()> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    // One warm-up message was deposited too.
    while got.len() < messages + 1 {
        match tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("drain timed out")?
        {
            Ok(Event::Message { message, .. }) if !message.outgoing => {
                got.insert(message.id, ());
                progress("received", got.len(), messages + 1);
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => {
                bail!("events lagged by {k}")
            }
            Err(e) => bail!("event stream closed: {e}"),
        }
    }
    let drain = started.elapsed();
    bob.shutdown().await?;
    alice.shutdown().await?;
    for s in stores {
        s.shutdown().await;
    }

    eprintln!("baseline: sled inserts with a flush per batch");
    let base_rate = baseline_sled(dir.path(), messages, per_msg.max(1.0) as usize)?;
    Ok(json!({
        "messages": messages,
        "deposit_msgs_per_s": deposit_rate.round(),
        "baseline_sled_durable_inserts_per_s": base_rate.round(),
        "deposit_ratio": ratio(deposit_rate, base_rate),
        "drain_s": (drain.as_secs_f64() * 1000.0).round() / 1000.0,
        "store_bytes_per_msg": per_msg.round(),
    }))
}

/// Durable inserts of `n` values of `size` bytes, flushing every 256 (a group commit).
fn baseline_sled(dir: &std::path::Path, n: usize, size: usize) -> Result<f64> {
    let db = sled::open(dir.join("baseline-sled"))?;
    let value = vec![0xA5u8; size];
    let started = Instant::now();
    for i in 0..n {
        db.insert((i as u64).to_be_bytes(), value.as_slice())?;
        if i % 256 == 255 {
            db.flush()?;
        }
    }
    db.flush()?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}
