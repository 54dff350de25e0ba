//! Standard output for every command: lines and JSON written so that a reader that stops early
//! (`kith history … | head`) ends the command quietly instead of panicking, as `println!` does
//! on a closed pipe. A closed stdout becomes a [`StdoutClosed`] error, which `main` turns into
//! a clean exit; any other write error is reported.

use std::{
    fmt,
    io::{self, Write},
};

use anyhow::{Context, Result};
use serde::Serialize;

/// Stdout was closed by its reader: nothing more can be shown, and nothing went wrong.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// Writes `bytes` to stdout and flushes them.
pub fn bytes(bytes: &[u8]) -> Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(closed_or_failed)
}

/// Writes one line to stdout (what [`outln!`] calls).
pub fn line(args: fmt::Arguments<'_>) -> Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .map_err(closed_or_failed)
}

/// Writes `value` as pretty JSON and a newline: what `--json` prints.
pub fn json(value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("encoding the answer as JSON")?;
    text.push('\n');
    bytes(text.as_bytes())
}

/// Whether a command ended because its stdout was closed (then it exits successfully).
pub fn is_closed(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<StdoutClosed>())
}

fn closed_or_failed(err: io::Error) -> anyhow::Error {
    if err.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(err).context("writing to standard output")
    }
}

/// `println!` that returns an error instead of panicking when stdout is closed: use it as
/// `outln!("...")?`.
macro_rules! outln {
    () => {
        $crate::cli::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// A line from a long-running command (`kith run`, `kith demo`) that must go on serving even
/// when nobody reads its stdout any more: a failed write is dropped.
macro_rules! sayln {
    () => {
        let _ = $crate::cli::out::line(format_args!(""));
    };
    ($($arg:tt)*) => {
        let _ = $crate::cli::out::line(format_args!($($arg)*));
    };
}
pub(crate) use sayln;
