//! Settings and verification between real in-process nodes: the profile name reaches
//! contacts (and follows changes), read receipts off on one side leave no blue ticks on
//! either side while delivered ticks still come, last seen `nobody` hides both ways, settings
//! survive a restart, safety numbers agree on both sides, and a contact re-added under the
//! same name with a new key is linked to the old one and unverified.

#![allow(clippy::unwrap_used)]

use anyhow::{ensure, Result};
use kith_node::{handle::ContactView, Event};
use kith_protocol::{DeliveryStatus, UserId};
use kith_tests::{init_logging, introduce, wait_event, wait_for, ApiClient, TestNode, TIMEOUT};
use serde_json::{json, Value};
use tokio::sync::broadcast::Receiver;

async fn put_settings(api: &ApiClient, body: Value) -> Result<()> {
    api.put("/v1/settings", &body).await?.expect_status(204)?;
    Ok(())
}

async fn contact(api: &ApiClient, user: &UserId) -> Result<ContactView> {
    let res = api.get("/v1/contacts").await?;
    res.expect_status(200)?;
    let list: Vec<ContactView> = serde_json::from_value(res.body["contacts"].clone())?;
    list.into_iter()
        .find(|c| c.user_id == user.to_string())
        .ok_or_else(|| anyhow::anyhow!("{user} is not a contact"))
}

/// Waits for a contact event about `user` that satisfies `pred`.
async fn wait_contact(
    events: &mut Receiver<Event>,
    user: &UserId,
    what: &str,
    pred: impl Fn(&ContactView) -> bool,
) -> Result<ContactView> {
    let who = user.to_string();
    let event = wait_event(
        events,
        TIMEOUT,
        what,
        |e| matches!(e, Event::Contact { contact } if contact.user_id == who && pred(contact)),
    )
    .await?;
    let Event::Contact { contact } = event else {
        unreachable!()
    };
    Ok(*contact)
}

async fn wait_status(events: &mut Receiver<Event>, id: &str, status: DeliveryStatus) -> Result<()> {
    wait_event(
        events,
        TIMEOUT,
        &format!("{id} to be {status:?}"),
        |e| matches!(e, Event::Status { id: i, status: s, .. } if i == id && *s == status),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_name_reaches_the_contact_and_follows_changes() -> Result<()> {
    init_logging();
    let mut alice = TestNode::start("alice").await?;
    let bob = TestNode::start("bob").await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    let mut bob_events = bob.node()?.subscribe();
    put_settings(&alice.api()?, json!({"profile_name": "Alice Liddell"})).await?;
    put_settings(&bob.api()?, json!({"profile_name": "Bob B"})).await?;
    // Bob adds alice without naming her; alice names him.
    bob.node()?
        .add_contact(&alice.invite().await?, None)
        .await?;
    alice
        .node()?
        .add_contact(&bob.invite().await?, Some("bobby".into()))
        .await?;
    let seen = wait_contact(&mut bob_events, &a, "alice's profile at bob", |c| {
        c.profile_name == "Alice Liddell"
    })
    .await?;
    ensure!(
        seen.display_name == "Alice Liddell" && seen.name.is_empty(),
        "{seen:?}"
    );
    // Alice named bob herself: she keeps her name, and his profile name beside it.
    let alice_api = alice.api()?;
    let bob_at_alice = wait_for(TIMEOUT, "bob's profile at alice", || {
        let api = alice_api.clone();
        async move {
            let c = contact(&api, &b).await?;
            Ok((c.profile_name == "Bob B").then_some(c))
        }
    })
    .await?;
    ensure!(bob_at_alice.display_name == "bobby", "{bob_at_alice:?}");

    // A change reaches the contact.
    put_settings(&alice_api, json!({"profile_name": "Alice"})).await?;
    wait_contact(&mut bob_events, &a, "alice's new profile name", |c| {
        c.profile_name == "Alice"
    })
    .await?;

    // Settings survive a restart.
    put_settings(
        &alice_api,
        json!({"last_seen": "everyone", "read_receipts": false, "auto_download_bytes": 1024,
               "auto_download_contacts_only": true, "notifications": false}),
    )
    .await?;
    alice.shutdown().await?;
    alice.restart().await?;
    let res = alice.api()?.get("/v1/settings").await?;
    res.expect_status(200)?;
    let expected = json!({"profile_name": "Alice", "last_seen": "everyone",
        "share_last_seen": true, "read_receipts": false, "auto_download_bytes": 1024,
        "auto_download_contacts_only": true, "notifications": false});
    ensure!(res.body == expected, "settings after restart: {}", res.body);
    // A bad change is refused with a code.
    let res = alice
        .api()?
        .put("/v1/settings", &json!({"last_seen": "friends"}))
        .await?;
    ensure!(res.status == 422 || res.status == 400, "{res:?}");
    let res = alice
        .api()?
        .put("/v1/settings", &json!({"profile_name": "x".repeat(101)}))
        .await?;
    res.expect_error(413, "too_large")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_off_on_one_side_means_no_blue_ticks_on_either() -> Result<()> {
    init_logging();
    let alice = TestNode::start("alice").await?;
    let bob = TestNode::start("bob").await?;
    introduce(&alice, &bob).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    let (alice_api, bob_api) = (alice.api()?, bob.api()?);
    let mut alice_events = alice.node()?.subscribe();
    let mut bob_events = bob.node()?.subscribe();

    put_settings(&alice_api, json!({"read_receipts": false})).await?;
    wait_contact(
        &mut bob_events,
        &a,
        "bob to learn alice hides read receipts",
        |c| !c.read_receipts,
    )
    .await?;

    // Each writes to the other; delivered ticks come both ways.
    let to_bob = alice_api.send_text(&b, "from alice", json!({})).await?;
    let to_alice = bob_api.send_text(&a, "from bob", json!({})).await?;
    wait_status(&mut alice_events, &to_bob, DeliveryStatus::Delivered).await?;
    wait_status(&mut bob_events, &to_alice, DeliveryStatus::Delivered).await?;

    // Both read; no read receipt goes either way.
    for (api, peer) in [(&bob_api, &a), (&alice_api, &b)] {
        api.post(&format!("/v1/conversations/{peer}/read"), &json!({}))
            .await?
            .expect_status(200)?;
    }
    // A later message on the same link is delivered after any receipt queued before it.
    let after_bob = alice_api.send_text(&b, "again", json!({})).await?;
    let after_alice = bob_api.send_text(&a, "again", json!({})).await?;
    wait_status(&mut alice_events, &after_bob, DeliveryStatus::Delivered).await?;
    wait_status(&mut bob_events, &after_alice, DeliveryStatus::Delivered).await?;
    for (node, peer, id) in [(&alice, &b, &to_bob), (&bob, &a, &to_alice)] {
        let msg = node
            .conversation(peer)?
            .into_iter()
            .find(|m| &m.id == id)
            .unwrap();
        ensure!(
            msg.status == DeliveryStatus::Delivered,
            "{}'s message must stay delivered, not read: {msg:?}",
            node.name()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_seen_nobody_hides_it_both_ways() -> Result<()> {
    init_logging();
    let start = |name: &'static str| {
        TestNode::start_with(name, |c| {
            c.heartbeat = std::time::Duration::from_millis(200)
        })
    };
    let alice = start("alice").await?;
    let bob = start("bob").await?;
    introduce(&alice, &bob).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    let (alice_api, bob_api) = (alice.api()?, bob.api()?);
    let online = |api: ApiClient, user: UserId| async move {
        let res = api.get(&format!("/v1/presence/{user}")).await?;
        Ok::<_, anyhow::Error>(res.body["online"] == json!(true))
    };
    wait_for(TIMEOUT, "each to see the other online", || {
        let (x, y) = (alice_api.clone(), bob_api.clone());
        async move { Ok((online(x, b).await? && online(y, a).await?).then_some(())) }
    })
    .await?;
    put_settings(&alice_api, json!({"last_seen": "nobody"})).await?;
    let hidden = |api: ApiClient, user: UserId| async move {
        let res = api.get(&format!("/v1/presence/{user}")).await?;
        Ok::<_, anyhow::Error>(
            res.body["online"] == json!(false) && res.body["last_seen"].is_null(),
        )
    };
    ensure!(
        hidden(alice_api.clone(), b).await?,
        "alice hides hers, so sees nobody's"
    );
    wait_for(TIMEOUT, "bob to see alice hidden", || {
        let api = bob_api.clone();
        async move { Ok(hidden(api, a).await?.then_some(())) }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_numbers_agree_and_a_new_key_clears_the_verified_mark() -> Result<()> {
    init_logging();
    let alice = TestNode::start("alice").await?;
    let bob = TestNode::start("bob").await?;
    introduce(&alice, &bob).await?;
    let (a, b) = (alice.user_id(), bob.user_id());
    let (alice_api, bob_api) = (alice.api()?, bob.api()?);
    let at_alice = alice_api
        .get(&format!("/v1/contacts/{b}/safety-number"))
        .await?;
    at_alice.expect_status(200)?;
    let at_bob = bob_api
        .get(&format!("/v1/contacts/{a}/safety-number"))
        .await?;
    at_bob.expect_status(200)?;
    ensure!(
        at_alice.body["digits"] == at_bob.body["digits"],
        "{at_alice:?} {at_bob:?}"
    );
    let digits = at_alice.body["digits"].as_str().unwrap_or_default();
    ensure!(digits.len() == 60 && digits.bytes().all(|c| c.is_ascii_digit()));
    ensure!(at_alice.body["groups"].as_array().map(Vec::len) == Some(12));
    ensure!(at_alice.body["qr_payload"] == json!(format!("kith-safety:0:{digits}")));
    let qr = alice_api
        .get(&format!("/v1/contacts/{b}/safety-number/qr.svg"))
        .await?;
    qr.expect_status(200)?;
    // A stranger has no safety number here.
    let stranger = TestNode::start("stranger").await?;
    alice_api
        .get(&format!(
            "/v1/contacts/{}/safety-number",
            stranger.user_id()
        ))
        .await?
        .expect_error(404, "unknown_contact")?;

    let res = alice_api
        .post(&format!("/v1/contacts/{b}/verify"), &json!({}))
        .await?;
    res.expect_status(200)?;
    ensure!(res.body["verified"] == json!(true), "{res:?}");
    ensure!(contact(&alice_api, &b).await?.verified);

    // Bob reinstalls: a new identity, so a new user id. Alice adds his new invite under the
    // name she gave him: the two are linked and neither is verified.
    let bob2 = TestNode::start("bob").await?;
    let b2 = bob2.user_id();
    let mut alice_events = alice.node()?.subscribe();
    alice
        .node()?
        .add_contact(&bob2.invite().await?, Some("bob".into()))
        .await?;
    let old = wait_contact(
        &mut alice_events,
        &b,
        "the old bob to be marked replaced",
        |c| c.replaced_by.is_some(),
    )
    .await?;
    ensure!(
        !old.verified && old.replaced_by == Some(b2.to_string()),
        "{old:?}"
    );
    let new = contact(&alice_api, &b2).await?;
    ensure!(
        !new.verified && new.replaces == Some(b.to_string()) && new.key_changed_at_ms.is_some(),
        "{new:?}"
    );
    let renewed = alice_api
        .get(&format!("/v1/contacts/{b2}/safety-number"))
        .await?;
    ensure!(
        renewed.body["digits"] != at_alice.body["digits"],
        "a new key, a new number"
    );
    // Unmarking works too.
    alice_api
        .post(&format!("/v1/contacts/{b2}/verify"), &json!({}))
        .await?
        .expect_status(200)?;
    let res = alice_api
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/contacts/{b2}/verify"),
            None,
        )
        .await?;
    res.expect_status(200)?;
    ensure!(res.body["verified"] == json!(false), "{res:?}");
    Ok(())
}
