//! How a store peer behaves: every quota, rate, lifetime and bound it keeps, with defaults.

use std::time::Duration;

use kith_net::{accept, frames::ReadTimeouts};

use crate::{
    blobs::BlobLimits,
    mailboxes::{Limits, RequestLimits, DEFAULT_CACHE_BYTES},
    rates::Rates,
};

/// How a store peer behaves.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Quotas and lifetimes.
    pub limits: Limits,
    /// How many store peers hold each mailbox (R).
    pub replication: usize,
    /// How often to check that every held message has R copies.
    pub repair_interval: Duration,
    /// How often to delete expired messages.
    pub expiry_interval: Duration,
    /// Most users whose presence is kept.
    pub presence_capacity: usize,
    /// How long a user's presence is kept after its last heartbeat; when the table is full,
    /// the record heard longest ago makes room, so made-up users cannot lock real ones out.
    pub presence_ttl: Duration,
    /// Most concurrent mailbox streams.
    pub max_streams: usize,
    /// Most concurrent mailbox streams of one peer.
    pub max_streams_per_peer: usize,
    /// How long a mailbox stream may idle (above nodes' heartbeat interval: subscriptions
    /// wait), and take over one frame.
    pub stream_timeouts: ReadTimeouts,
    /// Depth of each stream's answer queue.
    pub stream_queue: usize,
    /// Most bytes of envelopes queued on one stream and not yet written (pushes and pages);
    /// past it a push is left for the subscriber's next subscription.
    pub stream_queue_bytes: usize,
    /// Request rates, per peer and per IP (subscriptions, deletes; deposits are `limits`').
    pub rates: Rates,
    /// Most envelopes one `Delete` may name (the rest of the request is ignored). Nodes send
    /// up to `MAX_DELETE_IDS` at once, so a lower value slows their clean-up.
    pub max_delete_per_request: usize,
    /// Most envelope bytes read from a mailbox for one page of a subscription's listing.
    pub page_bytes: usize,
    /// Most bytes this store peer holds on disk (envelopes and blobs); past it deposits are
    /// refused with `StoreFull` and blob chunks with `QuotaExceeded`.
    pub max_store_bytes: u64,
    /// Most bytes the mailbox database keeps cached in memory (sled's page cache). sled's
    /// own default, 1 GiB, let a store peer's memory grow with what it holds.
    pub cache_bytes: u64,
    /// Most other store peers remembered.
    pub max_known_stores: usize,
    /// Most envelope identities remembered as confirmed per other store peer.
    pub max_replicated_refs: usize,
    /// Limits on media blobs held for offline users.
    pub blobs: BlobLimits,
    /// The allowance for deposits without the recipient's access key, per mailbox.
    pub requests_limits: RequestLimits,
    /// Most mailbox registrations kept (the oldest goes first past it).
    pub max_registrations: usize,
    /// How many recent deposits to keep in [`Metrics::deposit_log`] (0: none).
    pub record_deposits: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            limits: Limits::default(),
            replication: 3,
            repair_interval: Duration::from_secs(30),
            expiry_interval: Duration::from_secs(60),
            presence_capacity: 100_000,
            presence_ttl: Duration::from_secs(3600),
            max_streams: 1024,
            max_streams_per_peer: accept::STREAMS_PER_PEER,
            stream_timeouts: ReadTimeouts::default(),
            stream_queue: 1024,
            stream_queue_bytes: 8 * 1024 * 1024,
            rates: Rates::default(),
            max_delete_per_request: kith_protocol::mailbox::MAX_DELETE_IDS,
            page_bytes: kith_protocol::frame::MAX_FRAME_LEN,
            max_store_bytes: 64 * 1024 * 1024 * 1024,
            cache_bytes: DEFAULT_CACHE_BYTES,
            max_known_stores: 1024,
            max_replicated_refs: 1_000_000,
            blobs: BlobLimits::default(),
            requests_limits: RequestLimits::default(),
            max_registrations: 200_000,
            record_deposits: 0,
        }
    }
}
