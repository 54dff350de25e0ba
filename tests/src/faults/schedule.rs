//! The seeded scheduler of a fault run: which action each step takes, whom it kills and when
//! it restarts them. Every choice is drawn from one ChaCha stream seeded by the run's seed,
//! in an order that does not depend on timing, so a seed always makes the same schedule.
//!
//! Sends run as tasks (a few in flight), so a kill lands while requests are open: the
//! sender of the last send dies mid-send, its recipient mid-commit, a store peer
//! mid-deposit, or — right after another store peer came back — mid-repair.

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Result};
use kith_node::client::ApiClient;
use kith_protocol::payload::MAX_TEXT_LEN;
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{
    cluster::Cluster,
    ledger::{Attempt, Ledger, Outcome},
    BACKLOG_BYTES, STORE_PEERS, USERS,
};

/// Longest pause between two steps, milliseconds (the pause is random below it).
const STEP_PAUSE_MS: u64 = 120;
/// Sends (and reads) in flight at most.
const MAX_IN_FLIGHT: usize = 6;
/// Largest media file sent, bytes.
const MAX_MEDIA: usize = 64 * 1024;
/// Size of the texts that make the stopped user's backlog: near the limit.
const BACKLOG_TEXT_MIN: usize = 40 * 1024;
/// Most steps after a kill before the process is started again.
const MAX_DOWN_STEPS: usize = 4;
/// A run's steps may stretch to this many times the configured number while the backlog
/// is still being built.
const STEP_STRETCH: usize = 4;

/// What the schedule did.
pub(crate) struct Stats {
    /// `kill -9`s.
    pub kills: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    User(usize),
    Store(usize),
}

/// The scheduler's state.
struct Sched<'a> {
    c: &'a mut Cluster,
    ledger: Arc<Ledger>,
    rng: ChaCha8Rng,
    seed: u64,
    tasks: JoinSet<()>,
    /// Processes down, with the step at which they start again.
    restarts: Vec<(usize, Target)>,
    /// The user stopped for a backlog, and the bytes sent to it so far.
    long_down: Option<(usize, usize)>,
    /// (sender, recipient) of the last send.
    last_send: Option<(usize, usize)>,
    /// A store peer started again at this step (a repair is running).
    repairing: Option<(usize, usize)>,
    kills: usize,
    tags: u64,
}

/// Runs the schedule: `steps` steps (more while the backlog is being built).
pub(crate) async fn drive(c: &mut Cluster, seed: u64, steps: usize) -> Result<Stats> {
    let ledger = c.ledger();
    let mut s = Sched {
        c,
        ledger,
        rng: ChaCha8Rng::seed_from_u64(seed),
        seed,
        tasks: JoinSet::new(),
        restarts: Vec::new(),
        long_down: None,
        last_send: None,
        repairing: None,
        kills: 0,
        tags: 0,
    };
    let steps = steps.max(4);
    let backlog_at = s.rng.gen_range(1..steps / 3 + 2);
    let lose_at = s.rng.gen_range(1..steps);
    let lost = s.rng.gen_range(0..STORE_PEERS);
    let mut backlog_done = false;
    let mut step = 0;
    while step < steps || !backlog_done {
        step += 1;
        if step > steps * STEP_STRETCH {
            bail!(
                "the backlog was not built in {} steps",
                steps * STEP_STRETCH
            );
        }
        let pause = s.rng.gen_range(0..=STEP_PAUSE_MS);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        s.restart_due(step).await?;
        s.reap().await;
        if step == backlog_at {
            s.stop_for_backlog()?;
        }
        if step == lose_at {
            // Lost for good: deleted, and a fresh store peer on its port a few steps later.
            s.c.lose_store(lost)?;
            s.kills += 1;
            s.restarts.retain(|(_, t)| *t != Target::Store(lost));
            let at = step + s.rng.gen_range(1..=MAX_DOWN_STEPS);
            s.restarts.push((at, Target::Store(lost)));
        }
        if let Some((u, bytes)) = s.long_down {
            if bytes >= BACKLOG_BYTES {
                s.long_down = None;
                backlog_done = true;
                s.c.note(&format!("backlog of {bytes} bytes sent to user{u}"));
                let at = step + s.rng.gen_range(1..=MAX_DOWN_STEPS);
                s.restarts.push((at, Target::User(u)));
            } else if s.rng.gen_bool(0.6) {
                let len = s.rng.gen_range(BACKLOG_TEXT_MIN..=MAX_TEXT_LEN);
                if let Some(from) = s.pick_sender(u) {
                    s.send_text(from, u, len)?;
                    if let Some((_, b)) = &mut s.long_down {
                        *b += len;
                    }
                }
                continue;
            }
        }
        s.random_action(step)?;
    }
    // Let the last requests finish (each is bounded by the client's timeout).
    while s.tasks.join_next().await.is_some() {}
    s.c.note(&format!("schedule done after {step} steps"));
    Ok(Stats { kills: s.kills })
}

impl Sched<'_> {
    /// Starts what is due at `step`.
    async fn restart_due(&mut self, step: usize) -> Result<()> {
        let due: Vec<Target> = self
            .restarts
            .iter()
            .filter(|(at, _)| *at <= step)
            .map(|(_, t)| *t)
            .collect();
        self.restarts.retain(|(at, _)| *at > step);
        for t in due {
            match t {
                Target::User(u) => self.c.start_user(u).await?,
                Target::Store(i) => {
                    self.c.start_store(i).await?;
                    self.repairing = Some((i, step));
                }
            }
        }
        Ok(())
    }

    /// Collects finished sends; waits while too many are in flight.
    async fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
        while self.tasks.len() >= MAX_IN_FLIGHT {
            self.tasks.join_next().await;
        }
    }

    /// Stops a random running user until it has a backlog of [`BACKLOG_BYTES`].
    fn stop_for_backlog(&mut self) -> Result<()> {
        let u = self.rng.gen_range(0..USERS);
        self.restarts.retain(|(_, t)| *t != Target::User(u));
        self.c.kill_user(u)?;
        self.c.note(&format!("user{u} stays down for a backlog"));
        self.kills += 1;
        self.long_down = Some((u, 0));
        Ok(())
    }

    /// A running user other than `not`, if any.
    fn pick_sender(&mut self, not: usize) -> Option<usize> {
        let up: Vec<usize> = (0..USERS)
            .filter(|u| *u != not && self.c.user_up(*u))
            .collect();
        up.choose(&mut self.rng).copied()
    }

    /// One random action: a text, a media file, a read, a kill, or nothing.
    fn random_action(&mut self, step: usize) -> Result<()> {
        let roll = self.rng.gen_range(0..100);
        let from = self.rng.gen_range(0..USERS);
        let to = (from + self.rng.gen_range(1..USERS)) % USERS;
        let up = self.c.user_up(from);
        match roll {
            0..=54 if up => {
                let len = match self.rng.gen_range(0..10) {
                    0..=6 => self.rng.gen_range(1..=512),
                    7..=8 => self.rng.gen_range(512..=8 * 1024),
                    _ => self.rng.gen_range(8 * 1024..=MAX_TEXT_LEN),
                };
                self.send_text(from, to, len)
            }
            55..=62 if up => self.send_media(from, to),
            63..=72 if up => self.mark_read(from, to),
            73..=86 => self.kill(step),
            _ => Ok(()),
        }
    }

    fn next_tag(&mut self) -> String {
        self.tags += 1;
        format!("s{}-{}", self.seed, self.tags)
    }

    /// A text of exactly `len` bytes (at least the tag) starting with `[tag] `.
    fn text_of(&mut self, tag: &str, len: usize) -> String {
        let mut t = format!("[{tag}] ");
        while t.len() < len {
            // Some multi-byte characters, so byte and char lengths differ.
            let c = match self.rng.gen_range(0..40) {
                0 if t.len() + 2 <= len => 'é',
                1 => '\n',
                _ => self.rng.gen_range(b'a'..=b'z') as char,
            };
            t.push(c);
        }
        t
    }

    /// A random `client_meta` object carrying the tag.
    fn meta_of(&mut self, tag: &str) -> Value {
        let note_len = self.rng.gen_range(0..200);
        let note: String = (0..note_len)
            .map(|_| self.rng.gen_range(b' '..=b'~') as char)
            .collect();
        json!({
            "tag": tag,
            "note": note,
            "n": self.rng.gen::<u32>(),
            "nested": { "flag": self.rng.gen_bool(0.5), "list": [self.rng.gen::<u16>(), null] },
        })
    }

    fn send_text(&mut self, from: usize, to: usize, len: usize) -> Result<()> {
        let tag = self.next_tag();
        let text = self.text_of(&tag, len.min(MAX_TEXT_LEN));
        let meta = self.meta_of(&tag);
        let api = self.c.api(from)?;
        let to_id = self.c.users[to].user_id.clone();
        let i = self.ledger.attempt(Attempt {
            from,
            to,
            tag,
            text: text.clone(),
            meta: Some(meta.clone()),
            media_bytes: None,
            media_hash: None,
            outcome: Outcome::InFlight,
        });
        let ledger = self.ledger.clone();
        self.last_send = Some((from, to));
        self.tasks.spawn(async move {
            let outcome = match api.send_text(&to_id, &text, Some(&meta)).await {
                Ok(sent) => Outcome::Acked(sent.id),
                Err(e) => failed(&e),
            };
            ledger.answer(i, outcome, None);
        });
        Ok(())
    }

    fn send_media(&mut self, from: usize, to: usize) -> Result<()> {
        let tag = self.next_tag();
        let caption = format!("[{tag}] media");
        let len = self.rng.gen_range(1..=MAX_MEDIA);
        let mut bytes = vec![0u8; len];
        self.rng.fill(&mut bytes[..]);
        let api = self.c.api(from)?;
        let to_id = self.c.users[to].user_id.clone();
        let i = self.ledger.attempt(Attempt {
            from,
            to,
            tag: tag.clone(),
            text: caption.clone(),
            meta: None,
            media_bytes: Some(len as u64),
            media_hash: None,
            outcome: Outcome::InFlight,
        });
        let ledger = self.ledger.clone();
        self.last_send = Some((from, to));
        self.tasks.spawn(async move {
            let name = format!("{tag}.bin");
            let body = reqwest::Body::from(bytes);
            let sent = api
                .send_media(
                    &to_id,
                    &name,
                    "application/octet-stream",
                    Some(&caption),
                    body,
                )
                .await;
            match sent {
                Ok(m) => ledger.answer(i, Outcome::Acked(m.id), Some(m.hash)),
                Err(e) => ledger.answer(i, failed(&e), None),
            }
        });
        Ok(())
    }

    fn mark_read(&mut self, user: usize, peer: usize) -> Result<()> {
        let api: ApiClient = self.c.api(user)?;
        let peer_id = self.c.users[peer].user_id.clone();
        // Its answer proves nothing by itself: the senders' statuses show the effect.
        self.tasks.spawn(async move {
            let _ = api.mark_read(&peer_id).await;
        });
        Ok(())
    }

    /// Kills one process, if nothing else is down (besides the stopped user): the sender of
    /// the last send (mid-send), its recipient (mid-commit), a store peer (mid-deposit), or
    /// another store peer right after one came back (mid-repair).
    fn kill(&mut self, step: usize) -> Result<()> {
        let kind = self.rng.gen_range(0..4);
        let store = self.rng.gen_range(0..STORE_PEERS);
        let after = self.rng.gen_range(0..=MAX_DOWN_STEPS);
        if !self.restarts.is_empty() {
            return Ok(());
        }
        let target = match (kind, self.last_send, self.repairing) {
            (0, Some((from, _)), _) => Target::User(from),
            (1, Some((_, to)), _) => Target::User(to),
            (3, _, Some((back, at))) if step <= at + 2 => {
                Target::Store((back + 1 + store % (STORE_PEERS - 1)) % STORE_PEERS)
            }
            _ => Target::Store(store),
        };
        match target {
            Target::User(u) if self.c.user_up(u) && self.long_down.map(|l| l.0) != Some(u) => {
                self.c.kill_user(u)?
            }
            Target::Store(i) if self.c.store_up(i) => self.c.kill_store(i)?,
            _ => return Ok(()),
        }
        self.kills += 1;
        self.restarts.push((step + after, target));
        Ok(())
    }
}

/// The outcome of a send the API did not accept: an answer is a refusal; no answer (the
/// process died mid-request) leaves it unknown.
fn failed(e: &kith_node::client::ClientError) -> Outcome {
    match e.status() {
        Some(_) => Outcome::Refused(e.to_string()),
        None => Outcome::Unknown(e.to_string()),
    }
}
