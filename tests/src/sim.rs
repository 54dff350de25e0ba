//! The simulation harness: a whole Kith mesh in one process — store peers and user nodes
//! running the same library code as `kith` and `kith-bootstrap`, built by
//! [`kith_node::mesh::Mesh`] (the mesh `kith demo` runs) over libp2p's in-process memory
//! transport (Noise + Yamux as over TCP; loopback TCP on request, [`SimTransport`]) with
//! seeded keys and temporary data directories — driven through a scenario written as a [`SimConfig`], and
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
//!    users' key bundles through the mesh's Kademlia DHT and counts the requests each lookup
//!    made. (The nodes' own queries are counted too, from kad's `QueryStats`.)
//! 3. Rounds: in each of `messages_per_sender` rounds every user that is up sends one
//!    message (to its partner, or to a hot user). Between rounds the schedule stops and
//!    restarts peers:
//!    - **churn**: a fraction of the users each leave once ([`kith_node::RunningNode::shutdown`])
//!      for about a third of the rounds and come back on the same data directory and port;
//!    - **store loss**: `store_loss` store peers crash ([`kith_bootstrap::Running::abort`],
//!      no final flush) for the middle third of the rounds and come back from their data
//!      directories on the same ports;
//!    - **partition**: over the memory transport, the links between the users of side A and
//!      all other users are cut ([`kith_net::Links::cut`]: open connections fail, new ones
//!      are refused) for the middle half of the rounds, then heal; both sides keep running
//!      and reach the store peers, so whatever crosses the cut goes through mailboxes. Over
//!      TCP, the users of side A leave together; when they come back, every user of side B
//!      that talks to side A leaves, and only comes back (the heal) after.
//!
//!    A user that is down in a round sends that round's message when it is back, so every
//!    user sends exactly `messages_per_sender` messages.
//! 4. Settle: everyone is up; the run waits (bounded) until every sent message has reached
//!    `delivered` at its sender, then reads every conversation to count what arrived.
//!
//! Each message's text carries a unique tag (`sim:<from>:<round>`), so duplicates are found
//! by id and by text. Latency is measured from the return of `send_text` to the sender's
//! `Status` event saying `delivered`.

mod config;
mod dht;
mod outcome;
mod peers;
mod plan;
mod report;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use anyhow::{bail, Context, Result};
use kith_bootstrap::{self as operator, metrics::Metrics};
use kith_net::{Links, Transport};
use kith_node::mesh::{self, Mesh, MeshConfig, MeshOptions};
use libp2p::Multiaddr;
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use dht::dht_probe;
use outcome::{count, send_batch, settle, Job, SentMessage};
use peers::{
    introduce_pairs, lock, restart_store, restart_user, spawn_sampler, stop_store, stop_user,
    wait_ready, watch_delivered, DeliveredAt, StoreSlot, UserSlot,
};
use plan::Plan;

use crate::measure::{cpu_seconds, mean, rss_bytes};

pub use config::{SendPattern, SimConfig, SimTransport};
pub use report::SimReport;

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
    let links = Links::default();
    let transport = match cfg.transport {
        SimTransport::Memory => Transport::Memory(links.clone()),
        SimTransport::Tcp => Transport::Network,
    };
    let mesh = start_mesh(&cfg, dir, transport.clone()).await?;
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
                earlier_kad: Default::default(),
            }
        })
        .collect();

    let plan = Plan::new(&cfg, &mut rng);
    introduce_pairs(&users, &plan.contacts, cfg.parallel_starts).await?;
    wait_ready(&users, &stores, cfg.ready_timeout, &transport).await?;
    let rss_after_setup = rss_bytes("VmRSS:");
    let cpu_setup = cpu_seconds() - cpu_start;
    let setup_s = setup_start.elapsed().as_secs_f64();
    tracing::info!(setup_s, "simulation: mesh ready");

    // ---- DHT probe --------------------------------------------------------------------
    let mut targets: Vec<kith_protocol::UserId> = users.iter().map(|u| u.user).collect();
    targets.shuffle(&mut rng);
    targets.truncate(cfg.dht_lookups);
    let boot: Vec<Multiaddr> = stores.iter().flat_map(|s| s.addrs.clone()).collect();
    let dht = dht_probe(&boot, &targets, &transport).await?;

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
        if let Some(cut) = &plan.cut {
            if round == cut.from {
                let (a, b): (Vec<_>, Vec<_>) = users
                    .iter()
                    .enumerate()
                    .partition(|(i, _)| cut.side_a.contains(i));
                let peer = |(_, u): (usize, &UserSlot)| u.user.peer_id();
                tracing::info!(round, side_a = a.len(), "simulation: links cut");
                links.cut(a.into_iter().map(peer), b.into_iter().map(peer));
            } else if round == cut.to {
                tracing::info!(round, "simulation: links heal");
                links.heal();
            }
        }
        // Users that came back send what they could not while they were away.
        let cut_now = plan
            .cut
            .as_ref()
            .filter(|c| (c.from..c.to).contains(&round));
        let online = |from: usize, to: usize| {
            users[to].running.is_some()
                && cut_now.is_none_or(|c| c.side_a.contains(&from) == c.side_a.contains(&to))
        };
        let mut jobs: Vec<Job> = Vec::new();
        for i in came_back {
            for r in std::mem::take(&mut deferred[i]) {
                let to = plan.targets[i][r];
                jobs.push((i, to, r, online(i, to)));
            }
        }
        if round < rounds {
            for (i, u) in users.iter().enumerate() {
                if u.running.is_some() {
                    let to = plan.targets[i][round];
                    jobs.push((i, to, round, online(i, to)));
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
            delivered = lock(&delivered_at)
                .keys()
                .filter(|k| !k.starts_with("received:"))
                .count(),
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
    report.cpu_setup_ms_per_user = cpu_setup * 1000.0 / cfg.users.max(1) as f64;
    let kad = users
        .iter()
        .map(|u| {
            u.running
                .as_ref()
                .map_or(u.earlier_kad, |r| u.earlier_kad + r.node.kad_stats())
        })
        .fold(kith_net::KadTotals::default(), |a, b| a + b);
    let per_query = |x: u64| x as f64 / kad.queries.max(1) as f64;
    report.node_kad_queries = kad.queries;
    report.node_kad_requests_mean = per_query(kad.requests);
    report.node_kad_successes_mean = per_query(kad.successes);
    report.node_kad_failures_mean = per_query(kad.failures);
    report.node_kad_steps_mean = per_query(kad.steps);
    report.node_kad_requests_max = kad.max_requests;
    report.node_kad_query_ms_mean = per_query(kad.duration_us) / 1000.0;
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
async fn start_mesh(cfg: &SimConfig, dir: PathBuf, transport: Transport) -> Result<Mesh> {
    let repair = cfg.repair_interval;
    // Every user opens a mailbox stream to each of its store peers; senders open more.
    let streams = (4 * (cfg.users + cfg.stores)).max(1024);
    let store_tweak: mesh::StoreTweak = Arc::new(move |c: &mut operator::Config| {
        if let Some(s) = c.store.as_mut() {
            s.repair_interval = repair;
            s.max_streams = streams;
        }
        // Every user and every user's deposit identity holds a connection to each store peer.
        c.connections.max_established_incoming = c
            .connections
            .max_established_incoming
            .max(u32::try_from(3 * streams).unwrap_or(u32::MAX));
    });
    // Users are Kademlia clients, as a node behind NAT is until AutoNAT confirms an address:
    // only the store peers answer (and route), so a user keeps connections to its store
    // peers and contacts, not to the twenty peers closest to it. Nothing in the mesh is a
    // relay, so nobody looks for one.
    let node_tweak: mesh::NodeTweak = Arc::new(|c: &mut kith_node::Config| {
        c.traversal.kad_server = false;
        c.traversal.relays = 0;
        c.traversal.hole_punching = false;
    });
    let opts = MeshOptions {
        introduce_all: false,
        seed: Some(cfg.seed),
        parallel_starts: cfg.parallel_starts,
        node_tweak: Some(node_tweak),
        store_tweak: Some(store_tweak),
        transport,
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
