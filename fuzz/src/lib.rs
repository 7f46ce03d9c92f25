//! What each fuzz target does with its input, as plain functions: libFuzzer drives them under
//! nightly (`fuzz_targets/`), and `cargo test` replays the committed corpora through them on
//! stable, so a crash found once stays fixed.
//!
//! Every target feeds input a device could be handed by someone else: a fleet repo (YAML, templates,
//! files), dpkg's database and apt's deb822 sources, the allowed_signers file, and a git or
//! Mender server's HTTP responses. Each must end in a
//! value or an error, never a panic, a hang or unbounded memory; where the format has a law (the
//! deb822 writer round-trips, version ordering is antisymmetric) the target checks it too.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use tend_agent::fleet::facts::Facts;
use tend_agent::fleet::render::RoleEnv;
use tend_agent::fleet::validate::{validate, Inputs};
use tend_agent::fleet::vars::Mode;
use tend_agent::source::tree::{check_relative, EntryKind, Tree, TreeError};
use tend_roles::platform::{deb822 as deb822_format, dpkg, version};

/// Separates the files of one fleet input: 0xFF never occurs in UTF-8, so YAML and templates
/// cannot contain it by accident.
pub const FILE_SEPARATOR: u8 = 0xFF;

/// A fleet repo held in memory: files by repo path, directories implied by them.
pub struct MemTree {
    files: BTreeMap<String, Vec<u8>>,
}

impl MemTree {
    /// Reads `path\ncontent` pieces separated by [`FILE_SEPARATOR`]; a piece whose path the
    /// loader would refuse is dropped (the loader's own checks are fuzzed through what it asks).
    pub fn from_input(data: &[u8]) -> MemTree {
        let mut files = BTreeMap::new();
        for piece in data.split(|b| *b == FILE_SEPARATOR) {
            let (path, content) = match piece.iter().position(|b| *b == b'\n') {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => continue,
            };
            let Ok(path) = std::str::from_utf8(path) else {
                continue;
            };
            if check_relative(path).is_ok() && !path.ends_with('/') {
                files.insert(path.to_string(), content.to_vec());
            }
        }
        MemTree { files }
    }

    /// The input that [`MemTree::from_input`] reads back as these files.
    pub fn to_input(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (path, content)) in files.iter().enumerate() {
            if i > 0 {
                out.push(FILE_SEPARATOR);
            }
            out.extend_from_slice(path.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(content);
        }
        out
    }
}

impl Tree for MemTree {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError> {
        check_relative(path)?;
        Ok(self.files.get(path).cloned())
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, EntryKind)>, TreeError> {
        check_relative(dir)?;
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut out: Vec<(String, EntryKind)> = Vec::new();
        for path in self.files.keys() {
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            let entry = match rest.split_once('/') {
                Some((d, _)) => (d.to_string(), EntryKind::Dir),
                None => (rest.to_string(), EntryKind::File),
            };
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
        out.sort();
        Ok(out)
    }

    fn describe(&self) -> String {
        "fuzz input".into()
    }
}

fn facts() -> Facts {
    Facts {
        os_id: "debian".into(),
        os_codename: "bookworm".into(),
        os_version_id: "12".into(),
        architecture: "arm64".into(),
        hostname: "dev1".into(),
        device_id: "dev1".into(),
        tend_version: "fuzz".into(),
        ..Default::default()
    }
}

/// A directory with nothing in it: the device root for vars files, and for allowed_signers.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temp dir"))
        .path()
}

/// The whole loader: fleet.yaml, groups, devices, roles, templates and files, validated and
/// rendered for device `dev1` as a device would.
pub fn fleet_loader(data: &[u8]) {
    let tree: Arc<dyn Tree> = Arc::new(MemTree::from_input(data));
    for mode in [Mode::Device, Mode::Placeholders] {
        let _ = validate(Inputs {
            tree: tree.clone(),
            device_id: "dev1".into(),
            facts: facts(),
            root: scratch(),
            vars_files: Vec::new(),
            mode,
            parsed: None,
            max_desired_bytes: tend_agent::device::config::DEFAULT_MAX_DESIRED_BYTES,
            keep_specs: false,
        });
    }
}

/// One template file (with a second one it may include), and the same text as an inline string.
pub fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let tree = MemTree {
        files: BTreeMap::from([
            ("roles/r/templates/t.j2".to_string(), data.to_vec()),
            (
                "roles/r/templates/inc.j2".to_string(),
                b"{{ site }}-{% include 't.j2' ignore missing %}".to_vec(),
            ),
        ]),
    };
    let env = RoleEnv::new(Arc::new(tree), "r");
    let ctx = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({
        "site": "lab",
        "n": 3,
        "pkgs": ["curl", "jq"],
        "nested": {"a": {"b": [1, 2, {"c": "d"}]}},
        "facts": {"hostname": "dev1", "architecture": "arm64"},
    })));
    let _ = env.template("t.j2", &ctx);
    let _ = env.value(&serde_json::Value::String(text.to_string()), &ctx);
}

/// apt's deb822 sources: whatever parses must write back to text that parses to the same stanzas.
pub fn deb822(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(stanzas) = deb822_format::parse(text) else {
        return;
    };
    let written = deb822_format::write(&stanzas, Some("written by tend"));
    let again = deb822_format::parse(&written)
        .unwrap_or_else(|e| panic!("the writer's output does not parse: {e}\n{written}"));
    assert_eq!(again, stanzas, "write then parse changed the stanzas");
}

/// dpkg's status file, then journal entries (separated by [`FILE_SEPARATOR`]), and the versions
/// found in them, which must order consistently.
pub fn dpkg_status(data: &[u8]) {
    let mut parts = data
        .split(|b| *b == FILE_SEPARATOR)
        .map(String::from_utf8_lossy);
    let status = parts.next().unwrap_or_default();
    let journal: Vec<_> = parts.collect();
    let refs: Vec<&str> = journal.iter().map(|c| c.as_ref()).collect();
    let parsed = dpkg::DpkgStatus::parse(&status, &refs);
    let _ = parsed.interrupted(false);
    let _ = parsed.interrupted(true);
    let _ = parsed.unfinished_names();
    for name in parsed.installed.keys().take(8) {
        let _ = parsed.get(name);
        let _ = parsed.has_config_files(name);
    }
    let versions: Vec<&str> = parsed
        .installed
        .values()
        .map(|p| p.version.as_str())
        .chain(status.lines().filter_map(|l| l.strip_prefix("Version:")))
        .take(16)
        .collect();
    for a in &versions {
        let _ = version::validate_version(a.trim());
        for b in &versions {
            let ab = version::compare_versions(a, b);
            assert_eq!(
                ab,
                version::compare_versions(b, a).reverse(),
                "{a:?} vs {b:?}"
            );
        }
    }
}

/// The allowed_signers file, loaded as `tend run` loads it.
pub fn allowed_signers(data: &[u8]) {
    let path = scratch().join("allowed_signers");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = tend_agent::source::verify::TrustRoots::load(scratch(), Some("/allowed_signers"), None);
}

/// An HTTP response as a server sends it: head, framing and body, as the client reads them. A
/// body that reads to its end holds exactly what its framing said.
pub fn http_response(data: &[u8]) {
    use std::io::Read;
    use tend_agent::net::wire::{read_head, Body, Framing};
    let mut reader = std::io::Cursor::new(data);
    let Ok(head) = read_head(&mut reader) else {
        return;
    };
    let Ok(framing) = Framing::of(&head, "GET") else {
        return;
    };
    let mut body = Vec::new();
    if Body::new(&mut reader, framing)
        .take(1 << 20)
        .read_to_end(&mut body)
        .is_ok()
    {
        if let Framing::Length(n) = framing {
            if n <= 1 << 20 {
                assert_eq!(body.len() as u64, n, "a Length body read to its end");
            }
        }
    }
}

#[cfg(test)]
mod replay;
