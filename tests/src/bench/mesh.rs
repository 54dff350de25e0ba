//! `mesh`: the simulation ([`crate::sim`]) at each of `--mesh-sizes` users over the memory
//! transport (10 % churn, a partition of 10 % of the users that heals, pairs), as far as this
//! machine goes: delivery, memory per node, time to deliver and DHT
//! lookup requests beside log2(N). Not in `all`.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::{
    measure::{cpu_seconds, rss_bytes},
    sim::{run as run_sim, SimConfig, SimTransport},
};

/// Raises this process's open-file limit to `want` (soft and hard when the process may, else
/// the soft limit up to the hard one): every user node holds tens of sockets, and a
/// 1,000-node mesh in one process needs far more than the usual 20,000. Returns the soft
/// limit now in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    use rlimit::Resource;
    if Resource::NOFILE.set(want, want).is_err() {
        let _ = rlimit::increase_nofile_limit(want);
    }
    Resource::NOFILE.get().map(|(soft, _)| soft).unwrap_or(0)
}

/// File descriptors one user node holds in a one-process mesh (both ends of its loopback
/// connections): about 66 in steady state at N = 300 (19,687 sockets), more during setup, when
/// Kademlia bootstrap opens bursts of connections (N = 250 ran out of 20,000).
const FDS_PER_USER: u64 = 80;

/// The `mesh` benchmark: the simulation at each size in `sizes` (10 % churn, a 10 % partition
/// that heals, pairs, memory transport), as far as this machine goes. Each size reports the
/// run, memory per node, time to deliver and DHT lookup requests beside log2(N), the floor an
/// ideal Kademlia lookup would need. A size that fails is reported with its error, and larger
/// sizes are skipped.
pub async fn run(sizes: &[usize], stores: usize, messages: usize) -> Result<Value> {
    let fd_limit = raise_fd_limit(1 << 20);
    tracing::info!(fd_limit, "open-file limit for the mesh benchmark");
    // Open the /proc handles now: at the largest sizes no descriptor is left to open them.
    let _ = (cpu_seconds(), rss_bytes("VmRSS:"));
    let mut out = serde_json::Map::new();
    out.insert("fd_limit".into(), json!(fd_limit));
    for &n in sizes {
        let cfg = SimConfig {
            users: n,
            stores,
            churn: 0.1,
            partition: 0.1,
            messages_per_sender: messages,
            parallel_starts: 16,
            ready_timeout: Duration::from_secs(600),
            settle_timeout: Duration::from_secs(600),
            dht_lookups: 20,
            ..SimConfig::default()
        };
        // Over TCP both ends of every loopback connection live in this process (see
        // FDS_PER_USER). A size that cannot fit is reported, not attempted: a half-built mesh
        // would leak its sockets into the rest of the run. The memory transport holds no
        // sockets (a node keeps a few files: its database and its API listener).
        let needed = n as u64 * FDS_PER_USER + stores as u64 * 200;
        if cfg.transport == SimTransport::Tcp && needed > fd_limit {
            tracing::warn!(
                n,
                needed,
                fd_limit,
                "mesh size does not fit the open-file limit"
            );
            out.insert(
                format!("n{n}"),
                json!({
                    "error": format!(
                        "not attempted: needs about {needed} file descriptors, the limit is {fd_limit} \
                         (raise `ulimit -n` as root, or run fewer sockets per node)"
                    ),
                    "fds_needed_estimate": needed,
                }),
            );
            break;
        }
        let started = Instant::now();
        match run_sim(cfg).await {
            Ok(r) => {
                let log2n = (n as f64).log2();
                let mut v = r.to_json();
                if let Some(m) = v.as_object_mut() {
                    m.insert("log2_n".into(), json!(log2n));
                    m.insert(
                        "dht_requests_per_lookup_over_log2_n".into(),
                        json!(r.dht_lookup_requests_mean / log2n),
                    );
                    m.insert(
                        "rss_mib_per_node".into(),
                        json!(r.rss_bytes_per_node as f64 / (1024.0 * 1024.0)),
                    );
                    m.insert(
                        "store_msgs_max_over_mean".into(),
                        json!(r.store_msgs_max as f64 / r.store_msgs_mean.max(1e-9)),
                    );
                    m.insert("time_to_deliver_s".into(), json!(r.run_s));
                    m.insert("wall_s".into(), json!(started.elapsed().as_secs_f64()));
                    m.insert("outcome_ok".into(), json!(r.check_outcomes().is_ok()));
                }
                out.insert(format!("n{n}"), v);
            }
            Err(e) => {
                tracing::warn!(n, error = %e, "mesh benchmark stopped at this size");
                out.insert(
                    format!("n{n}"),
                    json!({ "error": format!("{e:#}"), "wall_s": started.elapsed().as_secs_f64() }),
                );
                break;
            }
        }
    }
    Ok(Value::Object(out))
}
