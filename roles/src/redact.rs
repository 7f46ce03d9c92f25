//! Secret redaction. Every string that leaves tend (logs, diffs, reports) passes through here, so a
//! var declared `secret` never shows up in clear, whatever template or command it ended up in.
//!
//! Credentials are the other thing that must never leave: [`scrub`] is what every writer (logs,
//! the journal, stdout, report.json and its history, metrics, inventory, sd-notify) passes its
//! text through. It hides the password part of any `scheme://user:pass@` in the text, whoever
//! wrote it (tend, a server's error message, a proxy URL), and every [`Secret`] the process holds,
//! verbatim, in case a server echoes one back.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

pub const REDACTED: &str = "<redacted>";
/// What stands for a credential in a URL.
pub const HIDDEN: &str = "***";

/// Secret values of this process, as [`Secret::new`] registered them; read by [`scrub`].
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// A credential. Its value is reachable only through [`Secret::expose`], which only a transport
/// calls; `Debug` prints `<redacted>` and there is no `Display`, so no format string leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Registers the value with [`scrub`] too (values shorter than 3 characters are not: hiding
    /// every "1" would garble messages and protect nothing).
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        if value.len() >= 3 {
            let mut all = SECRETS.write().unwrap_or_else(|e| e.into_inner());
            if !all.contains(&value) {
                all.push(value.clone());
                all.sort_by_key(|s| std::cmp::Reverse(s.len()));
            }
        }
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// `text` with URL credentials hidden and no registered secret left in it.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = url_userinfo(text);
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = Cow::Owned(out.replace(s.as_str(), HIDDEN));
        }
    }
    out
}

/// [`scrub`] for serialized JSON, where a secret may stand escaped (`"` as `\"`); the replacement
/// stays inside the string it was found in, so the document remains valid.
pub fn scrub_json(json: &str) -> Cow<'_, str> {
    JsonScrubber::new().scrub(json)
}

/// [`scrub_json`] for many pieces of one document (report.json compared line by line): the
/// registered secrets and their escaped forms are looked up once, not once per piece.
pub struct JsonScrubber {
    /// Each secret as it is, then as it stands inside a JSON string.
    forms: Vec<String>,
}

impl JsonScrubber {
    pub fn new() -> Self {
        let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
        let mut forms = Vec::new();
        for s in secrets.iter() {
            let quoted = serde_json::to_string(s).unwrap_or_default();
            let escaped = &quoted[1..quoted.len().saturating_sub(1).max(1)];
            forms.extend([s.clone(), escaped.to_string()]);
        }
        Self { forms }
    }

    pub fn scrub<'a>(&self, json: &'a str) -> Cow<'a, str> {
        let mut out = url_userinfo(json);
        for form in &self.forms {
            if !form.is_empty() && out.contains(form.as_str()) {
                out = Cow::Owned(out.replace(form.as_str(), HIDDEN));
            }
        }
        out
    }
}

impl Default for JsonScrubber {
    fn default() -> Self {
        Self::new()
    }
}

/// Hides the credential of every `scheme://userinfo@` in `text`: `user:pass` becomes
/// `user:***`, and a lone user (a token, as forges take it) becomes `***`, except for ssh, whose
/// user is a login name, not a secret.
pub fn url_userinfo(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut done = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let sep = from + found;
        let start = sep + 3;
        let rest = &text[start..];
        let end = rest
            .find(|c: char| "/?#\"'<>`()[]{} ".contains(c) || c.is_whitespace() || c.is_control())
            .unwrap_or(rest.len());
        from = start + end;
        let Some(at) = rest[..end].rfind('@') else {
            continue;
        };
        let userinfo = &rest[..at];
        let scheme: String = text[..sep]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || "+.-".contains(*c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let hidden = match userinfo.split_once(':') {
            Some((user, pass)) if pass != HIDDEN => format!("{user}:{HIDDEN}"),
            None if !userinfo.is_empty()
                && userinfo != HIDDEN
                && !scheme.to_ascii_lowercase().contains("ssh") =>
            {
                HIDDEN.to_string()
            }
            _ => continue,
        };
        out.push_str(&text[done..start]);
        out.push_str(&hidden);
        done = start + at;
    }
    if done == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[done..]);
    Cow::Owned(out)
}

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
    fn url_credentials_are_hidden_and_the_rest_is_kept() {
        let cases = [
            (
                "fetching from https://deploy:tok3n@git.lan/fleet.git failed",
                "fetching from https://deploy:***@git.lan/fleet.git failed",
            ),
            ("https://tok3n@git.lan/x", "https://***@git.lan/x"),
            (
                "ssh://git@git.lan:2222/fleet",
                "ssh://git@git.lan:2222/fleet",
            ),
            ("ssh://git:pw@git.lan/x", "ssh://git:***@git.lan/x"),
            (
                "proxy http://u:p@proxy:3128",
                "proxy http://u:***@proxy:3128",
            ),
            (
                "mail me@host, https://host/a@b",
                "mail me@host, https://host/a@b",
            ),
            (
                "\"https://a:b@h\" and http://c:d@i",
                "\"https://a:***@h\" and http://c:***@i",
            ),
            ("already https://a:***@h", "already https://a:***@h"),
        ];
        for (text, want) in cases {
            assert_eq!(url_userinfo(text), want, "{text}");
        }
        assert!(matches!(url_userinfo("https://h/x"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_secret_is_scrubbed_verbatim_and_never_printed() {
        let s = Secret::new("s3cr3t-value-xyz");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(
            scrub("the server says: bad token s3cr3t-value-xyz"),
            "the server says: bad token ***"
        );
        assert_eq!(s.expose(), "s3cr3t-value-xyz");
        Secret::new("quo\"te-secret");
        let json = serde_json::to_string(&["quo\"te-secret", "https://u:p@h/x"]).unwrap();
        let clean = scrub_json(&json);
        assert_eq!(clean, r#"["***","https://u:***@h/x"]"#);
    }

    #[test]
    fn touches_finds_secret_bytes() {
        let r = Redactor::new(["s3cret".to_string()]);
        assert!(r.touches(b"pw=s3cret\n"));
        assert!(!r.touches(b"pw=s3cre\n"));
    }
}
