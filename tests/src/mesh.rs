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

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::Path,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures::{io::WriteHalf, AsyncReadExt, AsyncWriteExt};
use kith_bootstrap::{
    metrics::Metrics, store_peer::StoreConfig, Config as StorePeerConfig, Running,
};
use kith_node::{
    handle::MessageView,
    link::FrameReader,
    mesh::{strip_p2p, Mesh as LibraryMesh, MeshConfig, MeshOptions, StoreTweak},
    net::{self, NetConfig, NetEvent, Network},
    time::now_ms,
    Event,
};
use kith_protocol::{
    frame,
    mailbox::{MailboxRequest, MailboxResponse, MAILBOX_PROTOCOL, MAX_BATCH},
    payload::Text,
    DeliveryStatus, Envelope, EnvelopeHeader, KeyBundle, LocalIdentity, MessageId, Payload,
    PeerSessions, Plaintext, PresenceRecord, SessionPolicy, UserId,
};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{wait_event, wait_for, TestNode, POLL_INTERVAL, TIMEOUT};

/// Repair interval used by [`Mesh::start`] unless a test sets another: short, so that repair
/// happens within a test's waits.
pub const FAST_REPAIR: Duration = Duration::from_millis(300);

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

impl StorePeer {
    /// Starts a store peer on a fresh data directory with [`StorePeerConfig::loopback_store`],
    /// knowing the store peers at `peers`, with its [`StoreConfig`] changed by `tweak`.
    pub async fn start(
        name: &str,
        peers: &[Multiaddr],
        tweak: impl FnOnce(&mut StoreConfig),
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kith-{name}-"))
            .tempdir()
            .context("creating a temporary data directory")?;
        let mut config = StorePeerConfig::loopback_store(dir.path().join("store"));
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
    fn started(
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

    /// Indexes of `user`'s mailbox set among all store peers of the mesh: the `r` closest
    /// (XOR), closest first, as nodes and store peers compute it.
    pub fn mailbox_set(&self, user: &UserId, r: usize) -> Result<Vec<usize>> {
        net::closest_peers(&user.peer_id(), self.stores.iter().map(|s| s.peer_id()), r)
            .iter()
            .map(|p| self.index_of(p))
            .collect()
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

    /// Waits until every running store peer holds a presence record of each of `users`.
    ///
    /// A node sends its presence on each mailbox link it opens to its own store peers (which,
    /// in a mesh of at most `2R` store peers, are all of them), so a record held by a store
    /// peer proves the node has found it and subscribed there. Needs the users to share their
    /// presence (the default).
    pub async fn wait_known_by(&self, probe: &mut MailboxClient, users: &[UserId]) -> Result<()> {
        for store in self.stores.iter().filter(|s| s.is_running()) {
            let mut stream = probe.open(store).await?;
            for user in users {
                let deadline = tokio::time::Instant::now() + TIMEOUT;
                while stream.get_presence(user).await?.is_none() {
                    ensure!(
                        tokio::time::Instant::now() < deadline,
                        "timed out after {TIMEOUT:?} waiting for {} to hold a presence \
                         record of {user} (the node has not found it)",
                        store.name()
                    );
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }
        Ok(())
    }
}

/// A raw client of the mailbox protocol: a swarm of the node's own kind (same transport and
/// behaviours) with an identity of the test's choosing, which opens `/kith/mailbox/1` streams
/// to store peers and writes and reads frames itself. It does not offer the mailbox protocol,
/// so store peers never take it for a store peer. The swarm stops when this is dropped.
pub struct MailboxClient {
    network: Network,
    events: mpsc::Receiver<NetEvent>,
    cancel: CancellationToken,
}

impl MailboxClient {
    /// A client with a fresh random identity.
    pub async fn random() -> Result<Self> {
        Self::start(libp2p::identity::Keypair::generate_ed25519()).await
    }

    /// A client authenticated as `identity`'s user (so it may fetch that user's mailbox).
    pub async fn as_user(identity: &LocalIdentity) -> Result<Self> {
        Self::start(libp2p::identity::Keypair::from(identity.keypair().clone())).await
    }

    /// A client with `keypair`.
    pub async fn start(keypair: libp2p::identity::Keypair) -> Result<Self> {
        let cfg = NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            bootstrap: Vec::new(),
            mdns: false,
            kad_server: false,
            idle_timeout: Duration::from_secs(60),
            relay: None,
        };
        let cancel = CancellationToken::new();
        let swarm = net::build_swarm(keypair, &cfg)?;
        let (network, events, _task) = net::spawn(swarm, &cfg, cancel.clone()).await?;
        Ok(MailboxClient {
            network,
            events,
            cancel,
        })
    }

    /// The client's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.network.local_peer_id()
    }

    /// Connects to `store` and opens a mailbox stream to it.
    pub async fn open(&mut self, store: &StorePeer) -> Result<MailboxStream> {
        self.open_at(store.peer_id(), store.addrs()).await
    }

    /// Connects to `peer` at `addrs` and opens a mailbox stream to it, checked with one
    /// round trip.
    ///
    /// A store peer may drop a stream on arrival (libp2p-stream keeps at most one inbound
    /// stream waiting to be accepted and drops the next), so a stream that fails its first
    /// round trip is opened again, until [`TIMEOUT`].
    pub async fn open_at(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<MailboxStream> {
        let me = UserId::from_peer_id(self.peer_id())
            .map_err(|e| anyhow!("the client's peer id is not a user id: {e}"))?;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let attempt = async {
                let mut stream = self.open_once(peer, addrs.clone()).await?;
                stream.barrier(&me).await?;
                Ok::<_, anyhow::Error>(stream)
            };
            match attempt.await {
                Ok(stream) => return Ok(stream),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%peer, error = %e, "mailbox stream failed at once; reopening");
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Err(e) => return Err(e.context(format!("opening a mailbox stream to {peer}"))),
            }
        }
    }

    async fn open_once(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<MailboxStream> {
        while self.events.try_recv().is_ok() {}
        self.network.dial(peer, addrs);
        let events = &mut self.events;
        tokio::time::timeout(TIMEOUT, async {
            loop {
                match events.recv().await {
                    Some(NetEvent::Connected(p)) if p == peer => return Ok(()),
                    Some(NetEvent::DialFailed(p)) if p == peer => {
                        bail!("cannot dial store peer {peer}")
                    }
                    Some(_) => {}
                    None => bail!("the client's network stopped"),
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no connection to store peer {peer} within {TIMEOUT:?}"))??;
        let stream = tokio::time::timeout(
            TIMEOUT,
            self.network
                .control()
                .open_stream(peer, StreamProtocol::new(MAILBOX_PROTOCOL)),
        )
        .await
        .map_err(|_| anyhow!("opening a mailbox stream to {peer} timed out"))?
        .map_err(|e| anyhow!("opening a mailbox stream to {peer}: {e:?}"))?;
        let (read, write) = stream.split();
        Ok(MailboxStream {
            peer,
            reader: FrameReader::new(read),
            writer: write,
            pending: VecDeque::new(),
        })
    }
}

impl Drop for MailboxClient {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// One `/kith/mailbox/1` stream from a [`MailboxClient`] to a store peer.
pub struct MailboxStream {
    peer: PeerId,
    reader: FrameReader<futures::io::ReadHalf<libp2p::Stream>>,
    writer: WriteHalf<libp2p::Stream>,
    pending: VecDeque<MailboxResponse>,
}

impl MailboxStream {
    /// The store peer at the other end.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Writes `requests`, each in its own frame, in one write.
    pub async fn send(&mut self, requests: &[MailboxRequest]) -> Result<()> {
        let mut buf = Vec::new();
        for r in requests {
            frame::encode(r, &mut buf).context("encoding a mailbox request")?;
        }
        self.writer
            .write_all(&buf)
            .await
            .context("writing to the mailbox stream")?;
        self.writer
            .flush()
            .await
            .context("flushing the mailbox stream")?;
        Ok(())
    }

    /// The next answer or push from the store peer, waiting at most [`TIMEOUT`].
    pub async fn recv(&mut self) -> Result<MailboxResponse> {
        if let Some(r) = self.pending.pop_front() {
            return Ok(r);
        }
        let batch = tokio::time::timeout(TIMEOUT, self.reader.next_batch(MAX_BATCH))
            .await
            .map_err(|_| anyhow!("no answer from store peer {} within {TIMEOUT:?}", self.peer))?
            .map_err(|e| anyhow!("reading from store peer {}: {e}", self.peer))?
            .ok_or_else(|| anyhow!("store peer {} closed the mailbox stream", self.peer))?;
        self.pending.extend(batch);
        self.pending
            .pop_front()
            .ok_or_else(|| anyhow!("empty batch from store peer {}", self.peer))
    }

    /// Receives until an answer satisfies `pred`; returns the answers before it and it.
    pub async fn recv_until(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&MailboxResponse) -> bool,
    ) -> Result<(Vec<MailboxResponse>, MailboxResponse)> {
        let mut before = Vec::new();
        loop {
            let r = self
                .recv()
                .await
                .with_context(|| format!("while waiting for {what}"))?;
            if pred(&r) {
                return Ok((before, r));
            }
            before.push(r);
        }
    }

    /// Asks for `user`'s presence record; returns it, and fails if anything else arrives
    /// first (use [`MailboxStream::barrier`] on streams that may carry other answers).
    pub async fn get_presence(&mut self, user: &UserId) -> Result<Option<PresenceRecord>> {
        let (before, answer) = self.barrier(user).await?;
        ensure!(
            before.is_empty(),
            "unexpected answers before the presence record: {before:?}"
        );
        match answer {
            MailboxResponse::Presence(_, record) => Ok(record),
            other => bail!("expected a presence answer, got {other:?}"),
        }
    }

    /// Sends `GetPresence(user)` and receives up to its answer; returns every answer and push
    /// that arrived before it, and the presence answer.
    ///
    /// The store peer handles a stream's requests in order and answers `GetPresence` at once,
    /// so this is a barrier for what earlier requests did and sent back at once: `Subscribe`'s
    /// delivery of what is held, a `Delete`'s effect, the refusal of a `Replicate` from a
    /// non-store. Answers that wait for a durable write (`Stored`, `Replicated`, and
    /// everything answered in a batch of requests that wrote) may still come after it.
    pub async fn barrier(
        &mut self,
        user: &UserId,
    ) -> Result<(Vec<MailboxResponse>, MailboxResponse)> {
        self.send(&[MailboxRequest::GetPresence(*user)]).await?;
        let want = *user;
        self.recv_until(
            &format!("the presence answer for {user}"),
            |r| matches!(r, MailboxResponse::Presence(u, _) if *u == want),
        )
        .await
    }
}

/// A sender of hand-sealed envelopes: an identity and its sessions with each recipient, so a
/// series of envelopes to one recipient is a handshake followed by session messages, exactly
/// as a node would seal them.
pub struct Sealer {
    /// The sender's identity.
    pub identity: LocalIdentity,
    sessions: HashMap<UserId, PeerSessions>,
    rng: rand::rngs::StdRng,
}

impl Sealer {
    /// A sender with a fresh identity.
    pub fn new() -> Self {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::from_entropy();
        Sealer {
            identity: LocalIdentity::generate(now_ms(), &mut rng),
            sessions: HashMap::new(),
            rng,
        }
    }

    /// The sender's user id.
    pub fn user_id(&self) -> UserId {
        self.identity.user_id()
    }

    /// Seals `text` for the owner of `to` under a fresh random id, expiring at `expires_at_ms`.
    pub fn text(&mut self, to: &KeyBundle, text: &str, expires_at_ms: u64) -> Result<Envelope> {
        let id = MessageId::random(&mut self.rng);
        self.text_with_id(to, id, text, expires_at_ms)
    }

    /// Seals `text` for the owner of `to` under the id of the test's choosing (such as the
    /// id of someone else's message).
    pub fn text_with_id(
        &mut self,
        to: &KeyBundle,
        id: MessageId,
        text: &str,
        expires_at_ms: u64,
    ) -> Result<Envelope> {
        let header = EnvelopeHeader::new(id, to.user, expires_at_ms);
        let payload = Payload::Text(Text {
            body: text.to_string(),
            client_meta: "{}".to_string(),
        });
        let now = now_ms();
        let plaintext = Plaintext::new(&payload, now)?;
        let body = self.sessions.entry(to.user).or_default().seal(
            &self.identity,
            to,
            &header,
            &plaintext,
            now,
            &SessionPolicy::default(),
            &mut self.rng,
        )?;
        Ok(Envelope { header, body })
    }
}

impl Default for Sealer {
    fn default() -> Self {
        Self::new()
    }
}

/// The texts `{prefix}000`, `{prefix}001`... (`n` of them).
pub fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:03}")).collect()
}

/// Sends each of `texts` from `from` to `to`, in order (each send returns once durable on
/// the sender). Returns the message ids.
pub async fn send_all(from: &TestNode, to: UserId, texts: &[String]) -> Result<Vec<MessageId>> {
    let node = from.node()?;
    let mut ids = Vec::with_capacity(texts.len());
    for t in texts {
        let sent = node
            .send_text(to, t.clone(), serde_json::json!({}))
            .await
            .with_context(|| format!("{} sends {t:?}", from.name()))?;
        ids.push(sent.id.parse().map_err(|_| anyhow!("bad id {}", sent.id))?);
    }
    Ok(ids)
}

/// Waits on `events` until each of `ids` has reached `status` (or further).
pub async fn wait_statuses(
    events: &mut broadcast::Receiver<Event>,
    ids: &[MessageId],
    status: DeliveryStatus,
) -> Result<()> {
    let mut waiting: HashSet<String> = ids.iter().map(|i| i.to_string()).collect();
    let total = waiting.len();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let what = format!(
            "{} of {total} messages to reach {}",
            waiting.len(),
            status.as_str()
        );
        let ev = wait_event(events, left, &what, |e| {
            matches!(e, Event::Status { id, status: s, .. } if *s >= status && waiting.contains(id))
        })
        .await?;
        if let Event::Status { id, .. } = ev {
            waiting.remove(&id);
        }
    }
    Ok(())
}

/// Waits until every message `node` sent to `peer` with one of `ids` shows `status` (or
/// further) in its conversation.
pub async fn wait_conversation_statuses(
    node: &TestNode,
    peer: &UserId,
    ids: &[MessageId],
    status: DeliveryStatus,
) -> Result<()> {
    let want: HashSet<String> = ids.iter().map(|i| i.to_string()).collect();
    let what = format!(
        "{}'s {} messages to {peer} to reach {}",
        node.name(),
        want.len(),
        status.as_str()
    );
    wait_for(TIMEOUT, &what, || async {
        let conv = node.conversation(peer)?;
        let done = conv
            .iter()
            .filter(|m| m.outgoing && want.contains(&m.id) && m.status >= status)
            .count();
        Ok((done == want.len()).then_some(()))
    })
    .await
}

/// Waits until `node`'s conversation with `peer` holds at least `n` received messages;
/// returns the received messages, oldest first. `peer` need not be a contact yet (a first
/// message from a stranger makes them one).
pub async fn wait_received(node: &TestNode, peer: &UserId, n: usize) -> Result<Vec<MessageView>> {
    let what = format!("{} to hold {n} messages from {peer}", node.name());
    let wanted = peer.to_string();
    wait_for(TIMEOUT, &what, || async {
        let known = node.node()?.contacts()?.iter().any(|c| c.user_id == wanted);
        if !known {
            return Ok(None);
        }
        let received = received_from(node, peer)?;
        Ok((received.len() >= n).then_some(received))
    })
    .await
}

/// The messages `node` received from `peer`, oldest first (in the order they were stored).
pub fn received_from(node: &TestNode, peer: &UserId) -> Result<Vec<MessageView>> {
    let mut conv = node.conversation(peer)?;
    conv.retain(|m| !m.outgoing);
    conv.reverse();
    Ok(conv)
}

/// Fails unless `received` is exactly `texts` with `ids`, once each, in this order, with
/// non-decreasing composition times.
pub fn check_exactly_once_in_order(
    received: &[MessageView],
    ids: &[MessageId],
    texts: &[String],
) -> Result<()> {
    let got: Vec<&str> = received.iter().map(|m| m.text.as_str()).collect();
    ensure!(
        got == texts.iter().map(String::as_str).collect::<Vec<_>>(),
        "received {} messages, expected {} in order; got texts {got:?}",
        received.len(),
        texts.len()
    );
    let got_ids: Vec<String> = received.iter().map(|m| m.id.clone()).collect();
    let want_ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    ensure!(got_ids == want_ids, "received ids differ from the ids sent");
    ensure!(
        received
            .windows(2)
            .all(|w| w[0].sent_at_ms <= w[1].sent_at_ms),
        "composition times are not in order"
    );
    Ok(())
}

/// Fails unless `received` holds each of `ids` exactly once (in any order) and nothing else.
pub fn check_exactly_once(received: &[MessageView], ids: &[MessageId]) -> Result<()> {
    let want: HashSet<String> = ids.iter().map(|i| i.to_string()).collect();
    let mut seen = HashSet::new();
    for m in received {
        ensure!(want.contains(&m.id), "received an unexpected message {m:?}");
        ensure!(seen.insert(m.id.clone()), "received {} twice", m.id);
    }
    ensure!(
        seen.len() == want.len(),
        "received {} of {} messages",
        seen.len(),
        want.len()
    );
    Ok(())
}
