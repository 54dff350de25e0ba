//! `kith backup create|restore`: the passphrase from `KITH_BACKUP_PASSPHRASE` or the
//! terminal, the node's data from its API when it runs or from its data directory when it
//! does not, sealed and written by [`kith_node::backup`].

use std::{io::IsTerminal, path::Path};

use anyhow::{bail, Context, Result};
use kith_node::{
    backup::{self, BackupError},
    client::ApiClient,
};
use kith_protocol::backup::KdfCost;

use super::out::sayln;

/// The environment variable holding the passphrase (for scripts; else it is asked).
pub const PASSPHRASE_ENV: &str = "KITH_BACKUP_PASSPHRASE";

/// The passphrase: from the environment, else asked on the terminal (twice when `confirm`).
fn passphrase(confirm: bool) -> Result<String> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        if p.is_empty() {
            bail!("{PASSPHRASE_ENV} is empty");
        }
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase: set {PASSPHRASE_ENV} or run this on a terminal");
    }
    let p = rpassword::prompt_password("Backup passphrase: ")?;
    if p.is_empty() {
        bail!("the passphrase is empty");
    }
    if confirm && rpassword::prompt_password("Again: ")? != p {
        bail!("the passphrases differ");
    }
    Ok(p)
}

/// `kith backup create`.
pub async fn create(data_dir: &Path, api: &str, file: &Path, media: bool) -> Result<()> {
    if file.exists() {
        bail!("{} already exists; choose another name", file.display());
    }
    let pass = passphrase(true)?;
    let now = kith_node::time::now_ms();
    let encoded = match backup::contents_of_data_dir(data_dir, media, now) {
        Ok(contents) => backup::encode(&contents)?,
        Err(BackupError::NodeRunning) => {
            let client = ApiClient::new(api, super::run::token(data_dir)?)?;
            client
                .backup(media)
                .await
                .context("asking the running node for its data")?
        }
        Err(e) => return Err(e.into()),
    };
    let sealed =
        tokio::task::spawn_blocking(move || backup::seal(&encoded, &pass, KdfCost::DEFAULT))
            .await??;
    backup::write_new(file, &sealed)?;
    sayln!(
        "backup written to {} ({} bytes{}); keep the passphrase: without it nothing can be restored",
        file.display(),
        sealed.len(),
        if media { ", with media" } else { "" }
    );
    Ok(())
}

/// `kith backup restore`.
pub async fn restore(data_dir: &Path, file: &Path) -> Result<()> {
    let archive = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let pass = passphrase(false)?;
    let dir = data_dir.to_path_buf();
    let user =
        tokio::task::spawn_blocking(move || backup::restore(&dir, &archive, &pass)).await??;
    sayln!(
        "restored user {user} into {}; start it with `kith run` (messages that came meanwhile \
         arrive from its store peers)",
        data_dir.display()
    );
    Ok(())
}
