//! The incoming-media policy, against real in-process nodes: a contact's media larger than
//! the auto-download size waits for the user; a download no holder serves fails after its
//! timeout (freeing its slot) and a retry, once a holder is back, completes it. (A stranger's
//! media is never fetched: `requests.rs`.)

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use kith_node::media::{MediaRecord, MediaState};
use kith_protocol::blob::BlobHash;
use kith_tests::{init_logging, introduce, wait_for, Auth, TestNode, TIMEOUT};
use reqwest::Method;
use serde_json::json;

/// Bob fetches media up to this size without asking.
const AUTO: u64 = 1_000;

/// Deterministic bytes.
fn file_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Waits until `node` has a record of `hash` in `state`.
async fn wait_media(node: &TestNode, hash: &BlobHash, state: MediaState) -> Result<MediaRecord> {
    let what = format!("{} has media {hash} in state {state:?}", node.name());
    wait_for(TIMEOUT * 2, &what, || async {
        Ok(node.node()?.media(hash)?.filter(|r| r.state == state))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contacts_large_media_waits_and_an_unserved_download_fails_then_a_retry_completes(
) -> Result<()> {
    init_logging();
    let mut alice = TestNode::start("alice").await?;
    let bob = TestNode::start_with("bob", |c| {
        c.auto_download_bytes = AUTO;
        c.download_timeout = Duration::from_secs(1);
    })
    .await?;
    introduce(&alice, &bob).await?;
    let bytes = file_bytes(5 * AUTO as usize);
    let res = alice
        .api()?
        .raw(
            Method::POST,
            &format!("/v1/media?to={}&name=big.bin", bob.user_id()),
            Auth::Token,
            Some(("application/octet-stream", bytes.clone())),
        )
        .await?;
    res.expect_status(201)?;
    let hex = res.body["hash"]
        .as_str()
        .ok_or_else(|| anyhow!("no hash in {}", res.body))?;
    let hash = BlobHash::from_hex(hex).map_err(|e| anyhow!("{e}"))?;

    // Over the auto-download size: it waits, and nothing was asked of alice.
    wait_media(&bob, &hash, MediaState::Waiting).await?;
    ensure!(alice.node()?.media_counters().0 == 0, "alice served chunks");

    // Alice goes away; the user asks for the file: no holder serves it, so it fails after
    // the timeout instead of holding its slot for ever.
    alice.shutdown().await?;
    let api = bob.api()?;
    let res = api
        .post(&format!("/v1/media/{hash}/download"), &json!({}))
        .await?;
    res.expect_status(200)?;
    ensure!(res.body["state"] == "downloading", "{}", res.body);
    wait_media(&bob, &hash, MediaState::Failed).await?;

    // Alice is back: a retry completes it, byte for byte.
    alice.restart().await?;
    introduce(&alice, &bob).await?;
    api.post(&format!("/v1/media/{hash}/download"), &json!({}))
        .await?
        .expect_status(200)?;
    wait_media(&bob, &hash, MediaState::Complete).await?;
    let got = api
        .raw(Method::GET, &format!("/v1/media/{hash}"), Auth::Token, None)
        .await?;
    got.expect_status(200)?;
    // The test client reads JSON; the file itself is checked through the record's size.
    let rec = bob
        .node()?
        .media(&hash)?
        .ok_or_else(|| anyhow!("no record"))?;
    ensure!(rec.size == bytes.len() as u64 && rec.verified_bytes() == rec.size);
    Ok(())
}
