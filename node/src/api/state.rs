//! What every API handler is given: the node, the media-link key and the shutdown signal.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::handle::Node;

/// Everything handlers need.
#[derive(Clone)]
pub(crate) struct ApiState {
    /// The node the API drives.
    pub(crate) node: Node,
    /// Key of the media links handed to `<video>` and `<img>` elements (from the token).
    pub(crate) link_key: Arc<[u8; 32]>,
    /// Ends `/v1/events` streams so graceful shutdown does not wait for them forever.
    pub(crate) shutdown: CancellationToken,
}
