//! `kith-bench`: Kith's figures side by side with a baseline measured in the same run.
//!
//! ```text
//! cargo build --release --bin kith-bench --bin kith --bin kith-bootstrap
//! cargo run --release -p kith-tests --bin kith-bench -- [all | SCENARIO...] [--json out.json]
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
//! - `store`: one store peer (`kith-bootstrap --store`, a child process) under `--depositors`
//!   (default 32) concurrent raw `/kith/mailbox/1` clients depositing `--store-messages`
//!   (default 64,000) pre-sealed 160-byte texts for 64 recipients: durable deposits/s, the
//!   store peer's CPU µs per deposit (from `/proc/<pid>/stat`, so the depositors' CPU is not
//!   in it; theirs is reported beside it), and its RSS growth extrapolated to 1M held
//!   messages. Baseline: sled inserts of the same number of values of the same size with a
//!   flush every 256, in this process (rate and CPU µs per insert).
//! - `presence`: one store peer (child process) absorbing signed presence records
//!   (heartbeats) from `--presence-clients` (default 32) clients, `--heartbeats` (default
//!   2,000) each: heartbeats/s and the store peer's CPU µs per heartbeat. Baseline: the same
//!   records' signatures verified in this process, one thread (the pure CPU floor).
//! - `idle`: one `kith run` node (child process) with 3 store peers (child processes) and 10
//!   contacts (in this process) it has exchanged a message with, left idle for `--idle-secs`
//!   (default 60): the node's CPU time, TCP bytes it sent (`ss`), bytes written (`wchar`:
//!   sockets and disk) and RSS. Baseline: a child doing nothing but a tokio runtime with a 5 s
//!   timer, measured the same way over the same window.
//!
//! - `media`: a `--media-mib` (default 100) MiB file sent with `POST /v1/media` from alice to
//!   bob while bob is offline, through `--media-stores` (default 3) store peers; all are
//!   child processes (`kith run`, `kith-bootstrap --store`). Upload: POST → the media is
//!   `available` on alice (every store peer holds it); alice then stops, so bob can only
//!   fetch from the store peers. Download: bob started again → `complete`. Peak RSS (VmHWM)
//!   of alice, bob and each store peer, beside each process's own VmHWM before the transfer
//!   (its fixed cost), and the stated bound. Baselines: the same bytes sealed and opened
//!   with raw ChaCha20-Poly1305 in 64 KiB chunks in this process, and a plain 64 KiB
//!   read/write copy of the file (synced). Not in `all` (it writes several times the file
//!   size to disk).
//!
//! - `faults`: the fault campaign of [`kith_tests::faults`]: `--runs` (default 10) seeded
//!   runs of 3 store peers and 4 users (child processes) sending a random mix while a
//!   scheduler `kill -9`s one process at a time; run `i` uses seed `--seed` (default 1) + `i`,
//!   printed, so `--runs 1 --seed <that>` reproduces a failing one; `--fault-steps` sets the
//!   scheduler's steps per run (default 150). Prints the totals (runs,
//!   messages, kills, bytes, lost, duplicated, regressions...), writes them as the top level
//!   of `--json`, and exits non-zero if any run lost, duplicated, regressed or failed to
//!   deliver anything. Runs alone; not in `all`.
//!
//! `store`, `presence`, `idle`, `media` and `faults` run `kith-bootstrap` and `kith` from the directory
//! of this binary (or `--bin-dir`): build them in the same profile first.
//!
//! Figures carry their unit in their name; every figure is printed with its baseline and the
//! ratio. Machines here are noisy: compare ratios, not absolute numbers across runs.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use chacha20poly1305::{aead::Aead, ChaCha20Poly1305, KeyInit};
use kith_node::{time::now_ms, Config, Event, Node, RunningNode};
use kith_protocol::{
    mailbox::{MailboxRequest, MailboxResponse},
    DeliveryStatus, Envelope, KeyBundle, LocalIdentity, PresenceRecord, Visibility,
};
use kith_tests::{
    mesh::{MailboxClient, MailboxStream, Sealer},
    procs::{self, free_loopback_addr, peer_of, ChildProc, CHILD_TIMEOUT},
};
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

/// Every scenario: its name, whether `all` (or no scenario named) runs it, and one line of
/// help. A new scenario goes here and in the `match` of [`run_scenario`].
const SCENARIOS: &[(&str, bool, &str)] = &[
    (
        "direct",
        true,
        "two nodes, full path: throughput and latency",
    ),
    (
        "offline",
        true,
        "deposits through 3 store peers and the returning user's drain",
    ),
    (
        "store",
        true,
        "one store peer under many depositors: deposits/s, CPU, RSS",
    ),
    (
        "presence",
        true,
        "one store peer absorbing heartbeats: heartbeats/s, CPU",
    ),
    (
        "idle",
        true,
        "one idle node with 3 store peers and 10 contacts: CPU, bytes, RSS",
    ),
    (
        "media",
        false,
        "a 100 MiB file to an offline user through store peers: MiB/s, peak RSS",
    ),
    (
        "faults",
        false,
        "seeded kill -9 campaign (--runs N --seed S): lost, duplicated, regressed messages",
    ),
    (
        "mesh",
        false,
        "the simulation at N = 100, 300, 1000 users (--mesh-sizes): delivery, memory, lookups",
    ),
];

/// The hidden first argument that makes this binary the `idle` baseline's child process.
const IDLE_BASELINE_CHILD: &str = "__idle-baseline-child";

struct Args {
    scenarios: Vec<String>,
    json: Option<PathBuf>,
    messages: usize,
    offline_messages: usize,
    store_messages: usize,
    depositors: usize,
    presence_clients: usize,
    heartbeats: usize,
    idle_secs: u64,
    media_mib: u64,
    media_stores: usize,
    mesh_sizes: Vec<usize>,
    mesh_stores: usize,
    mesh_messages: usize,
    bin_dir: Option<PathBuf>,
    runs: usize,
    seed: u64,
    /// Scheduler steps per fault run (`--fault-steps`; default: the campaign's).
    fault_steps: Option<usize>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        scenarios: Vec::new(),
        json: None,
        messages: 50_000,
        offline_messages: 10_000,
        store_messages: 64_000,
        depositors: 32,
        presence_clients: 32,
        heartbeats: 2_000,
        idle_secs: 60,
        media_mib: 100,
        media_stores: MEDIA_STORES,
        mesh_sizes: vec![100, 300, 1000],
        mesh_stores: 10,
        mesh_messages: 3,
        bin_dir: None,
        runs: 10,
        fault_steps: None,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    fn num<T: std::str::FromStr>(v: Option<String>, flag: &str) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let v = v.with_context(|| format!("{flag} needs a number"))?;
        v.parse()
            .with_context(|| format!("{flag}: {v:?} is not a number"))
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => args.json = Some(it.next().context("--json needs a path")?.into()),
            "--bin-dir" => {
                args.bin_dir = Some(it.next().context("--bin-dir needs a directory")?.into())
            }
            "--store-messages" => args.store_messages = num(it.next(), "--store-messages")?,
            "--depositors" => args.depositors = num(it.next(), "--depositors")?,
            "--presence-clients" => args.presence_clients = num(it.next(), "--presence-clients")?,
            "--heartbeats" => args.heartbeats = num(it.next(), "--heartbeats")?,
            "--idle-secs" => args.idle_secs = num(it.next(), "--idle-secs")?,
            "--media-mib" => args.media_mib = num(it.next(), "--media-mib")?,
            "--media-stores" => args.media_stores = num(it.next(), "--media-stores")?,
            "--mesh-sizes" => {
                args.mesh_sizes = it
                    .next()
                    .context("--mesh-sizes needs a list like 100,300,1000")?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--mesh-sizes: numbers separated by commas")?
            }
            "--runs" => args.runs = num(it.next(), "--runs")?,
            "--seed" => args.seed = num(it.next(), "--seed")?,
            "--fault-steps" => args.fault_steps = Some(num(it.next(), "--fault-steps")?),
            "--mesh-stores" => args.mesh_stores = num(it.next(), "--mesh-stores")?,
            "--mesh-messages" => args.mesh_messages = num(it.next(), "--mesh-messages")?,
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
                println!(
                    "kith-bench [all | SCENARIO...] [--json out.json] [--messages N] \
                     [--offline-messages N] [--store-messages N] [--depositors N] \
                     [--presence-clients N] [--heartbeats N] [--idle-secs S] \
                     [--media-mib N] [--media-stores N] [--runs N] [--seed S] [--fault-steps N] [--bin-dir DIR]\n"
                );
                for (name, in_all, help) in SCENARIOS {
                    let note = if *in_all { "" } else { " (not in `all`)" };
                    println!("  {name:<10} {help}{note}");
                }
                std::process::exit(0);
            }
            "all" => args.scenarios.extend(
                SCENARIOS
                    .iter()
                    .filter(|(_, in_all, _)| *in_all)
                    .map(|(n, _, _)| n.to_string()),
            ),
            other if SCENARIOS.iter().any(|(n, _, _)| *n == other) => args.scenarios.push(a),
            other => {
                let names: Vec<&str> = SCENARIOS.iter().map(|(n, _, _)| *n).collect();
                bail!(
                    "unknown argument {other:?} (scenarios: all, {})",
                    names.join(", ")
                )
            }
        }
    }
    if args.scenarios.is_empty() {
        args.scenarios = SCENARIOS
            .iter()
            .filter(|(_, in_all, _)| *in_all)
            .map(|(n, _, _)| n.to_string())
            .collect();
    }
    let mut seen = std::collections::HashSet::new();
    args.scenarios.retain(|s| seen.insert(s.clone()));
    Ok(args)
}

/// Runs one scenario (named in [`SCENARIOS`]) and returns its figures.
async fn run_scenario(name: &str, args: &Args) -> Result<Value> {
    match name {
        "direct" => direct(args.messages).await,
        "offline" => offline(args.offline_messages).await,
        "store" => store(args).await,
        "presence" => presence(args).await,
        "idle" => idle(args).await,
        "media" => media(args).await,
        "mesh" => {
            kith_tests::sim::mesh_bench(&args.mesh_sizes, args.mesh_stores, args.mesh_messages)
                .await
        }
        other => bail!("scenario {other:?} is listed but not wired to a function"),
    }
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some(IDLE_BASELINE_CHILD) {
        return idle_baseline_child();
    }
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
    if args.scenarios.iter().any(|s| s == "faults") {
        ensure!(args.scenarios.len() == 1, "`faults` runs alone");
        return rt.block_on(faults(&args));
    }
    let mut report = serde_json::Map::new();
    for s in &args.scenarios {
        let figures = rt.block_on(run_scenario(s, &args))?;
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

/// `faults`: the campaign of [`kith_tests::faults`]; its totals are the JSON file's top level.
/// Exits non-zero when any run broke a promise.
async fn faults(args: &Args) -> Result<()> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => sibling_bin(args, "kith")?
            .parent()
            .context("kith has no directory")?
            .to_path_buf(),
    };
    let mut cfg = kith_tests::faults::FaultConfig::campaign(bin_dir);
    if let Some(steps) = args.fault_steps {
        cfg.steps = steps;
    }
    let (runs, seed) = (args.runs, args.seed);
    eprintln!("faults: {runs} runs, seeds {seed}..{}", seed + runs as u64);
    let totals = kith_tests::faults::campaign(&cfg, runs, seed, |i, r| {
        eprintln!("[{}/{runs}] {}", i + 1, r.summary());
        for f in r.failures.iter().take(12) {
            eprintln!("    {}: {}", f.what, f.why);
        }
        if r.failures.len() > 12 {
            eprintln!("    ... {} more", r.failures.len() - 12);
        }
        if let Some(kept) = &r.kept {
            eprintln!("    logs and data kept in {}", kept.display());
        }
    })
    .await?;
    let mut figures = totals.to_json();
    if let Value::Object(map) = &mut figures {
        let reports = map.remove("reports");
        print_table("faults", &Value::Object(map.clone()));
        if let Some(reports) = reports {
            map.insert("reports".into(), reports);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if totals.failed() {
        bail!(
            "{} of {runs} runs broke a promise; reproduce one with --runs 1 --seed <seed>: {:?}",
            totals.failed_seeds.len(),
            totals.failed_seeds
        );
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

// ---------------------------------------------------------------------------------------
// Child processes and what /proc says about them.

/// Deposits each depositor keeps unanswered at most (below the store peer's per-stream
/// answer queue of 1,024, whose overflow it drops).
const DEPOSIT_WINDOW: usize = 256;
/// Deposits written per stream write.
const DEPOSIT_BATCH: usize = 64;
/// Recipients the `store` scenario's envelopes are addressed to.
const STORE_RECIPIENTS: usize = 64;
/// Presence records written per stream write in the `presence` scenario.
const PRESENCE_BATCH: usize = 256;
/// Contacts of the `idle` scenario's node.
const IDLE_CONTACTS: usize = 10;
/// Store peers of the `idle` scenario.
const IDLE_STORES: usize = 3;
/// Time left after setting up `idle` before measuring, so start-up work is not counted.
const IDLE_SETTLE: Duration = Duration::from_secs(5);
/// Store peers the `media` scenario sends through unless `--media-stores` says otherwise.
const MEDIA_STORES: usize = 3;
/// Plaintext chunk size of the `media` baselines: what senders use (`DEFAULT_CHUNK_SIZE`).
const MEDIA_CHUNK: usize = kith_protocol::blob::DEFAULT_CHUNK_SIZE as usize;
/// Memory a process may use above its own fixed cost while moving a file of any size: the
/// stated bound is the largest fixed cost measured in the run plus this. Chosen from the
/// design, not from a run: at most 4 transfers at once (`TransferConfig::max_active`), each
/// holding one batch of 16 chunks of 64 KiB as ciphertext and plaintext (2 MiB) on either
/// end, an upload window of 8 sealed chunks per store peer, the 1 MiB frame buffers of a
/// few streams and the HTTP body buffers: about 16 MiB, doubled for allocator slack.
const MEDIA_RSS_HEADROOM_MIB: f64 = 32.0;
/// `/proc` reports CPU times in USER_HZ, which is 100 on Linux.
const USER_HZ: f64 = 100.0;
const MIB: f64 = 1024.0 * 1024.0;

/// What `/proc` says about a process at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    /// User + system CPU time, seconds (threads that exited included).
    cpu_s: f64,
    /// Resident set, bytes.
    rss: u64,
    /// Bytes passed to write-like system calls (sockets and files).
    wchar: u64,
}

fn proc_sample(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .with_context(|| format!("/proc/{pid}/stat has no command name"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        let f = fields
            .get(i - 3)
            .with_context(|| format!("/proc/{pid}/stat has no field {i}"))?;
        Ok(f.parse()?)
    };
    let cpu_s = (field(14)? + field(15)?) as f64 / USER_HZ;
    let kib = |text: &str, key: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .with_context(|| format!("no {key} for process {pid}"))?
            .parse::<u64>()
            .map_err(Into::into)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss = kib(&status, "VmRSS:")? * 1024;
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .with_context(|| format!("reading /proc/{pid}/io"))?;
    let wchar = kib(&io, "wchar:")?;
    Ok(ProcSample { cpu_s, rss, wchar })
}

/// A process's peak resident set so far (`VmHWM`), bytes.
fn peak_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .with_context(|| format!("no VmHWM for process {pid}"))?
        .parse()?;
    Ok(kib * 1024)
}

fn self_sample() -> Result<ProcSample> {
    proc_sample(std::process::id())
}

/// TCP bytes sent by each of `pid`'s sockets (key: local and peer address), from `ss -tinp`.
fn tcp_bytes_sent(pid: u32) -> Result<HashMap<String, u64>> {
    let out = std::process::Command::new("ss")
        .args(["-tinpH"])
        .output()
        .context("running `ss -tinpH` (iproute2)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let needle = format!("pid={pid},");
    let mut sockets = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            current = None;
            if line.contains(&needle) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let (Some(local), Some(peer)) = (f.get(3), f.get(4)) {
                    let key = format!("{local} {peer}");
                    sockets.insert(key.clone(), 0);
                    current = Some(key);
                }
            }
        } else if let Some(key) = &current {
            let sent = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("bytes_sent:"))
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(sent) = sent {
                sockets.insert(key.clone(), sent);
            }
        }
    }
    Ok(sockets)
}

/// Bytes sent between two [`tcp_bytes_sent`] snapshots, and how many sockets of the first
/// had closed by the second (their last bytes are not counted).
fn tcp_sent_between(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> (u64, usize) {
    let sent = after
        .iter()
        .map(|(k, v)| v.saturating_sub(before.get(k).copied().unwrap_or(0)))
        .sum();
    let closed = before.keys().filter(|k| !after.contains_key(*k)).count();
    (sent, closed)
}

/// A sibling binary of this one (same target directory and profile), or from `--bin-dir`.
fn sibling_bin(args: &Args, name: &str) -> Result<PathBuf> {
    procs::sibling_bin(args.bin_dir.as_deref(), name)
}

/// Starts `kith-bootstrap run --store` as a child on a loopback port, with quotas and the
/// depositor rate limit lifted (these scenarios measure the store path, not the quotas).
/// Returns the child and its address (with `/p2p`).
async fn spawn_store(
    bin: &std::path::Path,
    dir: &std::path::Path,
    peers: &[libp2p::Multiaddr],
    metrics: Option<std::net::SocketAddr>,
) -> Result<(ChildProc, libp2p::Multiaddr)> {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("run")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--store"])
        .args(["--deposits-per-minute", &u32::MAX.to_string()])
        .args(["--max-messages-per-mailbox", "100000000"])
        .args(["--max-bytes-per-mailbox", &(1u64 << 40).to_string()])
        .args(["--max-blob-bytes", &(1u64 << 40).to_string()])
        .args(["--max-blob-bytes-per-mailbox", &(1u64 << 40).to_string()]);
    for p in peers {
        cmd.arg("--peer").arg(p.to_string());
    }
    if let Some(m) = metrics {
        cmd.arg("--metrics").arg(m.to_string());
    }
    let mut child = ChildProc::spawn("kith-bootstrap", cmd)?;
    let line = child.line(|l| l.starts_with("/ip4/")).await?;
    let addr: libp2p::Multiaddr = line
        .trim()
        .parse()
        .with_context(|| format!("kith-bootstrap printed {line:?}, not an address"))?;
    peer_of(&addr)?;
    Ok((child, addr))
}

/// A counter or gauge from a store peer's Prometheus endpoint, retried while it starts.
async fn metric(http: &reqwest::Client, at: std::net::SocketAddr, name: &str) -> Result<u64> {
    let deadline = tokio::time::Instant::now() + CHILD_TIMEOUT;
    loop {
        let body = match http.get(format!("http://{at}/metrics")).send().await {
            Ok(r) => r.text().await.ok(),
            Err(_) => None,
        };
        if let Some(body) = body {
            return body
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .with_context(|| format!("no {name} in the metrics of {at}"))?
                .trim()
                .parse()
                .with_context(|| format!("{name} is not a number"));
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no metrics on {at} within {CHILD_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------------------
// `store`

/// Deposits `envs` on `stream` keeping at most [`DEPOSIT_WINDOW`] unanswered; returns
/// (stored, refused).
async fn deposit_all(stream: &mut MailboxStream, envs: Vec<Envelope>) -> Result<(usize, usize)> {
    let n = envs.len();
    let mut it = envs.into_iter();
    let (mut sent, mut answered, mut stored, mut refused) = (0, 0, 0, 0);
    while answered < n {
        if sent < n && sent - answered + DEPOSIT_BATCH <= DEPOSIT_WINDOW {
            let batch: Vec<MailboxRequest> = it
                .by_ref()
                .take(DEPOSIT_BATCH)
                .map(MailboxRequest::Deposit)
                .collect();
            sent += batch.len();
            stream.send(&batch).await?;
            continue;
        }
        match stream.recv().await? {
            MailboxResponse::Stored(_) => {
                stored += 1;
                answered += 1;
            }
            MailboxResponse::Refused(..) => {
                refused += 1;
                answered += 1;
            }
            _ => {}
        }
    }
    Ok((stored, refused))
}

async fn store(args: &Args) -> Result<Value> {
    let bin = sibling_bin(args, "kith-bootstrap")?;
    let dir = tempfile::tempdir()?;
    let metrics_at = free_loopback_addr()?;
    let (child, addr) = spawn_store(&bin, &dir.path().join("store"), &[], Some(metrics_at)).await?;
    let peer = peer_of(&addr)?;
    let http = reqwest::Client::new();
    metric(&http, metrics_at, "kith_stored_messages").await?;

    let depositors = args.depositors.max(1);
    let per = args.store_messages.div_ceil(depositors).max(1);
    let total = per * depositors;
    eprintln!(
        "store: sealing {total} envelopes ({depositors} depositors, {STORE_RECIPIENTS} recipients)"
    );
    let expires = now_ms() + 7 * 24 * 3600 * 1000;
    let mut rng = {
        use rand::SeedableRng;
        rand::rngs::StdRng::from_entropy()
    };
    let recipients: Vec<KeyBundle> = (0..STORE_RECIPIENTS)
        .map(|_| LocalIdentity::generate(now_ms(), &mut rng).bundle())
        .collect();
    let mut batches = Vec::with_capacity(depositors);
    for d in 0..depositors {
        let mut sealer = Sealer::new();
        let mut envs = Vec::with_capacity(per);
        for i in 0..per {
            let to = &recipients[(d + i) % STORE_RECIPIENTS];
            envs.push(sealer.text(to, &text(i), expires)?);
        }
        batches.push(envs);
    }

    // Idle footprint before any depositor connects.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = proc_sample(child.pid())?.rss;

    eprintln!("store: connecting {depositors} depositors");
    let mut clients = Vec::with_capacity(depositors);
    let mut streams = Vec::with_capacity(depositors);
    for _ in 0..depositors {
        let mut c = MailboxClient::random().await?;
        streams.push(c.open_at(peer, vec![addr.clone()]).await?);
        clients.push(c);
    }

    eprintln!("store: depositing");
    let child0 = proc_sample(child.pid())?;
    let self0 = self_sample()?;
    let started = Instant::now();
    let tasks: Vec<_> = streams
        .into_iter()
        .zip(batches)
        .map(|(mut s, envs)| tokio::spawn(async move { deposit_all(&mut s, envs).await }))
        .collect();
    let (mut stored, mut refused) = (0usize, 0usize);
    for t in tasks {
        let (s, r) = t.await??;
        stored += s;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let child1 = proc_sample(child.pid())?;
    let self1 = self_sample()?;
    ensure!(
        refused == 0,
        "the store peer refused {refused} of {total} deposits"
    );

    drop(clients);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = metric(&http, metrics_at, "kith_stored_messages").await?;
    let held_bytes = metric(&http, metrics_at, "kith_stored_bytes").await?;
    let holding_rss = proc_sample(child.pid())?.rss;
    drop(child);

    let rate = stored as f64 / elapsed;
    let cpu_us = (child1.cpu_s - child0.cpu_s) * 1e6 / stored.max(1) as f64;
    let dep_cpu_us = (self1.cpu_s - self0.cpu_s) * 1e6 / stored.max(1) as f64;
    let per_msg = held_bytes as f64 / held.max(1) as f64;
    let rss_per_1m = holding_rss.saturating_sub(idle_rss) as f64 / held.max(1) as f64 * 1e6 / MIB;
    let payload_per_1m = per_msg * 1e6 / MIB;

    eprintln!("baseline: sled inserts of {total} values of {per_msg:.0} bytes, flush every 256");
    let b0 = self_sample()?;
    let base_rate = baseline_sled(dir.path(), total, per_msg.max(1.0) as usize)?;
    let b1 = self_sample()?;
    let base_cpu_us = (b1.cpu_s - b0.cpu_s) * 1e6 / total as f64;
    Ok(json!({
        "depositors": depositors,
        "messages": stored,
        "deposits_per_s": rate.round(),
        "baseline_sled_durable_inserts_per_s": base_rate.round(),
        "deposit_ratio": ratio(rate, base_rate),
        "store_cpu_us_per_deposit": round1(cpu_us),
        "store_cpu_cores_busy": round3((child1.cpu_s - child0.cpu_s) / elapsed),
        "depositors_cpu_us_per_deposit": round1(dep_cpu_us),
        "baseline_sled_cpu_us_per_insert": round1(base_cpu_us),
        "cpu_per_deposit_ratio": ratio(cpu_us, base_cpu_us),
        "held_messages": held,
        "store_bytes_per_msg": per_msg.round(),
        "store_rss_idle_mib": round1(idle_rss as f64 / MIB),
        "store_rss_holding_mib": round1(holding_rss as f64 / MIB),
        "store_rss_mib_per_1m_held_extrapolated": round1(rss_per_1m),
        "baseline_payload_mib_per_1m": round1(payload_per_1m),
        "rss_per_1m_ratio": ratio(rss_per_1m, payload_per_1m),
    }))
}

// ---------------------------------------------------------------------------------------
// `presence`

async fn presence(args: &Args) -> Result<Value> {
    let bin = sibling_bin(args, "kith-bootstrap")?;
    let dir = tempfile::tempdir()?;
    let metrics_at = free_loopback_addr()?;
    let (child, addr) = spawn_store(&bin, &dir.path().join("store"), &[], Some(metrics_at)).await?;
    let peer = peer_of(&addr)?;
    let http = reqwest::Client::new();
    metric(&http, metrics_at, "kith_heartbeats_total").await?;

    let clients_n = args.presence_clients.max(1);
    let per = args.heartbeats.max(1);
    let total = clients_n * per;
    eprintln!("presence: signing {total} presence records ({clients_n} users)");
    let mut rng = {
        use rand::SeedableRng;
        rand::rngs::StdRng::from_entropy()
    };
    let now = now_ms();
    let mut users = Vec::with_capacity(clients_n);
    for _ in 0..clients_n {
        let me = LocalIdentity::generate(now, &mut rng);
        let records: Vec<PresenceRecord> = (1..=per as u64)
            .map(|seq| PresenceRecord::sign(&me, seq, now + seq, true, Visibility::Everyone))
            .collect();
        users.push((me, records));
    }

    eprintln!("presence: connecting {clients_n} users");
    let mut clients = Vec::with_capacity(clients_n);
    let mut work = Vec::with_capacity(clients_n);
    for (me, records) in &users {
        let mut c = MailboxClient::as_user(me).await?;
        let stream = c.open_at(peer, vec![addr.clone()]).await?;
        clients.push(c);
        work.push((stream, me.user_id(), records.clone()));
    }

    eprintln!("presence: sending heartbeats");
    let hb0 = metric(&http, metrics_at, "kith_heartbeats_total").await?;
    let child0 = proc_sample(child.pid())?;
    let started = Instant::now();
    let tasks: Vec<_> = work
        .into_iter()
        .map(|(mut stream, user, records)| {
            tokio::spawn(async move {
                let last = records.len() as u64;
                for chunk in records.chunks(PRESENCE_BATCH) {
                    let reqs: Vec<MailboxRequest> = chunk
                        .iter()
                        .cloned()
                        .map(MailboxRequest::Presence)
                        .collect();
                    stream.send(&reqs).await?;
                }
                // The store peer handles a stream's requests in order: once it answers this,
                // it has handled every record before it.
                match stream.barrier(&user).await?.1 {
                    MailboxResponse::Presence(_, Some(r)) if r.seq == last => Ok(()),
                    other => bail!("after {last} heartbeats the store peer answers {other:?}"),
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let child1 = proc_sample(child.pid())?;
    let accepted = metric(&http, metrics_at, "kith_heartbeats_total").await? - hb0;
    drop(clients);
    drop(child);
    ensure!(
        accepted as usize == total,
        "the store peer accepted {accepted} of {total} heartbeats"
    );
    let rate = accepted as f64 / elapsed;
    let cpu_us = (child1.cpu_s - child0.cpu_s) * 1e6 / accepted.max(1) as f64;

    eprintln!("baseline: verifying {total} presence records, one thread");
    let records: Vec<PresenceRecord> = users.into_iter().flat_map(|(_, r)| r).collect();
    let (base_rate, base_cpu_us) = tokio::task::spawn_blocking(move || -> Result<(f64, f64)> {
        let c0 = self_sample()?;
        let t0 = Instant::now();
        for r in &records {
            r.verify()
                .map_err(|e| anyhow::anyhow!("baseline record does not verify: {e}"))?;
        }
        let secs = t0.elapsed().as_secs_f64();
        let c1 = self_sample()?;
        let n = records.len() as f64;
        Ok((n / secs, (c1.cpu_s - c0.cpu_s) * 1e6 / n))
    })
    .await??;
    Ok(json!({
        "users": clients_n,
        "heartbeats": accepted,
        "heartbeats_per_s": rate.round(),
        "baseline_verifies_per_s": base_rate.round(),
        "heartbeat_ratio": ratio(rate, base_rate),
        "store_cpu_us_per_heartbeat": round1(cpu_us),
        "store_cpu_cores_busy": round3((child1.cpu_s - child0.cpu_s) / elapsed),
        "baseline_cpu_us_per_verify": round1(base_cpu_us),
        "cpu_per_heartbeat_ratio": ratio(cpu_us, base_cpu_us),
    }))
}

// ---------------------------------------------------------------------------------------
// `idle`

/// The `idle` baseline's child: a multi-thread tokio runtime (as `kith run` uses) with a 5 s
/// timer, forever.
fn idle_baseline_child() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
        }
    })
}

async fn idle(args: &Args) -> Result<Value> {
    let boot_bin = sibling_bin(args, "kith-bootstrap")?;
    let kith_bin = sibling_bin(args, "kith")?;
    let dir = tempfile::tempdir()?;

    eprintln!("idle: starting {IDLE_STORES} store peers");
    let mut stores = Vec::new();
    let mut addrs: Vec<libp2p::Multiaddr> = Vec::new();
    for i in 0..IDLE_STORES {
        let (c, a) = spawn_store(
            &boot_bin,
            &dir.path().join(format!("store{i}")),
            &addrs,
            None,
        )
        .await?;
        addrs.push(a);
        stores.push(c);
    }

    eprintln!("idle: starting the measured node");
    let node_dir = dir.path().join("node");
    kith_node::run::init(&node_dir).context("kith init of the measured node")?;
    let token = kith_node::run::read_token(&node_dir)?;
    let boot_list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let mut cmd = std::process::Command::new(&kith_bin);
    cmd.arg("--data-dir")
        .arg(&node_dir)
        .args([
            "--api",
            "127.0.0.1:0",
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .args(["--bootstrap", &boot_list.join(",")]);
    let mut node = ChildProc::spawn("kith", cmd)?;
    let api_line = node.line(|l| l.starts_with("kith: api ")).await?;
    let api_addr = api_line.trim_start_matches("kith: api ").trim().to_string();
    let api = kith_node::client::ApiClient::new(&api_addr, token)?;
    let me = api.me().await?;
    let me_id: kith_protocol::UserId = me
        .user_id
        .parse()
        .map_err(|e| anyhow::anyhow!("bad user id {:?}: {e:?}", me.user_id))?;

    eprintln!("idle: {IDLE_CONTACTS} contacts exchange a message with it");
    let mut contacts = Vec::with_capacity(IDLE_CONTACTS);
    for i in 0..IDLE_CONTACTS {
        let c = start(dir.path(), &format!("contact{i}"), addrs.clone()).await?;
        let invite = c.node.me().await?.invite;
        api.add_contact(&invite, Some(format!("contact{i}").as_str()))
            .await?;
        c.node
            .add_contact(&me.invite, Some("measured".into()))
            .await?;
        // In: a message to the node and its delivered receipt back.
        blast(&c.node, me_id, 1, DeliveryStatus::Delivered).await?;
        // Out: a message from the node, received by the contact.
        let mut events = c.node.subscribe();
        api.send_text(&c.user_id().to_string(), "hello", None)
            .await?;
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, events.recv())
                .await
                .context("a contact waited too long for the node's message")?
            {
                Ok(Event::Message { message, .. }) if !message.outgoing => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => bail!("event stream closed: {e}"),
            }
        }
        contacts.push(c);
    }

    let baseline = ChildProc::spawn("idle baseline", {
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.arg(IDLE_BASELINE_CHILD);
        cmd
    })?;
    tokio::time::sleep(IDLE_SETTLE).await;

    let secs = args.idle_secs.max(1);
    eprintln!("idle: measuring for {secs} s");
    let n0 = proc_sample(node.pid())?;
    let b0 = proc_sample(baseline.pid())?;
    let s0: Vec<ProcSample> = stores
        .iter()
        .map(|s| proc_sample(s.pid()))
        .collect::<Result<_>>()?;
    let tcp0 = tcp_bytes_sent(node.pid())?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let window = started.elapsed().as_secs_f64();
    let n1 = proc_sample(node.pid())?;
    let b1 = proc_sample(baseline.pid())?;
    let s1: Vec<ProcSample> = stores
        .iter()
        .map(|s| proc_sample(s.pid()))
        .collect::<Result<_>>()?;
    let tcp1 = tcp_bytes_sent(node.pid())?;
    let (tcp_sent, closed) = tcp_sent_between(&tcp0, &tcp1);
    let stores_cpu: f64 = s0.iter().zip(&s1).map(|(a, b)| b.cpu_s - a.cpu_s).sum();

    drop(baseline);
    drop(node);
    for c in contacts {
        c.shutdown().await?;
    }
    drop(stores);

    let node_cpu = n1.cpu_s - n0.cpu_s;
    let base_cpu = b1.cpu_s - b0.cpu_s;
    Ok(json!({
        "idle_s": round1(window),
        "contacts": IDLE_CONTACTS,
        "store_peers": IDLE_STORES,
        "node_cpu_s": round3(node_cpu),
        "node_cpu_pct_of_core": round3(node_cpu / window * 100.0),
        "baseline_cpu_s": round3(base_cpu),
        "baseline_cpu_pct_of_core": round3(base_cpu / window * 100.0),
        "cpu_ratio": ratio(node_cpu, base_cpu),
        "target_cpu_pct_of_core": 0.1,
        "node_tcp_bytes_sent": tcp_sent,
        "node_tcp_bytes_sent_per_s": (tcp_sent as f64 / window).round(),
        "node_tcp_sockets": tcp1.len(),
        "node_tcp_sockets_closed_during_window": closed,
        "node_wchar_bytes": n1.wchar.saturating_sub(n0.wchar),
        "baseline_wchar_bytes": b1.wchar.saturating_sub(b0.wchar),
        "node_rss_mib": round1(n1.rss as f64 / MIB),
        "baseline_rss_mib": round1(b1.rss as f64 / MIB),
        "rss_ratio": ratio(n1.rss as f64, b1.rss as f64),
        "target_rss_mib": 30,
        "store_peers_cpu_s": round3(stores_cpu),
    }))
}

// ---------------------------------------------------------------------------------------
// `media`

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

fn mib(bytes: u64) -> f64 {
    round1(bytes as f64 / MIB)
}

async fn media(args: &Args) -> Result<Value> {
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
    let mut stores = Vec::new();
    let mut addrs: Vec<libp2p::Multiaddr> = Vec::new();
    for i in 0..args.media_stores {
        let (c, a) = spawn_store(
            &boot_bin,
            &dir.path().join(format!("store{i}")),
            &addrs,
            None,
        )
        .await?;
        addrs.push(a);
        stores.push(c);
    }
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
