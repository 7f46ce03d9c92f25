//! Server bytes as tend shows them in an error, a log line or a report.
//!
//! Whatever a server sends may end up in a message (a bad header, a proxy's answer, a remote
//! error). Copied whole, 64 KiB of it would land in every log line, `git.refused` and
//! `errors[]`, and an ESC or a newline in it could forge lines on a terminal or in the journal.
//! So every server-supplied byte string that reaches an error goes through [`quote`]: at most
//! [`SHOWN`] bytes, and every byte outside printable ASCII written as `\xNN`.

/// How many bytes of a server's answer an error shows.
pub const SHOWN: usize = 200;

/// `bytes` truncated to [`SHOWN`] and escaped (see the module documentation).
pub fn quote(bytes: &[u8]) -> String {
    bounded(bytes, SHOWN)
}

/// [`quote`] with another bound, for a message composed of already quoted parts. The escaping
/// leaves printable ASCII (backslash included) as it is, so quoting twice changes nothing.
pub fn bounded(bytes: &[u8], limit: usize) -> String {
    let mut out = String::with_capacity(bytes.len().min(limit) + 16);
    for &b in bytes.iter().take(limit) {
        if (0x20..0x7f).contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if bytes.len() > limit {
        out.push_str(&format!("... ({} bytes in all)", bytes.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_non_ascii_bytes_are_escaped() {
        assert_eq!(
            quote(b"ok \x1b[2J\r\nline\xff"),
            "ok \\x1b[2J\\x0d\\x0aline\\xff"
        );
        assert_eq!(quote("é".as_bytes()), "\\xc3\\xa9");
        assert_eq!(quote(b"a\\b"), "a\\b");
    }

    #[test]
    fn long_answers_are_cut_and_say_how_long_they_were() {
        let q = quote(&vec![b'A'; 65536]);
        assert!(q.starts_with(&"A".repeat(SHOWN)), "{q}");
        assert!(q.ends_with("... (65536 bytes in all)"), "{q}");
        assert!(q.len() < SHOWN + 40);
    }

    #[test]
    fn quoting_a_quoted_message_changes_nothing() {
        let once = quote(b"bad \x00 header");
        assert_eq!(bounded(once.as_bytes(), 1000), once);
    }
}
