//! Backup and restore between real nodes with store peers: alice's backup is taken from her
//! running node (through its API, as `kith backup create` does), her data directory is then
//! lost, bob writes while she is gone, and the node restored from the backup into an empty
//! directory is alice again — same user, old conversation intact — and gets bob's new
//! messages from her store peers, each once, and can write to him. A wrong passphrase is a
//! clear error and writes nothing.

use anyhow::{ensure, Context, Result};
use kith_node::backup::{self, BackupError};
use kith_protocol::{
    backup::{BackupError as ArchiveError, KdfCost},
    DeliveryStatus,
};
use kith_tests::{
    init_logging, introduce,
    mesh::{MailboxClient, Mesh},
    wait_for, TestNode, TIMEOUT,
};

/// A cheap key derivation: the test checks the flow, not Argon2's cost.
const CHEAP: KdfCost = KdfCost {
    m_cost_kib: 1024,
    t_cost: 1,
    lanes: 1,
};

async fn wait_texts(node: &TestNode, peer: &TestNode, texts: &[&str]) -> Result<()> {
    let what = format!("{} holds {texts:?} from {}", node.name(), peer.name());
    wait_for(TIMEOUT, &what, || async {
        let conv = node.conversation(&peer.user_id())?;
        Ok(texts
            .iter()
            .all(|t| conv.iter().any(|m| m.text == *t))
            .then_some(()))
    })
    .await?;
    let conv = node.conversation(&peer.user_id())?;
    for t in texts {
        let n = conv.iter().filter(|m| m.text == *t).count();
        ensure!(n == 1, "{}: {t:?} held {n} times", node.name());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_node_is_the_same_user_with_its_history_and_gets_what_came_meanwhile(
) -> Result<()> {
    init_logging();
    let mesh = Mesh::start(3, |_| {}).await?;
    let mut alice = mesh.node("alice", |_| {}).await?;
    let bob = mesh.node("bob", |_| {}).await?;
    introduce(&alice, &bob).await?;
    let mut probe = MailboxClient::random().await?;
    mesh.wait_known_by(&mut probe, &[&alice, &bob]).await?;

    bob.node()?
        .send_text(
            alice.user_id(),
            "before the backup".into(),
            serde_json::json!({}),
        )
        .await?;
    alice
        .node()?
        .send_text(bob.user_id(), "hello bob".into(), serde_json::json!({}))
        .await?;
    wait_texts(&alice, &bob, &["before the backup", "hello bob"]).await?;
    wait_texts(&bob, &alice, &["hello bob"]).await?;

    // The backup, from the running node, as `kith backup create` takes it.
    let token = std::fs::read_to_string(alice.data_dir().join(kith_node::run::TOKEN_FILE))?;
    let client = kith_node::client::ApiClient::new(alice.api()?.base(), token)?;
    let encoded = client.backup(false).await?;
    let archive = backup::seal(&encoded, "a long passphrase", CHEAP)?;

    // alice's machine dies with her data directory.
    alice.abort().await?;
    let sent = [
        bob.node()?
            .send_text(
                alice.user_id(),
                "while you were away".into(),
                serde_json::json!({}),
            )
            .await?,
        bob.node()?
            .send_text(alice.user_id(), "and another".into(), serde_json::json!({}))
            .await?,
    ];
    wait_for(
        TIMEOUT,
        "bob's two messages held by store peers (✓)",
        || async {
            let conv = bob.conversation(&alice.user_id())?;
            Ok(sent
                .iter()
                .all(|s| {
                    conv.iter()
                        .any(|m| m.id == s.id && m.status >= DeliveryStatus::Sent)
                })
                .then_some(()))
        },
    )
    .await?;

    // A wrong passphrase: a clear error, and nothing written.
    let fresh = tempfile::tempdir()?;
    let target = fresh.path().join("alice");
    match backup::restore(&target, &archive, "not the passphrase") {
        Err(BackupError::Archive(ArchiveError::WrongPassphrase)) => {}
        other => anyhow::bail!("restore with a wrong passphrase: {other:?}"),
    }
    ensure!(
        !target.exists(),
        "a failed restore wrote {}",
        target.display()
    );

    let user = backup::restore(&target, &archive, "a long passphrase")?;
    ensure!(user == alice.user_id().to_string(), "restored as {user}");
    // Restoring over a node is refused.
    match backup::restore(&target, &archive, "a long passphrase") {
        Err(BackupError::NotEmpty(_)) => {}
        other => anyhow::bail!("restore over a node: {other:?}"),
    }

    let restored = mesh
        .node("alice-restored", |c| c.data_dir = target.clone())
        .await?;
    ensure!(
        restored.user_id() == alice.user_id(),
        "the restored node is another user"
    );
    wait_texts(
        &restored,
        &bob,
        &[
            "before the backup",
            "hello bob",
            "while you were away",
            "and another",
        ],
    )
    .await
    .context("the restored node's history and what came meanwhile")?;
    restored
        .node()?
        .send_text(bob.user_id(), "I'm back".into(), serde_json::json!({}))
        .await?;
    wait_texts(&bob, &restored, &["hello bob", "I'm back"]).await?;
    Ok(())
}
