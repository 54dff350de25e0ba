//! The libp2p side, which lives in `kith-net` (shared with `kith-bootstrap`); re-exported
//! under the paths the node's modules use.

pub use kith_net::protocols::{IDENTIFY_VERSION, KAD as KAD_PROTOCOL, MSG as MSG_PROTOCOL};
pub use kith_net::swarm::*;
