//! Replication: which store peers exist (identify), what each confirmed holding, and repair
//! (every held message copied to the other store peers its recipient's registration names,
//! the registration itself first), over one outbound link per store peer. Part of the [`StorePeer`] actor; it only sends copies,
//! never deletes.

use std::sync::atomic::Ordering;

use kith_net::{
    outbound::{spawn_stream_link, LinkSignal},
    protocols::{speaks, MAILBOX},
    swarm::NetEvent,
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
                if !self.stores.contains(&peer) && self.stores.len() >= self.cfg.max_known_stores {
                    tracing::debug!(%peer, "too many store peers known; not remembered");
                    return;
                }
                if self.stores.insert(peer) {
                    tracing::info!(%peer, "store peer joined");
                }
                self.repair();
            }
            _ => {}
        }
    }

    /// Copies what this peer holds to every other peer its owner named for it. A mailbox whose
    /// registration no longer names this peer is not repaired from here.
    pub(super) fn repair(&mut self) {
        for (user, _, _) in self.mailboxes.usage() {
            let Some((set, registration)) = self.replica_set(&user) else {
                continue;
            };
            let held = match self.mailboxes.list(&user) {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "cannot list mailbox for repair");
                    continue;
                }
            };
            for p in set {
                let done = self.replicated.entry(p).or_default();
                let missing: Vec<(EnvelopeRef, Vec<u8>)> = held
                    .iter()
                    .filter(|(r, _)| !done.contains(r))
                    .cloned()
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                let (requests, envelopes): (Vec<_>, Vec<_>) = missing
                    .into_iter()
                    .partition(|(r, _)| self.mailboxes.is_request(&user, r).unwrap_or(false));
                tracing::debug!(to = %p, %user, n = envelopes.len() + requests.len(), "replicating");
                let tx = self.replica_link(p);
                // The receiver takes replicas only for a mailbox registered with it.
                if tx
                    .try_send(MailboxRequest::Register(registration.clone()))
                    .is_err()
                {
                    continue;
                }
                let batches = held_batches(&user, envelopes)
                    .into_iter()
                    .map(|b| (b, false))
                    .chain(held_batches(&user, requests).into_iter().map(|b| (b, true)));
                for (envs, request) in batches {
                    let req = if request {
                        MailboxRequest::Replicate {
                            envelopes: Vec::new(),
                            requests: envs,
                        }
                    } else {
                        MailboxRequest::Replicate {
                            envelopes: envs,
                            requests: Vec::new(),
                        }
                    };
                    if tx.try_send(req).is_err() {
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
