//! One in-process store peer under test: started on a temporary data directory, stopped
//! cleanly or as a crash would, and restarted on the same data directory and ports.

use std::{
    path::Path,
    sync::{atomic::Ordering, Arc},
};

use anyhow::{anyhow, ensure, Context, Result};
use kith_bootstrap::{
    metrics::Metrics, store_peer::StoreConfig, Config as StorePeerConfig, Running,
};
use kith_node::mesh::strip_p2p;
use libp2p::{Multiaddr, PeerId};

/// Starts a store peer on `config`, retrying for a bounded time while its mailboxes are still
/// locked, or its port still held, by a previous incarnation in this process that is being
/// torn down (see [`kith_node::mesh::start_store`], which this wraps with context).
pub async fn start_store_with(config: StorePeerConfig) -> Result<Running> {
    kith_node::mesh::start_store(config.clone())
        .await
        .with_context(|| format!("starting a store peer on {}", config.data_dir.display()))
}

/// A store peer under test: its temporary data directory, configuration and (while it runs)
/// the running peer. Stopping and restarting keeps the data directory and the port.
pub struct StorePeer {
    name: String,
    /// The temporary directory its data directory is in (shared by a mesh's store peers),
    /// deleted when the last of them is dropped.
    _dir: Arc<tempfile::TempDir>,
    config: StorePeerConfig,
    running: Option<Running>,
    peer_id: PeerId,
    /// Where it last listened (without `/p2p`), reused on restart.
    listen: Vec<Multiaddr>,
}

impl Drop for StorePeer {
    /// A store peer still running stops before its data directory is deleted (see
    /// `crate::teardown`).
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            crate::teardown::stop_from_drop(running.shutdown());
        }
    }
}

impl StorePeer {
    /// Starts a store peer on a fresh data directory with [`StorePeerConfig::loopback_store`],
    /// knowing the store peers at `peers`, with its [`StoreConfig`] changed by `tweak`.
    pub async fn start(
        name: &str,
        peers: &[Multiaddr],
        tweak: impl FnOnce(&mut StoreConfig),
    ) -> Result<Self> {
        Self::start_in(name, peers, None, tweak).await
    }

    /// Like [`StorePeer::start`], but with the identity `keypair` (e.g. one ground to sit
    /// next to a victim's id).
    pub async fn start_keyed(
        name: &str,
        peers: &[Multiaddr],
        keypair: &libp2p::identity::Keypair,
        tweak: impl FnOnce(&mut StoreConfig),
    ) -> Result<Self> {
        Self::start_in(name, peers, Some(keypair), tweak).await
    }

    async fn start_in(
        name: &str,
        peers: &[Multiaddr],
        keypair: Option<&libp2p::identity::Keypair>,
        tweak: impl FnOnce(&mut StoreConfig),
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kith-{name}-"))
            .tempdir()
            .context("creating a temporary data directory")?;
        let data_dir = dir.path().join("store");
        if let Some(keypair) = keypair {
            kith_net::private_file::create_private_dir(&data_dir)?;
            let key = keypair
                .to_protobuf_encoding()
                .context("encoding the store peer's key")?;
            kith_net::private_file::write_private_file(&data_dir, kith_bootstrap::KEY_FILE, &key)?;
        }
        let mut config = StorePeerConfig::loopback_store(data_dir);
        config.peers = peers.to_vec();
        let mut store = StoreConfig::default();
        tweak(&mut store);
        config.store = Some(store);
        let running = start_store_with(config.clone()).await?;
        config.listen = strip_p2p(&running.listen_addrs);
        Ok(StorePeer::started(name, Arc::new(dir), config, running))
    }

    /// Wraps a store peer already started on `config` (its data directory below `dir`, its
    /// `listen` the addresses it bound), such as one of [`kith_node::mesh::Mesh`]'s.
    pub(super) fn started(
        name: &str,
        dir: Arc<tempfile::TempDir>,
        config: StorePeerConfig,
        running: Running,
    ) -> Self {
        StorePeer {
            name: name.to_string(),
            _dir: dir,
            peer_id: running.peer_id,
            listen: config.listen.clone(),
            config,
            running: Some(running),
        }
    }

    /// Waits until `node` has registered its mailbox here (this store peer shows the node's
    /// presence to a holder of its access key); returns that key and the node's bundle, which
    /// names this store peer.
    pub async fn wait_registered(
        &self,
        node: &crate::TestNode,
    ) -> Result<(kith_protocol::MailboxAccessKey, kith_protocol::KeyBundle)> {
        let mut probe = super::MailboxClient::random().await?;
        let mut s = probe.open(self).await?;
        let user = node.user_id();
        let deadline = tokio::time::Instant::now() + crate::TIMEOUT;
        loop {
            let (named, key) = node.mailbox().await?;
            if named.contains(&self.peer_id())
                && s.get_presence_with(&user, Some(key)).await?.is_some()
            {
                let invite = kith_node::invite::Invite::decode(&node.invite().await?)?;
                return Ok((key, invite.bundle));
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {} to register with {}",
                node.name(),
                self.name
            );
            tokio::time::sleep(crate::POLL_INTERVAL).await;
        }
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its peer id (stable across restarts: the key is in the data directory).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The data directory (its identity key, mailboxes and blobs live in it).
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The running peer, or an error if it is stopped.
    pub fn running(&self) -> Result<&Running> {
        self.running
            .as_ref()
            .ok_or_else(|| anyhow!("store peer {} is not running", self.name))
    }

    /// Its metrics, or an error if it is stopped.
    pub fn metrics(&self) -> Result<&Arc<Metrics>> {
        Ok(&self.running()?.metrics)
    }

    /// How many messages it holds now (the `stored_messages` gauge).
    pub fn stored_messages(&self) -> Result<u64> {
        Ok(self.metrics()?.stored_messages.load(Ordering::Relaxed))
    }

    /// Its listen addresses, each ending in `/p2p/<peer id>` (valid while it runs; a restart
    /// listens on the same ports).
    pub fn addrs(&self) -> Vec<Multiaddr> {
        self.listen
            .iter()
            .map(|a| a.clone().with_p2p(self.peer_id).unwrap_or_else(|a| a))
            .collect()
    }

    /// Stops it the way a crash would ([`Running::abort`]): no final flush.
    pub async fn abort(&mut self) -> Result<()> {
        let running = self
            .running
            .take()
            .ok_or_else(|| anyhow!("store peer {} is already stopped", self.name))?;
        running.abort().await;
        Ok(())
    }

    /// Stops it cleanly ([`Running::shutdown`]).
    pub async fn shutdown(&mut self) -> Result<()> {
        let running = self
            .running
            .take()
            .ok_or_else(|| anyhow!("store peer {} is already stopped", self.name))?;
        running.shutdown().await;
        Ok(())
    }

    /// Starts it again from its data directory on the same addresses, knowing the store peers
    /// at `peers` (it dials them, and they learn it is back).
    pub async fn restart(&mut self, peers: &[Multiaddr]) -> Result<()> {
        ensure!(
            self.running.is_none(),
            "store peer {} still runs",
            self.name
        );
        let mut config = self.config.clone();
        config.listen = self.listen.clone();
        config.peers = peers.to_vec();
        let running = start_store_with(config)
            .await
            .with_context(|| format!("restarting store peer {}", self.name))?;
        ensure!(
            running.peer_id == self.peer_id,
            "store peer {} came back with another peer id",
            self.name
        );
        self.running = Some(running);
        Ok(())
    }
}
