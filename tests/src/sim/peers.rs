//! The peers of a run across their incarnations: starting, stopping and restarting users and
//! store peers on the same data directories and ports, and waiting until they are ready.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use kith_bootstrap::{self as operator, metrics::Metrics};
use kith_node::{mesh, Config, Event, RunningNode};
use kith_protocol::{DeliveryStatus, UserId};
use libp2p::{Multiaddr, PeerId};
use tokio::{sync::broadcast::error::RecvError, task::JoinHandle};

use crate::mesh::MailboxClient;

/// One user's node across its incarnations.
pub(super) struct UserSlot {
    pub(super) name: String,
    pub(super) user: UserId,
    pub(super) config: Config,
    pub(super) running: Option<RunningNode>,
    /// Forwards this incarnation's delivered statuses to the shared map.
    pub(super) watcher: Option<JoinHandle<()>>,
    /// What earlier incarnations' Kademlia queries cost (their counters went with them).
    pub(super) earlier_kad: kith_net::KadTotals,
}

/// One store peer across its incarnations.
pub(super) struct StoreSlot {
    pub(super) config: operator::Config,
    /// Its addresses (with `/p2p`), stable across restarts.
    pub(super) addrs: Vec<Multiaddr>,
    pub(super) peer: PeerId,
    pub(super) running: Option<operator::Running>,
    /// Messages stored by earlier incarnations (their metrics went with them).
    pub(super) earlier_msgs: u64,
}

/// When each message id was seen delivered at its sender (shared with the watchers), and,
/// under `received:<id>`, when its recipient announced it.
pub(super) type DeliveredAt = Arc<Mutex<HashMap<String, Instant>>>;

/// The key under which [`DeliveredAt`] holds when message `id` reached its recipient.
pub(super) fn received_key(id: &str) -> String {
    format!("received:{id}")
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records when each of this node's sent messages is seen delivered (or read), and when each
/// message it receives is announced.
pub(super) fn watch_delivered(node: &RunningNode, delivered_at: DeliveredAt) -> JoinHandle<()> {
    let mut rx = node.node.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Event::Status { id, status, .. }) if status >= DeliveryStatus::Delivered => {
                    lock(&delivered_at).entry(id).or_insert_with(Instant::now);
                }
                Ok(Event::Message { message, .. }) if !message.outgoing => {
                    lock(&delivered_at)
                        .entry(received_key(&message.id))
                        .or_insert_with(Instant::now);
                }
                Ok(_) => {}
                // Missed events: the settle phase reads the statuses from the conversations.
                Err(RecvError::Lagged(n)) => tracing::warn!(n, "simulation: status events lagged"),
                Err(RecvError::Closed) => break,
            }
        }
    })
}

pub(super) async fn stop_user(u: &mut UserSlot) {
    if let Some(r) = u.running.take() {
        u.earlier_kad = u.earlier_kad + r.node.kad_stats();
        if let Err(e) = r.shutdown().await {
            tracing::warn!(name = %u.name, error = %e, "simulation: node did not stop cleanly");
        }
    }
    if let Some(w) = u.watcher.take() {
        w.abort();
        let _ = w.await;
    }
}

pub(super) async fn restart_user(u: &mut UserSlot, delivered_at: &DeliveredAt) -> Result<()> {
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

pub(super) async fn stop_store(
    s: &mut StoreSlot,
    i: usize,
    live: &Mutex<Vec<Option<Arc<Metrics>>>>,
) {
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

pub(super) async fn restart_store(
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
pub(super) fn spawn_sampler(
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
pub(super) async fn introduce_pairs(
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

pub(super) fn running(u: &UserSlot) -> Result<&RunningNode> {
    u.running
        .as_ref()
        .ok_or_else(|| anyhow!("{} is not running", u.name))
}

/// Waits until each user has named its store peers (R, or every store peer when there are
/// fewer) and registered and subscribed with each: the named store peer shows the user's
/// presence to a holder of the user's access key.
pub(super) async fn wait_ready(
    users: &[UserSlot],
    stores: &[StoreSlot],
    timeout: Duration,
    transport: &kith_net::Transport,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let want = Config::loopback(PathBuf::new())
        .replication
        .min(stores.len());
    let mut probe = MailboxClient::start_with(
        libp2p::identity::Keypair::generate_ed25519(),
        transport.clone(),
    )
    .await?;
    for u in users {
        let (named, key) = loop {
            let me = running(u)?.node.me().await?;
            let invite = kith_node::invite::Invite::decode(&me.invite)?;
            let named: Vec<PeerId> = invite
                .bundle
                .mailboxes
                .iter()
                .map(|p| p.peer.peer_id())
                .collect();
            if let (true, Some(key)) = (named.len() >= want, invite.access) {
                break (named, key);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {} to name its store peers",
                    u.name
                );
            }
            tokio::time::sleep(crate::POLL_INTERVAL).await;
        };
        for peer in named {
            let Some(s) = stores.iter().find(|s| s.peer == peer) else {
                bail!(
                    "{} named {peer}, which is not a store peer of the run",
                    u.name
                );
            };
            let addrs = mesh::strip_p2p(&s.addrs);
            let mut stream = probe.open_at(s.peer, addrs).await?;
            while stream
                .get_presence_with(&u.user, Some(key))
                .await?
                .is_none()
            {
                if tokio::time::Instant::now() >= deadline {
                    bail!(
                        "timed out after {timeout:?} waiting for store peer {} to hold {}'s \
                         presence (the node has not registered there)",
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
