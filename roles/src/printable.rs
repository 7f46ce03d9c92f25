//! Control characters in names. A name that reaches a terminal or a log raw can forge a line
//! (`\n` followed by `changed file /etc/shadow: created`) or drive the terminal (ESC, CSI).
//!
//! Fleet-repo names are refused at validation ([`crate::spec::ResourceType::check_names`]); names
//! from elsewhere (dpkg, systemd, a server, vars) are printed through [`printable`], which shows
//! each control character as an escape instead.

use std::borrow::Cow;

/// C0 (U+0000–U+001F), DEL (U+007F) and C1 (U+0080–U+009F).
pub fn is_control(c: char) -> bool {
    c.is_control()
}

/// How a control character is shown: `\n`, `\t`, `\r`, `\x1b`, `\u{9b}`.
pub fn escape(c: char) -> String {
    match c {
        '\n' => "\\n".into(),
        '\t' => "\\t".into(),
        '\r' => "\\r".into(),
        c if (c as u32) < 0x80 => format!("\\x{:02x}", c as u32),
        c => format!("\\u{{{:x}}}", c as u32),
    }
}

/// `s` with every control character replaced by its escape; clean text is returned as it is.
pub fn printable(s: &str) -> Cow<'_, str> {
    escape_where(s, is_control)
}

/// [`printable`] for text of several lines (an error with a command's output): line breaks and
/// tabs stay, every other control character is escaped.
pub fn printable_text(s: &str) -> Cow<'_, str> {
    escape_where(s, |c| is_control(c) && c != '\n' && c != '\t')
}

fn escape_where(s: &str, bad: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&escape(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_control(s: &str) -> bool {
        s.bytes().any(|b| b < 0x20 || b == 0x7f)
            || s.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c))
    }

    #[test]
    fn escape_sequences_in_printed_ids_are_escaped() {
        let id = "/tmp/x\u{1b}[2J\u{9b}31m\nchanged file /etc/shadow: created\u{7f}\t\0";
        let shown = printable(id);
        assert!(!raw_control(&shown), "{shown:?}");
        assert_eq!(
            shown,
            "/tmp/x\\x1b[2J\\u{9b}31m\\nchanged file /etc/shadow: created\\x7f\\t\\x00"
        );
        assert!(matches!(printable("/etc/motd"), Cow::Borrowed("/etc/motd")));
        let text = printable_text("apt said:\n\tE: \u{1b}[31mno\u{85}");
        assert_eq!(text, "apt said:\n\tE: \\x1b[31mno\\u{85}");
    }
}
