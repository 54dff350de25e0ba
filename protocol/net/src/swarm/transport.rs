//! The in-process transport: libp2p's `MemoryTransport` (`/memory/<n>` addresses) under the
//! same Noise + Yamux upgrade as TCP, for meshes of thousands of peers in one process (a
//! loopback TCP connection costs two file descriptors there; a memory one costs none, while
//! every handshake, every stream and every byte still go through the real upgrade).
//!
//! Two things the plain `MemoryTransport` lacks are added here:
//! - its listening port is only released by `remove_listener`, not when the swarm drops, so a
//!   peer restarted on its old address would find it taken: [`Listeners`] releases them on
//!   drop;
//! - a mesh can cut the links between two sets of peers ([`Links::cut`]): open connections
//!   between them fail at once and new ones are refused after the handshake (when both
//!   peer ids are known), until [`Links::heal`].
//!
//! And [`Links`] counts the bytes its peers' streams carry ([`Links::bytes`]), so that a
//! simulation can tell what one peer sent by giving that peer links of its own.

use std::{
    collections::{HashMap, HashSet},
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::{
    core::{
        muxing::{StreamMuxer, StreamMuxerBox, StreamMuxerEvent, SubstreamBox},
        transport::{
            memory::MemoryTransport, Boxed, DialOpts, ListenerId, TransportError, TransportEvent,
        },
        upgrade::Version,
        Transport as _,
    },
    identity, noise, yamux, Multiaddr, PeerId,
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Which transports a swarm runs on.
#[derive(Clone, Debug, Default)]
pub enum Transport {
    /// TCP (nodelay) and QUIC, DNS names, and relay circuits: the real network.
    #[default]
    Network,
    /// Only `/memory/<n>` addresses, in this process (Noise + Yamux as over TCP), with the
    /// mesh's shared [`Links`] (to cut and heal links between peers). The process-memory
    /// connection cap is off: the process holds every peer of the mesh.
    Memory(Links),
}

impl Transport {
    /// An in-process transport with links nobody cuts.
    pub fn memory() -> Self {
        Transport::Memory(Links::default())
    }

    /// Whether this is the in-process transport.
    pub fn is_memory(&self) -> bool {
        matches!(self, Transport::Memory(_))
    }
}

/// `/memory/0`: any free in-process port.
pub fn memory_any_port() -> Multiaddr {
    Multiaddr::empty().with(libp2p::multiaddr::Protocol::Memory(0))
}

/// The links of one in-process mesh, shared by all its peers: which pairs are cut now, and
/// the open connections to close when a cut comes.
#[derive(Clone, Default)]
pub struct Links(Arc<Mutex<LinkState>>, Arc<ByteCounts>);

/// Bytes written and read on the streams of every connection admitted by one [`Links`]
/// (application bytes: inside Noise and Yamux, whose framing is not counted).
#[derive(Default)]
struct ByteCounts {
    written: AtomicU64,
    read: AtomicU64,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Links")
    }
}

#[derive(Default)]
struct LinkState {
    /// The two sides of the cut in force (empty: none).
    side_a: HashSet<PeerId>,
    side_b: HashSet<PeerId>,
    /// Open connections: (one end, the other end, what closes it), by a connection number.
    open: HashMap<u64, (PeerId, PeerId, CancellationToken)>,
}

impl LinkState {
    fn is_cut(&self, x: &PeerId, y: &PeerId) -> bool {
        (self.side_a.contains(x) && self.side_b.contains(y))
            || (self.side_a.contains(y) && self.side_b.contains(x))
    }
}

/// Numbers connections for [`LinkState::open`].
static NEXT_CONN: AtomicU64 = AtomicU64::new(0);

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts every link between a peer of `a` and a peer of `b` (replacing any earlier cut):
    /// their open connections fail now, new ones are refused until [`Links::heal`].
    pub fn cut(&self, a: impl IntoIterator<Item = PeerId>, b: impl IntoIterator<Item = PeerId>) {
        let mut s = self.lock();
        s.side_a = a.into_iter().collect();
        s.side_b = b.into_iter().collect();
        let doomed: Vec<u64> = s
            .open
            .iter()
            .filter(|(_, (x, y, _))| s.is_cut(x, y))
            .map(|(n, _)| *n)
            .collect();
        for n in doomed {
            if let Some((_, _, token)) = s.open.remove(&n) {
                token.cancel();
            }
        }
    }

    /// Lifts the cut: peers may connect again (nothing reconnects by itself).
    pub fn heal(&self) {
        let mut s = self.lock();
        s.side_a.clear();
        s.side_b.clear();
    }

    /// Bytes (written, read) so far by the local ends of the connections these links
    /// admitted, on their streams (protocol negotiation included; Noise and Yamux framing
    /// not). Peers that share links share the count.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.1.written.load(Ordering::Relaxed),
            self.1.read.load(Ordering::Relaxed),
        )
    }

    /// Connections open now between a peer of side A and one of side B of the cut (0 while
    /// a cut holds).
    pub fn open_across_cut(&self) -> usize {
        let s = self.lock();
        s.open.values().filter(|(x, y, _)| s.is_cut(x, y)).count()
    }

    /// Admits a connection between `local` and `remote` unless their link is cut; the
    /// returned muxer fails when a later cut separates them.
    fn admit(
        &self,
        local: PeerId,
        remote: PeerId,
        muxer: StreamMuxerBox,
    ) -> Result<CutMuxer, io::Error> {
        let mut s = self.lock();
        if s.is_cut(&local, &remote) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "link cut by the simulation",
            ));
        }
        let n = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        s.open.insert(n, (local, remote, token.clone()));
        Ok(CutMuxer {
            inner: muxer,
            cut: Box::pin(token.cancelled_owned()),
            links: self.clone(),
            n,
        })
    }
}

/// A connection's muxer that fails once its link is cut.
struct CutMuxer {
    inner: StreamMuxerBox,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    links: Links,
    n: u64,
}

impl CutMuxer {
    fn check(&mut self, cx: &mut Context<'_>) -> Result<(), io::Error> {
        match self.cut.poll_unpin(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "link cut by the simulation",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Drop for CutMuxer {
    fn drop(&mut self) {
        self.links.lock().open.remove(&self.n);
    }
}

impl StreamMuxer for CutMuxer {
    type Substream = SubstreamBox;
    type Error = io::Error;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.check(cx)?;
        let counts = self.links.1.clone();
        Pin::new(&mut self.inner)
            .poll_inbound(cx)
            .map_ok(|s| SubstreamBox::new(Counted { inner: s, counts }))
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.check(cx)?;
        let counts = self.links.1.clone();
        Pin::new(&mut self.inner)
            .poll_outbound(cx)
            .map_ok(|s| SubstreamBox::new(Counted { inner: s, counts }))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// A stream that adds what passes through it to its links' [`ByteCounts`].
struct Counted {
    inner: SubstreamBox,
    counts: Arc<ByteCounts>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.counts.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A `MemoryTransport` that gives its listening ports back when dropped (see the module doc).
#[derive(Default)]
struct Listeners {
    inner: MemoryTransport,
    ids: Vec<ListenerId>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.ids) {
            self.inner.remove_listener(id);
        }
    }
}

impl libp2p::core::Transport for Listeners {
    type Output = <MemoryTransport as libp2p::core::Transport>::Output;
    type Error = <MemoryTransport as libp2p::core::Transport>::Error;
    type ListenerUpgrade = <MemoryTransport as libp2p::core::Transport>::ListenerUpgrade;
    type Dial = <MemoryTransport as libp2p::core::Transport>::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)?;
        self.ids.push(id);
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.ids.retain(|i| *i != id);
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.inner.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// The memory transport for `key`, upgraded like TCP (multistream-select V1Lazy, Noise,
/// Yamux), each connection admitted by `links`.
pub(super) fn memory(
    key: &identity::Keypair,
    links: Links,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let local = key.public().to_peer_id();
    Ok(Listeners::default()
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .and_then(move |(remote, muxer), _| {
            let admitted = links.admit(local, remote, StreamMuxerBox::new(muxer));
            futures::future::ready(admitted.map(|m| (remote, StreamMuxerBox::new(m))))
        })
        .boxed())
}
