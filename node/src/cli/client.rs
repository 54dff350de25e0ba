//! The commands that talk to a running node through its REST API (`kith invite`, `me`,
//! `contacts`, `send`, `history`, `read`, `presence`; groups are in [`super::groups`]) and
//! print its answers with [`super::print`], or as JSON in the API's shapes with `--json`.

use anyhow::{bail, Context, Result};
use chrono::Local;
use kith_node::client::{is_group_id, ApiClient};
use serde_json::json;

use super::{
    args::Output,
    out::{self, outln},
    print::{contact_line, group_history_line, history_line, sender_name, status_word, time_of},
};

/// `kith invite`.
pub async fn invite(client: &ApiClient, output: Output) -> Result<()> {
    let me = client.me().await?;
    if output.json {
        return out::json(&json!({ "invite": me.invite }));
    }
    outln!("{}", me.invite)
}

/// `kith me`: user id, listen addresses and invite (`GET /v1/me`).
pub async fn me(client: &ApiClient, output: Output) -> Result<()> {
    let me = client.me().await?;
    if output.json {
        return out::json(&me);
    }
    outln!("user    {}", me.user_id)?;
    for addr in &me.listen_addrs {
        outln!("addr    {addr}")?;
    }
    outln!("invite  {}", me.invite)
}

/// `kith contacts add`.
pub async fn add_contact(client: &ApiClient, invite: &str, name: Option<&str>) -> Result<()> {
    let contact = client.add_contact(invite, name).await?;
    outln!("added {}", contact_line(&contact.user_id, &contact.name))
}

/// `kith contacts list`.
pub async fn list_contacts(client: &ApiClient, output: Output) -> Result<()> {
    let contacts = client.contacts().await?;
    if output.json {
        return out::json(&json!({ "contacts": contacts }));
    }
    if contacts.is_empty() {
        outln!("no contacts yet; add one with `kith contacts add <invite>`")?;
    }
    for contact in contacts {
        outln!("{}", contact_line(&contact.user_id, &contact.name))?;
    }
    Ok(())
}

/// `kith contacts remove <user>`.
pub async fn remove_contact(client: &ApiClient, user: &str) -> Result<()> {
    client.remove_contact(user).await?;
    outln!("removed {user}")
}

/// `kith requests`.
pub async fn requests(client: &ApiClient, output: Output) -> Result<()> {
    let requests = client.requests().await?;
    if output.json {
        return out::json(&json!({ "requests": requests }));
    }
    if requests.is_empty() {
        outln!("no message requests")?;
    }
    for r in requests {
        outln!(
            "{}  {} message(s) since {}  (`kith history {0}`, `kith accept {0}`, `kith block {0}`)",
            r.user_id,
            r.messages,
            time_of(r.since_ms, &Local)
        )?;
    }
    Ok(())
}

/// `kith accept <user>`.
pub async fn accept(client: &ApiClient, user: &str) -> Result<()> {
    let contact = client.accept(user).await?;
    outln!("accepted {}", contact_line(&contact.user_id, &contact.name))
}

/// `kith block <user>`.
pub async fn block(client: &ApiClient, user: &str) -> Result<()> {
    client.block(user).await?;
    outln!("blocked {user}")
}

/// `kith unblock <user>`.
pub async fn unblock(client: &ApiClient, user: &str) -> Result<()> {
    client.unblock(user).await?;
    outln!("unblocked {user}")
}

/// `kith blocked`.
pub async fn blocked(client: &ApiClient, output: Output) -> Result<()> {
    let blocked = client.blocked().await?;
    if output.json {
        return out::json(&json!({ "blocked": blocked }));
    }
    if blocked.is_empty() {
        outln!("nobody is blocked")?;
    }
    for b in blocked {
        outln!("{}  since {}", b.user_id, time_of(b.since_ms, &Local))?;
    }
    Ok(())
}

/// `kith send <user|group> <text>`.
pub async fn send_text(
    client: &ApiClient,
    user: &str,
    text: Option<String>,
    meta: Option<String>,
) -> Result<()> {
    let text = text.unwrap_or_default();
    let meta = match meta {
        None => None,
        Some(raw) => {
            let value: serde_json::Value =
                serde_json::from_str(&raw).context("--meta is not valid JSON")?;
            if !value.is_object() {
                bail!("--meta must be a JSON object, like '{{\"key\":\"value\"}}'");
            }
            Some(value)
        }
    };
    let sent = if is_group_id(user) {
        client.send_group_text(user, &text, meta.as_ref()).await?
    } else {
        client.send_text(user, &text, meta.as_ref()).await?
    };
    outln!("{} {}", sent.id, status_word(sent.status))
}

/// `kith send <user> --file <path>`.
pub async fn send_file(
    client: &ApiClient,
    user: &str,
    path: &std::path::Path,
    caption: Option<&str>,
) -> Result<()> {
    let sent = super::media::send_file(client, user, path, caption).await?;
    outln!("{} {} {}", sent.id, status_word(sent.status), sent.hash)
}

/// `kith history <user|group>`: a page, oldest first, in local time, and how to get the
/// older one; a group's incoming messages show their sender. With `--json`, the API's page
/// (newest first, times in UTC).
pub async fn history(
    client: &ApiClient,
    user: &str,
    (offset, count): (usize, Option<usize>),
    output: Output,
) -> Result<()> {
    let page = client.conversation(user, Some(offset), count, None).await?;
    if output.json {
        return out::json(&page);
    }
    if page.messages.is_empty() {
        outln!("no messages")?;
    }
    if is_group_id(user) {
        let names = super::groups::names(client, user).await?;
        for message in page.messages.iter().rev() {
            let sender = sender_name(&message.from, &names);
            outln!("{}", group_history_line(message, &sender, &Local))?;
        }
    } else {
        for message in page.messages.iter().rev() {
            outln!("{}", history_line(message, &Local))?;
        }
    }
    if let Some(next) = page.next_offset {
        let count = count.map(|c| format!(" --count {c}")).unwrap_or_default();
        outln!("-- older: kith history {user} --offset {next}{count}")?;
    }
    Ok(())
}

/// `kith read <user|group>`.
pub async fn mark_read(client: &ApiClient, user: &str) -> Result<()> {
    let marked = client.mark_read(user).await?;
    outln!(
        "marked {marked} message{} read",
        if marked == 1 { "" } else { "s" }
    )
}

/// `kith presence <user>`.
pub async fn presence(client: &ApiClient, user: &str, output: Output) -> Result<()> {
    let presence = client.presence(user).await?;
    if output.json {
        return out::json(&presence);
    }
    if presence.online {
        outln!("online")
    } else if let Some(ms) = presence.last_seen_ms {
        outln!("last seen {}", time_of(ms, &Local))
    } else {
        outln!("last seen hidden")
    }
}
