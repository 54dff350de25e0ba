//! "typing…" between real nodes with store peers: it reaches an online contact as an event
//! and leaves nothing behind (no message, no receipt, nothing at the store peers); to a
//! contact who is offline it is not sent at all, so the store peers never hold one; a
//! stranger's API call is refused.

use anyhow::{ensure, Result};
use kith_node::Event;
use kith_protocol::LocalIdentity;
use kith_tests::{
    init_logging, introduce,
    mesh::{MailboxClient, Mesh},
    wait_event, wait_for, TIMEOUT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_an_online_contact_and_is_never_stored() -> Result<()> {
    init_logging();
    let mesh = Mesh::start(3, |_| {}).await?;
    let alice = mesh.node("alice", |_| {}).await?;
    let mut bob = mesh.node("bob", |_| {}).await?;
    introduce(&alice, &bob).await?;
    let mut probe = MailboxClient::random().await?;
    mesh.wait_known_by(&mut probe, &[&alice, &bob]).await?;
    let mut bob_events = bob.node()?.subscribe();

    // Once a direct link is up, it leaves and bob sees it.
    let (a, b) = (alice.user_id(), bob.user_id());
    wait_for(TIMEOUT, "alice's typing to leave over a link", || async {
        Ok(alice.node()?.typing(b, true).await?.then_some(()))
    })
    .await?;
    wait_event(
        &mut bob_events,
        TIMEOUT,
        "bob sees alice typing",
        |e| matches!(e, Event::Typing { peer, typing: true } if *peer == a.to_string()),
    )
    .await?;
    ensure!(
        bob.conversation(&a)?.is_empty() && alice.conversation(&b)?.is_empty(),
        "typing left a message behind"
    );

    // bob goes offline: nothing leaves, and no store peer ever holds it.
    bob.shutdown().await?;
    wait_for(TIMEOUT, "alice to see bob's link gone", || async {
        Ok((!alice.node()?.typing(b, true).await?).then_some(()))
    })
    .await?;
    let held = |mesh: &Mesh| -> Result<u64> {
        mesh.stores
            .iter()
            .filter(|s| s.is_running())
            .map(|s| s.stored_messages())
            .sum()
    };
    let before = held(&mesh)?;
    for _ in 0..5 {
        ensure!(
            !alice.node()?.typing(b, true).await?,
            "typing sent with no link"
        );
    }
    let after = held(&mesh)?;
    ensure!(
        after <= before,
        "store peers held {before} messages, then {after}: typing was deposited"
    );

    // Only contacts.
    let stranger = LocalIdentity::generate(0, &mut rand::rngs::OsRng).user_id();
    ensure!(
        alice.node()?.typing(stranger, true).await.is_err(),
        "typing to a stranger accepted"
    );
    Ok(())
}
