//! `kith-bench`: Kith's figures side by side with a baseline measured in the same run. The
//! scenarios live in [`kith_tests::bench`]; this binary only parses flags and starts them.

use anyhow::Result;
use clap::Parser;
use kith_tests::bench::{self, Cli, IDLE_BASELINE_CHILD};

fn main() -> Result<()> {
    // The `idle` scenario starts this binary again as its baseline's child process.
    if std::env::args().nth(1).as_deref() == Some(IDLE_BASELINE_CHILD) {
        return bench::idle::baseline_child();
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut rt = match cli.runtime {
        bench::RuntimeFlavor::Multi => tokio::runtime::Builder::new_multi_thread(),
        bench::RuntimeFlavor::Current => tokio::runtime::Builder::new_current_thread(),
    };
    let rt = rt.enable_all().build()?;
    rt.block_on(bench::run(&cli))
}
