//! Diagnostics for the fleet repo: what is wrong, where (file:line), and how to fix it.
//!
//! Validation collects every diagnostic instead of stopping at the first, so a fleet engineer fixes
//! a broken pull request in one round trip.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Path inside the fleet repo, or on the device for local files.
    pub file: String,
    /// 1-based; 0 when the problem is about the file as a whole.
    pub line: u64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Diagnostic {
    pub fn new(file: impl Into<String>, line: u64, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line,
            message: message.into(),
            fix: None,
        }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)?;
        } else {
            write!(f, "{}: {}", self.file, self.message)?;
        }
        if let Some(fix) = &self.fix {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}

/// Every problem found in one validation pass.
#[derive(Debug, Default, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        if !self.0.contains(&d) {
            self.0.push(d);
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Ok(value) when nothing was found, the collected diagnostics otherwise.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Self(vec![d])
    }
}

/// `::error file=…,line=…,title=…::message` with GitHub's escaping of `%`, CR, LF (and `,` `:` in
/// properties); `title` names the command that found it.
pub fn github_annotation(dir: &std::path::Path, d: &Diagnostic, title: &str) -> String {
    let data = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let prop = |s: &str| data(s).replace(':', "%3A").replace(',', "%2C");
    let file = if d.file.starts_with('/') {
        d.file.clone()
    } else {
        dir.join(&d.file).display().to_string()
    };
    let file = file.trim_start_matches("./").to_string();
    let mut msg = d.message.clone();
    if let Some(fix) = &d.fix {
        msg.push_str(&format!("\nfix: {fix}"));
    }
    let line = if d.line > 0 {
        format!(",line={}", d.line)
    } else {
        String::new()
    };
    format!(
        "::error file={}{line},title={}::{}",
        prop(&file),
        prop(title),
        data(&msg)
    )
}
