//! The client's calls for group chats (`/v1/groups`, sending to a group, message info): kept
//! apart so the client's core stays short.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiClient, ClientError, MediaSent};
use crate::view::{GroupView, MessageInfo, Sent};

/// `GET /v1/groups`.
#[derive(Deserialize)]
struct GroupList {
    groups: Vec<GroupView>,
}

/// Whether `id` names a group: 32 hex digits (a user id is a base58 peer id, never that).
pub fn is_group_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl ApiClient {
    /// `POST /v1/groups`: creates a group named `name` with these contacts (and us).
    pub async fn create_group(
        &self,
        name: &str,
        members: &[String],
    ) -> Result<GroupView, ClientError> {
        let body = json!({ "name": name, "members": members });
        self.call(Method::POST, &["groups"], |r| r.json(&body))
            .await
    }

    /// `GET /v1/groups`: every group we are or were a member of.
    pub async fn groups(&self) -> Result<Vec<GroupView>, ClientError> {
        let list: GroupList = self.call(Method::GET, &["groups"], |r| r).await?;
        Ok(list.groups)
    }

    /// `GET /v1/groups/{id}`: one group's members, admins and epoch.
    pub async fn group(&self, id: &str) -> Result<GroupView, ClientError> {
        self.call(Method::GET, &["groups", id], |r| r).await
    }

    /// `POST /v1/groups/{id}/members`: adds a contact to a group (admins only).
    pub async fn add_member(&self, group: &str, user: &str) -> Result<GroupView, ClientError> {
        let body = json!({ "user_id": user });
        self.call(Method::POST, &["groups", group, "members"], |r| {
            r.json(&body)
        })
        .await
    }

    /// `DELETE /v1/groups/{id}/members/{user}`: removes a member (admins only).
    pub async fn remove_member(&self, group: &str, user: &str) -> Result<GroupView, ClientError> {
        self.call(Method::DELETE, &["groups", group, "members", user], |r| r)
            .await
    }

    /// `POST /v1/groups/{id}/leave`: leaves a group (the answer is no longer `active`).
    pub async fn leave_group(&self, group: &str) -> Result<GroupView, ClientError> {
        self.call(Method::POST, &["groups", group, "leave"], |r| r)
            .await
    }

    /// `PATCH /v1/groups/{id}`: renames a group (admins only).
    pub async fn rename_group(&self, group: &str, name: &str) -> Result<GroupView, ClientError> {
        let body = json!({ "name": name });
        self.call(Method::PATCH, &["groups", group], |r| r.json(&body))
            .await
    }

    /// `POST /v1/messages` with `group`: sends `text` to every member of a group.
    pub async fn send_group_text(
        &self,
        group: &str,
        text: &str,
        client_meta: Option<&Value>,
    ) -> Result<Sent, ClientError> {
        let mut body = json!({ "group": group, "text": text });
        if let Some(meta) = client_meta {
            body["client_meta"] = meta.clone();
        }
        self.call(Method::POST, &["messages"], |r| r.json(&body))
            .await
    }

    /// `POST /v1/media?group=`: streams a file to every member of a group, like
    /// [`ApiClient::send_media`] does to one contact.
    pub async fn send_group_media(
        &self,
        group: &str,
        name: &str,
        mime: &str,
        caption: Option<&str>,
        body: reqwest::Body,
    ) -> Result<MediaSent, ClientError> {
        let mut query = vec![("group", group), ("name", name)];
        if let Some(c) = caption {
            query.push(("caption", c));
        }
        let request = self
            .request(Method::POST, &["media"])
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, mime)
            .body(body);
        let res = self.send_ok(request).await?;
        self.json_of(res).await
    }

    /// `GET /v1/messages/{id}/info`: a sent group message's status per member.
    pub async fn message_info(&self, id: &str) -> Result<MessageInfo, ClientError> {
        self.call(Method::GET, &["messages", id, "info"], |r| r)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_32_hex_digits() {
        assert!(is_group_id("0123456789abcdef0123456789ABCDEF"));
        assert!(!is_group_id("0123456789abcdef0123456789abcde"));
        assert!(!is_group_id("0123456789abcdef0123456789abcdeg"));
        assert!(!is_group_id(
            "12D3KooWGzXkMCVUhbA5STxpCYiDnqm3d2Fj4gQ1X8MS6hCsZMpZ"
        ));
    }
}
