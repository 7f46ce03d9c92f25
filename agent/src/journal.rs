//! Logging to journald with tend's structured fields, over the journal's native protocol.
//!
//! Every field of an event becomes `TEND_<NAME>` (so `commit`, `branch`, `result`, `resource`
//! arrive as TEND_COMMIT, TEND_BRANCH, TEND_RESULT, TEND_RESOURCE), next to MESSAGE, PRIORITY and
//! SYSLOG_IDENTIFIER. A small layer of our own instead of tracing-journald: that crate prefixes
//! event fields with `F_` by default and hard-codes its socket, which also makes it untestable.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

pub const SOCKET: &str = "/run/systemd/journal/socket";
/// Larger datagrams are refused by the journal; messages are cut to stay under it.
const MAX_VALUE: usize = 48 * 1024;

pub struct JournalLayer {
    socket: UnixDatagram,
    path: PathBuf,
}

impl JournalLayer {
    pub fn new(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        Ok(Self {
            socket: UnixDatagram::unbound()?,
            path: path.into(),
        })
    }
}

/// True when stderr is connected to the journal (systemd sets JOURNAL_STREAM for services).
pub fn under_journald() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() && std::path::Path::new(SOCKET).exists()
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, format!("{value:?}"));
    }
}

impl Fields {
    /// Every value is scrubbed of credentials (the journal is readable by the adm group), and
    /// shows control characters other than line breaks and tabs as escapes (`journalctl` prints
    /// messages to a terminal).
    fn push(&mut self, field: &Field, value: String) {
        let value = match tend_roles::redact::scrub(&value) {
            std::borrow::Cow::Owned(clean) => clean,
            std::borrow::Cow::Borrowed(_) => value,
        };
        let value = match tend_roles::printable::printable_text(&value) {
            std::borrow::Cow::Owned(shown) => shown,
            std::borrow::Cow::Borrowed(_) => value,
        };
        if field.name() == "message" {
            self.message = value;
        } else {
            self.fields.push((journal_name(field.name()), value));
        }
    }
}

/// `commit` → `TEND_COMMIT`: upper case, only A–Z, 0–9 and `_`, as the journal requires.
pub fn journal_name(field: &str) -> String {
    let mut n = String::from("TEND_");
    n.extend(field.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    n
}

fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        _ => "7",
    }
}

/// One field in the native protocol: `KEY=value\n`, or the length-prefixed form for values with
/// a newline.
fn put(buf: &mut Vec<u8>, key: &str, value: &str) {
    let value = if value.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        &value[..end]
    } else {
        value
    };
    buf.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        buf.extend_from_slice(value.as_bytes());
    } else {
        buf.push(b'=');
        buf.extend_from_slice(value.as_bytes());
    }
    buf.push(b'\n');
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let mut message = f.message;
        if message.is_empty() {
            for (k, v) in &f.fields {
                let _ = write!(
                    message,
                    "{}={v} ",
                    k.trim_start_matches("TEND_").to_ascii_lowercase()
                );
            }
        }
        let mut buf = Vec::with_capacity(256);
        put(&mut buf, "MESSAGE", &message);
        put(&mut buf, "PRIORITY", priority(event.metadata().level()));
        put(&mut buf, "SYSLOG_IDENTIFIER", "tend");
        for (k, v) in &f.fields {
            put(&mut buf, k, v);
        }
        let _ = self.socket.send_to(&buf, &self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn parse(datagram: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = datagram;
        while !rest.is_empty() {
            let nl = rest.iter().position(|b| *b == b'\n').unwrap();
            let line = &rest[..nl];
            if let Some(eq) = line.iter().position(|b| *b == b'=') {
                out.push((
                    String::from_utf8_lossy(&line[..eq]).into(),
                    String::from_utf8_lossy(&line[eq + 1..]).into(),
                ));
                rest = &rest[nl + 1..];
            } else {
                let key = String::from_utf8_lossy(line).into_owned();
                let len = u64::from_le_bytes(rest[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let value = &rest[nl + 9..nl + 9 + len];
                out.push((key, String::from_utf8_lossy(value).into()));
                rest = &rest[nl + 9 + len + 1..];
            }
        }
        out
    }

    #[test]
    fn events_arrive_with_tend_field_names() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("journal");
        let server = UnixDatagram::bind(&path).unwrap();
        let subscriber = tracing_subscriber::registry().with(JournalLayer::new(&path).unwrap());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                commit = "abc123",
                branch = "canary",
                result = "ok",
                resource = "file /etc/motd",
                "run finished\nsecond line"
            );
        });
        let mut buf = vec![0u8; 65536];
        let len = server.recv(&mut buf).unwrap();
        let fields = parse(&buf[..len]);
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MESSAGE"), Some("run finished\nsecond line"));
        assert_eq!(get("PRIORITY"), Some("4"));
        assert_eq!(get("SYSLOG_IDENTIFIER"), Some("tend"));
        assert_eq!(get("TEND_COMMIT"), Some("abc123"));
        assert_eq!(get("TEND_BRANCH"), Some("canary"));
        assert_eq!(get("TEND_RESULT"), Some("ok"));
        assert_eq!(get("TEND_RESOURCE"), Some("file /etc/motd"));
        assert!(!fields.iter().any(|(k, _)| k.starts_with("F_")));
    }

    /// A package or server name holding ESC reached `journalctl`'s terminal raw.
    #[test]
    fn escape_sequences_in_fields_reach_the_journal_escaped() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("journal");
        let server = UnixDatagram::bind(&path).unwrap();
        let subscriber = tracing_subscriber::registry().with(JournalLayer::new(&path).unwrap());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                resource = "package x\u{1b}]0;owned\u{7}",
                "failed: \u{1b}[2J\nline two"
            );
        });
        let mut buf = vec![0u8; 65536];
        let len = server.recv(&mut buf).unwrap();
        let fields = parse(&buf[..len]);
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("MESSAGE").as_deref(),
            Some("failed: \\x1b[2J\nline two")
        );
        assert_eq!(
            get("TEND_RESOURCE").as_deref(),
            Some("package x\\x1b]0;owned\\x07")
        );
    }

    #[test]
    fn field_names_are_sanitized() {
        assert_eq!(journal_name("dry-run.x"), "TEND_DRY_RUN_X");
    }
}
