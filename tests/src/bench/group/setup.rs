//! The `group` scenario's mesh: store peers and members over the memory transport, and the
//! creator (the sender of every measured message) on a tokio runtime and links of its own,
//! so that its CPU time and the bytes it writes can be told from everyone else's in this
//! process. Nothing here measures; it only builds, introduces and tears down.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use kith_bootstrap as operator;
use kith_net::{Links, Transport};
use kith_node::{
    mesh::{self, Mesh, MeshConfig, MeshOptions},
    Config, RunningNode,
};
use libp2p::Multiaddr;

/// Progress of one setup step on stderr: a bar on a terminal, else a line at every tenth.
#[derive(Clone)]
pub(super) struct Progress {
    bar: ProgressBar,
    what: String,
    lines: bool,
}

impl Progress {
    /// One more step done.
    pub(super) fn inc(&self) {
        self.bar.inc(1);
        let (done, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        if self.lines && len >= 10 && done.is_multiple_of((len / 10).max(1)) {
            eprintln!("    {}: {done}/{len}", self.what);
        }
    }

    /// `done` steps done in all.
    pub(super) fn set(&self, done: usize) {
        while (self.bar.position() as usize) < done {
            self.inc();
        }
    }

    /// The step is over.
    pub(super) fn finish(&self) {
        self.bar.finish();
    }
}

/// The progress of `len` steps of `what` (nothing shown when `show` is false).
pub(super) fn bar(show: bool, len: usize, what: &str) -> Progress {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    if show {
        eprintln!("  group: {what} ({len})");
    }
    let bar = if show && tty {
        let pb = ProgressBar::new(len as u64);
        if let Ok(style) =
            ProgressStyle::with_template("  {msg:<28} [{bar:40}] {pos}/{len} {elapsed_precise}")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(what.to_string());
        pb
    } else {
        let pb = ProgressBar::hidden();
        pb.set_length(len as u64);
        pb
    };
    Progress {
        bar,
        what: what.to_string(),
        lines: show && !tty,
    }
}

/// A multi-thread tokio runtime of its own (one worker) for the sender's node, whose
/// threads (worker and blocking pool) are recorded so that their CPU time can be read.
pub(super) struct SenderRuntime {
    rt: Option<tokio::runtime::Runtime>,
    tids: Arc<Mutex<Vec<u32>>>,
}

impl SenderRuntime {
    /// Builds the runtime. Blocking threads are kept for an hour, so none exits (taking its
    /// CPU time with it) during a run.
    pub(super) fn new() -> Result<Self> {
        let tids: Arc<Mutex<Vec<u32>>> = Arc::default();
        let record = tids.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kith-sender")
            .thread_keep_alive(Duration::from_secs(3600))
            .on_thread_start(move || {
                if let Some(tid) = this_thread_id() {
                    super::lock(&record).push(tid);
                }
            })
            .enable_all()
            .build()
            .context("building the sender's runtime")?;
        Ok(SenderRuntime { rt: Some(rt), tids })
    }

    /// The runtime's handle (to spawn the sender's node on it).
    pub(super) fn handle(&self) -> Result<tokio::runtime::Handle> {
        self.rt
            .as_ref()
            .map(|r| r.handle().clone())
            .ok_or_else(|| anyhow!("the sender's runtime is shut down"))
    }

    /// CPU time so far of every thread the runtime started, seconds (scheduler nanoseconds
    /// where the kernel keeps them, else utime + stime in 10 ms ticks).
    pub(super) fn cpu_seconds(&self) -> f64 {
        super::lock(&self.tids)
            .iter()
            .map(|tid| thread_cpu_seconds(*tid))
            .sum()
    }

    /// Shuts the runtime down without waiting for its tasks.
    pub(super) fn shutdown(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for SenderRuntime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The kernel's id of the calling thread, from `/proc/thread-self` (`/proc/<pid>/task/<tid>`).
fn this_thread_id() -> Option<u32> {
    std::fs::read_link("/proc/thread-self")
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// One thread of this process's CPU time, seconds (0 if it cannot be read).
fn thread_cpu_seconds(tid: u32) -> f64 {
    let base = format!("/proc/self/task/{tid}");
    if let Some(ns) = std::fs::read_to_string(format!("{base}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    {
        return ns as f64 / 1e9;
    }
    std::fs::read_to_string(format!("{base}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
            Some((t(11)? + t(12)?) as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// A user node's configuration as the simulation's: memory transport on `transport`, a
/// Kademlia client, no relays or hole punching.
fn user_config(
    dir: &Path,
    name: &str,
    boot: &[Multiaddr],
    heartbeat: Duration,
    transport: Transport,
) -> Config {
    let mut c = Config::loopback(dir.join(name));
    c.bootstrap = boot.to_vec();
    c.heartbeat = heartbeat;
    c.listen = vec![kith_net::memory_any_port()];
    c.transport = transport;
    c.traversal.kad_server = false;
    c.traversal.relays = 0;
    c.traversal.hole_punching = false;
    c
}

/// The running peers of one group run.
pub(super) struct Peers {
    /// The store peers.
    pub(super) stores: Vec<operator::Running>,
    /// The group's creator and sender, running on `sender_rt`.
    pub(super) creator: Option<RunningNode>,
    /// The other members.
    pub(super) members: Vec<RunningNode>,
    /// The runtime the creator runs on.
    pub(super) sender_rt: SenderRuntime,
    /// The creator's own links: what they count is what the creator wrote and read.
    pub(super) sender_links: Links,
}

/// Starts `stores` store peers, the creator and `recipients` other members, and introduces
/// the creator to each member (members are not introduced to each other).
pub(super) async fn start(
    dir: &Path,
    stores: usize,
    recipients: usize,
    heartbeat: Duration,
    parallel: usize,
    show: bool,
) -> Result<Peers> {
    let links = Links::default();
    let streams = (4 * (recipients + 1 + stores)).max(1024);
    let store_tweak: mesh::StoreTweak = Arc::new(move |c: &mut operator::Config| {
        if let Some(s) = c.store.as_mut() {
            s.max_streams = streams;
        }
        c.connections.max_established_incoming = c
            .connections
            .max_established_incoming
            .max(u32::try_from(3 * streams).unwrap_or(u32::MAX));
    });
    let opts = MeshOptions {
        introduce_all: false,
        store_tweak: Some(store_tweak),
        transport: Transport::Memory(links.clone()),
        ..MeshOptions::default()
    };
    let store_mesh = Mesh::start_with(MeshConfig::stores_only(dir.into(), stores), opts)
        .await
        .context("starting the store peers")?;
    let boot = store_mesh.bootstrap_addrs();

    let sender_rt = SenderRuntime::new()?;
    let sender_links = Links::default();
    let cfg = user_config(
        dir,
        "creator",
        &boot,
        heartbeat,
        Transport::Memory(sender_links.clone()),
    );
    let creator = sender_rt
        .handle()?
        .spawn(mesh::start_user(cfg))
        .await
        .context("the creator's start panicked")?
        .context("starting the creator")?;

    let pb = bar(show, recipients, "starting members");
    let started: Vec<Result<RunningNode>> = futures::stream::iter((0..recipients).map(|i| {
        let cfg = user_config(
            dir,
            &format!("m{i:04}"),
            &boot,
            heartbeat,
            Transport::Memory(links.clone()),
        );
        let pb = pb.clone();
        async move {
            let r = mesh::start_user(cfg)
                .await
                .with_context(|| format!("starting member {i}"));
            pb.inc();
            r
        }
    }))
    .buffered(parallel.max(1))
    .collect()
    .await;
    pb.finish();
    let members = started.into_iter().collect::<Result<Vec<_>>>()?;
    let peers = Peers {
        stores: store_mesh.stores,
        creator: Some(creator),
        members,
        sender_rt,
        sender_links,
    };

    let creator = peers.creator()?;
    let pb = bar(show, recipients, "introducing creator");
    let done: Vec<Result<()>> =
        futures::stream::iter(peers.members.iter().enumerate().map(|(i, m)| {
            let pb = pb.clone();
            async move {
                mesh::introduce("creator", creator, &format!("m{i:04}"), m).await?;
                pb.inc();
                Ok(())
            }
        }))
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    pb.finish();
    done.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(peers)
}

impl Peers {
    /// The creator's node.
    pub(super) fn creator(&self) -> Result<&RunningNode> {
        self.creator
            .as_ref()
            .ok_or_else(|| anyhow!("the creator is stopped"))
    }

    /// Waits until every user names its store peers in its invite (R of them, or all when
    /// fewer): it found them and can be reached through them.
    pub(super) async fn wait_ready(&self, timeout: Duration, show: bool) -> Result<()> {
        let want = Config::loopback(Default::default())
            .replication
            .min(self.stores.len());
        let deadline = tokio::time::Instant::now() + timeout;
        let all: Vec<&RunningNode> = std::iter::once(self.creator()?)
            .chain(self.members.iter())
            .collect();
        let pb = bar(show, all.len(), "waiting for mailboxes");
        for (i, n) in all.iter().enumerate() {
            loop {
                let me = n.node.me().await?;
                let invite = kith_node::invite::Invite::decode(&me.invite)?;
                if invite.bundle.mailboxes.len() >= want {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    bail!(
                        "timed out after {timeout:?} waiting for user {i} to name its store peers"
                    );
                }
                tokio::time::sleep(crate::POLL_INTERVAL).await;
            }
            pb.inc();
        }
        pb.finish();
        Ok(())
    }

    /// Stops every peer: members a few at a time, then the creator on its runtime, then
    /// the store peers.
    pub(super) async fn shutdown(mut self) {
        futures::stream::iter(std::mem::take(&mut self.members))
            .for_each_concurrent(16, |m| async move {
                if let Err(e) = m.shutdown().await {
                    tracing::warn!(error = %e, "group bench: member did not stop cleanly");
                }
            })
            .await;
        if let (Some(c), Ok(h)) = (self.creator.take(), self.sender_rt.handle()) {
            let _ = h.spawn(c.shutdown()).await;
        }
        self.sender_rt.shutdown();
        for s in std::mem::take(&mut self.stores) {
            s.shutdown().await;
        }
    }
}
