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

/// The lines `from` prints, as they come.
fn lines(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
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
    let line = lines(child.stdout.take().unwrap()).recv_timeout(TIMEOUT);
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

#[test]
fn a_flag_beats_its_variable_which_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kith-bootstrap.toml");
    std::fs::write(
        &file,
        "data-dir = \"/from/file\"\nstore = true\nreplication = 2\nmax-blob-bytes = 10\nmax-lifetime = \"3d\"\n",
    )
    .unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&file)
        .args(["--max-blob-bytes", "30"])
        .env("KITH_REPLICATION", "4")
        .env("KITH_MAX_BLOB_BYTES", "20")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    // Flag over variable over file; variable over file; file over default.
    assert!(printed.contains("max_blob_bytes: 30,"), "{printed}");
    assert!(printed.contains("replication: 4,"), "{printed}");
    assert!(printed.contains("max_lifetime_ms: 259200000,"), "{printed}");
    assert!(printed.contains("\"/from/file\""), "{printed}");
}

#[test]
fn an_unknown_key_in_the_config_file_stops_the_peer_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kith-bootstrap.toml");
    std::fs::write(&file, "data-dir = \"/d\"\nmax-lifetme = \"3d\"\n").unwrap();
    let out = bin()
        .args(["run", "--config"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max-lifetme"), "{err}");
}

#[test]
fn logs_are_json_lines_when_asked_and_never_coloured_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let start = |format: &str| {
        bin()
            .arg("run")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .env("KITH_LOG_FORMAT", format)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for format in ["json", "text"] {
        let mut child = start(format);
        let rx = lines(child.stderr.take().unwrap());
        let line = rx.recv_timeout(TIMEOUT);
        let _ = child.kill();
        let _ = child.wait();
        let line = line.unwrap();
        assert!(!line.contains('\u{1b}'), "{line:?}");
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        }
    }
}
