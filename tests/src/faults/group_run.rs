//! A group chat as users run it: real `kith run` processes and three `kith-bootstrap`
//! store peers, everything through the REST API. alice makes a group with bob and carol;
//! carol's node is killed; while she is away alice adds dave, renames the group and sends,
//! is herself `kill -9`ed right after her sends were answered, and comes back; bob writes
//! too. carol returns and must show the change and every message exactly once; every
//! member ends holding everything; alice's messages reach ✓✓ (every member delivered).

use std::{collections::HashSet, path::Path, sync::Arc, time::Duration};

use anyhow::{bail, ensure, Context, Result};
use kith_node::{client::ApiClient, handle::MessageView};
use kith_protocol::DeliveryStatus;

use super::{cluster::Cluster, ledger::Ledger};

/// How long each wait of the run may take.
const WAIT: Duration = Duration::from_secs(90);

/// Pause between two polls of a condition.
const POLL: Duration = Duration::from_millis(200);

async fn group_messages(api: &ApiClient, group: &str) -> Result<Vec<MessageView>> {
    let mut all = Vec::new();
    let mut offset = None;
    loop {
        let page = api.conversation(group, offset, Some(200), None).await?;
        all.extend(page.messages);
        match page.next_offset {
            Some(next) => offset = Some(next),
            None => return Ok(all),
        }
    }
}

/// Polls `check` until it is true, for at most [`WAIT`]; `what` names it in the error.
async fn until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            match last_err {
                Some(e) => bail!("timed out waiting for {what} (last error: {e:#})"),
                None => bail!("timed out waiting for {what}"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `api` holds every text of `texts`, then checks none is there twice.
async fn holds_once(api: &ApiClient, who: &str, group: &str, texts: &[String]) -> Result<()> {
    until(
        &format!("{who} holds {} group messages", texts.len()),
        || async {
            let msgs = group_messages(api, group).await?;
            let have: HashSet<&str> = msgs.iter().map(|m| m.text.as_str()).collect();
            Ok(texts.iter().all(|t| have.contains(t.as_str())))
        },
    )
    .await?;
    let msgs = group_messages(api, group).await?;
    let mut ids = HashSet::new();
    for m in &msgs {
        ensure!(
            ids.insert(m.id.clone()),
            "{who} shows message {} twice",
            m.id
        );
    }
    Ok(())
}

/// Runs the scenario in `root` with the binaries of `bin_dir`.
pub async fn three_users_and_an_offline_change(bin_dir: &Path, root: &Path) -> Result<()> {
    let ledger = Arc::new(Ledger::default());
    let mut c = Cluster::start(bin_dir, root, ledger).await?;
    let result = scenario(&mut c).await;
    c.stop_all();
    result
}

async fn scenario(c: &mut Cluster) -> Result<()> {
    let (alice, bob, carol, dave) = (0, 1, 2, 3);
    let id = |i: usize| c.users[i].user_id.clone();
    let (bob_id, carol_id, dave_id) = (id(bob), id(carol), id(dave));
    let view = c
        .api(alice)?
        .create_group("hikers", &[bob_id.clone(), carol_id.clone()])
        .await
        .context("alice creates the group")?;
    let group = view.id.clone();
    for (i, who) in [(bob, "bob"), (carol, "carol")] {
        let api = c.api(i)?;
        until(&format!("{who} joins"), || async {
            Ok(api
                .group(&group)
                .await
                .is_ok_and(|g| g.active && g.members.len() == 3))
        })
        .await?;
    }
    c.api(alice)?
        .send_group_text(&group, "hello hikers", None)
        .await?;
    holds_once(&c.api(carol)?, "carol", &group, &["hello hikers".into()]).await?;

    c.note("carol goes away");
    c.kill_user(carol)?;
    let a = c.api(alice)?;
    a.add_member(&group, &dave_id)
        .await
        .context("alice adds dave")?;
    a.rename_group(&group, "hikers & dave").await?;
    let mut texts = vec!["hello hikers".to_string()];
    for i in 0..5 {
        let t = format!("while carol is away {i}");
        a.send_group_text(&group, &t, None).await?;
        texts.push(t);
    }
    // The sends were answered: a crash now must lose none of them.
    c.kill_user(alice)?;
    c.start_user(alice).await?;
    let t = "bob says hi".to_string();
    c.api(bob)?.send_group_text(&group, &t, None).await?;
    texts.push(t);

    c.note("carol comes back");
    c.start_user(carol).await?;
    let api = c.api(carol)?;
    until("carol sees dave and the new name", || async {
        Ok(api
            .group(&group)
            .await
            .is_ok_and(|g| g.members.len() == 4 && g.name == "hikers & dave"))
    })
    .await?;
    holds_once(&api, "carol", &group, &texts).await?;
    holds_once(&c.api(bob)?, "bob", &group, &texts).await?;
    holds_once(&c.api(dave)?, "dave", &group, &texts[1..]).await?;
    let a = c.api(alice)?;
    until("alice's messages delivered to every member", || async {
        let msgs = group_messages(&a, &group).await?;
        Ok(msgs
            .iter()
            .filter(|m| m.outgoing)
            .all(|m| m.status >= DeliveryStatus::Delivered))
    })
    .await?;
    for (name, log) in c.logs() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("panicked")) {
            bail!("{name} panicked: {line}");
        }
    }
    Ok(())
}
