//! NAT traversal pieces on loopback: a peer reserves on a relay it meets and becomes
//! reachable through it; a relayed connection is upgraded to a direct one by hole punching;
//! the gate refuses relayed strangers; QUIC and DNS names dial. (Real NATs are the NAT lab's
//! business: `scripts/nat-lab.sh`.)

mod common;

use std::sync::Arc;

use common::{
    alice_dialing_bob_through_the_relay, loopback, relay_and_reserved_bob, wait_until, Peer, QUIC,
    TCP, TIMEOUT,
};
use kith_net::{swarm::is_relayed, NetConfig, NetEvent, RelayedFilter, Route};
use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_peer_is_reached_through_the_relay_and_hole_punching_makes_it_direct() {
    let (_relay, alice, bob) = alice_dialing_bob_through_the_relay().await;
    let first = wait_until("alice to connect to bob", || async {
        Some(alice.net.route(&bob.id())).filter(|r| *r != Route::None)
    })
    .await;
    assert!(
        matches!(first, Route::Relayed | Route::Direct),
        "first route {first:?}"
    );
    wait_until("hole punching to open a direct connection", || async {
        (alice.net.route(&bob.id()) == Route::Direct).then_some(())
    })
    .await;
    assert_eq!(bob.net.route(&alice.id()), Route::Direct);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_is_refused_through_the_relay_and_gets_no_dial_back() {
    // Attack: a stranger connects through a relay so that hole punching makes bob dial it.
    let nobody = RelayedFilter(Arc::new(|_: &PeerId| false));
    let (_relay, mut bob, circuit) = relay_and_reserved_bob(Some(nobody)).await;
    let mut stranger = Peer::start(NetConfig {
        hole_punching: true,
        ..loopback(&[TCP])
    })
    .await;
    stranger.net.dial(bob.id(), vec![circuit]);
    // The stranger's side may count the connection as up until bob's refusal closes it.
    tokio::time::timeout(TIMEOUT, async {
        while let Some(ev) = stranger.events.recv().await {
            if matches!(ev, NetEvent::DialFailed(p) | NetEvent::Disconnected(p) if p == bob.id()) {
                return;
            }
        }
    })
    .await
    .expect("the stranger's connection attempt ends");
    assert_eq!(bob.net.route(&stranger.id()), Route::None);
    // Bob never connected to the stranger (no hole punching dial towards it).
    while let Ok(ev) = bob.events.try_recv() {
        assert!(
            !matches!(ev, NetEvent::Connected(p) if p == stranger.id()),
            "bob connected to the stranger"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_relay_that_dialed_us_is_never_listened_through() {
    // Attack: a stranger dials bob and offers the relay hop protocol (it runs a real relay),
    // so that bob listens through it: it would see everyone who tries to reach bob, and could
    // drop them. Bob reserves only on relays he chose (configured, or dialed himself).
    let mut bob = Peer::start(NetConfig {
        reserve_on_relays: 2,
        ..loopback(&[TCP])
    })
    .await;
    let stranger = Peer::start(NetConfig {
        relay: Some(kith_net::RelayLimits::default()),
        ..loopback(&[TCP])
    })
    .await;
    stranger.net.dial(bob.id(), vec![bob.addr("tcp")]);
    tokio::time::timeout(TIMEOUT, async {
        while let Some(ev) = bob.events.recv().await {
            // Emitted after the swarm task decided on a reservation.
            if matches!(&ev, NetEvent::Identified { peer, protocols, .. }
                if *peer == stranger.id() && protocols.iter().any(|p| p.contains("relay")))
            {
                return;
            }
        }
    })
    .await
    .expect("bob identifies the stranger as a relay");
    // A relay bob dials himself is used: the control that relays work here at all.
    let chosen = Peer::start(NetConfig {
        relay: Some(kith_net::RelayLimits::default()),
        ..loopback(&[TCP])
    })
    .await;
    bob.net.dial(chosen.id(), vec![chosen.addr("tcp")]);
    let through = |relay: PeerId| {
        move |a: &Multiaddr| a.iter().any(|p| p == Protocol::P2p(relay)) && is_relayed(a)
    };
    wait_until("bob to listen through the relay he dialed", || async {
        bob.net
            .listen_addrs()
            .into_iter()
            .find(through(chosen.id()))
    })
    .await;
    assert!(
        !bob.net.listen_addrs().iter().any(through(stranger.id())),
        "bob listens through the stranger: {:?}",
        bob.net.listen_addrs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_rate_limits_the_circuits_one_stranger_opens() {
    // Attack: a stranger opens circuit after circuit through an operator's relay (each one a
    // pair of streams the relay carries, to whoever holds a slot there). Past its rate per
    // source peer the relay refuses, and the circuit already open stays up.
    let limits = kith_net::RelayLimits {
        circuits_per_peer_per_minute: 1,
        ..kith_net::RelayLimits::default()
    };
    let (relay, bob, to_bob) = common::relay_with_limits_and_reserved_bob(limits, None).await;
    let carol = Peer::start(NetConfig {
        bootstrap: vec![relay.addr("tcp")],
        reserve_on_relays: 1,
        ..loopback(&[TCP])
    })
    .await;
    let to_carol = wait_until("carol to listen through the relay", || async {
        carol.net.listen_addrs().into_iter().find(is_relayed)
    })
    .await
    .with(Protocol::P2p(carol.id()));
    let mut stranger = Peer::start(loopback(&[TCP])).await;
    stranger.net.dial(bob.id(), vec![to_bob]);
    wait_until("the stranger's first circuit, to bob", || async {
        (stranger.net.route(&bob.id()) == Route::Relayed).then_some(())
    })
    .await;
    // The events so far were not read: drained, the queue has room for the one awaited (a
    // full queue drops events, and the DialFailed was sometimes among them).
    while stranger.events.try_recv().is_ok() {}
    stranger.net.dial(carol.id(), vec![to_carol]);
    tokio::time::timeout(TIMEOUT, async {
        while let Some(ev) = stranger.events.recv().await {
            if matches!(ev, NetEvent::DialFailed(p) if p == carol.id()) {
                return;
            }
        }
    })
    .await
    .expect("the stranger's second circuit, to carol, is refused");
    assert_eq!(carol.net.route(&stranger.id()), Route::None);
    assert_eq!(
        stranger.net.route(&bob.id()),
        Route::Relayed,
        "the first stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_connect_over_quic_alone_and_by_dns_name() {
    let bob = Peer::start(loopback(&[QUIC, TCP])).await;
    let alice = Peer::start(loopback(&[QUIC])).await;
    alice.net.dial(bob.id(), vec![bob.addr("quic-v1")]);
    wait_until("alice to connect over QUIC", || async {
        (alice.net.route(&bob.id()) == Route::Direct).then_some(())
    })
    .await;

    // `localhost` comes from /etc/hosts: no resolver outside this machine is asked.
    let port = bob
        .addr("tcp")
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a tcp port");
    let by_name: Multiaddr = format!("/dns4/localhost/tcp/{port}/p2p/{}", bob.id())
        .parse()
        .expect("a dns address");
    let carol = Peer::start(NetConfig {
        bootstrap: vec![by_name],
        ..loopback(&[TCP])
    })
    .await;
    wait_until("carol to reach her bootstrap peer by name", || async {
        (carol.net.route(&bob.id()) == Route::Direct).then_some(())
    })
    .await;
}
