//! The operator's peer (`kith-bootstrap`): DHT bootstrap (Kademlia in server mode, identify,
//! ping), optionally a circuit relay and a store-and-forward peer. It lives in this crate, beside
//! the desktop node, so that `kith demo` and the simulation harness can run store peers in the
//! same process as users' nodes; the `kith-bootstrap` binary is a thin command line over it.
//!
//! - [`mailboxes`]: sled storage of mailboxes, quotas, expiry, tombstones.
//! - [`format`]: the store peer database's format version and migrations.
//! - [`store_peer`]: the `/kith/mailbox/1` service, presence, replication repair.
//! - [`metrics`]: Prometheus counters on `/metrics`.

pub mod blobs;
pub mod format;
pub mod mailboxes;
pub mod metrics;
pub mod store_peer;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use crate::net::{self, peer_of, NetConfig, RelayLimits};
use libp2p::{identity, Multiaddr, PeerId};
use tokio_util::sync::CancellationToken;

use self::{mailboxes::Mailboxes, metrics::Metrics};

/// File holding the peer's identity key (protobuf encoding).
pub const KEY_FILE: &str = "identity.key";

/// Everything a bootstrap peer needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the identity key and mailboxes live.
    pub data_dir: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Other bootstrap / store peers to connect to (with `/p2p/<id>`).
    pub peers: Vec<Multiaddr>,
    /// Be a store-and-forward peer, with this configuration.
    pub store: Option<store_peer::StoreConfig>,
    /// Be a circuit relay, with these limits.
    pub relay: Option<RelayLimits>,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
}

impl Config {
    /// A loopback configuration (tests, local meshes): a store peer with default limits.
    pub fn loopback_store(data_dir: PathBuf) -> Self {
        Config {
            data_dir,
            listen: vec!["/ip4/127.0.0.1/tcp/0"
                .parse()
                .unwrap_or_else(|_| Multiaddr::empty())],
            peers: Vec::new(),
            store: Some(store_peer::StoreConfig::default()),
            relay: None,
            metrics: None,
        }
    }
}

/// Why a bootstrap peer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Reading or writing the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// Which path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The identity key file is not a valid key.
    #[error("identity key in {0} is invalid")]
    BadKey(PathBuf),
    /// The network failed to start.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// The mailboxes could not be opened.
    #[error("mailboxes: {0}")]
    Mailboxes(#[from] mailboxes::MailboxError),
    /// The media blob store could not be opened.
    #[error("blobs: {0}")]
    Blobs(String),
}

/// Loads the identity key from the data directory, creating it on first use.
pub fn load_or_create_key(data_dir: &Path) -> Result<identity::Keypair, RunError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io { path, source }
    };
    crate::private_file::create_private_dir(data_dir).map_err(io(data_dir))?;
    let path = data_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            identity::Keypair::from_protobuf_encoding(&bytes).map_err(|_| RunError::BadKey(path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = identity::Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|_| RunError::BadKey(path.clone()))?;
            crate::private_file::write_private_file(data_dir, KEY_FILE, &bytes)
                .map_err(io(&path))?;
            Ok(key)
        }
        Err(e) => Err(RunError::Io { path, source: e }),
    }
}

/// A running bootstrap peer.
pub struct Running {
    /// Its peer id.
    pub peer_id: PeerId,
    /// Its listen addresses, each ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<Multiaddr>,
    /// Where metrics are served, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops every task and flushes the mailboxes.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }

    /// Stops every task at once, without a final flush (a crash, for tests).
    pub async fn abort(self) {
        self.cancel.cancel();
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Starts the peer; returns once it listens.
pub async fn start(cfg: Config) -> Result<Running, RunError> {
    let key = load_or_create_key(&cfg.data_dir)?;
    // Before the network: a database this build cannot open (a newer format) is refused
    // before anyone can reach us.
    let mailboxes = match &cfg.store {
        Some(_) => Some(Mailboxes::open(&cfg.data_dir.join("mailboxes"))?),
        None => None,
    };
    let peer_id = key.public().to_peer_id();
    let net_cfg = NetConfig {
        listen: cfg.listen.clone(),
        bootstrap: cfg.peers.clone(),
        mdns: false,
        kad_server: true,
        idle_timeout: Duration::from_secs(300),
        relay: cfg.relay.clone(),
    };
    let cancel = CancellationToken::new();
    let swarm = net::build_swarm(key, &net_cfg)?;
    let (network, mut events, net_task) = net::spawn(swarm, &net_cfg, cancel.clone()).await?;
    let metrics = Arc::new(Metrics::default());
    let mut tasks = vec![net_task];
    match (&cfg.store, mailboxes) {
        (Some(store_cfg), Some(mailboxes)) => {
            let blobs = blobs::Blobs::open(
                &cfg.data_dir.join("blobs"),
                mailboxes.db(),
                store_cfg.blobs.clone(),
                metrics.clone(),
            )
            .map_err(|e| RunError::Blobs(e.to_string()))?;
            tasks.push(blobs::spawn(
                Arc::new(blobs),
                network.control(),
                cancel.clone(),
            )?);
            let known: Vec<PeerId> = cfg.peers.iter().filter_map(peer_of).collect();
            tasks.push(store_peer::spawn(
                store_cfg.clone(),
                mailboxes,
                network.clone(),
                events,
                known,
                metrics.clone(),
                cancel.clone(),
            )?);
        }
        _ => {
            let m = metrics.clone();
            let c = cancel.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = c.cancelled() => break,
                        ev = events.recv() => match ev {
                            Some(net::NetEvent::Connected(_)) => {
                                m.connected_peers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Some(net::NetEvent::Disconnected(_)) => {
                                let _ = m.connected_peers.fetch_update(
                                    std::sync::atomic::Ordering::Relaxed,
                                    std::sync::atomic::Ordering::Relaxed,
                                    |v| Some(v.saturating_sub(1)),
                                );
                            }
                            Some(_) => {}
                            None => break,
                        },
                    }
                }
            }));
        }
    }
    let mut metrics_addr = None;
    if let Some(addr) = cfg.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Io {
                path: PathBuf::from(addr.to_string()),
                source,
            })?;
        metrics_addr = listener.local_addr().ok();
        let m = metrics.clone();
        let c = cancel.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = metrics::serve(listener, m, c).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        }));
    }
    let listen_addrs = network
        .listen_addrs()
        .into_iter()
        .map(|a| a.with_p2p(peer_id).unwrap_or_else(|a| a))
        .collect();
    tracing::info!(%peer_id, store = cfg.store.is_some(), relay = cfg.relay.is_some(), "bootstrap peer started");
    Ok(Running {
        peer_id,
        listen_addrs,
        metrics_addr,
        metrics,
        cancel,
        tasks,
    })
}
