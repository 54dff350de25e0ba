use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};

use super::*;
use crate::LocalIdentity;

fn person(seed: u64) -> LocalIdentity {
    LocalIdentity::generate(0, &mut ChaCha20Rng::seed_from_u64(seed))
}

struct Trio {
    alice: LocalIdentity,
    bob: LocalIdentity,
    carol: LocalIdentity,
    genesis: SignedGroupState,
}

fn trio() -> Trio {
    let (alice, bob, carol) = (person(1), person(2), person(3));
    let group = GroupId([7; 16]);
    let genesis = GroupState::genesis(
        group,
        alice.user_id(),
        "friends",
        vec![bob.user_id(), carol.user_id()],
    )
    .unwrap()
    .sign(&alice)
    .unwrap();
    Trio {
        alice,
        bob,
        carol,
        genesis,
    }
}

fn change(
    prev: &SignedGroupState,
    by: &LocalIdentity,
    change: GroupChange,
) -> Result<SignedGroupState, GroupError> {
    prev.state
        .successor(prev.digest(), by.user_id(), change)?
        .sign(by)
}

#[test]
fn group_id_round_trips_as_hex() {
    let id = GroupId([0xab; 16]);
    assert_eq!(id.to_string(), "ab".repeat(16));
    assert_eq!(id.to_string().parse::<GroupId>().unwrap(), id);
    assert!("zz".repeat(16).parse::<GroupId>().is_err());
    assert!("ab".parse::<GroupId>().is_err());
    assert!("+a".repeat(16).parse::<GroupId>().is_err());
}

#[test]
fn genesis_lists_creator_as_only_admin_and_verifies() {
    let t = trio();
    assert_eq!(t.genesis.state.members.len(), 3);
    assert_eq!(t.genesis.state.admins, vec![t.alice.user_id()]);
    t.genesis.verify_standalone(&t.bob.user_id()).unwrap();
    assert!(t.genesis.verify_standalone(&person(9).user_id()).is_err());
}

#[test]
fn forged_or_tampered_states_are_refused() {
    let t = trio();
    let mut tampered = t.genesis.clone();
    tampered.state.name = "pwned".into();
    assert_eq!(tampered.verify(), Err(GroupError::BadSignature));
    // Bob signs a change only an admin may make.
    let by_bob = change(&t.genesis, &t.bob, GroupChange::Remove(t.carol.user_id()));
    assert!(matches!(by_bob, Err(GroupError::NotAllowed(_))));
    // Bob builds the state by hand anyway: members refuse it.
    let mut forged = t.genesis.state.clone();
    forged.epoch = 1;
    forged.parent = t.genesis.digest();
    forged.author = t.bob.user_id();
    forged.change = GroupChange::Remove(t.carol.user_id());
    forged.members.retain(|u| *u != t.carol.user_id());
    let forged = forged.sign(&t.bob).unwrap();
    let mut chain = GroupChain::new(t.genesis.clone());
    assert!(matches!(
        chain.offer(forged),
        Err(GroupError::NotAllowed(_))
    ));
    // An admin's change whose lists do not follow from it.
    let mut lying = t
        .genesis
        .state
        .successor(
            t.genesis.digest(),
            t.alice.user_id(),
            GroupChange::Rename("x".into()),
        )
        .unwrap();
    lying.members.retain(|u| *u != t.carol.user_id());
    let lying = lying.sign(&t.alice).unwrap();
    assert_eq!(
        chain.offer(lying),
        Err(GroupError::Invalid("lists do not follow from the change"))
    );
}

#[test]
fn changes_apply_in_epoch_order_and_gaps_wait() {
    let t = trio();
    let dave = person(4);
    let s1 = change(&t.genesis, &t.alice, GroupChange::Add(dave.user_id())).unwrap();
    let s2 = change(&s1, &t.alice, GroupChange::Remove(t.carol.user_id())).unwrap();
    let s3 = change(&s2, &t.bob, GroupChange::Leave).unwrap();
    let mut chain = GroupChain::new(t.genesis.clone());
    assert!(matches!(
        chain.offer(s3.clone()),
        Err(GroupError::Gap { have: 0, got: 3 })
    ));
    assert!(matches!(
        chain.offer(s2.clone()),
        Err(GroupError::Gap { .. })
    ));
    assert!(matches!(
        chain.offer(s1.clone()),
        Ok(Offered::Applied { .. })
    ));
    assert!(matches!(
        chain.offer(s2.clone()),
        Ok(Offered::Applied { .. })
    ));
    assert!(matches!(
        chain.offer(s3.clone()),
        Ok(Offered::Applied { .. })
    ));
    assert_eq!(chain.offer(s1.clone()), Ok(Offered::Duplicate));
    let head = &chain.head().state;
    assert_eq!(head.epoch, 3);
    assert!(head.is_member(&dave.user_id()));
    assert!(!head.is_member(&t.carol.user_id()));
    assert!(!head.is_member(&t.bob.user_id()));
}

#[test]
fn last_admin_leaving_hands_admin_to_lowest_member() {
    let t = trio();
    let s1 = change(&t.genesis, &t.alice, GroupChange::Leave).unwrap();
    assert_eq!(s1.state.admins.len(), 1);
    assert_eq!(s1.state.admins[0], s1.state.members[0]);
    GroupChain::new(t.genesis.clone()).offer(s1).unwrap();
}

/// Two admins change epoch 1 at once; members see the two states in either order, and one
/// member also sees a state built on the loser. All end on the same head.
#[test]
fn concurrent_admin_changes_converge_on_the_lower_digest() {
    let t = trio();
    let promote = change(&t.genesis, &t.alice, GroupChange::Promote(t.bob.user_id())).unwrap();
    let mut at_1 = GroupChain::new(t.genesis.clone());
    at_1.offer(promote.clone()).unwrap();
    let dave = person(4);
    let a = change(&promote, &t.alice, GroupChange::Rename("alice's".into())).unwrap();
    let b = change(&promote, &t.bob, GroupChange::Add(dave.user_id())).unwrap();
    let (winner, loser) = if a.digest() < b.digest() {
        (a, b)
    } else {
        (b, a)
    };
    let on_loser_author = if loser.state.author == t.alice.user_id() {
        &t.alice
    } else {
        &t.bob
    };
    let built_on_loser =
        change(&loser, on_loser_author, GroupChange::Rename("later".into())).unwrap();

    let mut first_winner = at_1.clone();
    first_winner.offer(winner.clone()).unwrap();
    assert_eq!(
        first_winner.offer(loser.clone()),
        Err(GroupError::Forked(2))
    );
    assert_eq!(
        first_winner.offer(built_on_loser.clone()),
        Err(GroupError::Forked(3))
    );

    let mut first_loser = at_1.clone();
    first_loser.offer(loser.clone()).unwrap();
    first_loser.offer(built_on_loser.clone()).unwrap();
    match first_loser.offer(winner.clone()).unwrap() {
        Offered::Applied { dropped } => assert_eq!(dropped, vec![loser.clone(), built_on_loser]),
        other => panic!("{other:?}"),
    }
    assert_eq!(first_winner.head(), first_loser.head());
    // The loser's author proposes its change again on the winner, and everyone takes it.
    let again = change(
        first_winner.head(),
        on_loser_author,
        loser.state.change.clone(),
    )
    .unwrap();
    first_winner.offer(again.clone()).unwrap();
    first_loser.offer(again).unwrap();
    assert_eq!(first_winner.head(), first_loser.head());
}

#[test]
fn history_is_bounded_and_old_states_are_stale() {
    let t = trio();
    let mut chain = GroupChain::new(t.genesis.clone());
    let mut prev = t.genesis.clone();
    for i in 0..(state::MAX_HISTORY as u64 + 5) {
        let next = change(&prev, &t.alice, GroupChange::Rename(format!("n{i}"))).unwrap();
        chain.offer(next.clone()).unwrap();
        prev = next;
    }
    assert!(chain.at(0).is_none());
    assert!(matches!(
        chain.offer(t.genesis.clone()),
        Err(GroupError::Stale { .. })
    ));
}

fn plain(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

#[test]
fn sender_key_seals_once_and_every_member_opens() {
    let t = trio();
    let group = t.genesis.group();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut mine = SenderKey::generate(group, 1, &mut rng);
    let gift = mine.distribution();
    let mut at_bob = ReceivedSenderKeys::default();
    let mut at_carol = ReceivedSenderKeys::default();
    at_bob.learn(&gift);
    at_carol.learn(&gift);
    let alice = t.alice.user_id();
    let m0 = mine
        .seal(&alice, MessageId([1; 16]), 0, &plain("hello"))
        .unwrap();
    let m1 = mine
        .seal(&alice, MessageId([2; 16]), 0, &plain("again"))
        .unwrap();
    assert_eq!(at_bob.open(&alice, &m0).unwrap(), plain("hello"));
    assert_eq!(at_bob.open(&alice, &m1).unwrap(), plain("again"));
    // Carol gets them out of order.
    assert_eq!(at_carol.open(&alice, &m1).unwrap(), plain("again"));
    assert_eq!(at_carol.open(&alice, &m0).unwrap(), plain("hello"));
    // A replay does not open twice.
    assert_eq!(at_carol.open(&alice, &m0), Err(GroupError::Replayed(0)));
}

#[test]
fn tampered_or_misattributed_group_messages_are_refused_without_moving_the_chain() {
    let t = trio();
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut mine = SenderKey::generate(t.genesis.group(), 1, &mut rng);
    let mut at_bob = ReceivedSenderKeys::default();
    at_bob.learn(&mine.distribution());
    let alice = t.alice.user_id();
    let m = mine
        .seal(&alice, MessageId([1; 16]), 0, &plain("hi"))
        .unwrap();
    let mut flipped = m.clone();
    flipped.ciphertext[0] ^= 1;
    assert_eq!(at_bob.open(&alice, &flipped), Err(GroupError::BadSignature));
    // Carol claims Alice's message as hers (the one-to-one seal says who sent it).
    assert_eq!(
        at_bob.open(&t.carol.user_id(), &m),
        Err(GroupError::BadSignature)
    );
    let mut other_key = m.clone();
    other_key.key_id = 9;
    assert_eq!(
        at_bob.open(&alice, &other_key),
        Err(GroupError::UnknownKey(9))
    );
    assert_eq!(at_bob.open(&alice, &m).unwrap(), plain("hi"));
}

#[test]
fn a_removed_member_cannot_open_what_follows_rotation() {
    let t = trio();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let alice = t.alice.user_id();
    let mut old = SenderKey::generate(t.genesis.group(), 1, &mut rng);
    let mut at_carol = ReceivedSenderKeys::default();
    let mut at_bob = ReceivedSenderKeys::default();
    at_carol.learn(&old.distribution());
    at_bob.learn(&old.distribution());
    let before = old
        .seal(&alice, MessageId([1; 16]), 0, &plain("before"))
        .unwrap();
    assert!(at_carol.open(&alice, &before).is_ok());
    // Carol is removed: Alice starts chain 2 and hands it to Bob only.
    let mut new = SenderKey::generate(t.genesis.group(), 2, &mut rng);
    at_bob.learn(&new.distribution());
    let after = new
        .seal(&alice, MessageId([2; 16]), 1, &plain("after"))
        .unwrap();
    assert_eq!(at_bob.open(&alice, &after).unwrap(), plain("after"));
    assert_eq!(
        at_carol.open(&alice, &after),
        Err(GroupError::UnknownKey(2))
    );
    // Even with chain 1 carried forward, Carol cannot forge or derive chain 2.
    let mut guess = after.clone();
    guess.key_id = 1;
    assert!(at_carol.open(&alice, &guess).is_err());
}

#[test]
fn skipped_keys_and_jumps_are_bounded() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let alice = person(1).user_id();
    let mut mine = SenderKey::generate(GroupId([1; 16]), 1, &mut rng);
    let mut at_bob = ReceivedSenderKeys::default();
    at_bob.learn(&mine.distribution());
    let mut last = None;
    for i in 0..(sender_key::MAX_FORWARD + 2) {
        last = Some(
            mine.seal(&alice, MessageId([0; 16]), 0, &plain(&i.to_string()))
                .unwrap(),
        );
    }
    let far = last.unwrap();
    assert!(matches!(
        at_bob.open(&alice, &far),
        Err(GroupError::TooFarAhead { .. })
    ));
}

#[test]
fn a_distribution_given_again_does_not_rewind_the_chain() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let alice = person(1).user_id();
    let mut mine = SenderKey::generate(GroupId([1; 16]), 1, &mut rng);
    let gift = mine.distribution();
    let mut at_bob = ReceivedSenderKeys::default();
    at_bob.learn(&gift);
    let m = mine
        .seal(&alice, MessageId([0; 16]), 0, &plain("x"))
        .unwrap();
    at_bob.open(&alice, &m).unwrap();
    at_bob.learn(&gift);
    assert_eq!(at_bob.open(&alice, &m), Err(GroupError::Replayed(0)));
}

#[test]
fn transport_ids_differ_per_member_and_are_stable() {
    let (a, b) = (person(1).user_id(), person(2).user_id());
    let id = MessageId([3; 16]);
    assert_ne!(transport_id(&id, &a), transport_id(&id, &b));
    assert_eq!(transport_id(&id, &a), transport_id(&id, &a));
}
