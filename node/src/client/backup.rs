//! The backup call of the API client: the node's data for `kith backup create` to seal.

use reqwest::Method;

use super::{ApiClient, ClientError};

impl ApiClient {
    /// `GET /v1/backup`: the node's data, unencrypted, for the caller to seal.
    pub async fn backup(&self, media: bool) -> Result<Vec<u8>, ClientError> {
        let request = self
            .request(Method::GET, &["backup"])
            .query(&[("media", media)]);
        let res = self.send_ok(request).await?;
        res.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|source| ClientError::Http {
                api: self.base.to_string(),
                source,
            })
    }
}
