//! Ending a test cleanly: what it started stops before its data directory goes, and a test
//! process that hangs anyway fails with a report instead of holding CI until its deadline.
//!
//! Tests end by dropping their nodes and store peers, and a node's tasks hold its sled
//! database. If the temporary directory is deleted while they still run, sled cannot create
//! its blob files there, and a failed blob write leaves sled waiting forever in the flush
//! that dropping the database does (`kith_net::tasks` has the details) — the runtime then
//! never finishes shutting down. So [`stop_from_drop`] stops a node completely from its
//! destructor, before the directory is removed.

use std::{future::Future, io::Write, path::Path, sync::Once, time::Duration};

use tokio::runtime::{Handle, RuntimeFlavor};

/// How long a destructor waits for what it stops.
const DROP_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a test process may run before the watchdog fails it, unless
/// `KITH_TEST_WATCHDOG_SECS` says otherwise. Every test binary takes well under a minute.
const WATCHDOG_DEFAULT: Duration = Duration::from_secs(15 * 60);

/// Runs `stop` to completion from a destructor, for at most [`DROP_STOP_TIMEOUT`]. That
/// needs a multi-thread runtime (the destructor blocks its thread meanwhile); on a
/// current-thread runtime, or outside any, `stop` is dropped unrun — for a node or peer that
/// aborts its tasks, and no task of that runtime runs again before the test's own code does.
pub(crate) fn stop_from_drop(stop: impl Future<Output = ()>) {
    let Ok(handle) = Handle::try_current() else {
        return;
    };
    if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
        return;
    }
    tokio::task::block_in_place(|| {
        handle.block_on(async {
            if tokio::time::timeout(DROP_STOP_TIMEOUT, stop).await.is_err() {
                tracing::warn!("stopping from a destructor took over {DROP_STOP_TIMEOUT:?}");
            }
        })
    });
}

/// Starts, once per process, a thread that fails the process if it is still running after
/// [`WATCHDOG_DEFAULT`] (or `KITH_TEST_WATCHDOG_SECS`): it prints every thread's stack (with
/// gdb, when the machine has it) and exits with status 101, as a failed test does.
pub(crate) fn start_watchdog() {
    static WATCHDOG: Once = Once::new();
    WATCHDOG.call_once(|| {
        let limit = std::env::var("KITH_TEST_WATCHDOG_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(WATCHDOG_DEFAULT);
        let spawned = std::thread::Builder::new()
            .name("test-watchdog".into())
            .spawn(move || {
                // A deadline, not a synchronisation: nothing waits on this thread.
                std::thread::sleep(limit);
                report(&format!(
                    "test watchdog: this test process is still running after {limit:?}; \
                     something hangs. Thread stacks follow if gdb is installed.\n"
                ));
                print_stacks();
                std::process::exit(101);
            });
        if let Err(e) = spawned {
            report(&format!("test watchdog: could not start: {e}\n"));
        }
    });
}

/// Writes to the process's stderr itself: `eprintln!` from a thread a test started is
/// captured with the test's output, and lost when the process exits.
fn report(text: &str) {
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Prints every thread's stack of this process to stderr with gdb, bounded in time. gdb
/// writes to a file, not a pipe: it stops every thread of this process while it works,
/// including the one that would read the pipe.
fn print_stacks() {
    if !Path::new(GDB).exists() {
        return;
    }
    let out = std::env::temp_dir().join(format!("kith-watchdog-{}.txt", std::process::id()));
    let file = match std::fs::File::create(&out) {
        Ok(f) => f,
        Err(e) => return report(&format!("test watchdog: {}: {e}\n", out.display())),
    };
    let pid = std::process::id().to_string();
    let ran = std::process::Command::new("timeout")
        .args(["-s", "KILL", "120", GDB, "-p", &pid, "-batch", "-ex"])
        .arg("thread apply all bt 40")
        .stdin(std::process::Stdio::null())
        .stdout(file)
        .stderr(std::process::Stdio::null())
        .status();
    match (ran, std::fs::read(&out)) {
        (Ok(_), Ok(stacks)) => {
            let _ = std::io::stderr().write_all(&stacks);
        }
        (Err(e), _) | (_, Err(e)) => report(&format!("test watchdog: gdb did not run: {e}\n")),
    }
    let _ = std::fs::remove_file(&out);
}

/// Where Debian puts gdb.
const GDB: &str = "/usr/bin/gdb";
