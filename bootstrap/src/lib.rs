//! `kith-bootstrap`: the operator's node. It bootstraps the DHT (Kademlia in server mode on
//! `/kith/kad/1.0.0`, identify, ping), can relay circuits (libp2p circuit-relay v2), and can be
//! a store-and-forward peer that holds sealed envelopes and presence records for offline users
//! (`/kith/mailbox/1`).
//!
//! # Layout
//! - [`mailboxes`]: sled storage of mailboxes, quotas, expiry, tombstones.
//! - [`store_peer`]: the mailbox protocol service, presence and replication repair.
//! - [`metrics`]: Prometheus counters on `/metrics`.
//! - [`run`]: [`run::start`] wires the shared networking of `kith-node` to these.

pub mod mailboxes;
pub mod metrics;
pub mod run;
pub mod store_peer;

pub use run::{start, Config, RunError, Running};
