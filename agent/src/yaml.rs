//! YAML parsing for every file tend reads, with one set of options.
//!
//! serde-saphyr is the YAML crate: maintained, pure Rust (no C translated by c2rust as in
//! unsafe-libyaml), panic-free on hostile input, with alias-expansion budgets against "billion
//! laughs", and `Spanned<T>` so that semantic errors can name a line, not only syntax errors.
//! We pick YAML 1.2 core semantics on purpose: `yes`/`no`/`on` stay strings (the "Norway
//! problem"), and `0644` stays the string "0644" so file modes mean what people wrote.

use serde::de::DeserializeOwned;

use crate::diag::Diagnostic;

/// The largest YAML file tend accepts. A fleet file is config, not data.
pub const MAX_YAML_BYTES: usize = 4 << 20;

pub fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.leading_zero_numbers_as_strings = true;
    o.with_snippet = false;
    o
}

/// Parses `text` (the content of `file`) into `T`; errors carry file:line.
pub fn parse<T: DeserializeOwned>(file: &str, text: &[u8]) -> Result<T, Diagnostic> {
    if text.len() > MAX_YAML_BYTES {
        return Err(Diagnostic::new(
            file,
            0,
            format!(
                "file is {} bytes, larger than the {} byte limit",
                text.len(),
                MAX_YAML_BYTES
            ),
        )
        .fix("split it, or keep large data in a role's files/ directory"));
    }
    let text = std::str::from_utf8(text).map_err(|e| {
        let line = text[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64
            + 1;
        Diagnostic::new(file, line, "not valid UTF-8").fix("save the file as UTF-8")
    })?;
    if text.trim().is_empty() {
        // An empty file is an empty mapping: `groups/x.yaml` may exist only to name a group.
        return serde_saphyr::from_str_with_options("{}", options()).map_err(|e| error(file, &e));
    }
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| error(file, &e))
}

fn error(file: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let line = e.location().map(|l| l.line()).unwrap_or(0);
    let raw = e.without_snippet().to_string();
    let msg = strip_location(&raw).replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    let (msg, fix) = if msg.starts_with("budget breached: Depth")
        || msg.starts_with("recursion limit exceeded")
    {
        // Not an alias problem: saying so would send the author looking for aliases.
        (
            "YAML nested too deeply (tend bounds nesting, as a stack guard)".to_string(),
            "flatten the structure: fleet YAML needs a few levels, not hundreds",
        )
    } else if msg.starts_with("budget breached") {
        (
            "YAML aliases expand to too much data (tend bounds alias expansion)".to_string(),
            "write the data out instead of nesting aliases",
        )
    } else if msg.starts_with("unknown field") {
        (
            msg,
            "remove the key or correct its spelling; the expected keys are listed",
        )
    } else if msg.starts_with("duplicate mapping key") {
        (msg, "keep one of the two keys")
    } else if msg.contains("expected sequence") {
        (msg, "write a list: `[a, b]`, or one `- item` per line")
    } else if msg.contains("expected mapping") || msg.contains("expected a map") {
        (msg, "write a mapping of `key: value` lines")
    } else {
        (
            msg,
            "check the indentation, quoting and brackets near this line",
        )
    };
    Diagnostic::new(file, line, msg).fix(fix)
}

/// serde-saphyr ends messages with " at line L, column C"; tend prints the line itself.
fn strip_location(msg: &str) -> String {
    if let Some(i) = msg.rfind(" at line ") {
        let tail = &msg[i + " at line ".len()..];
        let is_position = tail
            .split(", column ")
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_position && tail.contains(", column ") {
            return msg[..i].to_string();
        }
    }
    msg.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Any {
        a: serde_json::Value,
    }

    #[test]
    fn alias_bomb_is_refused_with_a_readable_message() {
        let bomb = "x: &x [1,1,1,1,1,1,1,1,1,1]\nb: &b [*x,*x,*x,*x,*x,*x,*x,*x,*x,*x]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\na: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n";
        let d = parse::<serde_json::Value>("groups/x.yaml", bomb.as_bytes()).unwrap_err();
        assert!(
            d.message
                .starts_with("YAML aliases expand to too much data"),
            "{d}"
        );
        assert!(d.fix.is_some());
    }

    /// Deep block nesting was reported as an alias bomb, which sent authors looking for aliases.
    #[test]
    fn deep_nesting_is_not_reported_as_an_alias_bomb() {
        let block: String = (0..2000)
            .map(|i| format!("{}- \n", "  ".repeat(i)))
            .collect();
        let flow = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let map = format!("a: {}1{}\n", "{b: ".repeat(20_000), "}".repeat(20_000));
        for text in [block, flow, map] {
            let d = parse::<serde_json::Value>("groups/x.yaml", text.as_bytes()).unwrap_err();
            assert!(d.message.starts_with("YAML nested too deeply"), "{d}");
        }
    }

    #[test]
    fn syntax_errors_name_the_line_and_suggest_a_fix() {
        let d = parse::<Any>("fleet.yaml", b"a: [1,\n  2\n").unwrap_err();
        assert!(d.line >= 1 && d.fix.is_some(), "{d}");
        assert!(!d.message.contains(" at line "), "{d}");
    }

    #[test]
    fn yes_and_leading_zero_numbers_stay_strings() {
        let v: serde_json::Value = parse("f.yaml", b"a: yes\nb: 0644\nc: true\n").unwrap();
        assert_eq!(v, serde_json::json!({"a": "yes", "b": "0644", "c": true}));
    }
}
