//! How the client commands print what the API answers: one line per contact, message or
//! status, group or member, for people (scripts use `--json`). Times show in the zone they are
//! given — the local one, `chrono::Local`, from the commands — so tests pin it. Pure
//! functions; nothing here talks to the node.

use std::{collections::HashMap, fmt::Display};

use chrono::TimeZone;

use kith_node::{
    handle::MessageView,
    view::{GroupView, MessageInfo},
};
use kith_protocol::DeliveryStatus;

/// `user_id  name`, or the user id alone when they have no name.
pub fn contact_line(user_id: &str, name: &str) -> String {
    if name.is_empty() {
        user_id.to_string()
    } else {
        format!("{user_id}  {name}")
    }
}

/// A unix-millisecond time in `zone`, to the second (`2024-05-01 14:03:07`); the bare number
/// if it is beyond what a calendar shows.
pub fn time_of<Tz: TimeZone>(ms: u64, zone: &Tz) -> String
where
    Tz::Offset: Display,
{
    let local = i64::try_from(ms)
        .ok()
        .and_then(|ms| zone.timestamp_millis_opt(ms).single());
    match local {
        Some(time) => time.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => format!("{ms} (unix ms)"),
    }
}

/// The word `kith send` prints for a status.
pub fn status_word(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Sent => "sent",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Read => "read",
    }
}

/// The tick `kith history` shows for a status.
pub fn tick(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "…",
        DeliveryStatus::Sent => "✓",
        DeliveryStatus::Delivered => "✓✓",
        DeliveryStatus::Read => "✓✓ read",
    }
}

/// `time  →  text  tick` for outgoing, `time  ←  text` for incoming, the time in `zone`;
/// continuation lines of a multi-line text are indented under the first.
pub fn history_line<Tz: TimeZone>(message: &MessageView, zone: &Tz) -> String
where
    Tz::Offset: Display,
{
    line_with_sender(message, None, zone)
}

/// A line of a group's history: like [`history_line`], with the sender before an incoming
/// message's text (`time  ←  ana: text`).
pub fn group_history_line<Tz: TimeZone>(message: &MessageView, sender: &str, zone: &Tz) -> String
where
    Tz::Offset: Display,
{
    line_with_sender(message, Some(sender), zone)
}

fn line_with_sender<Tz: TimeZone>(message: &MessageView, sender: Option<&str>, zone: &Tz) -> String
where
    Tz::Offset: Display,
{
    let time = time_of(message.sent_at_ms, zone);
    let arrow = if message.outgoing { "→" } else { "←" };
    let prefix = match sender {
        Some(name) if !message.outgoing => format!("{name}: "),
        _ => String::new(),
    };
    let indent = " ".repeat(time.chars().count() + 5 + prefix.chars().count());
    let text = message.text.replace('\n', &format!("\n{indent}"));
    if message.outgoing {
        format!("{time}  {arrow}  {text}  {}", tick(message.status))
    } else {
        format!("{time}  {arrow}  {prefix}{text}")
    }
}

/// A user id shortened for a person to read: its first and last six characters.
pub fn short_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 14 {
        return id.to_string();
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("{head}…{tail}")
}

/// The name a group message's sender shows with: their contact name, else their short id.
pub fn sender_name(user_id: &str, names: &HashMap<String, String>) -> String {
    match names.get(user_id) {
        Some(name) if !name.is_empty() => name.clone(),
        _ => short_id(user_id),
    }
}

/// `id  name  N members` for `kith group list`, with `, admin` or `, left` when they apply.
pub fn group_line(group: &GroupView) -> String {
    let n = group.members.len();
    let mut line = format!(
        "{}  {}  {n} member{}",
        group.id,
        group.name,
        if n == 1 { "" } else { "s" }
    );
    if !group.active {
        line.push_str(", left");
    } else if group.me_admin {
        line.push_str(", admin");
    }
    line
}

/// What `kith group info` prints: id, name, epoch, our standing, then one line per member
/// (`me` is the local user's id, marked `(you)`).
pub fn group_info_lines(group: &GroupView, me: &str) -> Vec<String> {
    let standing = match (group.active, group.me_admin) {
        (false, _) => "not a member (left or removed)",
        (true, true) => "admin",
        (true, false) => "member",
    };
    let mut lines = vec![
        format!("id       {}", group.id),
        format!("name     {}", group.name),
        format!("epoch    {}", group.epoch),
        format!("you      {standing}"),
        format!("members  {}", group.members.len()),
    ];
    for member in &group.members {
        let admin = member.admin || group.admins.contains(&member.user_id);
        let mut line = format!("  {}", contact_line(&member.user_id, &member.name));
        if member.user_id == me {
            line.push_str("  (you)");
        }
        if admin {
            line.push_str("  admin");
        }
        lines.push(line);
    }
    lines
}

/// What `kith info <message>` prints: the message's status, then each member's
/// (`  status     user_id  name`, the status word padded so the ids line up).
pub fn message_info_lines(info: &MessageInfo) -> Vec<String> {
    let mut lines = vec![format!(
        "{} in group {}: {}",
        info.id,
        info.group,
        status_word(info.status)
    )];
    for member in &info.members {
        lines.push(format!(
            "  {:<9}  {}",
            status_word(member.status),
            contact_line(&member.user_id, &member.name)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};
    use kith_node::view::{MemberStatusView, MemberView};

    #[test]
    fn history_lines_show_direction_and_ticks() {
        let message = MessageView {
            id: "00".into(),
            from: "a".into(),
            to: "b".into(),
            text: "hi".into(),
            client_meta: serde_json::json!({}),
            sent_at: String::new(),
            sent_at_ms: 1_000,
            status: DeliveryStatus::Read,
            outgoing: true,
            media: None,
            group: None,
        };
        assert_eq!(
            history_line(&message, &Utc),
            "1970-01-01 00:00:01  →  hi  ✓✓ read"
        );
        let incoming = MessageView {
            outgoing: false,
            ..message
        };
        assert_eq!(history_line(&incoming, &Utc), "1970-01-01 00:00:01  ←  hi");
    }

    #[test]
    fn times_show_in_the_zone_given() {
        let cest = FixedOffset::east_opt(2 * 3600).expect("a valid offset");
        assert_eq!(time_of(1_000, &cest), "1970-01-01 02:00:01");
        let pst = FixedOffset::west_opt(8 * 3600).expect("a valid offset");
        assert_eq!(time_of(1_000, &pst), "1969-12-31 16:00:01");
        assert_eq!(time_of(u64::MAX, &Utc), "18446744073709551615 (unix ms)");
    }

    fn message(outgoing: bool, text: &str) -> MessageView {
        MessageView {
            id: "00".into(),
            from: "12D3KooWAbcdefghijklmnopqrstuvwxyz".into(),
            to: "0123456789abcdef0123456789abcdef".into(),
            text: text.into(),
            client_meta: serde_json::json!({}),
            sent_at: String::new(),
            sent_at_ms: 1_000,
            status: DeliveryStatus::Delivered,
            outgoing,
            media: None,
            group: Some("0123456789abcdef0123456789abcdef".into()),
        }
    }

    fn group(active: bool, me_admin: bool) -> GroupView {
        let member = |id: &str, name: &str, admin: bool| MemberView {
            user_id: id.into(),
            name: name.into(),
            admin,
        };
        GroupView {
            id: "0123456789abcdef0123456789abcdef".into(),
            name: "climbing".into(),
            epoch: 3,
            members: vec![
                member("me", "", true),
                member("bob", "Bob", false),
                member("carol", "", false),
            ],
            admins: vec!["me".into()],
            me_admin,
            active,
        }
    }

    #[test]
    fn group_history_lines_name_the_sender_of_incoming_messages() {
        assert_eq!(
            group_history_line(&message(false, "hi\nall"), "Ana", &Utc),
            "1970-01-01 00:00:01  ←  Ana: hi\n                             all"
        );
        assert_eq!(
            group_history_line(&message(true, "hi"), "me", &Utc),
            "1970-01-01 00:00:01  →  hi  ✓✓"
        );
    }

    #[test]
    fn senders_show_by_contact_name_or_short_id() {
        let names = HashMap::from([
            ("12D3KooWAna".to_string(), "Ana".to_string()),
            ("12D3KooWNoName".to_string(), String::new()),
        ]);
        assert_eq!(sender_name("12D3KooWAna", &names), "Ana");
        assert_eq!(sender_name("12D3KooWNoName", &names), "12D3KooWNoName");
        assert_eq!(
            sender_name("12D3KooWAbcdefghijklmnopqrstuvwxyz", &names),
            "12D3Ko…uvwxyz"
        );
    }

    #[test]
    fn group_lines_show_members_and_standing() {
        assert_eq!(
            group_line(&group(true, true)),
            "0123456789abcdef0123456789abcdef  climbing  3 members, admin"
        );
        assert_eq!(
            group_line(&group(true, false)),
            "0123456789abcdef0123456789abcdef  climbing  3 members"
        );
        assert_eq!(
            group_line(&group(false, false)),
            "0123456789abcdef0123456789abcdef  climbing  3 members, left"
        );
    }

    #[test]
    fn group_info_lists_members_with_admins_and_you() {
        assert_eq!(
            group_info_lines(&group(true, true), "me"),
            vec![
                "id       0123456789abcdef0123456789abcdef",
                "name     climbing",
                "epoch    3",
                "you      admin",
                "members  3",
                "  me  (you)  admin",
                "  bob  Bob",
                "  carol",
            ]
        );
        assert_eq!(
            group_info_lines(&group(false, false), "me")[3],
            "you      not a member (left or removed)"
        );
    }

    #[test]
    fn message_info_lists_each_members_status() {
        let info = MessageInfo {
            id: "ab".into(),
            group: "cd".into(),
            status: DeliveryStatus::Delivered,
            members: vec![
                MemberStatusView {
                    user_id: "bob".into(),
                    name: "Bob".into(),
                    status: DeliveryStatus::Read,
                },
                MemberStatusView {
                    user_id: "carol".into(),
                    name: String::new(),
                    status: DeliveryStatus::Delivered,
                },
            ],
        };
        assert_eq!(
            message_info_lines(&info),
            vec![
                "ab in group cd: delivered",
                "  read       bob  Bob",
                "  delivered  carol",
            ]
        );
    }
}
