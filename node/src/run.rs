//! Wiring: opens the store, starts the network, the links, the messenger and the REST API,
//! and stops them all again. `main.rs` only parses flags and calls into here, so tests start
//! whole nodes in-process.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use kith_protocol::{identity::PrekeyPolicy, LocalIdentity, UserId};
use rand::RngCore;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use kith_net::private_file::{self, PathError};
use kith_net::tasks::Tasks;

use crate::{
    api,
    handle::Node,
    link,
    media::MediaError,
    messenger::{Inputs, Messenger},
    net::{self, AutonatRole, KadMode, NetConfig},
    store::{self, Store, StoreError},
    time::now_ms,
    Config,
};

/// Name of the API token file in the data directory.
pub const TOKEN_FILE: &str = "api-token";

pub use crate::store::DB_DIR;

pub use crate::media::MEDIA_DIR;

/// Depth of the link-event queue into the messenger.
const LINK_EVENT_QUEUE: usize = 4096;

/// Depth of the event broadcast (slow SSE subscribers skip ahead past this).
const EVENT_BROADCAST: usize = 4096;

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A file in the data directory (or the API address) could not be read, written or bound.
    #[error(transparent)]
    Io(#[from] PathError),
    /// The store failed to open (another `kith run` on the same data dir?).
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// The network failed to start.
    #[error(transparent)]
    Net(#[from] net::NetError),
    /// The API address is not loopback and `--api-public` was not given.
    #[error("refusing to serve the API on non-loopback address {0} without --api-public")]
    PublicApi(SocketAddr),
    /// No token: the data directory was never initialised.
    #[error("no API token in {0}: run `kith init` first")]
    NoToken(PathBuf),
    /// The media directory could not be prepared.
    #[error("media files: {0}")]
    Media(#[from] MediaError),
}

/// How long shutdown waits for each task before giving up on it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What `kith init` reports.
#[derive(Debug, Clone)]
pub struct InitInfo {
    /// The user id.
    pub user_id: String,
    /// The API token.
    pub token: String,
    /// Where the token is stored.
    pub token_path: PathBuf,
}

/// Creates the data directory, the identity and the API token if they do not exist yet.
/// Idempotent: an initialised directory is left as it is.
pub fn init(data_dir: &Path) -> Result<InitInfo, RunError> {
    let token = load_or_create_token(data_dir)?;
    let identity = store::ensure_identity(&data_dir.join(DB_DIR))?;
    Ok(InitInfo {
        user_id: identity.user_id().to_string(),
        token,
        token_path: data_dir.join(TOKEN_FILE),
    })
}

/// The API token, created (with the data directory) on first use.
fn load_or_create_token(data_dir: &Path) -> Result<String, RunError> {
    let bytes = private_file::load_or_create_secret(data_dir, TOKEN_FILE, || {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Ok::<_, PathError>(format!("{}\n", hex::encode(bytes)).into_bytes())
    })?;
    token_text(&data_dir.join(TOKEN_FILE), bytes)
}

/// The API token stored in the data directory.
pub fn read_token(data_dir: &Path) -> Result<String, RunError> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => token_text(&path, bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(RunError::NoToken(data_dir.to_path_buf()))
        }
        Err(e) => Err(private_file::at(&path)(e).into()),
    }
}

/// A token file's text, trimmed; not UTF-8 is an I/O error on that file.
fn token_text(path: &Path, bytes: Vec<u8>) -> Result<String, RunError> {
    let text = String::from_utf8(bytes).map_err(|e| {
        private_file::at(path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })?;
    Ok(text.trim().to_string())
}

/// A node running in this process.
pub struct RunningNode {
    /// Handle to talk to it.
    pub node: Node,
    /// Where its REST API listens.
    pub api_addr: SocketAddr,
    /// The API token.
    pub token: String,
    /// Dropped without [`RunningNode::shutdown`], its tasks are aborted.
    tasks: Tasks,
    store: Store,
}

impl RunningNode {
    /// The user id.
    pub fn user_id(&self) -> UserId {
        self.node.user_id()
    }

    /// Stops every task (aborting any that does not end within the grace) and flushes the
    /// store: once this returns, nothing of the node runs any more.
    pub async fn shutdown(self) -> Result<(), RunError> {
        self.tasks.stop(SHUTDOWN_GRACE).await;
        self.store.flush_now()?;
        tracing::info!("node stopped");
        Ok(())
    }

    /// Stops every task without flushing anything further: what a crash leaves behind (used
    /// by tests; a real `kill -9` is tested with the binary).
    pub async fn abort(self) {
        // Abort first, so no task gets to run its clean-shutdown path (final flush).
        self.tasks.abort().await;
    }
}

/// The network as the node runs it: a relay client that reserves while unreachable, hole
/// punching and AutoNAT as configured, and relayed connections only from contacts (in hole
/// punching the receiver of a relayed connection dials: a stranger must not make us dial).
fn net_config(config: &Config, store: &Store) -> NetConfig {
    let t = &config.traversal;
    let store = store.clone();
    let accepts = kith_net::RelayedFilter(std::sync::Arc::new(move |peer: &libp2p::PeerId| {
        UserId::from_peer_id(*peer)
            .ok()
            .and_then(|user| store.contact(&user).ok().flatten())
            .is_some()
    }));
    NetConfig {
        transport: config.transport.clone(),
        listen: config.listen.clone(),
        bootstrap: config.bootstrap.clone(),
        mdns: config.mdns,
        kad_mode: if t.kad_server {
            KadMode::Server
        } else {
            KadMode::Auto
        },
        idle_timeout: config.idle_timeout,
        reserve_on_relays: t.relays,
        hole_punching: t.hole_punching,
        autonat: if t.autonat {
            AutonatRole::Client
        } else {
            AutonatRole::Off
        },
        upnp: t.upnp,
        relayed_filter: Some(accepts),
        ..NetConfig::default()
    }
}

/// Starts a node: store, network, links, messenger and API. Returns once it listens.
pub async fn start(config: Config) -> Result<RunningNode, RunError> {
    if !config.api.ip().is_loopback() && !config.api_public {
        return Err(RunError::PublicApi(config.api));
    }
    // The database is opened once: opening it a second time right after closing it can race
    // with sled's background flusher still holding the file lock.
    let token = load_or_create_token(&config.data_dir)?;
    let store = Store::open(&config.data_dir.join(DB_DIR), config.commit_delay)?;
    let mut me = match store.identity()? {
        Some(me) => me,
        None => {
            let me = LocalIdentity::generate(now_ms(), &mut rand::rngs::OsRng);
            store.set_identity(&me)?;
            me
        }
    };
    if me.maintain_prekeys(now_ms(), &PrekeyPolicy::default(), &mut rand::rngs::OsRng) {
        store.set_identity(&me)?;
        tracing::info!(prekey = me.prekeys().current().id, "prekey rotated");
    }
    let keypair = libp2p::identity::Keypair::from(me.keypair().clone());
    let net_cfg = net_config(&config, &store);
    let cancel = CancellationToken::new();
    let (network, net_events, net_task) = net::start(keypair, &net_cfg, cancel.clone()).await?;

    let (link_tx, link_rx) = mpsc::channel(LINK_EVENT_QUEUE);
    let acceptor = link::spawn_acceptor(
        network.control(),
        link_tx.clone(),
        config.max_inbound_streams,
        cancel.clone(),
    )?;
    let (events, _) = broadcast::channel(EVENT_BROADCAST);
    let files = crate::media::MediaFiles::open(&config.data_dir.join(MEDIA_DIR))?;
    let (transfers, transfer_task) = crate::transfer::spawn(
        store.clone(),
        files,
        network.control(),
        events.clone(),
        crate::transfer::TransferConfig {
            write_quorum: config.write_quorum,
            max_media_bytes: config.max_media_bytes,
            download_timeout: config.download_timeout,
            ..Default::default()
        },
        cancel.clone(),
    )?;
    let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue);
    let user = me.user_id();
    let (messenger, internal) = Messenger::new(
        me,
        store.clone(),
        network.clone(),
        config.clone(),
        events.clone(),
        link_tx,
        transfers.clone(),
        cancel.clone(),
    )?;
    let messenger_task = tokio::spawn(messenger.run(
        Inputs {
            commands: cmd_rx,
            net_events,
            link_events: link_rx,
        },
        internal,
    ));
    let node = Node {
        commands: cmd_tx,
        events,
        store: store.clone(),
        user,
        net: network,
        transfers,
    };
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .map_err(private_file::at(Path::new("api")))?;
    let api_addr = listener
        .local_addr()
        .map_err(private_file::at(Path::new("api")))?;
    let api_node = node.clone();
    let api_cancel = cancel.clone();
    let api_token = token.clone();
    let api_task = tokio::spawn(async move {
        if let Err(e) = api::serve(listener, api_node, api_token, api_cancel).await {
            tracing::error!(error = %e, "API server failed");
        }
    });
    tracing::info!(%user, %api_addr, "node started");
    Ok(RunningNode {
        node,
        api_addr,
        token,
        tasks: Tasks::new(
            cancel,
            vec![messenger_task, api_task, acceptor, transfer_task, net_task],
        ),
        store,
    })
}

/// Runs a node until `shutdown` resolves, then stops it cleanly.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let node = start(config).await?;
    shutdown.await;
    node.shutdown().await
}
