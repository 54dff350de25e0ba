//! Helpers for Kith's multi-node integration tests.
//!
//! Every test in `tests/tests/` starts whole nodes in this process with [`TestNode`] (a
//! [`kith_node::RunningNode`] on a temporary data directory, listening on `127.0.0.1` port 0
//! with its REST API on another free loopback port) and drives them only through public
//! interfaces: the [`Node`] handle, or the REST API over HTTP with [`ApiClient`].
//!
//! Synchronisation is never a fixed sleep: tests wait for an event with [`wait_event`], or,
//! where the node emits no event for what they wait for, poll a condition with [`wait_for`].
//! Both give up after a bounded timeout ([`TIMEOUT`] unless told otherwise) with an error that
//! says what was awaited, so a hang becomes a clear failure.
//!
//! # Layout
//! - this file: [`TestNode`], [`ApiClient`], the waits; [`wire`]: raw `/kith/msg/1` frames.
//! - [`mesh`]: store peers under test on the library mesh ([`kith_node::mesh`]), a raw
//!   mailbox client, hand-sealed envelopes and delivery checks.
//! - [`sim`]: the many-node simulation; [`nat_lab`]: the NAT lab script; [`faults`]: the
//!   kill -9 campaign on child processes
//!   ([`procs`]); [`bench`]: `kith-bench`'s scenarios; [`measure`]: percentiles and `/proc`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kith_tests::{introduce, TestNode};
//! let alice = TestNode::start("alice").await?;
//! let bob = TestNode::start("bob").await?;
//! introduce(&alice, &bob).await?;
//! alice.node()?.send_text(bob.user_id(), "hi".into(), serde_json::json!({})).await?;
//! # Ok(()) }
//! ```

pub mod wire;

use std::{future::Future, path::Path, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use kith_node::{handle::MessageView, Config, Event, Node, RunningNode};
use kith_protocol::UserId;
use reqwest::{header::AUTHORIZATION, Method};
use serde_json::Value;
use tokio::sync::broadcast::{self, error::RecvError};

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// How often [`wait_for`] re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Starts a node on `config`, retrying for a bounded time while the data directory's store is
/// still locked by a previous incarnation in this process that is being torn down (see
/// [`kith_node::mesh::start_user`], which this wraps with context).
pub async fn start_node_with(config: Config) -> Result<RunningNode> {
    kith_node::mesh::start_user(config.clone())
        .await
        .with_context(|| format!("starting a node on {}", config.data_dir.display()))
}

/// Starts a node on `dir` with [`Config::loopback`] (everything on `127.0.0.1`, port 0).
pub async fn start_node(dir: &Path) -> Result<RunningNode> {
    start_node_with(Config::loopback(dir.to_path_buf())).await
}

/// A node under test: its temporary data directory, configuration, and (while it runs) the
/// running node. Stopping and restarting keeps the data directory.
pub struct TestNode {
    name: String,
    dir: tempfile::TempDir,
    config: Config,
    running: Option<RunningNode>,
    user: UserId,
}

impl Drop for TestNode {
    /// A node still running stops before its data directory is deleted (see [`teardown`]).
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            teardown::stop_from_drop(async move {
                let _ = running.shutdown().await;
            });
        }
    }
}

impl TestNode {
    /// Starts a node with the default loopback configuration; `name` appears in messages.
    pub async fn start(name: &str) -> Result<Self> {
        Self::start_with(name, |_| {}).await
    }

    /// Starts a node with a loopback configuration changed by `tweak` (e.g. a shorter
    /// heartbeat). The configuration is kept for restarts.
    pub async fn start_with(name: &str, tweak: impl FnOnce(&mut Config)) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kith-{name}-"))
            .tempdir()
            .context("creating a temporary data directory")?;
        let mut config = Config::loopback(dir.path().to_path_buf());
        tweak(&mut config);
        let running = start_node_with(config.clone()).await?;
        let user = running.user_id();
        Ok(TestNode {
            name: name.to_string(),
            dir,
            config,
            running: Some(running),
            user,
        })
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user id (stable across restarts).
    pub fn user_id(&self) -> UserId {
        self.user
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The running node, or an error if it is stopped.
    pub fn running(&self) -> Result<&RunningNode> {
        self.running
            .as_ref()
            .ok_or_else(|| anyhow!("{} is not running", self.name))
    }

    /// The node handle, or an error if it is stopped.
    pub fn node(&self) -> Result<&Node> {
        Ok(&self.running()?.node)
    }

    /// A REST client for the running node's API.
    pub fn api(&self) -> Result<ApiClient> {
        let r = self.running()?;
        Ok(ApiClient::new(
            format!("http://{}", r.api_addr),
            r.token.clone(),
        ))
    }

    /// This node's current invite (it carries the current listen addresses).
    pub async fn invite(&self) -> Result<String> {
        Ok(self
            .node()?
            .me()
            .await
            .with_context(|| format!("{}: me", self.name))?
            .invite)
    }

    /// What this node's invite says about its mailbox: the store peers it named (in its
    /// signed bundle) and its mailbox access key.
    pub async fn mailbox(&self) -> Result<(Vec<libp2p::PeerId>, kith_protocol::MailboxAccessKey)> {
        let invite = kith_node::invite::Invite::decode(&self.invite().await?)
            .with_context(|| format!("{}: decoding its invite", self.name))?;
        let key = invite
            .access
            .with_context(|| format!("{}: its invite carries no access key", self.name))?;
        let named = invite
            .bundle
            .mailboxes
            .iter()
            .map(|p| p.peer.peer_id())
            .collect();
        Ok((named, key))
    }

    /// Stops the node cleanly ([`RunningNode::shutdown`]); the data directory stays.
    pub async fn shutdown(&mut self) -> Result<()> {
        let running = self
            .running
            .take()
            .ok_or_else(|| anyhow!("{} is already stopped", self.name))?;
        running
            .shutdown()
            .await
            .with_context(|| format!("shutting down {}", self.name))
    }

    /// Stops the node the way a crash would ([`RunningNode::abort`]): no flush beyond what
    /// was already promised.
    pub async fn abort(&mut self) -> Result<()> {
        let running = self
            .running
            .take()
            .ok_or_else(|| anyhow!("{} is already stopped", self.name))?;
        running.abort().await;
        Ok(())
    }

    /// Starts the node again from its data directory (it listens on new ports).
    pub async fn restart(&mut self) -> Result<()> {
        if self.running.is_some() {
            bail!("{} is still running", self.name);
        }
        let running = start_node_with(self.config.clone())
            .await
            .with_context(|| format!("restarting {}", self.name))?;
        if running.user_id() != self.user {
            bail!("{} came back as another user", self.name);
        }
        self.running = Some(running);
        Ok(())
    }

    /// The whole conversation with `peer` as the node shows it, newest first (pages through
    /// it with the largest page).
    pub fn conversation(&self, peer: &UserId) -> Result<Vec<MessageView>> {
        let node = self.node()?;
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let page = node
                .conversation(peer, offset, kith_node::handle::MAX_PAGE, None)
                .with_context(|| format!("{}: conversation", self.name))?;
            out.extend(page.messages);
            match page.next_offset {
                Some(next) => offset = next,
                None => return Ok(out),
            }
        }
    }
}

/// Makes `a` and `b` contacts of each other by adding each one's current invite on the other.
/// Calling it again after a restart re-introduces the nodes at their new addresses.
pub async fn introduce(a: &TestNode, b: &TestNode) -> Result<()> {
    let invite_a = a.invite().await?;
    let invite_b = b.invite().await?;
    a.node()?
        .add_contact(&invite_b, Some(b.name().to_string()))
        .await
        .with_context(|| format!("{} adds {}", a.name(), b.name()))?;
    b.node()?
        .add_contact(&invite_a, Some(a.name().to_string()))
        .await
        .with_context(|| format!("{} adds {}", b.name(), a.name()))?;
    Ok(())
}

/// Polls `check` every [`POLL_INTERVAL`] until it yields `Some`, for at most `timeout`.
///
/// For conditions no event announces; prefer [`wait_event`] where an event exists. `what`
/// names the condition in the error. An error from `check` ends the wait at once.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check()
            .await
            .with_context(|| format!("while waiting for {what}"))?
        {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Receives events from `rx` until one satisfies `pred`, for at most `timeout`, and returns it.
///
/// Events before it are consumed. Fails if the stream lags (events were dropped, so the one
/// awaited may be among them) or closes.
pub async fn wait_event(
    rx: &mut broadcast::Receiver<Event>,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Result<Event> {
    let found = tokio::time::timeout(timeout, async {
        loop {
            match rx.recv().await {
                Ok(event) if pred(&event) => return Ok(event),
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    bail!("event stream lagged by {n} events while waiting for {what}")
                }
                Err(RecvError::Closed) => bail!("event stream closed while waiting for {what}"),
            }
        }
    })
    .await;
    match found {
        Ok(result) => result,
        Err(_) => bail!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Where an [`ApiClient`] request puts its credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth<'a> {
    /// The node's own token.
    Token,
    /// No `Authorization` header.
    None,
    /// This bearer token instead.
    Bearer(&'a str),
}

/// What the API answered: the status and the body (JSON when it parses, else a string).
#[derive(Clone, Debug)]
pub struct ApiResponse {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body as JSON; a body that is not JSON is kept as a JSON string.
    pub body: Value,
}

impl ApiResponse {
    /// Fails unless the status is `expected`, showing the body.
    pub fn expect_status(&self, expected: u16) -> Result<&Self> {
        if self.status != expected {
            bail!(
                "expected HTTP {expected}, got {}: {}",
                self.status,
                self.body
            );
        }
        Ok(self)
    }

    /// The `{"error":{"code","message"}}` body's code, after checking the shape: JSON content
    /// type, exactly one `error` object with a non-empty string `code` and `message`.
    pub fn error_code(&self) -> Result<String> {
        let json = self
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json"));
        if !json {
            bail!(
                "error body is not JSON (content type {:?}): {}",
                self.content_type,
                self.body
            );
        }
        let top = self
            .body
            .as_object()
            .ok_or_else(|| anyhow!("error body is not an object: {}", self.body))?;
        if top.len() != 1 {
            bail!("error body has fields besides `error`: {}", self.body);
        }
        let error = top
            .get("error")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("error body lacks an `error` object: {}", self.body))?;
        let code = error
            .get("code")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| anyhow!("error lacks a string `code`: {}", self.body))?;
        error
            .get("message")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| anyhow!("error lacks a string `message`: {}", self.body))?;
        Ok(code.to_string())
    }

    /// Fails unless this is an error answer with `status` and `code` in the documented shape.
    pub fn expect_error(&self, status: u16, code: &str) -> Result<()> {
        self.expect_status(status)?;
        let got = self.error_code()?;
        if got != code {
            bail!("expected error code `{code}`, got `{got}`: {}", self.body);
        }
        Ok(())
    }
}

/// A small REST client for one node's API that returns every answer as an [`ApiResponse`]
/// (error statuses included), so tests can assert on statuses and bodies.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for the API at `base` (`http://127.0.0.1:PORT`) with `token`.
    pub fn new(base: String, token: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        ApiClient { base, token, http }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; `body` is sent as raw bytes with `content_type` when given.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<ApiResponse> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        match auth {
            Auth::Token => req = req.header(AUTHORIZATION, format!("Bearer {}", self.token)),
            Auth::Bearer(t) => req = req.header(AUTHORIZATION, format!("Bearer {t}")),
            Auth::None => {}
        }
        if let Some((content_type, bytes)) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = res
            .bytes()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(ApiResponse {
            status,
            content_type,
            body,
        })
    }

    /// A request with a JSON body (or none), authenticated with the node's token.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiResponse> {
        let body = match body {
            Some(v) => Some(("application/json", serde_json::to_vec(v)?)),
            None => None,
        };
        self.raw(method, path, Auth::Token, body).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<ApiResponse> {
        self.request(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<ApiResponse> {
        self.request(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Result<ApiResponse> {
        self.request(Method::PUT, path, Some(body)).await
    }

    /// `POST /v1/messages`; fails unless answered 201. Returns the new message's id.
    pub async fn send_text(&self, to: &UserId, text: &str, meta: Value) -> Result<String> {
        let res = self
            .post(
                "/v1/messages",
                &serde_json::json!({"to": to.to_string(), "text": text, "client_meta": meta}),
            )
            .await?;
        res.expect_status(201)?;
        res.body
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("send answer lacks an id: {}", res.body))
    }
}

/// Sends the nodes' `tracing` output to the test's captured output when `RUST_LOG` is set
/// (e.g. `RUST_LOG=kith_node=debug cargo test -p kith-tests`), and starts the process's
/// hang watchdog (`KITH_TEST_WATCHDOG_SECS`, 15 min by default). Call it from every test.
pub fn init_logging() {
    teardown::start_watchdog();
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub mod bench;
pub mod faults;
pub mod measure;
pub mod mesh;
pub mod nat_lab;
pub mod procs;
pub mod sim;
mod teardown;
