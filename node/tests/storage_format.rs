//! `kith` refuses a database written by a newer build: `kith run` and `kith init` print the
//! error, naming the version found and the version supported, and exit non-zero, leaving the
//! database as it was.

#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use kith_node::{store::format::NODE_VERSION, versioned::VERSION_KEY};

/// Bound on how long the refused process may take to exit.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How often the child is polled for its exit.
const POLL: Duration = Duration::from_millis(50);

/// A version no build has written yet.
const FUTURE: u32 = 99;

/// Runs `kith` with `args` on `data_dir` and waits (bounded) for it to exit.
fn kith(data_dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kith"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--api", "127.0.0.1:0"])
        .args(args)
        .env_remove("KITH_BOOTSTRAP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "kith {args:?} still running after {TIMEOUT:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(POLL);
    }
    child.wait_with_output().unwrap()
}

/// Opens the database at `path` once the process that last had it open (or this process's
/// previous handle, whose flusher thread ends a little later) has let go of its lock.
fn open_released(path: &std::path::Path) -> sled::Db {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if Instant::now() >= deadline => panic!("{} stays locked: {e}", path.display()),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

#[test]
fn kith_run_and_init_refuse_a_newer_database_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("alice");
    kith_node::run::init(&data).unwrap();
    let db_path = data.join(kith_node::run::DB_DIR);
    {
        let db = open_released(&db_path);
        db.insert(VERSION_KEY, &FUTURE.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    for args in [&["run", "--listen", "/ip4/127.0.0.1/tcp/0"][..], &["init"]] {
        let out = kith(&data, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(
            stderr.contains(&format!("format version {FUTURE}"))
                && stderr.contains(&format!("versions up to {NODE_VERSION}")),
            "{args:?}: {stderr}"
        );
    }
    let db = open_released(&db_path);
    assert_eq!(
        db.get(VERSION_KEY).unwrap().unwrap().as_ref(),
        FUTURE.to_be_bytes()
    );
    assert!(!db.open_tree("meta").unwrap().is_empty());
}
