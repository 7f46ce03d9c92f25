//! `source.mirrors` and `source.pointer_mirrors` as read from a fragment: a list of URLs, in the
//! order they are tried, checked where it is written so a typo names its file and line.

use std::path::Path;

use serde_saphyr::Spanned;

use crate::diag::Diagnostic;

/// A `source.mirrors`-like list, checked: each entry a URL, none twice.
pub(super) fn checked(
    path: &Path,
    key: &str,
    list: Spanned<Vec<String>>,
) -> Result<Vec<String>, Diagnostic> {
    let line = list.referenced.line();
    let at = |m: String| Diagnostic::new(path.display().to_string(), line, m);
    for (i, url) in list.value.iter().enumerate() {
        let url = url.trim();
        let scp_like = !url.contains("://") && url.contains('@') && url.contains(':');
        if url.is_empty() || !(url.contains("://") || scp_like) {
            return Err(at(format!("source.{key}: '{url}' is not a URL"))
                .fix("write full URLs, e.g. `mirrors: [https://mirror.example.com/fleet.git]`"));
        }
        if list.value[..i].iter().any(|u| u.trim() == url) {
            return Err(at(format!("source.{key}: '{url}' is listed twice"))
                .fix("list each further URL once, in the order they are tried"));
        }
    }
    Ok(list.value.iter().map(|u| u.trim().to_string()).collect())
}
