//! Where `run`'s settings come from and how they become a [`Config`]: a flag beats its
//! `KITH_*` variable (clap does both), which beats the config file, which beats the default.
//! The file is read here, once, before anything starts, so a typo in it stops the peer with
//! the key's name instead of running with a default the operator did not mean.

use std::{net::Ipv4Addr, path::PathBuf};

use kith_net::{ConnectionCaps, RelayLimits};
use libp2p::{multiaddr::Protocol, Multiaddr};

use super::args::{Command, RunArgs};
use crate::{
    blobs::BlobLimits, logging::LogFormat, mailboxes::Limits, store_peer::StoreConfig, Config,
};

/// Port listened on when no address is given (on every interface): Kith's conventional port.
pub const DEFAULT_PORT: u16 = 4001;

/// Why `run`'s settings could not be put together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("cannot read the config file {path}")]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has a key no flag has, or a value of the wrong kind.
    #[error("config file {path}")]
    Parse {
        /// The file named by `--config`.
        path: PathBuf,
        /// What is wrong, and where (the key, line and column).
        source: toml::de::Error,
    },
    /// No data directory anywhere: it holds the identity, so it is never guessed.
    #[error("no data directory: give --data-dir, KITH_DATA_DIR or `data-dir` in the config file")]
    NoDataDir,
}

impl Command {
    /// How this command logs (`run`'s setting; text for the others).
    pub fn log_format(&self) -> LogFormat {
        match self {
            Command::Run(a) | Command::CheckConfig(a) => a.log_format.unwrap_or_default(),
            Command::Id { .. } => LogFormat::Text,
        }
    }

    /// This command with its config file read under its flags and variables (see
    /// [`RunArgs::with_file`]).
    pub fn with_file(self) -> Result<Command, SettingsError> {
        Ok(match self {
            Command::Run(a) => Command::Run(Box::new(a.with_file()?)),
            Command::CheckConfig(a) => Command::CheckConfig(Box::new(a.with_file()?)),
            id @ Command::Id { .. } => id,
        })
    }
}

impl RunArgs {
    /// The settings of a config file's text (`path` only names it in errors).
    pub fn from_toml(text: &str, path: PathBuf) -> Result<RunArgs, SettingsError> {
        toml::from_str(text).map_err(|source| SettingsError::Parse { path, source })
    }

    /// These settings (flags and variables) over those of the `--config` file, if any. The
    /// file is read once: the result names none, so calling this again changes nothing.
    pub fn with_file(mut self) -> Result<RunArgs, SettingsError> {
        let Some(path) = self.config.take() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(self.over(RunArgs::from_toml(&text, path)?))
    }

    /// Each setting of `self`, or `below`'s where `self` has none.
    pub fn over(self, below: RunArgs) -> RunArgs {
        /// One `or` per field: a field added to [`RunArgs`] and forgotten here does not compile.
        macro_rules! over {
            ($($field:ident),* $(,)?) => {
                RunArgs { $($field: self.$field.or(below.$field)),* }
            };
        }
        over!(
            config,
            data_dir,
            listen,
            external_addr,
            peer,
            store,
            relay,
            log_format,
            metrics,
            replication,
            max_envelope_bytes,
            max_messages_per_mailbox,
            max_bytes_per_mailbox,
            deposits_per_minute,
            deposits_per_ip_per_minute,
            max_store_bytes,
            store_cache_mib,
            max_connections,
            max_connections_per_peer,
            max_lifetime,
            max_blob_bytes,
            max_blob_bytes_per_mailbox,
            relay_max_reservations,
            relay_max_circuits,
            relay_max_circuit_duration,
            relay_max_circuit_bytes,
            relay_max_circuits_per_peer,
            relay_circuits_per_peer_per_minute,
            relay_circuits_per_ip_per_minute,
        )
    }

    /// The [`Config`] these settings describe, defaults filling what none of them set.
    pub fn into_config(self) -> Result<Config, SettingsError> {
        let a = &self;
        let lifetime_ms = a.max_lifetime.map(|d| d.as_millis() as u64);
        let limits = Limits::default();
        let limits = Limits {
            max_envelope_bytes: a.max_envelope_bytes.unwrap_or(limits.max_envelope_bytes),
            max_messages_per_mailbox: a
                .max_messages_per_mailbox
                .unwrap_or(limits.max_messages_per_mailbox),
            max_bytes_per_mailbox: a
                .max_bytes_per_mailbox
                .unwrap_or(limits.max_bytes_per_mailbox),
            deposits_per_minute: a.deposits_per_minute.unwrap_or(limits.deposits_per_minute),
            deposits_per_ip_per_minute: a
                .deposits_per_ip_per_minute
                .unwrap_or(limits.deposits_per_ip_per_minute),
            max_lifetime_ms: lifetime_ms.unwrap_or(limits.max_lifetime_ms),
            ..limits
        };
        let blobs = BlobLimits::default();
        let blobs = BlobLimits {
            max_blob_bytes: a.max_blob_bytes.unwrap_or(blobs.max_blob_bytes),
            max_bytes_per_mailbox: a
                .max_blob_bytes_per_mailbox
                .unwrap_or(blobs.max_bytes_per_mailbox),
            max_lifetime_ms: lifetime_ms.unwrap_or(blobs.max_lifetime_ms),
            ..blobs
        };
        let store = StoreConfig::default();
        let store = StoreConfig {
            limits,
            blobs,
            replication: a.replication.unwrap_or(store.replication),
            max_store_bytes: a.max_store_bytes.unwrap_or(store.max_store_bytes),
            cache_bytes: a
                .store_cache_mib
                .map_or(store.cache_bytes, |mib| mib.saturating_mul(1024 * 1024)),
            ..store
        };
        let relay = RelayLimits::default();
        let relay = RelayLimits {
            max_reservations: a.relay_max_reservations.unwrap_or(relay.max_reservations),
            max_circuits: a.relay_max_circuits.unwrap_or(relay.max_circuits),
            max_circuit_duration: a
                .relay_max_circuit_duration
                .unwrap_or(relay.max_circuit_duration),
            max_circuit_bytes: a.relay_max_circuit_bytes.unwrap_or(relay.max_circuit_bytes),
            max_circuits_per_peer: a
                .relay_max_circuits_per_peer
                .unwrap_or(relay.max_circuits_per_peer),
            circuits_per_peer_per_minute: a
                .relay_circuits_per_peer_per_minute
                .unwrap_or(relay.circuits_per_peer_per_minute),
            circuits_per_ip_per_minute: a
                .relay_circuits_per_ip_per_minute
                .unwrap_or(relay.circuits_per_ip_per_minute),
        };
        let caps = ConnectionCaps::default();
        let connections = ConnectionCaps {
            max_established_incoming: a.max_connections.unwrap_or(caps.max_established_incoming),
            max_established_per_peer: a
                .max_connections_per_peer
                .unwrap_or(caps.max_established_per_peer),
            ..caps
        };
        // TCP and QUIC (UDP) on the same port number.
        let listen = self.listen.unwrap_or_else(|| {
            let any = Multiaddr::empty().with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED));
            vec![
                any.clone().with(Protocol::Tcp(DEFAULT_PORT)),
                any.with(Protocol::Udp(DEFAULT_PORT)).with(Protocol::QuicV1),
            ]
        });
        Ok(Config {
            data_dir: self.data_dir.ok_or(SettingsError::NoDataDir)?,
            listen,
            external_addrs: self.external_addr.unwrap_or_default(),
            peers: self.peer.unwrap_or_default(),
            store: self.store.unwrap_or(false).then_some(store),
            relay: self.relay.unwrap_or(false).then_some(relay),
            metrics: self.metrics,
            connections,
            ..Config::default()
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(flags: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["kith-bootstrap", "run"].iter().chain(flags)).unwrap();
        let Command::Run(a) = cli.command else {
            panic!("not run")
        };
        *a
    }

    fn config(flags: &[&str]) -> Config {
        args(&[&["--data-dir", "/d"], flags].concat())
            .into_config()
            .unwrap()
    }

    #[test]
    fn defaults_match_the_library_defaults() {
        let c = config(&[]);
        assert!(c.store.is_none() && c.relay.is_none() && c.metrics.is_none());
        assert_eq!(
            c.listen,
            vec![
                "/ip4/0.0.0.0/tcp/4001".parse::<Multiaddr>().unwrap(),
                "/ip4/0.0.0.0/udp/4001/quic-v1"
                    .parse::<Multiaddr>()
                    .unwrap()
            ]
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

    #[test]
    fn flags_beat_the_file_and_the_file_beats_the_defaults() {
        let file = RunArgs::from_toml(
            r#"
            data-dir = "/from/file"
            store = true
            replication = 2
            max-blob-bytes = 10
            max-lifetime = "3d"
            listen = ["/ip4/127.0.0.1/tcp/5000"]
            external-addr = ["/dns4/kith.example.org/tcp/4001"]
            "#,
            PathBuf::from("k.toml"),
        )
        .unwrap();
        let c = args(&["--replication", "4", "--store=false"])
            .over(file)
            .into_config()
            .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert!(
            c.store.is_none(),
            "--store=false beats the file's `store = true`"
        );
        assert_eq!(c.listen[0].to_string(), "/ip4/127.0.0.1/tcp/5000");
        assert_eq!(
            c.external_addrs[0].to_string(),
            "/dns4/kith.example.org/tcp/4001"
        );
        let file = RunArgs::from_toml("replication = 2\nmax-blob-bytes = 10", "k".into()).unwrap();
        let store = args(&["--data-dir", "/d", "--store", "--replication", "4"])
            .over(file)
            .into_config()
            .unwrap()
            .store
            .unwrap();
        assert_eq!(store.replication, 4);
        assert_eq!(store.blobs.max_blob_bytes, 10);
        assert_eq!(
            store.limits.max_messages_per_mailbox,
            Limits::default().max_messages_per_mailbox
        );
    }

    /// The error and its cause, as `main` prints them.
    fn refusal(toml: &str) -> String {
        let err = RunArgs::from_toml(toml, "k.toml".into()).unwrap_err();
        let cause = std::error::Error::source(&err).unwrap();
        format!("{err}: {cause}")
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_in_the_file_is_refused_by_name() {
        let text = refusal("replicaton = 2");
        assert!(
            text.contains("k.toml") && text.contains("replicaton"),
            "{text}"
        );
        let text = refusal("listen = [\"nowhere\"]");
        assert!(
            text.contains("nowhere") && text.contains("multiaddr"),
            "{text}"
        );
        let text = refusal("max-lifetime = \"forever\"");
        assert!(text.contains("forever"), "{text}");
        // `config` is a flag only: a file cannot name another file.
        assert!(RunArgs::from_toml("config = \"/x\"", "k".into()).is_err());
    }

    #[test]
    fn the_data_dir_is_never_guessed() {
        let err = args(&[]).into_config().unwrap_err();
        assert!(matches!(err, SettingsError::NoDataDir), "{err}");
    }

    /// The example operators start from.
    const EXAMPLE: &str = include_str!("../../deploy/kith-bootstrap.toml");

    #[test]
    fn the_example_config_file_parses_and_its_commented_defaults_are_the_defaults() {
        let c = RunArgs::from_toml(EXAMPLE, "example".into())
            .unwrap()
            .into_config()
            .unwrap();
        assert!(c.store.is_some() && c.relay.is_some() && c.metrics.is_some());
        // `# key = value` lines, uncommented, parse too and say the defaults.
        let uncommented: Vec<&str> = EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| is_key(k)) => rest,
                _ => l,
            })
            .collect();
        let c = RunArgs::from_toml(&uncommented.join("\n"), "example".into())
            .unwrap()
            .into_config()
            .unwrap();
        let (store, lib) = (c.store.unwrap(), StoreConfig::default());
        assert_eq!(store.replication, lib.replication);
        let (l, d) = (&store.limits, &lib.limits);
        assert_eq!(
            (
                l.max_envelope_bytes,
                l.max_messages_per_mailbox,
                l.max_bytes_per_mailbox
            ),
            (
                d.max_envelope_bytes,
                d.max_messages_per_mailbox,
                d.max_bytes_per_mailbox
            )
        );
        assert_eq!(
            (
                l.deposits_per_minute,
                l.deposits_per_ip_per_minute,
                l.max_lifetime_ms
            ),
            (
                d.deposits_per_minute,
                d.deposits_per_ip_per_minute,
                d.max_lifetime_ms
            )
        );
        assert_eq!(store.max_store_bytes, lib.max_store_bytes);
        assert_eq!(
            (
                store.blobs.max_blob_bytes,
                store.blobs.max_bytes_per_mailbox
            ),
            (lib.blobs.max_blob_bytes, lib.blobs.max_bytes_per_mailbox)
        );
        let caps = ConnectionCaps::default();
        assert_eq!(
            (
                c.connections.max_established_incoming,
                c.connections.max_established_per_peer
            ),
            (caps.max_established_incoming, caps.max_established_per_peer)
        );
        let (r, rd) = (c.relay.unwrap(), RelayLimits::default());
        assert_eq!(
            (
                r.max_reservations,
                r.max_circuits,
                r.max_circuit_duration,
                r.max_circuit_bytes
            ),
            (
                rd.max_reservations,
                rd.max_circuits,
                rd.max_circuit_duration,
                rd.max_circuit_bytes
            )
        );
        assert_eq!(
            (
                r.max_circuits_per_peer,
                r.circuits_per_peer_per_minute,
                r.circuits_per_ip_per_minute
            ),
            (
                rd.max_circuits_per_peer,
                rd.circuits_per_peer_per_minute,
                rd.circuits_per_ip_per_minute
            )
        );
    }

    /// Whether `k` looks like a settings key (kebab-case).
    fn is_key(k: &str) -> bool {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '-')
    }

    #[test]
    fn the_example_config_file_names_every_flag() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        for long in run.get_arguments().filter_map(|a| a.get_long()) {
            if long == "config" || long == "help" {
                continue;
            }
            assert!(
                EXAMPLE.contains(&format!("{long} = ")),
                "no `{long}` in the example"
            );
        }
    }
}
