//! A raw `/kith/mailbox/1` client that speaks the protocol frame by frame, the way any peer
//! on the network could: for tests of what a store peer accepts and answers.

use std::collections::VecDeque;

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures::{io::WriteHalf, AsyncReadExt, AsyncWriteExt};
use kith_net::protocols::MAILBOX;
use kith_node::{
    link::FrameReader,
    net::{self, NetConfig, NetEvent, Network},
};
use kith_protocol::{
    frame,
    mailbox::{MailboxRequest, MailboxResponse, MAX_BATCH},
    LocalIdentity, PresenceRecord, UserId,
};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::store_peer::StorePeer;
use crate::{POLL_INTERVAL, TIMEOUT};

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

    /// A client with `keypair` on loopback TCP.
    pub async fn start(keypair: libp2p::identity::Keypair) -> Result<Self> {
        Self::start_with(keypair, kith_net::Transport::Network).await
    }

    /// A client with `keypair` on `transport` (the memory transport reaches store peers of
    /// an in-process memory mesh).
    pub async fn start_with(
        keypair: libp2p::identity::Keypair,
        transport: kith_net::Transport,
    ) -> Result<Self> {
        let listen = if transport.is_memory() {
            kith_net::memory_any_port()
        } else {
            "/ip4/127.0.0.1/tcp/0".parse()?
        };
        let cfg = NetConfig {
            transport,
            listen: vec![listen],
            bootstrap: Vec::new(),
            ..NetConfig::default()
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
        let stream = self.open_raw_at(peer, addrs, MAILBOX).await?;
        let (read, write) = stream.split();
        Ok(MailboxStream {
            peer,
            reader: FrameReader::new(read),
            writer: write,
            pending: VecDeque::new(),
        })
    }

    /// Connects to `peer` at `addrs` and opens a `protocol` stream to it, without any round
    /// trip: a stream the peer refuses (a cap) shows as an end of stream on first read. For
    /// tests that write raw bytes (a stalled frame) or speak another protocol (media).
    pub async fn open_raw_at(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        protocol: libp2p::StreamProtocol,
    ) -> Result<libp2p::Stream> {
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
        tokio::time::timeout(TIMEOUT, self.network.control().open_stream(peer, protocol))
            .await
            .map_err(|_| anyhow!("opening a stream to {peer} timed out"))?
            .map_err(|e| anyhow!("opening a stream to {peer}: {e:?}"))
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

    /// Asks for `user`'s presence record as a stranger (no access key); returns it, and
    /// fails if anything else arrives first (use [`MailboxStream::barrier`] on streams that
    /// may carry other answers).
    pub async fn get_presence(&mut self, user: &UserId) -> Result<Option<PresenceRecord>> {
        self.get_presence_with(user, None).await
    }

    /// Deposits `env` carrying `key` (the recipient's access key, as a contact; `None` as a
    /// stranger) and returns the store peer's answer to it; fails if anything else arrives
    /// first.
    pub async fn deposit(
        &mut self,
        env: &kith_protocol::Envelope,
        key: Option<kith_protocol::MailboxAccessKey>,
    ) -> Result<MailboxResponse> {
        self.send(&[MailboxRequest::Deposit(env.clone(), key)])
            .await?;
        let id = env.id();
        let (before, answer) = self
            .recv_until(&format!("the answer to deposit {id}"), |r| {
                matches!(r, MailboxResponse::Stored(i) | MailboxResponse::Refused(i, _) if *i == id)
            })
            .await?;
        ensure!(before.is_empty(), "unexpected answers {before:?}");
        Ok(answer)
    }

    /// Registers `owner`'s mailbox with this stream's store peer (naming only it), as the
    /// owner's node would, with a fresh access key; returns the key, which deposits as a
    /// contact carry. The store peer answers nothing to a registration.
    pub async fn register(
        &mut self,
        owner: &kith_protocol::LocalIdentity,
    ) -> Result<kith_protocol::MailboxAccessKey> {
        let key = kith_protocol::MailboxAccessKey::generate(&mut rand::rngs::OsRng);
        let store = UserId::from_peer_id(self.peer())?;
        let reg = kith_protocol::MailboxRegistration::new(
            owner,
            vec![store],
            &key,
            kith_node::time::now_ms(),
        );
        self.send(&[MailboxRequest::Register(reg)]).await?;
        Ok(key)
    }

    /// Asks for `user`'s presence record presenting `key` (their mailbox access key, as a
    /// contact would); fails if anything else arrives first.
    pub async fn get_presence_with(
        &mut self,
        user: &UserId,
        key: Option<kith_protocol::MailboxAccessKey>,
    ) -> Result<Option<PresenceRecord>> {
        self.send(&[MailboxRequest::GetPresence(*user, key)])
            .await?;
        let want = *user;
        let (before, answer) = self
            .recv_until(
                &format!("the presence answer for {user}"),
                |r| matches!(r, MailboxResponse::Presence(u, _) if *u == want),
            )
            .await?;
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
        self.send(&[MailboxRequest::GetPresence(*user, None)])
            .await?;
        let want = *user;
        self.recv_until(
            &format!("the presence answer for {user}"),
            |r| matches!(r, MailboxResponse::Presence(u, _) if *u == want),
        )
        .await
    }
}
