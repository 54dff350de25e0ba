//! Operator metrics: counters and gauges any task updates, latency histograms, and the
//! prometheus-client registry that encodes them as OpenMetrics text (served on `/metrics`
//! by [`crate::http`]). prometheus-client is the crate libp2p-metrics writes to, so the
//! swarm's own series can later join the same registry.

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use kith_protocol::{mailbox::RefuseReason, UserId};
use libp2p::PeerId;
use prometheus_client::{
    collector::Collector,
    encoding::{text, DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::ConstCounter,
        gauge::ConstGauge,
        histogram::{exponential_buckets, Histogram},
        info::Info,
        MetricType,
    },
    registry::{Registry, Unit},
};

/// Counters and gauges of a bootstrap / store peer. Cheap to update from any task.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Peers with an open connection.
    pub connected_peers: AtomicU64,
    /// Mailboxes holding at least one message.
    pub mailboxes: AtomicU64,
    /// Messages held.
    pub stored_messages: AtomicU64,
    /// Bytes of messages held.
    pub stored_bytes: AtomicU64,
    /// Deposits stored (new ones; duplicates not counted).
    pub deposits: AtomicU64,
    /// Replicas received from other store peers and stored.
    pub replicas: AtomicU64,
    /// Messages handed to their owners.
    pub fetched: AtomicU64,
    /// Messages deleted by their owners.
    pub deleted: AtomicU64,
    /// Messages expired.
    pub expired: AtomicU64,
    /// Presence records accepted.
    pub heartbeats: AtomicU64,
    /// Media blobs held (complete or being uploaded).
    pub blobs: AtomicU64,
    /// Bytes reserved by held blobs (ciphertext).
    pub blob_bytes: AtomicU64,
    /// Blob chunks received from uploaders.
    pub blob_chunks_in: AtomicU64,
    /// Blob chunks served to mailbox owners.
    pub blob_chunks_out: AtomicU64,
    /// Deposits stored in a requests allowance (made without the recipient's access key).
    pub requests: AtomicU64,
    /// What recent deposits showed this peer; empty unless asked for.
    pub deposit_log: DepositLog,
    /// Requests of any kind refused by a rate limit (per peer or per IP).
    pub rate_limited: AtomicU64,
    /// Tombstones held (envelopes their owners took or deleted ahead).
    pub tombstones: AtomicU64,
    /// Most envelope bytes read from a mailbox for one answer (a page of a subscription's
    /// listing): what one `Subscribe` costs at most, whatever the mailbox holds.
    pub largest_listing_bytes: AtomicU64,
    /// Most envelope bytes ever queued on one mailbox stream and not yet written (pushes and
    /// listing pages): what a subscriber that stops reading costs at most.
    pub largest_stream_queue_bytes: AtomicU64,
    /// Blob chunk bytes read from disk and not yet written to their stream.
    pub blob_bytes_in_flight: AtomicU64,
    /// Deposit and listing latencies.
    pub latency: Latencies,
    rejected: [AtomicU64; 8],
}

/// What one deposit showed the store peer: the peer id of the connection that handed it over,
/// the recipient and the envelope exactly as held. Nothing else about the sender reaches a
/// store peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenDeposit {
    /// The depositing connection's (authenticated) peer id.
    pub depositor: PeerId,
    /// The envelope's recipient.
    pub recipient: UserId,
    /// The envelope's canonical encoding, as stored.
    pub envelope: Vec<u8>,
}

/// The last deposits a store peer saw, bounded; with capacity 0 (the default) nothing is kept.
/// It lets a test, or an operator auditing their own peer, look at exactly what a logging
/// store peer could learn.
#[derive(Debug, Default)]
pub struct DepositLog {
    capacity: AtomicUsize,
    seen: Mutex<VecDeque<SeenDeposit>>,
}

impl DepositLog {
    /// Keeps the last `n` deposits from now on.
    pub fn keep(&self, n: usize) {
        self.capacity.store(n, Ordering::Relaxed);
    }

    /// Notes one deposit (dropping the oldest past the capacity).
    pub fn record(&self, deposit: SeenDeposit) {
        let capacity = self.capacity.load(Ordering::Relaxed);
        if capacity == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while seen.len() >= capacity {
            seen.pop_front();
        }
        seen.push_back(deposit);
    }

    /// The deposits kept, oldest first.
    pub fn seen(&self) -> Vec<SeenDeposit> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter().cloned().collect()
    }
}

const REASONS: [(RefuseReason, &str); 8] = [
    (RefuseReason::TooLarge, "too_large"),
    (RefuseReason::MailboxFull, "mailbox_full"),
    (RefuseReason::RateLimited, "rate_limited"),
    (RefuseReason::Expired, "expired"),
    (RefuseReason::Malformed, "malformed"),
    (RefuseReason::NotAStore, "not_a_store"),
    (RefuseReason::NotNamed, "not_named"),
    (RefuseReason::StoreFull, "store_full"),
];

impl Metrics {
    /// Counts a refused deposit.
    pub fn reject(&self, reason: RefuseReason) {
        if let Some(i) = REASONS.iter().position(|(r, _)| *r == reason) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many deposits were refused for `reason`.
    pub fn rejected(&self, reason: RefuseReason) -> u64 {
        REASONS
            .iter()
            .position(|(r, _)| *r == reason)
            .map(|i| self.rejected[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Kith's own series, in the order `/metrics` shows them: name (without `kith_` and,
    /// for counters, `_total`), help, kind, value.
    fn series(&self) -> [(&'static str, &'static str, Kind, &AtomicU64); 20] {
        use Kind::{Counter, Gauge};
        [
            (
                "connected_peers",
                "Peers with an open connection.",
                Gauge,
                &self.connected_peers,
            ),
            (
                "mailboxes",
                "Mailboxes holding messages.",
                Gauge,
                &self.mailboxes,
            ),
            (
                "stored_messages",
                "Messages held.",
                Gauge,
                &self.stored_messages,
            ),
            (
                "stored_bytes",
                "Bytes of messages held.",
                Gauge,
                &self.stored_bytes,
            ),
            ("blobs", "Media blobs held.", Gauge, &self.blobs),
            (
                "blob_bytes",
                "Bytes reserved by media blobs.",
                Gauge,
                &self.blob_bytes,
            ),
            (
                "blob_chunks_in",
                "Blob chunks received.",
                Counter,
                &self.blob_chunks_in,
            ),
            (
                "blob_chunks_out",
                "Blob chunks served.",
                Counter,
                &self.blob_chunks_out,
            ),
            (
                "rate_limited",
                "Requests refused by a rate limit.",
                Counter,
                &self.rate_limited,
            ),
            ("tombstones", "Tombstones held.", Gauge, &self.tombstones),
            (
                "largest_listing_bytes",
                "Most mailbox bytes read for one answer.",
                Gauge,
                &self.largest_listing_bytes,
            ),
            (
                "largest_stream_queue_bytes",
                "Most envelope bytes queued on one mailbox stream.",
                Gauge,
                &self.largest_stream_queue_bytes,
            ),
            (
                "blob_bytes_in_flight",
                "Blob chunk bytes read and not yet sent.",
                Gauge,
                &self.blob_bytes_in_flight,
            ),
            ("deposits", "Deposits stored.", Counter, &self.deposits),
            (
                "requests",
                "Deposits stored in a requests allowance (without the access key).",
                Counter,
                &self.requests,
            ),
            ("replicas", "Replicas stored.", Counter, &self.replicas),
            (
                "fetched",
                "Messages handed to their owners.",
                Counter,
                &self.fetched,
            ),
            (
                "deleted",
                "Messages deleted by their owners.",
                Counter,
                &self.deleted,
            ),
            ("expired", "Messages expired.", Counter, &self.expired),
            (
                "heartbeats",
                "Presence records accepted.",
                Counter,
                &self.heartbeats,
            ),
        ]
    }
}

/// Whether a series only grows (a counter, shown with `_total`) or goes up and down.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Latency buckets, in seconds: 0.1 ms to 3.3 s, doubling. A deposit's commit is an fsync
/// (milliseconds on an SSD, tens on a disk under load); a listing page is one sled range
/// read (sub-millisecond when cached). Past 3.3 s an operator needs no finer resolution.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_1, 2.0, 16)
}

/// How long the store peer takes for what users wait on, as histograms in seconds.
#[derive(Clone, Debug)]
pub struct Latencies {
    /// From the store task taking a deposit to the flush of the commit that holds it (when
    /// the depositor's `Stored` can leave): what a sender waits for its tick.
    pub deposit: Histogram,
    /// Reading one page of a subscription's listing from the mailboxes and queueing it: what
    /// an owner coming back waits per page of its offline messages.
    pub fetch_page: Histogram,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            deposit: Histogram::new(latency_buckets()),
            fetch_page: Histogram::new(latency_buckets()),
        }
    }
}

/// Kith's own series, read from [`Metrics`] at each scrape (its atomics stay what every task
/// updates and tests read).
#[derive(Debug)]
struct Series(Arc<Metrics>);

impl Collector for Series {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for (name, help, kind, value) in self.0.series() {
            let value = value.load(Ordering::Relaxed);
            match kind {
                Kind::Counter => {
                    let c = ConstCounter::new(value);
                    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
                }
                Kind::Gauge => {
                    let g = ConstGauge::new(value);
                    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "rejections",
            "Deposits refused, by reason.",
            None,
            MetricType::Counter,
        )?;
        for (i, (_, reason)) in REASONS.iter().enumerate() {
            let value = self.0.rejected[i].load(Ordering::Relaxed);
            ConstCounter::new(value).encode(family.encode_family(&[("reason", *reason)])?)?;
        }
        Ok(())
    }
}

/// The registry `/metrics` shows: under `kith_`, the peer's counters and gauges,
/// `kith_build_info{version}` and the latency histograms. Built once at start; the swarm's
/// series (libp2p-metrics) join it under `libp2p_` ([`swarm_series`]).
pub fn registry(metrics: Arc<Metrics>) -> Registry {
    let mut root = Registry::default();
    let registry = root.sub_registry_with_prefix("kith");
    registry.register(
        "build",
        "The running build.",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_with_unit(
        "deposit_latency",
        "From taking a deposit to the flush of its commit.",
        Unit::Seconds,
        metrics.latency.deposit.clone(),
    );
    registry.register_with_unit(
        "fetch_page_latency",
        "Reading and queueing one page of a subscription's listing.",
        Unit::Seconds,
        metrics.latency.fetch_page.clone(),
    );
    registry.register_collector(Box::new(Series(metrics)));
    root
}

/// Registers libp2p's own series (swarm, Kademlia, identify, relay, ping, hole punching)
/// in `registry` (libp2p-metrics names them `libp2p_…`), for the swarm task to record into.
pub fn swarm_series(registry: &mut Registry) -> kith_net::swarm::SwarmMetrics {
    kith_net::swarm::SwarmMetrics::register(registry)
}

/// The OpenMetrics text of `registry` (what `/metrics` answers).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = text::encode(&mut out, registry) {
        // Writing to a String cannot fail; an encoder error would be a bug in a series.
        tracing::error!(error = %e, "cannot encode the metrics");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_keeps_every_name_and_adds_build_info_and_latencies() {
        let metrics = Arc::new(Metrics::default());
        metrics.deposits.store(3, Ordering::Relaxed);
        metrics.stored_messages.store(5, Ordering::Relaxed);
        metrics.reject(RefuseReason::TooLarge);
        metrics.latency.deposit.observe(0.002);
        let text = encode(&registry(metrics.clone()));
        let lines: Vec<&str> = text.lines().collect();
        for line in [
            "kith_deposits_total 3",
            "kith_stored_messages 5",
            "kith_heartbeats_total 0",
            "kith_rejections_total{reason=\"too_large\"} 1",
            "kith_rejections_total{reason=\"store_full\"} 0",
            "# TYPE kith_deposit_latency_seconds histogram",
            "kith_deposit_latency_seconds_count 1",
            "kith_deposit_latency_seconds_bucket{le=\"0.0016\"} 0",
            "kith_deposit_latency_seconds_bucket{le=\"0.0032\"} 1",
            "kith_fetch_page_latency_seconds_count 0",
            "# EOF",
        ] {
            assert!(lines.contains(&line), "no `{line}` in\n{text}");
        }
        let build = format!(
            "kith_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(lines.contains(&build.as_str()), "{text}");
        // Every series of the table is shown, once.
        for (name, _, kind, _) in metrics.series() {
            let shown = match kind {
                Kind::Counter => format!("kith_{name}_total "),
                Kind::Gauge => format!("kith_{name} "),
            };
            let n = lines.iter().filter(|l| l.starts_with(&shown)).count();
            assert_eq!(n, 1, "{shown}\n{text}");
        }
    }
}
