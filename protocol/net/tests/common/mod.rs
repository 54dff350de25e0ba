//! Helpers shared by kith-net's integration tests: a running swarm on loopback, waiting with
//! a timeout, and a relay with a peer reserved on it.
#![allow(dead_code, missing_docs)]

use std::{future::Future, time::Duration};

use kith_net::{
    swarm::{self, is_relayed, Behaviour},
    KadMode, NetConfig, NetEvent, Network, RelayLimits, RelayedFilter,
};
use libp2p::{identity::Keypair, multiaddr::Protocol, Multiaddr, PeerId, Swarm};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Longest any wait here takes.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A running swarm: its handle, events and the token stopping it.
pub struct Peer {
    pub net: Network,
    pub events: mpsc::Receiver<NetEvent>,
    _stop: tokio_util::sync::DropGuard,
}

impl Peer {
    /// Builds, listens and runs a peer with a fresh identity.
    pub async fn start(cfg: NetConfig) -> Peer {
        let swarm =
            swarm::build_swarm(Keypair::generate_ed25519(), &cfg).expect("the swarm builds");
        Peer::spawn(swarm, &cfg).await
    }

    /// Runs a swarm built (and maybe listening) already.
    pub async fn spawn(swarm: Swarm<Behaviour>, cfg: &NetConfig) -> Peer {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let cancel = CancellationToken::new();
        let (net, events, _task) = swarm::spawn(swarm, cfg, cancel.clone())
            .await
            .expect("the swarm starts");
        Peer {
            net,
            events,
            _stop: cancel.drop_guard(),
        }
    }

    pub fn id(&self) -> PeerId {
        self.net.local_peer_id()
    }

    /// Its first listen address of `kind` ("tcp" or "quic-v1"), with `/p2p/<id>`.
    pub fn addr(&self, kind: &str) -> Multiaddr {
        self.net
            .listen_addrs()
            .into_iter()
            .find(|a| {
                !is_relayed(a)
                    && a.iter().any(|p| {
                        matches!(
                            (p, kind),
                            (Protocol::Tcp(_), "tcp") | (Protocol::QuicV1, "quic-v1")
                        )
                    })
            })
            .expect("a listen address of that kind")
            .with(Protocol::P2p(self.id()))
    }
}

pub fn loopback(listen: &[&str]) -> NetConfig {
    NetConfig {
        close_duplicates: true,
        listen: listen
            .iter()
            .map(|a| a.parse().expect("an address"))
            .collect(),
        kad_mode: KadMode::Server,
        ..NetConfig::default()
    }
}

pub const TCP: &str = "/ip4/127.0.0.1/tcp/0";
pub const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

/// Polls `check` until it gives a value, failing after [`TIMEOUT`] with `what`.
pub async fn wait_until<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let polled = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    polled.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A relay, and `bob`, who met it through bootstrap and listens through it.
pub async fn relay_and_reserved_bob(bob_filter: Option<RelayedFilter>) -> (Peer, Peer, Multiaddr) {
    relay_with_limits_and_reserved_bob(RelayLimits::default(), bob_filter).await
}

/// [`relay_and_reserved_bob`] with a relay of these `limits`.
pub async fn relay_with_limits_and_reserved_bob(
    limits: RelayLimits,
    bob_filter: Option<RelayedFilter>,
) -> (Peer, Peer, Multiaddr) {
    let relay = Peer::start(NetConfig {
        relay: Some(limits),
        ..loopback(&[TCP])
    })
    .await;
    let bob = Peer::start(NetConfig {
        bootstrap: vec![relay.addr("tcp")],
        reserve_on_relays: 1,
        hole_punching: true,
        relayed_filter: bob_filter,
        ..loopback(&[TCP])
    })
    .await;
    let circuit = wait_until("bob to listen through the relay", || async {
        bob.net.listen_addrs().into_iter().find(is_relayed)
    })
    .await;
    let circuit = circuit.with(Protocol::P2p(bob.id()));
    (relay, bob, circuit)
}

/// A relay, `bob` reserved on it (as in [`relay_and_reserved_bob`]), and `alice` with hole
/// punching on, dialing bob by his circuit address alone: relayed first, then hole punching.
/// Returns (relay, alice, bob).
pub async fn alice_dialing_bob_through_the_relay() -> (Peer, Peer, Peer) {
    let (relay, bob, circuit) = relay_and_reserved_bob(None).await;
    let alice = Peer::start(NetConfig {
        hole_punching: true,
        ..loopback(&[TCP])
    })
    .await;
    alice.net.dial(bob.id(), vec![circuit]);
    (relay, alice, bob)
}
