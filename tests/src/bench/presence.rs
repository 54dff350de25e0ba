//! `presence`: one store peer (child process) absorbing signed presence records (heartbeats)
//! from `--presence-clients` clients, `--heartbeats` each: heartbeats/s and the store peer's
//! CPU µs per heartbeat. Baseline: the same records' signatures verified in this process, one
//! thread (the pure CPU floor).

use std::time::Instant;

use anyhow::{bail, ensure, Result};
use kith_node::time::now_ms;
use kith_protocol::{
    mailbox::{MailboxRequest, MailboxResponse},
    LocalIdentity, PresenceRecord, Visibility,
};
use serde_json::{json, Value};

use super::{
    cli::Cli,
    fixture::{metric, ratio, round1, round3, spawn_metered_store},
};
use crate::{
    measure::{proc_sample, self_sample},
    mesh::MailboxClient,
};

/// Presence records written per stream write in the `presence` scenario.
const PRESENCE_BATCH: usize = 256;

pub(super) async fn run(args: &Cli) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let (child, addr, peer, metrics_at, http) =
        spawn_metered_store(args, dir.path(), "kith_heartbeats_total").await?;

    let clients_n = args.presence_clients.max(1);
    let per = args.heartbeats.max(1);
    let total = clients_n * per;
    eprintln!("presence: signing {total} presence records ({clients_n} users)");
    let mut rng = {
        use rand::SeedableRng;
        rand::rngs::StdRng::from_entropy()
    };
    let now = now_ms();
    let mut users = Vec::with_capacity(clients_n);
    for _ in 0..clients_n {
        let me = LocalIdentity::generate(now, &mut rng);
        let records: Vec<PresenceRecord> = (1..=per as u64)
            .map(|seq| PresenceRecord::sign(&me, seq, now + seq, true, Visibility::Everyone))
            .collect();
        users.push((me, records));
    }

    eprintln!("presence: connecting {clients_n} users");
    let mut clients = Vec::with_capacity(clients_n);
    let mut work = Vec::with_capacity(clients_n);
    for (me, records) in &users {
        let mut c = MailboxClient::as_user(me).await?;
        let stream = c.open_at(peer, vec![addr.clone()]).await?;
        clients.push(c);
        work.push((stream, me.user_id(), records.clone()));
    }

    eprintln!("presence: sending heartbeats");
    let hb0 = metric(&http, metrics_at, "kith_heartbeats_total").await?;
    let child0 = proc_sample(child.pid())?;
    let started = Instant::now();
    let tasks: Vec<_> = work
        .into_iter()
        .map(|(mut stream, user, records)| {
            tokio::spawn(async move {
                let last = records.len() as u64;
                for chunk in records.chunks(PRESENCE_BATCH) {
                    let reqs: Vec<MailboxRequest> = chunk
                        .iter()
                        .cloned()
                        .map(MailboxRequest::Presence)
                        .collect();
                    stream.send(&reqs).await?;
                }
                // The store peer handles a stream's requests in order: once it answers this,
                // it has handled every record before it.
                match stream.barrier(&user).await?.1 {
                    MailboxResponse::Presence(_, Some(r)) if r.seq == last => Ok(()),
                    other => bail!("after {last} heartbeats the store peer answers {other:?}"),
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let child1 = proc_sample(child.pid())?;
    let accepted = metric(&http, metrics_at, "kith_heartbeats_total").await? - hb0;
    drop(clients);
    drop(child);
    ensure!(
        accepted as usize == total,
        "the store peer accepted {accepted} of {total} heartbeats"
    );
    let rate = accepted as f64 / elapsed;
    let cpu_us = (child1.cpu_s - child0.cpu_s) * 1e6 / accepted.max(1) as f64;

    eprintln!("baseline: verifying {total} presence records, one thread");
    let records: Vec<PresenceRecord> = users.into_iter().flat_map(|(_, r)| r).collect();
    let (base_rate, base_cpu_us) = tokio::task::spawn_blocking(move || -> Result<(f64, f64)> {
        let c0 = self_sample()?;
        let t0 = Instant::now();
        for r in &records {
            r.verify()
                .map_err(|e| anyhow::anyhow!("baseline record does not verify: {e}"))?;
        }
        let secs = t0.elapsed().as_secs_f64();
        let c1 = self_sample()?;
        let n = records.len() as f64;
        Ok((n / secs, (c1.cpu_s - c0.cpu_s) * 1e6 / n))
    })
    .await??;
    Ok(json!({
        "users": clients_n,
        "heartbeats": accepted,
        "heartbeats_per_s": rate.round(),
        "baseline_verifies_per_s": base_rate.round(),
        "heartbeat_ratio": ratio(rate, base_rate),
        "store_cpu_us_per_heartbeat": round1(cpu_us),
        "store_cpu_cores_busy": round3((child1.cpu_s - child0.cpu_s) / elapsed),
        "baseline_cpu_us_per_verify": round1(base_cpu_us),
        "cpu_per_heartbeat_ratio": ratio(cpu_us, base_cpu_us),
    }))
}

// ---------------------------------------------------------------------------------------
// `idle`
