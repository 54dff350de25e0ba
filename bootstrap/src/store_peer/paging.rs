//! A subscription's listing of what its mailbox holds, sent a page at a time as its stream
//! takes it. Part of the [`StorePeer`] actor: a `Subscribe` costs one page read and queued,
//! never the whole mailbox cloned on the actor, and a subscriber that stops reading stops
//! the listing (its queue stays full) instead of growing it.

use std::{sync::atomic::Ordering, time::Instant};

use kith_protocol::{
    mailbox::{MailboxResponse, MAX_BATCH},
    UserId,
};
use tokio::sync::mpsc;

use super::{batches::held_batches, StorePeer};

/// Most listing frames queued on a stream at once; the next page waits for room.
const PAGES_QUEUED: usize = 2;

/// Where one subscription's listing is.
pub(super) struct Paging {
    user: UserId,
    /// The key to continue after (`None`: from the start).
    after: Option<Vec<u8>>,
    out: mpsc::Sender<MailboxResponse>,
}

impl Paging {
    /// A listing of `user`'s mailbox from the start, sent to `out`.
    pub(super) fn new(user: UserId, out: mpsc::Sender<MailboxResponse>) -> Self {
        Paging {
            user,
            after: None,
            out,
        }
    }
}

impl StorePeer {
    /// Sends the next page of every listing whose stream has room.
    pub(super) fn send_pages(&mut self) {
        let conns: Vec<u64> = self.paging.keys().copied().collect();
        for conn in conns {
            self.send_pages_of(conn);
        }
    }

    /// Sends the next pages of stream `conn`'s listing while its queue has room; forgets
    /// the listing once it is complete (or its stream is gone).
    pub(super) fn send_pages_of(&mut self, conn: u64) {
        for _ in 0..PAGES_QUEUED {
            if !self.send_page_of(conn) {
                break;
            }
        }
    }

    /// Sends one page of stream `conn`'s listing if its queue has room; true if one went
    /// and more may follow.
    fn send_page_of(&mut self, conn: u64) -> bool {
        let Some(p) = self.paging.get_mut(&conn) else {
            return false;
        };
        if p.out.is_closed() {
            self.paging.remove(&conn);
            return false;
        }
        let queued = p.out.max_capacity() - p.out.capacity();
        if queued >= PAGES_QUEUED {
            return false;
        }
        // A page goes only where its bytes surely fit the stream's byte bound (a page turned
        // away there would be skipped, not delayed); an empty queue takes one in any case.
        let queued_bytes = self
            .queued
            .get(&conn)
            .map_or(0, |q| q.load(Ordering::Acquire));
        if queued_bytes > 0
            && queued_bytes.saturating_add(2 * self.cfg.page_bytes) > self.cfg.stream_queue_bytes
        {
            return false;
        }
        let started = Instant::now();
        let page = match self.mailboxes.list_page(
            &p.user,
            p.after.as_deref(),
            self.cfg.page_bytes,
            MAX_BATCH,
        ) {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "cannot list mailbox");
                self.paging.remove(&conn);
                return false;
            }
        };
        let bytes: u64 = page.held.iter().map(|(_, b)| b.len() as u64).sum();
        self.metrics
            .largest_listing_bytes
            .fetch_max(bytes, Ordering::Relaxed);
        let user = p.user;
        let out = p.out.clone();
        let more = match page.next {
            Some(next) => {
                p.after = Some(next);
                true
            }
            None => {
                self.paging.remove(&conn);
                false
            }
        };
        if !page.held.is_empty() {
            tracing::debug!(%user, n = page.held.len(), "listing a page of the mailbox");
        }
        for envs in held_batches(&user, page.held) {
            self.deliver(conn, &out, envs);
        }
        self.metrics
            .latency
            .fetch_page
            .observe(started.elapsed().as_secs_f64());
        more
    }
}
