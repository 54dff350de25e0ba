//! The NAT lab in CI: real NATs in network namespaces (`scripts/nat-lab.sh`). Alice and bob,
//! each behind a port-preserving NAT, reach a direct connection by hole punching; carol,
//! behind a symmetric NAT, is reached through the relay and never claimed direct; a relay
//! killed in the middle of a conversation loses nothing and nothing arrives twice; everyone
//! bootstraps by `/dns4/` name. Each expectation is a line `ok: …` or `FAILED: …`.
//!
//! It needs root, `ip`, `iptables` and `curl` (`.ci/run` installs iptables). Under `CI=true`
//! a missing prerequisite fails the test; elsewhere it is skipped with the reason.

use anyhow::{bail, ensure, Result};
use kith_tests::{init_logging, nat_lab, procs};

#[test]
fn nat_lab_scenarios() -> Result<()> {
    init_logging();
    if let Some(missing) = nat_lab::prerequisites() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!("the NAT lab must run in CI, but {missing}");
        }
        eprintln!("skipping the NAT lab: {missing}");
        return Ok(());
    }
    let bins = procs::test_bin_dir()?;
    let lines = nat_lab::run(&bins, &[], |l| eprintln!("nat-lab: {l}"))?;
    let oks = lines.iter().filter(|l| l.starts_with("ok: ")).count();
    ensure!(
        !lines.iter().any(|l| l.starts_with("FAILED")) && oks >= 10,
        "expected every scenario to pass:\n{}",
        lines.join("\n")
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.starts_with("ok: alice <-> bob direct by hole punching")),
        "no direct connection through the port-preserving NATs"
    );
    Ok(())
}
