//! The simulation harness: a whole Kith mesh in one process — store peers and user nodes
//! running the same library code as `kith` and `kith-bootstrap`, built by
//! [`kith_node::mesh::Mesh`] (the mesh `kith demo` runs) over loopback TCP with seeded keys
//! and temporary data directories — driven through a scenario written as a [`SimConfig`], and
//! measured into a [`SimReport`].
//!
//! It exists so that what the issue asks of the network as a whole (nothing lost, nothing
//! twice, every tick reaching delivered, under churn, store-peer loss and a partition) is
//! checked on many nodes at once, and so that `kith-bench` can report how large a mesh one
//! machine holds and what it costs.
//!
//! # A run
//! 1. Setup: the mesh starts (store peers, then users, a few at a time), only the users who
//!    talk to each other are introduced, and the run waits until each user's presence is held
//!    by its mailbox set (proof that the node found its store peers and subscribed there).
//! 2. DHT probe: a separate peer built from the node's own swarm code looks up a sample of
//!    users by id through the mesh's Kademlia DHT and counts the requests each lookup made.
//! 3. Rounds: in each of `messages_per_sender` rounds every user that is up sends one
//!    message (to its partner, or to a hot user). Between rounds the schedule stops and
//!    restarts peers:
//!    - **churn**: a fraction of the users each leave once ([`kith_node::RunningNode::shutdown`])
//!      for about a third of the rounds and come back on the same data directory and port;
//!    - **store loss**: `store_loss` store peers crash ([`kith_node::operator::Running::abort`],
//!      no final flush) for the middle third of the rounds and come back from their data
//!      directories on the same ports;
//!    - **partition**: the users of side A leave together; when they come back, every user
//!      of side B that talks to side A leaves, and only comes back (the heal) after. The two
//!      sides of the cut are never up at the same time during the partition, so nothing
//!      crosses the cut directly: everything goes through store peers. (A link-level cut
//!      between running nodes would need a hook in the node's swarm, which it does not have.)
//!
//!    A user that is down in a round sends that round's message when it is back, so every
//!    user sends exactly `messages_per_sender` messages.
//! 4. Settle: everyone is up; the run waits (bounded) until every sent message has reached
//!    `delivered` at its sender, then reads every conversation to count what arrived.
//!
//! Each message's text carries a unique tag (`sim:<from>:<round>`), so duplicates are found
//! by id and by text. Latency is measured from the return of `send_text` to the sender's
//! `Status` event saying `delivered`.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use kith_node::{
    handle::{MessageView, MAX_PAGE},
    mesh::{self, Mesh, MeshConfig, MeshOptions},
    net::{self, BehaviourEvent, NetConfig},
    operator::{self, metrics::Metrics},
    Config, Event, RunningNode,
};
use kith_protocol::{DeliveryStatus, UserId};
use libp2p::{kad, swarm::SwarmEvent, Multiaddr, PeerId};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::{sync::broadcast::error::RecvError, task::JoinHandle};

use crate::{
    measure::{cpu_seconds, percentile, rss_bytes},
    mesh::MailboxClient,
};

/// Who sends to whom.
#[derive(Clone, Debug, PartialEq)]
pub enum SendPattern {
    /// Users are paired at random (one triple if their number is odd); each sends to its
    /// partner.
    Pairs,
    /// As [`SendPattern::Pairs`], but each message goes to one of `hot` users instead with
    /// probability `share` (a hot spot: a few users receive much of the traffic).
    HotSpot {
        /// How many hot users.
        hot: usize,
        /// The fraction of messages sent to a hot user (0.0 ..= 1.0).
        share: f64,
    },
}

/// A scenario.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Store-and-forward peers (B).
    pub stores: usize,
    /// User nodes (N).
    pub users: usize,
    /// Seeds identities, pairings, hot-spot choices and the churn schedule.
    pub seed: u64,
    /// The users' heartbeat interval.
    pub heartbeat: Duration,
    /// Who sends to whom.
    pub pattern: SendPattern,
    /// Messages each user sends (one per round).
    pub messages_per_sender: usize,
    /// Fraction of users that leave once during the rounds and come back (0.0 ..= 1.0).
    pub churn: f64,
    /// Store peers that crash for the middle third of the rounds and come back.
    pub store_loss: usize,
    /// Fraction of users on side A of a partition that heals (0.0: no partition).
    pub partition: f64,
    /// How many peers start (or are introduced) at once during setup.
    pub parallel_starts: usize,
    /// How many sends run at once within a round.
    pub parallel_sends: usize,
    /// How long setup may wait for every user to be known by its store peers.
    pub ready_timeout: Duration,
    /// How long the end of the run may wait for every message to reach delivered.
    pub settle_timeout: Duration,
    /// How many users the DHT probe looks up (0: no probe).
    pub dht_lookups: usize,
    /// The store peers' repair interval (short, so that a returning store peer is repaired
    /// within a run).
    pub repair_interval: Duration,
    /// Where the data directories go (a temporary directory, removed after the run, when
    /// `None`).
    pub dir: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            stores: 5,
            users: 20,
            seed: 1,
            // The node's default. Every heartbeat is a signed presence record that each store
            // peer and contact verifies: at 1 s, 20 nodes keep a debug build's CPU busy.
            heartbeat: Duration::from_secs(5),
            pattern: SendPattern::Pairs,
            messages_per_sender: 6,
            churn: 0.0,
            store_loss: 0,
            partition: 0.0,
            parallel_starts: 8,
            parallel_sends: 64,
            ready_timeout: Duration::from_secs(60),
            settle_timeout: Duration::from_secs(60),
            dht_lookups: 10,
            repair_interval: Duration::from_millis(500),
            dir: None,
        }
    }
}

/// What a run measured. Every figure carries its unit in its name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimReport {
    /// User nodes.
    pub nodes: usize,
    /// Store peers.
    pub stores: usize,
    /// Messages sent (`send_text` returned).
    pub sent: u64,
    /// Sent messages found in their recipient's conversation (each counted once).
    pub delivered: u64,
    /// Extra copies in recipients' conversations (same id or same tag more than once).
    pub duplicated: u64,
    /// Sent messages missing from their recipient's conversation at the end.
    pub lost: u64,
    /// Messages the recipients hold that no one sent (should be 0).
    pub unexpected: u64,
    /// Sent messages whose status at the sender reached delivered.
    pub statuses_delivered: u64,
    /// Messages whose delivered status was seen as an event (the latency samples).
    pub latency_samples: u64,
    /// Median send → delivered-at-sender time.
    pub latency_p50_ms: f64,
    /// 99th percentile of the same.
    pub latency_p99_ms: f64,
    /// Longest of the same.
    pub latency_max_ms: f64,
    /// DHT lookups made by the probe.
    pub dht_lookups: u64,
    /// Lookups whose result held the user looked up.
    pub dht_lookups_found: u64,
    /// Mean Kademlia requests per lookup (rust-libp2p exposes no hop count: it runs
    /// iterative lookups with α = 3 in parallel; requests are what it reports).
    pub dht_lookup_requests_mean: f64,
    /// Most requests one lookup made.
    pub dht_lookup_requests_max: u64,
    /// Mean successful answers per lookup.
    pub dht_lookup_successes_mean: f64,
    /// Most messages (deposits + replicas) one store peer stored over the run.
    pub store_msgs_max: u64,
    /// Mean of the same over the store peers.
    pub store_msgs_mean: f64,
    /// Largest peak of bytes held by one store peer (sampled).
    pub store_bytes_max: u64,
    /// Mean over store peers of their peak bytes held.
    pub store_bytes_mean: f64,
    /// Messages the store peers still hold at the end (owners delete what they fetched).
    pub store_msgs_held_end: u64,
    /// Resident memory the mesh added, divided by its peers (users + store peers), after
    /// setup.
    pub rss_bytes_per_node: u64,
    /// Peak resident memory of the process.
    pub rss_peak_bytes: u64,
    /// CPU time (user + system) the process spent from the start of setup to the end.
    pub cpu_s: f64,
    /// CPU time spent in the rounds and the settle phase.
    pub cpu_run_s: f64,
    /// Stops of users (churn and partition).
    pub user_stops: u64,
    /// Stops of store peers.
    pub store_stops: u64,
    /// Wall time of setup (mesh start, introductions, readiness).
    pub setup_s: f64,
    /// Wall time of the rounds and the settle phase.
    pub run_s: f64,
    /// Whether every message reached delivered before `settle_timeout`.
    pub settled: bool,
}

impl SimReport {
    /// The report as JSON (field names as in the struct).
    pub fn to_json(&self) -> Value {
        json!({
            "nodes": self.nodes,
            "stores": self.stores,
            "sent": self.sent,
            "delivered": self.delivered,
            "duplicated": self.duplicated,
            "lost": self.lost,
            "unexpected": self.unexpected,
            "statuses_delivered": self.statuses_delivered,
            "latency_samples": self.latency_samples,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "latency_max_ms": self.latency_max_ms,
            "dht_lookups": self.dht_lookups,
            "dht_lookups_found": self.dht_lookups_found,
            "dht_lookup_requests_mean": self.dht_lookup_requests_mean,
            "dht_lookup_requests_max": self.dht_lookup_requests_max,
            "dht_lookup_successes_mean": self.dht_lookup_successes_mean,
            "store_msgs_max": self.store_msgs_max,
            "store_msgs_mean": self.store_msgs_mean,
            "store_bytes_max": self.store_bytes_max,
            "store_bytes_mean": self.store_bytes_mean,
            "store_msgs_held_end": self.store_msgs_held_end,
            "rss_bytes_per_node": self.rss_bytes_per_node,
            "rss_peak_bytes": self.rss_peak_bytes,
            "cpu_s": self.cpu_s,
            "cpu_run_s": self.cpu_run_s,
            "user_stops": self.user_stops,
            "store_stops": self.store_stops,
            "setup_s": self.setup_s,
            "run_s": self.run_s,
            "settled": self.settled,
        })
    }

    /// Fails unless nothing was lost or duplicated and every status reached delivered.
    pub fn check_outcomes(&self) -> Result<()> {
        if self.sent == 0
            || self.delivered != self.sent
            || self.lost != 0
            || self.duplicated != 0
            || self.unexpected != 0
            || self.statuses_delivered != self.sent
        {
            bail!("the mesh lost, duplicated or did not deliver messages: {self:?}");
        }
        Ok(())
    }
}

/// One user's node across its incarnations.
struct UserSlot {
    name: String,
    user: UserId,
    config: Config,
    running: Option<RunningNode>,
    /// Forwards this incarnation's delivered statuses to the shared map.
    watcher: Option<JoinHandle<()>>,
}

/// One store peer across its incarnations.
struct StoreSlot {
    config: operator::Config,
    /// Its addresses (with `/p2p`), stable across restarts.
    addrs: Vec<Multiaddr>,
    peer: PeerId,
    running: Option<operator::Running>,
    /// Messages stored by earlier incarnations (their metrics went with them).
    earlier_msgs: u64,
}

/// A message sent by the harness.
struct SentMessage {
    from: usize,
    to: usize,
    id: String,
    text: String,
    at: Instant,
}

/// When each message id was seen delivered at its sender (shared with the watchers).
type DeliveredAt = Arc<Mutex<HashMap<String, Instant>>>;

/// Runs the scenario and measures it. Fails only if the mesh cannot be built or driven;
/// lost or duplicated messages are reported, not errors (see [`SimReport::check_outcomes`]).
pub async fn run(cfg: SimConfig) -> Result<SimReport> {
    if cfg.users < 2 || cfg.stores == 0 || cfg.messages_per_sender == 0 {
        bail!("a simulation needs at least 2 users, 1 store peer and 1 message per sender");
    }
    if cfg.store_loss >= cfg.stores {
        bail!("store_loss must leave at least one store peer running");
    }
    let tmp = tempfile::Builder::new()
        .prefix("kith-sim-")
        .tempdir()
        .context("creating the simulation's data directory")?;
    let dir = cfg.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let cpu_start = cpu_seconds();
    let rss_start = rss_bytes("VmRSS:");
    let setup_start = Instant::now();

    // ---- setup ------------------------------------------------------------------------
    tracing::info!(
        users = cfg.users,
        stores = cfg.stores,
        "simulation: starting the mesh"
    );
    let mesh = start_mesh(&cfg, dir).await?;
    let Mesh {
        stores: running_stores,
        users: running_users,
        store_configs,
        user_configs,
    } = mesh;
    let mut stores: Vec<StoreSlot> = running_stores
        .into_iter()
        .zip(store_configs)
        .map(|(r, config)| StoreSlot {
            config,
            addrs: r.listen_addrs.clone(),
            peer: r.peer_id,
            running: Some(r),
            earlier_msgs: 0,
        })
        .collect();
    let delivered_at: DeliveredAt = Arc::default();
    let mut users: Vec<UserSlot> = running_users
        .into_iter()
        .zip(user_configs)
        .map(|((name, r), config)| {
            let watcher = Some(watch_delivered(&r, delivered_at.clone()));
            UserSlot {
                name,
                user: r.user_id(),
                config,
                running: Some(r),
                watcher,
            }
        })
        .collect();

    let plan = Plan::new(&cfg, &mut rng);
    introduce_pairs(&users, &plan.contacts, cfg.parallel_starts).await?;
    wait_ready(&users, &stores, cfg.ready_timeout).await?;
    let rss_after_setup = rss_bytes("VmRSS:");
    let setup_s = setup_start.elapsed().as_secs_f64();
    tracing::info!(setup_s, "simulation: mesh ready");

    // ---- DHT probe --------------------------------------------------------------------
    let mut targets: Vec<PeerId> = users.iter().map(|u| u.user.peer_id()).collect();
    targets.shuffle(&mut rng);
    targets.truncate(cfg.dht_lookups);
    let boot: Vec<Multiaddr> = stores.iter().flat_map(|s| s.addrs.clone()).collect();
    let dht = dht_probe(&boot, &targets).await?;

    // ---- rounds -----------------------------------------------------------------------
    let run_start = Instant::now();
    let cpu_run_start = cpu_seconds();
    let peaks: Arc<Vec<AtomicU64>> =
        Arc::new((0..stores.len()).map(|_| AtomicU64::new(0)).collect());
    let live_metrics: Arc<Mutex<Vec<Option<Arc<Metrics>>>>> = Arc::new(Mutex::new(
        stores
            .iter()
            .map(|s| s.running.as_ref().map(|r| r.metrics.clone()))
            .collect(),
    ));
    let sampler = spawn_sampler(live_metrics.clone(), peaks.clone());
    let mut sent: Vec<SentMessage> = Vec::new();
    let mut deferred: Vec<Vec<usize>> = vec![Vec::new(); users.len()];
    let (mut user_stops, mut store_stops) = (0u64, 0u64);
    let rounds = cfg.messages_per_sender;
    for round in 0..=rounds {
        // Store peers first: a crash while users are stopping and starting is the harder
        // case for nothing to be lost.
        for (i, s) in stores.iter_mut().enumerate() {
            let down = plan.store_down(i, round);
            if down && s.running.is_some() {
                stop_store(s, i, &live_metrics).await;
                store_stops += 1;
            }
        }
        let all_addrs: Vec<Vec<Multiaddr>> = stores.iter().map(|s| s.addrs.clone()).collect();
        for (i, s) in stores.iter_mut().enumerate() {
            let down = plan.store_down(i, round);
            if !down && s.running.is_none() {
                let peers: Vec<Multiaddr> = all_addrs
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .flat_map(|(_, a)| a.iter().cloned())
                    .collect();
                restart_store(s, i, peers, &live_metrics).await?;
            }
        }
        let mut came_back = Vec::new();
        for (i, u) in users.iter_mut().enumerate() {
            let down = plan.user_down(i, round);
            if down && u.running.is_some() {
                stop_user(u).await;
                user_stops += 1;
            } else if !down && u.running.is_none() {
                restart_user(u, &delivered_at).await?;
                came_back.push(i);
            }
        }
        // Users that came back send what they could not while they were away.
        let mut jobs: Vec<(usize, usize, usize)> = Vec::new();
        for i in came_back {
            for r in std::mem::take(&mut deferred[i]) {
                jobs.push((i, plan.targets[i][r], r));
            }
        }
        if round < rounds {
            for (i, u) in users.iter().enumerate() {
                if u.running.is_some() {
                    jobs.push((i, plan.targets[i][round], round));
                } else {
                    deferred[i].push(round);
                }
            }
        }
        let n_jobs = jobs.len();
        sent.extend(send_batch(&users, jobs, cfg.seed, cfg.parallel_sends).await?);
        tracing::info!(
            round,
            rounds,
            sends = n_jobs,
            sent = sent.len(),
            users_down = users.iter().filter(|u| u.running.is_none()).count(),
            stores_down = stores.iter().filter(|s| s.running.is_none()).count(),
            delivered = lock(&delivered_at).len(),
            "simulation: round done"
        );
    }
    if users.iter().any(|u| u.running.is_none()) || stores.iter().any(|s| s.running.is_none()) {
        bail!("the schedule left peers down after the last round");
    }

    // ---- settle -----------------------------------------------------------------------
    let settled = settle(&users, &sent, &delivered_at, cfg.settle_timeout).await?;
    let run_s = run_start.elapsed().as_secs_f64();
    let cpu_end = cpu_seconds();
    sampler.abort();
    let _ = sampler.await;

    // ---- count ------------------------------------------------------------------------
    let mut report = count(&users, &sent, &delivered_at)?;
    report.nodes = cfg.users;
    report.stores = cfg.stores;
    report.settled = settled;
    report.dht_lookups = dht.lookups;
    report.dht_lookups_found = dht.found;
    report.dht_lookup_requests_mean = dht.requests_mean;
    report.dht_lookup_requests_max = dht.requests_max;
    report.dht_lookup_successes_mean = dht.successes_mean;
    let msgs: Vec<u64> = stores
        .iter()
        .map(|s| {
            s.earlier_msgs
                + s.running.as_ref().map_or(0, |r| {
                    r.metrics.deposits.load(Ordering::Relaxed)
                        + r.metrics.replicas.load(Ordering::Relaxed)
                })
        })
        .collect();
    let bytes: Vec<u64> = peaks.iter().map(|p| p.load(Ordering::Relaxed)).collect();
    report.store_msgs_max = msgs.iter().copied().max().unwrap_or(0);
    report.store_msgs_mean = mean(&msgs);
    report.store_bytes_max = bytes.iter().copied().max().unwrap_or(0);
    report.store_bytes_mean = mean(&bytes);
    report.store_msgs_held_end = stores
        .iter()
        .filter_map(|s| s.running.as_ref())
        .map(|r| r.metrics.stored_messages.load(Ordering::Relaxed))
        .sum();
    let peers = (cfg.users + cfg.stores) as u64;
    report.rss_bytes_per_node = rss_after_setup.saturating_sub(rss_start) / peers.max(1);
    report.rss_peak_bytes = rss_bytes("VmHWM:");
    report.cpu_s = cpu_end - cpu_start;
    report.cpu_run_s = cpu_end - cpu_run_start;
    report.user_stops = user_stops;
    report.store_stops = store_stops;
    report.setup_s = setup_s;
    report.run_s = run_s;
    tracing::info!(report = %report.to_json(), "simulation: done");

    // ---- teardown ---------------------------------------------------------------------
    for u in &mut users {
        stop_user(u).await;
    }
    for s in &mut stores {
        if let Some(r) = s.running.take() {
            r.shutdown().await;
        }
    }
    drop(tmp);
    Ok(report)
}

/// Builds the mesh with the library mesh: seeded, nobody introduced yet.
async fn start_mesh(cfg: &SimConfig, dir: PathBuf) -> Result<Mesh> {
    let repair = cfg.repair_interval;
    // Every user opens a mailbox stream to each of its store peers; senders open more.
    let streams = (4 * (cfg.users + cfg.stores)).max(1024);
    let store_tweak: mesh::StoreTweak = Arc::new(move |c: &mut operator::Config| {
        if let Some(s) = c.store.as_mut() {
            s.repair_interval = repair;
            s.max_streams = streams;
        }
    });
    let opts = MeshOptions {
        introduce_all: false,
        seed: Some(cfg.seed),
        parallel_starts: cfg.parallel_starts,
        node_tweak: None,
        store_tweak: Some(store_tweak),
    };
    let mcfg = MeshConfig {
        dir,
        stores: cfg.stores,
        users: (0..cfg.users).map(|i| format!("u{i:04}")).collect(),
        api_ports: Vec::new(),
        heartbeat: cfg.heartbeat,
    };
    Mesh::start_with(mcfg, opts)
        .await
        .context("starting the simulated mesh")
}

/// Who sends to whom in each round, and who is down when.
struct Plan {
    /// `targets[user][round]`: the recipient of that user's message in that round.
    targets: Vec<Vec<usize>>,
    /// Pairs of users that talk (introduced to each other), `a < b`.
    contacts: Vec<(usize, usize)>,
    /// Rounds (half-open, `[from, to)`) each user is down for; at round `to` it is back.
    user_down: Vec<Vec<(usize, usize)>>,
    /// The same for store peers.
    store_down: Vec<Vec<(usize, usize)>>,
}

impl Plan {
    fn new(cfg: &SimConfig, rng: &mut StdRng) -> Plan {
        let n = cfg.users;
        let m = cfg.messages_per_sender;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        let mut partner = vec![0usize; n];
        for pair in order.chunks(2) {
            if let [a, b] = pair {
                partner[*a] = *b;
                partner[*b] = *a;
            }
        }
        if n % 2 == 1 {
            // The odd one out talks to the first user of the order (who keeps its partner).
            partner[order[n - 1]] = order[0];
        }
        let hot: Vec<usize> = match cfg.pattern {
            SendPattern::Pairs => Vec::new(),
            SendPattern::HotSpot { hot, .. } => order.iter().rev().take(hot).copied().collect(),
        };
        let share = match cfg.pattern {
            SendPattern::Pairs => 0.0,
            SendPattern::HotSpot { share, .. } => share.clamp(0.0, 1.0),
        };
        let mut targets = vec![Vec::with_capacity(m); n];
        let mut contacts = HashSet::new();
        for (u, t) in targets.iter_mut().enumerate() {
            for _ in 0..m {
                let candidates: Vec<usize> = hot.iter().copied().filter(|h| *h != u).collect();
                let to = if !candidates.is_empty() && rng.gen_bool(share) {
                    candidates[rng.gen_range(0..candidates.len())]
                } else {
                    partner[u]
                };
                t.push(to);
                contacts.insert((u.min(to), u.max(to)));
            }
        }
        let mut contacts: Vec<(usize, usize)> = contacts.into_iter().collect();
        contacts.sort_unstable();

        let mut user_down = vec![Vec::new(); n];
        let churned = ((cfg.churn.clamp(0.0, 1.0) * n as f64).round() as usize).min(n);
        let len = (m / 3).max(1);
        let mut shuffled: Vec<usize> = (0..n).collect();
        shuffled.shuffle(rng);
        for &u in shuffled.iter().take(churned) {
            let from = rng.gen_range(0..=m.saturating_sub(len));
            user_down[u].push((from, from + len));
        }
        if cfg.partition > 0.0 {
            let side_a: HashSet<usize> = {
                let k = ((cfg.partition.clamp(0.0, 1.0) * n as f64).round() as usize).clamp(1, n);
                let mut s: Vec<usize> = (0..n).collect();
                s.shuffle(rng);
                s.into_iter().take(k).collect()
            };
            let p1 = m / 4;
            let p2 = (m / 2).max(p1 + 1);
            let p3 = (3 * m / 4).max(p2 + 1);
            for &a in &side_a {
                user_down[a].push((p1, p2));
            }
            // Side B's users that talk across the cut.
            let across: HashSet<usize> = contacts
                .iter()
                .filter_map(|&(a, b)| match (side_a.contains(&a), side_a.contains(&b)) {
                    (true, false) => Some(b),
                    (false, true) => Some(a),
                    _ => None,
                })
                .collect();
            for &b in &across {
                user_down[b].push((p2, p3));
            }
        }
        let mut store_down = vec![Vec::new(); cfg.stores];
        let mut s: Vec<usize> = (0..cfg.stores).collect();
        s.shuffle(rng);
        let from = m / 3;
        let to = (2 * m / 3).max(from + 1);
        for &i in s.iter().take(cfg.store_loss) {
            store_down[i].push((from, to));
        }
        Plan {
            targets,
            contacts,
            user_down,
            store_down,
        }
    }

    /// Whether `user` is down during `round` (the last round, `messages_per_sender`, is the
    /// heal: everyone is up).
    fn user_down(&self, user: usize, round: usize) -> bool {
        let last = self.targets.first().map_or(0, Vec::len);
        round < last
            && self.user_down[user]
                .iter()
                .any(|(f, t)| (*f..*t).contains(&round))
    }

    /// Whether store peer `i` is down during `round`.
    fn store_down(&self, i: usize, round: usize) -> bool {
        let last = self.targets.first().map_or(0, Vec::len);
        round < last
            && self.store_down[i]
                .iter()
                .any(|(f, t)| (*f..*t).contains(&round))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records when each of this node's sent messages is seen delivered (or read).
fn watch_delivered(node: &RunningNode, delivered_at: DeliveredAt) -> JoinHandle<()> {
    let mut rx = node.node.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Event::Status { id, status, .. }) if status >= DeliveryStatus::Delivered => {
                    lock(&delivered_at).entry(id).or_insert_with(Instant::now);
                }
                Ok(_) => {}
                // Missed events: the settle phase reads the statuses from the conversations.
                Err(RecvError::Lagged(n)) => tracing::warn!(n, "simulation: status events lagged"),
                Err(RecvError::Closed) => break,
            }
        }
    })
}

async fn stop_user(u: &mut UserSlot) {
    if let Some(r) = u.running.take() {
        if let Err(e) = r.shutdown().await {
            tracing::warn!(name = %u.name, error = %e, "simulation: node did not stop cleanly");
        }
    }
    if let Some(w) = u.watcher.take() {
        w.abort();
        let _ = w.await;
    }
}

async fn restart_user(u: &mut UserSlot, delivered_at: &DeliveredAt) -> Result<()> {
    let r = mesh::start_user(u.config.clone())
        .await
        .with_context(|| format!("restarting {}", u.name))?;
    if r.user_id() != u.user {
        bail!("{} came back as another user", u.name);
    }
    u.watcher = Some(watch_delivered(&r, delivered_at.clone()));
    u.running = Some(r);
    Ok(())
}

async fn stop_store(s: &mut StoreSlot, i: usize, live: &Mutex<Vec<Option<Arc<Metrics>>>>) {
    if let Some(r) = s.running.take() {
        s.earlier_msgs +=
            r.metrics.deposits.load(Ordering::Relaxed) + r.metrics.replicas.load(Ordering::Relaxed);
        if let Some(slot) = lock(live).get_mut(i) {
            *slot = None;
        }
        tracing::info!(store = %s.peer, "simulation: store peer crashes");
        r.abort().await;
    }
}

async fn restart_store(
    s: &mut StoreSlot,
    i: usize,
    peers: Vec<Multiaddr>,
    live: &Mutex<Vec<Option<Arc<Metrics>>>>,
) -> Result<()> {
    let mut config = s.config.clone();
    config.peers = peers;
    let r = mesh::start_store(config)
        .await
        .with_context(|| format!("restarting store peer {}", s.peer))?;
    if r.peer_id != s.peer {
        bail!("store peer {} came back as {}", s.peer, r.peer_id);
    }
    if let Some(slot) = lock(live).get_mut(i) {
        *slot = Some(r.metrics.clone());
    }
    tracing::info!(store = %s.peer, "simulation: store peer is back");
    s.running = Some(r);
    Ok(())
}

/// Samples the running store peers' held bytes, keeping each one's peak.
fn spawn_sampler(
    live: Arc<Mutex<Vec<Option<Arc<Metrics>>>>>,
    peaks: Arc<Vec<AtomicU64>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let now: Vec<Option<u64>> = lock(&live)
                .iter()
                .map(|m| m.as_ref().map(|m| m.stored_bytes.load(Ordering::Relaxed)))
                .collect();
            for (peak, v) in peaks.iter().zip(now) {
                if let Some(v) = v {
                    peak.fetch_max(v, Ordering::Relaxed);
                }
            }
        }
    })
}

/// Introduces every pair that talks, a few at a time.
async fn introduce_pairs(
    users: &[UserSlot],
    pairs: &[(usize, usize)],
    parallel: usize,
) -> Result<()> {
    tracing::info!(
        pairs = pairs.len(),
        "simulation: introducing the users who talk"
    );
    let results: Vec<Result<()>> = futures::stream::iter(pairs.iter().map(|&(a, b)| async move {
        let (ua, ub) = (&users[a], &users[b]);
        let (ra, rb) = (running(ua)?, running(ub)?);
        mesh::introduce(&ua.name, ra, &ub.name, rb)
            .await
            .map_err(anyhow::Error::from)
    }))
    .buffer_unordered(parallel.max(1))
    .collect()
    .await;
    results.into_iter().collect()
}

fn running(u: &UserSlot) -> Result<&RunningNode> {
    u.running
        .as_ref()
        .ok_or_else(|| anyhow!("{} is not running", u.name))
}

/// Waits until each user's presence is held by every store peer of its mailbox set: the
/// node found them and subscribed there.
async fn wait_ready(users: &[UserSlot], stores: &[StoreSlot], timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let replication = Config::loopback(PathBuf::new()).replication;
    let mut probe = MailboxClient::random().await?;
    for s in stores {
        let served: Vec<&UserSlot> = users
            .iter()
            .filter(|u| {
                net::closest_peers(
                    &u.user.peer_id(),
                    stores.iter().map(|s| s.peer),
                    replication,
                )
                .contains(&s.peer)
            })
            .collect();
        let addrs = mesh::strip_p2p(&s.addrs);
        let mut stream = probe.open_at(s.peer, addrs).await?;
        for u in served {
            while stream.get_presence(&u.user).await?.is_none() {
                if tokio::time::Instant::now() >= deadline {
                    bail!(
                        "timed out after {timeout:?} waiting for store peer {} to hold {}'s \
                         presence (the node has not found it)",
                        s.peer,
                        u.name
                    );
                }
                tokio::time::sleep(crate::POLL_INTERVAL).await;
            }
        }
    }
    Ok(())
}

/// Sends each `(from, to, round)` job; returns what was sent.
async fn send_batch(
    users: &[UserSlot],
    jobs: Vec<(usize, usize, usize)>,
    seed: u64,
    parallel: usize,
) -> Result<Vec<SentMessage>> {
    let results: Vec<Result<SentMessage>> =
        futures::stream::iter(jobs.into_iter().map(|(from, to, round)| async move {
            let node = running(&users[from])?;
            let text = format!("sim:{seed}:{from}:{round}");
            let sent = node
                .node
                .send_text(users[to].user, text.clone(), json!({"sim": round}))
                .await
                .with_context(|| format!("{} sends to {}", users[from].name, users[to].name))?;
            Ok(SentMessage {
                from,
                to,
                id: sent.id,
                text,
                at: Instant::now(),
            })
        }))
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// The whole conversation of `node` with `peer`, newest first.
fn conversation(node: &RunningNode, peer: &UserId) -> Result<Vec<MessageView>> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = node.node.conversation(peer, offset, MAX_PAGE, None)?;
        out.extend(page.messages);
        match page.next_offset {
            Some(next) => offset = next,
            None => return Ok(out),
        }
    }
}

/// Waits until every sent message is delivered at its sender, seen as an event or, for
/// events missed (an incarnation's subscription came after the receipt), in the sender's
/// conversation. Returns whether it settled before `timeout`.
async fn settle(
    users: &[UserSlot],
    sent: &[SentMessage],
    delivered_at: &DeliveredAt,
    timeout: Duration,
) -> Result<bool> {
    let start = Instant::now();
    let mut confirmed: HashSet<String> = HashSet::new();
    let mut last_scan = Instant::now();
    loop {
        let pending: Vec<&SentMessage> = {
            let seen = lock(delivered_at);
            sent.iter()
                .filter(|m| !seen.contains_key(&m.id) && !confirmed.contains(&m.id))
                .collect()
        };
        if pending.is_empty() {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            tracing::warn!(pending = pending.len(), "simulation: settle timed out");
            return Ok(false);
        }
        if last_scan.elapsed() >= Duration::from_secs(2) {
            last_scan = Instant::now();
            let mut by_pair: HashMap<(usize, usize), Vec<&SentMessage>> = HashMap::new();
            for m in &pending {
                by_pair.entry((m.from, m.to)).or_default().push(m);
            }
            for ((from, to), ms) in by_pair {
                let conv = conversation(running(&users[from])?, &users[to].user)?;
                let done: HashSet<&str> = conv
                    .iter()
                    .filter(|v| v.outgoing && v.status >= DeliveryStatus::Delivered)
                    .map(|v| v.id.as_str())
                    .collect();
                for m in ms {
                    if done.contains(m.id.as_str()) {
                        confirmed.insert(m.id.clone());
                    }
                }
            }
            tracing::info!(
                pending = pending.len(),
                elapsed_s = start.elapsed().as_secs(),
                "simulation: settling"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every conversation and counts deliveries, duplicates, losses, statuses and
/// latencies.
fn count(
    users: &[UserSlot],
    sent: &[SentMessage],
    delivered_at: &DeliveredAt,
) -> Result<SimReport> {
    let mut by_pair: HashMap<(usize, usize), Vec<&SentMessage>> = HashMap::new();
    for m in sent {
        by_pair.entry((m.from, m.to)).or_default().push(m);
    }
    let mut r = SimReport {
        sent: sent.len() as u64,
        ..SimReport::default()
    };
    for (&(from, to), ms) in &by_pair {
        // What the recipient holds from the sender.
        let received = conversation(running(&users[to])?, &users[from].user)?;
        let mut ids: HashMap<&str, u64> = HashMap::new();
        let mut texts: HashMap<&str, u64> = HashMap::new();
        for v in received.iter().filter(|v| !v.outgoing) {
            *ids.entry(v.id.as_str()).or_default() += 1;
            *texts.entry(v.text.as_str()).or_default() += 1;
        }
        let sent_ids: HashSet<&str> = ms.iter().map(|m| m.id.as_str()).collect();
        let sent_texts: HashSet<&str> = ms.iter().map(|m| m.text.as_str()).collect();
        for m in ms {
            if ids.contains_key(m.id.as_str()) {
                r.delivered += 1;
            } else {
                r.lost += 1;
            }
        }
        let dup_ids: u64 = ids.values().map(|c| c - 1).sum();
        let dup_texts: u64 = texts.values().map(|c| c - 1).sum();
        r.duplicated += dup_ids.max(dup_texts);
        r.unexpected +=
            ids.keys()
                .filter(|id| !sent_ids.contains(*id))
                .count()
                .max(texts.keys().filter(|t| !sent_texts.contains(*t)).count()) as u64;
        // The sender's view of the statuses.
        let outgoing = conversation(running(&users[from])?, &users[to].user)?;
        r.statuses_delivered += outgoing
            .iter()
            .filter(|v| {
                v.outgoing
                    && sent_ids.contains(v.id.as_str())
                    && v.status >= DeliveryStatus::Delivered
            })
            .count() as u64;
    }
    let seen = lock(delivered_at);
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|m| {
            seen.get(&m.id)
                .map(|t| t.saturating_duration_since(m.at).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    r.latency_samples = lat.len() as u64;
    r.latency_p50_ms = percentile(&lat, 0.50);
    r.latency_p99_ms = percentile(&lat, 0.99);
    r.latency_max_ms = lat.last().copied().unwrap_or(0.0);
    Ok(r)
}

fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64
    }
}

/// What the DHT probe measured.
struct DhtStats {
    lookups: u64,
    found: u64,
    requests_mean: f64,
    requests_max: u64,
    successes_mean: f64,
}

/// Most time one probe lookup may take (kad's own query timeout is 30 s).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(40);

/// Looks up each of `targets` through the mesh's DHT from a fresh peer built with the node's
/// own swarm code (`kith_node::net::build_swarm`), bootstrapped from the store peers, and
/// counts the requests each lookup made.
async fn dht_probe(bootstrap: &[Multiaddr], targets: &[PeerId]) -> Result<DhtStats> {
    let mut stats = DhtStats {
        lookups: 0,
        found: 0,
        requests_mean: 0.0,
        requests_max: 0,
        successes_mean: 0.0,
    };
    if targets.is_empty() {
        return Ok(stats);
    }
    let cfg = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        bootstrap: bootstrap.to_vec(),
        mdns: false,
        kad_server: false,
        idle_timeout: Duration::from_secs(60),
        relay: None,
    };
    let mut swarm = net::build_swarm(libp2p::identity::Keypair::generate_ed25519(), &cfg)?;
    swarm.listen_on(cfg.listen[0].clone())?;
    for a in bootstrap {
        if let Some(p) = net::peer_of(a) {
            swarm.behaviour_mut().kad.add_address(&p, a.clone());
        }
    }
    let (mut requests, mut successes) = (Vec::new(), Vec::new());
    for target in targets {
        let query = swarm.behaviour_mut().kad.get_closest_peers(*target);
        let mut found = false;
        let outcome = tokio::time::timeout(LOOKUP_TIMEOUT, async {
            loop {
                let ev = swarm.select_next_some().await;
                if let SwarmEvent::Behaviour(BehaviourEvent::Kad(
                    kad::Event::OutboundQueryProgressed {
                        id,
                        result: kad::QueryResult::GetClosestPeers(result),
                        stats,
                        step,
                    },
                )) = ev
                {
                    if id != query {
                        continue;
                    }
                    let peers = match result {
                        Ok(ok) => ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                    found |= peers.iter().any(|p| p.peer_id == *target);
                    if step.last {
                        return (stats.num_requests(), stats.num_successes());
                    }
                }
            }
        })
        .await;
        match outcome {
            Ok((req, ok)) => {
                stats.lookups += 1;
                stats.found += u64::from(found);
                requests.push(u64::from(req));
                successes.push(u64::from(ok));
            }
            Err(_) => tracing::warn!(%target, "simulation: DHT lookup timed out"),
        }
    }
    stats.requests_mean = mean(&requests);
    stats.requests_max = requests.iter().copied().max().unwrap_or(0);
    stats.successes_mean = mean(&successes);
    tracing::info!(
        lookups = stats.lookups,
        found = stats.found,
        requests_mean = stats.requests_mean,
        "simulation: DHT probe done"
    );
    Ok(stats)
}
