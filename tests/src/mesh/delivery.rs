//! Sending numbered messages and waiting for their statuses and arrival; every wait is
//! bounded by [`crate::TIMEOUT`].

use std::collections::HashSet;

use anyhow::{anyhow, ensure, Context, Result};
use kith_node::{handle::MessageView, Event};
use kith_protocol::{DeliveryStatus, MessageId, UserId};
use tokio::sync::broadcast;

use crate::{wait_event, wait_for, TestNode, TIMEOUT};

/// The texts `{prefix}000`, `{prefix}001`... (`n` of them).
pub fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:03}")).collect()
}

/// Sends each of `texts` from `from` to `to`, in order (each send returns once durable on
/// the sender). Returns the message ids.
pub async fn send_all(from: &TestNode, to: UserId, texts: &[String]) -> Result<Vec<MessageId>> {
    let node = from.node()?;
    let mut ids = Vec::with_capacity(texts.len());
    for t in texts {
        let sent = node
            .send_text(to, t.clone(), serde_json::json!({}))
            .await
            .with_context(|| format!("{} sends {t:?}", from.name()))?;
        ids.push(sent.id.parse().map_err(|_| anyhow!("bad id {}", sent.id))?);
    }
    Ok(ids)
}

/// Waits on `events` until each of `ids` has reached `status` (or further).
pub async fn wait_statuses(
    events: &mut broadcast::Receiver<Event>,
    ids: &[MessageId],
    status: DeliveryStatus,
) -> Result<()> {
    let mut waiting: HashSet<String> = ids.iter().map(|i| i.to_string()).collect();
    let total = waiting.len();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let what = format!(
            "{} of {total} messages to reach {}",
            waiting.len(),
            status.as_str()
        );
        let ev = wait_event(events, left, &what, |e| {
            matches!(e, Event::Status { id, status: s, .. } if *s >= status && waiting.contains(id))
        })
        .await?;
        if let Event::Status { id, .. } = ev {
            waiting.remove(&id);
        }
    }
    Ok(())
}

/// Waits until every message `node` sent to `peer` with one of `ids` shows `status` (or
/// further) in its conversation.
pub async fn wait_conversation_statuses(
    node: &TestNode,
    peer: &UserId,
    ids: &[MessageId],
    status: DeliveryStatus,
) -> Result<()> {
    let want: HashSet<String> = ids.iter().map(|i| i.to_string()).collect();
    let what = format!(
        "{}'s {} messages to {peer} to reach {}",
        node.name(),
        want.len(),
        status.as_str()
    );
    wait_for(TIMEOUT, &what, || async {
        let conv = node.conversation(peer)?;
        let done = conv
            .iter()
            .filter(|m| m.outgoing && want.contains(&m.id) && m.status >= status)
            .count();
        Ok((done == want.len()).then_some(()))
    })
    .await
}

/// Waits until `node`'s conversation with `peer` holds at least `n` received messages;
/// returns the received messages, oldest first. `peer` need not be a contact (a first
/// message from a stranger makes them a message request, whose messages are kept too).
pub async fn wait_received(node: &TestNode, peer: &UserId, n: usize) -> Result<Vec<MessageView>> {
    let what = format!("{} to hold {n} messages from {peer}", node.name());
    let wanted = peer.to_string();
    wait_for(TIMEOUT, &what, || async {
        let n_ = node.node()?;
        let known = n_.contacts()?.iter().any(|c| c.user_id == wanted)
            || n_.requests()?.iter().any(|r| r.user_id == wanted);
        if !known {
            return Ok(None);
        }
        let received = received_from(node, peer)?;
        Ok((received.len() >= n).then_some(received))
    })
    .await
}

/// The messages `node` received from `peer`, oldest first (in the order they were stored).
pub fn received_from(node: &TestNode, peer: &UserId) -> Result<Vec<MessageView>> {
    let mut conv = node.conversation(peer)?;
    conv.retain(|m| !m.outgoing);
    conv.reverse();
    Ok(conv)
}

/// Fails unless `received` is exactly `texts` with `ids`, once each, in this order, with
/// non-decreasing composition times.
pub fn check_exactly_once_in_order(
    received: &[MessageView],
    ids: &[MessageId],
    texts: &[String],
) -> Result<()> {
    let got: Vec<&str> = received.iter().map(|m| m.text.as_str()).collect();
    ensure!(
        got == texts.iter().map(String::as_str).collect::<Vec<_>>(),
        "received {} messages, expected {} in order; got texts {got:?}",
        received.len(),
        texts.len()
    );
    let got_ids: Vec<String> = received.iter().map(|m| m.id.clone()).collect();
    let want_ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    ensure!(got_ids == want_ids, "received ids differ from the ids sent");
    ensure!(
        received
            .windows(2)
            .all(|w| w[0].sent_at_ms <= w[1].sent_at_ms),
        "composition times are not in order"
    );
    Ok(())
}

/// Fails unless `received` holds each of `ids` exactly once (in any order) and nothing else.
pub fn check_exactly_once(received: &[MessageView], ids: &[MessageId]) -> Result<()> {
    let want: HashSet<String> = ids.iter().map(|i| i.to_string()).collect();
    let mut seen = HashSet::new();
    for m in received {
        ensure!(want.contains(&m.id), "received an unexpected message {m:?}");
        ensure!(seen.insert(m.id.clone()), "received {} twice", m.id);
    }
    ensure!(
        seen.len() == want.len(),
        "received {} of {} messages",
        seen.len(),
        want.len()
    );
    Ok(())
}
