//! The `kith-bootstrap` command line: flags ([`args`]) and what each command does. `main.rs`
//! only sets up logging and calls [`execute`].

pub mod args;

use std::future::Future;

pub use args::{Cli, Command, RunArgs};

use crate::{run, Config, RunError};

/// Runs `command`; `run` stops when `shutdown` resolves.
pub async fn execute(command: Command, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    match command {
        Command::Id { data_dir } => {
            let key = run::load_or_create_key(&data_dir)?;
            println!("{}", key.public().to_peer_id());
            Ok(())
        }
        Command::Run(args) => run::run(Config::from(args), print_addresses, shutdown).await,
    }
}

/// Prints each listen address on its own line (scripts read them), and where metrics are.
fn print_addresses(running: &run::Running) {
    for addr in &running.listen_addrs {
        println!("{addr}");
    }
    if let Some(m) = running.metrics_addr {
        eprintln!("kith-bootstrap: metrics on http://{m}/metrics");
    }
}
