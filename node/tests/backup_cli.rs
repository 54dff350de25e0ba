//! `kith backup create|restore` as a user runs them, on a stopped node: the archive is
//! written once (never over a file), a wrong passphrase is a clear error that writes nothing,
//! restoring brings back the same user, a directory that holds a node is refused, and without
//! a passphrase (no terminal, no `KITH_BACKUP_PASSPHRASE`) nothing happens.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context, Result};

/// Bound on every `kith` process (a create runs Argon2id at 64 MiB).
const TIMEOUT: Duration = Duration::from_secs(120);

async fn kith(data_dir: &Path, passphrase: Option<&str>, args: &[&str]) -> Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kith"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--api", "127.0.0.1:9"])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("KITH_BACKUP_PASSPHRASE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = passphrase {
        command.env("KITH_BACKUP_PASSPHRASE", p);
    }
    let shown = format!("kith {}", args.join(" "));
    let run = tokio::task::spawn_blocking(move || command.output());
    tokio::time::timeout(TIMEOUT, run)
        .await
        .with_context(|| format!("{shown} took over {TIMEOUT:?}"))??
        .with_context(|| format!("starting {shown}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The user id `kith init` prints for `data_dir` (creating the identity if needed).
async fn user_of(data_dir: &Path) -> Result<String> {
    let out = kith(data_dir, None, &["init"]).await?;
    ensure!(out.status.success(), "kith init: {}", text(&out));
    let all = text(&out);
    all.lines()
        .find_map(|l| l.strip_prefix("kith: user "))
        .map(|u| u.trim().to_string())
        .with_context(|| format!("no user in {all}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_through_the_binary() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (old, new, file) = (
        dir.path().join("old"),
        dir.path().join("new"),
        dir.path().join("kith.backup"),
    );
    let user = user_of(&old).await?;
    let file_arg = file.to_str().context("temp path is UTF-8")?;

    let out = kith(&old, Some("pass phrase"), &["backup", "create", file_arg]).await?;
    ensure!(out.status.success(), "backup create: {}", text(&out));
    ensure!(file.exists(), "no backup file");
    let out = kith(&old, Some("pass phrase"), &["backup", "create", file_arg]).await?;
    ensure!(
        !out.status.success() && text(&out).contains("already exists"),
        "a second create over the file: {}",
        text(&out)
    );
    let out = kith(&old, None, &["backup", "create", "other.backup"]).await?;
    ensure!(
        !out.status.success() && text(&out).contains("KITH_BACKUP_PASSPHRASE"),
        "no passphrase: {}",
        text(&out)
    );

    let out = kith(&new, Some("not it"), &["backup", "restore", file_arg]).await?;
    ensure!(
        !out.status.success() && text(&out).contains("wrong passphrase"),
        "restore with a wrong passphrase: {}",
        text(&out)
    );
    ensure!(
        !new.join("db").exists(),
        "a failed restore wrote a database"
    );

    let out = kith(&new, Some("pass phrase"), &["backup", "restore", file_arg]).await?;
    ensure!(out.status.success(), "restore: {}", text(&out));
    ensure!(
        text(&out).contains(&user),
        "restore names another user: {}",
        text(&out)
    );
    ensure!(
        user_of(&new).await? == user,
        "the restored node is another user"
    );

    let out = kith(&new, Some("pass phrase"), &["backup", "restore", file_arg]).await?;
    ensure!(
        !out.status.success() && text(&out).contains("already holds a node"),
        "restore over a node: {}",
        text(&out)
    );
    Ok(())
}
