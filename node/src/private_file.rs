//! Secrets on disk, which live in `kith-net`; re-exported under the path the node's modules
//! use.

pub use kith_net::private_file::*;
