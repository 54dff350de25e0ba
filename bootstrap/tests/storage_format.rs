//! `kith-bootstrap run --store` refuses a store peer database written by a newer build: it
//! prints the error, naming the version found and the version supported, exits non-zero and
//! leaves the database as it was.

#![allow(clippy::unwrap_used)]

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use kith_bootstrap::format::STORE_PEER_VERSION;
use kith_net::versioned::VERSION_KEY;

/// Bound on how long the refused process may take to exit.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How often the child is polled for its exit.
const POLL: Duration = Duration::from_millis(50);

/// A version no build has written yet.
const FUTURE: u32 = 99;

#[test]
fn kith_bootstrap_run_refuses_a_newer_database_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("mailboxes");
    {
        let db = sled::open(&db_path).unwrap();
        db.insert(VERSION_KEY, &FUTURE.to_be_bytes()).unwrap();
        db.open_tree("envelopes").unwrap().insert("k", "v").unwrap();
        db.flush().unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_kith-bootstrap"))
        .arg("run")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--store", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("kith-bootstrap still running after {TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains(&format!("format version {FUTURE}"))
            && stderr.contains(&format!("versions up to {STORE_PEER_VERSION}")),
        "{stderr}"
    );
    // It listened on nothing: no address was printed.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let db = sled::open(&db_path).unwrap();
    assert_eq!(
        db.get(VERSION_KEY).unwrap().unwrap().as_ref(),
        FUTURE.to_be_bytes()
    );
    assert_eq!(db.open_tree("envelopes").unwrap().len(), 1);
}
