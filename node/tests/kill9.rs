//! Durability against `kill -9`, with real `kith run` processes: every message the API
//! answered 201 for survives a SIGKILL of the sender's process right after the answer, and
//! reaches the recipient exactly once after both restart.
//!
//! Each process serves its API on `127.0.0.1:0` and prints `kith: api http://ADDR` on stdout;
//! the test reads that line (with a timeout) to find it. Its logs go to a file in the data
//! directory's parent, printed when the test fails. A guard kills every child on drop, so a
//! failing test leaves no process behind.

#![allow(clippy::unwrap_used)]

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Bound on every wait; delivery after a restart includes redials, so it is generous.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How often a condition on the other process is polled (there is no in-process event).
const POLL: Duration = Duration::from_millis(100);

/// How many messages are sent while the recipient is down.
const N: usize = 50;

/// A `kith run` process; killed (SIGKILL) and reaped on drop.
struct Kith {
    name: String,
    child: Child,
    api: Api,
}

impl Drop for Kith {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Kith {
    /// Starts `kith run` on `data_dir` and waits for it to print its API address.
    async fn start(name: &str, data_dir: &Path, log: &Path) -> Result<Self> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_kith"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--api", "127.0.0.1:0", "run"])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .env_remove("KITH_BOOTSTRAP")
            .env("RUST_LOG", "info,kith_node=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("spawning kith run")?;
        let stdout = child.stdout.take().context("kith stdout")?;
        // The guard exists from here on: any failure below kills the child.
        let mut kith = Kith {
            name: name.to_string(),
            child,
            api: Api::new(String::new(), String::new()),
        };
        let (tx, mut lines) = mpsc::unbounded_channel();
        // Drains stdout for the life of the process, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let base = tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = lines.recv().await {
                if let Some(url) = line.strip_prefix("kith: api ") {
                    return Ok(url.trim().to_string());
                }
            }
            bail!("{name} exited before printing its API address")
        })
        .await
        .map_err(|_| anyhow!("{name} printed no API address within {TIMEOUT:?}"))??;
        let token = kith_node::run::read_token(data_dir)?;
        kith.api = Api::new(base, token);
        Ok(kith)
    }

    /// `kill -9`, and wait for the process to be gone.
    fn kill9(mut self) -> Result<()> {
        self.child
            .kill()
            .with_context(|| format!("killing {}", self.name))?;
        self.child.wait()?;
        Ok(())
    }
}

/// A minimal client of one node's REST API.
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: String, token: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Api { base, token, http }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Result<Value> {
        let (got, body) = self.call(method.clone(), path, body).await?;
        ensure!(
            got == status,
            "{method} {path}: expected {status}, got {got}: {body}"
        );
        Ok(body)
    }

    async fn me(&self) -> Result<(String, String)> {
        let me = self
            .expect(reqwest::Method::GET, "/v1/me", None, 200)
            .await?;
        let field = |k: &str| {
            me[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("/v1/me lacks {k}: {me}"))
        };
        Ok((field("user_id")?, field("invite")?))
    }

    async fn add_contact(&self, invite: &str) -> Result<()> {
        self.expect(
            reqwest::Method::POST,
            "/v1/contacts",
            Some(json!({ "invite": invite })),
            201,
        )
        .await?;
        Ok(())
    }

    async fn conversation(&self, peer: &str) -> Result<Vec<Value>> {
        let page = self
            .expect(
                reqwest::Method::GET,
                &format!("/v1/conversations/{peer}?count=200"),
                None,
                200,
            )
            .await?;
        ensure!(page["next_offset"].is_null(), "more than one page: {page}");
        page["messages"]
            .as_array()
            .cloned()
            .ok_or_else(|| anyhow!("no messages array: {page}"))
    }
}

/// Adds each node's current invite on the other.
async fn introduce(a: &Kith, b: &Kith) -> Result<()> {
    let (_, invite_a) = a.api.me().await?;
    let (_, invite_b) = b.api.me().await?;
    a.api.add_contact(&invite_b).await?;
    b.api.add_contact(&invite_a).await?;
    Ok(())
}

/// Polls `check` until it yields `Some`, for at most [`TIMEOUT`].
async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The scenario; the test wraps it to print the nodes' logs on failure.
async fn scenario(alice_dir: &Path, bob_dir: &Path, logs: &[PathBuf; 2]) -> Result<()> {
    let alice = Kith::start("alice", alice_dir, &logs[0]).await?;
    let bob = Kith::start("bob", bob_dir, &logs[1]).await?;
    let (a, _) = alice.api.me().await?;
    let (b, _) = bob.api.me().await?;
    introduce(&alice, &bob).await?;

    bob.kill9()?;

    let mut sent: HashMap<String, String> = HashMap::new();
    for i in 0..N {
        let text = format!("message {i} of {N}");
        let body = alice
            .api
            .expect(
                reqwest::Method::POST,
                "/v1/messages",
                Some(json!({"to": b, "text": text})),
                201,
            )
            .await?;
        ensure!(body["status"] == "pending", "bob is down: {body}");
        let id = body["id"].as_str().context("id")?.to_string();
        ensure!(sent.insert(id, text).is_none(), "duplicate id");
    }
    // Right after the last 201: no clean shutdown, no flush beyond what the 201s promised.
    alice.kill9()?;

    let alice = Kith::start("alice", alice_dir, &logs[0]).await?;
    let bob = Kith::start("bob", bob_dir, &logs[1]).await?;
    let before = alice.api.conversation(&b).await?;
    ensure!(
        before.len() == N,
        "alice kept {} of the {N} acknowledged messages",
        before.len()
    );
    // Both came back on new ports; the invites each holds carry the old ones, and without
    // bootstrap peers nothing else says where they went: introduce them again.
    introduce(&alice, &bob).await?;

    let received = wait_until(&format!("bob to hold {N} messages"), || async {
        let conv = bob.api.conversation(&a).await?;
        Ok((conv.len() >= N).then_some(conv))
    })
    .await?;
    ensure!(received.len() == N, "bob holds {} messages", received.len());
    let mut ids = HashSet::new();
    for m in &received {
        let id = m["id"].as_str().context("id")?;
        ensure!(ids.insert(id.to_string()), "bob holds {id} twice");
        let text = sent
            .get(id)
            .ok_or_else(|| anyhow!("bob holds a message alice never sent: {m}"))?;
        ensure!(m["text"] == text.as_str() && m["from"] == a.as_str(), "{m}");
    }

    wait_until("alice to see every message delivered", || async {
        let conv = alice.api.conversation(&b).await?;
        let done = conv.len() == N
            && conv
                .iter()
                .all(|m| m["status"] == "delivered" || m["status"] == "read");
        Ok(done.then_some(()))
    })
    .await?;
    // Still exactly once after the receipts went around.
    ensure!(bob.api.conversation(&a).await?.len() == N);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_node_process_loses_no_accepted_message() -> Result<()> {
    let root = tempfile::Builder::new().prefix("kith-kill9-").tempdir()?;
    let (alice_dir, bob_dir) = (root.path().join("alice"), root.path().join("bob"));
    let logs = [root.path().join("alice.log"), root.path().join("bob.log")];
    let result = scenario(&alice_dir, &bob_dir, &logs).await;
    if result.is_err() {
        for log in &logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            eprintln!("---- last lines of {} ----", log.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
    result
}
