//! A plain libp2p peer — identify, ping and Kademlia only, none of Kith's code — can use a
//! `kith-bootstrap` peer: dial it, identify it, ping it, and run Kademlia queries through it
//! (here: find a Kith user's node that bootstrapped from it).
//!
//! This is what another implementation (js-libp2p, go-libp2p) configured with Kith's
//! Kademlia protocol name `/kith/kad/1.0.0` does; the swarm below is built only from stock
//! rust-libp2p behaviours.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use kith_tests::{TestNode, TIMEOUT};
use libp2p::{
    identify, kad, noise, ping,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, StreamProtocol, SwarmBuilder,
};

#[derive(NetworkBehaviour)]
struct Plain {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_libp2p_peer_can_identify_ping_and_query_a_bootstrap_peer() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = kith_bootstrap::Config::loopback_store(dir.path().join("boot"));
    cfg.store = None;
    let boot = kith_bootstrap::start(cfg).await?;
    let boot_addr: Multiaddr = boot
        .listen_addrs
        .first()
        .cloned()
        .context("bootstrap peer has no address")?;
    let mut target =
        TestNode::start_with("carol", |c| c.bootstrap = vec![boot_addr.clone()]).await?;
    let target_peer = target.user_id().peer_id();

    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let peer = key.public().to_peer_id();
            let kad_cfg = kad::Config::new(StreamProtocol::new("/kith/kad/1.0.0"));
            Plain {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/plain/1.0.0".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(Duration::from_millis(200)),
                ),
                kad: kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), kad_cfg),
            }
        })?
        .build();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    swarm
        .behaviour_mut()
        .kad
        .add_address(&boot.peer_id, boot_addr.clone());
    swarm.dial(boot_addr)?;

    let (mut identified, mut pinged, mut found) = (false, false, false);
    let mut query = None;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !(identified && pinged && found) {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .with_context(|| format!("identified={identified} pinged={pinged} found={found}"))?;
        match event {
            SwarmEvent::Behaviour(PlainEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if peer_id == boot.peer_id => {
                if !info
                    .protocols
                    .iter()
                    .any(|p| p.as_ref() == "/kith/kad/1.0.0")
                {
                    bail!(
                        "bootstrap peer does not announce /kith/kad/1.0.0: {:?}",
                        info.protocols
                    );
                }
                identified = true;
                if query.is_none() {
                    query = Some(swarm.behaviour_mut().kad.get_closest_peers(target_peer));
                }
            }
            SwarmEvent::Behaviour(PlainEvent::Ping(ping::Event {
                peer,
                result: Ok(_),
                ..
            })) if peer == boot.peer_id => {
                pinged = true;
            }
            SwarmEvent::Behaviour(PlainEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetClosestPeers(result),
                step,
                ..
            })) if Some(id) == query => {
                let peers = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                if peers
                    .iter()
                    .any(|p| p.peer_id == target_peer && !p.addrs.is_empty())
                {
                    found = true;
                } else if step.last {
                    // The target may not have reached the bootstrap peer's table yet: ask again.
                    query = Some(swarm.behaviour_mut().kad.get_closest_peers(target_peer));
                }
            }
            _ => {}
        }
    }
    target.shutdown().await?;
    boot.shutdown().await;
    Ok(())
}
