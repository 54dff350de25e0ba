//! `store`: one store peer (`kith-bootstrap --store`, a child process) under `--depositors`
//! concurrent raw `/kith/mailbox/1` clients depositing `--store-messages` pre-sealed texts
//! for 64 recipients (registered with it, deposits carrying their access keys, as contacts'
//! deposits do): durable deposits/s, the store peer's CPU µs per deposit, and its RSS
//! growth extrapolated to 1M held messages. Baseline: sled inserts of the same number of
//! values of the same size with a flush every 256, in this process.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use kith_node::time::now_ms;
use kith_protocol::{
    mailbox::{MailboxRequest, MailboxResponse},
    Envelope, LocalIdentity, MailboxAccessKey, MailboxRegistration, UserId,
};
use serde_json::{json, Value};

use super::{
    cli::Cli,
    fixture::{baseline_sled, metric, ratio, round1, round3, spawn_metered_store, text, MIB},
};
use crate::{
    measure::{proc_sample, self_sample},
    mesh::{MailboxClient, MailboxStream, Sealer},
};

/// Deposits each depositor keeps unanswered at most (below the store peer's per-stream
/// answer queue of 1,024, whose overflow it drops).
const DEPOSIT_WINDOW: usize = 256;

/// Deposits written per stream write.
const DEPOSIT_BATCH: usize = 64;

/// Recipients the `store` scenario's envelopes are addressed to.
const STORE_RECIPIENTS: usize = 64;

/// Deposits `envs` on `stream` keeping at most [`DEPOSIT_WINDOW`] unanswered; returns
/// (stored, refused).
async fn deposit_all(
    stream: &mut MailboxStream,
    envs: Vec<(Envelope, MailboxAccessKey)>,
) -> Result<(usize, usize)> {
    let n = envs.len();
    let mut it = envs.into_iter();
    let (mut sent, mut answered, mut stored, mut refused) = (0, 0, 0, 0);
    while answered < n {
        if sent < n && sent - answered + DEPOSIT_BATCH <= DEPOSIT_WINDOW {
            let batch: Vec<MailboxRequest> = it
                .by_ref()
                .take(DEPOSIT_BATCH)
                .map(|(env, key)| MailboxRequest::Deposit(env, Some(key)))
                .collect();
            sent += batch.len();
            stream.send(&batch).await?;
            continue;
        }
        match stream.recv().await? {
            MailboxResponse::Stored(_) => {
                stored += 1;
                answered += 1;
            }
            MailboxResponse::Refused(..) => {
                refused += 1;
                answered += 1;
            }
            _ => {}
        }
    }
    Ok((stored, refused))
}

pub(super) async fn run(args: &Cli) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let (child, addr, peer, metrics_at, http) =
        spawn_metered_store(args, dir.path(), "kith_stored_messages").await?;

    let depositors = args.depositors.max(1);
    let per = args.store_messages.div_ceil(depositors).max(1);
    let total = per * depositors;
    eprintln!(
        "store: sealing {total} envelopes ({depositors} depositors, {STORE_RECIPIENTS} recipients)"
    );
    let expires = now_ms() + 7 * 24 * 3600 * 1000;
    let mut rng = {
        use rand::SeedableRng;
        rand::rngs::StdRng::from_entropy()
    };
    let recipients: Vec<(LocalIdentity, MailboxAccessKey)> = (0..STORE_RECIPIENTS)
        .map(|_| {
            (
                LocalIdentity::generate(now_ms(), &mut rng),
                MailboxAccessKey::generate(&mut rng),
            )
        })
        .collect();
    let store_user = UserId::from_peer_id(peer)?;
    let registrations: Vec<MailboxRequest> = recipients
        .iter()
        .map(|(id, key)| {
            MailboxRequest::Register(MailboxRegistration::new(
                id,
                vec![store_user],
                key,
                now_ms(),
            ))
        })
        .collect();
    let mut batches = Vec::with_capacity(depositors);
    for d in 0..depositors {
        let mut sealer = Sealer::new();
        let mut envs = Vec::with_capacity(per);
        for i in 0..per {
            let (to, key) = &recipients[(d + i) % STORE_RECIPIENTS];
            envs.push((sealer.text(&to.bundle(), &text(i), expires)?, *key));
        }
        batches.push(envs);
    }

    // Idle footprint before any depositor connects.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = proc_sample(child.pid())?.rss;

    eprintln!("store: connecting {depositors} depositors");
    let mut clients = Vec::with_capacity(depositors);
    let mut streams = Vec::with_capacity(depositors);
    for _ in 0..depositors {
        let mut c = MailboxClient::random().await?;
        streams.push(c.open_at(peer, vec![addr.clone()]).await?);
        clients.push(c);
    }

    // The recipients name this store peer for their mailboxes (as their nodes would).
    if let Some(first) = streams.first_mut() {
        first.send(&registrations).await?;
        first.barrier(&store_user).await?;
    }

    eprintln!("store: depositing");
    let child0 = proc_sample(child.pid())?;
    let self0 = self_sample()?;
    let started = Instant::now();
    let tasks: Vec<_> = streams
        .into_iter()
        .zip(batches)
        .map(|(mut s, envs)| tokio::spawn(async move { deposit_all(&mut s, envs).await }))
        .collect();
    let (mut stored, mut refused) = (0usize, 0usize);
    for t in tasks {
        let (s, r) = t.await??;
        stored += s;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let child1 = proc_sample(child.pid())?;
    let self1 = self_sample()?;
    ensure!(
        refused == 0,
        "the store peer refused {refused} of {total} deposits"
    );

    drop(clients);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = metric(&http, metrics_at, "kith_stored_messages").await?;
    let held_bytes = metric(&http, metrics_at, "kith_stored_bytes").await?;
    let holding_rss = proc_sample(child.pid())?.rss;
    drop(child);

    let rate = stored as f64 / elapsed;
    let cpu_us = (child1.cpu_s - child0.cpu_s) * 1e6 / stored.max(1) as f64;
    let dep_cpu_us = (self1.cpu_s - self0.cpu_s) * 1e6 / stored.max(1) as f64;
    let per_msg = held_bytes as f64 / held.max(1) as f64;
    let rss_per_1m = holding_rss.saturating_sub(idle_rss) as f64 / held.max(1) as f64 * 1e6 / MIB;
    let payload_per_1m = per_msg * 1e6 / MIB;

    eprintln!("baseline: sled inserts of {total} values of {per_msg:.0} bytes, flush every 256");
    let b0 = self_sample()?;
    let base_rate = baseline_sled(dir.path(), total, per_msg.max(1.0) as usize)?;
    let b1 = self_sample()?;
    let base_cpu_us = (b1.cpu_s - b0.cpu_s) * 1e6 / total as f64;
    Ok(json!({
        "depositors": depositors,
        "messages": stored,
        "deposits_per_s": rate.round(),
        "baseline_sled_durable_inserts_per_s": base_rate.round(),
        "deposit_ratio": ratio(rate, base_rate),
        "store_cpu_us_per_deposit": round1(cpu_us),
        "store_cpu_cores_busy": round3((child1.cpu_s - child0.cpu_s) / elapsed),
        "depositors_cpu_us_per_deposit": round1(dep_cpu_us),
        "baseline_sled_cpu_us_per_insert": round1(base_cpu_us),
        "cpu_per_deposit_ratio": ratio(cpu_us, base_cpu_us),
        "held_messages": held,
        "store_bytes_per_msg": per_msg.round(),
        "store_rss_idle_mib": round1(idle_rss as f64 / MIB),
        "store_rss_holding_mib": round1(holding_rss as f64 / MIB),
        "store_rss_mib_per_1m_held_extrapolated": round1(rss_per_1m),
        "baseline_payload_mib_per_1m": round1(payload_per_1m),
        "rss_per_1m_ratio": ratio(rss_per_1m, payload_per_1m),
        // What bounds the growth: the store peer's page cache (its default unless given).
        "store_cache_mib": args
            .store_cache_mib
            .unwrap_or(kith_bootstrap::mailboxes::DEFAULT_CACHE_BYTES >> 20),
        "held_envelope_mib": round1(held_bytes as f64 / MIB),
        "rss_growth_over_held_bytes_ratio": ratio(
            holding_rss.saturating_sub(idle_rss) as f64,
            held_bytes as f64,
        ),
    }))
}

// ---------------------------------------------------------------------------------------
// `presence`
