//! The client's calls for message requests, blocking, removing contacts and fetching media
//! that waits for the user: kept apart so the client's core stays short.

use reqwest::Method;
use serde::Deserialize;

use super::{ApiClient, ClientError, REQUEST_TIMEOUT};
use crate::{
    handle::ContactView,
    media::MediaView,
    view::{BlockedView, RequestView},
};

/// `GET /v1/requests`.
#[derive(Deserialize)]
struct RequestList {
    requests: Vec<RequestView>,
}

/// `GET /v1/blocked`.
#[derive(Deserialize)]
struct BlockedList {
    blocked: Vec<BlockedView>,
}

impl ApiClient {
    /// `DELETE /v1/contacts/{user}`: removes a contact.
    pub async fn remove_contact(&self, user: &str) -> Result<(), ClientError> {
        self.no_content(Method::DELETE, &["contacts", user]).await
    }

    /// `GET /v1/requests`: people who wrote without being a contact.
    pub async fn requests(&self) -> Result<Vec<RequestView>, ClientError> {
        let list: RequestList = self.call(Method::GET, &["requests"], |r| r).await?;
        Ok(list.requests)
    }

    /// `POST /v1/requests/{user}/accept`: makes a request's sender a contact.
    pub async fn accept(&self, user: &str) -> Result<ContactView, ClientError> {
        self.call(Method::POST, &["requests", user, "accept"], |r| r)
            .await
    }

    /// `POST /v1/requests/{user}/block`: blocks a user (a request or a contact).
    pub async fn block(&self, user: &str) -> Result<(), ClientError> {
        self.no_content(Method::POST, &["requests", user, "block"])
            .await
    }

    /// `GET /v1/blocked`.
    pub async fn blocked(&self) -> Result<Vec<BlockedView>, ClientError> {
        let list: BlockedList = self.call(Method::GET, &["blocked"], |r| r).await?;
        Ok(list.blocked)
    }

    /// `DELETE /v1/blocked/{user}`: unblocks a user.
    pub async fn unblock(&self, user: &str) -> Result<(), ClientError> {
        self.no_content(Method::DELETE, &["blocked", user]).await
    }

    /// `POST /v1/media/{hash}/download`: fetch media that waits for the user, or failed.
    pub async fn fetch_media(&self, hash: &str) -> Result<MediaView, ClientError> {
        self.call(Method::POST, &["media", hash, "download"], |r| r)
            .await
    }

    /// A call answered with no body (204) on success.
    pub(super) async fn no_content(
        &self,
        method: Method,
        path: &[&str],
    ) -> Result<(), ClientError> {
        let request = self.request(method, path).timeout(REQUEST_TIMEOUT);
        self.send_ok(request).await.map(|_| ())
    }
}
