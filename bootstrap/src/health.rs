//! What `/healthz` says about the peer: up and running (with what it serves), shutting down,
//! or failed (one of its tasks ended on its own: the swarm or the store is gone while the
//! process lives on). A load balancer or orchestrator stops sending users to a peer the
//! moment it answers 503, instead of finding out from refused connections.

use std::time::Instant;

use libp2p::PeerId;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

/// The state `/healthz` reports. Cheap to read from any task.
#[derive(Debug)]
pub struct Health {
    /// Which peer answers (an operator behind one address can tell which one is up).
    peer_id: PeerId,
    /// When the peer started, for `uptime_s`.
    started: Instant,
    /// Whether it is a store peer.
    store: bool,
    /// Whether it is a circuit relay.
    relay: bool,
    /// The token that stops the peer's tasks: once cancelled, the peer is shutting down.
    stopping: CancellationToken,
    /// The peer's long-lived tasks (swarm, store, blobs): each runs until `stopping`, so one
    /// that has finished before it means the peer no longer does its job.
    tasks: Vec<AbortHandle>,
}

/// The peer's state as `/healthz` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every task runs.
    Ok,
    /// Shutdown has begun.
    Stopping,
    /// A task ended before shutdown.
    Failed,
}

impl Health {
    /// The health of a peer whose `tasks` end when `stopping` is cancelled.
    pub fn new(
        peer_id: PeerId,
        (store, relay): (bool, bool),
        stopping: CancellationToken,
        tasks: Vec<AbortHandle>,
    ) -> Self {
        Health {
            peer_id,
            started: Instant::now(),
            store,
            relay,
            stopping,
            tasks,
        }
    }

    /// The peer reported on.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Where the peer is now.
    pub fn status(&self) -> Status {
        if self.stopping.is_cancelled() {
            Status::Stopping
        } else if self.tasks.iter().any(AbortHandle::is_finished) {
            Status::Failed
        } else {
            Status::Ok
        }
    }

    /// The `/healthz` body: `{"status":"ok"|"stopping"|"failed","peer_id":…,"uptime_s":…,
    /// "store":…,"relay":…}`. Written by hand: every value is a number, a bool, a fixed word or
    /// a base58 peer id, none of which needs escaping.
    pub fn json(&self) -> String {
        let status = match self.status() {
            Status::Ok => "ok",
            Status::Stopping => "stopping",
            Status::Failed => "failed",
        };
        format!(
            "{{\"status\":\"{status}\",\"peer_id\":\"{}\",\"uptime_s\":{},\"store\":{},\"relay\":{}}}\n",
            self.peer_id,
            self.started.elapsed().as_secs(),
            self.store,
            self.relay
        )
    }
}
