//! The processes of one fault run: store peers on fixed loopback ports (so a restarted one is
//! found where it was) and users on port 0, each a [`ChildProc`] whose stderr is appended
//! to its own log file in the run's directory, across restarts.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use kith_node::client::ApiClient;
use libp2p::Multiaddr;

use super::{
    ledger::{self, Ledger},
    STORE_PEERS, USERS,
};
use crate::procs::{free_loopback_addr, peer_of, sibling_bin, ChildProc};

/// How often a user sends presence heartbeats: short, so a restarted user (on a new port)
/// is found again quickly.
const HEARTBEAT: &str = "1s";

/// Attempts at starting a store peer on its fixed port: the port of a killed one can take a
/// moment to be free again.
const START_ATTEMPTS: usize = 20;

/// Pause between two attempts at starting a store peer.
const START_RETRY: Duration = Duration::from_millis(250);

/// Page size when reading a whole conversation.
const PAGE: usize = 200;

/// Most pages read of one conversation (bounds a runaway conversation).
const MAX_PAGES: usize = 200;

/// A store peer.
pub(crate) struct StorePeer {
    /// `store0`...
    pub name: String,
    /// Its data directory (a new one after it is lost for good).
    pub dir: PathBuf,
    /// Its log (stderr of every incarnation).
    pub log: PathBuf,
    /// The fixed libp2p port.
    pub port: u16,
    /// Where it serves `/metrics`.
    pub metrics: SocketAddr,
    /// Its address with `/p2p/<id>`, as last printed.
    pub addr: Option<Multiaddr>,
    /// The running process.
    pub child: Option<ChildProc>,
}

/// A user.
pub(crate) struct User {
    /// `user0`...
    pub name: String,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its log.
    pub log: PathBuf,
    /// Its user id (stable across restarts).
    pub user_id: String,
    /// The running process and its API.
    pub child: Option<(ChildProc, ApiClient)>,
    /// The task watching its events.
    watcher: Option<tokio::task::JoinHandle<()>>,
}

/// Every process of a run.
pub(crate) struct Cluster {
    kith: PathBuf,
    bootstrap: PathBuf,
    root: PathBuf,
    pub stores: Vec<StorePeer>,
    pub users: Vec<User>,
    ledger: Arc<Ledger>,
    /// How many times a store peer's data was lost (names its next data directory).
    losses: usize,
    /// When the run started, for the timeline.
    started: std::time::Instant,
}

impl Cluster {
    /// Starts the store peers and the users, and introduces every user to every other.
    pub async fn start(bin_dir: &Path, root: &Path, ledger: Arc<Ledger>) -> Result<Self> {
        let mut c = Cluster {
            kith: sibling_bin(Some(bin_dir), "kith")?,
            bootstrap: sibling_bin(Some(bin_dir), "kith-bootstrap")?,
            root: root.to_path_buf(),
            stores: Vec::new(),
            users: Vec::new(),
            ledger,
            losses: 0,
            started: std::time::Instant::now(),
        };
        for i in 0..STORE_PEERS {
            c.stores.push(StorePeer {
                name: format!("store{i}"),
                dir: root.join(format!("store{i}")),
                log: root.join(format!("store{i}.log")),
                port: free_loopback_addr()?.port(),
                metrics: free_loopback_addr()?,
                addr: None,
                child: None,
            });
            c.start_store(i).await?;
        }
        for i in 0..USERS {
            let dir = root.join(format!("user{i}"));
            let info = kith_node::run::init(&dir).with_context(|| format!("kith init user{i}"))?;
            c.users.push(User {
                name: format!("user{i}"),
                log: root.join(format!("user{i}.log")),
                dir,
                user_id: info.user_id.to_string(),
                child: None,
                watcher: None,
            });
            c.start_user(i).await?;
        }
        for a in 0..USERS {
            for b in a + 1..USERS {
                let (api_a, api_b) = (c.api(a)?, c.api(b)?);
                let invite_a = api_a.me().await?.invite;
                let invite_b = api_b.me().await?.invite;
                api_a.add_contact(&invite_b, None).await?;
                api_b.add_contact(&invite_a, None).await?;
            }
        }
        Ok(c)
    }

    /// The run's ledger.
    pub fn ledger(&self) -> Arc<Ledger> {
        self.ledger.clone()
    }

    /// The API of a running user.
    pub fn api(&self, user: usize) -> Result<ApiClient> {
        match &self.users[user].child {
            Some((_, api)) => Ok(api.clone()),
            None => bail!("{} is down", self.users[user].name),
        }
    }

    /// Whether user `i` is running.
    pub fn user_up(&self, i: usize) -> bool {
        self.users[i].child.is_some()
    }

    /// Whether store peer `i` is running.
    pub fn store_up(&self, i: usize) -> bool {
        self.stores[i].child.is_some()
    }

    /// Every process's name and log.
    pub fn logs(&self) -> Vec<(String, PathBuf)> {
        let stores = self.stores.iter().map(|s| (s.name.clone(), s.log.clone()));
        let users = self.users.iter().map(|u| (u.name.clone(), u.log.clone()));
        stores.chain(users).collect()
    }

    /// Appends `what` to the run's `timeline.log` (kills, restarts, losses), to line up with
    /// the processes' logs when a run fails.
    pub fn note(&self, what: &str) {
        use std::io::Write;
        let line = format!("{:>8.3}s {what}\n", self.started.elapsed().as_secs_f64());
        if let Ok(mut f) = Self::log_file(&self.root.join("timeline.log")) {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn log_file(path: &Path) -> Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))
    }

    /// Starts store peer `i` on its port and data directory, joining the others.
    pub async fn start_store(&mut self, i: usize) -> Result<()> {
        let peers: Vec<String> = (0..self.stores.len())
            .filter(|j| *j != i)
            .filter_map(|j| self.stores[j].addr.as_ref().map(|a| a.to_string()))
            .collect();
        let s = &self.stores[i];
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let mut cmd = std::process::Command::new(&self.bootstrap);
            cmd.arg("run")
                .arg("--data-dir")
                .arg(&s.dir)
                .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{}", s.port)])
                .arg("--store")
                .args(["--metrics", &s.metrics.to_string()])
                // The run sends megabytes in seconds from few depositors: the quotas meant
                // for strangers would refuse them, and refusals are not what is tested.
                .args(["--deposits-per-minute", &u32::MAX.to_string()])
                .args(["--max-messages-per-mailbox", "1000000"])
                .args(["--max-bytes-per-mailbox", &(1u64 << 34).to_string()])
                .env("RUST_LOG", "info")
                .stderr(Self::log_file(&s.log)?);
            for p in &peers {
                cmd.arg("--peer").arg(p);
            }
            let mut child = ChildProc::spawn(&s.name, cmd)?;
            let pid = child.pid();
            match child.line(|l| l.starts_with("/ip4/")).await {
                Ok(line) => {
                    let addr: Multiaddr = line
                        .trim()
                        .parse()
                        .with_context(|| format!("{} printed {line:?}", s.name))?;
                    peer_of(&addr)?;
                    let s = &mut self.stores[i];
                    s.addr = Some(addr);
                    s.child = Some(child);
                    let what = format!("start {} (pid {pid}, {})", s.name, s.dir.display());
                    self.note(&what);
                    return Ok(());
                }
                Err(e) => {
                    drop(child);
                    last_err = Some(e);
                    tokio::time::sleep(START_RETRY).await;
                }
            }
        }
        let e = last_err.unwrap_or_else(|| anyhow::anyhow!("never tried"));
        Err(e.context(format!(
            "{} did not start on port {} (log {})",
            s.name,
            s.port,
            s.log.display()
        )))
    }

    /// `kill -9` of store peer `i`.
    pub fn kill_store(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.stores[i].child.take() {
            c.kill9()?;
            self.note(&format!("kill -9 store{i} (pid {})", c.pid()));
        }
        Ok(())
    }

    /// Store peer `i` is lost for good: killed, its data directory deleted; the next
    /// [`Cluster::start_store`] starts a fresh one (new identity) on the same port.
    pub fn lose_store(&mut self, i: usize) -> Result<()> {
        self.kill_store(i)?;
        let s = &mut self.stores[i];
        std::fs::remove_dir_all(&s.dir).with_context(|| format!("deleting {}", s.dir.display()))?;
        // Its identity went with the disk: the old address names a peer that is gone.
        s.addr = None;
        self.losses += 1;
        s.dir = self.root.join(format!("{}-fresh{}", s.name, self.losses));
        self.note(&format!("store{i} lost for good (data deleted)"));
        Ok(())
    }

    /// The store peers' addresses, for `KITH_BOOTSTRAP`.
    fn bootstrap_list(&self) -> String {
        let addrs: Vec<String> = self
            .stores
            .iter()
            .filter_map(|s| s.addr.as_ref().map(|a| a.to_string()))
            .collect();
        addrs.join(",")
    }

    /// Starts user `i` on its data directory; watches its events and records the statuses
    /// its conversations show at start.
    pub async fn start_user(&mut self, i: usize) -> Result<()> {
        let u = &self.users[i];
        let mut cmd = std::process::Command::new(&self.kith);
        cmd.arg("--data-dir")
            .arg(&u.dir)
            .args(["--api", "127.0.0.1:0", "run"])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(["--heartbeat", HEARTBEAT])
            .env("KITH_BOOTSTRAP", self.bootstrap_list())
            .env("RUST_LOG", "info")
            .stderr(Self::log_file(&u.log)?);
        let mut child = ChildProc::spawn(&u.name, cmd)?;
        let line = child
            .line(|l| l.starts_with("kith: api "))
            .await
            .with_context(|| format!("starting {} (log {})", u.name, u.log.display()))?;
        let token = kith_node::run::read_token(&u.dir)?;
        let api = ApiClient::new(line.trim_start_matches("kith: api ").trim(), token)?;
        let watcher = ledger::watch(self.ledger.clone(), i, api.clone());
        self.note(&format!("start user{i} (pid {})", child.pid()));
        let u = &mut self.users[i];
        u.child = Some((child, api.clone()));
        u.watcher = Some(watcher);
        // What it shows after a restart must not be behind what it showed before.
        for peer in 0..self.users.len() {
            if peer != i {
                let before = self.ledger.snapshot(i);
                if let Ok(conv) = self.conversation(i, peer).await {
                    self.ledger
                        .observe_page(i, &conv, &before, "page after restart");
                }
            }
        }
        Ok(())
    }

    /// `kill -9` of user `i`.
    pub fn kill_user(&mut self, i: usize) -> Result<()> {
        let u = &mut self.users[i];
        if let Some(w) = u.watcher.take() {
            w.abort();
        }
        if let Some((mut c, _)) = u.child.take() {
            c.kill9()?;
            self.note(&format!("kill -9 user{i} (pid {})", c.pid()));
        }
        Ok(())
    }

    /// Starts every process that is down.
    pub async fn start_all_down(&mut self) -> Result<()> {
        for i in 0..self.stores.len() {
            if !self.store_up(i) {
                self.start_store(i).await?;
            }
        }
        for i in 0..self.users.len() {
            if !self.user_up(i) {
                self.start_user(i).await?;
            }
        }
        Ok(())
    }

    /// Kills everything (the drop guards would too; this is for an orderly end).
    pub fn stop_all(&mut self) {
        for i in 0..self.users.len() {
            let _ = self.kill_user(i);
        }
        for i in 0..self.stores.len() {
            let _ = self.kill_store(i);
        }
    }

    /// User `user`'s whole conversation with user `peer`, newest first.
    pub async fn conversation(
        &self,
        user: usize,
        peer: usize,
    ) -> Result<Vec<kith_node::handle::MessageView>> {
        let api = self.api(user)?;
        let peer_id = &self.users[peer].user_id;
        let mut all = Vec::new();
        let mut offset = None;
        for _ in 0..MAX_PAGES {
            let page = api.conversation(peer_id, offset, Some(PAGE), None).await?;
            all.extend(page.messages);
            match page.next_offset {
                Some(next) => offset = Some(next),
                None => return Ok(all),
            }
        }
        bail!("conversation of user{user} with user{peer} has more than {MAX_PAGES} pages")
    }

    /// A store peer's `stored_messages` gauge.
    pub async fn stored_messages(&self, i: usize) -> Result<u64> {
        let at = self.stores[i].metrics;
        let body = reqwest::Client::new()
            .get(format!("http://{at}/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .text()
            .await?;
        body.lines()
            .find_map(|l| l.strip_prefix("kith_stored_messages "))
            .with_context(|| format!("no kith_stored_messages in the metrics of {at}"))?
            .trim()
            .parse()
            .context("kith_stored_messages is not a number")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
