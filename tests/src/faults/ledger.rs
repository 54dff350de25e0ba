//! What was sent and what was seen: every send attempt with the API's answer, and every
//! status observed per (user, message id), so a status that moves backwards is caught when
//! it is seen, wherever it is seen (an event, a send's answer, a conversation page read
//! after a restart).

use std::{collections::HashMap, sync::Mutex};

use futures::StreamExt;
use kith_node::{
    client::{ApiClient, StreamEvent},
    handle::{Event, MessageView},
};
use kith_protocol::DeliveryStatus;
use serde_json::Value;

use super::Failure;

/// What the API answered to a send.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    /// No answer yet.
    InFlight,
    /// 201: accepted with this id.
    Acked(String),
    /// An error answer (the message must not arrive).
    Refused(String),
    /// No answer: the connection broke (the sender was killed); it may or may not arrive.
    Unknown(String),
}

/// One send attempt.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    /// Sender (user index).
    pub from: usize,
    /// Recipient (user index).
    pub to: usize,
    /// The unique tag carried in the text (and `client_meta`), to recognise an attempt
    /// whose answer was lost.
    pub tag: String,
    /// The text (the caption, for media).
    pub text: String,
    /// The `client_meta` sent (`None` for media, which carries none).
    pub meta: Option<Value>,
    /// For media: its size; the hash comes with the answer.
    pub media_bytes: Option<u64>,
    /// For media: the hash the API answered.
    pub media_hash: Option<String>,
    /// The API's answer.
    pub outcome: Outcome,
}

impl Attempt {
    /// Bytes of content (text and media).
    pub fn bytes(&self) -> u64 {
        self.text.len() as u64 + self.media_bytes.unwrap_or(0)
    }
}

#[derive(Default)]
struct Inner {
    attempts: Vec<Attempt>,
    /// Highest status seen per (user index, message id), and where.
    status: HashMap<(usize, String), (DeliveryStatus, &'static str)>,
    regressions: Vec<Failure>,
    /// The (user, message id) pairs already reported as regressed.
    regressed: std::collections::HashSet<(usize, String)>,
    /// Events missed by a lagging subscriber (their statuses were not checked).
    lagged: u64,
}

/// The run's record, shared by the scheduler, the send tasks and the event watchers.
#[derive(Default)]
pub(crate) struct Ledger {
    inner: Mutex<Inner>,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking holder is a harness bug; its data is still the best record there is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new attempt; returns its index.
    pub fn attempt(&self, a: Attempt) -> usize {
        let mut inner = self.lock();
        inner.attempts.push(a);
        inner.attempts.len() - 1
    }

    /// Records the API's answer to attempt `i`.
    pub fn answer(&self, i: usize, outcome: Outcome, media_hash: Option<String>) {
        let mut inner = self.lock();
        if let Some(a) = inner.attempts.get_mut(i) {
            a.outcome = outcome;
            if media_hash.is_some() {
                a.media_hash = media_hash;
            }
        }
    }

    /// A copy of every attempt.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.lock().attempts.clone()
    }

    /// Every status `user` has shown so far (the highest per message id).
    pub fn snapshot(&self, user: usize) -> HashMap<String, DeliveryStatus> {
        self.lock()
            .status
            .iter()
            .filter(|((u, _), _)| *u == user)
            .map(|((_, id), (s, _))| (id.clone(), *s))
            .collect()
    }

    /// Records that `user` showed message `id` at `status` (seen in `source`). `before` is
    /// the highest status it had shown for `id` before this observation certainly began (so
    /// a lower one is a regression, not a race between two readers); the record keeps the
    /// highest of all.
    pub fn observe(
        &self,
        user: usize,
        id: &str,
        status: DeliveryStatus,
        before: Option<DeliveryStatus>,
        source: &'static str,
    ) {
        let mut inner = self.lock();
        let regressed = before.filter(|b| status < *b);
        // Once per message: a status stuck below what was shown would repeat on every read.
        if let Some(b) = regressed.filter(|_| inner.regressed.insert((user, id.to_string()))) {
            inner.regressions.push(Failure {
                what: id.to_string(),
                why: format!("user{user}: status went back from {b:?} to {status:?} ({source})"),
            });
        }
        let key = (user, id.to_string());
        match inner.status.get(&key) {
            Some((best, _)) if *best >= status => {}
            _ => {
                inner.status.insert(key, (status, source));
            }
        }
    }

    /// Observes every outgoing message of a conversation page fetched after `before` was
    /// taken ([`Ledger::snapshot`]).
    pub fn observe_page(
        &self,
        user: usize,
        messages: &[MessageView],
        before: &HashMap<String, DeliveryStatus>,
        source: &'static str,
    ) {
        for m in messages.iter().filter(|m| m.outgoing) {
            self.observe(user, &m.id, m.status, before.get(&m.id).copied(), source);
        }
    }

    /// The highest status `user` showed for `id`.
    pub fn best(&self, user: usize, id: &str) -> Option<DeliveryStatus> {
        self.lock()
            .status
            .get(&(user, id.to_string()))
            .map(|(s, _)| *s)
    }

    /// The regressions seen so far.
    pub fn regressions(&self) -> Vec<Failure> {
        self.lock().regressions.clone()
    }

    /// Events missed by lagging subscribers.
    pub fn lagged(&self) -> u64 {
        self.lock().lagged
    }

    fn add_lagged(&self, missed: u64) {
        self.lock().lagged += missed;
    }
}

/// Watches `user`'s `/v1/events` until the stream ends (the process died) or the task is
/// aborted, recording every status it shows. An event is compared with what was seen before
/// the subscription and with earlier events of the same stream (which the node emits in
/// order); not with pages read meanwhile, which may be newer than an event still in flight.
pub(crate) fn watch(
    ledger: std::sync::Arc<Ledger>,
    user: usize,
    api: ApiClient,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = ledger.snapshot(user);
        let Ok(stream) = api.events().await else {
            return;
        };
        let mut last: HashMap<String, DeliveryStatus> = HashMap::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let (id, status) = match item {
                Ok(StreamEvent::Event(Event::Message { message, .. })) if message.outgoing => {
                    (message.id, message.status)
                }
                Ok(StreamEvent::Event(Event::Status { id, status, .. })) => (id, status),
                Ok(StreamEvent::Lagged { missed }) => {
                    ledger.add_lagged(missed);
                    continue;
                }
                Ok(_) => continue,
                Err(_) => break,
            };
            let before = start.get(&id).copied().max(last.get(&id).copied());
            ledger.observe(user, &id, status, before, "event");
            let l = last.entry(id).or_insert(status);
            *l = (*l).max(status);
        }
    })
}
