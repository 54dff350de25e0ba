//! The fault campaign: the proof that a ✓ is a promise (issue #11).
//!
//! One run ([`run_one`]) starts real processes — [`STORE_PEERS`] store peers
//! (`kith-bootstrap run --store`) and [`USERS`] users (`kith run`) — introduces the users to each
//! other by invite, and lets a scheduler seeded from the run's seed ([`schedule`]) send a
//! random mix of texts (up to the 48 KiB limit, with random `client_meta`), media and reads
//! between them while it `kill -9`s one process at a time at random instants (a sender with
//! sends in flight, the recipient of the last send, a store peer) and restarts it on the same
//! data directory. Each run also:
//!
//! - loses one store peer for good: it is killed, its data directory deleted, and a fresh
//!   store peer (new identity, empty database) takes its place on the same port — what an
//!   operator restoring a dead disk does. The network must repair onto it; nothing may be lost
//!   because one of the three copies went away;
//! - stops one user while the others send it more than [`BACKLOG_BYTES`] of texts (several
//!   1 MiB frames), then starts it again.
//!
//! Every answer of the API is recorded ([`ledger`]); every user's `/v1/events` stream is
//! watched, and every status seen (from events, send answers and conversation pages) is
//! checked never to move backwards. After the schedule everything is started again and the
//! run settles ([`check`]): then, from the API alone, every acknowledged message must be in
//! its recipient's conversation exactly once, unaltered, and ✓✓ on its sender; nothing may
//! appear that was not sent; no process may have panicked; and the store peers must hold
//! nothing (every recipient has everything).
//!
//! The same seed gives the same schedule (the same choices in the same order); the processes'
//! timing is the machine's, so a seed reproduces a failure often, not always.

mod check;
mod cluster;
pub mod group_run;
mod ledger;
mod schedule;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// Store peers per run (R = 3: each holds every mailbox).
pub const STORE_PEERS: usize = 3;
/// Users per run.
pub const USERS: usize = 4;
/// Bytes of texts sent to the stopped user while it is down: more than three 1 MiB frames.
pub const BACKLOG_BYTES: usize = 3 * 1024 * 1024 + 256 * 1024;

/// What a run does; [`FaultConfig::campaign`] is what `kith-bench faults` uses,
/// [`FaultConfig::short`] what the tests use.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    /// Where `kith` and `kith-bootstrap` are.
    pub bin_dir: PathBuf,
    /// Scheduler steps (each one action: a send, a read, a kill, or nothing).
    pub steps: usize,
    /// Longest wait for everything to arrive after the schedule.
    pub settle_timeout: Duration,
    /// Keep the logs and data of every run, not only of failing ones.
    pub keep_all: bool,
}

impl FaultConfig {
    /// The campaign's run: about 20 s with release binaries.
    pub fn campaign(bin_dir: PathBuf) -> Self {
        FaultConfig {
            bin_dir,
            steps: 150,
            settle_timeout: Duration::from_secs(60),
            keep_all: false,
        }
    }

    /// A shorter run for the test suite (debug binaries).
    pub fn short(bin_dir: PathBuf) -> Self {
        FaultConfig {
            bin_dir,
            steps: 40,
            settle_timeout: Duration::from_secs(30),
            keep_all: false,
        }
    }
}

/// One thing that went wrong in a run: the message (or process) and what happened.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The message id (or the process, for panics and leftovers).
    pub what: String,
    /// What went wrong.
    pub why: String,
}

/// The result of one run.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// The run's seed.
    pub seed: u64,
    /// Messages the API acknowledged (201 with an id).
    pub messages: usize,
    /// Sends whose outcome is unknown (the sender was killed mid-request) or refused.
    pub unacknowledged: usize,
    /// `kill -9`s (the lost store peer and the stopped user included).
    pub kills: usize,
    /// Bytes of text and media in acknowledged messages.
    pub bytes: u64,
    /// Acknowledged messages that reached ✓ and are missing on the recipient (or the sender).
    pub lost: usize,
    /// Messages held more than once by a conversation.
    pub duplicated: usize,
    /// Statuses seen moving backwards.
    pub regressions: usize,
    /// Acknowledged messages not ✓✓ (or not arrived without ever reaching ✓) after settling.
    pub not_delivered: usize,
    /// Messages that arrived with another text, metadata, sender or media hash.
    pub altered: usize,
    /// Messages that arrived but were never sent (or were refused).
    pub unexpected: usize,
    /// Log lines saying a process panicked.
    pub panics: usize,
    /// Messages the store peers still held after settling.
    pub store_leftover: u64,
    /// Events missed by lagging `/v1/events` subscribers (their statuses went unchecked).
    pub lagged_events: u64,
    /// Whether everything had arrived before the settle timeout.
    pub settled: bool,
    /// Seconds the run took.
    pub secs: f64,
    /// What went wrong, message by message.
    pub failures: Vec<Failure>,
    /// Where the logs and data directories were kept (failing runs, or all with `keep_all`).
    pub kept: Option<PathBuf>,
}

impl RunReport {
    /// Whether the run broke a promise (anything lost, duplicated, regressed, undelivered,
    /// altered, unexpected, a panic, or a store peer left holding messages).
    pub fn failed(&self) -> bool {
        self.lost
            + self.duplicated
            + self.regressions
            + self.not_delivered
            + self.altered
            + self.unexpected
            + self.panics
            > 0
            || self.store_leftover > 0
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let failures: Vec<Value> = self
            .failures
            .iter()
            .map(|f| json!({ "what": f.what, "why": f.why }))
            .collect();
        json!({
            "seed": self.seed,
            "messages": self.messages,
            "unacknowledged": self.unacknowledged,
            "kills": self.kills,
            "bytes": self.bytes,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "regressions": self.regressions,
            "not_delivered": self.not_delivered,
            "altered": self.altered,
            "unexpected": self.unexpected,
            "panics": self.panics,
            "store_leftover": self.store_leftover,
            "lagged_events": self.lagged_events,
            "settled": self.settled,
            "secs": (self.secs * 10.0).round() / 10.0,
            "failures": failures,
            "kept": self.kept.as_ref().map(|p| p.display().to_string()),
        })
    }

    /// One line for progress output.
    pub fn summary(&self) -> String {
        format!(
            "seed {}: {} messages, {} kills, {:.1} MiB, lost {}, duplicated {}, regressions {}, \
             not delivered {}, altered {}, unexpected {}, panics {}, store leftover {}, {:.1} s{}",
            self.seed,
            self.messages,
            self.kills,
            self.bytes as f64 / (1024.0 * 1024.0),
            self.lost,
            self.duplicated,
            self.regressions,
            self.not_delivered,
            self.altered,
            self.unexpected,
            self.panics,
            self.store_leftover,
            self.secs,
            if self.settled { "" } else { ", NOT settled" },
        )
    }
}

/// Runs one seeded fault run in a fresh temporary directory. An error means the harness
/// itself could not run (a binary missing, a process that never started), not a broken
/// promise: those are in the report.
pub async fn run_one(cfg: &FaultConfig, seed: u64) -> Result<RunReport> {
    let started = std::time::Instant::now();
    let root = tempfile::Builder::new()
        .prefix(&format!("kith-faults-{seed}-"))
        .tempdir()
        .context("creating the run's temporary directory")?;
    let outcome = run_in(cfg, seed, root.path()).await;
    let mut report = match outcome {
        Ok(r) => r,
        Err(e) => {
            let kept = root.keep();
            return Err(e.context(format!("fault run {seed} (logs in {})", kept.display())));
        }
    };
    report.secs = started.elapsed().as_secs_f64();
    if report.failed() || cfg.keep_all {
        report.kept = Some(root.keep());
    }
    Ok(report)
}

async fn run_in(cfg: &FaultConfig, seed: u64, root: &std::path::Path) -> Result<RunReport> {
    let ledger = std::sync::Arc::new(ledger::Ledger::default());
    let mut cluster = cluster::Cluster::start(&cfg.bin_dir, root, ledger.clone()).await?;
    let stats = schedule::drive(&mut cluster, seed, cfg.steps).await?;
    cluster.start_all_down().await?;
    cluster.note("settling");
    let mut report = check::settle_and_check(&cluster, &ledger, cfg.settle_timeout).await?;
    report.seed = seed;
    report.kills = stats.kills;
    report.lagged_events = ledger.lagged();
    report.panics = 0;
    for (name, log) in cluster.logs() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("panicked")) {
            report.panics += 1;
            report.failures.push(Failure {
                what: name.clone(),
                why: format!("panicked ({}): {line}", log.display()),
            });
        }
    }
    cluster.note(&format!("checked: {}", report.summary()));
    cluster.stop_all();
    Ok(report)
}

/// Totals over a campaign of runs.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Runs done.
    pub runs: usize,
    /// Acknowledged messages.
    pub messages: usize,
    /// `kill -9`s.
    pub kills: usize,
    /// Bytes in acknowledged messages.
    pub bytes: u64,
    /// See [`RunReport::lost`].
    pub lost: usize,
    /// See [`RunReport::duplicated`].
    pub duplicated: usize,
    /// See [`RunReport::regressions`].
    pub regressions: usize,
    /// See [`RunReport::not_delivered`].
    pub not_delivered: usize,
    /// See [`RunReport::altered`].
    pub altered: usize,
    /// See [`RunReport::unexpected`].
    pub unexpected: usize,
    /// See [`RunReport::panics`].
    pub panics: usize,
    /// See [`RunReport::store_leftover`].
    pub store_leftover: u64,
    /// Seeds of the runs that failed.
    pub failed_seeds: Vec<u64>,
    /// Every run's report.
    pub reports: Vec<RunReport>,
}

impl Totals {
    /// Adds one run.
    pub fn add(&mut self, r: RunReport) {
        self.runs += 1;
        self.messages += r.messages;
        self.kills += r.kills;
        self.bytes += r.bytes;
        self.lost += r.lost;
        self.duplicated += r.duplicated;
        self.regressions += r.regressions;
        self.not_delivered += r.not_delivered;
        self.altered += r.altered;
        self.unexpected += r.unexpected;
        self.panics += r.panics;
        self.store_leftover += r.store_leftover;
        if r.failed() {
            self.failed_seeds.push(r.seed);
        }
        self.reports.push(r);
    }

    /// Whether any run broke a promise.
    pub fn failed(&self) -> bool {
        !self.failed_seeds.is_empty()
    }

    /// The totals as JSON (keys `runs`, `messages`, `kills`, `lost`, `duplicated`,
    /// `regressions`, ...), with every run's report under `reports`.
    pub fn to_json(&self) -> Value {
        json!({
            "runs": self.runs,
            "messages": self.messages,
            "kills": self.kills,
            "bytes": self.bytes,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "regressions": self.regressions,
            "not_delivered": self.not_delivered,
            "altered": self.altered,
            "unexpected": self.unexpected,
            "panics": self.panics,
            "store_leftover": self.store_leftover,
            "failed_seeds": self.failed_seeds,
            "reports": self.reports.iter().map(RunReport::to_json).collect::<Vec<_>>(),
        })
    }
}

/// Runs `runs` runs, run `i` with seed `seed + i`, calling `progress` after each.
pub async fn campaign(
    cfg: &FaultConfig,
    runs: usize,
    seed: u64,
    mut progress: impl FnMut(usize, &RunReport),
) -> Result<Totals> {
    let mut totals = Totals::default();
    for i in 0..runs {
        let report = run_one(cfg, seed.wrapping_add(i as u64)).await?;
        progress(i, &report);
        totals.add(report);
    }
    Ok(totals)
}
