//! Operator metrics in Prometheus text format, served on `/metrics`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use kith_protocol::mailbox::RefuseReason;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

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

/// Longest a scraper may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head read (a scrape is one short `GET`).
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Bytes read at a time from a scraper.
const HEAD_READ: usize = 512;

/// Most scrapes answered at once; more connections wait to be accepted.
const MAX_SCRAPES: usize = 16;

/// Serves `GET /metrics` (HTTP/1.1, one request per connection) until `cancel` fires. A
/// plain responder rather than a web framework: the operator's peer has nothing else to serve,
/// and keeps its dependencies to the network and the disk.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let mut scrapes = JoinSet::new();
    loop {
        while scrapes.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = scrapes.join_next(), if scrapes.len() >= MAX_SCRAPES => continue,
            accepted = listener.accept(), if scrapes.len() < MAX_SCRAPES => accepted,
        };
        let (conn, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: accept failed");
                continue;
            }
        };
        let m = metrics.clone();
        scrapes.spawn(async move {
            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, answer(conn, &m)).await {
                tracing::debug!(error = %e, "metrics: scrape timed out");
            }
        });
    }
    scrapes.shutdown().await;
    Ok(())
}

/// Reads one request head and answers it.
async fn answer(mut conn: TcpStream, metrics: &Metrics) {
    let mut head = Vec::with_capacity(HEAD_READ);
    let mut chunk = [0u8; HEAD_READ];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let (status, body) = if is_metrics_get(&head) {
        ("200 OK", metrics.render())
    } else {
        ("404 Not Found", String::from("not found\n"))
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Whether a request head asks `GET /metrics` (a query string is ignored).
fn is_metrics_get(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return false;
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    method == b"GET" && path == b"/metrics"
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        metrics.deposits.store(7, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, metrics, cancel.clone()));
        let get = |path: &'static str| async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("kith_deposits_total 7"), "{ok}");
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));
        cancel.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_stalled_or_oversized_scrape_neither_blocks_others_nor_grows_past_the_head_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, metrics, cancel.clone()));
        // The least: a connection that sends nothing holds one slot, not the server.
        let _stalled = TcpStream::connect(addr).await.unwrap();
        // The most: 1 MiB of head without an end is cut at MAX_REQUEST_HEAD and refused.
        let mut big = TcpStream::connect(addr).await.unwrap();
        let junk = vec![b'a'; 1024 * 1024];
        // The server stops reading after the head limit, so the write may fail: that is fine.
        let _ = tokio::time::timeout(Duration::from_secs(5), big.write_all(&junk)).await;
        let mut out = Vec::new();
        let _ = big.read_to_end(&mut out).await;
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 404"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        // A real scrape is still answered meanwhile.
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut ok = String::new();
        c.read_to_string(&mut ok).await.unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        cancel.cancel();
        server.await.unwrap().unwrap();
    }
}
