//! Sending the rounds' messages and counting what arrived: delivered statuses, duplicates,
//! losses and latency percentiles.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use futures::StreamExt;
use kith_node::{
    handle::{MessageView, MAX_PAGE},
    RunningNode,
};
use kith_protocol::{DeliveryStatus, UserId};
use serde_json::json;

use super::{
    peers::{lock, received_key, running, DeliveredAt, UserSlot},
    report::SimReport,
};

use crate::measure::percentile;

/// A message sent by the harness.
pub(super) struct SentMessage {
    pub(super) from: usize,
    pub(super) to: usize,
    pub(super) id: String,
    pub(super) text: String,
    pub(super) at: Instant,
    /// Whether its recipient was up and reachable (no cut between them) when it was sent:
    /// a direct delivery, not one through the mailboxes.
    pub(super) online: bool,
}

/// One message to send: from, to, round, and whether the recipient is online.
pub(super) type Job = (usize, usize, usize, bool);

/// Sends each job; returns what was sent.
pub(super) async fn send_batch(
    users: &[UserSlot],
    jobs: Vec<Job>,
    seed: u64,
    parallel: usize,
) -> Result<Vec<SentMessage>> {
    let results: Vec<Result<SentMessage>> = futures::stream::iter(jobs.into_iter().map(
        |(from, to, round, online)| async move {
            let node = running(&users[from])?;
            let text = format!("sim:{seed}:{from}:{round}");
            let sent = node
                .node
                .send_text(users[to].user, text.clone(), json!({"sim": round}))
                .await
                .with_context(|| format!("{} sends to {}", users[from].name, users[to].name))?;
            Ok(SentMessage {
                from,
                to,
                id: sent.id,
                text,
                at: Instant::now(),
                online,
            })
        },
    ))
    .buffer_unordered(parallel.max(1))
    .collect()
    .await;
    results.into_iter().collect()
}

/// The whole conversation of `node` with `peer`, newest first.
pub(super) fn conversation(node: &RunningNode, peer: &UserId) -> Result<Vec<MessageView>> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = node.node.conversation(peer, offset, MAX_PAGE, None)?;
        out.extend(page.messages);
        match page.next_offset {
            Some(next) => offset = next,
            None => return Ok(out),
        }
    }
}

/// Waits until every sent message is delivered at its sender, seen as an event or, for
/// events missed (an incarnation's subscription came after the receipt), in the sender's
/// conversation. Returns whether it settled before `timeout`.
pub(super) async fn settle(
    users: &[UserSlot],
    sent: &[SentMessage],
    delivered_at: &DeliveredAt,
    timeout: Duration,
) -> Result<bool> {
    let start = Instant::now();
    let mut confirmed: HashSet<String> = HashSet::new();
    let mut last_scan = Instant::now();
    loop {
        let pending: Vec<&SentMessage> = {
            let seen = lock(delivered_at);
            sent.iter()
                .filter(|m| !seen.contains_key(&m.id) && !confirmed.contains(&m.id))
                .collect()
        };
        if pending.is_empty() {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            tracing::warn!(pending = pending.len(), "simulation: settle timed out");
            return Ok(false);
        }
        if last_scan.elapsed() >= Duration::from_secs(2) {
            last_scan = Instant::now();
            let mut by_pair: HashMap<(usize, usize), Vec<&SentMessage>> = HashMap::new();
            for m in &pending {
                by_pair.entry((m.from, m.to)).or_default().push(m);
            }
            for ((from, to), ms) in by_pair {
                let conv = conversation(running(&users[from])?, &users[to].user)?;
                let done: HashSet<&str> = conv
                    .iter()
                    .filter(|v| v.outgoing && v.status >= DeliveryStatus::Delivered)
                    .map(|v| v.id.as_str())
                    .collect();
                for m in ms {
                    if done.contains(m.id.as_str()) {
                        confirmed.insert(m.id.clone());
                    }
                }
            }
            tracing::info!(
                pending = pending.len(),
                elapsed_s = start.elapsed().as_secs(),
                "simulation: settling"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every conversation and counts deliveries, duplicates, losses, statuses and
/// latencies.
pub(super) fn count(
    users: &[UserSlot],
    sent: &[SentMessage],
    delivered_at: &DeliveredAt,
) -> Result<SimReport> {
    let mut by_pair: HashMap<(usize, usize), Vec<&SentMessage>> = HashMap::new();
    for m in sent {
        by_pair.entry((m.from, m.to)).or_default().push(m);
    }
    let mut r = SimReport {
        sent: sent.len() as u64,
        ..SimReport::default()
    };
    for (&(from, to), ms) in &by_pair {
        // What the recipient holds from the sender.
        let received = conversation(running(&users[to])?, &users[from].user)?;
        let mut ids: HashMap<&str, u64> = HashMap::new();
        let mut texts: HashMap<&str, u64> = HashMap::new();
        for v in received.iter().filter(|v| !v.outgoing) {
            *ids.entry(v.id.as_str()).or_default() += 1;
            *texts.entry(v.text.as_str()).or_default() += 1;
        }
        let sent_ids: HashSet<&str> = ms.iter().map(|m| m.id.as_str()).collect();
        let sent_texts: HashSet<&str> = ms.iter().map(|m| m.text.as_str()).collect();
        for m in ms {
            if ids.contains_key(m.id.as_str()) {
                r.delivered += 1;
            } else {
                r.lost += 1;
            }
        }
        let dup_ids: u64 = ids.values().map(|c| c - 1).sum();
        let dup_texts: u64 = texts.values().map(|c| c - 1).sum();
        r.duplicated += dup_ids.max(dup_texts);
        r.unexpected +=
            ids.keys()
                .filter(|id| !sent_ids.contains(*id))
                .count()
                .max(texts.keys().filter(|t| !sent_texts.contains(*t)).count()) as u64;
        // The sender's view of the statuses.
        let outgoing = conversation(running(&users[from])?, &users[to].user)?;
        r.statuses_delivered += outgoing
            .iter()
            .filter(|v| {
                v.outgoing
                    && sent_ids.contains(v.id.as_str())
                    && v.status >= DeliveryStatus::Delivered
            })
            .count() as u64;
    }
    let seen = lock(delivered_at);
    let latencies = |online_only: bool, key: &dyn Fn(&str) -> String| {
        let mut lat: Vec<f64> = sent
            .iter()
            .filter(|m| m.online || !online_only)
            .filter_map(|m| {
                seen.get(&key(&m.id))
                    .map(|t| t.saturating_duration_since(m.at).as_secs_f64() * 1000.0)
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        lat
    };
    let lat = latencies(false, &|id| id.to_string());
    r.latency_samples = lat.len() as u64;
    r.latency_p50_ms = percentile(&lat, 0.50);
    r.latency_p99_ms = percentile(&lat, 0.99);
    r.latency_max_ms = lat.last().copied().unwrap_or(0.0);
    let lat = latencies(true, &received_key);
    r.online_received_p50_ms = percentile(&lat, 0.50);
    r.online_received_p99_ms = percentile(&lat, 0.99);
    let lat = latencies(true, &|id| id.to_string());
    r.online_latency_samples = lat.len() as u64;
    r.online_latency_p50_ms = percentile(&lat, 0.50);
    r.online_latency_p99_ms = percentile(&lat, 0.99);
    r.online_latency_max_ms = lat.last().copied().unwrap_or(0.0);
    Ok(r)
}
