//! The web app in a real browser: a local mesh (three store peers, alice and bob) in this
//! process, and `tests/browser/chat.mjs` driving the system Chromium through
//! `playwright-core` against alice's and bob's pages: a message goes out, shows up live on
//! the other page, is read, the sender's page turns its ticks blue, and an image bob sends
//! appears in alice's chat. Screenshots land in `target/browser/`.
//!
//! Needs `node`, Chromium (`/usr/bin/chromium`, or `KITH_CHROMIUM`) and
//! `tests/browser/node_modules` (`npm ci --prefix tests/browser`); `.ci/run` installs them.
//! Without them the test fails and says what is missing, unless `KITH_SKIP_BROWSER=1`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use kith_node::mesh::{Mesh, MeshConfig, MeshOptions};
use kith_tests::{init_logging, POLL_INTERVAL};

/// How long the whole browser script may take (it bounds each of its own waits too).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

/// Heartbeat of the mesh's users: short, so presence shows within the script's waits.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The users' largest media file: small, so the script can show the "too large" error with a
/// file of a few MiB (`KITH_MAX_MEDIA` tells it the limit).
const MAX_MEDIA: u64 = 1024 * 1024;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// What the script needs that does not come with cargo; each missing piece and its remedy.
fn missing_prerequisites(root: &Path, chromium: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        missing.push("`node` (Node.js 18 or newer; Debian: apt-get install -y nodejs npm)".into());
    }
    if !chromium.exists() {
        missing.push(format!(
            "Chromium at {} (Debian: apt-get install -y chromium; or set KITH_CHROMIUM)",
            chromium.display()
        ));
    }
    let playwright = root.join("tests/browser/node_modules/playwright-core/package.json");
    if !playwright.exists() {
        missing.push("playwright-core (npm ci --prefix tests/browser)".into());
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_in_the_browser() -> Result<()> {
    init_logging();
    if std::env::var("KITH_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("browser test skipped: KITH_SKIP_BROWSER=1");
        return Ok(());
    }
    let root = workspace_root();
    let chromium = std::env::var_os("KITH_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let missing = missing_prerequisites(&root, &chromium);
    if !missing.is_empty() {
        bail!(
            "the browser test needs: {}. `bash .ci/run` installs them; \
             set KITH_SKIP_BROWSER=1 to skip this test",
            missing.join("; ")
        );
    }
    let shots = root.join("target/browser");
    std::fs::create_dir_all(&shots).with_context(|| format!("creating {}", shots.display()))?;

    let dir = tempfile::Builder::new()
        .prefix("kith-browser-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mesh = Mesh::start_with(
        MeshConfig {
            dir: dir.path().to_path_buf(),
            stores: 3,
            users: vec!["alice".into(), "bob".into()],
            api_ports: vec![0, 0],
            heartbeat: HEARTBEAT,
        },
        MeshOptions {
            node_tweak: Some(Arc::new(|c: &mut kith_node::Config| {
                c.max_media_bytes = MAX_MEDIA
            })),
            ..MeshOptions::default()
        },
    )
    .await
    .context("starting the mesh")?;
    let outcome = run_script(&mesh, &root, &shots, &chromium).await;
    mesh.shutdown().await;
    outcome
}

/// Runs `chat.mjs` against the mesh's alice and bob; Ok if it exits 0 in time.
async fn run_script(mesh: &Mesh, root: &Path, shots: &Path, chromium: &Path) -> Result<()> {
    let (Some(alice), Some(bob)) = (mesh.user("alice"), mesh.user("bob")) else {
        bail!("the mesh lacks alice or bob");
    };
    let url =
        |n: &kith_node::RunningNode, name| kith_node::web::url(n.api_addr, &n.token, Some(name));
    let log_path = shots.join("chat.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = Command::new("node")
        .arg(root.join("tests/browser/chat.mjs"))
        .current_dir(root.join("tests/browser"))
        .env("KITH_ALICE_URL", url(alice, "alice"))
        .env("KITH_BOB_URL", url(bob, "bob"))
        .env("KITH_ALICE_ID", alice.user_id().to_string())
        .env("KITH_BOB_ID", bob.user_id().to_string())
        .env("KITH_SCREENSHOTS", shots)
        .env("KITH_CHROMIUM", chromium)
        .env("KITH_MAX_MEDIA", MAX_MEDIA.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("sharing the log file")?)
        .stderr(log)
        .spawn()
        .context("starting `node tests/browser/chat.mjs`")?;

    let deadline = tokio::time::Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the browser script")? {
            break Some(status);
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // Polls the child's exit; the nodes keep running on the runtime's workers meanwhile.
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    match status {
        Some(s) if s.success() => {
            eprintln!("{output}");
            Ok(())
        }
        Some(s) => bail!("the browser script failed ({s}):\n{output}"),
        None => bail!("the browser script did not finish within {SCRIPT_TIMEOUT:?}:\n{output}"),
    }
}
