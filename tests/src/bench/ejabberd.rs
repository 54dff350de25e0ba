//! The central-server anchor: ejabberd 23.01 driven by the `xmppload` generator of
//! `../shared/bench/ejabberd/` (`run.sh`), run in the same invocation as Kith's own figures
//! so that the ratio between the two divides out this machine's noise.
//!
//! The scripts install ejabberd with apt when it is missing, build the generator, start a
//! private instance on 127.0.0.1:5222 and stop it again; each prints `RESULT key=value …`
//! lines, which are all this module reads.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// Where the scripts are when `--ejabberd-dir` is not given: the shared folder beside the
/// repository checkout.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/ejabberd")
}

/// One `RESULT` line: its `key=value` pairs.
pub type Figures = HashMap<String, String>;

/// Runs `run.sh <mode>` (`throughput`, `latency` or `offline`) from `dir` and returns its
/// `RESULT` lines in order. Fails when the script fails or prints none.
pub fn run(dir: &Path, mode: &str) -> Result<Vec<Figures>> {
    let script = dir.join("run.sh");
    if !script.is_file() {
        bail!("{} not found (pass --ejabberd-dir)", script.display());
    }
    eprintln!("ejabberd: {mode} (the first run installs ejabberd and builds xmppload)");
    let out = Command::new("bash")
        .arg(&script)
        .arg(mode)
        // The generator builds in its own target directory, not in ours.
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} {mode} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let results: Vec<Figures> = stdout.lines().filter_map(parse_result).collect();
    if results.is_empty() {
        bail!("{} {mode} printed no RESULT line", script.display());
    }
    Ok(results)
}

/// The `key=value` pairs of a `RESULT` line (`None` for any other line).
pub fn parse_result(line: &str) -> Option<Figures> {
    let rest = line.strip_prefix("RESULT")?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The anchor's figures, or, when it could not run, the reason in their place: a missing
/// anchor is reported beside Kith's figures, never the benchmark's failure.
pub fn figures_or_error(figures: Result<serde_json::Value>) -> serde_json::Value {
    figures.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ejabberd anchor did not run");
        serde_json::json!({ "error": e.to_string() })
    })
}

/// A figure of a `RESULT` line as a number.
pub fn number(figures: &Figures, key: &str) -> Result<f64> {
    figures
        .get(key)
        .with_context(|| format!("ejabberd result lacks {key}"))?
        .parse()
        .with_context(|| format!("ejabberd result {key} is not a number"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_parse_into_their_pairs() {
        let f = parse_result("RESULT mode=latency rate=200 lat_p50_us=359 lat_p99_us=817").unwrap();
        assert_eq!(f["mode"], "latency");
        assert_eq!(number(&f, "lat_p50_us").unwrap(), 359.0);
        assert!(number(&f, "p90_us").is_err());
        assert!(parse_result("sent 100 messages").is_none());
    }
}
