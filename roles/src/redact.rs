//! Secret redaction. Every string that leaves tend (logs, diffs, reports) passes through here, so a
//! var declared `secret` never shows up in clear, whatever template or command it ended up in.

use std::sync::Arc;

pub const REDACTED: &str = "<redacted>";

#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    /// Values shorter than 3 characters are not redacted: hiding every "1" or "on" in a diff would
    /// make diffs unreadable and reveal nothing an attacker could not guess.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 3).collect();
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            secrets: Arc::new(secrets),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }

    /// True when `bytes` contain a secret; such content is never shown in a diff at all.
    pub fn touches(&self, bytes: &[u8]) -> bool {
        self.secrets
            .iter()
            .any(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_longest_secret_first() {
        let r = Redactor::new(["token".to_string(), "token-extra".to_string()]);
        assert_eq!(
            r.redact("a token-extra b token"),
            "a <redacted> b <redacted>"
        );
    }

    #[test]
    fn short_values_are_left_alone() {
        let r = Redactor::new(["on".to_string()]);
        assert_eq!(r.redact("turn on"), "turn on");
        assert!(r.is_empty());
    }

    #[test]
    fn touches_finds_secret_bytes() {
        let r = Redactor::new(["s3cret".to_string()]);
        assert!(r.touches(b"pw=s3cret\n"));
        assert!(!r.touches(b"pw=s3cre\n"));
    }
}
