//! The fault campaign, short: two seeded runs of real `kith run` and `kith-bootstrap` processes
//! under `kill -9`s, a lost store peer and a multi-frame backlog (see `kith_tests::faults`).
//! Nothing acknowledged may be lost, duplicated, altered or left undelivered; no status may
//! move backwards; no process may panic.
//!
//! The binaries come from the target directory of this test (`cargo test --workspace` builds
//! `kith` and `kith-bootstrap` because their packages have integration tests). A failing run
//! keeps its logs and data directories and prints where.

#![allow(clippy::unwrap_used)]

use kith_tests::{
    faults::{self, FaultConfig},
    procs::{sibling_bin, test_bin_dir},
};

/// The seeds the suite runs; `kith-bench faults --runs 1 --seed <seed>` reproduces one.
const SEEDS: [u64; 2] = [11, 12];

/// Failures printed per run (the rest are counted).
const SHOWN_FAILURES: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kills_lost_store_peers_and_backlogs() {
    let dir = test_bin_dir().unwrap();
    for bin in ["kith", "kith-bootstrap"] {
        if let Err(e) = sibling_bin(Some(&dir), bin) {
            panic!(
                "{e:#}\n(cargo build -p kith-node -p kith-bootstrap, or cargo test --workspace)"
            );
        }
    }
    let cfg = FaultConfig::short(dir);
    let mut totals = faults::Totals::default();
    for seed in SEEDS {
        let report = faults::run_one(&cfg, seed).await.unwrap();
        eprintln!("{}", report.summary());
        for f in report.failures.iter().take(SHOWN_FAILURES) {
            eprintln!("    {}: {}", f.what, f.why);
        }
        if report.failures.len() > SHOWN_FAILURES {
            eprintln!("    ... {} more", report.failures.len() - SHOWN_FAILURES);
        }
        if let Some(kept) = &report.kept {
            eprintln!("    logs and data kept in {}", kept.display());
        }
        totals.add(report);
    }
    assert!(totals.messages > 0, "no message was acknowledged");
    assert_eq!(totals.lost, 0, "lost (seeds {:?})", totals.failed_seeds);
    assert_eq!(
        totals.duplicated, 0,
        "duplicated (seeds {:?})",
        totals.failed_seeds
    );
    assert_eq!(
        totals.regressions, 0,
        "regressions (seeds {:?})",
        totals.failed_seeds
    );
    assert_eq!(totals.panics, 0, "panics (seeds {:?})", totals.failed_seeds);
    assert!(!totals.failed(), "failing seeds: {:?}", totals.failed_seeds);
}

/// issue #16's "as a user would run it": a three-user group through `kith run` processes and
/// store peers, one member offline (and the sender killed) during a membership change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_through_processes_with_a_member_offline_during_a_change() {
    let dir = test_bin_dir().unwrap();
    let root = tempfile::Builder::new()
        .prefix("kith-group-run-")
        .tempdir()
        .unwrap();
    if let Err(e) = faults::group_run::three_users_and_an_offline_change(&dir, root.path()).await {
        let kept = root.keep();
        panic!("{e:#}\n(logs in {})", kept.display());
    }
}
