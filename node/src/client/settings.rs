//! The client's calls for settings and contact verification (`kith settings`, `kith verify`).

use reqwest::Method;

use super::{ApiClient, ClientError};
use crate::{
    handle::ContactView,
    settings::{Settings, SettingsChange},
    view::SafetyNumberView,
};

impl ApiClient {
    /// `GET /v1/settings`.
    pub async fn settings(&self) -> Result<Settings, ClientError> {
        self.call(Method::GET, &["settings"], |r| r).await
    }

    /// `PUT /v1/settings`: changes the fields `change` gives, then reads the settings back.
    pub async fn change_settings(&self, change: &SettingsChange) -> Result<Settings, ClientError> {
        let request = self.request(Method::PUT, &["settings"]).json(change);
        self.send_ok(request).await?;
        self.settings().await
    }

    /// `GET /v1/contacts/{user}/safety-number`.
    pub async fn safety_number(&self, user: &str) -> Result<SafetyNumberView, ClientError> {
        self.call(Method::GET, &["contacts", user, "safety-number"], |r| r)
            .await
    }

    /// `POST` (mark) or `DELETE` (unmark) `/v1/contacts/{user}/verify`.
    pub async fn set_verified(
        &self,
        user: &str,
        verified: bool,
    ) -> Result<ContactView, ClientError> {
        let method = if verified {
            Method::POST
        } else {
            Method::DELETE
        };
        self.call(method, &["contacts", user, "verify"], |r| r)
            .await
    }
}
