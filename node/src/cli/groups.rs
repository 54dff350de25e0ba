//! `kith group ...` and `kith info <message>`: group chats through the REST API, printed
//! with [`super::print`].

use std::collections::HashMap;

use anyhow::{bail, Result};
use kith_node::client::{is_group_id, ApiClient};

use super::{
    args::Output,
    out::{self, outln},
    print::{group_info_lines, group_line, message_info_lines},
};

/// The names a group's senders show with: the group's members' names, then the contacts'
/// (which also covers members who have since left). Ours stays empty.
pub async fn names(client: &ApiClient, group: &str) -> Result<HashMap<String, String>> {
    let mut names: HashMap<String, String> = client
        .contacts()
        .await?
        .into_iter()
        .map(|c| (c.user_id, c.name))
        .collect();
    for member in client.group(group).await?.members {
        let entry = names.entry(member.user_id).or_default();
        if entry.is_empty() {
            *entry = member.name;
        }
    }
    Ok(names)
}

/// A group given on the command line: its id, or the name of exactly one of our groups.
async fn resolve(client: &ApiClient, group: &str) -> Result<String> {
    if is_group_id(group) {
        return Ok(group.to_ascii_lowercase());
    }
    let matching: Vec<String> = client
        .groups()
        .await?
        .into_iter()
        .filter(|g| g.name == group)
        .map(|g| g.id)
        .collect();
    match matching.as_slice() {
        [id] => Ok(id.clone()),
        [] => bail!("no group is called `{group}`; give its id (`kith group list` shows them)"),
        _ => bail!("several groups are called `{group}`; give its id (`kith group list`)"),
    }
}

/// `kith group create <name> <user>...`.
pub async fn create(client: &ApiClient, name: &str, members: &[String]) -> Result<()> {
    let group = client.create_group(name, members).await?;
    outln!("created {}", group_line(&group))
}

/// `kith group list`.
pub async fn list(client: &ApiClient, output: Output) -> Result<()> {
    let groups = client.groups().await?;
    if output.json {
        return out::json(&serde_json::json!({ "groups": groups }));
    }
    if groups.is_empty() {
        outln!("no groups yet; create one with `kith group create <name> <user>...`")?;
    }
    for group in groups {
        outln!("{}", group_line(&group))?;
    }
    Ok(())
}

/// `kith group info <group>`: members, admins and epoch.
pub async fn info(client: &ApiClient, group: &str, output: Output) -> Result<()> {
    let id = resolve(client, group).await?;
    let group = client.group(&id).await?;
    if output.json {
        return out::json(&group);
    }
    let me = client.me().await?;
    for line in group_info_lines(&group, &me.user_id) {
        outln!("{line}")?;
    }
    Ok(())
}

/// `kith group add <group> <user>`.
pub async fn add(client: &ApiClient, group: &str, user: &str) -> Result<()> {
    let id = resolve(client, group).await?;
    let group = client.add_member(&id, user).await?;
    outln!("added {user} to {}", group_line(&group))
}

/// `kith group remove <group> <user>`.
pub async fn remove(client: &ApiClient, group: &str, user: &str) -> Result<()> {
    let id = resolve(client, group).await?;
    let group = client.remove_member(&id, user).await?;
    outln!("removed {user} from {}", group_line(&group))
}

/// `kith group leave <group>`.
pub async fn leave(client: &ApiClient, group: &str) -> Result<()> {
    let id = resolve(client, group).await?;
    let group = client.leave_group(&id).await?;
    outln!("left {}", group_line(&group))
}

/// `kith group rename <group> <name>`.
pub async fn rename(client: &ApiClient, group: &str, name: &str) -> Result<()> {
    let id = resolve(client, group).await?;
    let group = client.rename_group(&id, name).await?;
    outln!("renamed {}", group_line(&group))
}

/// `kith info <message>`: a sent group message's status per member.
pub async fn message_info(client: &ApiClient, id: &str, output: Output) -> Result<()> {
    let info = client.message_info(id).await?;
    if output.json {
        return out::json(&info);
    }
    for line in message_info_lines(&info) {
        outln!("{line}")?;
    }
    Ok(())
}
