//! The DHT probe: a separate peer built from the node's own swarm code looks up users' key
//! bundles through the mesh's Kademlia DHT (what a node does for a contact it knows only by
//! id) and counts the requests each lookup made. Users are Kademlia clients in the
//! simulation, so they are in no routing table: a lookup of a user's peer id could only find
//! the store peers closest to it, while the bundle record each user publishes is found.

use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use kith_node::net::{self, BehaviourEvent, NetConfig};
use kith_protocol::UserId;
use libp2p::{kad, swarm::SwarmEvent, Multiaddr};

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

/// The DHT key under which a node publishes its user's key bundle (as the node's
/// `contacts::bundle_record_key` makes it).
fn bundle_record_key(user: &UserId) -> Vec<u8> {
    let mut key = b"/kith/bundle/".to_vec();
    key.extend_from_slice(&user.to_bytes());
    key
}

/// Looks up the key bundle of each of `targets` through the mesh's DHT from a fresh peer
/// built with the node's own swarm code (`kith_node::net::build_swarm`), bootstrapped from
/// the store peers, and counts the requests each lookup made.
pub(super) async fn dht_probe(
    bootstrap: &[Multiaddr],
    targets: &[UserId],
    transport: &kith_net::Transport,
) -> Result<DhtStats> {
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
    let listen = if transport.is_memory() {
        kith_net::memory_any_port()
    } else {
        "/ip4/127.0.0.1/tcp/0".parse()?
    };
    let cfg = NetConfig {
        transport: transport.clone(),
        listen: vec![listen],
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
        let query = swarm
            .behaviour_mut()
            .kad
            .get_record(kad::RecordKey::new(&bundle_record_key(target)));
        let mut found = false;
        let outcome = tokio::time::timeout(LOOKUP_TIMEOUT, async {
            loop {
                let ev = swarm.select_next_some().await;
                if let SwarmEvent::Behaviour(BehaviourEvent::Kad(
                    kad::Event::OutboundQueryProgressed {
                        id,
                        result: kad::QueryResult::GetRecord(result),
                        stats,
                        step,
                    },
                )) = ev
                {
                    if id != query {
                        continue;
                    }
                    found |= matches!(result, Ok(kad::GetRecordOk::FoundRecord(_)));
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
