//! Contact cards still owed to group members we were introduced to.
//!
//! Why: a group of N introduces every member to every other, and a card sent at once to
//! each (with a dial) meant N² cards and dials as a group formed — at 256 members 65,000
//! handshakes, most of them deposited for members who will never write to each other. A
//! member met in a group is owed our card only once we first send them something (our
//! sender key, a receipt, a message): the card goes just before it.
//!
//! Layout: `cards_owed`: user id bytes → ().

use kith_protocol::UserId;

use super::{Store, StoreError};

impl Store {
    /// Notes that `user` gets our contact card with the first thing we send them.
    pub fn owe_card(&self, user: &UserId) -> Result<(), StoreError> {
        self.cards_owed.insert(user.to_bytes(), &[][..])?;
        Ok(())
    }

    /// Whether `user` was owed our card; the debt is cleared.
    pub fn take_card_owed(&self, user: &UserId) -> Result<bool, StoreError> {
        Ok(self.cards_owed.remove(user.to_bytes())?.is_some())
    }
}
