//! `apt_source`: an apt repository, as a deb822 `.sources` file and the key that signs it.
//!
//! ```yaml
//! - apt_source: tend-test                  # /etc/apt/sources.list.d/tend-test.sources
//!   uris: http://127.0.0.1:8080/debian     # a string or a list
//!   suites: [bookworm]                     # a string or a list
//!   components: [main]                     # omitted when every suite is an exact path ("dists/x/")
//!   types: [deb]                           # default [deb]; deb-src allowed
//!   architectures: [arm64]                 # optional
//!   key: tend-test.asc                     # a keyring from the role's files/ …
//!   key_content: "-----BEGIN PGP …"        # … or inline; exactly one with state present
//!   state: present                         # present (default) | absent
//! ```
//!
//! The key goes to /etc/apt/keyrings/<name>.asc when ASCII-armored, <name>.gpg when binary, and
//! the source names it in `Signed-By`, so it is trusted for this repository only. Both files are
//! compared byte for byte and replaced atomically, key first. A changed source is fetched at once
//! (`apt-get update` of that file alone, failing on any error): a wrong URI, suite or key fails
//! this resource with apt's words, and the previous files are put back so that a bad commit does
//! not leave every later apt run on the device failing too.

use std::fs;
use std::io;
use std::path::Path;

use serde::Deserialize;

use crate::error::{ResourceError, SpecError};
use crate::fsutil::{self, Meta};
use crate::host::Host;
use crate::platform::aptdownload::{AptDownload, SourceFiles};
use crate::platform::{apt, deb822, diff};
use crate::prefetch::Prefetch;
use crate::resource::{Applied, Change, DynResource, Managed, Resource};
use crate::spec::{parse_spec, ResourceType, Sources};

pub const TYPE: ResourceType = ResourceType {
    name: "apt_source",
    primary: "name",
    names: &[
        "name",
        "uris",
        "suites",
        "components",
        "types",
        "architectures",
        "key",
    ],
    build,
};

const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
const KEYRINGS_DIR: &str = "/etc/apt/keyrings";

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Presence {
    #[default]
    Present,
    Absent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    name: String,
    uris: Option<serde_json::Value>,
    suites: Option<serde_json::Value>,
    components: Option<serde_json::Value>,
    types: Option<serde_json::Value>,
    architectures: Option<serde_json::Value>,
    key: Option<String>,
    key_content: Option<String>,
    #[serde(default)]
    state: Presence,
}

/// The two files a present source consists of.
#[derive(Debug)]
struct Desired {
    sources: Vec<u8>,
    keyring: Vec<u8>,
    armored: bool,
}

#[derive(Debug)]
pub struct AptSource {
    name: String,
    /// None for state absent.
    desired: Option<Desired>,
}

/// The files as found on the device; None when missing.
#[derive(Debug, Default)]
pub struct Actual {
    sources: Option<Vec<u8>>,
    asc: Option<Vec<u8>>,
    gpg: Option<Vec<u8>>,
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' cannot name an apt source: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit (it becomes /etc/apt/sources.list.d/<name>.sources)"
        ))
    }
}

/// A string (values separated by whitespace, as in deb822) or a list of strings.
fn words(key: &str, value: Option<serde_json::Value>) -> Result<Vec<String>, SpecError> {
    let bad = || {
        SpecError::at_key(
            key,
            format!("`{key}` must be a string or a list of strings"),
        )
    };
    let mut out = Vec::new();
    match value {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) => out.extend(s.split_whitespace().map(str::to_string)),
        Some(serde_json::Value::Array(items)) => {
            for item in items {
                let serde_json::Value::String(s) = item else {
                    return Err(bad());
                };
                let s = s.trim();
                if s.is_empty() || s.contains(char::is_whitespace) {
                    return Err(SpecError::at_key(
                        key,
                        format!("`{key}` has an empty value or one with spaces: '{s}'"),
                    ));
                }
                out.push(s.to_string());
            }
        }
        Some(_) => return Err(bad()),
    }
    Ok(out)
}

fn is_uri(u: &str) -> bool {
    match u.split_once(':') {
        Some((scheme, rest)) => {
            !rest.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_lowercase())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c))
        }
        None => false,
    }
}

/// Checks key bytes and returns them ready to write, and whether they are ASCII-armored.
fn keyring(key: &str, bytes: &[u8]) -> Result<(Vec<u8>, bool), SpecError> {
    let text = std::str::from_utf8(bytes).ok().map(str::trim);
    if let Some(t) = text.filter(|t| t.starts_with("-----BEGIN PGP")) {
        if t.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----") {
            return Err(SpecError::at_key(key, "this is a PRIVATE key: remove it from the fleet repository at once and give apt the public key (`gpg --armor --export KEYID`)"));
        }
        if !t.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
            || !t.contains("-----END PGP PUBLIC KEY BLOCK-----")
        {
            return Err(SpecError::at_key(key, "expected a public key block (-----BEGIN PGP PUBLIC KEY BLOCK----- … -----END PGP PUBLIC KEY BLOCK-----), e.g. from `gpg --armor --export KEYID`"));
        }
        return Ok((format!("{t}\n").into_bytes(), true));
    }
    if bytes.len() >= 12 && &bytes[8..12] == b"KBXf" {
        return Err(SpecError::at_key(key, "this is a GnuPG keybox (.kbx), which apt cannot read: export the key with `gpg --export KEYID > key.gpg` or `gpg --armor --export KEYID > key.asc`"));
    }
    // An OpenPGP keyring starts with a public-key packet (tag 6), in the old or the new format.
    let tag = match bytes.first() {
        Some(&b) if b & 0xc0 == 0xc0 => Some(b & 0x3f),
        Some(&b) if b & 0x80 == 0x80 => Some((b >> 2) & 0x0f),
        _ => None,
    };
    match tag {
        Some(6) => Ok((bytes.to_vec(), false)),
        Some(5) => Err(SpecError::at_key(key, "this is a binary PRIVATE key: remove it from the fleet repository at once and give apt the public key (`gpg --export KEYID`)")),
        _ if key == "key_content" => Err(SpecError::at_key(key, "`key_content` must be an ASCII-armored public key (-----BEGIN PGP PUBLIC KEY BLOCK-----); for a binary keyring, put it in the role's files/ and use `key:`")),
        _ => Err(SpecError::at_key(key, "this is neither an ASCII-armored public key nor a binary OpenPGP keyring: export it with `gpg --armor --export KEYID`")),
    }
}

/// Checks the repository fields the way apt would read them, so a mistake fails validation.
fn check_repository(
    types: &[String],
    uris: &[String],
    suites: &[String],
    components: &[String],
    architectures: &[String],
) -> Result<(), SpecError> {
    if let Some(t) = types.iter().find(|t| *t != "deb" && *t != "deb-src") {
        return Err(SpecError::at_key(
            "types",
            format!("'{t}' is not a source type: use deb and/or deb-src"),
        ));
    }
    if uris.is_empty() {
        return Err(SpecError::at_key(
            "uris",
            "a present apt source needs `uris`, e.g. `uris: https://deb.example.com/debian`",
        ));
    }
    if let Some(u) = uris.iter().find(|u| !is_uri(u)) {
        return Err(SpecError::at_key(
            "uris",
            format!(
                "'{u}' is not a URI: write it with its scheme, e.g. http://deb.example.com/debian"
            ),
        ));
    }
    if suites.is_empty() {
        return Err(SpecError::at_key(
            "suites",
            "a present apt source needs `suites`, e.g. `suites: [bookworm]`",
        ));
    }
    let exact = suites.iter().filter(|s| s.ends_with('/')).count();
    if exact == suites.len() && !components.is_empty() {
        return Err(SpecError::at_key(
            "components",
            "suites ending in '/' are exact paths, which take no components: remove `components`",
        ));
    }
    if exact > 0 && exact < suites.len() {
        return Err(SpecError::at_key("suites", "exact-path suites (ending in '/') and distribution suites cannot share one source: split them into two apt_source entries"));
    }
    if exact == 0 && components.is_empty() {
        return Err(SpecError::at_key("components", "a suite that is not an exact path (ending in '/') needs `components`, e.g. `components: [main]`"));
    }
    if let Some(a) = architectures.iter().find(|a| {
        !a.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    }) {
        return Err(SpecError::at_key(
            "architectures",
            format!("'{a}' is not a dpkg architecture such as arm64, armhf or amd64"),
        ));
    }
    Ok(())
}

fn build(
    spec: serde_json::Value,
    sources: &dyn Sources,
) -> Result<Box<dyn DynResource>, SpecError> {
    Ok(Box::new(from_spec(parse_spec(spec)?, sources)?))
}

fn from_spec(spec: Spec, sources: &dyn Sources) -> Result<AptSource, SpecError> {
    check_name(&spec.name).map_err(|m| SpecError::at_key("apt_source", m))?;
    let types = words("types", spec.types)?;
    let uris = words("uris", spec.uris)?;
    let suites = words("suites", spec.suites)?;
    let components = words("components", spec.components)?;
    let architectures = words("architectures", spec.architectures)?;
    if spec.state == Presence::Absent {
        return Ok(AptSource {
            name: spec.name,
            desired: None,
        });
    }

    let types = if types.is_empty() {
        vec!["deb".to_string()]
    } else {
        types
    };
    check_repository(&types, &uris, &suites, &components, &architectures)?;

    let (keyring, armored) = match (&spec.key, &spec.key_content) {
        (Some(file), None) => {
            let bytes = sources.file(file).map_err(|e| SpecError::at_key("key", format!("key '{file}': {e}")))?;
            keyring("key", &bytes)?
        }
        (None, Some(content)) => keyring("key_content", content.as_bytes())?,
        (Some(_), Some(_)) => return Err(SpecError::at_key("key_content", "give the signing key once: either `key` (a file in the role's files/) or `key_content`, not both")),
        (None, None) => return Err(SpecError::at_key("key", "a present apt source needs its signing key: `key: <file in the role's files/>` or `key_content: <armored key>`")),
    };

    let mut stanza = deb822::Stanza::new()
        .with("Types", types.join(" "))
        .with("URIs", uris.join(" "))
        .with("Suites", suites.join(" "));
    if !components.is_empty() {
        stanza.set("Components", components.join(" "));
    }
    if !architectures.is_empty() {
        stanza.set("Architectures", architectures.join(" "));
    }
    stanza.set("Signed-By", keyring_path(&spec.name, armored));
    let text = deb822::write(
        &[stanza],
        Some("Managed by tend: changes made here are overwritten."),
    );
    Ok(AptSource {
        name: spec.name,
        desired: Some(Desired {
            sources: text.into_bytes(),
            keyring,
            armored,
        }),
    })
}

fn keyring_path(name: &str, armored: bool) -> String {
    format!(
        "{KEYRINGS_DIR}/{name}.{}",
        if armored { "asc" } else { "gpg" }
    )
}

fn read_file(host: &Host, device_path: &str) -> Result<Option<Vec<u8>>, ResourceError> {
    match fs::read(host.path(device_path)?) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ResourceError::io(Path::new(device_path), e)),
    }
}

fn write_file(host: &Host, device_path: &str, bytes: &[u8]) -> Result<(), ResourceError> {
    let err = |e| ResourceError::io(Path::new(device_path), e);
    let path = host.path(device_path)?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    fsutil::atomic_write(
        &path,
        bytes,
        Meta {
            mode: Some(0o644),
            ..Meta::default()
        },
    )
    .map_err(err)
}

fn remove_file(host: &Host, device_path: &str) -> Result<(), ResourceError> {
    let path = host.path(device_path)?;
    match fs::remove_file(&path) {
        Ok(()) => path
            .parent()
            .map_or(Ok(()), fsutil::fsync_dir)
            .map_err(|e| ResourceError::io(Path::new(device_path), e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ResourceError::io(Path::new(device_path), e)),
    }
}

/// Puts a file back as it was: its old bytes, or no file.
fn restore(host: &Host, device_path: &str, old: Option<&[u8]>) -> Result<(), ResourceError> {
    match old {
        Some(bytes) => write_file(host, device_path, bytes),
        None => remove_file(host, device_path),
    }
}

impl AptSource {
    fn sources_path(&self) -> String {
        format!("{SOURCES_DIR}/{}.sources", self.name)
    }

    /// Each managed file: what it should hold (None: must not exist) and what it holds.
    fn files<'a>(&'a self, actual: &'a Actual) -> Vec<ManagedFile<'a>> {
        let file =
            |path: String, want: Option<&'a Vec<u8>>, have: &'a Option<Vec<u8>>| ManagedFile {
                path,
                want: want.map(Vec::as_slice),
                have: have.as_deref(),
            };
        let asc = |want| file(keyring_path(&self.name, true), want, &actual.asc);
        let gpg = |want| file(keyring_path(&self.name, false), want, &actual.gpg);
        match &self.desired {
            None => vec![
                file(self.sources_path(), None, &actual.sources),
                asc(None),
                gpg(None),
            ],
            // The key first: apt must never see the source without the key it names.
            Some(d) if d.armored => {
                vec![
                    asc(Some(&d.keyring)),
                    file(self.sources_path(), Some(&d.sources), &actual.sources),
                    gpg(None),
                ]
            }
            Some(d) => vec![
                gpg(Some(&d.keyring)),
                file(self.sources_path(), Some(&d.sources), &actual.sources),
                asc(None),
            ],
        }
    }

    fn changed_files<'a>(&'a self, actual: &'a Actual) -> Vec<ManagedFile<'a>> {
        self.files(actual)
            .into_iter()
            .filter(|f| f.want != f.have)
            .collect()
    }
}

/// One file of the source, as wanted and as found.
struct ManagedFile<'a> {
    path: String,
    want: Option<&'a [u8]>,
    have: Option<&'a [u8]>,
}

impl Resource for AptSource {
    type Actual = Actual;

    fn kind(&self) -> &'static str {
        "apt_source"
    }

    fn id(&self) -> String {
        self.name.clone()
    }

    fn touches(&self) -> Vec<String> {
        vec![
            self.sources_path(),
            keyring_path(&self.name, true),
            keyring_path(&self.name, false),
        ]
    }

    /// A present source is removed with its keyring once undeclared.
    fn managed(&self) -> Vec<Managed> {
        if self.desired.is_none() {
            return Vec::new();
        }
        vec![Managed {
            kind: "apt_source".into(),
            key: self.name.clone(),
            undo: crate::undo::Undo::name_absent(&self.name),
            only_if_created: false,
        }]
    }

    /// The packages downloaded before the run's first change come from the sources as this
    /// commit declares them.
    fn prefetch(&self, _: &Host, prefetch: &mut Prefetch) {
        let files = self.desired.as_ref().map(|d| SourceFiles {
            sources: d.sources.clone(),
            keyring: d.keyring.clone(),
            keyring_path: keyring_path(&self.name, d.armored),
        });
        prefetch.get::<AptDownload>().source(&self.name, files);
    }

    fn read(&self, host: &Host) -> Result<Actual, ResourceError> {
        Ok(Actual {
            sources: read_file(host, &self.sources_path())?,
            asc: read_file(host, &keyring_path(&self.name, true))?,
            gpg: read_file(host, &keyring_path(&self.name, false))?,
        })
    }

    fn diff(&self, actual: &Actual, host: &Host) -> Option<Change> {
        let changed = self.changed_files(actual);
        if changed.is_empty() {
            return None;
        }
        let words: Vec<String> = changed
            .iter()
            .map(|f| match (f.want, f.have) {
                (None, _) => format!("remove {}", f.path),
                (Some(_), None) => format!("create {}", f.path),
                (Some(_), Some(_)) => format!("update {}", f.path),
            })
            .collect();
        let sources = self.sources_path();
        let text_diff = match (&self.desired, changed.iter().any(|f| f.path == sources)) {
            (Some(d), true) => diff::content_diff(
                &sources,
                actual.sources.as_deref(),
                &d.sources,
                host.redactor(),
            ),
            _ => None,
        };
        Some(Change::new(words.join(", ")).with_diff(text_diff))
    }

    fn apply(&self, actual: Actual, host: &Host) -> Result<Applied, ResourceError> {
        let changed = self.changed_files(&actual);
        for (i, f) in changed.iter().enumerate() {
            let done = match f.want {
                Some(bytes) => write_file(host, &f.path, bytes),
                None => remove_file(host, &f.path),
            };
            if let Err(e) = done {
                let undo = undo(host, &changed[..i]);
                return Err(with_undo(e.to_string(), undo));
            }
        }
        if self.desired.is_none() {
            return Ok(Applied::Done);
        }
        let was_changed = {
            let mut flags = host.flags();
            std::mem::replace(&mut flags.apt_sources_changed, true)
        };
        match apt::update_source(host, &self.sources_path()) {
            Ok(()) => {
                // This source's lists are fetched; what other sources need is unchanged.
                host.flags().apt_sources_changed = was_changed;
                Ok(Applied::Done)
            }
            Err(e) => {
                let undo = undo(host, &changed);
                if undo.is_ok() {
                    host.flags().apt_sources_changed = was_changed;
                }
                Err(with_undo(format!("apt cannot use this source: {e}"), undo))
            }
        }
    }
}

/// Puts the files already changed back as they were, in reverse order.
fn undo(host: &Host, done: &[ManagedFile]) -> Result<(), ResourceError> {
    for f in done.iter().rev() {
        restore(host, &f.path, f.have)?;
    }
    Ok(())
}

fn with_undo(message: String, undo: Result<(), ResourceError>) -> ResourceError {
    match undo {
        Ok(()) => ResourceError::other(format!("{message}; the previous files were put back")),
        Err(u) => ResourceError::other(format!(
            "{message}; putting the previous files back failed too: {u}"
        )),
    }
}

#[cfg(test)]
mod tests;
