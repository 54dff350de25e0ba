//! What a simulation does: how many peers, how they send, and the schedule of churn,
//! store loss and partition. Plain data; nothing here starts anything.

use std::{path::PathBuf, time::Duration};

/// Who sends to whom.
#[derive(Clone, Debug, PartialEq)]
pub enum SendPattern {
    /// Users are paired at random (one triple if their number is odd); each sends to its
    /// partner.
    Pairs,
    /// As [`SendPattern::Pairs`], but each message goes to one of `hot` users instead with
    /// probability `share` (a hot spot: a few users receive much of the traffic).
    HotSpot {
        /// How many hot users.
        hot: usize,
        /// The fraction of messages sent to a hot user (0.0 ..= 1.0).
        share: f64,
    },
}

/// What the simulated mesh's connections run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimTransport {
    /// libp2p's in-process memory transport (Noise + Yamux as over TCP, no sockets): meshes
    /// of thousands of peers fit in one process, and a partition is a real cut of the links
    /// between its two sides.
    Memory,
    /// Loopback TCP: every connection is two sockets of this process (about 66 per user),
    /// so a few hundred users at most; a partition stops the nodes of each side in turn.
    Tcp,
}

/// A scenario.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Store-and-forward peers (B).
    pub stores: usize,
    /// User nodes (N).
    pub users: usize,
    /// Seeds identities, pairings, hot-spot choices and the churn schedule.
    pub seed: u64,
    /// The users' heartbeat interval.
    pub heartbeat: Duration,
    /// Who sends to whom.
    pub pattern: SendPattern,
    /// Messages each user sends (one per round).
    pub messages_per_sender: usize,
    /// Fraction of users that leave once during the rounds and come back (0.0 ..= 1.0).
    pub churn: f64,
    /// Store peers that crash for the middle third of the rounds and come back.
    pub store_loss: usize,
    /// Fraction of users on side A of a partition that heals (0.0: no partition). Over the
    /// memory transport the links between side A and the other users are cut (both sides
    /// keep running and reach the store peers) from a quarter to three quarters of the
    /// rounds; over TCP the two sides are stopped in turn (see the crate's `sim` doc).
    pub partition: f64,
    /// How many peers start (or are introduced) at once during setup.
    pub parallel_starts: usize,
    /// How many sends run at once within a round.
    pub parallel_sends: usize,
    /// How long setup may wait for every user to be known by its store peers.
    pub ready_timeout: Duration,
    /// How long the end of the run may wait for every message to reach delivered.
    pub settle_timeout: Duration,
    /// How many users the DHT probe looks up (0: no probe).
    pub dht_lookups: usize,
    /// The store peers' repair interval (short, so that a returning store peer is repaired
    /// within a run).
    pub repair_interval: Duration,
    /// What the mesh's connections run on.
    pub transport: SimTransport,
    /// Where the data directories go (a temporary directory, removed after the run, when
    /// `None`).
    pub dir: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            stores: 5,
            users: 20,
            seed: 1,
            // The node's default. Every heartbeat is a signed presence record that each store
            // peer and contact verifies: at 1 s, 20 nodes keep a debug build's CPU busy.
            heartbeat: Duration::from_secs(5),
            pattern: SendPattern::Pairs,
            messages_per_sender: 6,
            churn: 0.0,
            store_loss: 0,
            partition: 0.0,
            parallel_starts: 8,
            parallel_sends: 64,
            ready_timeout: Duration::from_secs(60),
            settle_timeout: Duration::from_secs(60),
            dht_lookups: 10,
            repair_interval: Duration::from_millis(500),
            transport: SimTransport::Memory,
            dir: None,
        }
    }
}
