//! `idle`: one `kith run` node (child process) with 3 store peers (child processes) and 10
//! contacts (in this process) it has exchanged a message with, left idle for `--idle-secs`:
//! the node's CPU time, TCP bytes it sent (`ss`), bytes written (`wchar`), RSS, and its sockets
//! per peer (target: one connection each, so one socket; from `/proc`). Baseline:
//! a child doing nothing but a tokio runtime with a 5 s timer, measured the same way over the
//! same window.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use kith_node::Event;
use kith_protocol::DeliveryStatus;
use serde_json::{json, Value};

use super::{
    cli::Cli,
    fixture::{
        blast, ratio, round1, round3, sibling_bin, spawn_store_chain, start_with, MIB,
        PHASE_TIMEOUT,
    },
};
use crate::{
    measure::{proc_sample, socket_counts, ProcSample},
    procs::ChildProc,
};

/// The hidden first argument that makes `kith-bench` the `idle` baseline's child process.
pub const IDLE_BASELINE_CHILD: &str = "__idle-baseline-child";

/// Contacts of the `idle` scenario's node.
const IDLE_CONTACTS: usize = 10;

/// Store peers of the `idle` scenario.
const IDLE_STORES: usize = 3;

/// Time left after setting up `idle` before measuring, so start-up work is not counted.
const IDLE_SETTLE: Duration = Duration::from_secs(5);

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

/// The `idle` baseline's child: a multi-thread tokio runtime (as `kith run` uses) with a 5 s
/// timer, forever.
pub fn baseline_child() -> Result<()> {
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

pub(super) async fn run(args: &Cli) -> Result<Value> {
    let boot_bin = sibling_bin(args, "kith-bootstrap")?;
    let kith_bin = sibling_bin(args, "kith")?;
    let dir = tempfile::tempdir()?;

    eprintln!("idle: starting {IDLE_STORES} store peers");
    let (stores, addrs) = spawn_store_chain(&boot_bin, dir.path(), IDLE_STORES).await?;

    let heartbeat_secs = args.idle_heartbeat_secs.max(1);
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
        .args(["--bootstrap", &boot_list.join(",")])
        .args(["--heartbeat", &format!("{heartbeat_secs}s")]);
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
        let c = start_with(dir.path(), &format!("contact{i}"), addrs.clone(), |cfg| {
            cfg.heartbeat = Duration::from_secs(heartbeat_secs)
        })
        .await?;
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
    // The bench's own HTTP connection to the node's API is not a peer's.
    let api_port = api_addr
        .trim_start_matches("http://")
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.port());
    let sockets = socket_counts(node.pid(), api_port)?;
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
        "heartbeat_s": heartbeat_secs,
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
        "node_sockets_tcp_established": sockets.tcp_established,
        "node_sockets_tcp_listening": sockets.tcp_listening,
        "node_sockets_tcp_other": sockets.tcp_other,
        "node_sockets_udp": sockets.udp,
        // Every contact and store peer is one peer the node has reason to stay connected to;
        // UDP sockets are not per peer (no QUIC here), so both figures are given. Sockets of
        // the REST API (its listener and the bench's connection) are not counted.
        "sockets_per_peer": round3(
            (sockets.tcp_established + sockets.udp) as f64 / (IDLE_CONTACTS + IDLE_STORES) as f64
        ),
        "tcp_connections_per_peer": round3(
            sockets.tcp_established as f64 / (IDLE_CONTACTS + IDLE_STORES) as f64
        ),
        "target_sockets_per_peer": 1,
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
