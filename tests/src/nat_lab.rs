//! Running the NAT lab (`scripts/nat-lab.sh`: real NATs in network namespaces) from Rust, for
//! its CI test (`tests/tests/nat_lab.rs`) and `kith-bench nat`. The lab needs root, `ip` and
//! `iptables`; [`prerequisites`] says what is missing.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// The lab script, in this source tree.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/nat-lab.sh")
}

/// What this machine lacks to run the lab, if anything.
pub fn prerequisites() -> Option<String> {
    // The effective user id is the second number of the `Uid:` line.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Some("not root (network namespaces and iptables need it)".into());
    }
    for tool in ["ip", "iptables", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// Runs the lab with the binaries in `bin_dir` and `args` after it, passing each line it
/// prints to `on_line` as it comes; fails if the lab exits with an error (it says which
/// expectation failed in its output, which is in the error too).
pub fn run(bin_dir: &Path, args: &[&str], mut on_line: impl FnMut(&str)) -> Result<Vec<String>> {
    let mut child = Command::new("timeout")
        .arg("900")
        .arg("bash")
        .arg(script())
        .arg(bin_dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting scripts/nat-lab.sh")?;
    let stdout = child.stdout.take().context("the lab's output")?;
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the lab's output")?;
        on_line(&line);
        lines.push(line);
    }
    let status = child.wait().context("waiting for the lab")?;
    if !status.success() {
        bail!("the NAT lab failed ({status}):\n{}", lines.join("\n"));
    }
    Ok(lines)
}
