//! The operator's peer configuration: one [`Config`], whose [`Default`] runs on a laptop (a
//! store peer on loopback, an ephemeral port, data in `./kith-bootstrap`). The binary builds
//! it from its flags (`cli`); tests and meshes start from [`Config::loopback_store`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use kith_net::{ConnectionCaps, RelayLimits, Transport};
use libp2p::Multiaddr;

use crate::store_peer::StoreConfig;

/// How long an idle connection to the operator's peer stays open (longer than a user node's:
/// store peers hold subscriptions open for users who rarely speak).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Data directory of [`Config::default`].
pub const DEFAULT_DATA_DIR: &str = "kith-bootstrap";

/// Everything a bootstrap peer needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the identity key and mailboxes live.
    pub data_dir: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Addresses announced to other peers (identify, the DHT) besides the listen addresses:
    /// a peer listening on 0.0.0.0 or behind NAT cannot learn its public address from them.
    pub external_addrs: Vec<Multiaddr>,
    /// Other bootstrap / store peers to connect to (with `/p2p/<id>`).
    pub peers: Vec<Multiaddr>,
    /// Be a store-and-forward peer, with this configuration.
    pub store: Option<StoreConfig>,
    /// Be a circuit relay, with these limits.
    pub relay: Option<RelayLimits>,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
    /// Close a connection idle for this long.
    pub idle_timeout: Duration,
    /// Connection limits (in all, pending, per peer, memory).
    pub connections: ConnectionCaps,
    /// What connections run on: the network, or memory in this process (simulated meshes;
    /// see [`kith_net::Transport`]). The listen addresses must match it.
    pub transport: Transport,
}

/// `/ip4/127.0.0.1/tcp/0`: loopback, any free port.
fn loopback_any_port() -> Multiaddr {
    Multiaddr::empty()
        .with(libp2p::multiaddr::Protocol::Ip4([127, 0, 0, 1].into()))
        .with(libp2p::multiaddr::Protocol::Tcp(0))
}

impl Default for Config {
    fn default() -> Self {
        Config::loopback_store(PathBuf::from(DEFAULT_DATA_DIR))
    }
}

impl Config {
    /// A loopback configuration (tests, local meshes): a store peer with default limits.
    pub fn loopback_store(data_dir: PathBuf) -> Self {
        Config {
            data_dir,
            listen: vec![loopback_any_port()],
            external_addrs: Vec::new(),
            peers: Vec::new(),
            store: Some(StoreConfig::default()),
            relay: None,
            metrics: None,
            idle_timeout: IDLE_TIMEOUT,
            connections: ConnectionCaps::default(),
            transport: Transport::Network,
        }
    }
}
