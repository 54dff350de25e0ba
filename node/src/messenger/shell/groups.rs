//! Group membership: creating a group, changing it (add, remove, leave, rename), and
//! applying the changes members send us. The rules (who may sign what, epoch order, forks)
//! are [`kith_protocol::group::GroupChain`]'s; this acts on its answers.
//!
//! Every change travels as a [`GroupUpdate`] over each member's one-to-one session: to the
//! members before the change (so a removed member learns it is out) and after it (so a new
//! member gets the state, with the other members' bundles so it can seal to them).

use kith_protocol::group::{
    GroupChain, GroupChange, GroupError, GroupUpdate, Offered, SenderKeyGift, SignedGroupState,
    MAX_GROUP_MEMBERS, MAX_UPDATE_BUNDLES,
};
use kith_protocol::GroupId;

use crate::messenger::*;
use crate::store::GroupRecord;
use crate::view::GroupView;

impl Messenger {
    /// Group commands from the handle.
    pub(in crate::messenger) fn on_group_command(&mut self, cmd: Command) {
        match cmd {
            Command::CreateGroup {
                name,
                members,
                reply,
            } => {
                let result = self.create_group(&name, members);
                self.reply_released(reply, result);
            }
            Command::ChangeGroup {
                group,
                change,
                reply,
            } => {
                let result = self.change_group(group, change);
                self.reply_released(reply, result);
            }
            Command::SendGroupText {
                group,
                text,
                client_meta,
                reply,
            } => {
                let result = self.send_group_text(group, text, client_meta);
                self.reply_released(reply, result);
            }
            Command::SendGroupMedia {
                group,
                media,
                reply,
            } => {
                let result = self.send_group_media(group, *media);
                self.reply_released(reply, result);
            }
            Command::MarkGroupRead { group, reply } => {
                let result = self.mark_group_read(group);
                self.reply_released(reply, result);
            }
            _ => {}
        }
    }

    fn group_view(&self, record: &GroupRecord) -> GroupView {
        crate::view::group_view(record, &self.user, |u| {
            self.contacts
                .get(u)
                .map(|c| c.name.clone())
                .unwrap_or_default()
        })
    }

    fn emit_group(&self, record: &GroupRecord) {
        self.emit(|| Event::Group {
            group: Box::new(self.group_view(record)),
        });
    }

    fn create_group(
        &mut self,
        name: &str,
        members: Vec<UserId>,
    ) -> Result<(GroupView, Vec<MessageId>), NodeError> {
        if members.len() >= MAX_GROUP_MEMBERS {
            return Err(NodeError::InvalidInput(format!(
                "a group has at most {MAX_GROUP_MEMBERS} members"
            )));
        }
        for m in &members {
            if !self.contacts.contains_key(m) {
                return Err(NodeError::UnknownContact(m.to_string()));
            }
        }
        let group = GroupId::random(&mut self.rng);
        let genesis = kith_protocol::group::GroupState::genesis(group, self.user, name, members)
            .and_then(|s| s.sign(&self.me))
            .map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        let record = GroupRecord {
            chain: GroupChain::new(genesis.clone()),
            pending: Vec::new(),
            active: true,
            joined_at_ms: now_ms(),
        };
        self.store.put_group(&record).map_err(store_err)?;
        let release = self.send_update(&genesis, &[], &genesis.state.members)?;
        tracing::info!(%group, members = genesis.state.members.len(), "group created");
        self.emit_group(&record);
        Ok((self.group_view(&record), release))
    }

    fn active_group(&self, group: &GroupId) -> Result<GroupRecord, NodeError> {
        let record = self
            .store
            .group(group)
            .map_err(store_err)?
            .ok_or_else(|| NodeError::NotFound(format!("no group {group}")))?;
        if !record.active || !record.chain.head().state.is_member(&self.user) {
            return Err(NodeError::NotMember(group.to_string()));
        }
        Ok(record)
    }

    /// Makes `change` to `group` as the local user: signs the next state, applies it and
    /// sends it to the members before and after it.
    fn change_group(
        &mut self,
        group: GroupId,
        change: GroupChange,
    ) -> Result<(GroupView, Vec<MessageId>), NodeError> {
        let mut record = self.active_group(&group)?;
        let head = record.chain.head().clone();
        if let GroupChange::Add(user) = &change {
            if !self.contacts.contains_key(user) {
                return Err(NodeError::UnknownContact(user.to_string()));
            }
        }
        let next = head
            .state
            .successor(head.digest(), self.user, change)
            .map_err(|e| match e {
                GroupError::NotAllowed(_) => NodeError::NotAdmin(group.to_string()),
                other => NodeError::InvalidInput(other.to_string()),
            })?
            .sign(&self.me)
            .map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        record
            .chain
            .offer(next.clone())
            .map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        let mut release = self.after_new_head(&mut record, &head.state.members)?;
        self.store.put_group(&record).map_err(store_err)?;
        release.extend(self.send_update(&next, &head.state.members, &next.state.members)?);
        tracing::info!(%group, epoch = next.epoch(), change = ?next.state.change, "group changed");
        self.emit_group(&record);
        Ok((self.group_view(&record), release))
    }

    /// Queues `state` for every member of `before` and `after` but us: members who were
    /// there before get the bundles of members new to them, the others every member's.
    fn send_update(
        &mut self,
        state: &SignedGroupState,
        before: &[UserId],
        after: &[UserId],
    ) -> Result<Vec<MessageId>, NodeError> {
        let mut to: Vec<UserId> = before.iter().chain(after).copied().collect();
        to.sort_by_key(|u| u.to_bytes());
        to.dedup();
        let mut release = Vec::new();
        for member in to {
            if member == self.user {
                continue;
            }
            let knew: &[UserId] = if before.contains(&member) {
                before
            } else {
                &[]
            };
            let bundles: Vec<KeyBundle> = after
                .iter()
                .filter(|u| **u != member && **u != self.user && !knew.contains(u))
                .filter_map(|u| self.contacts.get(u).map(|c| c.bundle.clone()))
                .collect();
            let mut chunks: Vec<Vec<KeyBundle>> = bundles
                .chunks(MAX_UPDATE_BUNDLES)
                .map(<[KeyBundle]>::to_vec)
                .collect();
            if chunks.is_empty() {
                chunks.push(Vec::new());
            }
            for bundles in chunks {
                let payload = Payload::GroupUpdate(Box::new(GroupUpdate {
                    state: state.clone(),
                    bundles,
                }));
                release.push(self.queue_control(member, &payload)?);
            }
        }
        Ok(release)
    }

    /// Writes an untracked outbox entry (settled by its ack) carrying `payload` to `to`; it
    /// leaves once durable (the caller releases it).
    pub(in crate::messenger) fn queue_control(
        &mut self,
        to: UserId,
        payload: &Payload,
    ) -> Result<MessageId, NodeError> {
        let now = now_ms();
        let plaintext =
            Plaintext::new(payload, now).map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        let entry = OutboxEntry {
            seq: self.store.next_seq().map_err(store_err)?,
            id: MessageId::random(&mut self.rng),
            to,
            plaintext,
            expires_at_ms: now.saturating_add(self.cfg.message_lifetime.as_millis() as u64),
            tracked: false,
        };
        self.store.outbox_put(&entry).map_err(store_err)?;
        let id = entry.id;
        self.outbox.insert(entry);
        Ok(id)
    }

    /// What a new head means for us: members gone → our sender key is replaced before we
    /// send again; we are gone → the group is inactive. Returns what to release.
    fn after_new_head(
        &mut self,
        record: &mut GroupRecord,
        before: &[UserId],
    ) -> Result<Vec<MessageId>, NodeError> {
        let head = record.chain.head().state.clone();
        let gone = before.iter().any(|u| !head.is_member(u));
        if gone || !head.is_member(&self.user) {
            // A removed member must not read what follows: a new chain, handed only to
            // the members left, at our next send.
            self.store
                .put_own_sender_key(&head.group, None)
                .map_err(store_err)?;
        }
        if !head.is_member(&self.user) {
            record.active = false;
        } else if !record.active {
            record.active = true;
        }
        Ok(Vec::new())
    }

    /// A group state from `sender` (a [`GroupUpdate`] or inside a [`SenderKeyGift`]):
    /// applied if it is valid and new, held if it is early, dropped otherwise. Returns
    /// whether we know the group (and are in it) afterwards.
    pub(in crate::messenger) fn receive_group_state(
        &mut self,
        sender: UserId,
        state: SignedGroupState,
        bundles: Vec<KeyBundle>,
        batch: &mut BatchEffects,
    ) -> bool {
        let group = state.group();
        let mut record = match self.store.group(&group) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read group");
                return false;
            }
        };
        let before: Vec<UserId> = record
            .as_ref()
            .map(|r| r.chain.head().state.members.clone())
            .unwrap_or_default();
        let changed = match &mut record {
            None => {
                // A group we do not know: only a valid state listing us, from a contact who
                // made it or who is listed in it with us.
                if !self.trusted_standalone(sender, &state) {
                    tracing::info!(%group, %sender, "group state for an unknown group refused");
                    return false;
                }
                record = Some(GroupRecord {
                    chain: GroupChain::new(state.clone()),
                    pending: Vec::new(),
                    active: true,
                    joined_at_ms: now_ms(),
                });
                tracing::info!(%group, epoch = state.epoch(), "joined group");
                true
            }
            // Removed or gone, and added again: the states between were not sent to us, so
            // the chain starts again from the one that lists us.
            Some(r)
                if !r.active
                    && state.epoch() > r.chain.head().epoch()
                    && self.trusted_standalone(sender, &state) =>
            {
                r.chain = GroupChain::new(state.clone());
                r.pending.clear();
                tracing::info!(%group, epoch = state.epoch(), "added to the group again");
                true
            }
            Some(r) => self.offer_state(r, state.clone()),
        };
        let Some(mut record) = record else {
            return false;
        };
        if changed {
            if let Err(e) = self.after_new_head(&mut record, &before) {
                tracing::error!(error = %e, "cannot apply group change");
            }
            if let Err(e) = self.store.put_group(&record) {
                tracing::error!(error = %e, "cannot store group");
                return false;
            }
            self.emit_group(&record);
        }
        // Bundles of members, from the state's author: they let us seal to members we do not
        // know yet, who become contacts (they can write to us; we to them).
        if state.state.author == sender {
            let head = record.chain.head().state.clone();
            for bundle in bundles {
                let user = bundle.user;
                if user == self.user || !head.is_member(&user) || self.requests.is_blocked(&user) {
                    continue;
                }
                if self.contacts.contains_key(&user) {
                    self.learn_bundle(&bundle);
                } else {
                    self.introduce(bundle, batch);
                }
            }
        }
        record.active && record.chain.head().state.is_member(&self.user)
    }

    /// Whether a state we hold no predecessor for may start our chain: valid, listing us,
    /// from a contact who made it or who is listed in it with us (then its author must be
    /// our contact too).
    fn trusted_standalone(&self, sender: UserId, state: &SignedGroupState) -> bool {
        let author = state.state.author;
        state.verify_standalone(&self.user).is_ok()
            && self.contacts.contains_key(&sender)
            && (author == sender || state.state.is_member(&sender))
            && self.contacts.contains_key(&author)
    }

    /// Offers `state` to a group's chain, then any held states that now follow. Whether the
    /// head changed.
    fn offer_state(&mut self, record: &mut GroupRecord, state: SignedGroupState) -> bool {
        let group = record.id();
        let mut changed = false;
        let mut queue = vec![state];
        while let Some(next) = queue.pop() {
            match record.chain.offer(next.clone()) {
                Ok(Offered::Applied { dropped }) => {
                    changed = true;
                    tracing::info!(%group, epoch = next.epoch(), "group state applied");
                    self.repropose(record, dropped);
                    // Held states that may follow now.
                    let held = std::mem::take(&mut record.pending);
                    queue.extend(held);
                }
                Ok(Offered::Duplicate) => {}
                // Early (its parent has not arrived), or on a branch we do not hold: the
                // two look alike, so it waits and is offered again when the chain moves.
                Err(GroupError::Gap { .. } | GroupError::Forked(_))
                    if next.epoch() > record.chain.head().epoch() =>
                {
                    if !record.pending.contains(&next)
                        && record.pending.len() < crate::store::groups::MAX_PENDING_STATES
                    {
                        record.pending.push(next);
                    }
                }
                Err(e) => {
                    tracing::info!(%group, epoch = next.epoch(), error = %e, "group state refused");
                }
            }
        }
        changed
    }

    /// Our own changes that lost a fork are made again on the winning head (when still
    /// allowed and meaningful), and sent.
    fn repropose(&mut self, record: &mut GroupRecord, dropped: Vec<SignedGroupState>) {
        for lost in dropped {
            if lost.state.author != self.user {
                continue;
            }
            let head = record.chain.head().clone();
            let Ok(next) = head
                .state
                .successor(head.digest(), self.user, lost.state.change.clone())
                .and_then(|s| s.sign(&self.me))
            else {
                continue;
            };
            if record.chain.offer(next.clone()).is_ok() {
                tracing::info!(group = %record.id(), epoch = next.epoch(), "own change made again after a fork");
                match self.send_update(&next, &head.state.members, &next.state.members) {
                    Ok(release) => self.release_after_commit(release),
                    Err(e) => tracing::error!(error = %e, "cannot send group change"),
                }
            }
        }
    }

    /// Someone named in a group with us becomes a contact (no name), so their messages are
    /// admitted and ours can be sealed to them.
    pub(in crate::messenger) fn introduce(&mut self, bundle: KeyBundle, batch: &mut BatchEffects) {
        if bundle.verify().is_err() {
            return;
        }
        let user = bundle.user;
        match self.add_contact_bundle(bundle, Vec::new(), Some(String::new())) {
            Ok((_, release)) => {
                tracing::info!(%user, "group member became a contact");
                batch.release.extend(release);
            }
            Err(e) => tracing::warn!(%user, error = %e, "cannot add group member"),
        }
    }

    /// Whether the sender of a handshake who is not a contact is a member of a group with
    /// us (known, or shown by the state a sender key carries): they become a contact.
    pub(in crate::messenger) fn admit_group_member(
        &mut self,
        bundle: &KeyBundle,
        plaintext: &Plaintext,
        batch: &mut BatchEffects,
    ) -> bool {
        let sender = bundle.user;
        if self.requests.is_blocked(&sender) {
            return false;
        }
        let group_of = match plaintext.payload.decode() {
            Ok(Payload::SenderKey(gift)) => Some((gift.state.group(), Some(gift.state.clone()))),
            Ok(Payload::GroupUpdate(u)) => Some((u.state.group(), Some(u.state.clone()))),
            Ok(Payload::GroupMessage(m)) => Some((m.group, None)),
            Ok(Payload::GroupReceipt(r)) => Some((r.group, None)),
            _ => None,
        };
        let Some((group, carried)) = group_of else {
            return false;
        };
        let known = self
            .store
            .group(&group)
            .ok()
            .flatten()
            .filter(|r| r.active)
            .is_some_and(|r| {
                r.chain.head().state.is_member(&sender)
                    || carried.as_ref().is_some_and(|s| {
                        s.verify().is_ok()
                            && s.epoch() >= r.chain.head().epoch()
                            && s.state.is_member(&sender)
                    })
            });
        // A group we do not know yet: its state, signed by an admin who is our contact,
        // listing both of us.
        let vouched = carried.as_ref().is_some_and(|s| {
            s.verify_standalone(&self.user).is_ok()
                && s.state.is_member(&sender)
                && self.contacts.contains_key(&s.state.author)
        });
        if !(known || vouched) {
            return false;
        }
        self.introduce(bundle.clone(), batch);
        self.contacts.contains_key(&sender)
    }

    /// A pending request's group payload: if it shows them a member of a group with us,
    /// they become a contact (true).
    pub(in crate::messenger) fn admit_pending_group_member(
        &mut self,
        sender: UserId,
        plaintext: &Plaintext,
        batch: &mut BatchEffects,
    ) -> bool {
        let Some(bundle) = self.requests.get(&sender).map(|c| c.bundle.clone()) else {
            return false;
        };
        self.admit_group_member(&bundle, plaintext, batch)
    }

    /// Whether we are an active member of `group`.
    pub(in crate::messenger) fn is_active_group(&self, group: &GroupId) -> bool {
        matches!(self.store.group(group), Ok(Some(r)) if r.active)
    }

    /// A sender key from `sender`: its state first (it may introduce the group), then the
    /// chain, then the messages that waited for it.
    pub(in crate::messenger) fn receive_sender_key(
        &mut self,
        sender: UserId,
        gift: SenderKeyGift,
        batch: &mut BatchEffects,
    ) {
        let group = gift.distribution.group;
        if !self.receive_group_state(sender, gift.state, Vec::new(), batch) {
            tracing::info!(%group, %sender, "sender key for a group we are not in; dropped");
            return;
        }
        let mut keys = match self.store.their_sender_keys(&group, &sender) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "cannot read sender keys");
                return;
            }
        };
        keys.learn(&gift.distribution);
        if let Err(e) = self.store.put_their_sender_keys(&group, &sender, &keys) {
            tracing::error!(error = %e, "cannot store sender keys");
            return;
        }
        match self.store.take_held(&group, &sender) {
            Ok(held) => {
                for msg in held {
                    self.open_group_message(sender, msg, batch);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read held group messages"),
        }
    }

    /// Lets `release` leave once everything written so far is durable.
    pub(in crate::messenger) fn release_after_commit(&mut self, release: Vec<MessageId>) {
        if release.is_empty() {
            return;
        }
        self.when_durable(
            |_| {},
            Internal::Committed {
                release,
                deletes: Vec::new(),
            },
        );
    }
}
