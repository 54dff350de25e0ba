//! After the schedule: wait (bounded) until everything acknowledged has arrived and is ✓✓
//! and the store peers are empty, then judge the run from what the API shows.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use kith_node::handle::MessageView;
use kith_protocol::DeliveryStatus;

use super::{
    cluster::Cluster,
    ledger::{Attempt, Ledger, Outcome},
    Failure, RunReport,
};

/// How often the settle re-reads every conversation and store peer.
const SETTLE_POLL: Duration = Duration::from_millis(500);

/// What the API and the store peers showed at one moment.
struct Snapshot {
    /// (user, peer) → the user's conversation with the peer, or why it could not be read.
    convs: HashMap<(usize, usize), Result<Vec<MessageView>, String>>,
    /// Each store peer's `stored_messages`, or why it could not be read.
    stored: Vec<Result<u64, String>>,
}

impl Snapshot {
    fn conv(&self, user: usize, peer: usize) -> &[MessageView] {
        match self.convs.get(&(user, peer)) {
            Some(Ok(v)) => v,
            _ => &[],
        }
    }
}

async fn snapshot(c: &Cluster, ledger: &Ledger) -> Snapshot {
    let mut convs = HashMap::new();
    for u in 0..c.users.len() {
        let before = ledger.snapshot(u);
        for p in (0..c.users.len()).filter(|p| *p != u) {
            let conv = c.conversation(u, p).await.map_err(|e| format!("{e:#}"));
            if let Ok(conv) = &conv {
                ledger.observe_page(u, conv, &before, "page while settling");
            }
            convs.insert((u, p), conv);
        }
    }
    let mut stored = Vec::new();
    for i in 0..c.stores.len() {
        stored.push(c.stored_messages(i).await.map_err(|e| format!("{e:#}")));
    }
    Snapshot { convs, stored }
}

/// Whether every acknowledged message is on its recipient and ✓✓ on its sender, and the
/// store peers hold nothing.
fn complete(acked: &[(&Attempt, &str)], snap: &Snapshot) -> bool {
    let all_there = acked.iter().all(|(a, id)| {
        let arrived = snap
            .conv(a.to, a.from)
            .iter()
            .any(|m| !m.outgoing && m.id == *id);
        let ticked = snap
            .conv(a.from, a.to)
            .iter()
            .any(|m| m.outgoing && m.id == *id && m.status >= DeliveryStatus::Delivered);
        arrived && ticked
    });
    all_there && snap.stored.iter().all(|s| matches!(s, Ok(0)))
}

/// Settles (at most `timeout`) and judges the run.
pub(crate) async fn settle_and_check(
    c: &Cluster,
    ledger: &Ledger,
    timeout: Duration,
) -> anyhow::Result<RunReport> {
    let attempts = ledger.attempts();
    let acked: Vec<(&Attempt, &str)> = attempts
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::Acked(id) => Some((a, id.as_str())),
            _ => None,
        })
        .collect();
    let deadline = tokio::time::Instant::now() + timeout;
    let (snap, settled) = loop {
        let snap = snapshot(c, ledger).await;
        if complete(&acked, &snap) {
            break (snap, true);
        }
        if tokio::time::Instant::now() >= deadline {
            break (snap, false);
        }
        tokio::time::sleep(SETTLE_POLL).await;
    };
    Ok(judge(c, ledger, &attempts, &acked, &snap, settled))
}

fn judge(
    c: &Cluster,
    ledger: &Ledger,
    attempts: &[Attempt],
    acked: &[(&Attempt, &str)],
    snap: &Snapshot,
    settled: bool,
) -> RunReport {
    let mut r = RunReport {
        settled,
        messages: acked.len(),
        unacknowledged: attempts.len() - acked.len(),
        bytes: acked.iter().map(|(a, _)| a.bytes()).sum(),
        ..RunReport::default()
    };
    let mut fail = |what: &str, why: String| {
        r.failures.push(Failure {
            what: what.to_string(),
            why,
        })
    };
    let mut counts = Counts::default();
    for ((u, p), conv) in &snap.convs {
        if let Err(e) = conv {
            fail(
                &format!("user{u}"),
                format!("conversation with user{p} unreadable: {e}"),
            );
        }
    }
    // Nothing twice, on either side, whatever it is.
    for (u, p) in snap.convs.keys() {
        let mut seen: HashMap<(&str, bool), usize> = HashMap::new();
        for m in snap.conv(*u, *p) {
            *seen.entry((m.id.as_str(), m.outgoing)).or_default() += 1;
        }
        for ((id, outgoing), n) in seen.into_iter().filter(|(_, n)| *n > 1) {
            counts.duplicated += 1;
            let side = if outgoing { "sent" } else { "received" };
            fail(
                id,
                format!("user{u} holds it {n} times ({side}, with user{p})"),
            );
        }
    }
    // Every acknowledged message: there once, unaltered, ✓✓.
    let mut ids_issued: HashSet<(usize, &str)> = HashSet::new();
    for (a, id) in acked {
        if !ids_issued.insert((a.from, id)) {
            counts.duplicated += 1;
            fail(id, format!("user{} answered this id for two sends", a.from));
        }
        let received: Vec<&MessageView> = snap
            .conv(a.to, a.from)
            .iter()
            .filter(|m| !m.outgoing && m.id == *id)
            .collect();
        let own = snap
            .conv(a.from, a.to)
            .iter()
            .find(|m| m.outgoing && m.id == *id);
        let best = ledger.best(a.from, id);
        let ticked = best.is_some_and(|s| s >= DeliveryStatus::Sent);
        let shown = best.unwrap_or(DeliveryStatus::Pending);
        match (received.first(), own) {
            // ✓ promised it, or the 201 did and the sender no longer has it either.
            (None, _) if ticked || own.is_none() => {
                counts.lost += 1;
                let gone = if own.is_none() {
                    ", and no longer shows it"
                } else {
                    ""
                };
                fail(
                    id,
                    format!(
                        "lost: user{} answered 201 and showed {shown:?}{gone}; user{} never \
                         received it ({} bytes)",
                        a.from,
                        a.to,
                        a.bytes()
                    ),
                );
            }
            (None, _) => {
                counts.not_delivered += 1;
                fail(
                    id,
                    format!(
                        "never reached ✓ (user{} shows {shown:?}) nor user{} ({} bytes)",
                        a.from,
                        a.to,
                        a.bytes()
                    ),
                );
            }
            (Some(m), own) => {
                if let Some(why) = altered(c, a, m) {
                    counts.altered += 1;
                    fail(id, why);
                }
                match own {
                    None => {
                        counts.lost += 1;
                        fail(
                            id,
                            format!(
                                "arrived on user{}, but user{} no longer shows its own message",
                                a.to, a.from
                            ),
                        );
                    }
                    Some(o) if o.status < DeliveryStatus::Delivered => {
                        counts.not_delivered += 1;
                        fail(
                            id,
                            format!(
                                "arrived on user{}, still {:?} on user{}",
                                a.to, o.status, a.from
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }
    // Nothing that was not sent.
    let acked_ids: HashSet<(usize, usize, &str)> =
        acked.iter().map(|(a, id)| (a.from, a.to, *id)).collect();
    for (u, p) in snap.convs.keys() {
        for m in snap.conv(*u, *p).iter().filter(|m| !m.outgoing) {
            if acked_ids.contains(&(*p, *u, m.id.as_str())) {
                continue;
            }
            let attempt = tag_of(&m.text).and_then(|tag| {
                attempts
                    .iter()
                    .find(|a| a.tag == tag && a.from == *p && a.to == *u)
            });
            match attempt.map(|a| (a, &a.outcome)) {
                Some((a, Outcome::Unknown(_) | Outcome::InFlight)) => {
                    if let Some(why) = altered(c, a, m) {
                        counts.altered += 1;
                        fail(&m.id, why);
                    }
                }
                Some((_, Outcome::Refused(e))) => {
                    counts.unexpected += 1;
                    fail(&m.id, format!("refused ({e}) but arrived on user{u}"));
                }
                Some((_, Outcome::Acked(other))) => {
                    counts.duplicated += 1;
                    fail(&m.id, format!("a second copy of {other} on user{u}"));
                }
                None => {
                    counts.unexpected += 1;
                    fail(&m.id, format!("user{u} holds a message user{p} never sent"));
                }
            }
        }
    }
    // The store peers hold nothing once every recipient has everything.
    for (i, s) in snap.stored.iter().enumerate() {
        match s {
            Ok(0) => {}
            Ok(n) => {
                counts.store_leftover += n;
                fail(&format!("store{i}"), format!("still holds {n} messages"));
            }
            Err(e) => fail(&format!("store{i}"), format!("metrics unreadable: {e}")),
        }
    }
    let regressions = ledger.regressions();
    r.regressions = regressions.len();
    r.failures.extend(regressions);
    r.lost = counts.lost;
    r.duplicated = counts.duplicated;
    r.not_delivered = counts.not_delivered;
    r.altered = counts.altered;
    r.unexpected = counts.unexpected;
    r.store_leftover = counts.store_leftover;
    if !settled && !r.failed() {
        // Unreadable conversations or metrics kept it from settling: still a failure.
        r.not_delivered = 1;
        r.failures.push(Failure {
            what: "run".into(),
            why: "did not settle, and no message says why (see above)".into(),
        });
    }
    r
}

#[derive(Default)]
struct Counts {
    lost: usize,
    duplicated: usize,
    not_delivered: usize,
    altered: usize,
    unexpected: usize,
    store_leftover: u64,
}

/// The tag at the start of a text (`[tag] ...`).
fn tag_of(text: &str) -> Option<&str> {
    text.strip_prefix('[')?.split_once("] ").map(|(t, _)| t)
}

/// How `m` differs from what attempt `a` sent, if it does.
fn altered(c: &Cluster, a: &Attempt, m: &MessageView) -> Option<String> {
    let from = &c.users[a.from].user_id;
    if &m.from != from {
        return Some(format!("arrived from {} instead of user{}", m.from, a.from));
    }
    if m.text != a.text {
        return Some(format!(
            "text altered: sent {} bytes, got {} bytes",
            a.text.len(),
            m.text.len()
        ));
    }
    if let Some(meta) = &a.meta {
        if &m.client_meta != meta {
            return Some(format!(
                "client_meta altered: sent {meta}, got {}",
                m.client_meta
            ));
        }
    }
    if let Some(bytes) = a.media_bytes {
        let size = m.media.as_ref().map(|v| v.size);
        if size != Some(bytes) {
            return Some(format!("media of {bytes} bytes arrived as {size:?}"));
        }
        let got = m.media.as_ref().map(|v| v.hash.as_str());
        match (&a.media_hash, got) {
            (Some(want), Some(got)) if want == got => {}
            // Unknown outcome: the hash was never answered, any hash of a media is fine.
            (None, Some(_)) => {}
            (want, got) => return Some(format!("media hash: sent {want:?}, got {got:?}")),
        }
    }
    None
}
