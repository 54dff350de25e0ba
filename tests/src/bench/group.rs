//! `group`: one sender's messages to a group of N members (256 by default; `--group-sizes
//! 256,1024`) in the simulation (every peer in this process, libp2p's memory transport),
//! against the baseline of N − 1 separate one-to-one messages from the same sender to the
//! same recipients in the same run. Not in `all`.
//!
//! Setup (store peers, N users, the creator introduced to each member only, the group
//! created and known by everyone, one warm-up message of each kind: the group's carries the
//! sender-key handout) is outside the measured rounds. Each round sends one group message
//! and one batch of one-to-one messages (alternating which goes first) and waits, for each,
//! until every recipient holds it and the sender sees it delivered. Measured:
//! - time from the send until every recipient holds the message (its `Message` event), per
//!   message, and each recipient's own arrival time;
//! - the sender's CPU time: the sender's node runs alone on a tokio runtime of its own, and
//!   the CPU time of that runtime's threads (worker and blocking pool) is read from
//!   `/proc/self/task`; sled's own background threads are not counted. The whole process's
//!   CPU (every node: recipients opening, storing and receipting) is reported beside it;
//! - the bytes the sender's node writes and reads: it runs on memory-transport links of its
//!   own, which count the bytes on its streams (application bytes inside Noise and Yamux,
//!   every protocol: messages, receipts, acks, heartbeats, DHT). An idle window before the
//!   rounds gives the background rate.

mod setup;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use kith_node::{handle::MAX_PAGE, Event, RunningNode};
use kith_protocol::{DeliveryStatus, GroupId, UserId};
use serde_json::{json, Value};
use tokio::{sync::broadcast::error::RecvError, task::JoinHandle};

use super::{
    cli::Cli,
    fixture::{ratio, TEXT_LEN},
    mesh::raise_fd_limit,
};
use crate::measure::{cpu_seconds, percentile};
use setup::{bar, Peers};

/// One group run.
#[derive(Clone, Debug)]
pub struct GroupBenchConfig {
    /// Members of the group, the creator included.
    pub members: usize,
    /// Store peers of the mesh.
    pub stores: usize,
    /// Measured rounds (one group message and one batch of one-to-one messages each).
    pub messages: usize,
    /// The users' heartbeat interval.
    pub heartbeat: Duration,
    /// Peers started (or introduced) at once during setup.
    pub parallel_starts: usize,
    /// Longest any wait (setup step or message) may take.
    pub timeout: Duration,
    /// Seconds the sender is left idle before the rounds, to measure its background traffic
    /// (0: none).
    pub idle_window: Duration,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for GroupBenchConfig {
    fn default() -> Self {
        GroupBenchConfig {
            members: 256,
            stores: 5,
            messages: 10,
            heartbeat: Duration::from_secs(5),
            parallel_starts: 16,
            timeout: Duration::from_secs(600),
            idle_window: Duration::from_secs(5),
            progress: true,
        }
    }
}

/// What one message (or one batch of one-to-one messages) cost and took.
#[derive(Clone, Debug, Default)]
struct Phase {
    /// From the send until the last recipient held it.
    all_hold: Duration,
    /// Each recipient's arrival, from the send.
    arrivals: Vec<Duration>,
    /// Until the send call(s) returned (durable at the sender).
    call: Duration,
    /// From the send until every recipient held it and the sender saw it delivered.
    window: Duration,
    sender_cpu_s: f64,
    process_cpu_s: f64,
    written: u64,
    read: u64,
}

/// Events seen by the watchers: arrivals by text (recipient, when), and delivered statuses
/// at the sender by message id.
#[derive(Default)]
struct Seen {
    arrivals: HashMap<String, Vec<(usize, Instant)>>,
    delivered: HashMap<String, Instant>,
}

type Shared = Arc<Mutex<Seen>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `kind`/`round` text, padded to [`TEXT_LEN`] like every benchmark text.
fn text(kind: char, round: usize) -> String {
    let mut t = format!("{kind}{round:05} ");
    while t.len() < TEXT_LEN {
        t.push('x');
    }
    t
}

/// Records when each recipient announces a message it received (`Some(i)`), or when the
/// sender sees one of its messages delivered (`None`).
fn watch(node: &RunningNode, who: Option<usize>, seen: Shared) -> JoinHandle<()> {
    let mut rx = node.node.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Event::Message { message, .. }) if !message.outgoing => {
                    if let Some(i) = who {
                        lock(&seen)
                            .arrivals
                            .entry(message.text)
                            .or_default()
                            .push((i, Instant::now()));
                    }
                }
                Ok(Event::Status { id, status, .. })
                    if who.is_none() && status >= DeliveryStatus::Delivered =>
                {
                    lock(&seen).delivered.entry(id).or_insert_with(Instant::now);
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => tracing::warn!(n, "group bench: events lagged"),
                Err(RecvError::Closed) => break,
            }
        }
    })
}

/// What the counters say now: (sender CPU, process CPU, written, read).
fn snapshot(p: &Peers) -> (f64, f64, u64, u64) {
    let (w, r) = p.sender_links.bytes();
    (p.sender_rt.cpu_seconds(), cpu_seconds(), w, r)
}

/// A phase's start: when, the counters then, and how long its send call(s) took.
struct Started {
    t0: Instant,
    before: (f64, f64, u64, u64),
    call: Duration,
}

/// Waits until every recipient holds `text` and the sender saw each of `ids` delivered;
/// then measures the phase `s`.
async fn finish_phase(
    p: &Peers,
    seen: &Shared,
    text: &str,
    ids: &[String],
    s: Started,
    timeout: Duration,
) -> Result<Phase> {
    let Started { t0, before, call } = s;
    let recipients = p.members.len();
    loop {
        let done = {
            let s = lock(seen);
            s.arrivals.get(text).map_or(0, Vec::len) >= recipients
                && ids.iter().all(|id| s.delivered.contains_key(id))
        };
        if done {
            break;
        }
        if t0.elapsed() > timeout {
            let s = lock(seen);
            bail!(
                "after {timeout:?}: {}/{recipients} recipients hold {:?}, {}/{} delivered at \
                 the sender",
                s.arrivals.get(text).map_or(0, Vec::len),
                text.split(' ').next().unwrap_or_default(),
                ids.iter()
                    .filter(|id| s.delivered.contains_key(*id))
                    .count(),
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let window = t0.elapsed();
    let after = snapshot(p);
    let mut arrivals: Vec<Duration> = lock(seen)
        .arrivals
        .get(text)
        .map(|v| {
            v.iter()
                .map(|(_, at)| at.saturating_duration_since(t0))
                .collect()
        })
        .unwrap_or_default();
    arrivals.sort();
    Ok(Phase {
        all_hold: arrivals.last().copied().unwrap_or_default(),
        arrivals,
        call,
        window,
        sender_cpu_s: after.0 - before.0,
        process_cpu_s: after.1 - before.1,
        written: after.2 - before.2,
        read: after.3 - before.3,
    })
}

async fn group_phase(
    p: &Peers,
    seen: &Shared,
    group: GroupId,
    round: usize,
    timeout: Duration,
) -> Result<Phase> {
    let text = text('g', round);
    let before = snapshot(p);
    let t0 = Instant::now();
    let send = p
        .creator()?
        .node
        .send_group_text(group, text.clone(), json!({}));
    let sent = tokio::time::timeout(timeout, send)
        .await
        .with_context(|| format!("group message {round}: no answer after {timeout:?}"))?
        .with_context(|| format!("sending group message {round}"))?;
    let call = t0.elapsed();
    let s = Started { t0, before, call };
    finish_phase(p, seen, &text, &[sent.id], s, timeout).await
}

async fn direct_phase(p: &Peers, seen: &Shared, round: usize, timeout: Duration) -> Result<Phase> {
    let text = text('d', round);
    let creator = p.creator()?;
    let before = snapshot(p);
    let t0 = Instant::now();
    let sent = futures::stream::iter(p.members.iter().map(|m| {
        let text = text.clone();
        async move {
            Ok(creator
                .node
                .send_text(m.user_id(), text, json!({}))
                .await
                .context("sending a one-to-one message")?
                .id)
        }
    }))
    .buffer_unordered(super::fixture::IN_FLIGHT)
    .collect::<Vec<Result<String>>>();
    let sent = tokio::time::timeout(timeout, sent)
        .await
        .with_context(|| format!("one-to-one round {round}: no answer after {timeout:?}"))?;
    let ids = sent.into_iter().collect::<Result<Vec<_>>>()?;
    let call = t0.elapsed();
    let s = Started { t0, before, call };
    finish_phase(p, seen, &text, &ids, s, timeout).await
}

/// What a group run measured, and whether every recipient holds every message exactly once.
#[derive(Clone, Debug, Default)]
pub struct GroupRun {
    /// Every figure, by name (see the module doc).
    pub figures: serde_json::Map<String, Value>,
    /// (recipient, text) pairs not held at the end.
    pub missing: usize,
    /// Messages held more than once (by text or by id).
    pub duplicates: usize,
}

/// Runs one group benchmark.
pub async fn run_group(cfg: &GroupBenchConfig) -> Result<GroupRun> {
    if cfg.members < 2 || cfg.messages == 0 || cfg.stores == 0 {
        bail!("a group run needs 2 members, 1 message and 1 store peer at least");
    }
    let dir = tempfile::Builder::new()
        .prefix("kith-group-")
        .tempdir()
        .context("creating the run's data directory")?;
    let setup_start = Instant::now();
    let recipients = cfg.members - 1;
    let show = cfg.progress;
    let p = setup::start(
        dir.path(),
        cfg.stores,
        recipients,
        cfg.heartbeat,
        cfg.parallel_starts,
        show,
    )
    .await?;
    let result = measure(&p, cfg, setup_start).await;
    p.shutdown().await;
    drop(dir);
    result
}

async fn measure(p: &Peers, cfg: &GroupBenchConfig, setup_start: Instant) -> Result<GroupRun> {
    let show = cfg.progress;
    p.wait_ready(cfg.timeout, show).await?;
    let seen: Shared = Arc::default();
    let mut watchers: Vec<JoinHandle<()>> = p
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| watch(m, Some(i), seen.clone()))
        .collect();
    watchers.push(watch(p.creator()?, None, seen.clone()));
    let out = measure_rounds(p, cfg, setup_start, &seen).await;
    for w in watchers {
        w.abort();
    }
    out
}

async fn measure_rounds(
    p: &Peers,
    cfg: &GroupBenchConfig,
    setup_start: Instant,
    seen: &Shared,
) -> Result<GroupRun> {
    let show = cfg.progress;
    let creator = p.creator()?;
    let member_ids: Vec<UserId> = p.members.iter().map(RunningNode::user_id).collect();
    let view = creator
        .node
        .create_group("bench".into(), member_ids)
        .await
        .context("creating the group")?;
    let group: GroupId = view.id.parse().context("the new group's id")?;
    let pb = bar(show, p.members.len(), "members joining the group");
    let deadline = Instant::now() + cfg.timeout;
    loop {
        let joined = p
            .members
            .iter()
            .filter(|m| {
                m.node
                    .group(&group)
                    .is_ok_and(|g| g.active && g.members.len() == cfg.members)
            })
            .count();
        pb.set(joined);
        if joined == p.members.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "after {:?}, {joined} of {} members had joined the group",
                cfg.timeout,
                p.members.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pb.finish();
    let create_s = setup_start.elapsed().as_secs_f64();

    // Warm-up: the group's first message carries our sender key to every member.
    if show {
        eprintln!("  group: warm-up (first group message, first one-to-one round)");
    }
    let first_group = group_phase(p, seen, group, 0, cfg.timeout).await?;
    let first_direct = direct_phase(p, seen, 0, cfg.timeout).await?;
    let setup_s = setup_start.elapsed().as_secs_f64();

    let idle_before = snapshot(p);
    if !cfg.idle_window.is_zero() {
        tokio::time::sleep(cfg.idle_window).await;
    }
    let idle_after = snapshot(p);
    let idle_s = cfg.idle_window.as_secs_f64();
    let deposits_before = deposits(p);

    if show {
        eprintln!("  group: idle window done");
    }
    let pb = bar(show, cfg.messages, "measured rounds");
    let (mut groups, mut directs) = (Vec::new(), Vec::new());
    for round in 1..=cfg.messages {
        if round % 2 == 1 {
            groups.push(group_phase(p, seen, group, round, cfg.timeout).await?);
            directs.push(direct_phase(p, seen, round, cfg.timeout).await?);
        } else {
            directs.push(direct_phase(p, seen, round, cfg.timeout).await?);
            groups.push(group_phase(p, seen, group, round, cfg.timeout).await?);
        }
        pb.inc();
    }
    pb.finish();
    let deposits_during = deposits(p).saturating_sub(deposits_before);
    let (missing, duplicates) = check_held(p, &group, cfg.messages)?;

    let mut f = serde_json::Map::new();
    let n = cfg.messages as f64;
    let mut put = |k: &str, v: Value| {
        f.insert(k.to_string(), v);
    };
    put("members", json!(cfg.members));
    put("recipients", json!(cfg.members - 1));
    put("stores", json!(cfg.stores));
    put("messages", json!(cfg.messages));
    put("setup_to_group_created_s", json!(round3(create_s)));
    put("setup_s", json!(round3(setup_s)));
    put("first_group_all_hold_ms", json!(ms(first_group.all_hold)));
    put(
        "first_group_sender_bytes_written",
        json!(first_group.written),
    );
    put("first_direct_all_hold_ms", json!(ms(first_direct.all_hold)));
    let holds = |v: &[Phase]| {
        let mut h: Vec<f64> = v.iter().map(|x| ms(x.all_hold)).collect();
        h.sort_by(f64::total_cmp);
        h
    };
    let pooled = |v: &[Phase]| {
        let mut h: Vec<f64> = v
            .iter()
            .flat_map(|x| x.arrivals.iter().map(|d| ms(*d)))
            .collect();
        h.sort_by(f64::total_cmp);
        h
    };
    let (gh, dh) = (holds(&groups), holds(&directs));
    let (gp, dp) = (pooled(&groups), pooled(&directs));
    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        let (g, d) = (percentile(&gh, q), percentile(&dh, q));
        put(&format!("group_all_hold_ms_{name}"), json!(g));
        put(&format!("direct_all_hold_ms_{name}"), json!(d));
        put(
            &format!("all_hold_{name}_group_over_direct"),
            json!(ratio(g, d)),
        );
    }
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        put(
            &format!("group_member_hold_ms_{name}"),
            json!(percentile(&gp, q)),
        );
        put(
            &format!("direct_member_hold_ms_{name}"),
            json!(percentile(&dp, q)),
        );
    }
    let mean = |v: &[Phase], get: fn(&Phase) -> f64| v.iter().map(get).sum::<f64>() / n;
    let mut pair = |name: &str, get: fn(&Phase) -> f64| {
        let (g, d) = (mean(&groups, get), mean(&directs, get));
        put(&format!("group_{name}"), json!(round3(g)));
        put(&format!("direct_{name}"), json!(round3(d)));
        put(&format!("{name}_group_over_direct"), json!(ratio(g, d)));
    };
    pair("send_call_ms", |x| ms(x.call));
    pair("window_ms", |x| ms(x.window));
    pair("sender_cpu_ms_per_message", |x| x.sender_cpu_s * 1000.0);
    pair("process_cpu_ms_per_message", |x| x.process_cpu_s * 1000.0);
    pair("sender_bytes_written_per_message", |x| x.written as f64);
    pair("sender_bytes_read_per_message", |x| x.read as f64);
    let idle = !cfg.idle_window.is_zero();
    put(
        "sender_idle_bytes_written_per_s",
        json!(idle.then(|| round3((idle_after.2 - idle_before.2) as f64 / idle_s))),
    );
    put(
        "sender_idle_cpu_ms_per_s",
        json!(idle.then(|| round3((idle_after.0 - idle_before.0) * 1000.0 / idle_s))),
    );
    put("store_deposits_during_rounds", json!(deposits_during));
    put("missing", json!(missing));
    put("duplicates", json!(duplicates));
    put(
        "note",
        json!(
            "direct = one send_text per recipient (all in flight at once); \
             sender CPU = the sender's own runtime threads (not sled's); \
             process CPU = all nodes in this process; bytes = the sender's stream bytes \
             (inside Noise/Yamux), background traffic included (see sender_idle_*)"
        ),
    );
    Ok(GroupRun {
        figures: f,
        missing,
        duplicates,
    })
}

/// Deposits (and replicas) taken so far by the running store peers.
fn deposits(p: &Peers) -> u64 {
    use std::sync::atomic::Ordering;
    p.stores
        .iter()
        .map(|s| s.metrics.deposits.load(Ordering::Relaxed))
        .sum()
}

/// Reads every recipient's group conversation and its conversation with the creator:
/// (missing, duplicated) among the `messages` + 1 texts of each kind sent.
fn check_held(p: &Peers, group: &GroupId, messages: usize) -> Result<(usize, usize)> {
    let creator = p.creator()?.user_id();
    let (mut missing, mut duplicates) = (0, 0);
    for m in &p.members {
        let mut texts: HashMap<String, usize> = HashMap::new();
        let mut ids = std::collections::HashSet::new();
        for page_of in [true, false] {
            let mut offset = 0;
            loop {
                let page = if page_of {
                    m.node.group_conversation(group, offset, MAX_PAGE, None)?
                } else {
                    m.node.conversation(&creator, offset, MAX_PAGE, None)?
                };
                for v in page.messages.iter().filter(|v| !v.outgoing) {
                    *texts.entry(v.text.clone()).or_default() += 1;
                    if !ids.insert(v.id.clone()) {
                        duplicates += 1;
                    }
                }
                match page.next_offset {
                    Some(next) => offset = next,
                    None => break,
                }
            }
        }
        for round in 0..=messages {
            for kind in ['g', 'd'] {
                match texts.get(&text(kind, round)).copied().unwrap_or(0) {
                    0 => missing += 1,
                    1 => {}
                    k => duplicates += k - 1,
                }
            }
        }
    }
    Ok((missing, duplicates))
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `group` benchmark: one run per size of `--group-sizes`; a size that fails is reported
/// with its error and larger sizes are skipped.
pub async fn run(cli: &Cli) -> Result<Value> {
    let fd_limit = raise_fd_limit(1 << 20);
    let mut out = serde_json::Map::new();
    for &members in &cli.group_sizes {
        let cfg = GroupBenchConfig {
            members,
            stores: cli.group_stores,
            messages: cli.group_messages,
            timeout: Duration::from_secs(cli.group_timeout_s),
            ..GroupBenchConfig::default()
        };
        eprintln!("group: {members} members (open-file limit {fd_limit})");
        let started = Instant::now();
        match run_group(&cfg).await {
            Ok(r) => {
                let mut v = r.figures;
                v.insert(
                    "wall_s".into(),
                    json!(round3(started.elapsed().as_secs_f64())),
                );
                let v = Value::Object(v);
                // Printed now: a larger size may not finish.
                super::fixture::print_table(&format!("group n{members}"), &v);
                out.insert(format!("n{members}"), v);
            }
            Err(e) => {
                tracing::warn!(members, error = %e, "group benchmark stopped at this size");
                out.insert(
                    format!("n{members}"),
                    json!({ "error": format!("{e:#}"), "wall_s": started.elapsed().as_secs_f64() }),
                );
                break;
            }
        }
    }
    Ok(Value::Object(out))
}
