//! Versioned sled databases, which live in `kith-net`; re-exported under the path the node's
//! modules use.

pub use kith_net::versioned::*;
