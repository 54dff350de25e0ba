//! A small client for the node's REST API, so the `kith` CLI (and tests, and scripts written
//! in Rust) talk to a running node the same way any other local client does.
//!
//! Each method mirrors one endpoint of [`crate::api`] and answers with the same view types the
//! API serialises. Errors keep the API's `{"error":{"code","message"}}` so callers can act on
//! the code, and a refused connection says what to do about it.

use std::collections::VecDeque;

use futures::{Stream, StreamExt};
use reqwest::{header::AUTHORIZATION, Method, RequestBuilder, StatusCode, Url};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{json, Value};

use crate::{
    api::ErrorBody,
    handle::{ContactView, Event, Me, Page, PresenceView, Sent},
};

mod backup;
mod groups;
mod requests;
mod settings;

pub use groups::is_group_id;

/// How long a single request may take before the client gives up (event streams excepted).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long connecting to the API may take: it is on this machine, so this is generous.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most characters of a non-JSON error body kept in the error message.
const SHOWN_BODY_CHARS: usize = 200;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's error code (`unknown_contact`, `invalid_input`, ...).
        code: String,
        /// The API's message.
        message: String,
    },
    /// Nothing answered at the API address.
    #[error("cannot reach the kith API at {api} — is `kith run` running?")]
    Unreachable {
        /// The API base URL tried.
        api: String,
        /// The connection error.
        #[source]
        source: reqwest::Error,
    },
    /// The request failed after connecting (timeout, reset...); its outcome is unknown.
    #[error("request to the kith API at {api} failed")]
    Http {
        /// The API base URL.
        api: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with something this client does not understand.
    #[error("unexpected answer from the kith API{what}: {source}")]
    Decode {
        /// What did not decode (empty for a plain answer, else e.g. ` (lagged event)`).
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The HTTP client could not be built (TLS or resolver set-up failed).
    #[error("cannot build an HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// The API address is not usable.
    #[error("bad API address `{0}`: expected host:port or http://host:port")]
    BadAddress(String),
}

impl ClientError {
    /// The API's error code, when the API answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when the API answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One item of the `/v1/events` stream.
#[derive(Clone, Debug)]
#[non_exhaustive]
// Events arrive one at a time from a stream: boxing them would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum StreamEvent {
    /// Something happened on the node.
    Event(Event),
    /// This subscriber fell behind and `missed` events were dropped; refetch what matters.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
}

/// What `POST /v1/media` answers.
#[derive(Clone, Debug, Deserialize)]
pub struct MediaSent {
    /// The message id.
    pub id: String,
    /// Its status.
    pub status: kith_protocol::DeliveryStatus,
    /// The blob hash (`GET /v1/media/{hash}`).
    pub hash: String,
}

/// A client for one node's REST API.
#[derive(Clone, Debug)]
pub struct ApiClient {
    /// The API's base URL (`http://127.0.0.1:7878/`).
    base: Url,
    /// The bearer token sent with every request.
    token: String,
    /// The connection pool.
    http: reqwest::Client,
}

/// `GET /v1/contacts`.
#[derive(Deserialize)]
struct ContactList {
    contacts: Vec<ContactView>,
}

/// `POST /v1/conversations/{user_id}/read`.
#[derive(Deserialize)]
struct Marked {
    marked: usize,
}

impl ApiClient {
    /// A client for the API at `api_addr` (`127.0.0.1:7878` or `http://127.0.0.1:7878`).
    pub fn new(api_addr: &str, token: impl Into<String>) -> Result<Self, ClientError> {
        let bad = || ClientError::BadAddress(api_addr.to_string());
        let with_scheme = if api_addr.contains("://") {
            api_addr.to_string()
        } else {
            format!("http://{api_addr}")
        };
        let base = Url::parse(&with_scheme).map_err(|_| bad())?;
        if base.scheme() != "http" || base.host().is_none() || base.cannot_be_a_base() {
            return Err(bad());
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(ClientError::Build)?;
        Ok(ApiClient {
            base,
            token: token.into().trim().to_string(),
            http,
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// `GET /v1/me`: the local user, listen addresses and invite.
    pub async fn me(&self) -> Result<Me, ClientError> {
        self.call(Method::GET, &["me"], |r| r).await
    }

    /// `GET /v1/contacts`.
    pub async fn contacts(&self) -> Result<Vec<ContactView>, ClientError> {
        let list: ContactList = self.call(Method::GET, &["contacts"], |r| r).await?;
        Ok(list.contacts)
    }

    /// `POST /v1/contacts`: adds a contact from an invite, optionally naming them.
    pub async fn add_contact(
        &self,
        invite: &str,
        name: Option<&str>,
    ) -> Result<ContactView, ClientError> {
        let mut body = json!({ "invite": invite });
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        self.call(Method::POST, &["contacts"], |r| r.json(&body))
            .await
    }

    /// `POST /v1/messages`: sends `text` to `to`; `client_meta` must be a JSON object.
    pub async fn send_text(
        &self,
        to: &str,
        text: &str,
        client_meta: Option<&Value>,
    ) -> Result<Sent, ClientError> {
        let mut body = json!({ "to": to, "text": text });
        if let Some(meta) = client_meta {
            body["client_meta"] = meta.clone();
        }
        self.call(Method::POST, &["messages"], |r| r.json(&body))
            .await
    }

    /// `POST /v1/media`: streams `body` (a file of `mime` type) to `to` as `name`, with an
    /// optional caption. No overall timeout: a big file takes as long as it takes.
    pub async fn send_media(
        &self,
        to: &str,
        name: &str,
        mime: &str,
        caption: Option<&str>,
        body: reqwest::Body,
    ) -> Result<MediaSent, ClientError> {
        let mut query = vec![("to", to), ("name", name)];
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

    /// `GET /v1/media/{hash}`: the response, to stream the decrypted file from.
    pub async fn media(&self, hash: &str) -> Result<reqwest::Response, ClientError> {
        self.send_ok(self.request(Method::GET, &["media", hash]))
            .await
    }

    /// `GET /v1/conversations/{user}`: a page, newest first. `None` leaves a parameter to the
    /// server's default; `since` is RFC 3339 or unix milliseconds.
    pub async fn conversation(
        &self,
        user: &str,
        offset: Option<usize>,
        count: Option<usize>,
        since: Option<&str>,
    ) -> Result<Page, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(offset) = offset {
            query.push(("offset", offset.to_string()));
        }
        if let Some(count) = count {
            query.push(("count", count.to_string()));
        }
        if let Some(since) = since {
            query.push(("since", since.to_string()));
        }
        self.call(Method::GET, &["conversations", user], |r| r.query(&query))
            .await
    }

    /// `POST /v1/conversations/{user}/read`: marks the conversation read; returns how many
    /// messages were newly marked.
    pub async fn mark_read(&self, user: &str) -> Result<usize, ClientError> {
        let marked: Marked = self
            .call(Method::POST, &["conversations", user, "read"], |r| r)
            .await?;
        Ok(marked.marked)
    }

    /// `GET /v1/presence/{user}`.
    pub async fn presence(&self, user: &str) -> Result<PresenceView, ClientError> {
        self.call(Method::GET, &["presence", user], |r| r).await
    }

    /// `PUT /v1/settings`: whether to share last seen / online.
    pub async fn set_share_last_seen(&self, share: bool) -> Result<(), ClientError> {
        let body = json!({ "share_last_seen": share });
        let res = self
            .send(self.request(Method::PUT, &["settings"]).json(&body))
            .await?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(self.error_of(res).await)
        }
    }

    /// `GET /v1/events`: the node's events as they happen, until the node stops.
    pub async fn events(
        &self,
    ) -> Result<impl Stream<Item = Result<StreamEvent, ClientError>> + Send + 'static, ClientError>
    {
        let res = self.send(self.request(Method::GET, &["events"])).await?;
        if !res.status().is_success() {
            return Err(self.error_of(res).await);
        }
        let api = self.base.to_string();
        let bytes = res.bytes_stream().boxed();
        let state = (bytes, SseParser::default(), VecDeque::<SseMessage>::new());
        Ok(futures::stream::unfold(
            state,
            move |(mut bytes, mut parser, mut ready)| {
                let api = api.clone();
                async move {
                    loop {
                        while let Some(message) = ready.pop_front() {
                            if let Some(item) = stream_event(message) {
                                return Some((item, (bytes, parser, ready)));
                            }
                        }
                        match bytes.next().await {
                            Some(Ok(chunk)) => ready.extend(parser.push(&chunk)),
                            Some(Err(source)) => {
                                let err = ClientError::Http { api, source };
                                return Some((Err(err), (bytes, parser, ready)));
                            }
                            None => return None,
                        }
                    }
                }
            },
        ))
    }

    fn request(&self, method: Method, path: &[&str]) -> RequestBuilder {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("v1").extend(path);
        }
        self.http
            .request(method, url)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        request.send().await.map_err(|source| {
            let api = self.base.to_string();
            if source.is_connect() {
                ClientError::Unreachable { api, source }
            } else {
                ClientError::Http { api, source }
            }
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<T, ClientError> {
        let request = build(self.request(method, path)).timeout(REQUEST_TIMEOUT);
        let res = self.send_ok(request).await?;
        self.json_of(res).await
    }

    /// Sends a request; an error answer becomes the [`ClientError`] it carries.
    async fn send_ok(&self, request: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let res = self.send(request).await?;
        if !res.status().is_success() {
            return Err(self.error_of(res).await);
        }
        Ok(res)
    }

    /// Reads a successful answer's JSON body.
    async fn json_of<T: DeserializeOwned>(&self, res: reqwest::Response) -> Result<T, ClientError> {
        let bytes = res.bytes().await.map_err(|source| ClientError::Http {
            api: self.base.to_string(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            what: String::new(),
            source,
        })
    }

    async fn error_of(&self, res: reqwest::Response) -> ClientError {
        let status = res.status();
        match res.bytes().await {
            Ok(body) => api_error(status, &body),
            Err(source) => ClientError::Http {
                api: self.base.to_string(),
                source,
            },
        }
    }
}

/// The error an error answer carries; a body not in the API's shape still gives a useful one.
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        },
        Err(_) => {
            let text: String = String::from_utf8_lossy(body)
                .chars()
                .take(SHOWN_BODY_CHARS)
                .collect();
            let message = if text.trim().is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                text
            };
            ClientError::Api {
                status: status.as_u16(),
                code: format!("http_{}", status.as_u16()),
                message,
            }
        }
    }
}

/// One dispatched server-sent event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SseMessage {
    /// The `event:` field (empty for the default type).
    event: String,
    /// The `data:` lines, joined with newlines.
    data: String,
}

/// An incremental parser for `text/event-stream` (the subset the API sends: `event`, `data`,
/// comments).
#[derive(Debug, Default)]
struct SseParser {
    /// Bytes of an incomplete line.
    partial: Vec<u8>,
    /// The event being assembled.
    current: SseMessage,
    /// Whether `current` has any data line yet.
    has_data: bool,
}

impl SseParser {
    /// Feeds a chunk; returns the events it completed.
    fn push(&mut self, chunk: &[u8]) -> Vec<SseMessage> {
        let mut done = Vec::new();
        self.partial.extend_from_slice(chunk);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.partial.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if self.has_data {
                    done.push(std::mem::take(&mut self.current));
                }
                self.current = SseMessage::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.current.event = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        done
    }
}

/// Turns a raw SSE message into a stream item; unknown event types are skipped so an older
/// client keeps working against a newer node.
fn stream_event(message: SseMessage) -> Option<Result<StreamEvent, ClientError>> {
    if message.event == "lagged" {
        #[derive(Deserialize)]
        struct Lagged {
            missed: u64,
        }
        return Some(
            serde_json::from_str::<Lagged>(&message.data)
                .map(|l| StreamEvent::Lagged { missed: l.missed })
                .map_err(|source| ClientError::Decode {
                    what: " (lagged event)".into(),
                    source,
                }),
        );
    }
    if !matches!(message.event.as_str(), "message" | "status" | "presence") {
        tracing::debug!(event = %message.event, "skipping unknown API event");
        return None;
    }
    Some(
        serde_json::from_str::<Event>(&message.data)
            .map(StreamEvent::Event)
            .map_err(|source| ClientError::Decode {
                what: format!(" ({} event)", message.event),
                source,
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_handles_split_chunks_comments_and_crlf() {
        let mut parser = SseParser::default();
        assert!(parser.push(b": keep-alive\n\nevent: sta").is_empty());
        let done =
            parser.push(b"tus\r\ndata: {\"a\":1}\r\n\r\nevent: lagged\ndata:{\"missed\":3}\n\n");
        assert_eq!(
            done,
            vec![
                SseMessage {
                    event: "status".into(),
                    data: "{\"a\":1}".into()
                },
                SseMessage {
                    event: "lagged".into(),
                    data: "{\"missed\":3}".into()
                },
            ]
        );
    }

    #[test]
    fn lagged_events_parse() {
        let item = stream_event(SseMessage {
            event: "lagged".into(),
            data: r#"{"type":"lagged","missed":7}"#.into(),
        });
        assert!(matches!(item, Some(Ok(StreamEvent::Lagged { missed: 7 }))));
        assert!(stream_event(SseMessage {
            event: "future".into(),
            data: "{}".into()
        })
        .is_none());
    }

    #[test]
    fn error_bodies_keep_code_and_message() {
        let body = br#"{"error":{"code":"unknown_contact","message":"unknown contact x"}}"#;
        let err = api_error(StatusCode::NOT_FOUND, body);
        assert_eq!(err.code(), Some("unknown_contact"));
        assert_eq!(err.status(), Some(404));
        assert_eq!(
            err.to_string(),
            "unknown contact x (unknown_contact, HTTP 404)"
        );
        let err = api_error(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(err.code(), Some("http_502"));
    }

    #[test]
    fn addresses_with_or_without_scheme() {
        let c = ApiClient::new("127.0.0.1:7878", "t").expect("host:port");
        assert_eq!(c.base(), "http://127.0.0.1:7878/");
        let c = ApiClient::new("http://localhost:9000/", "t").expect("url");
        assert_eq!(c.base(), "http://localhost:9000/");
        assert!(ApiClient::new("ftp://x", "t").is_err());
        assert!(ApiClient::new("", "t").is_err());
    }

    #[tokio::test]
    async fn refused_connection_hints_at_kith_run() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let client = ApiClient::new(&addr.to_string(), "t").expect("client");
        let err = client.me().await.expect_err("nothing listens");
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains("kith run"));
    }
}
