//! What the operator's peer shows the outside world: the addresses it announces
//! (`--external-addr`, carried by identify, which the DHT learns addresses from; only
//! announced here, never dialled) and `/healthz` on its metrics listener.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use libp2p::{identify, noise, swarm::SwarmEvent, tcp, yamux, Multiaddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for the peer's identify answer.
const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_external_address_is_announced_to_connecting_peers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let external: Multiaddr = "/ip4/203.0.113.7/tcp/4001".parse()?;
    let mut cfg = kith_bootstrap::Config::loopback_store(dir.path().to_path_buf());
    cfg.store = None;
    cfg.external_addrs = vec![external.clone()];
    let peer = kith_bootstrap::start(cfg).await?;

    let mut probe = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            identify::Behaviour::new(identify::Config::new("/kith/probe".into(), key.public()))
        })?
        .build();
    probe.dial(peer.listen_addrs[0].clone())?;
    let info = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let SwarmEvent::Behaviour(identify::Event::Received { info, .. }) =
                probe.select_next_some().await
            {
                return info;
            }
        }
    })
    .await?;
    assert_eq!(info.public_key.to_peer_id(), peer.peer_id);
    assert!(
        info.listen_addrs.contains(&external),
        "{:?}",
        info.listen_addrs
    );
    peer.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn healthz_names_the_running_peer_and_what_it_serves() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = kith_bootstrap::Config::loopback_store(dir.path().to_path_buf());
    cfg.metrics = Some("127.0.0.1:0".parse()?);
    let peer = kith_bootstrap::start(cfg).await?;
    let at = peer.metrics_addr.expect("metrics listener");
    let answer = tokio::time::timeout(TIMEOUT, async {
        let mut c = tokio::net::TcpStream::connect(at).await?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let mut out = String::new();
        c.read_to_string(&mut out).await?;
        anyhow::Ok(out)
    })
    .await??;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body)?;
    assert_eq!(json["status"], "ok");
    assert_eq!(json["peer_id"], peer.peer_id.to_string());
    assert_eq!(json["store"], true);
    assert_eq!(json["relay"], false);
    peer.shutdown().await;
    Ok(())
}
