//! How the client commands print what the API answers: one line per contact, message or
//! status, stable enough for scripts. Pure functions; nothing here talks to the node.

use std::time::{Duration, UNIX_EPOCH};

use kith_node::handle::MessageView;
use kith_protocol::DeliveryStatus;

/// `user_id  name`, or the user id alone when they have no name.
pub fn contact_line(user_id: &str, name: &str) -> String {
    if name.is_empty() {
        user_id.to_string()
    } else {
        format!("{user_id}  {name}")
    }
}

/// A unix-millisecond time as RFC 3339 to the second (UTC).
pub fn time_of(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
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

/// `time  →  text  tick` for outgoing, `time  ←  text` for incoming; continuation lines of a
/// multi-line text are indented under the first.
pub fn history_line(message: &MessageView) -> String {
    let time = time_of(message.sent_at_ms);
    let arrow = if message.outgoing { "→" } else { "←" };
    let indent = " ".repeat(time.chars().count() + 5);
    let text = message.text.replace('\n', &format!("\n{indent}"));
    if message.outgoing {
        format!("{time}  {arrow}  {text}  {}", tick(message.status))
    } else {
        format!("{time}  {arrow}  {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            history_line(&message),
            "1970-01-01T00:00:01Z  →  hi  ✓✓ read"
        );
        let incoming = MessageView {
            outgoing: false,
            ..message
        };
        assert_eq!(history_line(&incoming), "1970-01-01T00:00:01Z  ←  hi");
    }
}
