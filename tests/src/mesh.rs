//! Helpers for tests with store-and-forward peers: a [`Mesh`] of in-process `kith-bootstrap`
//! store peers ([`StorePeer`]) on `127.0.0.1`, a raw `/kith/mailbox/1` client
//! ([`MailboxClient`] / [`MailboxStream`]) that speaks the protocol frame by frame the way any
//! peer on the network could, and small helpers to send numbered messages and wait for
//! their statuses.
//!
//! As in the rest of this crate, nothing here waits for a fixed time: every wait is bounded
//! by [`TIMEOUT`] and fails with a message naming what it waited for.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kith_tests::{mesh::Mesh, TestNode};
//! let mesh = Mesh::start(3, |_| {}).await?;
//! let boot = mesh.bootstrap_addrs()?;
//! let alice = TestNode::start_with("alice", |c| c.bootstrap = boot.clone()).await?;
//! # Ok(()) }
//! ```

mod delivery;
mod mailbox_client;
mod sealer;
mod store_peer;

use std::{sync::Arc, time::Duration};

use anyhow::{anyhow, ensure, Context, Result};
use kith_bootstrap::{store_peer::StoreConfig, Config as StorePeerConfig};
use kith_node::mesh::{Mesh as LibraryMesh, MeshConfig, MeshOptions, StoreTweak};
use libp2p::{Multiaddr, PeerId};

use crate::{wait_for, TestNode, POLL_INTERVAL, TIMEOUT};

pub use delivery::{
    check_exactly_once, check_exactly_once_in_order, numbered, received_from, send_all,
    wait_conversation_statuses, wait_received, wait_statuses,
};
pub use mailbox_client::{MailboxClient, MailboxStream};
pub use sealer::Sealer;
pub use store_peer::{start_store_with, StorePeer};

/// Repair interval used by [`Mesh::start`] unless a test sets another: short, so that repair
/// happens within a test's waits.
pub const FAST_REPAIR: Duration = Duration::from_millis(300);

/// Store peers that know each other: each was started with the ones before it as `peers`.
pub struct Mesh {
    /// The store peers, in start order.
    pub stores: Vec<StorePeer>,
}

impl Mesh {
    /// Starts `n` store peers (named `store0`, `store1`...) with the library mesh
    /// ([`kith_node::mesh::Mesh`]), each knowing the ones started before it, with
    /// [`FAST_REPAIR`] and then `tweak` applied to each one's [`StoreConfig`].
    pub async fn start(n: usize, tweak: impl Fn(&mut StoreConfig)) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kith-mesh-")
            .tempdir()
            .context("creating a temporary directory for the mesh")?;
        let mut store = StoreConfig {
            repair_interval: FAST_REPAIR,
            ..StoreConfig::default()
        };
        tweak(&mut store);
        let store_tweak: StoreTweak = Arc::new(move |c: &mut StorePeerConfig| {
            c.store = Some(store.clone());
        });
        let opts = MeshOptions {
            introduce_all: false,
            store_tweak: Some(store_tweak),
            ..MeshOptions::default()
        };
        let built = LibraryMesh::start_with(MeshConfig::stores_only(dir.path().into(), n), opts)
            .await
            .context("starting the store peers")?;
        let dir = Arc::new(dir);
        let stores = built
            .stores
            .into_iter()
            .zip(built.store_configs)
            .enumerate()
            .map(|(i, (running, config))| {
                StorePeer::started(&format!("store{i}"), dir.clone(), config, running)
            })
            .collect();
        Ok(Mesh { stores })
    }

    /// Starts one more store peer knowing every running one, and adds it to the mesh.
    pub async fn add(&mut self, name: &str, tweak: impl FnOnce(&mut StoreConfig)) -> Result<()> {
        let peers = self.bootstrap_addrs()?;
        let store = StorePeer::start(name, &peers, |c| {
            c.repair_interval = FAST_REPAIR;
            tweak(c);
        })
        .await?;
        self.stores.push(store);
        Ok(())
    }

    /// Starts a node whose bootstrap list is every running store peer, with its loopback
    /// configuration changed by `tweak` (kept for restarts, bootstrap list included).
    pub async fn node(
        &self,
        name: &str,
        tweak: impl FnOnce(&mut kith_node::Config),
    ) -> Result<TestNode> {
        let boot = self.bootstrap_addrs()?;
        TestNode::start_with(name, |c| {
            c.bootstrap = boot;
            tweak(c);
        })
        .await
    }

    /// The addresses of every running store peer (what nodes take as `Config::bootstrap`).
    pub fn bootstrap_addrs(&self) -> Result<Vec<Multiaddr>> {
        let addrs: Vec<Multiaddr> = self
            .stores
            .iter()
            .filter(|s| s.is_running())
            .flat_map(StorePeer::addrs)
            .collect();
        ensure!(!addrs.is_empty(), "no store peer runs");
        Ok(addrs)
    }

    /// The addresses of every store peer but the one at `index` (running or not).
    pub fn addrs_except(&self, index: usize) -> Vec<Multiaddr> {
        self.stores
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .flat_map(|(_, s)| s.addrs())
            .collect()
    }

    /// The index of the store peer with this peer id.
    pub fn index_of(&self, peer: &PeerId) -> Result<usize> {
        self.stores
            .iter()
            .position(|s| s.peer_id() == *peer)
            .ok_or_else(|| anyhow!("{peer} is not a store peer of the mesh"))
    }

    /// Indexes of the store peers `node` named for its mailbox (in its signed bundle), once it
    /// has named as many as it will (R, or every running store peer when there are fewer).
    pub async fn mailbox_set(&self, node: &TestNode) -> Result<Vec<usize>> {
        let running = self.stores.iter().filter(|s| s.is_running()).count();
        let want = kith_node::Config::loopback(Default::default())
            .replication
            .min(running);
        let named = wait_for(
            TIMEOUT,
            &format!("{} to name {want} store peers", node.name()),
            || async {
                let (named, _) = node.mailbox().await?;
                Ok((named.len() >= want).then_some(named))
            },
        )
        .await?;
        named.iter().map(|p| self.index_of(p)).collect()
    }

    /// Waits until every running store peer holds exactly `n` messages (`stored_messages`).
    pub async fn wait_all_hold(&self, n: u64, what: &str) -> Result<()> {
        let what = format!("every running store peer to hold {n} messages ({what})");
        let res = wait_for(TIMEOUT, &what, || async {
            let all = self
                .stores
                .iter()
                .filter(|s| s.is_running())
                .map(|s| s.stored_messages())
                .collect::<Result<Vec<u64>>>()?;
            Ok(all.iter().all(|h| *h == n).then_some(()))
        })
        .await;
        res.with_context(|| format!("store peers hold {:?}", self.holdings()))
    }

    /// What each store peer holds now (`name: n`, or `name: stopped`), for failure messages.
    pub fn holdings(&self) -> Vec<String> {
        self.stores
            .iter()
            .map(|s| match s.stored_messages() {
                Ok(n) => format!("{}: {n}", s.name()),
                Err(_) => format!("{}: stopped", s.name()),
            })
            .collect()
    }

    /// Waits until each of `nodes` has named its store peers and registered and subscribed
    /// with every one of them: each named store peer shows the node's presence to a holder of
    /// its access key (a node sends its registration, subscription and presence on each
    /// mailbox link it opens to its own store peers). Needs the nodes to share their presence
    /// (the default).
    pub async fn wait_known_by(
        &self,
        probe: &mut MailboxClient,
        nodes: &[&TestNode],
    ) -> Result<()> {
        for node in nodes {
            let user = node.user_id();
            let (_, key) = node.mailbox().await?;
            for index in self.mailbox_set(node).await? {
                let store = &self.stores[index];
                let mut stream = probe.open(store).await?;
                let deadline = tokio::time::Instant::now() + TIMEOUT;
                while stream.get_presence_with(&user, Some(key)).await?.is_none() {
                    ensure!(
                        tokio::time::Instant::now() < deadline,
                        "timed out after {TIMEOUT:?} waiting for {} to hold a presence \
                         record of {} (the node has not registered there)",
                        store.name(),
                        node.name()
                    );
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }
        Ok(())
    }
}
