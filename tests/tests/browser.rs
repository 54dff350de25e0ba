//! The web app in a real browser: a local mesh (three store peers and the users) in this
//! process, and a script in `tests/browser/` driving the system Chromium through
//! `playwright-core` against the users' pages.
//!
//! - `chat.mjs` (alice and bob): a message goes out, shows up live on the other page, is
//!   read, the sender's page turns its ticks blue, and an image bob sends appears in alice's
//!   chat.
//! - `group.mjs` (alice, bob and carol): alice creates a group from the page, her message
//!   shows with her name on bob's and carol's pages, turns blue when both read it and its
//!   message info shows each member's read; a picture bob sends reaches both; alice removes carol, whose page then says she is
//!   no longer a member and does not get alice's next message, which bob gets.
//!
//! - `settings.mjs` (alice and bob): read receipts off leave no blue ticks; both pages show
//!   the same safety number.
//! - `history.mjs` (alice and bob): the unread count in the title and a notification while the
//!   tab is hidden; a picture dropped on the conversation is sent, a text file is refused; the
//!   dark theme; search and jump to an older message; delete for me, still gone after a
//!   reload; one pane at a time at 600 px.
//!
//! Screenshots land in `target/browser/`. With `KITH_DOC_SCREENSHOTS=1`, `history.mjs` also
//! writes `docs/screenshots/light.png` and `dark.png`.
//!
//! Needs `node`, Chromium (`/usr/bin/chromium`, or `KITH_CHROMIUM`) and
//! `tests/browser/node_modules` (`npm ci --prefix tests/browser`); `.ci/run` installs them.
//! Without them the tests fail and say what is missing, unless `KITH_SKIP_BROWSER=1`.

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

/// One browser test at a time: each runs a mesh and a Chromium, and two at once on a small
/// machine would make both slow enough to hit their waits.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the browser tests run: the workspace, the browser and the screenshot directory;
/// `None` when `KITH_SKIP_BROWSER=1`.
struct Setup {
    root: PathBuf,
    chromium: PathBuf,
    shots: PathBuf,
}

/// Checks the prerequisites and makes the screenshot directory.
fn setup() -> Result<Option<Setup>> {
    init_logging();
    if std::env::var("KITH_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("browser test skipped: KITH_SKIP_BROWSER=1");
        return Ok(None);
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
    Ok(Some(Setup {
        root,
        chromium,
        shots,
    }))
}

/// Starts a mesh of three store peers and these users (every pair introduced, with names).
async fn start_mesh(dir: &Path, users: &[&str]) -> Result<Mesh> {
    Mesh::start_with(
        MeshConfig {
            dir: dir.to_path_buf(),
            stores: 3,
            users: users.iter().map(|u| u.to_string()).collect(),
            api_ports: vec![0; users.len()],
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
    .context("starting the mesh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_in_the_browser() -> Result<()> {
    let Some(setup) = setup()? else {
        return Ok(());
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::Builder::new()
        .prefix("kith-browser-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mesh = start_mesh(dir.path(), &["alice", "bob"]).await?;
    let outcome = run_script(&mesh, &setup, "chat", &["alice", "bob"]).await;
    mesh.shutdown().await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_people_share_a_group_in_the_browser() -> Result<()> {
    let Some(setup) = setup()? else {
        return Ok(());
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::Builder::new()
        .prefix("kith-browser-group-")
        .tempdir()
        .context("creating a temporary directory")?;
    let users = ["alice", "bob", "carol"];
    let mesh = start_mesh(dir.path(), &users).await?;
    let outcome = run_script(&mesh, &setup, "group", &users).await;
    mesh.shutdown().await;
    outcome
}

/// Settings and verification (tests/browser/settings.mjs): read receipts off on one side
/// leave no blue ticks on either page; both pages show the same safety number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_verification_in_the_browser() -> Result<()> {
    let Some(setup) = setup()? else {
        return Ok(());
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::Builder::new()
        .prefix("kith-browser-settings-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mesh = start_mesh(dir.path(), &["alice", "bob"]).await?;
    let outcome = run_script(&mesh, &setup, "settings", &["alice", "bob"]).await;
    mesh.shutdown().await;
    outcome
}

/// Search, delete for me, notifications, themes, the narrow layout and drag-and-drop
/// (tests/browser/history.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_delete_and_layout_in_the_browser() -> Result<()> {
    let Some(setup) = setup()? else {
        return Ok(());
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::Builder::new()
        .prefix("kith-browser-history-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mesh = start_mesh(dir.path(), &["alice", "bob"]).await?;
    let outcome = run_script(&mesh, &setup, "history", &["alice", "bob"]).await;
    mesh.shutdown().await;
    outcome
}

/// Runs `tests/browser/<script>.mjs` against the mesh's `users` (each passed as
/// `KITH_<NAME>_URL` and `KITH_<NAME>_ID`); Ok if it exits 0 in time. Its output goes to
/// `target/browser/<script>.log` and is shown either way.
async fn run_script(mesh: &Mesh, setup: &Setup, script: &str, users: &[&str]) -> Result<()> {
    let log_path = setup.shots.join(format!("{script}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut command = Command::new("node");
    command
        .arg(setup.root.join(format!("tests/browser/{script}.mjs")))
        .current_dir(setup.root.join("tests/browser"));
    for name in users {
        let Some(node) = mesh.user(name) else {
            bail!("the mesh lacks {name}");
        };
        let upper = name.to_uppercase();
        command
            .env(
                format!("KITH_{upper}_URL"),
                kith_node::web::url(node.api_addr, &node.token, Some(name)),
            )
            .env(format!("KITH_{upper}_ID"), node.user_id().to_string());
    }
    let mut child = command
        .env("KITH_SCREENSHOTS", &setup.shots)
        .env("KITH_CHROMIUM", &setup.chromium)
        .env("KITH_MAX_MEDIA", MAX_MEDIA.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("sharing the log file")?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting `node tests/browser/{script}.mjs`"))?;

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
        Some(s) => bail!("the browser script {script}.mjs failed ({s}):\n{output}"),
        None => bail!(
            "the browser script {script}.mjs did not finish within {SCRIPT_TIMEOUT:?}:\n{output}"
        ),
    }
}
