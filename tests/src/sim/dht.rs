//! The DHT probe: a separate peer built from the node's own swarm code looks up users by id
//! through the mesh's Kademlia DHT and counts the requests each lookup made.

use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use kith_node::net::{self, BehaviourEvent, NetConfig};
use libp2p::{kad, swarm::SwarmEvent, Multiaddr, PeerId};

use crate::measure::mean;

/// What the DHT probe measured.
pub(super) struct DhtStats {
    pub(super) lookups: u64,
    pub(super) found: u64,
    pub(super) requests_mean: f64,
    pub(super) requests_max: u64,
    pub(super) successes_mean: f64,
}

/// Most time one probe lookup may take (kad's own query timeout is 30 s).
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(40);

/// Looks up each of `targets` through the mesh's DHT from a fresh peer built with the node's
/// own swarm code (`kith_node::net::build_swarm`), bootstrapped from the store peers, and
/// counts the requests each lookup made.
pub(super) async fn dht_probe(bootstrap: &[Multiaddr], targets: &[PeerId]) -> Result<DhtStats> {
    let mut stats = DhtStats {
        lookups: 0,
        found: 0,
        requests_mean: 0.0,
        requests_max: 0,
        successes_mean: 0.0,
    };
    if targets.is_empty() {
        return Ok(stats);
    }
    let cfg = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        bootstrap: bootstrap.to_vec(),
        ..NetConfig::default()
    };
    let mut swarm = net::build_swarm(libp2p::identity::Keypair::generate_ed25519(), &cfg)?;
    swarm.listen_on(cfg.listen[0].clone())?;
    for a in bootstrap {
        if let Some(p) = net::peer_of(a) {
            swarm.behaviour_mut().kad.add_address(&p, a.clone());
        }
    }
    let (mut requests, mut successes) = (Vec::new(), Vec::new());
    for target in targets {
        let query = swarm.behaviour_mut().kad.get_closest_peers(*target);
        let mut found = false;
        let outcome = tokio::time::timeout(LOOKUP_TIMEOUT, async {
            loop {
                let ev = swarm.select_next_some().await;
                if let SwarmEvent::Behaviour(BehaviourEvent::Kad(
                    kad::Event::OutboundQueryProgressed {
                        id,
                        result: kad::QueryResult::GetClosestPeers(result),
                        stats,
                        step,
                    },
                )) = ev
                {
                    if id != query {
                        continue;
                    }
                    let peers = match result {
                        Ok(ok) => ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                    found |= peers.iter().any(|p| p.peer_id == *target);
                    if step.last {
                        return (stats.num_requests(), stats.num_successes());
                    }
                }
            }
        })
        .await;
        match outcome {
            Ok((req, ok)) => {
                stats.lookups += 1;
                stats.found += u64::from(found);
                requests.push(u64::from(req));
                successes.push(u64::from(ok));
            }
            Err(_) => tracing::warn!(%target, "simulation: DHT lookup timed out"),
        }
    }
    stats.requests_mean = mean(&requests);
    stats.requests_max = requests.iter().copied().max().unwrap_or(0);
    stats.successes_mean = mean(&successes);
    tracing::info!(
        lookups = stats.lookups,
        found = stats.found,
        requests_mean = stats.requests_mean,
        "simulation: DHT probe done"
    );
    Ok(stats)
}
