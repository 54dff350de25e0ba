//! `kith demo`: a whole local mesh in one process, for trying Kith on one machine. It must
//! never touch the user's own data directory.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};

use super::out::sayln;

/// How often the demo's users send presence heartbeats.
const DEMO_HEARTBEAT: Duration = Duration::from_secs(5);

/// `kith demo`: a local mesh in this process (three store peers, alice and bob) until
/// Ctrl-C.
pub async fn demo(dir: Option<PathBuf>, port: u16) -> Result<()> {
    let (dir, temporary) = match dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("kith-demo-{}", std::process::id())),
            true,
        ),
    };
    let ports = if port == 0 {
        vec![0, 0]
    } else {
        vec![port, port.saturating_add(1)]
    };
    sayln!("kith demo: starting 3 store peers and 2 users (alice, bob) on 127.0.0.1 ...");
    let mesh = kith_node::mesh::Mesh::start(kith_node::mesh::MeshConfig {
        dir: dir.clone(),
        stores: 3,
        users: vec!["alice".into(), "bob".into()],
        api_ports: ports,
        heartbeat: DEMO_HEARTBEAT,
    })
    .await
    .context("starting the demo mesh")?;
    let (Some(alice), Some(bob)) = (mesh.user("alice"), mesh.user("bob")) else {
        bail!("demo mesh lacks alice or bob");
    };
    alice
        .node
        .send_text(
            bob.user_id(),
            "Hi Bob! This is Kith: end to end encrypted, no server in between.".into(),
            serde_json::json!({"client": "kith demo"}),
        )
        .await
        .context("sending the first message")?;
    for s in &mesh.stores {
        if let Some(addr) = s.listen_addrs.first() {
            sayln!("store peer   {addr}");
        }
    }
    for (name, n) in &mesh.users {
        sayln!();
        sayln!("{name:<6} user  {}", n.user_id());
        sayln!("       api   http://{}", n.api_addr);
        sayln!("       token {}", n.token);
        sayln!(
            "       web   {}",
            kith_node::web::url(n.api_addr, &n.token, Some(name))
        );
    }
    sayln!();
    sayln!("Open alice's and bob's web addresses in two browser windows side by side and chat.");
    let (a, b) = (alice.api_addr, bob.user_id());
    sayln!();
    sayln!("Try, in another terminal:");
    sayln!(
        "  curl -s -H 'Authorization: Bearer {}' 'http://{a}/v1/conversations/{b}?count=10'",
        alice.token
    );
    sayln!(
        "  kith --api {a} --data-dir {} history {b}",
        dir.join("alice").display()
    );
    sayln!("Ctrl-C stops the demo.");
    super::run::shutdown_signal().await?;
    eprintln!("kith demo: stopping");
    mesh.shutdown().await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
