//! `kith-bootstrap`: the operator's node. It bootstraps the DHT (Kademlia in server mode on
//! `/kith/kad/1.0.0`, identify, ping), can relay circuits (libp2p circuit-relay v2), and can be
//! a store-and-forward peer that holds sealed envelopes and presence records for offline users
//! (`/kith/mailbox/1`).
//!
//! The peer itself is [`kith_node::operator`] (so that `kith demo` and the simulation harness
//! run store peers in-process beside users' nodes without a dependency cycle); this crate is
//! its command line, and re-exports it under the names operators and tests use.

pub use kith_node::operator::{
    blobs, mailboxes, metrics, start, store_peer, Config, RunError, Running,
};

/// Starting and stopping the peer.
pub mod run {
    pub use kith_node::operator::{load_or_create_key, start, Config, RunError, Running, KEY_FILE};
}
