//! One connection per peer: crossed dials, repeated dials and a relayed connection beside a
//! direct one all end in a single connection, the same one at both ends; a connected peer
//! hears of our new addresses without reconnecting; and the connection caps hold over QUIC.

mod common;

use common::{alice_dialing_bob_through_the_relay, loopback, wait_until, Peer, TCP};
use futures::StreamExt;
use kith_net::{
    swarm::{self, is_relayed},
    Connections, NetConfig, NetEvent, RelayLimits,
};
use libp2p::{identity::Keypair, multiaddr::Protocol, swarm::SwarmEvent, Multiaddr, Swarm};

/// A swarm listening on loopback TCP but not yet running, and its address with `/p2p`.
async fn listening(cfg: &NetConfig) -> (Swarm<swarm::Behaviour>, Multiaddr) {
    let mut swarm = swarm::build_swarm(Keypair::generate_ed25519(), cfg).expect("the swarm builds");
    swarm
        .listen_on(TCP.parse().expect("an address"))
        .expect("listening starts");
    let addr = tokio::time::timeout(common::TIMEOUT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .expect("a bound address");
    let id = *swarm.local_peer_id();
    (swarm, addr.with(Protocol::P2p(id)))
}

/// Waits until `a` and `b` each hold exactly one connection to the other, direct, dialed by
/// one of the two (so both ends kept the same connection) — by the peer with the smaller id
/// when `smaller_dialed`.
async fn one_connection_each_way(a: &Peer, b: &Peer, smaller_dialed: bool, what: &str) {
    wait_until(what, || async {
        let (at_a, at_b) = (a.net.connections(&b.id()), b.net.connections(&a.id()));
        let single = |c: Connections| c.direct == 1 && c.relayed == 0;
        let same = at_a.dialed + at_b.dialed == 1;
        let by_smaller = !smaller_dialed || (at_a.dialed == 1) == (a.id() < b.id());
        (single(at_a) && single(at_b) && same && by_smaller).then_some(())
    })
    .await
}

/// Defect: both ends dial each other and both connections stay open — two sockets per peer
/// on every node, or, if each end closed "its" duplicate by a rule the other does not share,
/// no connection at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossed_dials_end_in_one_connection_both_ends_agree_on() {
    let cfg = loopback(&[]);
    let (swarm_a, addr_a) = listening(&cfg).await;
    let (swarm_b, addr_b) = listening(&cfg).await;
    // Each dials the other as it starts: two connections, one in each direction.
    let a = Peer::spawn(
        swarm_a,
        &NetConfig {
            bootstrap: vec![addr_b],
            ..cfg.clone()
        },
    )
    .await;
    let b = Peer::spawn(
        swarm_b,
        &NetConfig {
            bootstrap: vec![addr_a],
            ..cfg
        },
    )
    .await;
    // The survivor is the one the smaller peer id dialed.
    one_connection_each_way(&a, &b, true, "one connection between a and b").await;
}

/// Defect: a peer that dials twice (a retry racing the first attempt, a bootstrap address
/// listed twice) keeps both connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_dials_end_in_one_connection() {
    let a = Peer::start(loopback(&[TCP])).await;
    let b = Peer::start(NetConfig {
        bootstrap: vec![a.addr("tcp"), a.addr("tcp")],
        ..loopback(&[TCP])
    })
    .await;
    one_connection_each_way(&a, &b, false, "b's two dials to end in one connection").await;
}

/// Defect: after hole punching the relayed connection stays open beside the direct one,
/// holding one of the relay's few circuits (and a socket at each end) for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_connection_replaces_the_relayed_one() {
    let (_relay, alice, bob) = alice_dialing_bob_through_the_relay().await;
    one_connection_each_way(&alice, &bob, false, "the direct connection alone to remain").await;
}

/// Waits for `at` to identify `peer` with a circuit address among its addresses, or without
/// one (`circuit` false).
async fn identified(at: &mut Peer, peer: libp2p::PeerId, circuit: bool) {
    while let Some(ev) = at.events.recv().await {
        if let NetEvent::Identified { peer: p, addrs, .. } = ev {
            if p == peer && addrs.iter().any(is_relayed) == circuit {
                return;
            }
        }
    }
}

/// Defect: a peer that becomes reachable through a relay (or a port mapping) after it
/// connected tells its connected peers only at the next identify round, minutes later — or
/// when they reconnect — so they keep dialing addresses that do not work. (A circuit is both
/// a new listen address and a confirmed external one, so either push passes this; with
/// neither it times out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_listen_address_is_pushed_to_connected_peers() {
    let mut alice = Peer::start(loopback(&[TCP])).await;
    let bob = Peer::start(NetConfig {
        bootstrap: vec![alice.addr("tcp")],
        reserve_on_relays: 1,
        ..loopback(&[TCP])
    })
    .await;
    tokio::time::timeout(common::TIMEOUT, identified(&mut alice, bob.id(), false))
        .await
        .expect("alice identifies bob, who has no circuit address yet");
    // Only now does bob meet a relay (he dials it: a relay that dials us is never used),
    // reserve on it and listen through it.
    let relay = Peer::start(NetConfig {
        relay: Some(RelayLimits::default()),
        ..loopback(&[TCP])
    })
    .await;
    bob.net.dial(relay.id(), vec![relay.addr("tcp")]);
    tokio::time::timeout(common::TIMEOUT, identified(&mut alice, bob.id(), true))
        .await
        .expect("alice learns bob's circuit address while connected");
}

/// Attack: strangers open connection after connection over QUIC, where the caps were only
/// ever tested over TCP (`store_limits`): past `max_established_incoming` a QUIC connection
/// is refused as a TCP one is, and the ones already in stay up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_connections_past_the_cap_are_refused_like_tcp_ones() {
    let target = Peer::start(NetConfig {
        caps: kith_net::ConnectionCaps {
            max_established_incoming: 2,
            ..Default::default()
        },
        ..loopback(&[common::QUIC])
    })
    .await;
    let addr = target.addr("quic-v1");
    let mut strangers = Vec::new();
    for _ in 0..2 {
        let s = Peer::start(loopback(&[common::QUIC])).await;
        s.net.dial(target.id(), vec![addr.clone()]);
        wait_until("a stranger within the cap to connect", || async {
            (target.net.connections(&s.id()).direct == 1).then_some(())
        })
        .await;
        strangers.push(s);
    }
    let mut third = Peer::start(loopback(&[common::QUIC])).await;
    third.net.dial(target.id(), vec![addr]);
    tokio::time::timeout(common::TIMEOUT, async {
        while let Some(ev) = third.events.recv().await {
            if matches!(ev, NetEvent::DialFailed(p) | NetEvent::Disconnected(p) if p == target.id())
            {
                return;
            }
        }
    })
    .await
    .expect("the third stranger's connection is refused");
    assert_eq!(target.net.connections(&third.id()), Connections::default());
    for s in &strangers {
        assert_eq!(
            target.net.connections(&s.id()).direct,
            1,
            "the first two stay"
        );
    }
}
