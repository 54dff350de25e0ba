//! `kith-net`: the libp2p and sled binding Kith's two node kinds share — the desktop node
//! (`kith-node`) and the operator's peer (`kith-bootstrap`).
//!
//! It owns how bytes move and land, never what they mean: no message, mailbox or media logic
//! lives here, and nothing here depends on either node crate.
//!
//! - [`swarm`]: behaviour and swarm construction, the swarm task and its [`Network`] handle.
//! - [`protocols`]: the protocol ids, built from `kith-protocol`'s names.
//! - [`frames`]: framed stream I/O — the [`frames::FrameReader`] and the batched writer.
//! - [`accept`]: the one bounded accept loop for inbound streams.
//! - [`outbound`]: long-lived outbound stream links.
//! - [`commit`]: the group committer over sled, and "commit, then answer".
//! - [`versioned`]: format versions, migrations and quarantine of sled databases.
//! - [`private_file`]: secret files (keys, tokens), key-file load-or-create, fs syncing.
//! - [`tasks`]: a running node's or peer's tasks, stopped completely.
//! - [`backoff`] and [`clock`]: retry delays and time.

pub mod accept;
pub mod backoff;
pub mod clock;
pub mod commit;
pub mod frames;
pub mod outbound;
pub mod private_file;
pub mod protocols;
pub mod swarm;
pub mod tasks;
pub mod versioned;

pub use backoff::Backoff;
pub use clock::now_ms;
pub use commit::Committer;
pub use swarm::{
    closest_peers, memory_any_port, peer_of, AutonatRole, ConnectionCaps, Connections, KadMode,
    KadTotals, Links, NetConfig, NetError, NetEvent, Network, RelayLimits, RelayedFilter, Route,
    Transport,
};
