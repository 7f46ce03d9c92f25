//! Logging: structured fields to journald when running under systemd, human lines on stderr
//! otherwise. `TEND_LOG` takes a level, or per-target levels (`debug`, `info,tend_roles=debug`).
//!
//! The filter is tracing-subscriber's `Targets`, not `EnvFilter`: EnvFilter's span and field
//! matching needs a regex engine that would add a few hundred kilobytes to a device binary.
//!
//! Whatever tend prints, on stderr or stdout, goes through [`Scrubbed`], so no credential reaches
//! a terminal, a log collector or a CI log, and no control character but a line break or a tab
//! does (an ESC from a package's output or a server could drive the terminal). The journal layer
//! does the same to its own fields.

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
        .with_writer(|| Scrubbed::keeping_escapes(std::io::stderr()))
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter(default)))
        .try_init();
}

/// A writer that passes each line through [`tend_roles::redact::scrub`] before `inner` sees it.
/// A partial line waits for its end (or for `flush` or drop), so a URL is never cut in two.
pub struct Scrubbed<W: std::io::Write> {
    inner: W,
    pending: Vec<u8>,
    /// Escape control characters other than line breaks and tabs.
    escape: bool,
}

impl<W: std::io::Write> Scrubbed<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            escape: true,
        }
    }

    /// For tracing's own formatter: it escapes the values it prints and colours a terminal with
    /// escape sequences of its own, which must pass.
    pub fn keeping_escapes(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            escape: false,
        }
    }

    fn emit(&mut self, upto: usize) -> std::io::Result<()> {
        let line: Vec<u8> = self.pending.drain(..upto).collect();
        let text = String::from_utf8_lossy(&line);
        let clean = tend_roles::redact::scrub(&text);
        if self.escape {
            let shown = tend_roles::printable::printable_text(&clean);
            self.inner.write_all(shown.as_bytes())
        } else {
            self.inner.write_all(clean.as_bytes())
        }
    }
}

impl<W: std::io::Write> std::io::Write for Scrubbed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(nl) = self.pending.iter().rposition(|b| *b == b'\n') {
            self.emit(nl + 1)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let all = self.pending.len();
        self.emit(all)?;
        self.inner.flush()
    }
}

impl<W: std::io::Write> Drop for Scrubbed<W> {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn printed_lines_lose_url_credentials_even_when_written_in_pieces() {
        let mut got = Vec::new();
        {
            let mut w = Scrubbed::new(&mut got);
            write!(w, "fetching from https://deploy:tok").unwrap();
            writeln!(w, "en-1@git.lan/fleet.git").unwrap();
            write!(w, "tail http://u:p@h").unwrap();
        }
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "fetching from https://deploy:***@git.lan/fleet.git\ntail http://u:***@h"
        );
    }

    /// A line tend prints (a change line, an error with a package's output) carried ESC
    /// sequences to the terminal.
    #[test]
    fn printed_lines_show_control_characters_as_escapes_but_keep_line_breaks() {
        let mut got = Vec::new();
        {
            let mut w = Scrubbed::new(&mut got);
            writeln!(w, "failed package x: \u{1b}[31mred\tcol").unwrap();
            write!(w, "second \u{9b}1m").unwrap();
        }
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "failed package x: \\x1b[31mred\tcol\nsecond \\u{9b}1m"
        );
        let mut kept = Vec::new();
        writeln!(
            Scrubbed::keeping_escapes(&mut kept),
            "\u{1b}[1mWARN\u{1b}[0m"
        )
        .unwrap();
        assert_eq!(kept, b"\x1b[1mWARN\x1b[0m\n");
    }
}
