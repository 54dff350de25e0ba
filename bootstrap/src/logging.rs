//! How `kith-bootstrap` logs: to stderr, filtered by `RUST_LOG` (default `info`), as text for
//! a person or as one JSON object per line for a log collector (`--log-format json`). Colour
//! codes go only to a terminal: in a journal or a container log they are noise that breaks
//! searches. Kept out of `main.rs` so the choices are tested.

use std::io::IsTerminal;

use serde::Deserialize;
use tracing::Subscriber;
use tracing_subscriber::{
    fmt::MakeWriter,
    util::{SubscriberInitExt, TryInitError},
    EnvFilter,
};

/// The shape of each log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields`, `target`.
    Json,
}

/// Installs the process's logger: `format` on stderr, filtered by `RUST_LOG`.
pub fn init(format: LogFormat) -> Result<(), TryInitError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // `try_init` also routes the `log` crate's records (sled's) into the same lines.
    subscriber(format, filter, ansi, std::io::stderr).try_init()
}

/// A logger writing `format` lines to `writer`, colour codes only if `ansi`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(builder.json().with_ansi(false).finish()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Everything logged, for the test to read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_one(format: LogFormat, ansi: bool) -> String {
        let out = Captured::default();
        let sink = out.clone();
        let sub = subscriber(format, EnvFilter::new("info"), ansi, move || sink.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::debug!("filtered out");
            tracing::info!(peer = "12D3KooW", "bootstrap peer started");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_lines_parse_and_carry_the_fields() {
        let out = log_one(LogFormat::Json, true);
        assert_eq!(out.lines().count(), 1, "{out}");
        let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fields"]["message"], "bootstrap peer started");
        assert_eq!(line["fields"]["peer"], "12D3KooW");
    }

    #[test]
    fn text_has_colour_codes_only_when_asked() {
        let plain = log_one(LogFormat::Text, false);
        assert!(plain.contains("bootstrap peer started"), "{plain}");
        assert!(!plain.contains('\u{1b}'), "{plain:?}");
        assert!(!plain.contains("filtered out"), "{plain}");
        assert!(log_one(LogFormat::Text, true).contains('\u{1b}'));
    }
}
