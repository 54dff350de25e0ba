//! The group state chain: who is in a group, who administers it, and how changes are
//! signed, ordered and settled when two admins change the same epoch.
//!
//! Each [`SignedGroupState`] names its epoch, the digest of the state it follows, its author
//! and its change, and carries the whole resulting name, member and admin lists, so a member
//! added later starts from one state without the history. Members check that the lists
//! follow from the change ([`GroupState::successor`]) and that the author was allowed to
//! make it, then apply states strictly in epoch order ([`GroupChain::offer`]).
//!
//! Two admins changing the same epoch fork the chain; every member settles it the same way:
//! at the first epoch where two states compete, **the one with the lower digest wins**. A
//! member that applied the loser rolls back to the common parent and applies the winner
//! (dropping what was built on the loser); the loser's author sees its state dropped and
//! proposes its change again on the winner. Since every state reaches every member, all
//! members end on the same chain.

use blake2::{Blake2s256, Digest};
use serde::{Deserialize, Serialize};

use super::{GroupError, GroupId, MAX_GROUP_MEMBERS, MAX_GROUP_NAME_LEN};
use crate::{codec, LocalIdentity, UserId};

/// Most states a [`GroupChain`] keeps behind its head (how deep a fork can still be settled).
pub const MAX_HISTORY: usize = 32;

/// What the context string of a state signature is.
const STATE_SIGNING_CONTEXT: &[u8] = b"kith-group-state/1";

/// One change to a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupChange {
    /// The group is created (epoch 0) by its first admin with its first members.
    Create,
    /// An admin adds a member.
    Add(UserId),
    /// An admin removes a member (not itself: that is `Leave`).
    Remove(UserId),
    /// The author leaves. If it was the last admin, the remaining member with the lowest id
    /// becomes admin.
    Leave,
    /// An admin renames the group.
    Rename(String),
    /// An admin makes a member an admin.
    Promote(UserId),
}

/// A group's membership after a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group.
    pub group: GroupId,
    /// 0 at creation, one more with each change.
    pub epoch: u64,
    /// Digest of the state this one follows ([`SignedGroupState::digest`]); zeros at epoch 0.
    pub parent: [u8; 32],
    /// Who made the change (and signed it).
    pub author: UserId,
    /// The change.
    pub change: GroupChange,
    /// The name after the change.
    pub name: String,
    /// The members after the change, sorted by their id's bytes, without repeats.
    pub members: Vec<UserId>,
    /// The admins after the change: members, sorted, without repeats.
    pub admins: Vec<UserId>,
}

/// A group state and its author's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedGroupState {
    /// The state.
    pub state: GroupState,
    /// Ed25519 signature by `state.author` over `"kith-group-state/1" ‖ bincode(state)`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

fn sorted(mut users: Vec<UserId>) -> Vec<UserId> {
    users.sort_by_key(|u| u.to_bytes());
    users.dedup();
    users
}

fn check_name(name: &str) -> Result<(), GroupError> {
    if name.trim().is_empty() {
        return Err(GroupError::Invalid("empty name"));
    }
    if name.len() > MAX_GROUP_NAME_LEN {
        return Err(GroupError::Invalid("name too long"));
    }
    Ok(())
}

impl GroupState {
    /// The first state of a new group: `creator` is its only admin; `members` (the creator
    /// added if missing) its first members.
    pub fn genesis(
        group: GroupId,
        creator: UserId,
        name: &str,
        members: Vec<UserId>,
    ) -> Result<Self, GroupError> {
        check_name(name)?;
        let mut members = members;
        members.push(creator);
        let members = sorted(members);
        if members.len() > MAX_GROUP_MEMBERS {
            return Err(GroupError::Invalid("too many members"));
        }
        Ok(GroupState {
            group,
            epoch: 0,
            parent: [0; 32],
            author: creator,
            change: GroupChange::Create,
            name: name.to_string(),
            members,
            admins: vec![creator],
        })
    }

    /// Whether `user` is a member.
    pub fn is_member(&self, user: &UserId) -> bool {
        self.members.contains(user)
    }

    /// Whether `user` is an admin.
    pub fn is_admin(&self, user: &UserId) -> bool {
        self.admins.contains(user)
    }

    /// The state that follows this one (whose digest is `digest`) when `author` makes
    /// `change`, or why `author` may not.
    pub fn successor(
        &self,
        digest: [u8; 32],
        author: UserId,
        change: GroupChange,
    ) -> Result<GroupState, GroupError> {
        let not_allowed = || GroupError::NotAllowed(author.to_string());
        if !self.is_member(&author) {
            return Err(not_allowed());
        }
        let mut next = GroupState {
            group: self.group,
            epoch: self
                .epoch
                .checked_add(1)
                .ok_or(GroupError::Invalid("epoch"))?,
            parent: digest,
            author,
            change: change.clone(),
            name: self.name.clone(),
            members: self.members.clone(),
            admins: self.admins.clone(),
        };
        let admin = self.is_admin(&author);
        match change {
            GroupChange::Create => return Err(GroupError::Invalid("create after genesis")),
            GroupChange::Add(user) => {
                if !admin {
                    return Err(not_allowed());
                }
                if self.is_member(&user) {
                    return Err(GroupError::Invalid("already a member"));
                }
                if self.members.len() >= MAX_GROUP_MEMBERS {
                    return Err(GroupError::Invalid("too many members"));
                }
                next.members.push(user);
                next.members = sorted(next.members);
            }
            GroupChange::Remove(user) => {
                if !admin {
                    return Err(not_allowed());
                }
                if user == author || !self.is_member(&user) {
                    return Err(GroupError::Invalid("not a member to remove"));
                }
                next.members.retain(|u| *u != user);
                next.admins.retain(|u| *u != user);
            }
            GroupChange::Leave => {
                next.members.retain(|u| *u != author);
                next.admins.retain(|u| *u != author);
                if next.admins.is_empty() {
                    if let Some(first) = next.members.first() {
                        next.admins.push(*first);
                    }
                }
            }
            GroupChange::Rename(name) => {
                if !admin {
                    return Err(not_allowed());
                }
                check_name(&name)?;
                next.name = name;
            }
            GroupChange::Promote(user) => {
                if !admin {
                    return Err(not_allowed());
                }
                if !self.is_member(&user) || self.is_admin(&user) {
                    return Err(GroupError::Invalid("not a member to promote"));
                }
                next.admins.push(user);
                next.admins = sorted(next.admins);
            }
        }
        Ok(next)
    }

    fn signing_bytes(&self) -> Result<Vec<u8>, GroupError> {
        let mut bytes = STATE_SIGNING_CONTEXT.to_vec();
        codec::encode_into(self, &mut bytes)?;
        Ok(bytes)
    }

    /// Signs the state; `me` must be its author.
    pub fn sign(self, me: &LocalIdentity) -> Result<SignedGroupState, GroupError> {
        if me.user_id() != self.author {
            return Err(GroupError::NotAllowed(me.user_id().to_string()));
        }
        let signature = me.sign(&self.signing_bytes()?);
        Ok(SignedGroupState {
            state: self,
            signature,
        })
    }

    /// Checks limits and the list invariants every state keeps.
    fn check_shape(&self) -> Result<(), GroupError> {
        check_name(&self.name)?;
        if self.members.len() > MAX_GROUP_MEMBERS {
            return Err(GroupError::Invalid("too many members"));
        }
        if sorted(self.members.clone()) != self.members {
            return Err(GroupError::Invalid("members not sorted"));
        }
        if sorted(self.admins.clone()) != self.admins {
            return Err(GroupError::Invalid("admins not sorted"));
        }
        if self.admins.iter().any(|a| !self.is_member(a)) {
            return Err(GroupError::Invalid("admin who is not a member"));
        }
        Ok(())
    }
}

impl SignedGroupState {
    /// BLAKE2s-256 of the signed state's encoding: what the next state names as its parent,
    /// and what settles a fork (lower wins).
    pub fn digest(&self) -> [u8; 32] {
        let bytes = codec::encode(self).unwrap_or_default();
        let mut h = Blake2s256::new();
        h.update(b"kith-group-digest/1");
        h.update(bytes);
        h.finalize().into()
    }

    /// The group.
    pub fn group(&self) -> GroupId {
        self.state.group
    }

    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.state.epoch
    }

    /// Checks the author's signature and the state's shape.
    pub fn verify(&self) -> Result<(), GroupError> {
        self.state.check_shape()?;
        let key = self
            .state
            .author
            .public_key()
            .map_err(|_| GroupError::BadSignature)?;
        if !key.verify(&self.state.signing_bytes()?, &self.signature) {
            return Err(GroupError::BadSignature);
        }
        Ok(())
    }

    /// Checks a state a member has no predecessor for (it was just added, or learns of the
    /// group now): signed, well-formed, listing `me`, and either a genesis (the author its
    /// only admin) or made by an author who is an admin in it (or, for a leave, by a
    /// former member). The caller decides whether it trusts the author at all.
    pub fn verify_standalone(&self, me: &UserId) -> Result<(), GroupError> {
        self.verify()?;
        let s = &self.state;
        if !s.is_member(me) {
            return Err(GroupError::Invalid("does not list the recipient"));
        }
        match s.change {
            GroupChange::Create => {
                if s.epoch != 0 || s.parent != [0; 32] || s.admins != vec![s.author] {
                    return Err(GroupError::Invalid("genesis"));
                }
            }
            GroupChange::Leave => {
                if s.is_member(&s.author) {
                    return Err(GroupError::Invalid("leaver still a member"));
                }
            }
            _ => {
                if !s.is_admin(&s.author) {
                    return Err(GroupError::NotAllowed(s.author.to_string()));
                }
            }
        }
        Ok(())
    }

    /// Checks that `next` follows this state: same group, next epoch, this state's digest
    /// as parent, a valid signature, and lists that are exactly what its change makes of
    /// this state's when its author is allowed to make it.
    pub fn check_successor(&self, next: &SignedGroupState) -> Result<(), GroupError> {
        if next.state.group != self.state.group {
            return Err(GroupError::WrongGroup);
        }
        if Some(next.state.epoch) != self.state.epoch.checked_add(1)
            || next.state.parent != self.digest()
        {
            return Err(GroupError::Forked(next.state.epoch));
        }
        next.verify()?;
        let expected =
            self.state
                .successor(self.digest(), next.state.author, next.state.change.clone())?;
        if expected != next.state {
            return Err(GroupError::Invalid("lists do not follow from the change"));
        }
        Ok(())
    }
}

/// What offering a state to a [`GroupChain`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Offered {
    /// It is the new head. `dropped` are the states it replaced (a losing branch, newest
    /// last): their authors should propose those changes again.
    Applied {
        /// States that were on the losing branch.
        dropped: Vec<SignedGroupState>,
    },
    /// It is already in the chain.
    Duplicate,
}

/// A member's view of one group: the applied states, oldest first, at most
/// [`MAX_HISTORY`] + 1 of them; the last is the head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChain {
    states: Vec<SignedGroupState>,
}

impl GroupChain {
    /// A chain starting at `first` (already checked by the caller, e.g. with
    /// [`SignedGroupState::verify_standalone`]).
    pub fn new(first: SignedGroupState) -> Self {
        GroupChain {
            states: vec![first],
        }
    }

    /// The newest state.
    pub fn head(&self) -> &SignedGroupState {
        // Never empty: built with one state, and `offer` only truncates above an ancestor.
        &self.states[self.states.len() - 1]
    }

    /// The state at `epoch`, if kept.
    pub fn at(&self, epoch: u64) -> Option<&SignedGroupState> {
        let first = self.states.first()?.epoch();
        let index = usize::try_from(epoch.checked_sub(first)?).ok()?;
        self.states.get(index)
    }

    /// Applies `next` if it extends the head, or replaces a competing state of ours it beats
    /// (lower digest, same parent). A state more than one epoch ahead is a
    /// [`GroupError::Gap`]: hold it until its predecessor arrives.
    pub fn offer(&mut self, next: SignedGroupState) -> Result<Offered, GroupError> {
        let head_epoch = self.head().epoch();
        let epoch = next.epoch();
        if next.group() != self.head().group() {
            return Err(GroupError::WrongGroup);
        }
        if epoch > head_epoch.saturating_add(1) {
            return Err(GroupError::Gap {
                have: head_epoch,
                got: epoch,
            });
        }
        if Some(epoch) == head_epoch.checked_add(1) {
            self.head().check_successor(&next)?;
            self.push(next);
            return Ok(Offered::Applied {
                dropped: Vec::new(),
            });
        }
        let Some(ours) = self.at(epoch) else {
            return Err(GroupError::Stale {
                have: head_epoch,
                got: epoch,
            });
        };
        if *ours == next {
            return Ok(Offered::Duplicate);
        }
        let ours_digest = ours.digest();
        let Some(parent) = epoch.checked_sub(1).and_then(|e| self.at(e)) else {
            return Err(GroupError::Stale {
                have: head_epoch,
                got: epoch,
            });
        };
        parent.check_successor(&next)?;
        if next.digest() >= ours_digest {
            return Err(GroupError::Forked(epoch));
        }
        let keep = self.states.len() - (head_epoch - epoch + 1) as usize;
        let dropped = self.states.split_off(keep);
        self.push(next);
        Ok(Offered::Applied { dropped })
    }

    fn push(&mut self, state: SignedGroupState) {
        self.states.push(state);
        if self.states.len() > MAX_HISTORY + 1 {
            self.states.remove(0);
        }
    }
}
