//! The commands that talk to a running node through its REST API (`kith invite`, `contacts`,
//! `send`, `history`, `read`, `presence`; groups are in [`super::groups`]) and print its answers with [`super::print`].

use anyhow::{bail, Context, Result};
use kith_node::client::{is_group_id, ApiClient};

use super::print::{
    contact_line, group_history_line, history_line, sender_name, status_word, time_of,
};

/// `kith invite`.
pub async fn invite(client: &ApiClient) -> Result<()> {
    let me = client.me().await?;
    println!("{}", me.invite);
    Ok(())
}

/// `kith contacts add`.
pub async fn add_contact(client: &ApiClient, invite: &str, name: Option<&str>) -> Result<()> {
    let contact = client.add_contact(invite, name).await?;
    println!("added {}", contact_line(&contact.user_id, &contact.name));
    Ok(())
}

/// `kith contacts list`.
pub async fn list_contacts(client: &ApiClient) -> Result<()> {
    let contacts = client.contacts().await?;
    if contacts.is_empty() {
        println!("no contacts yet; add one with `kith contacts add <invite>`");
    }
    for contact in contacts {
        println!("{}", contact_line(&contact.user_id, &contact.name));
    }
    Ok(())
}

/// `kith contacts remove <user>`.
pub async fn remove_contact(client: &ApiClient, user: &str) -> Result<()> {
    client.remove_contact(user).await?;
    println!("removed {user}");
    Ok(())
}

/// `kith requests`.
pub async fn requests(client: &ApiClient) -> Result<()> {
    let requests = client.requests().await?;
    if requests.is_empty() {
        println!("no message requests");
    }
    for r in requests {
        println!(
            "{}  {} message(s) since {}  (`kith history {0}`, `kith accept {0}`, `kith block {0}`)",
            r.user_id,
            r.messages,
            time_of(r.since_ms)
        );
    }
    Ok(())
}

/// `kith accept <user>`.
pub async fn accept(client: &ApiClient, user: &str) -> Result<()> {
    let contact = client.accept(user).await?;
    println!("accepted {}", contact_line(&contact.user_id, &contact.name));
    Ok(())
}

/// `kith block <user>`.
pub async fn block(client: &ApiClient, user: &str) -> Result<()> {
    client.block(user).await?;
    println!("blocked {user}");
    Ok(())
}

/// `kith unblock <user>`.
pub async fn unblock(client: &ApiClient, user: &str) -> Result<()> {
    client.unblock(user).await?;
    println!("unblocked {user}");
    Ok(())
}

/// `kith blocked`.
pub async fn blocked(client: &ApiClient) -> Result<()> {
    let blocked = client.blocked().await?;
    if blocked.is_empty() {
        println!("nobody is blocked");
    }
    for b in blocked {
        println!("{}  since {}", b.user_id, time_of(b.since_ms));
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
    println!("{} {}", sent.id, status_word(sent.status));
    Ok(())
}

/// `kith send <user> --file <path>`.
pub async fn send_file(
    client: &ApiClient,
    user: &str,
    path: &std::path::Path,
    caption: Option<&str>,
) -> Result<()> {
    let sent = super::media::send_file(client, user, path, caption).await?;
    println!("{} {} {}", sent.id, status_word(sent.status), sent.hash);
    Ok(())
}

/// `kith history <user|group>`: a page, oldest first, and how to get the older one; a
/// group's incoming messages show their sender.
pub async fn history(
    client: &ApiClient,
    user: &str,
    offset: usize,
    count: Option<usize>,
) -> Result<()> {
    let page = client.conversation(user, Some(offset), count, None).await?;
    if page.messages.is_empty() {
        println!("no messages");
    }
    if is_group_id(user) {
        let names = super::groups::names(client, user).await?;
        for message in page.messages.iter().rev() {
            println!(
                "{}",
                group_history_line(message, &sender_name(&message.from, &names))
            );
        }
    } else {
        for message in page.messages.iter().rev() {
            println!("{}", history_line(message));
        }
    }
    if let Some(next) = page.next_offset {
        let count = count.map(|c| format!(" --count {c}")).unwrap_or_default();
        println!("-- older: kith history {user} --offset {next}{count}");
    }
    Ok(())
}

/// `kith read <user|group>`.
pub async fn mark_read(client: &ApiClient, user: &str) -> Result<()> {
    let marked = client.mark_read(user).await?;
    println!(
        "marked {marked} message{} read",
        if marked == 1 { "" } else { "s" }
    );
    Ok(())
}

/// `kith presence <user>`.
pub async fn presence(client: &ApiClient, user: &str) -> Result<()> {
    let presence = client.presence(user).await?;
    if presence.online {
        println!("online");
    } else if let Some(ms) = presence.last_seen_ms {
        println!("last seen {}", time_of(ms));
    } else {
        println!("last seen hidden");
    }
    Ok(())
}
