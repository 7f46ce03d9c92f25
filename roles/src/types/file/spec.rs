//! The `file` spec's values, read one key at a time so that every error names the key it is about:
//! the content key, the path, the mode, owner and group.

use std::path::{Component, Path};

use serde_json::Value;

use crate::error::SpecError;
use crate::spec::{Content, Sources};

/// Reads the one content key now, so a missing source fails the build before anything changes.
pub(super) fn read_content(
    given: Vec<(&str, Value)>,
    sources: &dyn Sources,
) -> Result<Content, SpecError> {
    if let [(first, _), (second, _), ..] = given.as_slice() {
        return Err(SpecError::at_key(
            second,
            format!("`{first}` and `{second}` both give the file's content; keep exactly one of content, source, template"),
        ));
    }
    let Some((key, value)) = given.into_iter().next() else {
        return Err(SpecError::new(
            "a file needs its content: set one of `content:` (inline text), `source:` (a file from the role's \
             files/) or `template:` (a template from the role's templates/); for a directory or link set `state:`",
        ));
    };
    match key {
        "content" => sources
            .content(text(key, Some(value))?.unwrap_or_default().into_bytes())
            .map_err(|e| SpecError::at_key(key, e)),
        "source" => {
            let name = source_name(key, value)?;
            sources
                .file(&name)
                .map_err(|e| SpecError::at_key(key, format!("source `{name}`: {e}")))
        }
        _ => {
            let name = source_name(key, value)?;
            sources
                .template(&name)
                .map_err(|e| SpecError::at_key(key, format!("template `{name}`: {e}")))
        }
    }
}

pub(super) fn source_name(key: &str, v: Value) -> Result<String, SpecError> {
    text(key, Some(v))?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| {
            SpecError::at_key(
                key,
                format!("`{key}` is empty; give a file name relative to the role"),
            )
        })
}

/// A string value; numbers and booleans are refused rather than guessed at.
pub(super) fn text(key: &str, v: Option<Value>) -> Result<Option<String>, SpecError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(SpecError::at_key(
            key,
            format!("`{key}` must be text, not `{other}`; quote it"),
        )),
    }
}

/// Absolute, no `..` (a fleet repo must not be able to climb out of what it names), normalised.
pub(super) fn check_path(raw: &str) -> Result<String, SpecError> {
    let err = |why: &str| SpecError::at_key("path", format!("file path `{raw}` {why}"));
    if raw.contains('\0') {
        return Err(err("contains a NUL character"));
    }
    let p = Path::new(raw);
    if !p.is_absolute() {
        return Err(err("must be absolute, e.g. /etc/motd"));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                return Err(err("must not contain `..`; write the path it means"))
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        return Err(err(
            "names the root directory itself, which tend does not manage as a file",
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// An octal mode: "0644", "644", "4755", or a YAML number written the same way (its digits are read
/// as octal, so `mode: 644` and `mode: 0644` both mean rw-r--r--).
pub(super) fn parse_mode(v: &Value) -> Result<u32, SpecError> {
    let digits = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        other => {
            return Err(SpecError::at_key(
                "mode",
                format!("mode `{other}` is not an octal mode; write it like \"0644\""),
            ))
        }
    };
    let bare = digits.strip_prefix("0o").unwrap_or(&digits);
    // "00644" is still 0644; five significant digits are not a mode.
    let bare = match bare.strip_prefix('0') {
        Some(rest) if bare.len() > 4 => rest,
        _ => bare,
    };
    let bad = |why: &str| {
        let fix = "write it as octal digits, quoted, like \"0644\" or \"0755\"";
        Err(SpecError::at_key(
            "mode",
            format!("mode `{digits}` {why}; {fix}"),
        ))
    };
    if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_digit()) {
        return bad("is not an octal mode (symbolic modes like u=rw are not supported)");
    }
    if bare.len() > 4 {
        return bad("has more than four octal digits");
    }
    if bare.bytes().any(|b| b == b'8' || b == b'9') {
        return bad("has an 8 or 9, which octal has not");
    }
    u32::from_str_radix(bare, 8).or_else(|e| bad(&e.to_string()))
}

/// A user or group: a name, or a number (YAML may give it as an integer).
pub(super) fn account(key: &str, v: Option<Value>) -> Result<Option<String>, SpecError> {
    let name = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) => {
            n.to_string()
        }
        Some(other) => {
            return Err(SpecError::at_key(
                key,
                format!("`{key}` must be a name or a numeric id, not `{other}`"),
            ))
        }
    };
    if name.is_empty() || name.contains(|c: char| c == ':' || c.is_whitespace()) {
        return Err(SpecError::at_key(
            key,
            format!("`{key}` `{name}` is not a valid name: it is empty or has a colon or space"),
        ));
    }
    Ok(Some(name))
}
