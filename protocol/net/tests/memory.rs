//! The in-process memory transport: peers connect over `/memory/<n>` with the same Noise +
//! Yamux upgrade as over TCP; a cut of the links between two sets closes their connections
//! and refuses new ones until it heals; and a peer's port is free again once it stops, so it
//! can come back on the same address.

mod common;

use common::{wait_until, Peer, TIMEOUT};
use kith_net::{memory_any_port, KadMode, Links, NetConfig, NetEvent, Transport};
use libp2p::PeerId;

fn memory(links: &Links) -> NetConfig {
    NetConfig {
        transport: Transport::Memory(links.clone()),
        listen: vec![memory_any_port()],
        kad_mode: KadMode::Server,
        ..NetConfig::default()
    }
}

/// Waits for `event` about `peer` on `p`'s events, skipping others.
async fn wait_event(p: &mut Peer, what: &str, want: impl Fn(&NetEvent) -> bool) {
    let found = tokio::time::timeout(TIMEOUT, async {
        while let Some(ev) = p.events.recv().await {
            if want(&ev) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(found, Ok(true)), "timed out waiting for {what}");
}

fn connected_to(peer: PeerId) -> impl Fn(&NetEvent) -> bool {
    move |ev| matches!(ev, NetEvent::Connected(p) if *p == peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_closes_the_link_refuses_redials_and_heals() {
    let links = Links::default();
    let mut a = Peer::start(memory(&links)).await;
    let b = Peer::start(memory(&links)).await;
    let b_addrs = b.net.listen_addrs();
    assert!(
        b_addrs.iter().all(|a| a
            .iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::Memory(_)))),
        "a memory peer listens on /memory addresses: {b_addrs:?}"
    );
    a.net.dial(b.id(), b_addrs.clone());
    wait_event(&mut a, "a connects to b", connected_to(b.id())).await;

    links.cut([a.id()], [b.id()]);
    let b_id = b.id();
    wait_event(
        &mut a,
        "the cut closes the connection",
        move |ev| matches!(ev, NetEvent::Disconnected(p) if *p == b_id),
    )
    .await;
    a.net.dial(b.id(), b_addrs.clone());
    wait_event(
        &mut a,
        "a redial across the cut fails",
        move |ev| matches!(ev, NetEvent::DialFailed(p) if *p == b_id),
    )
    .await;
    assert_eq!(links.open_across_cut(), 0);

    links.heal();
    a.net.dial(b.id(), b_addrs);
    wait_event(&mut a, "a reconnects after the heal", connected_to(b.id())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_peer_comes_back_on_its_memory_address() {
    let links = Links::default();
    let mut a = Peer::start(memory(&links)).await;
    let key = libp2p::identity::Keypair::generate_ed25519();
    let id = key.public().to_peer_id();
    let cfg = memory(&links);
    let swarm = kith_net::swarm::build_swarm(key.clone(), &cfg).expect("the swarm builds");
    let b = Peer::spawn(swarm, &cfg).await;
    let addrs = b.net.listen_addrs();
    a.net.dial(id, addrs.clone());
    wait_event(&mut a, "a connects to b", connected_to(id)).await;
    drop(b);

    // Same key, same address: the port was given back when the first swarm dropped (which
    // happens on the swarm task, a moment after the stop).
    let again = NetConfig {
        listen: addrs.clone(),
        ..memory(&links)
    };
    let b = wait_until("b listens on its old address again", || {
        let (key, again) = (key.clone(), again.clone());
        async move {
            let swarm = kith_net::swarm::build_swarm(key, &again).ok()?;
            let cancel = tokio_util::sync::CancellationToken::new();
            let started = kith_net::swarm::spawn(swarm, &again, cancel.clone()).await;
            started.ok().map(|s| (s, cancel.drop_guard()))
        }
    })
    .await;
    assert_eq!(b.0 .0.listen_addrs(), addrs);
    a.net.dial(id, addrs);
    wait_event(&mut a, "a reconnects to b", connected_to(id)).await;
}
