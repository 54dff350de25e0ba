//! The Kith desktop node: delivers messages straight to contacts' nodes over libp2p, keeps
//! everything in sled, and serves the local REST API.
//!
//! # Layout
//! - [`config`]: the node's configuration.
//! - [`store`]: sled storage (identity, contacts, conversations, outbox, sessions) with group
//!   commit.
//! - [`versioned`], [`net`], [`private_file`]: re-exports of `kith-net` (shared with
//!   `kith-bootstrap`): versioned databases; the swarm task and its [`net::Network`] handle;
//!   secrets on disk.
//! - [`link`]: one long-lived `/kith/msg/1` stream per peer and direction, batched.
//! - [`messenger`]: the task that owns sessions, the outbox and statuses; seals and opens.
//! - [`handle`]: [`Node`], the cloneable handle everything else uses; its views, events and
//!   errors are in [`view`], [`event`] and [`error`], below the store and the messenger.
//! - [`settings`]: the user's settings (profile name, privacy, auto-download) and what
//!   each means.
//! - [`invite`]: invite strings (user id, addresses, key bundle).
//! - [`api`]: the REST API (axum) and its error mapping.
//! - [`web`] (in [`api`]): the web app (embedded assets) and the calls only it needs.
//! - [`client`]: a REST client, used by the CLI.
//! - [`run`]: [`run::start`] and [`run::run`], which wire it all together.
//! - [`mesh`]: a local mesh in one process (store peers from `kith-bootstrap` and users), for
//!   `kith demo` and the simulation harness.

pub mod api;
pub mod backup;
pub mod client;
pub mod config;
pub mod error;
pub mod event;
pub mod handle;
pub mod invite;
pub mod link;
pub mod media;
pub mod mesh;
pub mod messenger;
pub mod net;
pub mod private_file;
pub mod run;
pub mod settings;
pub mod store;
pub mod time;
pub mod transfer;
pub mod versioned;
pub mod view;

pub use api::web;
pub use config::Config;
pub use handle::{Event, Node, NodeError};
pub use run::{run, start, RunError, RunningNode};
