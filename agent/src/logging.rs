//! Logging: structured fields to journald when running under systemd, human lines on stderr
//! otherwise. `TEND_LOG` takes a level, or per-target levels (`debug`, `info,tend_roles=debug`).
//!
//! The filter is tracing-subscriber's `Targets`, not `EnvFilter`: EnvFilter's span and field
//! matching needs a regex engine that would add a few hundred kilobytes to a device binary.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::journal::{under_journald, JournalLayer, SOCKET};

pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = |default: &str| {
        std::env::var("TEND_LOG")
            .ok()
            .and_then(|v| v.parse::<Targets>().ok())
            .unwrap_or_else(|| default.parse().expect("a level is a valid filter"))
    };
    if under_journald() {
        if let Ok(journal) = JournalLayer::new(SOCKET) {
            // Under systemd the journal gets info and up regardless of -v: it is the record.
            let _ = tracing_subscriber::registry()
                .with(journal.with_filter(filter("info")))
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
        .with(fmt.with_filter(filter(default)))
        .try_init();
}
