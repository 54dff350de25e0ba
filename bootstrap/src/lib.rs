//! `kith-bootstrap`: the operator's peer. It bootstraps the DHT (Kademlia in server mode on
//! `/kith/kad/1.0.0`, identify, ping), can relay circuits (libp2p circuit-relay v2), and can
//! be a store-and-forward peer that holds sealed envelopes, media blobs and presence records
//! for offline users (`/kith/mailbox/1`, `/kith/media/1`).
//!
//! It is built on `kith-net` and `kith-protocol` only: it never depends on the desktop node
//! (`kith-node` depends on it, for `kith demo` and the in-process mesh) and never sees a
//! message's plaintext.
//!
//! - [`config`]: the one [`Config`].
//! - [`run`]: [`start`] and [`Running`] (every task it starts, ended on shutdown).
//! - [`store_peer`]: the `/kith/mailbox/1` service, presence, replication repair.
//! - [`mailboxes`]: sled storage of mailboxes, quotas, expiry, tombstones.
//! - [`registrations`]: which mailboxes this peer holds (their owners' signed registrations).
//! - [`blobs`]: media blobs held for offline users, on `/kith/media/1`.
//! - [`budget`]: the store peer's disk cap, shared by mailboxes and blobs.
//! - [`rates`]: rate limits per peer id and per IP address.
//! - [`format`]: the store peer database's format version and migrations.
//! - [`metrics`]: Prometheus counters and gauges, and their exposition.
//! - [`health`]: what `/healthz` reports (running, or shutting down).
//! - [`http`]: the operator's HTTP listener, `/metrics` and `/healthz`.
//! - [`logging`]: the binary's log lines (text or JSON, colour only on a terminal).
//! - [`cli`]: the `kith-bootstrap` command line (flags → [`Config`], commands).

pub mod blobs;
pub mod budget;
pub mod cli;
pub mod config;
pub mod format;
pub mod health;
pub mod http;
pub mod logging;
pub mod mailboxes;
pub mod metrics;
pub mod rates;
pub mod registrations;
pub mod run;
pub mod store_peer;

pub use config::Config;
pub use run::{load_or_create_key, start, RunError, Running, KEY_FILE};
