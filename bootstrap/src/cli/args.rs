//! The `kith-bootstrap` flags (clap). `run`'s settings are one struct that clap fills from
//! flags and `KITH_*` variables and serde fills from the config file (with the parsers of
//! the file's values below), so a setting is named once; every field is optional here and
//! gets its default only when the layers are merged (`cli::settings`).

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{builder::BoolishValueParser, Parser, Subcommand};
use libp2p::Multiaddr;
use serde::{de, Deserialize, Deserializer};

use crate::logging::LogFormat;

/// The Kith operator's node: DHT bootstrap, circuit relay, store-and-forward peer.
#[derive(Parser, Debug)]
#[command(
    name = "kith-bootstrap",
    version,
    about,
    after_help = "Every `run` flag can also be set by a KITH_* environment variable (shown with \
each flag) or a key of the --config file (the flag's name without `--`); a flag beats its \
variable, which beats the file; what none of them sets takes the default of \
docs/operators.md.\n\nExample, three store peers on one machine:\n  kith-bootstrap run --data-dir /tmp/s1 --listen /ip4/127.0.0.1/tcp/4001 --store\n  kith-bootstrap run --data-dir /tmp/s2 --listen /ip4/127.0.0.1/tcp/4002 --store --peer /ip4/127.0.0.1/tcp/4001/p2p/<id of s1>\nThen give each `kith run` a `--bootstrap <address printed by a store peer>`."
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
    /// (Boxed: its many flags make it far larger than the other commands.)
    Run(Box<RunArgs>),
    /// Print the configuration `run` would use with these settings (flags, variables and the
    /// config file merged) and exit; refuses what `run` would refuse.
    CheckConfig(Box<RunArgs>),
    /// Print the peer id of the identity in the data directory (created if missing).
    Id {
        /// Where the identity key lives.
        #[arg(long, env = "KITH_DATA_DIR")]
        data_dir: PathBuf,
    },
}

/// Settings of `kith-bootstrap run`: flags, `KITH_*` variables, or keys of the config file
/// (kebab-case, as the flags). `None` means "not given here".
#[derive(clap::Args, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunArgs {
    /// A TOML file of settings (keys as the flags without `--`, e.g. `data-dir = "/var/lib/kith"`);
    /// unknown keys are refused.
    #[arg(long, env = "KITH_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where the identity key and the mailboxes live (required).
    #[arg(long, env = "KITH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (repeatable; comma-separated in the variable)
    /// [default: /ip4/0.0.0.0/tcp/4001 and /ip4/0.0.0.0/udp/4001/quic-v1].
    #[arg(long, env = "KITH_LISTEN", value_delimiter = ',')]
    #[serde(default, deserialize_with = "multiaddrs")]
    pub listen: Option<Vec<Multiaddr>>,
    /// Address this peer announces to others (repeatable; comma-separated in the variable),
    /// e.g. its public /dns4/kith.example.org/tcp/4001 or /ip4/203.0.113.7/tcp/4001 when it
    /// listens behind NAT or on 0.0.0.0: what identify and the DHT hand out.
    #[arg(long, env = "KITH_EXTERNAL_ADDR", value_delimiter = ',')]
    #[serde(default, deserialize_with = "multiaddrs")]
    pub external_addr: Option<Vec<Multiaddr>>,
    /// Another bootstrap / store peer to join (repeatable), with /p2p/<peer id>.
    #[arg(long, env = "KITH_PEER", value_delimiter = ',')]
    #[serde(default, deserialize_with = "multiaddrs")]
    pub peer: Option<Vec<Multiaddr>>,
    /// Be a store-and-forward peer: hold sealed messages and presence for offline users.
    #[arg(long, env = "KITH_STORE", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub store: Option<bool>,
    /// Be a circuit-relay v2 server for peers behind NATs.
    #[arg(long, env = "KITH_RELAY", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub relay: Option<bool>,
    /// Log lines as `text` (coloured only on a terminal) or `json` (one object per line);
    /// RUST_LOG filters either [default: text].
    #[arg(long, env = "KITH_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve Prometheus metrics on this address (path /metrics), e.g. 127.0.0.1:9464.
    #[arg(long, env = "KITH_METRICS")]
    pub metrics: Option<SocketAddr>,
    /// Store peers holding each mailbox (R).
    #[arg(long, env = "KITH_REPLICATION")]
    pub replication: Option<usize>,
    /// Largest envelope accepted, in bytes.
    #[arg(long, env = "KITH_MAX_ENVELOPE_BYTES")]
    pub max_envelope_bytes: Option<usize>,
    /// Most messages held per mailbox.
    #[arg(long, env = "KITH_MAX_MESSAGES_PER_MAILBOX")]
    pub max_messages_per_mailbox: Option<usize>,
    /// Most bytes held per mailbox.
    #[arg(long, env = "KITH_MAX_BYTES_PER_MAILBOX")]
    pub max_bytes_per_mailbox: Option<u64>,
    /// Most deposits one depositor may make per minute.
    #[arg(long, env = "KITH_DEPOSITS_PER_MINUTE")]
    pub deposits_per_minute: Option<u32>,
    /// Most deposits per minute from one IP address, whatever peer ids it uses.
    #[arg(long, env = "KITH_DEPOSITS_PER_IP_PER_MINUTE")]
    pub deposits_per_ip_per_minute: Option<u32>,
    /// Most bytes this store peer holds on disk, envelopes and media blobs together; past it
    /// deposits are refused (StoreFull) and uploads stop (QuotaExceeded).
    #[arg(long, env = "KITH_MAX_STORE_BYTES")]
    pub max_store_bytes: Option<u64>,
    /// Most memory the mailbox database caches, in MiB (sled's page cache): what bounds the
    /// store peer's memory however much it holds on disk.
    #[arg(long, env = "KITH_STORE_CACHE_MIB")]
    pub store_cache_mib: Option<u64>,
    /// Most inbound connections at once.
    #[arg(long, env = "KITH_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Most connections at once with one peer.
    #[arg(long, env = "KITH_MAX_CONNECTIONS_PER_PEER")]
    pub max_connections_per_peer: Option<u32>,
    /// Longest message lifetime accepted (e.g. 30d); expired messages are deleted.
    #[arg(long, env = "KITH_MAX_LIFETIME", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub max_lifetime: Option<Duration>,
    /// Largest media blob held for a user, in bytes (ciphertext).
    #[arg(long, env = "KITH_MAX_BLOB_BYTES")]
    pub max_blob_bytes: Option<u64>,
    /// Most media blob bytes held per mailbox.
    #[arg(long, env = "KITH_MAX_BLOB_BYTES_PER_MAILBOX")]
    pub max_blob_bytes_per_mailbox: Option<u64>,
    /// Relay: most reservations at once.
    #[arg(long, env = "KITH_RELAY_MAX_RESERVATIONS")]
    pub relay_max_reservations: Option<usize>,
    /// Relay: most circuits at once.
    #[arg(long, env = "KITH_RELAY_MAX_CIRCUITS")]
    pub relay_max_circuits: Option<usize>,
    /// Relay: longest circuit (e.g. 2m).
    #[arg(long, env = "KITH_RELAY_MAX_CIRCUIT_DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub relay_max_circuit_duration: Option<Duration>,
    /// Relay: most bytes per circuit.
    #[arg(long, env = "KITH_RELAY_MAX_CIRCUIT_BYTES")]
    pub relay_max_circuit_bytes: Option<u64>,
    /// Relay: most circuits one peer takes part in at once.
    #[arg(long, env = "KITH_RELAY_MAX_CIRCUITS_PER_PEER")]
    pub relay_max_circuits_per_peer: Option<usize>,
    /// Relay: circuits one peer may open per minute (also the burst).
    #[arg(long, env = "KITH_RELAY_CIRCUITS_PER_PEER_PER_MINUTE")]
    pub relay_circuits_per_peer_per_minute: Option<u32>,
    /// Relay: circuits one IP address may open per minute (also the burst).
    #[arg(long, env = "KITH_RELAY_CIRCUITS_PER_IP_PER_MINUTE")]
    pub relay_circuits_per_ip_per_minute: Option<u32>,
}

/// A list of multiaddrs written as strings (libp2p's serde support is not compiled in).
fn multiaddrs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Multiaddr>>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|e| de::Error::custom(Invalid("multiaddr", t, e)))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// A duration written as humans do ("31d", "2m 30s").
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| de::Error::custom(Invalid("duration", &text, e)))
}

/// A value of the config file that does not parse as what its key needs.
struct Invalid<'a, E>(&'static str, &'a str, E);

impl<E: fmt::Display> fmt::Display for Invalid<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a {}: {}", self.1, self.0, self.2)
    }
}
