//! The node's configuration: one struct, with defaults that work on a laptop.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use libp2p::Multiaddr;

/// Default REST API address.
pub const DEFAULT_API: &str = "127.0.0.1:7878";

/// Default largest media file: room for a 100 MiB video and then some.
pub const DEFAULT_MAX_MEDIA_BYTES: u64 = 256 * 1024 * 1024;

/// Default resolution of the messenger's timers ([`Config::maintenance_tick`]).
pub const DEFAULT_MAINTENANCE_TICK: Duration = Duration::from_secs(1);

/// Default presence heartbeat interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// Default message lifetime: a month to reach its recipient.
pub const DEFAULT_MESSAGE_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Default depth of the command queue between handles and the messenger: room for a burst
/// of API calls without making callers wait.
pub const DEFAULT_COMMAND_QUEUE: usize = 1024;

/// Default depth of a peer link's send queue, in envelopes.
pub const DEFAULT_LINK_QUEUE: usize = 4096;

/// Default most envelopes in flight per peer (the ack window).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

/// Default wait for an acknowledgement before an envelope is sent again.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Default wait for a delivered receipt while the recipient is connected.
pub const DEFAULT_RECEIPT_TIMEOUT: Duration = Duration::from_secs(20);

/// Default first redial delay.
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(250);

/// Default longest redial delay.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Default most concurrent inbound message streams: a link from every other member of the
/// largest group (each member holds one open while it delivers), plus room for the rest.
/// At 256 a creator of a 256-member group refused its members' links, and their receipts
/// waited on redial backoff.
pub const DEFAULT_MAX_INBOUND_STREAMS: usize = kith_protocol::group::MAX_GROUP_MEMBERS + 64;

/// Default number of store peers holding each mailbox (R).
pub const DEFAULT_REPLICATION: usize = 3;

/// Default number of store peers that must hold a deposit (W).
pub const DEFAULT_WRITE_QUORUM: usize = 2;

/// Default wait before a named mailbox store peer that stays unreachable is replaced.
pub const DEFAULT_MAILBOX_RESELECT_AFTER: Duration = Duration::from_secs(600);

/// Default lifetime of the ephemeral identity deposits are made with.
pub const DEFAULT_DEPOSIT_IDENTITY_LIFETIME: Duration = Duration::from_secs(600);
/// Default most pending message requests (strangers who wrote first) kept at once.
pub const DEFAULT_MAX_REQUESTS: usize = 64;

/// Default most unread messages kept from one pending request; later ones are acknowledged
/// and dropped until the user accepts.
pub const DEFAULT_MAX_REQUEST_MESSAGES: usize = 20;

/// Default largest incoming media fetched without asking the user: 100 MiB.
pub const DEFAULT_AUTO_DOWNLOAD_BYTES: u64 = 100 * 1024 * 1024;

/// Default longest a download may go without any holder serving a chunk before it fails.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Default idle timeout: a connection without open streams closes after 30 s. The node's
/// links to contacts and its mailbox subscriptions hold streams, so they stay; a DHT peer,
/// an mDNS neighbour or a stranger met once goes, and so does its socket.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where identity, token and the sled database live.
    pub data_dir: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// REST API address (port 0 picks a free port).
    pub api: SocketAddr,
    /// Allow the API on a non-loopback address.
    pub api_public: bool,
    /// Bootstrap peers (full multiaddrs with `/p2p/<id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// How often to send heartbeats (presence) to connected contacts.
    pub heartbeat: Duration,
    /// How often the messenger checks its timers (ack and receipt timeouts, redials,
    /// presence grace, expiry, refetch): the resolution of every such deadline. Each check
    /// wakes an idle node, so it is coarse by default.
    pub maintenance_tick: Duration,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Share last seen / online with others (if off, the node sees nobody else's either).
    pub share_last_seen: bool,
    /// How long a message may wait for delivery before it expires.
    pub message_lifetime: Duration,
    /// Depth of the command queue between handles and the messenger task.
    pub command_queue: usize,
    /// Depth of each peer link's send queue (envelopes waiting to be written).
    pub link_queue: usize,
    /// Most envelopes in flight (sent, not yet acknowledged) per peer.
    pub max_in_flight: usize,
    /// How long an unacknowledged envelope waits before it is sent again.
    pub ack_timeout: Duration,
    /// How long a message held by its recipient's node or store peers (✓) waits for its
    /// delivered receipt (✓✓) while the recipient is connected before it is sent again
    /// directly, in a fresh session: a ✓ must end in ✓✓ even if the recipient could not open
    /// the copy it got (a session whose first message it never received).
    pub receipt_timeout: Duration,
    /// First redial delay after a failed dial or a lost connection; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest redial delay.
    pub max_backoff: Duration,
    /// Most concurrent inbound message streams.
    pub max_inbound_streams: usize,
    /// Longest wait for a group commit before it flushes anyway (0: flush at once).
    pub commit_delay: Duration,
    /// How many store peers hold each user's mailbox (R).
    pub replication: usize,
    /// How many store peers must hold a deposit before it counts as sent (W).
    pub write_quorum: usize,
    /// Largest media file `POST /v1/media` takes, in bytes.
    pub max_media_bytes: u64,
    /// How long one of our named mailbox store peers may stay unreachable before another
    /// known store peer replaces it (and the new choice is published).
    pub mailbox_reselect_after: Duration,
    /// How long one ephemeral deposit identity is used before a fresh one replaces it (it is
    /// replaced only between deposits, so none is lost).
    pub deposit_identity_lifetime: Duration,
    /// Most pending message requests; a stranger beyond them is acknowledged and dropped.
    pub max_requests: usize,
    /// Most unread messages kept from one pending request.
    pub max_request_messages: usize,
    /// Largest incoming media (from a contact) fetched at once; larger ones wait for the
    /// user (`POST /v1/media/{hash}/download`). Media from non-contacts is never fetched
    /// before the user accepts them.
    pub auto_download_bytes: u64,
    /// Longest a download may go without any holder serving a verified chunk: it then fails
    /// (its slot is freed) and waits for the user to retry.
    pub download_timeout: Duration,
    /// How long a connection with no open stream stays open (libp2p's idle timeout).
    pub idle_timeout: Duration,
    /// How the node gets through NATs and firewalls.
    pub traversal: Traversal,
    /// What the node's connections run on: the network, or memory in this process (large
    /// simulated meshes; see [`kith_net::Transport`]). The listen addresses must match it.
    pub transport: kith_net::Transport,
}

/// How a node behind a NAT stays reachable: relays, hole punching, AutoNAT, port mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traversal {
    /// Reserve a slot on up to this many relays (operators' peers run with `--relay`) while
    /// none of our addresses is confirmed reachable; 0: never.
    pub relays: usize,
    /// Upgrade relayed connections with contacts to direct ones by hole punching (DCUtR).
    pub hole_punching: bool,
    /// Ask operators' peers (AutoNAT v2) whether our addresses are reachable from outside.
    pub autonat: bool,
    /// Ask the local router for a port mapping (UPnP IGD).
    pub upnp: bool,
    /// Answer DHT queries even before an address of ours is confirmed reachable (otherwise the
    /// node is a DHT client until AutoNAT confirms one).
    pub kad_server: bool,
}

impl Default for Traversal {
    /// Everything on, as a laptop behind a home router needs it; a DHT server only once
    /// reachable.
    fn default() -> Self {
        Traversal {
            relays: 2,
            hole_punching: true,
            autonat: true,
            upnp: true,
            kad_server: false,
        }
    }
}

impl Traversal {
    /// For tests and local meshes: nothing that talks to the LAN's router or probes from
    /// outside, and a DHT server at once (nothing on loopback confirms an address).
    pub fn loopback() -> Self {
        Traversal {
            autonat: false,
            upnp: false,
            kad_server: true,
            ..Traversal::default()
        }
    }
}

impl Config {
    /// Defaults for a data directory: listen on all interfaces, API on 127.0.0.1:7878.
    pub fn new(data_dir: PathBuf) -> Self {
        Config {
            data_dir,
            listen: listen_on("0.0.0.0"),
            api: DEFAULT_API
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7878))),
            api_public: false,
            bootstrap: Vec::new(),
            heartbeat: DEFAULT_HEARTBEAT,
            maintenance_tick: DEFAULT_MAINTENANCE_TICK,
            mdns: false,
            share_last_seen: true,
            message_lifetime: DEFAULT_MESSAGE_LIFETIME,
            command_queue: DEFAULT_COMMAND_QUEUE,
            link_queue: DEFAULT_LINK_QUEUE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            receipt_timeout: DEFAULT_RECEIPT_TIMEOUT,
            min_backoff: DEFAULT_MIN_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_inbound_streams: DEFAULT_MAX_INBOUND_STREAMS,
            commit_delay: Duration::ZERO,
            replication: DEFAULT_REPLICATION,
            write_quorum: DEFAULT_WRITE_QUORUM,
            max_media_bytes: DEFAULT_MAX_MEDIA_BYTES,
            mailbox_reselect_after: DEFAULT_MAILBOX_RESELECT_AFTER,
            deposit_identity_lifetime: DEFAULT_DEPOSIT_IDENTITY_LIFETIME,
            max_requests: DEFAULT_MAX_REQUESTS,
            max_request_messages: DEFAULT_MAX_REQUEST_MESSAGES,
            auto_download_bytes: DEFAULT_AUTO_DOWNLOAD_BYTES,
            download_timeout: DEFAULT_DOWNLOAD_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            traversal: Traversal::default(),
            transport: kith_net::Transport::Network,
        }
    }

    /// A configuration for tests and local meshes: loopback only, API on a free port.
    pub fn loopback(data_dir: PathBuf) -> Self {
        Config {
            // TCP only: QUIC in a debug build is slow enough to stretch the media tests many
            // times over; the QUIC path has tests of its own.
            listen: vec!["/ip4/127.0.0.1/tcp/0"
                .parse()
                .unwrap_or_else(|_| Multiaddr::empty())],
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            traversal: Traversal::loopback(),
            // Tests wait on redials and timeouts: a finer resolution keeps them short.
            maintenance_tick: Duration::from_millis(250),
            ..Config::new(data_dir)
        }
    }

    /// The platform's data directory for Kith (e.g. `~/.local/share/kith`).
    pub fn default_data_dir() -> PathBuf {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("kith")
    }
}

/// TCP and QUIC listen addresses on `ip`, free ports.
fn listen_on(ip: &str) -> Vec<Multiaddr> {
    [
        format!("/ip4/{ip}/udp/0/quic-v1"),
        format!("/ip4/{ip}/tcp/0"),
    ]
    .iter()
    .filter_map(|a| a.parse().ok())
    .collect()
}

impl Default for Config {
    /// The laptop defaults of [`Config::new`] in the platform's data directory.
    fn default() -> Self {
        Config::new(Config::default_data_dir())
    }
}
