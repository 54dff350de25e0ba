//! Replication: which store peers exist (identify), what each confirmed holding, and repair
//! (every held message copied to the R store peers closest to its recipient), over one
//! outbound link per store peer. Part of the [`StorePeer`] actor; it only sends copies,
//! never deletes.

use std::sync::atomic::Ordering;

use kith_net::{
    outbound::{spawn_stream_link, LinkSignal},
    protocols::{speaks, MAILBOX},
    swarm::{closest_peers, NetEvent},
};
use kith_protocol::mailbox::{EnvelopeRef, MailboxRequest, MailboxResponse};
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::{batches::held_batches, input::Input, ReplicaLink, StorePeer};

impl StorePeer {
    pub(super) fn on_net(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Connected(_) => {
                self.metrics.connected_peers.fetch_add(1, Ordering::Relaxed);
            }
            NetEvent::Disconnected(peer) => {
                let _ = self.metrics.connected_peers.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |v| Some(v.saturating_sub(1)),
                );
                // It may come back without what we gave it: give it everything again then.
                self.replicated.remove(&peer);
            }
            // A store peer that joins, or comes back, gets copies of what it is responsible for.
            NetEvent::Identified {
                peer, protocols, ..
            } if speaks(&protocols, &MAILBOX) => {
                if self.stores.insert(peer) {
                    tracing::info!(%peer, "store peer joined");
                }
                self.repair();
            }
            _ => {}
        }
    }

    /// Copies what this peer holds to every other peer now responsible for it.
    pub(super) fn repair(&mut self) {
        let mut candidates: Vec<PeerId> = self.stores.iter().copied().collect();
        candidates.push(self.local);
        for (user, _, _) in self.mailboxes.usage() {
            let set = closest_peers(
                &user.peer_id(),
                candidates.iter().copied(),
                self.cfg.replication,
            );
            let held = match self.mailboxes.list(&user) {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "cannot list mailbox for repair");
                    continue;
                }
            };
            let local = self.local;
            for p in set.into_iter().filter(|p| *p != local) {
                let done = self.replicated.entry(p).or_default();
                let missing: Vec<(EnvelopeRef, Vec<u8>)> = held
                    .iter()
                    .filter(|(r, _)| !done.contains(r))
                    .cloned()
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                tracing::debug!(to = %p, %user, n = missing.len(), "replicating");
                let tx = self.replica_link(p);
                for envs in held_batches(&user, missing) {
                    if tx.try_send(MailboxRequest::Replicate(envs)).is_err() {
                        // The link's queue is full: the rest goes at the next repair.
                        break;
                    }
                }
            }
        }
    }

    fn replica_link(&mut self, peer: PeerId) -> mpsc::Sender<MailboxRequest> {
        if let Some(l) = self.replica_links.get(&peer) {
            if !l.tx.is_closed() {
                return l.tx.clone();
            }
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        let (tx, rx) = mpsc::channel(self.cfg.stream_queue);
        let task = spawn_stream_link(
            peer,
            MAILBOX,
            self.net.control(),
            rx,
            self.inputs.clone(),
            move |signal: LinkSignal<MailboxResponse>| Input::Replica {
                peer,
                generation,
                signal,
            },
            self.cancel.child_token(),
        );
        self.replica_links.insert(
            peer,
            ReplicaLink {
                generation,
                tx: tx.clone(),
                task,
            },
        );
        tx
    }
}
