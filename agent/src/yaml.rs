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
    let mut msg = e.without_snippet().to_string();
    // serde-saphyr appends " at line L, column C"; we print the line ourselves.
    if let Some(i) = msg.rfind(" at line ") {
        msg.truncate(i);
    }
    let fix = if msg.starts_with("unknown field") {
        Some("remove the key or correct its spelling; the expected keys are listed above")
    } else if msg.starts_with("duplicate mapping key") {
        Some("keep one of the two keys")
    } else {
        None
    };
    let msg = msg.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    let d = Diagnostic::new(file, line, msg);
    match fix {
        Some(f) => d.fix(f),
        None => d,
    }
}
