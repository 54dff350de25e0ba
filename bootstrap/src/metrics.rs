//! Operator metrics in Prometheus text format, served on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use kith_protocol::mailbox::RefuseReason;

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
    rejected: [AtomicU64; 6],
}

const REASONS: [(RefuseReason, &str); 6] = [
    (RefuseReason::TooLarge, "too_large"),
    (RefuseReason::MailboxFull, "mailbox_full"),
    (RefuseReason::RateLimited, "rate_limited"),
    (RefuseReason::Expired, "expired"),
    (RefuseReason::Malformed, "malformed"),
    (RefuseReason::NotAStore, "not_a_store"),
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

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, v: u64| {
            out.push_str(&format!(
                "# HELP kith_{name} {help}\n# TYPE kith_{name} {kind}\nkith_{name} {v}\n"
            ));
        };
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            "connected_peers",
            "Peers with an open connection.",
            "gauge",
            l(&self.connected_peers),
        );
        gauge(
            "mailboxes",
            "Mailboxes holding messages.",
            "gauge",
            l(&self.mailboxes),
        );
        gauge(
            "stored_messages",
            "Messages held.",
            "gauge",
            l(&self.stored_messages),
        );
        gauge(
            "stored_bytes",
            "Bytes of messages held.",
            "gauge",
            l(&self.stored_bytes),
        );
        gauge("blobs", "Media blobs held.", "gauge", l(&self.blobs));
        gauge(
            "blob_bytes",
            "Bytes reserved by media blobs.",
            "gauge",
            l(&self.blob_bytes),
        );
        gauge(
            "blob_chunks_in_total",
            "Blob chunks received.",
            "counter",
            l(&self.blob_chunks_in),
        );
        gauge(
            "blob_chunks_out_total",
            "Blob chunks served.",
            "counter",
            l(&self.blob_chunks_out),
        );
        gauge(
            "deposits_total",
            "Deposits stored.",
            "counter",
            l(&self.deposits),
        );
        gauge(
            "replicas_total",
            "Replicas stored.",
            "counter",
            l(&self.replicas),
        );
        gauge(
            "fetched_total",
            "Messages handed to their owners.",
            "counter",
            l(&self.fetched),
        );
        gauge(
            "deleted_total",
            "Messages deleted by their owners.",
            "counter",
            l(&self.deleted),
        );
        gauge(
            "expired_total",
            "Messages expired.",
            "counter",
            l(&self.expired),
        );
        gauge(
            "heartbeats_total",
            "Presence records accepted.",
            "counter",
            l(&self.heartbeats),
        );
        out.push_str("# HELP kith_rejections_total Deposits refused, by reason.\n# TYPE kith_rejections_total counter\n");
        for (i, (_, name)) in REASONS.iter().enumerate() {
            out.push_str(&format!(
                "kith_rejections_total{{reason=\"{name}\"}} {}\n",
                l(&self.rejected[i])
            ));
        }
        out
    }
}

/// Serves `/metrics` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    m.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
