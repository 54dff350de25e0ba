//! `kith-bench`'s command line: which scenarios to run and their sizes. Flags keep the names
//! they had before clap (`--messages`, `--offline-messages`, `--json`, ...); scenarios are
//! positional and may be mixed with flags (`kith-bench direct offline --json out.json`).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Store peers the `media` scenario sends through unless `--media-stores` says otherwise.
const MEDIA_STORES: usize = 3;

/// Kith's figures side by side with a baseline measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "kith-bench")]
pub struct Cli {
    /// Scenarios to run, in order; `all` (the default) runs those marked "in all".
    #[arg(value_enum)]
    pub scenarios: Vec<ScenarioArg>,
    /// Also write every figure to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// `direct`: messages in the throughput run.
    #[arg(long, default_value_t = 50_000)]
    pub messages: usize,
    /// `offline`: messages deposited for the offline user.
    #[arg(long, default_value_t = 10_000)]
    pub offline_messages: usize,
    /// `store`: pre-sealed texts deposited in all.
    #[arg(long, default_value_t = 64_000)]
    pub store_messages: usize,
    /// `store`: concurrent depositing clients.
    #[arg(long, default_value_t = 32)]
    pub depositors: usize,
    /// `presence`: concurrent heartbeating clients.
    #[arg(long, default_value_t = 32)]
    pub presence_clients: usize,
    /// `presence`: heartbeats per client.
    #[arg(long, default_value_t = 2_000)]
    pub heartbeats: usize,
    /// `idle`: seconds the node is left idle.
    #[arg(long, default_value_t = 60)]
    pub idle_secs: u64,
    /// `idle`: heartbeat interval of the node and its contacts, seconds (Kith's default: 5);
    /// a long one shows what the heartbeats cost.
    #[arg(long, default_value_t = 5)]
    pub idle_heartbeat_secs: u64,
    /// `media`: size of the file sent, MiB.
    #[arg(long, default_value_t = 100)]
    pub media_mib: u64,
    /// `media`: store peers the file goes through.
    #[arg(long, default_value_t = MEDIA_STORES)]
    pub media_stores: usize,
    /// `mesh`: simulation sizes (users), separated by commas.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 300, 1000])]
    pub mesh_sizes: Vec<usize>,
    /// `mesh`: store peers in each simulation.
    #[arg(long, default_value_t = 10)]
    pub mesh_stores: usize,
    /// `mesh`: messages each sender sends.
    #[arg(long, default_value_t = 3)]
    pub mesh_messages: usize,
    /// `group`: group sizes (members, the sender included), separated by commas.
    #[arg(long, value_delimiter = ',', default_values_t = [256])]
    pub group_sizes: Vec<usize>,
    /// `group`: measured rounds (one group message and one batch of one-to-one messages
    /// each).
    #[arg(long, default_value_t = 10)]
    pub group_messages: usize,
    /// `group`: store peers of the simulated mesh.
    #[arg(long, default_value_t = 5)]
    pub group_stores: usize,
    /// `group`: longest any one wait (a setup step, a message) may take, seconds.
    #[arg(long, default_value_t = 600)]
    pub group_timeout_s: u64,
    /// Where `kith` and `kith-bootstrap` are (default: this binary's directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// `faults`: seeded runs.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// `faults`: seed of the first run (run `i` uses seed + i).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `faults`: scheduler steps per run (default: the campaign's).
    #[arg(long)]
    pub fault_steps: Option<usize>,
    /// `nat`: hole-punching rounds, each with fresh NAT mappings.
    #[arg(long, default_value_t = 10)]
    pub nat_rounds: usize,
    /// `store`: the store peer's page cache, MiB (its own default when not given); run with
    /// more `--store-messages` than fit in it to see RSS stop growing.
    #[arg(long)]
    pub store_cache_mib: Option<u64>,
    /// `direct` and `offline`: also run the central-server anchor (ejabberd 23.01 and its
    /// load generator, installed by its scripts when missing) in this invocation, and print
    /// the ratio of Kith's figures to it.
    #[arg(long)]
    pub vs_ejabberd: bool,
    /// Where ejabberd's scripts (`run.sh`) are (default: `../shared/bench/ejabberd` beside
    /// the repository).
    #[arg(long)]
    pub ejabberd_dir: Option<PathBuf>,
    /// The tokio runtime every in-process node of the run shares (`direct`, `offline`,
    /// `mesh`): to compare the flavours on this machine.
    #[arg(long, value_enum, default_value_t = RuntimeFlavor::Multi)]
    pub runtime: RuntimeFlavor,
}

/// A tokio runtime flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeFlavor {
    /// One worker thread per core (tokio's default).
    Multi,
    /// Everything on the thread that runs the benchmark.
    Current,
}

/// A scenario as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScenarioArg {
    /// Every scenario marked "in all".
    All,
    /// Two nodes, full path: throughput and latency (in all).
    Direct,
    /// Deposits through 3 store peers and the returning user's drain (in all).
    Offline,
    /// One store peer under many depositors: deposits/s, CPU, RSS (in all).
    Store,
    /// One store peer absorbing heartbeats: heartbeats/s, CPU (in all).
    Presence,
    /// One idle node with 3 store peers and 10 contacts: CPU, bytes, RSS, sockets per peer.
    Idle,
    /// A 100 MiB file to an offline user through store peers: MiB/s, peak RSS.
    Media,
    /// Seeded kill -9 campaign (--runs N --seed S): lost, duplicated, regressed messages; runs alone.
    Faults,
    /// The simulation at N = 100, 300, 1000 users (--mesh-sizes): delivery, memory, lookups.
    Mesh,
    /// The NAT lab (root): hole punching N times (--nat-rounds) beside the relayed path.
    Nat,
    /// A 256-member group in the simulation (--group-sizes) against one-to-one messages:
    /// time until every member holds a message, the sender's bytes and CPU.
    Group,
}

impl ScenarioArg {
    /// The scenarios `all` (or no scenario named) runs, in order.
    pub const IN_ALL: [ScenarioArg; 5] = [
        ScenarioArg::Direct,
        ScenarioArg::Offline,
        ScenarioArg::Store,
        ScenarioArg::Presence,
        ScenarioArg::Idle,
    ];

    /// The scenario's name, as typed and as the key of its figures.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioArg::All => "all",
            ScenarioArg::Direct => "direct",
            ScenarioArg::Offline => "offline",
            ScenarioArg::Store => "store",
            ScenarioArg::Presence => "presence",
            ScenarioArg::Idle => "idle",
            ScenarioArg::Media => "media",
            ScenarioArg::Faults => "faults",
            ScenarioArg::Mesh => "mesh",
            ScenarioArg::Nat => "nat",
            ScenarioArg::Group => "group",
        }
    }
}

impl Cli {
    /// The scenarios to run: `all` expanded, none named meaning `all`, each once, in the
    /// order first named.
    pub fn scenarios(&self) -> Vec<ScenarioArg> {
        let named: &[ScenarioArg] = if self.scenarios.is_empty() {
            &[ScenarioArg::All]
        } else {
            &self.scenarios
        };
        let mut out = Vec::new();
        for s in named {
            let expanded: &[ScenarioArg] = if *s == ScenarioArg::All {
                &ScenarioArg::IN_ALL
            } else {
                std::slice::from_ref(s)
            };
            for e in expanded {
                if !out.contains(e) {
                    out.push(*e);
                }
            }
        }
        out
    }

    /// The ejabberd scripts' folder when `--vs-ejabberd` asks for the anchor.
    pub fn ejabberd(&self) -> Option<PathBuf> {
        self.vs_ejabberd.then(|| {
            self.ejabberd_dir
                .clone()
                .unwrap_or_else(super::ejabberd::default_dir)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("kith-bench").chain(args.iter().copied()))
            .expect("valid command line")
    }

    #[test]
    fn scenarios_and_flags_mix_as_before_clap() {
        let cli = parse(&[
            "direct",
            "offline",
            "--json",
            "f.json",
            "--messages",
            "2000",
        ]);
        assert_eq!(cli.scenarios(), [ScenarioArg::Direct, ScenarioArg::Offline]);
        assert_eq!(cli.json.as_deref(), Some(std::path::Path::new("f.json")));
        assert_eq!(cli.messages, 2000);
        let cli = parse(&["group", "--group-sizes", "256,1024"]);
        assert_eq!(cli.group_sizes, [256, 1024]);
        assert_eq!(cli.scenarios(), [ScenarioArg::Group]);
        let cli = parse(&["--mesh-sizes", "10,20", "mesh"]);
        assert_eq!(cli.mesh_sizes, [10, 20]);
        assert_eq!(cli.scenarios(), [ScenarioArg::Mesh]);
    }

    #[test]
    fn all_is_the_default_and_each_scenario_runs_once() {
        assert_eq!(parse(&[]).scenarios(), ScenarioArg::IN_ALL);
        assert_eq!(parse(&["all"]).scenarios(), ScenarioArg::IN_ALL);
        let cli = parse(&["media", "all", "direct"]);
        let mut want = vec![ScenarioArg::Media];
        want.extend(ScenarioArg::IN_ALL);
        assert_eq!(cli.scenarios(), want);
        assert!(Cli::try_parse_from(["kith-bench", "bogus"]).is_err());
    }
}
