//! `faults`: the fault campaign of [`crate::faults`] — seeded runs of store peers and users
//! (child processes) sending a random mix while a scheduler `kill -9`s one process at a
//! time. Its totals are the JSON file's top level; it fails when any run broke a promise.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{
    cli::Cli,
    fixture::{print_table, sibling_bin},
};

/// `faults`: the campaign of [`crate::faults`]; its totals are the JSON file's top level.
/// Exits non-zero when any run broke a promise.
pub(super) async fn run(args: &Cli) -> Result<()> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => sibling_bin(args, "kith")?
            .parent()
            .context("kith has no directory")?
            .to_path_buf(),
    };
    let mut cfg = crate::faults::FaultConfig::campaign(bin_dir);
    if let Some(steps) = args.fault_steps {
        cfg.steps = steps;
    }
    let (runs, seed) = (args.runs, args.seed);
    eprintln!("faults: {runs} runs, seeds {seed}..{}", seed + runs as u64);
    let totals = crate::faults::campaign(&cfg, runs, seed, |i, r| {
        eprintln!("[{}/{runs}] {}", i + 1, r.summary());
        for f in r.failures.iter().take(12) {
            eprintln!("    {}: {}", f.what, f.why);
        }
        if r.failures.len() > 12 {
            eprintln!("    ... {} more", r.failures.len() - 12);
        }
        if let Some(kept) = &r.kept {
            eprintln!("    logs and data kept in {}", kept.display());
        }
    })
    .await?;
    let mut figures = totals.to_json();
    if let Value::Object(map) = &mut figures {
        let reports = map.remove("reports");
        print_table("faults", &Value::Object(map.clone()));
        if let Some(reports) = reports {
            map.insert("reports".into(), reports);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if totals.failed() {
        bail!(
            "{} of {runs} runs broke a promise; reproduce one with --runs 1 --seed <seed>: {:?}",
            totals.failed_seeds.len(),
            totals.failed_seeds
        );
    }
    Ok(())
}
