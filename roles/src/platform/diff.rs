//! Content diffs for reports: a unified diff an operator can review, never a leak and never huge.
//!
//! Reports go to logs, journals and dashboards, so a diff is bounded in size and time, binary content
//! is summarised by hash, and content that contains a secret is not shown at all: redacting a diff
//! line by line would still reveal the lines around a secret and its length.

use std::fmt::Write as _;
use std::time::Duration;

use sha2::{Digest, Sha256};
use similar::TextDiff;

use crate::redact::Redactor;

/// The whole diff when either side contains a secret value.
pub const HIDDEN: &str = "content hidden: it contains a secret value";
/// Diff lines shown at most; the rest is counted in a note.
pub const MAX_LINES: usize = 2000;
/// Text larger than this is summarised instead of diffed (diffing is quadratic at worst).
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Line diffing gives up refining after this long and shows a coarser, still correct diff.
const DIFF_TIMEOUT: Duration = Duration::from_millis(500);

/// The diff from `old` (None: nothing there yet) to `new`, for the file at `path`.
/// None when there is nothing to show (same bytes, or both empty).
pub fn content_diff(
    path: &str,
    old: Option<&[u8]>,
    new: &[u8],
    redactor: &Redactor,
) -> Option<String> {
    let old_bytes = old.unwrap_or_default();
    if old_bytes == new {
        return None;
    }
    if redactor.touches(old_bytes) || redactor.touches(new) {
        return Some(HIDDEN.to_string());
    }
    let (Some(old_text), Some(new_text)) = (as_text(old_bytes), as_text(new)) else {
        return Some(format!(
            "binary content differs (sha256 {}→{})",
            side_hash(old),
            short_hash(new)
        ));
    };
    if old_text.len() > MAX_TEXT_BYTES || new_text.len() > MAX_TEXT_BYTES {
        return Some(format!(
            "text content differs, too large to show ({} → {} bytes, sha256 {}→{})",
            old_text.len(),
            new_text.len(),
            side_hash(old),
            short_hash(new)
        ));
    }
    Some(unified(path, old_text, new_text))
}

fn unified(path: &str, old: &str, new: &str) -> String {
    let diff = TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(old, new);
    let mut out = format!("--- {path} (device)\n+++ {path} (desired)\n");
    let mut shown = 0usize;
    let mut left_out = 0usize;
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        for line in hunk.to_string().lines() {
            if shown < MAX_LINES {
                out.push_str(line);
                out.push('\n');
                shown += 1;
            } else {
                left_out += 1;
            }
        }
    }
    if left_out > 0 {
        let _ = writeln!(out, "… diff truncated: {left_out} more lines not shown");
    }
    out
}

/// Text is valid UTF-8 without NUL bytes (what `diff` and `git` also treat as text).
fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

fn side_hash(bytes: Option<&[u8]>) -> String {
    bytes.map(short_hash).unwrap_or_else(|| "none".to_string())
}

/// Enough of the hash to tell versions apart in a report.
fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(8).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Redactor {
        Redactor::default()
    }

    #[test]
    fn text_diff_has_device_and_desired_headers() {
        let d = content_diff("/etc/motd", Some(b"a\nb\nc\n"), b"a\nB\nc\n", &none()).unwrap();
        assert!(
            d.starts_with("--- /etc/motd (device)\n+++ /etc/motd (desired)\n@@"),
            "{d}"
        );
        assert!(d.contains("\n-b\n+B\n"), "{d}");
        assert!(d.contains("\n a\n"), "context lines are kept: {d}");
    }

    #[test]
    fn new_file_diffs_against_nothing() {
        let d = content_diff("/etc/x", None, b"hello\n", &none()).unwrap();
        assert!(d.ends_with("+hello\n"), "{d}");
    }

    #[test]
    fn missing_final_newline_is_visible() {
        let d = content_diff("/x", Some(b"a\n"), b"a", &none()).unwrap();
        assert!(d.contains("No newline at end of file"), "{d}");
    }

    #[test]
    fn equal_or_empty_content_has_no_diff() {
        assert_eq!(content_diff("/x", Some(b"same"), b"same", &none()), None);
        assert_eq!(content_diff("/x", None, b"", &none()), None);
    }

    #[test]
    fn binary_content_is_summarised_by_hash() {
        let d = content_diff("/x", Some(b"\x00\x01"), b"\x00\x02", &none()).unwrap();
        assert!(d.starts_with("binary content differs (sha256 "), "{d}");
        assert_eq!(d.lines().count(), 1);
        let (a, b) = d
            .trim_end_matches(')')
            .rsplit_once(' ')
            .unwrap()
            .1
            .split_once('→')
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        let new = content_diff("/x", None, b"\xff\xfe", &none()).unwrap();
        assert!(new.contains("sha256 none→"), "{new}");
    }

    #[test]
    fn secret_on_either_side_hides_the_whole_diff() {
        let r = Redactor::new(["hunter22".to_string()]);
        assert_eq!(
            content_diff("/x", Some(b"pw=hunter22\n"), b"pw=other\n", &r).unwrap(),
            HIDDEN
        );
        assert_eq!(
            content_diff("/x", Some(b"pw=old\n"), b"pw=hunter22\n", &r).unwrap(),
            HIDDEN
        );
        assert_eq!(
            content_diff("/x", None, b"\x00hunter22", &r).unwrap(),
            HIDDEN
        );
    }

    #[test]
    fn long_diffs_are_truncated_with_a_note() {
        let new: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        let d = content_diff("/x", None, new.as_bytes(), &none()).unwrap();
        let lines: Vec<&str> = d.lines().collect();
        // Two file headers, MAX_LINES diff lines, one note.
        assert_eq!(lines.len(), MAX_LINES + 3);
        assert_eq!(
            *lines.last().unwrap(),
            "… diff truncated: 3001 more lines not shown"
        );
    }

    #[test]
    fn huge_text_is_summarised() {
        let big = vec![b'a'; MAX_TEXT_BYTES + 1];
        let d = content_diff("/x", Some(b"a"), &big, &none()).unwrap();
        assert!(
            d.starts_with("text content differs, too large to show (1 → "),
            "{d}"
        );
    }
}
