//! Logging: structured fields to journald when running under systemd, human lines on stderr
//! otherwise. `TEND_LOG` takes a tracing filter (e.g. `debug`).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::journal::{under_journald, JournalLayer, SOCKET};

pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = || EnvFilter::try_from_env("TEND_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    if under_journald() {
        if let Ok(journal) = JournalLayer::new(SOCKET) {
            // Under systemd the journal gets info and up regardless of -v: it is the record.
            let level =
                EnvFilter::try_from_env("TEND_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
            let _ = tracing_subscriber::registry()
                .with(journal.with_filter(level))
                .try_init();
            return;
        }
    }
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .try_init();
}
