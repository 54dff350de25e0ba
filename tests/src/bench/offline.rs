//! `offline`: messages to an offline user through R=3 store peers (W=2): deposit rate, time
//! for the returning user to hold all of them, bytes per message on a store peer. Baseline:
//! the same number of envelope-sized values inserted into sled with a flush every batch (the
//! durable write the store peers must do anyway). With `--vs-ejabberd`, also ejabberd's
//! offline store and drain of as many messages, in the same invocation.

use std::{collections::BTreeMap, time::Instant};

use anyhow::{bail, Context, Result};
use kith_node::Event;
use kith_protocol::DeliveryStatus;
use serde_json::{json, Value};

use super::fixture::{baseline_sled, blast, introduce, progress, ratio, start, PHASE_TIMEOUT};

pub(super) async fn run(messages: usize, ejabberd: Option<std::path::PathBuf>) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let mut stores = Vec::new();
    let mut addrs: Vec<libp2p::Multiaddr> = Vec::new();
    for i in 0..3 {
        let mut cfg = kith_bootstrap::Config::loopback_store(dir.path().join(format!("store{i}")));
        cfg.peers = addrs.clone();
        if let Some(store) = cfg.store.as_mut() {
            // Room for the whole run in one mailbox, and no depositor rate limit: this
            // measures the store path, not the quotas.
            store.limits.max_messages_per_mailbox =
                store.limits.max_messages_per_mailbox.max(2 * messages + 16);
            store.limits.deposits_per_minute = u32::MAX;
            store.limits.deposits_per_ip_per_minute = u32::MAX;
        }
        let s = kith_bootstrap::start(cfg).await?;
        addrs.extend(s.listen_addrs.iter().cloned());
        stores.push(s);
    }
    let alice = start(dir.path(), "alice", addrs.clone()).await?;
    let bob = start(dir.path(), "bob", addrs.clone()).await?;
    introduce(&alice.node, &bob.node).await?;
    blast(&alice.node, bob.user_id(), 1, DeliveryStatus::Delivered).await?;
    let bob_id = bob.user_id();
    bob.shutdown().await?;

    eprintln!("offline: depositing {messages} messages for an offline user");
    // The first attempt finds bob gone; wait until deposits flow before timing.
    blast(&alice.node, bob_id, 1, DeliveryStatus::Sent).await?;
    let t = blast(&alice.node, bob_id, messages, DeliveryStatus::Sent).await?;
    let deposit_rate = messages as f64 / t.as_secs_f64();
    let (held, bytes) = stores.iter().fold((0u64, 0u64), |acc, s| {
        use std::sync::atomic::Ordering::Relaxed;
        (
            acc.0.max(s.metrics.stored_messages.load(Relaxed)),
            acc.1.max(s.metrics.stored_bytes.load(Relaxed)),
        )
    });
    let per_msg = if held > 0 {
        bytes as f64 / held as f64
    } else {
        0.0
    };

    eprintln!("offline: bob returns");
    let started = Instant::now();
    let bob = start(dir.path(), "bob", addrs.clone()).await?;
    let mut events = bob.node.subscribe();
    let mut got: BTreeMap<String, ()> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    // One warm-up message was deposited too.
    while got.len() < messages + 1 {
        match tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("drain timed out")?
        {
            Ok(Event::Message { message, .. }) if !message.outgoing => {
                got.insert(message.id, ());
                progress("received", got.len(), messages + 1);
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => {
                bail!("events lagged by {k}")
            }
            Err(e) => bail!("event stream closed: {e}"),
        }
    }
    let drain = started.elapsed();
    bob.shutdown().await?;
    alice.shutdown().await?;
    for s in stores {
        s.shutdown().await;
    }

    eprintln!("baseline: sled inserts with a flush per batch");
    let base_rate = baseline_sled(dir.path(), messages, per_msg.max(1.0) as usize)?;
    let anchor = match ejabberd {
        Some(dir) => vs_ejabberd(&dir, deposit_rate, drain.as_secs_f64()),
        None => json!(null),
    };
    Ok(json!({
        "ejabberd": anchor,
        "messages": messages,
        "deposit_msgs_per_s": deposit_rate.round(),
        "baseline_sled_durable_inserts_per_s": base_rate.round(),
        "deposit_ratio": ratio(deposit_rate, base_rate),
        "drain_s": (drain.as_secs_f64() * 1000.0).round() / 1000.0,
        "store_bytes_per_msg": per_msg.round(),
    }))
}

/// ejabberd's offline path (10,000 messages stored for an offline user, then drained when it
/// logs in) and Kith's ratios to it. A failure to run the anchor is reported in the figures.
fn vs_ejabberd(dir: &std::path::Path, deposit_rate: f64, drain_s: f64) -> Value {
    let figures = || -> Result<Value> {
        let results = super::ejabberd::run(dir, "offline")?;
        let find = |mode: &str| {
            results
                .iter()
                .find(|r| r.get("mode").map(String::as_str) == Some(mode))
                .with_context(|| format!("ejabberd printed no {mode} result"))
        };
        let (send, recv) = (find("offline-send")?, find("offline-recv")?);
        let msgs = super::ejabberd::number(send, "msgs")?;
        let stored_s = super::ejabberd::number(send, "stored_s")?;
        let drained_s = super::ejabberd::number(recv, "all_after_presence_s")?;
        let rate = msgs / stored_s.max(1e-9);
        Ok(json!({
            "messages": msgs,
            "stored_msgs_per_s": rate.round(),
            "drain_s": drained_s,
            "kith_deposit_ratio": ratio(deposit_rate, rate),
            "kith_drain_ratio": ratio(drain_s, drained_s),
        }))
    };
    super::ejabberd::figures_or_error(figures())
}
