//! Starting and stopping the operator's peer: identity key, network, store service, blobs,
//! metrics. Every task it starts is kept in [`Running`] and ended by its shutdown.

use std::{future::Future, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use kith_net::{
    private_file::{self, KeyFileError, PathError},
    swarm::{self, AutonatRole, KadMode, NetConfig, NetEvent},
    tasks::Tasks,
    NetError,
};
use libp2p::{identity, Multiaddr, PeerId};
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;
use crate::{
    blobs,
    health::Health,
    http,
    mailboxes::{MailboxError, Mailboxes},
    metrics::{self, Metrics},
    store_peer,
};

/// File holding the peer's identity key (protobuf encoding).
pub const KEY_FILE: &str = "identity.key";

/// Why a bootstrap peer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Reading or writing the data directory (or binding the metrics address) failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// The identity key file could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The network failed to start.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The store service could not start.
    #[error("store peer: {0}")]
    Store(#[from] crate::store_peer::SpawnError),
    /// The mailboxes could not be opened.
    #[error("mailboxes: {0}")]
    Mailboxes(#[from] MailboxError),
    /// The media blob store could not be opened.
    #[error("blobs: {0}")]
    Blobs(#[from] blobs::BlobsError),
}

/// How long shutdown waits for each task before giving up on it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Loads the identity key from the data directory, creating it on first use.
pub fn load_or_create_key(data_dir: &Path) -> Result<identity::Keypair, RunError> {
    Ok(private_file::load_or_create_keypair(data_dir, KEY_FILE)?)
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
    /// Dropped without [`Running::shutdown`], its tasks are aborted.
    tasks: Tasks,
    /// The HTTP listener (`/metrics`, `/healthz`), stopped after `tasks`: while they stop,
    /// `/healthz` answers 503.
    http: Tasks,
}

impl Running {
    /// Stops every task (aborting any that does not end within the grace) and flushes the
    /// mailboxes: once this returns, nothing of the peer runs any more.
    pub async fn shutdown(self) {
        self.tasks.stop(SHUTDOWN_GRACE).await;
        self.http.stop(SHUTDOWN_GRACE).await;
    }

    /// Stops every task at once, without a final flush (a crash, for tests).
    pub async fn abort(self) {
        self.tasks.abort().await;
        self.http.abort().await;
    }
}

/// Starts the peer; returns once it listens.
pub async fn start(cfg: Config) -> Result<Running, RunError> {
    let key = load_or_create_key(&cfg.data_dir)?;
    // Before the network: a database this build cannot open (a newer format) is refused
    // before anyone can reach us.
    let mailboxes = match &cfg.store {
        Some(store) => Some(Mailboxes::open_with_cache(
            &cfg.data_dir.join("mailboxes"),
            store.cache_bytes,
        )?),
        None => None,
    };
    // Also before the network: a metrics address already taken stops the start while
    // nothing runs yet.
    let http_listener = match cfg.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(private_file::at(Path::new(&addr.to_string())))?,
        ),
        None => None,
    };
    let peer_id = key.public().to_peer_id();
    let metrics = Arc::new(Metrics::default());
    let mut registry = metrics::registry(metrics.clone());
    let swarm_series = metrics::swarm_series(&mut registry);
    let net_cfg = NetConfig {
        transport: cfg.transport.clone(),
        listen: cfg.listen.clone(),
        bootstrap: cfg.peers.clone(),
        kad_mode: KadMode::Server,
        idle_timeout: cfg.idle_timeout,
        relay: cfg.relay.clone(),
        caps: cfg.connections.clone(),
        // Operators' peers are the ones others ask whether they are reachable.
        autonat: AutonatRole::Server,
        // Confirmed before the first connection, so identify and Kademlia announce them from
        // the start.
        external_addrs: cfg.external_addrs.clone(),
        metrics: Some(swarm_series),
        ..NetConfig::default()
    };
    let cancel = CancellationToken::new();
    let (network, mut events, net_task) = swarm::start(key, &net_cfg, cancel.clone()).await?;
    let mut tasks = vec![net_task];
    match (&cfg.store, mailboxes) {
        (Some(store_cfg), Some(mailboxes)) => {
            let blobs = blobs::Blobs::open(
                &cfg.data_dir.join("blobs"),
                mailboxes.db(),
                store_cfg.blobs.clone(),
                metrics.clone(),
            )?;
            let blobs = blobs.share_budget(mailboxes.budget().clone());
            tasks.push(blobs::spawn(
                Arc::new(blobs),
                network.clone(),
                cancel.clone(),
            )?);
            let known: Vec<PeerId> = cfg.peers.iter().filter_map(swarm::peer_of).collect();
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
                            Some(NetEvent::Connected(_)) => {
                                m.connected_peers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Some(NetEvent::Disconnected(_)) => {
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
    let http_cancel = CancellationToken::new();
    let mut http_tasks = Vec::new();
    if let Some(listener) = http_listener {
        metrics_addr = listener.local_addr().ok();
        let health = Health::new(
            peer_id,
            (cfg.store.is_some(), cfg.relay.is_some()),
            cancel.clone(),
            tasks.iter().map(|t| t.abort_handle()).collect(),
        );
        let served = http::Served {
            registry: Arc::new(registry),
            health: Arc::new(health),
        };
        let c = http_cancel.clone();
        http_tasks.push(tokio::spawn(async move {
            if let Err(e) = http::serve(listener, served, c).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        }));
    }
    let listen_addrs = network
        .listen_addrs()
        .into_iter()
        .map(|a| a.with_p2p(peer_id).unwrap_or_else(|a| a))
        .collect();
    tracing::info!(%peer_id, store = cfg.store.is_some(), relay = cfg.relay.is_some(), external = ?cfg.external_addrs, "bootstrap peer started");
    Ok(Running {
        peer_id,
        listen_addrs,
        metrics_addr,
        metrics,
        tasks: Tasks::new(cancel, tasks),
        http: Tasks::new(http_cancel, http_tasks),
    })
}

/// Runs the peer until `shutdown` resolves, then stops it cleanly; `on_started` sees it
/// running first (to print its addresses).
pub async fn run(
    config: Config,
    on_started: impl FnOnce(&Running),
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let running = start(config).await?;
    on_started(&running);
    shutdown.await;
    running.shutdown().await;
    Ok(())
}
