use kith_protocol::{
    seal::{HandshakeBody, SealedBody},
    EnvelopeHeader, LocalIdentity,
};

use super::*;
use kith_protocol::envelope::ENVELOPE_DIGEST_LEN;

/// "Now" for every test: expiry is relative to it.
const NOW: u64 = 1_000_000_000;

fn user() -> UserId {
    LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id()
}

fn id(n: u8) -> MessageId {
    MessageId([n; 16])
}

/// An envelope for `to` (the body is opaque to a store peer: any bytes do) and its bytes.
fn envelope(to: UserId, id: MessageId, expires_at_ms: u64, body_len: usize) -> (Envelope, Vec<u8>) {
    let env = Envelope {
        header: EnvelopeHeader::new(id, to, expires_at_ms),
        body: SealedBody::Handshake(HandshakeBody {
            prekey_id: 1,
            noise: vec![7; body_len],
        }),
    };
    let bytes = env.to_bytes().unwrap();
    (env, bytes)
}

fn open() -> (tempfile::TempDir, Mailboxes) {
    let dir = tempfile::tempdir().unwrap();
    let mailboxes = Mailboxes::open(&dir.path().join("mailboxes")).unwrap();
    (dir, mailboxes)
}

fn put(m: &Mailboxes, to: UserId, n: u8, limits: &Limits) -> Result<Deposit, RefuseReason> {
    let (env, bytes) = envelope(to, id(n), NOW + 60_000, 100);
    m.deposit(&env, &bytes, limits, Quota::Mailbox, NOW)
        .unwrap()
}

fn ids_of(m: &Mailboxes, user: &UserId) -> Vec<MessageId> {
    m.list(user)
        .unwrap()
        .into_iter()
        .map(|(r, _)| r.id)
        .collect()
}

/// The identity of the envelope [`put`] deposits for `to` under `id(n)`.
fn r(to: UserId, n: u8) -> EnvelopeRef {
    let (env, _) = envelope(to, id(n), NOW + 60_000, 100);
    EnvelopeRef {
        id: id(n),
        digest: env.digest().unwrap(),
    }
}

/// Quarantine, migration and refusal of the versioned database.
/// Opens `path` once every earlier handle has let go of it (sled's file lock outlives the
/// last handle briefly): polls for up to 5 s.
async fn open_when_released(path: &Path) -> Result<Mailboxes, MailboxError> {
    let mut last = None;
    for _ in 0..200 {
        match Mailboxes::open(path) {
            Err(MailboxError::Sled(e)) => {
                last = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
    Err(MailboxError::Sled(last.unwrap()))
}

mod versioned_storage;

fn usage_of(m: &Mailboxes, user: &UserId) -> Option<(usize, u64)> {
    m.usage()
        .into_iter()
        .find(|(u, _, _)| u == user)
        .map(|(_, n, b)| (n, b))
}

#[tokio::test]
async fn message_quota_is_per_mailbox_and_frees_up_on_delete() {
    let (_dir, m) = open();
    let limits = Limits {
        max_messages_per_mailbox: 3,
        ..Limits::default()
    };
    let (bob, carol) = (user(), user());
    for n in 1..=3 {
        assert_eq!(put(&m, bob, n, &limits), Ok(Deposit::Stored));
    }
    assert_eq!(put(&m, bob, 4, &limits), Err(RefuseReason::MailboxFull));
    // Another mailbox is not affected.
    assert_eq!(put(&m, carol, 5, &limits), Ok(Deposit::Stored));
    assert_eq!(ids_of(&m, &bob), vec![id(1), id(2), id(3)]);
    assert_eq!(
        m.delete(&bob, &[r(bob, 2)], NOW + 1_000, &Limits::default())
            .unwrap(),
        1
    );
    assert_eq!(put(&m, bob, 4, &limits), Ok(Deposit::Stored));
    assert_eq!(ids_of(&m, &bob), vec![id(1), id(3), id(4)]);
    assert_eq!(usage_of(&m, &bob).map(|u| u.0), Some(3));
}

#[tokio::test]
async fn byte_quota_and_envelope_size_and_lifetime_are_enforced() {
    let (_dir, m) = open();
    let bob = user();
    let (small, small_bytes) = envelope(bob, id(1), NOW + 60_000, 100);
    let limits = Limits {
        max_bytes_per_mailbox: 2 * small_bytes.len() as u64,
        max_envelope_bytes: 1_000,
        max_lifetime_ms: 3_600_000,
        ..Limits::default()
    };
    assert_eq!(
        m.deposit(&small, &small_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Ok(Deposit::Stored)
    );
    let (big, big_bytes) = envelope(bob, id(2), NOW + 60_000, 2_000);
    assert_eq!(
        m.deposit(&big, &big_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Err(RefuseReason::TooLarge)
    );
    let (past, past_bytes) = envelope(bob, id(3), NOW, 100);
    assert_eq!(
        m.deposit(&past, &past_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Err(RefuseReason::Expired)
    );
    let (far, far_bytes) = envelope(bob, id(4), NOW + 3_600_001, 100);
    assert_eq!(
        m.deposit(&far, &far_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Err(RefuseReason::Expired)
    );
    let (second, second_bytes) = envelope(bob, id(5), NOW + 60_000, 100);
    assert_eq!(
        m.deposit(&second, &second_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Ok(Deposit::Stored)
    );
    let (third, third_bytes) = envelope(bob, id(6), NOW + 60_000, 100);
    assert_eq!(
        m.deposit(&third, &third_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Err(RefuseReason::MailboxFull)
    );
    assert_eq!(usage_of(&m, &bob), Some((2, 2 * small_bytes.len() as u64)));
}

#[tokio::test]
async fn a_duplicate_is_stored_once() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let bob = user();
    assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
    assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Duplicate));
    assert_eq!(ids_of(&m, &bob), vec![id(1)]);
    assert_eq!(usage_of(&m, &bob).map(|u| u.0), Some(1));
    assert!(m.holds(&bob, &r(bob, 1)).unwrap());
}

#[tokio::test]
async fn only_the_owner_deletes() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let (bob, mallory) = (user(), user());
    assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
    assert_eq!(put(&m, bob, 2, &limits), Ok(Deposit::Stored));
    assert_eq!(
        m.delete(
            &mallory,
            &[r(bob, 1), r(bob, 2)],
            NOW + 1_000,
            &Limits::default()
        )
        .unwrap(),
        0
    );
    assert_eq!(ids_of(&m, &bob), vec![id(1), id(2)]);
    assert_eq!(
        m.delete(&bob, &[r(bob, 1)], NOW + 1_000, &Limits::default())
            .unwrap(),
        1
    );
    assert_eq!(ids_of(&m, &bob), vec![id(2)]);
    assert!(!m.holds(&bob, &r(bob, 1)).unwrap());
    assert_eq!(usage_of(&m, &bob).map(|u| u.0), Some(1));
    assert_eq!(
        m.delete(&bob, &[r(bob, 2)], NOW + 1_000, &Limits::default())
            .unwrap(),
        1
    );
    assert_eq!(usage_of(&m, &bob), None);
}

#[tokio::test]
async fn a_tombstone_blocks_a_late_copy_until_it_expires() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let bob = user();
    assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
    assert_eq!(
        m.delete(&bob, &[r(bob, 1)], NOW + 1_000, &Limits::default())
            .unwrap(),
        1
    );
    // Its index entry outlives it (until the tombstone expires), but says nothing is held.
    assert!(!m.holds(&bob, &r(bob, 1)).unwrap());
    // A late replica (or a retried deposit) of what bob already took is not stored again.
    assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Duplicate));
    assert!(ids_of(&m, &bob).is_empty());
    // Bob may also delete ahead what this peer has not received yet.
    assert_eq!(
        m.delete(&bob, &[r(bob, 2)], NOW + 1_000, &Limits::default())
            .unwrap(),
        0
    );
    assert_eq!(put(&m, bob, 2, &limits), Ok(Deposit::Duplicate));
    assert!(ids_of(&m, &bob).is_empty());
    // Tombstones go when they expire, with the index entries their deletes left.
    assert_eq!(m.expire(NOW + 1_000).unwrap(), 0);
    assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
    assert!(m.holds(&bob, &r(bob, 1)).unwrap());
}

#[tokio::test]
async fn someone_elses_delete_ahead_does_not_block_a_deposit() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let (bob, mallory) = (user(), user());
    // Mallory learned (or guessed) the id of a message on its way to bob.
    assert_eq!(
        m.delete(&mallory, &[r(bob, 1)], NOW + 1_000, &Limits::default())
            .unwrap(),
        0
    );
    assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
    assert_eq!(ids_of(&m, &bob), vec![id(1)]);
}

#[tokio::test]
async fn expire_removes_expired_envelopes_only() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let (bob, carol) = (user(), user());
    let (soon, soon_bytes) = envelope(bob, id(1), NOW + 10, 100);
    let (later, later_bytes) = envelope(bob, id(2), NOW + 60_000, 100);
    let (carols, carols_bytes) = envelope(carol, id(3), NOW + 10, 100);
    for (env, bytes) in [
        (&soon, &soon_bytes),
        (&later, &later_bytes),
        (&carols, &carols_bytes),
    ] {
        assert_eq!(
            m.deposit(env, bytes, &limits, Quota::Mailbox, NOW).unwrap(),
            Ok(Deposit::Stored)
        );
    }
    assert_eq!(m.expire(NOW + 9).unwrap(), 0);
    assert_eq!(m.expire(NOW + 10).unwrap(), 2);
    assert_eq!(ids_of(&m, &bob), vec![id(2)]);
    assert!(ids_of(&m, &carol).is_empty());
    assert_eq!(usage_of(&m, &bob), Some((1, later_bytes.len() as u64)));
    assert_eq!(usage_of(&m, &carol), None);
    let soon_ref = EnvelopeRef {
        id: id(1),
        digest: soon.digest().unwrap(),
    };
    let carols_ref = EnvelopeRef {
        id: id(3),
        digest: carols.digest().unwrap(),
    };
    assert!(!m.holds(&bob, &soon_ref).unwrap() && !m.holds(&carol, &carols_ref).unwrap());
}

/// Alice's envelope to bob, and mallory's different envelope under the same id.
fn alices_and_mallorys(bob: UserId) -> ((Envelope, Vec<u8>), (Envelope, Vec<u8>)) {
    (
        envelope(bob, id(1), NOW + 60_000, 100),
        envelope(bob, id(1), NOW + 60_000, 101),
    )
}

fn ref_of_env(env: &Envelope) -> EnvelopeRef {
    EnvelopeRef {
        id: env.id(),
        digest: env.digest().unwrap(),
    }
}

#[tokio::test]
async fn an_envelope_reusing_an_id_for_the_same_recipient_is_held_on_its_own() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let bob = user();
    let ((alice, alice_bytes), (mallory, mallory_bytes)) = alices_and_mallorys(bob);
    // Mallory front-runs alice's id: alice's deposit is still a new envelope.
    assert_eq!(
        m.deposit(&mallory, &mallory_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Ok(Deposit::Stored)
    );
    assert_eq!(
        m.deposit(&alice, &alice_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Ok(Deposit::Stored)
    );
    // Identical bytes are one envelope.
    assert_eq!(
        m.deposit(&alice, &alice_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Ok(Deposit::Duplicate)
    );
    let held = m.list(&bob).unwrap();
    assert_eq!(
        held.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        vec![ref_of_env(&mallory), ref_of_env(&alice)]
    );
    assert_eq!(held[1].1, alice_bytes);
    assert_eq!(usage_of(&m, &bob).map(|u| u.0), Some(2));
    // The same id and body for another recipient is another envelope too.
    let carol = user();
    let (carols, carols_bytes) = envelope(carol, id(1), NOW + 60_000, 100);
    assert_eq!(
        m.deposit(&carols, &carols_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Ok(Deposit::Stored)
    );
    assert!(m.holds(&carol, &ref_of_env(&carols)).unwrap());
    assert!(!m.holds(&carol, &ref_of_env(&alice)).unwrap());
}

#[tokio::test]
async fn deleting_by_digest_never_deletes_another_envelope_with_the_same_id() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let bob = user();
    let ((alice, alice_bytes), (mallory, mallory_bytes)) = alices_and_mallorys(bob);
    for (env, bytes) in [(&mallory, &mallory_bytes), (&alice, &alice_bytes)] {
        assert_eq!(
            m.deposit(env, bytes, &limits, Quota::Mailbox, NOW).unwrap(),
            Ok(Deposit::Stored)
        );
    }
    // Bob took mallory's message: only hers goes.
    assert_eq!(
        m.delete(
            &bob,
            &[ref_of_env(&mallory)],
            NOW + 1_000,
            &Limits::default()
        )
        .unwrap(),
        1
    );
    assert!(m.holds(&bob, &ref_of_env(&alice)).unwrap());
    assert!(!m.holds(&bob, &ref_of_env(&mallory)).unwrap());
    assert_eq!(usage_of(&m, &bob), Some((1, alice_bytes.len() as u64)));
    // Deleting a digest nobody holds deletes nothing.
    let unknown = EnvelopeRef {
        id: id(1),
        digest: EnvelopeDigest([9; ENVELOPE_DIGEST_LEN]),
    };
    assert_eq!(
        m.delete(&bob, &[unknown], NOW + 1_000, &Limits::default())
            .unwrap(),
        0
    );
    assert_eq!(ids_of(&m, &bob), vec![id(1)]);
}

#[tokio::test]
async fn a_tombstone_names_one_envelope_not_its_id() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let bob = user();
    let ((alice, alice_bytes), (mallory, mallory_bytes)) = alices_and_mallorys(bob);
    // Mallory's envelope arrived first and bob already took it.
    assert_eq!(
        m.deposit(&mallory, &mallory_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Ok(Deposit::Stored)
    );
    assert_eq!(
        m.delete(
            &bob,
            &[ref_of_env(&mallory)],
            NOW + 1_000,
            &Limits::default()
        )
        .unwrap(),
        1
    );
    // A late copy of hers is not stored again; alice's envelope, arriving later under the
    // same id, is.
    assert_eq!(
        m.deposit(&mallory, &mallory_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Ok(Deposit::Duplicate)
    );
    assert_eq!(
        m.deposit(&alice, &alice_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Ok(Deposit::Stored)
    );
    assert_eq!(
        m.list(&bob)
            .unwrap()
            .into_iter()
            .map(|(r, _)| r)
            .collect::<Vec<_>>(),
        vec![ref_of_env(&alice)]
    );
}

#[tokio::test]
async fn migration_rebuilds_the_index_by_recipient_id_and_digest_and_is_idempotent() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let (bob, carol) = (user(), user());
    let ((alice, alice_bytes), _) = alices_and_mallorys(bob);
    let (carols, carols_bytes) = envelope(carol, id(2), NOW + 60_000, 100);
    for (env, bytes) in [(&alice, &alice_bytes), (&carols, &carols_bytes)] {
        assert_eq!(
            m.deposit(env, bytes, &limits, Quota::Mailbox, NOW).unwrap(),
            Ok(Deposit::Stored)
        );
    }
    // Put the indexes back in the old layout: `ids` by id alone, a tombstone without a
    // digest, and one already in the new layout.
    let ids = m.db().open_tree("ids").unwrap();
    let forgotten = m.db().open_tree("forgotten").unwrap();
    let envelopes = m.db().open_tree("envelopes").unwrap();
    ids.clear().unwrap();
    for item in envelopes.iter() {
        let (k, _) = item.unwrap();
        ids.insert(&k[k.len() - 16..], k.clone()).unwrap();
    }
    let mut old_tombstone = prefix(&bob);
    old_tombstone.extend_from_slice(id(7).as_bytes());
    forgotten
        .insert(&old_tombstone, &(NOW + 1_000).to_be_bytes())
        .unwrap();
    let kept = identity_key(&bob, &r(bob, 8));
    forgotten
        .insert(&kept, &(NOW + 1_000).to_be_bytes())
        .unwrap();
    for _ in 0..2 {
        assert_eq!(migrate_index_to_recipient_id_digest(m.db()).unwrap(), 2);
        let mut keys: Vec<Vec<u8>> = ids.iter().keys().map(|k| k.unwrap().to_vec()).collect();
        keys.sort();
        let mut expected = vec![
            identity_key(&bob, &ref_of_env(&alice)),
            identity_key(&carol, &ref_of_env(&carols)),
        ];
        expected.sort();
        assert_eq!(keys, expected);
        let tombstones: Vec<Vec<u8>> = forgotten
            .iter()
            .keys()
            .map(|k| k.unwrap().to_vec())
            .collect();
        assert_eq!(tombstones, vec![kept.clone()]);
    }
    // The migrated index works: duplicates are recognised, deletes find their envelope.
    assert_eq!(
        m.deposit(&alice, &alice_bytes, &limits, Quota::Mailbox, NOW)
            .unwrap(),
        Ok(Deposit::Duplicate)
    );
    assert_eq!(put(&m, bob, 8, &limits), Ok(Deposit::Duplicate));
    assert_eq!(
        m.delete(
            &carol,
            &[ref_of_env(&carols)],
            NOW + 1_000,
            &Limits::default()
        )
        .unwrap(),
        1
    );
    assert_eq!(usage_of(&m, &carol), None);
}

#[tokio::test]
async fn usage_is_rebuilt_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailboxes");
    let limits = Limits::default();
    let bob = user();
    {
        let m = Mailboxes::open(&path).unwrap();
        assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
        assert_eq!(put(&m, bob, 2, &limits), Ok(Deposit::Stored));
        m.commit().await.unwrap();
    }
    // The committer task lets go of the database shortly after the last handle goes.
    let m = open_when_released(&path)
        .await
        .expect("the database is released within 5 s");
    assert_eq!(ids_of(&m, &bob), vec![id(1), id(2)]);
    assert_eq!(usage_of(&m, &bob).map(|u| u.0), Some(2));
    assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Duplicate));
}

#[tokio::test]
async fn pages_list_a_mailbox_in_order_within_their_byte_bound() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let bob = user();
    for n in 0..20 {
        assert_eq!(put(&m, bob, n, &limits), Ok(Deposit::Stored));
    }
    let one = envelope(bob, id(0), NOW + 60_000, 100).1.len();
    let mut after: Option<Vec<u8>> = None;
    let mut seen = Vec::new();
    loop {
        let page = m
            .list_page(&bob, after.as_deref(), 3 * one, usize::MAX)
            .unwrap();
        assert!(page.held.len() <= 3);
        seen.extend(page.held.iter().map(|(r, _)| r.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (0..20).map(id).collect::<Vec<_>>());
}

#[tokio::test]
async fn tombstones_stop_at_their_cap_and_deletes_still_delete() {
    let (_dir, m) = open();
    let limits = Limits {
        max_tombstones_per_mailbox: 5,
        ..Limits::default()
    };
    let bob = user();
    let ahead: Vec<EnvelopeRef> = (100..200).map(|n| r(bob, n)).collect();
    m.delete(&bob, &ahead, NOW + 1_000, &limits).unwrap();
    assert_eq!(m.totals().tombstones, 5);
    assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
    assert_eq!(
        m.delete(&bob, &[r(bob, 1)], NOW + 1_000, &limits).unwrap(),
        1
    );
    assert!(ids_of(&m, &bob).is_empty());
    assert_eq!(m.totals().tombstones, 5);
    // Without a tombstone nothing remembers it: a copy that comes again is held again.
    assert_eq!(put(&m, bob, 1, &limits), Ok(Deposit::Stored));
    // Expired tombstones leave the count too.
    m.expire(NOW + 1_000).unwrap();
    assert_eq!(m.totals().tombstones, 0);
}

#[tokio::test]
async fn deposits_past_the_store_cap_are_refused_store_full() {
    let (_dir, m) = open();
    let limits = Limits::default();
    let one = envelope(user(), id(0), NOW + 60_000, 100).1.len() as u64;
    m.budget().set_cap(2 * one);
    assert_eq!(put(&m, user(), 1, &limits), Ok(Deposit::Stored));
    assert_eq!(put(&m, user(), 2, &limits), Ok(Deposit::Stored));
    assert_eq!(put(&m, user(), 3, &limits), Err(RefuseReason::StoreFull));
    let held = m.totals();
    assert_eq!((held.messages, held.bytes), (2, 2 * one));
}

#[tokio::test]
async fn requests_without_the_access_key_stay_within_their_allowance() {
    let (dir, m) = open();
    let bob = user();
    let limits = Limits::default();
    let allowance = RequestLimits {
        max_messages: 3,
        max_bytes: 1 << 20,
    };
    let request = |m: &Mailboxes, n: u8| {
        let (env, bytes) = envelope(bob, id(n), NOW + 60_000, 100);
        m.deposit(&env, &bytes, &limits, Quota::Requests(&allowance), NOW)
            .unwrap()
    };
    for n in 0..3 {
        assert_eq!(request(&m, n), Ok(Deposit::Stored));
    }
    assert_eq!(request(&m, 3), Err(RefuseReason::MailboxFull));
    // A contact's deposit (with the key) is not charged to the allowance.
    assert_eq!(put(&m, bob, 10, &limits), Ok(Deposit::Stored));
    assert_eq!(m.request_usage(&bob).0, 3);
    let held = m.list(&bob).unwrap();
    let first = held[0].0;
    assert!(m.is_request(&bob, &first).unwrap());
    assert!(!m.is_request(&bob, &held[3].0).unwrap());

    // Bob takes one: the allowance frees a slot, and the count survives a restart.
    m.delete(&bob, &[first], NOW + 1, &limits).unwrap();
    assert_eq!(request(&m, 4), Ok(Deposit::Stored));
    assert_eq!(request(&m, 5), Err(RefuseReason::MailboxFull));
    m.flush().unwrap();
    m.committer().shutdown().await;
    drop(m);
    let m = open_when_released(&dir.path().join("mailboxes"))
        .await
        .unwrap();
    assert_eq!(m.request_usage(&bob).0, 3);
    assert_eq!(request(&m, 6), Err(RefuseReason::MailboxFull));
}
