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

/// A bare libp2p peer that speaks identify only.
fn probe() -> anyhow::Result<libp2p::Swarm<identify::Behaviour>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            identify::Behaviour::new(identify::Config::new("/kith/probe".into(), key.public()))
        })?
        .build())
}

/// The whole HTTP answer to `GET path` at `at` (the server closes after one request).
async fn get(at: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut c = tokio::net::TcpStream::connect(at).await?;
    c.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    c.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn the_external_address_is_announced_to_connecting_peers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let external: Multiaddr = "/ip4/203.0.113.7/tcp/4001".parse()?;
    let mut cfg = kith_bootstrap::Config::loopback_store(dir.path().to_path_buf());
    cfg.store = None;
    cfg.external_addrs = vec![external.clone()];
    let peer = kith_bootstrap::start(cfg).await?;

    let mut probe = probe()?;
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
    let answer = tokio::time::timeout(TIMEOUT, get(at, "/healthz")).await??;
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

#[tokio::test]
async fn metrics_show_libp2p_series_beside_kiths_own() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = kith_bootstrap::Config::loopback_store(dir.path().to_path_buf());
    cfg.metrics = Some("127.0.0.1:0".parse()?);
    let peer = kith_bootstrap::start(cfg).await?;
    let at = peer.metrics_addr.expect("metrics listener");

    // A peer connects and identifies itself: the swarm and identify series count it.
    let mut probe = probe()?;
    probe.dial(peer.listen_addrs[0].clone())?;
    let counted = |text: &str, series: &str| {
        text.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            > 0.0
    };
    let mut last = String::new();
    let text = tokio::time::timeout(TIMEOUT, async {
        loop {
            tokio::select! {
                _ = probe.select_next_some() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    let text = get(at, "/metrics").await?;
                    last.clone_from(&text);
                    if counted(&text, "libp2p_swarm_connections_established_total")
                        && counted(&text, "libp2p_identify_")
                    {
                        return anyhow::Ok(text);
                    }
                }
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no libp2p series counted in time; the last scrape:\n{last}"))??;
    assert!(text.contains("kith_build_info{"), "{text}");
    assert!(text.contains("libp2p_ping_"), "{text}");
    assert!(text.contains("libp2p_kad_"), "{text}");
    peer.shutdown().await;
    Ok(())
}
