//! What this peer's own Kademlia queries cost, from kad's [`kad::QueryStats`] and
//! [`kad::ProgressStep`] as each query ends: how many queries, how many requests and answers
//! they took, how many result steps they reported and how long they ran. A simulation reads
//! them from every node to say what lookups cost in a mesh of that size (rust-libp2p runs
//! iterative lookups, α = 3 in parallel, and counts requests, not hops).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use libp2p::kad;

/// Totals over the queries this peer finished; cloneable, read while the swarm runs.
#[derive(Clone, Debug, Default)]
pub struct KadStats(Arc<Totals>);

#[derive(Debug, Default)]
struct Totals {
    queries: AtomicU64,
    requests: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    steps: AtomicU64,
    duration_us: AtomicU64,
    max_requests: AtomicU64,
}

/// A snapshot of [`KadStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KadTotals {
    /// Queries finished (lookups of peers and records, record stores, bootstraps).
    pub queries: u64,
    /// Requests they sent to other peers.
    pub requests: u64,
    /// Requests answered.
    pub successes: u64,
    /// Requests that failed (timeouts, refused, unreachable).
    pub failures: u64,
    /// Result steps reported ([`kad::ProgressStep::count`] of each last step).
    pub steps: u64,
    /// Time the queries ran, summed, in microseconds.
    pub duration_us: u64,
    /// Most requests one query sent.
    pub max_requests: u64,
}

impl KadStats {
    /// Counts a query that just reported its last step.
    pub(super) fn finished(&self, stats: &kad::QueryStats, step: &kad::ProgressStep) {
        let t = &self.0;
        let requests = u64::from(stats.num_requests());
        t.queries.fetch_add(1, Ordering::Relaxed);
        t.requests.fetch_add(requests, Ordering::Relaxed);
        t.successes
            .fetch_add(u64::from(stats.num_successes()), Ordering::Relaxed);
        t.failures
            .fetch_add(u64::from(stats.num_failures()), Ordering::Relaxed);
        t.steps
            .fetch_add(step.count.get() as u64, Ordering::Relaxed);
        let us = stats.duration().map_or(0, |d| d.as_micros() as u64);
        t.duration_us.fetch_add(us, Ordering::Relaxed);
        t.max_requests.fetch_max(requests, Ordering::Relaxed);
    }

    /// The totals now.
    pub fn totals(&self) -> KadTotals {
        let t = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        KadTotals {
            queries: get(&t.queries),
            requests: get(&t.requests),
            successes: get(&t.successes),
            failures: get(&t.failures),
            steps: get(&t.steps),
            duration_us: get(&t.duration_us),
            max_requests: get(&t.max_requests),
        }
    }
}

impl std::ops::Add for KadTotals {
    type Output = KadTotals;

    /// The sum of two peers' totals (the largest of their maxima).
    fn add(self, o: KadTotals) -> KadTotals {
        KadTotals {
            queries: self.queries + o.queries,
            requests: self.requests + o.requests,
            successes: self.successes + o.successes,
            failures: self.failures + o.failures,
            steps: self.steps + o.steps,
            duration_us: self.duration_us + o.duration_us,
            max_requests: self.max_requests.max(o.max_requests),
        }
    }
}
