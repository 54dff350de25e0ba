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
    /// DHT lookups made by the probe.
    pub dht_lookups: u64,
    /// Lookups whose result held the user looked up.
    pub dht_lookups_found: u64,
    /// Mean Kademlia requests per lookup (rust-libp2p exposes no hop count: it runs
    /// iterative lookups with α = 3 in parallel; requests are what it reports).
    pub dht_lookup_requests_mean: f64,
    /// Most requests one lookup made.
    pub dht_lookup_requests_max: u64,
    /// Mean successful answers per lookup.
    pub dht_lookup_successes_mean: f64,
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
        json!({
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
            "dht_lookups": self.dht_lookups,
            "dht_lookups_found": self.dht_lookups_found,
            "dht_lookup_requests_mean": self.dht_lookup_requests_mean,
            "dht_lookup_requests_max": self.dht_lookup_requests_max,
            "dht_lookup_successes_mean": self.dht_lookup_successes_mean,
            "store_msgs_max": self.store_msgs_max,
            "store_msgs_mean": self.store_msgs_mean,
            "store_bytes_max": self.store_bytes_max,
            "store_bytes_mean": self.store_bytes_mean,
            "store_msgs_held_end": self.store_msgs_held_end,
            "rss_bytes_per_node": self.rss_bytes_per_node,
            "rss_peak_bytes": self.rss_peak_bytes,
            "cpu_s": self.cpu_s,
            "cpu_run_s": self.cpu_run_s,
            "user_stops": self.user_stops,
            "store_stops": self.store_stops,
            "setup_s": self.setup_s,
            "run_s": self.run_s,
            "settled": self.settled,
        })
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
