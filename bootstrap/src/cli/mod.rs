//! The `kith-bootstrap` command line: flags ([`args`]), where `run`'s settings come from
//! ([`settings`]) and what each command does. `main.rs` only sets up logging and calls
//! [`execute`].

pub mod args;
pub mod settings;

use std::future::Future;

pub use args::{Cli, Command, RunArgs};
pub use settings::SettingsError;

use crate::{run, RunError};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The settings (flags, variables, config file) do not make a configuration.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The peer could not start.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs `command`; `run` stops when `shutdown` resolves.
pub async fn execute(command: Command, shutdown: impl Future<Output = ()>) -> Result<(), CliError> {
    match command {
        Command::Id { data_dir } => {
            let key = run::load_or_create_key(&data_dir)?;
            println!("{}", key.public().to_peer_id());
            Ok(())
        }
        Command::CheckConfig(args) => {
            println!("{:#?}", args.with_file()?.into_config()?);
            Ok(())
        }
        Command::Run(args) => {
            let config = args.with_file()?.into_config()?;
            Ok(run::run(config, print_addresses, shutdown).await?)
        }
    }
}

/// Prints each listen address on its own line (scripts read them), and where metrics are.
fn print_addresses(running: &run::Running) {
    for addr in &running.listen_addrs {
        println!("{addr}");
    }
    if let Some(m) = running.metrics_addr {
        eprintln!("kith-bootstrap: metrics on http://{m}/metrics, health on http://{m}/healthz");
    }
}
