//! The operator's HTTP listener: `GET /metrics` (Prometheus) and `GET /healthz` (liveness,
//! JSON). A plain responder rather than a web framework: the operator's peer has nothing else
//! to serve, and keeps its dependencies to the network and the disk. What it must withstand
//! (a scraper that never sends, a head without end, many connections at once) is pinned by
//! its tests.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use prometheus_client::registry::Registry;

use crate::{
    health::{Health, Status},
    metrics,
};

/// Longest a scraper may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head read (a scrape is one short `GET`).
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Bytes read at a time from a scraper.
const HEAD_READ: usize = 512;

/// Most requests answered at once; more connections wait to be accepted.
const MAX_SCRAPES: usize = 16;

/// What the listener reports on.
#[derive(Clone, Debug)]
pub struct Served {
    /// For `/metrics` (see [`metrics::registry`]).
    pub registry: Arc<Registry>,
    /// For `/healthz`.
    pub health: Arc<Health>,
}

/// Serves `GET /metrics` and `GET /healthz` (HTTP/1.1, one request per connection) until
/// `cancel` fires. `cancel` is not the peer's own token: the listener outlives the peer's
/// other tasks during shutdown, so `/healthz` answers 503 while they stop.
pub async fn serve(
    listener: TcpListener,
    served: Served,
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
                tracing::debug!(error = %e, "http: accept failed");
                continue;
            }
        };
        let s = served.clone();
        scrapes.spawn(async move {
            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, answer(conn, &s)).await {
                tracing::debug!(error = %e, "http: request timed out");
            }
        });
    }
    scrapes.shutdown().await;
    Ok(())
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Health,
}

/// Reads one request head and answers it.
async fn answer(mut conn: TcpStream, served: &Served) {
    let mut head = Vec::with_capacity(HEAD_READ);
    let mut chunk = [0u8; HEAD_READ];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let (status, content_type, body) = match route(&head) {
        Some(Route::Metrics) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics::encode(&served.registry),
        ),
        Some(Route::Health) => {
            let status = match served.health.status() {
                Status::Ok => "200 OK",
                Status::Stopping | Status::Failed => "503 Service Unavailable",
            };
            (status, "application/json", served.health.json())
        }
        None => ("404 Not Found", "text/plain", String::from("not found\n")),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// What a request head asks for, if it is a `GET` of a path served (a query string is
/// ignored).
fn route(head: &[u8]) -> Option<Route> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(b"GET"), Some(target)) = (parts.next(), parts.next()) else {
        return None;
    };
    match target.split(|&b| b == b'?').next().unwrap_or_default() {
        b"/metrics" => Some(Route::Metrics),
        b"/healthz" => Some(Route::Health),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::Ordering;

    use libp2p::PeerId;

    use super::*;
    use crate::metrics::Metrics;

    /// A listener on loopback serving fresh metrics and the health of one task, the peer's
    /// token, and the listener's own token.
    async fn start() -> (
        std::net::SocketAddr,
        (Arc<Metrics>, Served),
        CancellationToken,
        CancellationToken,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stopping = CancellationToken::new();
        // The peer's one task: runs until `stopping`, like the swarm and the store.
        let task = tokio::spawn(stopping.clone().cancelled_owned());
        let metrics = Arc::new(Metrics::default());
        let served = Served {
            registry: Arc::new(metrics::registry(metrics.clone())),
            health: Arc::new(Health::new(
                PeerId::random(),
                (true, false),
                stopping.clone(),
                vec![task.abort_handle()],
            )),
        };
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, served.clone(), cancel.clone()));
        (addr, (metrics, served), stopping, cancel, server)
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health_and_nothing_else() {
        let (addr, (metrics, _), _stopping, cancel, server) = start().await;
        metrics.deposits.store(7, Ordering::Relaxed);
        let ok = get(addr, "/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("kith_deposits_total 7"), "{ok}");
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
        assert!(get(addr, "/metricsx").await.starts_with("HTTP/1.1 404"));
        cancel.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn healthz_is_200_while_running_and_503_once_stopping() {
        let (addr, (_, served), stopping, cancel, server) = start().await;
        let ok = get(addr, "/healthz?verbose=1").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("content-type: application/json\r\n"), "{ok}");
        let body = ok.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["peer_id"], served.health.peer_id().to_string());
        assert!(json["uptime_s"].is_u64(), "{json}");
        assert_eq!(
            (json["store"].clone(), json["relay"].clone()),
            (true.into(), false.into())
        );
        stopping.cancel();
        let stopping = get(addr, "/healthz").await;
        assert!(stopping.starts_with("HTTP/1.1 503 "), "{stopping}");
        assert!(stopping.contains("\"status\":\"stopping\""), "{stopping}");
        cancel.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn healthz_is_503_once_a_task_ends_before_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let died = tokio::spawn(async {});
        let handle = died.abort_handle();
        died.await.unwrap();
        let served = Served {
            registry: Arc::new(metrics::registry(Arc::new(Metrics::default()))),
            health: Arc::new(Health::new(
                PeerId::random(),
                (true, true),
                CancellationToken::new(),
                vec![handle],
            )),
        };
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, served, cancel.clone()));
        let failed = get(addr, "/healthz").await;
        assert!(failed.starts_with("HTTP/1.1 503 "), "{failed}");
        assert!(failed.contains("\"status\":\"failed\""), "{failed}");
        cancel.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_stalled_or_oversized_request_neither_blocks_others_nor_grows_past_the_head_limit() {
        let (addr, _, _stopping, cancel, server) = start().await;
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
        // Real requests are still answered meanwhile.
        for path in ["/metrics", "/healthz"] {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut ok = String::new();
            c.read_to_string(&mut ok).await.unwrap();
            assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        }
        cancel.cancel();
        server.await.unwrap().unwrap();
    }
}
