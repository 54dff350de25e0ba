//! `kith-bootstrap`: parses flags and starts a bootstrap / relay / store peer.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use kith_bootstrap::{blobs::BlobLimits, mailboxes::Limits, run, store_peer::StoreConfig};
use kith_node::net::RelayLimits;
use libp2p::Multiaddr;

/// The Kith operator's node: DHT bootstrap, circuit relay, store-and-forward peer.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Example, three store peers on one machine:\n  kith-bootstrap run --data-dir /tmp/s1 --listen /ip4/127.0.0.1/tcp/4001 --store\n  kith-bootstrap run --data-dir /tmp/s2 --listen /ip4/127.0.0.1/tcp/4002 --store --peer /ip4/127.0.0.1/tcp/4001/p2p/<id of s1>\nThen give each `kith run` a `--bootstrap <address printed by a store peer>`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the peer. Prints each listen address (ending in /p2p/<peer id>) on its own line.
    Run(RunArgs),
    /// Print the peer id of the identity in the data directory (created if missing).
    Id {
        /// Where the identity key lives.
        #[arg(long, env = "KITH_DATA_DIR")]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Where the identity key and the mailboxes live.
    #[arg(long, env = "KITH_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to listen on (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/4001")]
    listen: Vec<Multiaddr>,
    /// Another bootstrap / store peer to join (repeatable), with /p2p/<peer id>.
    #[arg(long)]
    peer: Vec<Multiaddr>,
    /// Be a store-and-forward peer: hold sealed messages and presence for offline users.
    #[arg(long)]
    store: bool,
    /// Be a circuit-relay v2 server for peers behind NATs.
    #[arg(long)]
    relay: bool,
    /// Serve Prometheus metrics on this address (path /metrics), e.g. 127.0.0.1:9464.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Store peers holding each mailbox (R).
    #[arg(long, default_value_t = 3)]
    replication: usize,
    /// Largest envelope accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_envelope_bytes)]
    max_envelope_bytes: usize,
    /// Most messages held per mailbox.
    #[arg(long, default_value_t = Limits::default().max_messages_per_mailbox)]
    max_messages_per_mailbox: usize,
    /// Most bytes held per mailbox.
    #[arg(long, default_value_t = Limits::default().max_bytes_per_mailbox)]
    max_bytes_per_mailbox: u64,
    /// Most deposits one depositor may make per minute.
    #[arg(long, default_value_t = Limits::default().deposits_per_minute)]
    deposits_per_minute: u32,
    /// Longest message lifetime accepted (e.g. 30d); expired messages are deleted.
    #[arg(long, default_value = "31d", value_parser = humantime::parse_duration)]
    max_lifetime: Duration,
    /// Largest media blob held for a user, in bytes (ciphertext).
    #[arg(long, default_value_t = BlobLimits::default().max_blob_bytes)]
    max_blob_bytes: u64,
    /// Most media blob bytes held per mailbox.
    #[arg(long, default_value_t = BlobLimits::default().max_bytes_per_mailbox)]
    max_blob_bytes_per_mailbox: u64,
    /// Relay: most reservations at once.
    #[arg(long, default_value_t = RelayLimits::default().max_reservations)]
    relay_max_reservations: usize,
    /// Relay: most circuits at once.
    #[arg(long, default_value_t = RelayLimits::default().max_circuits)]
    relay_max_circuits: usize,
    /// Relay: longest circuit.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    relay_max_circuit_duration: Duration,
    /// Relay: most bytes per circuit.
    #[arg(long, default_value_t = RelayLimits::default().max_circuit_bytes)]
    relay_max_circuit_bytes: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Id { data_dir } => {
            let key = run::load_or_create_key(&data_dir)?;
            println!("{}", key.public().to_peer_id());
        }
        Command::Run(a) => {
            let cfg = run::Config {
                data_dir: a.data_dir,
                listen: a.listen,
                peers: a.peer,
                store: a.store.then(|| StoreConfig {
                    limits: Limits {
                        max_envelope_bytes: a.max_envelope_bytes,
                        max_messages_per_mailbox: a.max_messages_per_mailbox,
                        max_bytes_per_mailbox: a.max_bytes_per_mailbox,
                        deposits_per_minute: a.deposits_per_minute,
                        max_lifetime_ms: a.max_lifetime.as_millis() as u64,
                    },
                    replication: a.replication,
                    blobs: BlobLimits {
                        max_blob_bytes: a.max_blob_bytes,
                        max_bytes_per_mailbox: a.max_blob_bytes_per_mailbox,
                        max_lifetime_ms: a.max_lifetime.as_millis() as u64,
                        ..BlobLimits::default()
                    },
                    ..StoreConfig::default()
                }),
                relay: a.relay.then_some(RelayLimits {
                    max_reservations: a.relay_max_reservations,
                    max_circuits: a.relay_max_circuits,
                    max_circuit_duration: a.relay_max_circuit_duration,
                    max_circuit_bytes: a.relay_max_circuit_bytes,
                }),
                metrics: a.metrics,
            };
            let running = kith_bootstrap::start(cfg)
                .await
                .context("starting kith-bootstrap")?;
            for addr in &running.listen_addrs {
                println!("{addr}");
            }
            if let Some(m) = running.metrics_addr {
                eprintln!("kith-bootstrap: metrics on http://{m}/metrics");
            }
            shutdown_signal().await;
            running.shutdown().await;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
