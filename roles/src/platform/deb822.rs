//! deb822 stanzas ("Field: value" paragraphs), the format of apt's `.sources` files.
//!
//! tend writes `.sources` files and compares them byte for byte, so the writer is canonical (one
//! space after the colon, continuation lines indented by one space, blank value lines as " .")
//! and `parse(write(x)) == x` for every stanza the writer accepts.

use std::fmt;

/// One "Name: value" field. A multi-line value holds its lines joined by '\n', each without the
/// leading space that marks a continuation; an empty line stands for a " ." line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

/// A paragraph: fields in their order. Names compare case-insensitively, as in Debian policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stanza {
    fields: Vec<Field>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl Stanza {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value.as_str())
    }

    /// Sets a field, in place when it exists, at the end otherwise.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .fields
            .iter_mut()
            .find(|f| f.name.eq_ignore_ascii_case(name))
        {
            Some(f) => f.value = value,
            None => self.fields.push(Field {
                name: name.to_string(),
                value,
            }),
        }
    }

    /// Builder form of [`Stanza::set`].
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set(name, value);
        self
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self
            .fields
            .iter()
            .position(|f| f.name.eq_ignore_ascii_case(name))?;
        Some(self.fields.remove(i).value)
    }
}

impl fmt::Display for Stanza {
    /// The canonical text of the stanza, each line ending in '\n'.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for field in &self.fields {
            let mut lines = field.value.split('\n');
            match lines.next() {
                Some("") | None => writeln!(f, "{}:", field.name)?,
                Some(first) => writeln!(f, "{}: {first}", field.name)?,
            }
            for line in lines {
                if line.is_empty() {
                    writeln!(f, " .")?;
                } else {
                    writeln!(f, " {line}")?;
                }
            }
        }
        Ok(())
    }
}

fn is_blank(line: &str) -> bool {
    line.bytes().all(|b| b == b' ' || b == b'\t' || b == b'\r')
}

/// Parses stanzas separated by blank lines; `#` lines are comments and are dropped.
pub fn parse(text: &str) -> Result<Vec<Stanza>, ParseError> {
    let mut out = Vec::new();
    let mut cur = Stanza::new();
    for (n, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        if is_blank(line) {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some(last) = cur.fields.last_mut() else {
                return Err(ParseError {
                    line: n + 1,
                    message: "continuation line before any field".into(),
                });
            };
            let rest = line[1..].trim_end();
            last.value.push('\n');
            if rest != "." {
                last.value.push_str(rest);
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ParseError {
                line: n + 1,
                message: format!("expected 'Name: value', found '{line}'"),
            });
        };
        if name.is_empty()
            || name.starts_with('-')
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ParseError {
                line: n + 1,
                message: format!("'{name}' is not a field name"),
            });
        }
        if cur.get(name).is_some() {
            return Err(ParseError {
                line: n + 1,
                message: format!("field '{name}' appears twice in one stanza"),
            });
        }
        cur.fields.push(Field {
            name: name.to_string(),
            value: value.trim().to_string(),
        });
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Writes stanzas separated by one blank line, after an optional comment (each of its lines gets
/// a "# " prefix).
pub fn write(stanzas: &[Stanza], comment: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(c) = comment {
        for line in c.lines() {
            out.push_str(if line.is_empty() { "#" } else { "# " });
            out.push_str(line);
            out.push('\n');
        }
    }
    for (i, s) in stanzas.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&s.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCES: &str = "\
# Debian's archive
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://127.0.0.1:8080/debian
Suites: ./
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZm9vYmFy
 -----END PGP PUBLIC KEY BLOCK-----
";

    #[test]
    fn parses_fields_in_order_with_multiline_values_and_comments() {
        let s = parse(SOURCES).unwrap();
        assert_eq!(s.len(), 2);
        let names: Vec<&str> = s[0].fields().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["Types", "URIs", "Suites", "Components", "Signed-By"]
        );
        assert_eq!(
            s[0].get("suites"),
            Some("bookworm bookworm-updates"),
            "names are case-insensitive"
        );
        assert_eq!(
            s[1].get("Signed-By"),
            Some("\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZm9vYmFy\n-----END PGP PUBLIC KEY BLOCK-----")
        );
    }

    #[test]
    fn canonical_text_round_trips_byte_for_byte() {
        let body = SOURCES.split_once('\n').unwrap().1;
        let parsed = parse(body).unwrap();
        assert_eq!(write(&parsed, None), body);
        assert_eq!(write(&parsed, Some("Debian's archive")), SOURCES);
    }

    #[test]
    fn written_stanzas_parse_back_equal() {
        let s = Stanza::new()
            .with("Description", "short\nlong line one\n\nafter a blank")
            .with("Empty-First", "\nsecond")
            .with("X", "");
        let text = write(
            &[s.clone(), Stanza::new().with("A", "b")],
            Some("two\n\nparagraphs"),
        );
        assert_eq!(parse(&text).unwrap(), vec![s, Stanza::new().with("A", "b")]);
        assert!(text.starts_with("# two\n#\n# paragraphs\n"), "{text}");
    }

    #[test]
    fn separators_may_be_repeated_or_whitespace_and_crlf_is_accepted() {
        let s = parse("\n\nA: 1\r\n \t\n\n\nB: 2\n  \ttwo\n").unwrap();
        assert_eq!(
            s,
            vec![
                Stanza::new().with("A", "1"),
                Stanza::new().with("B", "2\n \ttwo")
            ]
        );
    }

    #[test]
    fn set_replaces_in_place_and_remove_drops() {
        let mut s = Stanza::new().with("A", "1").with("B", "2");
        s.set("a", "3");
        assert_eq!(write(&[s.clone()], None), "A: 3\nB: 2\n");
        assert_eq!(s.remove("B"), Some("2".into()));
        assert_eq!(s.remove("B"), None);
    }

    #[test]
    fn rejects_malformed_lines_with_their_number() {
        assert_eq!(parse(" orphan\n").unwrap_err().line, 1);
        let e = parse("A: 1\nno colon here\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("no colon here"), "{e}");
        assert!(parse("A: 1\na: 2\n").unwrap_err().message.contains("twice"));
        assert!(parse("-X: 1\n").is_err());
    }
}
