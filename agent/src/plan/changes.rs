//! What one device's desired state changes between two commits.
//!
//! A device's desired state is reduced to one entry per resource (kind and id): its rendered spec
//! and the content it writes, each known by a SHA-256 digest, so comparing 10,000 devices is
//! comparing digests. Only a resource whose digest moved is looked at closely: the spec keys that
//! differ, and for content the lines added and removed, counted once per distinct pair of contents
//! (412 devices getting the same new nginx.conf cost one line diff, not 412).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use similar::{ChangeTag, TextDiff};
use tend_roles::spec::Content;

use crate::fleet::fingerprints::Fingerprint;
use crate::fleet::validate::Validated;

pub type Hash = [u8; 32];

/// Line diffing gives up refining after this long and counts from a coarser, still correct diff.
const DIFF_TIMEOUT: Duration = Duration::from_millis(500);
/// A value longer than this is shown shortened in a change line.
const MAX_VALUE_CHARS: usize = 60;

/// One resource as a commit renders it for one device.
pub struct Entry {
    pub spec: Value,
    /// The content it writes, with its digest.
    pub content: Option<(Hash, Content)>,
    /// What the resource wants, as validation fingerprinted it (its type, rendered spec and every
    /// content it reads): the same fingerprint that tells a device's corrective change from an
    /// intentional one.
    pub digest: Fingerprint,
}

/// A device's desired resources at one commit, by (kind, id).
pub type Snapshot = BTreeMap<(String, String), Entry>;

/// Holds each distinct content once across every device and both commits.
#[derive(Default)]
pub struct Contents(Mutex<HashMap<Hash, Content>>);

impl Contents {
    fn intern(&self, c: &Content) -> (Hash, Content) {
        let hash: Hash = Sha256::digest(c).into();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let kept = map.entry(hash).or_insert_with(|| c.clone()).clone();
        (hash, kept)
    }
}

/// The resources of a rendered device (handlers and checks are not resources and are left out).
pub fn snapshot(v: &Validated, contents: &Contents) -> Snapshot {
    let specs = v.specs.iter().filter(|s| s.handler.is_none());
    let items = v.desired.roles.iter().flat_map(|r| r.items.iter());
    let mut out = Snapshot::new();
    for ((spec, item), fingerprint) in specs.zip(items).zip(&v.fingerprints) {
        let content = item.resource.content().map(|c| contents.intern(&c));
        let key = (item.resource.kind().to_string(), item.resource.id());
        out.insert(
            key,
            Entry {
                spec: spec.spec.clone(),
                content,
                digest: *fingerprint,
            },
        );
    }
    out
}

/// How one spec key changed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Field {
    pub key: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Added,
    Removed,
    Modified,
}

/// One resource that a commit changes on a device.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Change {
    pub kind: String,
    pub id: String,
    pub action: Action,
    /// Spec keys that differ (Modified only; `content` is counted in lines instead).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
    /// Lines of content added and removed; None when the content is the same or not text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<(usize, usize)>,
    /// The content differs but is not UTF-8 text.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub binary: bool,
}

impl Change {
    /// `file /etc/nginx/nginx.conf +3 -1`, `package chromium version 120 → 121`.
    pub fn label(&self) -> String {
        let mut s = format!("{} {}", self.kind, self.id);
        match self.action {
            Action::Added => s.push_str(" added"),
            Action::Removed => s.push_str(" removed"),
            Action::Modified => {}
        }
        let mut parts: Vec<String> = self
            .fields
            .iter()
            .map(|f| format!("{} {} → {}", f.key, shown(&f.before), shown(&f.after)))
            .collect();
        if let Some((added, removed)) = self.lines {
            parts.push(match self.action {
                Action::Modified => format!("+{added} -{removed}"),
                _ => format!("({})", count(added.max(removed), "line")),
            });
        }
        if self.binary {
            parts.push("binary content changed".into());
        }
        if !parts.is_empty() {
            s.push(' ');
            s.push_str(&parts.join(", "));
        }
        s
    }
}

/// `1 line`, `3 lines`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn shown(v: &Option<Value>) -> String {
    let text = match v {
        None => "(unset)".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if text.chars().count() > MAX_VALUE_CHARS {
        let cut: String = text.chars().take(MAX_VALUE_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Line counts per distinct (before, after) content pair.
#[derive(Default)]
pub struct LineCounts(HashMap<(Hash, Hash), Option<(usize, usize)>>);

impl LineCounts {
    /// Lines added and removed from `before` to `after`; None when either is not UTF-8.
    pub fn get(
        &mut self,
        before: Option<&(Hash, Content)>,
        after: Option<&(Hash, Content)>,
    ) -> Option<(usize, usize)> {
        const EMPTY: Hash = [0; 32];
        let key = (
            before.map(|(h, _)| *h).unwrap_or(EMPTY),
            after.map(|(h, _)| *h).unwrap_or(EMPTY),
        );
        *self.0.entry(key).or_insert_with(|| {
            let (old, new) = (text(before)?, text(after)?);
            Some(line_counts(old, new))
        })
    }
}

/// A content as text: "" for none, None when it is not UTF-8.
fn text(c: Option<&(Hash, Content)>) -> Option<&str> {
    match c {
        None => Some(""),
        Some((_, c)) => std::str::from_utf8(c).ok(),
    }
}

/// Lines added and removed by a real line diff.
pub fn line_counts(old: &str, new: &str) -> (usize, usize) {
    let diff = TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(old, new);
    let (mut added, mut removed) = (0, 0);
    for c in diff.iter_all_changes() {
        match c.tag() {
            ChangeTag::Insert => added += 1,
            ChangeTag::Delete => removed += 1,
            ChangeTag::Equal => {}
        }
    }
    (added, removed)
}

/// Every resource that differs between the two snapshots, in (kind, id) order.
pub fn compare(before: &Snapshot, after: &Snapshot, lines: &mut LineCounts) -> Vec<Change> {
    let keys: BTreeSet<&(String, String)> = before.keys().chain(after.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let (b, a) = (before.get(key), after.get(key));
        let action = match (b, a) {
            (Some(b), Some(a)) if b.digest == a.digest => continue,
            (Some(_), Some(_)) => Action::Modified,
            (None, Some(_)) => Action::Added,
            (Some(_), None) => Action::Removed,
            (None, None) => continue,
        };
        let (bc, ac) = (
            b.and_then(|e| e.content.as_ref()),
            a.and_then(|e| e.content.as_ref()),
        );
        let content_moved = bc.map(|c| c.0) != ac.map(|c| c.0);
        let counted = content_moved.then(|| lines.get(bc, ac));
        let fields = match (b, a) {
            (Some(b), Some(a)) => fields(&b.spec, &a.spec, bc.is_some() || ac.is_some()),
            _ => Vec::new(),
        };
        out.push(Change {
            kind: key.0.clone(),
            id: key.1.clone(),
            action,
            fields,
            lines: counted.flatten(),
            binary: matches!(counted, Some(None)),
        });
    }
    out
}

/// The spec keys whose values differ; `content` is left to the line counts when the resource
/// holds content.
fn fields(before: &Value, after: &Value, has_content: bool) -> Vec<Field> {
    let empty = serde_json::Map::new();
    let (b, a) = (
        before.as_object().unwrap_or(&empty),
        after.as_object().unwrap_or(&empty),
    );
    let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    keys.into_iter()
        .filter(|k| !(has_content && k.as_str() == "content"))
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| Field {
            key: k.clone(),
            before: b.get(k).cloned(),
            after: a.get(k).cloned(),
        })
        .collect()
}

/// A content shared by the tests of the plan module.
#[cfg(test)]
pub fn content(text: &str) -> (Hash, Content) {
    let c: Content = std::sync::Arc::from(text.as_bytes());
    (Sha256::digest(&c).into(), c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(spec: Value, text: Option<&str>) -> Entry {
        let content = text.map(content);
        let mut h = Sha256::new();
        h.update(spec.to_string());
        if let Some((c, _)) = &content {
            h.update(c);
        }
        Entry {
            spec,
            content,
            digest: Fingerprint::of(&h.finalize()),
        }
    }

    fn snap(entries: Vec<(&str, &str, Entry)>) -> Snapshot {
        entries
            .into_iter()
            .map(|(k, i, e)| ((k.to_string(), i.to_string()), e))
            .collect()
    }

    #[test]
    fn a_template_change_counts_lines_and_a_version_change_shows_both_values() {
        let before = snap(vec![
            (
                "file",
                "/etc/nginx/nginx.conf",
                entry(
                    json!({"path": "/etc/nginx/nginx.conf", "template": "n.j2"}),
                    Some("a\nb\nc\n"),
                ),
            ),
            (
                "package",
                "chromium",
                entry(json!({"name": "chromium", "version": "120"}), None),
            ),
            ("user", "kiosk", entry(json!({"name": "kiosk"}), None)),
        ]);
        let after = snap(vec![
            (
                "file",
                "/etc/nginx/nginx.conf",
                entry(
                    json!({"path": "/etc/nginx/nginx.conf", "template": "n.j2"}),
                    Some("a\nB\nc\nd\ne\n"),
                ),
            ),
            (
                "package",
                "chromium",
                entry(json!({"name": "chromium", "version": "121"}), None),
            ),
            ("user", "kiosk", entry(json!({"name": "kiosk"}), None)),
            (
                "file",
                "/etc/motd",
                entry(
                    json!({"path": "/etc/motd", "content": "hi\n"}),
                    Some("hi\n"),
                ),
            ),
        ]);
        let labels: Vec<String> = compare(&before, &after, &mut LineCounts::default())
            .iter()
            .map(Change::label)
            .collect();
        assert_eq!(
            labels,
            [
                "file /etc/motd added (1 line)",
                "file /etc/nginx/nginx.conf +3 -1",
                "package chromium version 120 → 121",
            ]
        );
    }

    #[test]
    fn identical_content_pairs_are_diffed_once() {
        let mut lines = LineCounts::default();
        let (a, b) = (content("x\n"), content("y\n"));
        for _ in 0..100 {
            assert_eq!(lines.get(Some(&a), Some(&b)), Some((1, 1)));
        }
        assert_eq!(lines.0.len(), 1);
    }

    #[test]
    fn binary_content_is_reported_without_line_counts() {
        let c1: Content = std::sync::Arc::from(&[0xffu8, 0xfe][..]);
        let c2: Content = std::sync::Arc::from(&[0xffu8, 0x00][..]);
        let e = |c: &Content| Entry {
            spec: json!({"path": "/x", "source": "x.bin"}),
            content: Some((Sha256::digest(c).into(), c.clone())),
            digest: Fingerprint::of(&Sha256::digest(c)),
        };
        let before = snap(vec![("file", "/x", e(&c1))]);
        let after = snap(vec![("file", "/x", e(&c2))]);
        let changes = compare(&before, &after, &mut LineCounts::default());
        assert_eq!(changes[0].label(), "file /x binary content changed");
    }
}
