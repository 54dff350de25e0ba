//! What every scenario builds on: nodes started in this process, store peers started as
//! child processes, the benchmark's texts, the sled baseline and how figures are rounded
//! and printed. Nothing here measures; the scenarios do.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use kith_node::{Config, Event, Node, RunningNode};
use kith_protocol::DeliveryStatus;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::cli::Cli;
use crate::procs::{self, free_loopback_addr, peer_of, ChildProc, CHILD_TIMEOUT};

/// Payload size of the design's average message.
pub(super) const TEXT_LEN: usize = 160;
/// Sends in flight during throughput runs.
pub(super) const IN_FLIGHT: usize = 512;
/// Longest any phase may take before the benchmark gives up.
pub(super) const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// Bytes in a MiB, for figures reported in MiB.
pub(super) const MIB: f64 = 1024.0 * 1024.0;

/// The `i`th benchmark text: its number, padded with `x` to [`TEXT_LEN`] bytes.
pub(super) fn text(i: usize) -> String {
    let mut t = format!("m{i:08} ");
    while t.len() < TEXT_LEN {
        t.push('x');
    }
    t
}

/// `a / b` to three decimals (0 when there is no baseline).
pub(super) fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        (a / b * 1000.0).round() / 1000.0
    }
}

/// Prints `done/total` to stderr at every tenth of the way.
pub(super) fn progress(label: &str, done: usize, total: usize) {
    if total >= 10 && done.is_multiple_of((total / 10).max(1)) {
        eprintln!("  {label}: {done}/{total}");
    }
}

/// Starts a loopback node called `name` under `dir`, bootstrapping from `bootstrap`.
pub(super) async fn start(
    dir: &std::path::Path,
    name: &str,
    bootstrap: Vec<libp2p::Multiaddr>,
) -> Result<RunningNode> {
    start_with(dir, name, bootstrap, |_| {}).await
}

/// [`start`], with `tune` changing the node's configuration first.
pub(super) async fn start_with(
    dir: &std::path::Path,
    name: &str,
    bootstrap: Vec<libp2p::Multiaddr>,
    tune: impl FnOnce(&mut Config),
) -> Result<RunningNode> {
    let mut cfg = Config::loopback(dir.join(name));
    cfg.bootstrap = bootstrap;
    tune(&mut cfg);
    kith_node::start(cfg)
        .await
        .with_context(|| format!("starting {name}"))
}

/// Makes two nodes contacts of each other.
pub(super) async fn introduce(a: &Node, b: &Node) -> Result<()> {
    let ai = a.me().await?.invite;
    let bi = b.me().await?.invite;
    a.add_contact(&bi, Some("b".into())).await?;
    b.add_contact(&ai, Some("a".into())).await?;
    Ok(())
}

/// Sends `n` texts from `from` to `to` with [`IN_FLIGHT`] sends outstanding, and waits until
/// `until` statuses are seen. Returns the elapsed time.
pub(super) async fn blast(
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

/// Durable inserts of `n` values of `size` bytes, flushing every 256 (a group commit).
pub(super) fn baseline_sled(dir: &std::path::Path, n: usize, size: usize) -> Result<f64> {
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

/// A sibling binary of this one (same target directory and profile), or from `--bin-dir`.
pub(super) fn sibling_bin(args: &Cli, name: &str) -> Result<PathBuf> {
    procs::sibling_bin(args.bin_dir.as_deref(), name)
}

/// Starts `kith-bootstrap run --store` as a child on a loopback port, with quotas and the
/// depositor rate limit lifted (these scenarios measure the store path, not the quotas).
/// Returns the child and its address (with `/p2p`).
pub(super) async fn spawn_store(
    bin: &std::path::Path,
    dir: &std::path::Path,
    peers: &[libp2p::Multiaddr],
    metrics: Option<std::net::SocketAddr>,
    cache_mib: Option<u64>,
) -> Result<(ChildProc, libp2p::Multiaddr)> {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("run")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--store"])
        .args(["--deposits-per-minute", &u32::MAX.to_string()])
        .args(["--deposits-per-ip-per-minute", &u32::MAX.to_string()])
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
    if let Some(mib) = cache_mib {
        cmd.arg("--store-cache-mib").arg(mib.to_string());
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

/// One store peer child with metrics served on a free loopback port, for the scenarios that
/// measure a single store peer: the child, its address (with `/p2p`), its peer id, where its
/// metrics are, and an HTTP client that has already read `first_metric` (so it is serving).
pub(super) async fn spawn_metered_store(
    args: &Cli,
    dir: &std::path::Path,
    first_metric: &str,
) -> Result<(
    ChildProc,
    libp2p::Multiaddr,
    libp2p::PeerId,
    std::net::SocketAddr,
    reqwest::Client,
)> {
    let bin = sibling_bin(args, "kith-bootstrap")?;
    let metrics_at = free_loopback_addr()?;
    let (child, addr) = spawn_store(
        &bin,
        &dir.join("store"),
        &[],
        Some(metrics_at),
        args.store_cache_mib,
    )
    .await?;
    let peer = peer_of(&addr)?;
    let http = reqwest::Client::new();
    metric(&http, metrics_at, first_metric).await?;
    Ok((child, addr, peer, metrics_at, http))
}

/// `n` store peer children under `dir` (`store0`, `store1`...), each knowing the ones started
/// before it. Returns the children and their addresses (with `/p2p`).
pub(super) async fn spawn_store_chain(
    bin: &std::path::Path,
    dir: &std::path::Path,
    n: usize,
) -> Result<(Vec<ChildProc>, Vec<libp2p::Multiaddr>)> {
    let mut stores = Vec::with_capacity(n);
    let mut addrs: Vec<libp2p::Multiaddr> = Vec::with_capacity(n);
    for i in 0..n {
        let (c, a) = spawn_store(bin, &dir.join(format!("store{i}")), &addrs, None, None).await?;
        addrs.push(a);
        stores.push(c);
    }
    Ok((stores, addrs))
}

/// A counter or gauge from a store peer's Prometheus endpoint, retried while it starts.
pub(super) async fn metric(
    http: &reqwest::Client,
    at: std::net::SocketAddr,
    name: &str,
) -> Result<u64> {
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

/// Rounded to one decimal.
pub(super) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Rounded to three decimals.
pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------------------
// `store`

/// Bytes in MiB, to one decimal.
pub(super) fn mib(bytes: u64) -> f64 {
    round1(bytes as f64 / MIB)
}

/// Prints a scenario's figures, one per line.
pub(super) fn print_table(scenario: &str, figures: &Value) {
    println!("\n== {scenario}");
    if let Value::Object(map) = figures {
        for (k, v) in map {
            println!("  {k:<42} {v}");
        }
    }
}

/// The 96-bit ChaCha20-Poly1305 nonce of the `n`th chunk or frame of a baseline.
pub(super) fn nonce(n: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[4..].copy_from_slice(&n.to_le_bytes());
    out
}
