//! The `kith` binary as a user or a script meets it: read commands print JSON in the API's
//! shapes with `--json`, `kith history` shows local times, shell completions and the man page
//! are generated, and a reader that closes stdout early (`kith … | head`) ends the command
//! quietly rather than with a panic.
//!
//! One node runs in this process (loopback, port 0); each command is a real `kith` process
//! pointed at it with `--api` and `--data-dir`, under a timeout.

#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use chrono::TimeZone;
use kith_node::{invite::Invite, Config};
use kith_protocol::LocalIdentity;
use serde_json::Value;

/// Bound on every `kith` process.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A POSIX zone nine hours east of UTC, so local times differ from UTC visibly.
const ZONE: &str = "KST-9";

/// Where the command goes: the node's data directory and API address (none for commands that
/// need no node).
#[derive(Clone)]
struct Target {
    data_dir: PathBuf,
    api: String,
}

/// Runs `kith` with `args` against `target`, stdout to `stdout`, under [`TIMEOUT`].
async fn kith_to(target: &Target, args: &[&str], stdout: Stdio) -> Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kith"));
    command
        .arg("--data-dir")
        .arg(&target.data_dir)
        .args(["--api", &target.api])
        .args(args)
        .env("TZ", ZONE)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    let shown = format!("kith {}", args.join(" "));
    let run = tokio::task::spawn_blocking(move || command.output());
    tokio::time::timeout(TIMEOUT, run)
        .await
        .with_context(|| format!("{shown} took over {TIMEOUT:?}"))??
        .with_context(|| format!("starting {shown}"))
}

/// Runs `kith` with `args` and fails unless it succeeds; returns its stdout.
async fn kith(target: &Target, args: &[&str]) -> Result<String> {
    let out = kith_to(target, args, Stdio::piped()).await?;
    ensure!(
        out.status.success(),
        "kith {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `kith … --json`, parsed.
async fn kith_json(target: &Target, args: &[&str]) -> Result<Value> {
    let stdout = kith(target, args).await?;
    serde_json::from_str(&stdout).with_context(|| format!("not JSON: {stdout}"))
}

/// Runs `kith` with its stdout already closed by the reader, as `kith … | head` ends up.
async fn kith_into_closed_pipe(target: &Target, args: &[&str]) -> Result<()> {
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let out = kith_to(target, args, Stdio::from(writer)).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !stderr.contains("panicked"),
        "kith {} panicked on a closed pipe: {stderr}",
        args.join(" ")
    );
    ensure!(
        out.status.success(),
        "kith {} failed on a closed pipe: {stderr}",
        args.join(" ")
    );
    Ok(())
}

/// A target for commands that need no node.
fn nowhere(dir: &Path) -> Target {
    Target {
        data_dir: dir.to_path_buf(),
        api: "127.0.0.1:9".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_print_json_and_history_shows_local_time() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("node");
    let running = kith_node::mesh::start_user(Config::loopback(data_dir.clone())).await?;
    let target = Target {
        data_dir,
        api: running.api_addr.to_string(),
    };
    // A contact that never comes online: messages to it stay pending, which is enough here.
    let carol = LocalIdentity::generate(kith_node::time::now_ms(), &mut rand::rngs::OsRng);
    let user = carol.user_id().to_string();
    let invite = Invite::new(carol.bundle(), &[]).encode()?;
    kith(&target, &["contacts", "add", &invite, "--name", "carol"]).await?;
    let sent = kith(&target, &["send", &user, "hello\nthere"]).await?;
    let id = sent
        .split_whitespace()
        .next()
        .context("send printed no id")?;

    let contacts = kith_json(&target, &["contacts", "list", "--json"]).await?;
    let contact = &contacts["contacts"][0];
    assert_eq!(contact["user_id"], user.as_str());
    assert_eq!(contact["name"], "carol");
    assert!(contact["addrs"].is_array());

    let page = kith_json(&target, &["history", &user, "--json"]).await?;
    let message = &page["messages"][0];
    assert_eq!(message["id"], id);
    assert_eq!(message["text"], "hello\nthere");
    assert_eq!(message["to"], user.as_str());
    assert_eq!(message["outgoing"], true);
    assert!(message["status"].is_string());
    assert!(message["client_meta"].is_object());
    assert!(message["sent_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(page["next_offset"].is_null());

    // The human history shows the same moment in the local zone (TZ), not in UTC.
    let sent_at_ms = message["sent_at_ms"].as_i64().context("sent_at_ms")?;
    let zone = chrono::FixedOffset::east_opt(9 * 3600).context("offset")?;
    let local = zone
        .timestamp_millis_opt(sent_at_ms)
        .single()
        .context("a valid time")?
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let history = kith(&target, &["history", &user]).await?;
    assert!(
        history.starts_with(&format!("{local}  →  hello")),
        "history is not in local time ({local}): {history}"
    );

    let me = kith_json(&target, &["me", "--json"]).await?;
    assert_eq!(me["user_id"], running.node.user_id().to_string().as_str());
    assert!(me["invite"].is_string() && me["listen_addrs"].is_array());
    let presence = kith_json(&target, &["presence", &user, "--json"]).await?;
    assert_eq!(presence["online"], false);
    for (args, key) in [
        (&["requests", "--json"][..], "requests"),
        (&["blocked", "--json"][..], "blocked"),
        (&["group", "list", "--json"][..], "groups"),
    ] {
        let answer = kith_json(&target, args).await?;
        assert!(answer[key].is_array(), "{args:?}: {answer}");
    }

    // A reader that stops early ends the command quietly.
    kith_into_closed_pipe(&target, &["history", &user]).await?;
    kith_into_closed_pipe(&target, &["contacts", "list", "--json"]).await?;

    running.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_man_page_are_generated() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let target = nowhere(dir.path());
    let bash = kith(&target, &["completions", "bash"]).await?;
    assert!(bash.contains("_kith()") && bash.contains("complete -F _kith"));
    assert!(bash.contains("history") && bash.contains("--json"));
    let zsh = kith(&target, &["completions", "zsh"]).await?;
    assert!(zsh.starts_with("#compdef kith"));
    let fish = kith(&target, &["completions", "fish"]).await?;
    assert!(fish.contains("complete -c kith"));
    let man = kith(&target, &["man"]).await?;
    assert!(man.contains(".TH kith 1"), "not a roff man page: {man}");
    assert!(man.contains(".SH SUBCOMMANDS") && man.contains("completions"));
    // Large outputs into a closed pipe: no panic.
    kith_into_closed_pipe(&target, &["completions", "bash"]).await?;
    kith_into_closed_pipe(&target, &["man"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_command_prints_the_checked_in_document() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let printed = kith(&nowhere(dir.path()), &["openapi"]).await?;
    assert_eq!(printed, kith_node::api::openapi::json());
    Ok(())
}
