//! `nat`: hole punching through the NAT lab's port-preserving NATs, repeated with fresh NAT
//! mappings each round (both nodes restarted on new ports), beside the relayed path measured
//! in the same rounds: success rate, hole punching attempts per success and time from the
//! first message to a direct connection, against the time a message takes to be delivered
//! (✓✓) through the relay. Needs root, `ip`, `iptables` and `curl` (see [`crate::nat_lab`]).
//! The anchor: a 2025 measurement of DCUtR across the IPFS network found 70 % ± 7.1 %
//! success, 97.6 % of successes at the first attempt; the lab's goal is 100 % for
//! port-preserving NATs.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::Cli;
use crate::{nat_lab, procs};

/// Runs `cli.nat_rounds` rounds and returns the figures.
pub async fn run(cli: &Cli) -> Result<Value> {
    if let Some(missing) = nat_lab::prerequisites() {
        bail!("`nat` needs the NAT lab, but {missing}");
    }
    let bins = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => procs::sibling_bin(None, "kith")?
            .parent()
            .context("the binaries' directory")?
            .to_path_buf(),
    };
    let rounds = cli.nat_rounds.to_string();
    let lines = tokio::task::spawn_blocking(move || {
        nat_lab::run(&bins, &["bench", &rounds], |l| eprintln!("nat: {l}"))
    })
    .await
    .context("the NAT lab's runner")??;
    let summary = lines
        .iter()
        .find_map(|l| l.strip_prefix("summary: "))
        .context("the lab printed no summary")?;
    let field = |name: &str| -> Result<f64> {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .with_context(|| format!("no {name} in the summary"))?
            .parse()
            .with_context(|| format!("{name} is not a number"))
    };
    let (rounds, direct, attempts) = (field("rounds")?, field("direct")?, field("attempts")?);
    let to_direct = field("mean_ms_to_direct")?;
    let relayed = field("mean_ms_relayed_delivered")?;
    Ok(json!({
        "rounds": rounds,
        "direct": direct,
        "hole_punch_success_ratio": if rounds > 0.0 { direct / rounds } else { 0.0 },
        "hole_punch_attempts": attempts,
        // Every attempt of the rounds over the rounds that went direct (DCUtR tries up to
        // 3 times per upgrade; 1.0 means every success came at the first attempt).
        "attempts_per_success": if direct > 0.0 { attempts / direct } else { 0.0 },
        "mean_ms_to_direct": to_direct,
        "baseline_mean_ms_relayed_delivered": relayed,
        "to_direct_ratio": if relayed > 0.0 { to_direct / relayed } else { 0.0 },
    }))
}
