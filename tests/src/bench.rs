//! `kith-bench`: Kith's figures side by side with a baseline measured in the same run.
//!
//! ```text
//! cargo build --release --bin kith-bench --bin kith --bin kith-bootstrap
//! cargo run --release -p kith-tests --bin kith-bench -- [all | SCENARIO...] [--json out.json]
//! ```
//!
//! One module per scenario, each opening with what it measures and its baseline:
//! [`direct`], [`offline`], [`store`], [`presence`] and [`idle`] run in `all`; [`media`]
//! (writes several times the file size to disk), [`faults`] (runs alone), [`mesh`] and [`nat`]
//! (the NAT lab, as root) and [`group`] (a 256-member group in the simulation) only when named. `store`, `presence`, `idle`, `media` and `faults` run `kith-bootstrap` and
//! `kith` from the directory of this binary (or `--bin-dir`): build them in the same profile
//! first.
//!
//! Figures carry their unit in their name; every figure is printed with its baseline and the
//! ratio. Machines here are noisy: compare ratios, not absolute numbers across runs. This
//! module only dispatches; it never measures.

mod cli;
pub mod direct;
pub mod ejabberd;
pub mod faults;
mod fixture;
pub mod group;
pub mod idle;
pub mod media;
pub mod mesh;
pub mod nat;
pub mod offline;
pub mod presence;
pub mod store;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

pub use cli::{Cli, RuntimeFlavor, ScenarioArg};
pub use idle::IDLE_BASELINE_CHILD;

/// Runs the scenarios `cli` names, prints their figures and writes them to `--json`.
pub async fn run(cli: &Cli) -> Result<()> {
    let scenarios = cli.scenarios();
    if scenarios.contains(&ScenarioArg::Faults) {
        ensure!(scenarios.len() == 1, "`faults` runs alone");
        return faults::run(cli).await;
    }
    let mut report = serde_json::Map::new();
    for s in scenarios {
        let figures = run_scenario(s, cli).await?;
        fixture::print_table(s.name(), &figures);
        report.insert(s.name().to_string(), figures);
    }
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(report))?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Runs one scenario and returns its figures.
async fn run_scenario(scenario: ScenarioArg, cli: &Cli) -> Result<Value> {
    match scenario {
        ScenarioArg::Direct => direct::run(cli.messages, cli.ejabberd()).await,
        ScenarioArg::Offline => offline::run(cli.offline_messages, cli.ejabberd()).await,
        ScenarioArg::Store => store::run(cli).await,
        ScenarioArg::Presence => presence::run(cli).await,
        ScenarioArg::Idle => idle::run(cli).await,
        ScenarioArg::Media => media::run(cli).await,
        ScenarioArg::Mesh => mesh::run(&cli.mesh_sizes, cli.mesh_stores, cli.mesh_messages).await,
        ScenarioArg::Nat => nat::run(cli).await,
        ScenarioArg::Group => group::run(cli).await,
        ScenarioArg::All | ScenarioArg::Faults => {
            anyhow::bail!("{} is not a single scenario", scenario.name())
        }
    }
}
