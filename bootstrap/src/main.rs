//! `kith-bootstrap`: parses flags, reads the config file, sets up logging and starts a
//! bootstrap / relay / store peer (the command handlers are in `kith_bootstrap::cli`).

use anyhow::Context;
use clap::Parser;
use kith_bootstrap::{
    cli::{self, Cli},
    logging,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command.with_file().context("kith-bootstrap")?;
    logging::init(command.log_format()).context("kith-bootstrap: logging")?;
    cli::execute(command, shutdown_signal())
        .await
        .context("kith-bootstrap")
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
