//! The `kith-bootstrap` flags (clap), and how they become a [`Config`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use kith_net::RelayLimits;
use libp2p::Multiaddr;

use crate::{blobs::BlobLimits, mailboxes::Limits, store_peer::StoreConfig, Config};

/// The Kith operator's node: DHT bootstrap, circuit relay, store-and-forward peer.
#[derive(Parser, Debug)]
#[command(
    name = "kith-bootstrap",
    version,
    about,
    after_help = "Example, three store peers on one machine:\n  kith-bootstrap run --data-dir /tmp/s1 --listen /ip4/127.0.0.1/tcp/4001 --store\n  kith-bootstrap run --data-dir /tmp/s2 --listen /ip4/127.0.0.1/tcp/4002 --store --peer /ip4/127.0.0.1/tcp/4001/p2p/<id of s1>\nThen give each `kith run` a `--bootstrap <address printed by a store peer>`."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the peer. Prints each listen address (ending in /p2p/<peer id>) on its own line.
    Run(RunArgs),
    /// Print the peer id of the identity in the data directory (created if missing).
    Id {
        /// Where the identity key lives.
        #[arg(long, env = "KITH_DATA_DIR")]
        data_dir: PathBuf,
    },
}

/// Flags of `kith-bootstrap run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Where the identity key and the mailboxes live.
    #[arg(long, env = "KITH_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/4001")]
    pub listen: Vec<Multiaddr>,
    /// Another bootstrap / store peer to join (repeatable), with /p2p/<peer id>.
    #[arg(long)]
    pub peer: Vec<Multiaddr>,
    /// Be a store-and-forward peer: hold sealed messages and presence for offline users.
    #[arg(long)]
    pub store: bool,
    /// Be a circuit-relay v2 server for peers behind NATs.
    #[arg(long)]
    pub relay: bool,
    /// Serve Prometheus metrics on this address (path /metrics), e.g. 127.0.0.1:9464.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Store peers holding each mailbox (R).
    #[arg(long, default_value_t = StoreConfig::default().replication)]
    pub replication: usize,
    /// Largest envelope accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_envelope_bytes)]
    pub max_envelope_bytes: usize,
    /// Most messages held per mailbox.
    #[arg(long, default_value_t = Limits::default().max_messages_per_mailbox)]
    pub max_messages_per_mailbox: usize,
    /// Most bytes held per mailbox.
    #[arg(long, default_value_t = Limits::default().max_bytes_per_mailbox)]
    pub max_bytes_per_mailbox: u64,
    /// Most deposits one depositor may make per minute.
    #[arg(long, default_value_t = Limits::default().deposits_per_minute)]
    pub deposits_per_minute: u32,
    /// Longest message lifetime accepted (e.g. 30d); expired messages are deleted.
    #[arg(long, default_value = "31d", value_parser = humantime::parse_duration)]
    pub max_lifetime: Duration,
    /// Largest media blob held for a user, in bytes (ciphertext).
    #[arg(long, default_value_t = BlobLimits::default().max_blob_bytes)]
    pub max_blob_bytes: u64,
    /// Most media blob bytes held per mailbox.
    #[arg(long, default_value_t = BlobLimits::default().max_bytes_per_mailbox)]
    pub max_blob_bytes_per_mailbox: u64,
    /// Relay: most reservations at once.
    #[arg(long, default_value_t = RelayLimits::default().max_reservations)]
    pub relay_max_reservations: usize,
    /// Relay: most circuits at once.
    #[arg(long, default_value_t = RelayLimits::default().max_circuits)]
    pub relay_max_circuits: usize,
    /// Relay: longest circuit.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub relay_max_circuit_duration: Duration,
    /// Relay: most bytes per circuit.
    #[arg(long, default_value_t = RelayLimits::default().max_circuit_bytes)]
    pub relay_max_circuit_bytes: u64,
}

impl From<&RunArgs> for Limits {
    fn from(a: &RunArgs) -> Self {
        Limits {
            max_envelope_bytes: a.max_envelope_bytes,
            max_messages_per_mailbox: a.max_messages_per_mailbox,
            max_bytes_per_mailbox: a.max_bytes_per_mailbox,
            deposits_per_minute: a.deposits_per_minute,
            max_lifetime_ms: a.max_lifetime.as_millis() as u64,
        }
    }
}

impl From<&RunArgs> for BlobLimits {
    fn from(a: &RunArgs) -> Self {
        BlobLimits {
            max_blob_bytes: a.max_blob_bytes,
            max_bytes_per_mailbox: a.max_blob_bytes_per_mailbox,
            max_lifetime_ms: a.max_lifetime.as_millis() as u64,
            ..BlobLimits::default()
        }
    }
}

impl From<&RunArgs> for StoreConfig {
    fn from(a: &RunArgs) -> Self {
        StoreConfig {
            limits: a.into(),
            replication: a.replication,
            blobs: a.into(),
            ..StoreConfig::default()
        }
    }
}

impl From<&RunArgs> for RelayLimits {
    fn from(a: &RunArgs) -> Self {
        RelayLimits {
            max_reservations: a.relay_max_reservations,
            max_circuits: a.relay_max_circuits,
            max_circuit_duration: a.relay_max_circuit_duration,
            max_circuit_bytes: a.relay_max_circuit_bytes,
        }
    }
}

impl From<RunArgs> for Config {
    fn from(a: RunArgs) -> Self {
        Config {
            store: a.store.then(|| StoreConfig::from(&a)),
            relay: a.relay.then(|| RelayLimits::from(&a)),
            data_dir: a.data_dir,
            listen: a.listen,
            peers: a.peer,
            metrics: a.metrics,
            ..Config::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let cli = Cli::try_parse_from(
            ["kith-bootstrap", "run", "--data-dir", "/d"]
                .iter()
                .chain(args),
        )
        .unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        a.into()
    }

    #[test]
    fn defaults_match_the_library_defaults() {
        let c = config(&[]);
        assert!(c.store.is_none() && c.relay.is_none() && c.metrics.is_none());
        assert_eq!(
            c.listen,
            vec!["/ip4/0.0.0.0/tcp/4001".parse::<Multiaddr>().unwrap()]
        );
        let c = config(&["--store", "--relay"]);
        let store = c.store.unwrap();
        let lib = StoreConfig::default();
        assert_eq!(store.replication, lib.replication);
        assert_eq!(
            store.limits.max_envelope_bytes,
            lib.limits.max_envelope_bytes
        );
        assert_eq!(store.limits.max_lifetime_ms, 31 * 24 * 3600 * 1000);
        assert_eq!(store.blobs.max_blob_bytes, lib.blobs.max_blob_bytes);
        let relay = c.relay.unwrap();
        assert_eq!(relay.max_circuits, RelayLimits::default().max_circuits);
        assert_eq!(
            relay.max_circuit_duration,
            RelayLimits::default().max_circuit_duration
        );
    }

    #[test]
    fn flags_reach_the_config() {
        let c = config(&[
            "--store",
            "--replication",
            "5",
            "--max-lifetime",
            "2d",
            "--max-blob-bytes",
            "77",
            "--peer",
            "/ip4/127.0.0.1/tcp/1",
        ]);
        let store = c.store.unwrap();
        assert_eq!(store.replication, 5);
        assert_eq!(store.limits.max_lifetime_ms, 2 * 24 * 3600 * 1000);
        assert_eq!(store.blobs.max_lifetime_ms, 2 * 24 * 3600 * 1000);
        assert_eq!(store.blobs.max_blob_bytes, 77);
        assert_eq!(c.peers.len(), 1);
    }
}
