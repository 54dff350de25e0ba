//! What a simulation measured, and the check that nothing was lost, duplicated or left
//! undelivered.

use anyhow::{bail, Result};
use serde_json::{json, Value};

/// What a run measured. Every figure carries its unit in its name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimReport {
    /// User nodes.
    pub nodes: usize,
    /// Store peers.
    pub stores: usize,
    /// Messages sent (`send_text` returned).
    pub sent: u64,
    /// Sent messages found in their recipient's conversation (each counted once).
    pub delivered: u64,
    /// Extra copies in recipients' conversations (same id or same tag more than once).
    pub duplicated: u64,
    /// Sent messages missing from their recipient's conversation at the end.
    pub lost: u64,
    /// Messages the recipients hold that no one sent (should be 0).
    pub unexpected: u64,
    /// Sent messages whose status at the sender reached delivered.
    pub statuses_delivered: u64,
    /// Messages whose delivered status was seen as an event (the latency samples).
    pub latency_samples: u64,
    /// Median send → delivered-at-sender time.
    pub latency_p50_ms: f64,
    /// 99th percentile of the same.
    pub latency_p99_ms: f64,
    /// Longest of the same.
    pub latency_max_ms: f64,
    /// Latency samples of messages whose recipient was up and reachable when they were sent
    /// (delivered directly; the others wait for their recipient or go through mailboxes).
    pub online_latency_samples: u64,
    /// Median send → delivered-at-sender time of those.
    pub online_latency_p50_ms: f64,
    /// 99th percentile of the same.
    pub online_latency_p99_ms: f64,
    /// Longest of the same.
    pub online_latency_max_ms: f64,
    /// Median send → the recipient's node announcing the message, for the same messages
    /// (the first half of the round trip a delivered tick takes).
    pub online_received_p50_ms: f64,
    /// 99th percentile of the same.
    pub online_received_p99_ms: f64,
    /// DHT lookups (of users' key bundles) made by the probe.
    pub dht_lookups: u64,
    /// Lookups that found the user's bundle record.
    pub dht_lookups_found: u64,
    /// Mean Kademlia requests per lookup (rust-libp2p exposes no hop count: it runs
    /// iterative lookups with α = 3 in parallel; requests are what it reports).
    pub dht_lookup_requests_mean: f64,
    /// Most requests one lookup made.
    pub dht_lookup_requests_max: u64,
    /// Mean successful answers per lookup.
    pub dht_lookup_successes_mean: f64,
    /// Kademlia queries the users' own nodes finished (lookups of peers and records, record
    /// stores, bootstraps), over all their incarnations, from kad's `QueryStats`.
    pub node_kad_queries: u64,
    /// Mean requests per query of those (rust-libp2p counts requests, not hops).
    pub node_kad_requests_mean: f64,
    /// Mean answered requests per query.
    pub node_kad_successes_mean: f64,
    /// Mean failed requests per query.
    pub node_kad_failures_mean: f64,
    /// Mean result steps per query (kad's `ProgressStep::count` at the last step).
    pub node_kad_steps_mean: f64,
    /// Most requests one query sent.
    pub node_kad_requests_max: u64,
    /// Mean time a query ran.
    pub node_kad_query_ms_mean: f64,
    /// Most messages (deposits + replicas) one store peer stored over the run.
    pub store_msgs_max: u64,
    /// Mean of the same over the store peers.
    pub store_msgs_mean: f64,
    /// Largest peak of bytes held by one store peer (sampled).
    pub store_bytes_max: u64,
    /// Mean over store peers of their peak bytes held.
    pub store_bytes_mean: f64,
    /// Messages the store peers still hold at the end (owners delete what they fetched).
    pub store_msgs_held_end: u64,
    /// Resident memory the mesh added, divided by its peers (users + store peers), after
    /// setup.
    pub rss_bytes_per_node: u64,
    /// Peak resident memory of the process.
    pub rss_peak_bytes: u64,
    /// CPU time (user + system) the process spent from the start of setup to the end.
    pub cpu_s: f64,
    /// CPU time setup cost per user (mesh start, introductions, readiness; store peers'
    /// share included).
    pub cpu_setup_ms_per_user: f64,
    /// CPU time spent in the rounds and the settle phase.
    pub cpu_run_s: f64,
    /// Stops of users (churn and partition).
    pub user_stops: u64,
    /// Stops of store peers.
    pub store_stops: u64,
    /// Wall time of setup (mesh start, introductions, readiness).
    pub setup_s: f64,
    /// Wall time of the rounds and the settle phase.
    pub run_s: f64,
    /// Whether every message reached delivered before `settle_timeout`.
    pub settled: bool,
}

impl SimReport {
    /// The report as JSON (field names as in the struct).
    pub fn to_json(&self) -> Value {
        // Two objects: one `json!` of every field overflows the macro's recursion limit.
        let mut v = json!({
            "nodes": self.nodes,
            "stores": self.stores,
            "sent": self.sent,
            "delivered": self.delivered,
            "duplicated": self.duplicated,
            "lost": self.lost,
            "unexpected": self.unexpected,
            "statuses_delivered": self.statuses_delivered,
            "latency_samples": self.latency_samples,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "latency_max_ms": self.latency_max_ms,
            "online_latency_samples": self.online_latency_samples,
            "online_latency_p50_ms": self.online_latency_p50_ms,
            "online_latency_p99_ms": self.online_latency_p99_ms,
            "online_latency_max_ms": self.online_latency_max_ms,
            "online_received_p50_ms": self.online_received_p50_ms,
            "online_received_p99_ms": self.online_received_p99_ms,
        });
        let more = json!({
            "dht_lookups": self.dht_lookups,
            "dht_lookups_found": self.dht_lookups_found,
            "dht_lookup_requests_mean": self.dht_lookup_requests_mean,
            "dht_lookup_requests_max": self.dht_lookup_requests_max,
            "dht_lookup_successes_mean": self.dht_lookup_successes_mean,
            "node_kad_queries": self.node_kad_queries,
            "node_kad_requests_mean": self.node_kad_requests_mean,
            "node_kad_successes_mean": self.node_kad_successes_mean,
            "node_kad_failures_mean": self.node_kad_failures_mean,
            "node_kad_steps_mean": self.node_kad_steps_mean,
            "node_kad_requests_max": self.node_kad_requests_max,
            "node_kad_query_ms_mean": self.node_kad_query_ms_mean,
            "store_msgs_max": self.store_msgs_max,
            "store_msgs_mean": self.store_msgs_mean,
            "store_bytes_max": self.store_bytes_max,
            "store_bytes_mean": self.store_bytes_mean,
            "store_msgs_held_end": self.store_msgs_held_end,
            "rss_bytes_per_node": self.rss_bytes_per_node,
            "rss_peak_bytes": self.rss_peak_bytes,
            "cpu_s": self.cpu_s,
            "cpu_setup_ms_per_user": self.cpu_setup_ms_per_user,
            "cpu_run_s": self.cpu_run_s,
            "user_stops": self.user_stops,
            "store_stops": self.store_stops,
            "setup_s": self.setup_s,
            "run_s": self.run_s,
            "settled": self.settled,
        });
        if let (Value::Object(a), Value::Object(b)) = (&mut v, more) {
            a.extend(b);
        }
        v
    }

    /// Fails unless nothing was lost or duplicated and every status reached delivered.
    pub fn check_outcomes(&self) -> Result<()> {
        if self.sent == 0
            || self.delivered != self.sent
            || self.lost != 0
            || self.duplicated != 0
            || self.unexpected != 0
            || self.statuses_delivered != self.sent
        {
            bail!("the mesh lost, duplicated or did not deliver messages: {self:?}");
        }
        Ok(())
    }
}
