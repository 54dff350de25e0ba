//! The `kith-bootstrap` command line as an operator uses it. Having an integration test also
//! makes `cargo test --workspace` build the `kith-bootstrap` binary, which the fault campaign
//! in `kith-tests` runs.

#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

/// Longest wait for the peer to print its address.
const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kith-bootstrap"))
}

fn id(dir: &std::path::Path) -> String {
    let out = bin().arg("id").arg("--data-dir").arg(dir).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn id_prints_the_same_peer_id_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = id(dir.path());
    assert!(first.starts_with("12D3KooW"), "{first}");
    assert_eq!(id(dir.path()), first);
}

#[test]
fn run_prints_its_listen_address_with_its_peer_id() {
    let dir = tempfile::tempdir().unwrap();
    let peer = id(dir.path());
    let mut child = bin()
        .arg("run")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--store"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(TIMEOUT);
    let _ = child.kill();
    let _ = child.wait();
    let line = line.unwrap();
    assert!(line.starts_with("/ip4/127.0.0.1/tcp/"), "{line}");
    assert!(line.ends_with(&format!("/p2p/{peer}")), "{line}");
}

#[test]
fn an_unknown_flag_exits_non_zero() {
    let out = bin().args(["run", "--no-such-flag"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}
