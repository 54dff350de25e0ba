//! A local mesh in one process: store peers and users on loopback (or on the in-process
//! memory transport), introduced to each other.
//!
//! `kith demo` runs one for people to try Kith on one machine; the simulation harness in
//! `tests/` builds larger ones from the same code, so what the demo shows is what is tested.
//! For that the mesh keeps each peer's configuration (to restart it on the same data
//! directory and ports), can derive every identity from a seed, lets the caller change the
//! nodes' and store peers' configurations, and can leave introductions to the caller (a large
//! mesh introduces only the users who talk to each other). The integration tests' store-peer
//! meshes are built here too ([`MeshConfig::stores_only`]): there is one mesh builder.

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use kith_net::Transport;
use kith_protocol::LocalIdentity;
use libp2p::Multiaddr;
use rand::{RngCore, SeedableRng};

use crate::{run::DB_DIR, Config, RunError, RunningNode};
use kith_bootstrap as operator;

/// How long starting a peer retries while its data directory is still locked by a previous
/// incarnation in this process (sled releases its lock when the last handle drops, which
/// may happen on another runtime thread a little after a stop returns).
pub const RESTART_RETRY: Duration = Duration::from_secs(20);

/// Pause between two attempts to start a peer whose data directory is still locked.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What to build.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// Where every peer's data directory goes (one subdirectory each).
    pub dir: PathBuf,
    /// How many store-and-forward peers.
    pub stores: usize,
    /// The users' names (each gets a node).
    pub users: Vec<String>,
    /// API ports for the users, in order (0 or missing: any free port).
    pub api_ports: Vec<u16>,
    /// Heartbeat interval of the users' nodes.
    pub heartbeat: Duration,
}

impl MeshConfig {
    /// A mesh of `stores` store peers under `dir` and no users: what the integration tests
    /// start before they add nodes of their own.
    pub fn stores_only(dir: PathBuf, stores: usize) -> Self {
        MeshConfig {
            dir,
            stores,
            users: Vec::new(),
            api_ports: Vec::new(),
            heartbeat: Duration::ZERO,
        }
    }
}

/// Changes a user node's configuration before it starts.
pub type NodeTweak = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// Changes a store peer's configuration before it starts.
pub type StoreTweak = Arc<dyn Fn(&mut operator::Config) + Send + Sync>;

/// How to build the mesh beyond what it holds: what the demo never needs to change.
#[derive(Clone)]
pub struct MeshOptions {
    /// Introduce every pair of users at start (the demo). A large mesh leaves it off and
    /// introduces the pairs that talk with [`Mesh::introduce`]: all pairs is N² contacts.
    pub introduce_all: bool,
    /// Derive every identity (users' and store peers') from this seed, so the same seed gives
    /// the same ids, mailbox sets and load spread; `None`: random identities.
    pub seed: Option<u64>,
    /// How many peers start at once (at least 1).
    pub parallel_starts: usize,
    /// Applied to each user node's configuration (after the mesh's own settings).
    pub node_tweak: Option<NodeTweak>,
    /// Applied to each store peer's configuration (after the mesh's own settings).
    pub store_tweak: Option<StoreTweak>,
    /// What every peer's connections run on. [`Transport::Memory`] puts the whole mesh in
    /// this process without sockets (thousands of peers fit), listening on `/memory/0`;
    /// the default is loopback TCP.
    pub transport: Transport,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            introduce_all: true,
            seed: None,
            parallel_starts: 1,
            node_tweak: None,
            store_tweak: None,
            transport: Transport::Network,
        }
    }
}

impl fmt::Debug for MeshOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshOptions")
            .field("introduce_all", &self.introduce_all)
            .field("seed", &self.seed)
            .field("parallel_starts", &self.parallel_starts)
            .field("node_tweak", &self.node_tweak.is_some())
            .field("store_tweak", &self.store_tweak.is_some())
            .field("transport", &self.transport)
            .finish()
    }
}

/// Why a mesh could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// A store peer did not start.
    #[error("store peer {index}: {source}")]
    Store {
        /// Which one.
        index: usize,
        /// Why.
        source: operator::RunError,
    },
    /// A user's node did not start.
    #[error("node {name}: {source}")]
    Node {
        /// Whose.
        name: String,
        /// Why.
        source: RunError,
    },
    /// Introducing two users failed.
    #[error("introducing {a} and {b}: {reason}")]
    Introduce {
        /// One user.
        a: String,
        /// The other.
        b: String,
        /// Why.
        reason: String,
    },
    /// A seeded identity could not be written into a data directory.
    #[error("seeding {path}: {reason}")]
    Seed {
        /// The data directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A running mesh.
pub struct Mesh {
    /// The store peers, in start order.
    pub stores: Vec<operator::Running>,
    /// The users' nodes with their names, in the order asked for.
    pub users: Vec<(String, RunningNode)>,
    /// Each store peer's configuration as started (data directory, bound ports), in the order
    /// of `stores`: what [`start_store`] needs to bring it back after a stop.
    pub store_configs: Vec<operator::Config>,
    /// Each user node's configuration as started (data directory, bound port), in the order
    /// of `users`: what [`start_user`] needs to bring it back after a stop.
    pub user_configs: Vec<Config>,
}

impl Mesh {
    /// Starts the store peers (each joining the ones before it), then the users' nodes
    /// (bootstrapping from every store peer), and introduces every pair of users.
    pub async fn start(cfg: MeshConfig) -> Result<Mesh, MeshError> {
        Self::start_with(cfg, MeshOptions::default()).await
    }

    /// Like [`Mesh::start`], with `opts` (seeded identities, configuration tweaks, parallel
    /// starts, introductions left to the caller).
    pub async fn start_with(cfg: MeshConfig, opts: MeshOptions) -> Result<Mesh, MeshError> {
        let mut stores: Vec<operator::Running> = Vec::with_capacity(cfg.stores);
        let mut store_configs = Vec::with_capacity(cfg.stores);
        let mut addrs: Vec<Multiaddr> = Vec::new();
        for index in 0..cfg.stores {
            let dir = cfg.dir.join(format!("store{index}"));
            if let Some(seed) = opts.seed {
                seed_store_key(&dir, seed_for(seed, "store", index))?;
            }
            let mut sc = operator::Config::loopback_store(dir);
            sc.peers = addrs.clone();
            if opts.transport.is_memory() {
                sc.listen = vec![kith_net::memory_any_port()];
                sc.transport = opts.transport.clone();
            }
            if let Some(t) = &opts.store_tweak {
                t(&mut sc);
            }
            let s = start_store(sc.clone())
                .await
                .map_err(|source| MeshError::Store { index, source })?;
            addrs.extend(s.listen_addrs.iter().cloned());
            // Restarts listen where it listened (nodes keep it in their bootstrap lists).
            sc.listen = strip_p2p(&s.listen_addrs);
            stores.push(s);
            store_configs.push(sc);
        }
        let parallel = opts.parallel_starts.max(1);
        let started: Vec<(String, RunningNode, Config)> =
            futures::stream::iter(cfg.users.iter().enumerate().map(|(i, name)| {
                let mut nc = Config::loopback(cfg.dir.join(name));
                nc.bootstrap = addrs.clone();
                nc.heartbeat = cfg.heartbeat;
                if opts.transport.is_memory() {
                    nc.listen = vec![kith_net::memory_any_port()];
                    nc.transport = opts.transport.clone();
                }
                if let Some(port) = cfg.api_ports.get(i).copied().filter(|p| *p != 0) {
                    nc.api.set_port(port);
                }
                if let Some(t) = &opts.node_tweak {
                    t(&mut nc);
                }
                let seed = opts.seed.map(|s| seed_for(s, "user", i));
                let name = name.clone();
                async move {
                    if let Some(seed) = seed {
                        seed_user_identity(&nc.data_dir, seed)?;
                    }
                    let node = match start_user(nc.clone()).await {
                        Ok(n) => n,
                        // A fixed port in use: take any free one rather than fail the demo.
                        Err(RunError::Io { .. }) if nc.api.port() != 0 => {
                            nc.api.set_port(0);
                            start_user(nc.clone())
                                .await
                                .map_err(|source| MeshError::Node {
                                    name: name.clone(),
                                    source,
                                })?
                        }
                        Err(source) => return Err(MeshError::Node { name, source }),
                    };
                    // Restarts listen where it listened, so contacts find it where they
                    // last saw it.
                    nc.listen = node.node.net.listen_addrs();
                    Ok::<_, MeshError>((name, node, nc))
                }
            }))
            .buffered(parallel)
            .try_collect()
            .await?;
        let mut users = Vec::with_capacity(started.len());
        let mut user_configs = Vec::with_capacity(started.len());
        for (name, node, nc) in started {
            users.push((name, node));
            user_configs.push(nc);
        }
        let mesh = Mesh {
            stores,
            users,
            store_configs,
            user_configs,
        };
        if opts.introduce_all {
            mesh.introduce_all().await?;
        }
        Ok(mesh)
    }

    /// The addresses of every store peer (what the nodes bootstrap from).
    pub fn bootstrap_addrs(&self) -> Vec<Multiaddr> {
        self.stores
            .iter()
            .flat_map(|s| s.listen_addrs.iter().cloned())
            .collect()
    }

    /// Adds every user to every other user's contacts (by invite, with their names).
    pub async fn introduce_all(&self) -> Result<(), MeshError> {
        let mut invites = Vec::with_capacity(self.users.len());
        for (name, n) in &self.users {
            invites.push(invite_of(name, n).await?);
        }
        for (i, (a, na)) in self.users.iter().enumerate() {
            for (j, (b, _)) in self.users.iter().enumerate() {
                if i == j {
                    continue;
                }
                add_contact(a, na, b, &invites[j]).await?;
            }
        }
        Ok(())
    }

    /// Makes the users at indexes `a` and `b` contacts of each other.
    pub async fn introduce(&self, a: usize, b: usize) -> Result<(), MeshError> {
        let missing = |i: usize| MeshError::Introduce {
            a: format!("#{a}"),
            b: format!("#{b}"),
            reason: format!("no user #{i}"),
        };
        let (na, ra) = self.users.get(a).ok_or_else(|| missing(a))?;
        let (nb, rb) = self.users.get(b).ok_or_else(|| missing(b))?;
        introduce(na, ra, nb, rb).await
    }

    /// The node of the user called `name`.
    pub fn user(&self, name: &str) -> Option<&RunningNode> {
        self.users.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }

    /// Stops every node and store peer.
    pub async fn shutdown(self) {
        for (name, n) in self.users {
            if let Err(e) = n.shutdown().await {
                tracing::warn!(%name, error = %e, "node did not stop cleanly");
            }
        }
        for s in self.stores {
            s.shutdown().await;
        }
    }
}

/// Makes two running users contacts of each other (each adds the other's current invite).
pub async fn introduce(
    name_a: &str,
    a: &RunningNode,
    name_b: &str,
    b: &RunningNode,
) -> Result<(), MeshError> {
    let invite_a = invite_of(name_a, a).await?;
    let invite_b = invite_of(name_b, b).await?;
    add_contact(name_a, a, name_b, &invite_b).await?;
    add_contact(name_b, b, name_a, &invite_a).await
}

async fn invite_of(name: &str, n: &RunningNode) -> Result<String, MeshError> {
    let me = n.node.me().await.map_err(|e| MeshError::Introduce {
        a: name.to_string(),
        b: name.to_string(),
        reason: e.to_string(),
    })?;
    Ok(me.invite)
}

async fn add_contact(a: &str, na: &RunningNode, b: &str, invite: &str) -> Result<(), MeshError> {
    na.node
        .add_contact(invite, Some(b.to_string()))
        .await
        .map_err(|e| MeshError::Introduce {
            a: a.to_string(),
            b: b.to_string(),
            reason: e.to_string(),
        })?;
    Ok(())
}

/// Starts a user's node on `config`, retrying for up to [`RESTART_RETRY`] while its data
/// directory is still locked, or its port still held, by a previous incarnation in this
/// process that is being torn down.
pub async fn start_user(config: Config) -> Result<RunningNode, RunError> {
    let deadline = tokio::time::Instant::now() + RESTART_RETRY;
    loop {
        match crate::start(config.clone()).await {
            Err(RunError::Store(e)) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "store still locked; retrying");
            }
            Err(RunError::Net(e)) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "cannot listen yet; retrying");
            }
            other => return other,
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Starts a store peer on `config`, retrying like [`start_user`] while its mailboxes are
/// still locked or its port still held by a previous incarnation.
pub async fn start_store(
    config: operator::Config,
) -> Result<operator::Running, operator::RunError> {
    let deadline = tokio::time::Instant::now() + RESTART_RETRY;
    loop {
        match operator::start(config.clone()).await {
            Err(operator::RunError::Mailboxes(e)) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "mailboxes still locked; retrying");
            }
            Err(operator::RunError::Net(e)) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "cannot listen yet; retrying");
            }
            other => return other,
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Addresses without their `/p2p/<id>` suffix (what a peer listens on).
pub fn strip_p2p(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    addrs
        .iter()
        .map(|a| {
            a.iter()
                .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                .collect()
        })
        .collect()
}

/// A per-peer seed derived from the mesh's seed, the peer's kind and its index.
fn seed_for(seed: u64, kind: &str, index: usize) -> u64 {
    let kind_bits = kind.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    seed ^ kind_bits ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Writes a seeded identity into a fresh user data directory (nothing is changed when the
/// directory already holds one: a restart keeps its user).
fn seed_user_identity(data_dir: &std::path::Path, seed: u64) -> Result<(), MeshError> {
    let err = |e: &dyn fmt::Display| MeshError::Seed {
        path: data_dir.to_path_buf(),
        reason: e.to_string(),
    };
    let db_dir = data_dir.join(DB_DIR);
    if db_dir.exists() {
        return Ok(());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let me = LocalIdentity::from_ed25519_secret(secret, crate::time::now_ms(), &mut rng);
    // Where and how `store::Store` keeps it (tree `meta`, key `identity`). Opened without a
    // background flusher, so sled's lock is released as soon as `db` drops here.
    let db = sled::Config::new()
        .path(&db_dir)
        .flush_every_ms(None)
        .open()
        .map_err(|e| err(&e))?;
    let meta = db.open_tree("meta").map_err(|e| err(&e))?;
    meta.insert("identity", me.to_bytes().map_err(|e| err(&e))?)
        .map_err(|e| err(&e))?;
    db.flush().map_err(|e| err(&e))?;
    Ok(())
}

/// Writes a seeded identity key into a fresh store peer's data directory (kept if present).
fn seed_store_key(data_dir: &std::path::Path, seed: u64) -> Result<(), MeshError> {
    let err = |e: &dyn fmt::Display| MeshError::Seed {
        path: data_dir.to_path_buf(),
        reason: e.to_string(),
    };
    let path = data_dir.join(operator::KEY_FILE);
    if path.exists() {
        return Ok(());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let key = libp2p::identity::Keypair::ed25519_from_bytes(secret).map_err(|e| err(&e))?;
    let bytes = key.to_protobuf_encoding().map_err(|e| err(&e))?;
    std::fs::create_dir_all(data_dir).map_err(|e| err(&e))?;
    std::fs::write(&path, bytes).map_err(|e| err(&e))?;
    Ok(())
}
