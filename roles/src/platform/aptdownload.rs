//! The apt half of "download, then apply": every .deb a desired state will install, fetched into
//! apt's archive cache before the first change, with the sources the desired state declares.
//!
//! `package` resources name what they will install, `apt_source` resources the source files they
//! will write. When a declared source differs from the device's, or the package lists are stale,
//! apt is pointed at a staging directory under `/var/cache/tend/apt` (the device's sources with the
//! declared ones in their place, their keys beside them, and a copy of the device's lists made of
//! hard links): `apt-get update` fills the staged lists, and `apt-get install --download-only`
//! fetches from them into `/var/cache/apt/archives`. Nothing under /etc, no package list and no
//! package's state changes; the apply then installs from the cache. Otherwise apt's own lists
//! already know every candidate and only the download runs. A download cut short leaves the cache
//! with the .debs that were complete (and apt's `partial/` to resume), which is all it changes.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use crate::error::ResourceError;
use crate::fsutil::{self, Meta};
use crate::host::Host;
use crate::platform::apt;
use crate::prefetch::{Fetch, Fetched};

/// Where downloaded packages go: apt's own archive cache, which `apt-get install` reads.
const ARCHIVES: &str = "/var/cache/apt/archives";
const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
/// The staging directory (device path), removed after every download.
const STAGE: &str = "/var/cache/tend/apt";

/// What a declared source will be on the device once applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFiles {
    /// The `.sources` file's bytes.
    pub sources: Vec<u8>,
    /// The key's bytes, and the device path the source names in `Signed-By`.
    pub keyring: Vec<u8>,
    pub keyring_path: String,
}

#[derive(Debug)]
struct Declared {
    name: String,
    /// None: the source is declared absent.
    files: Option<SourceFiles>,
}

#[derive(Debug)]
struct Install {
    specs: Vec<String>,
    recommends: bool,
}

/// The run's apt download, filled by `apt_source` and `package` resources.
#[derive(Debug, Default)]
pub struct AptDownload {
    sources: Vec<Declared>,
    installs: Vec<Install>,
}

impl AptDownload {
    /// `name` will be `/etc/apt/sources.list.d/<name>.sources` with `files`, or gone (None).
    pub fn source(&mut self, name: &str, files: Option<SourceFiles>) {
        self.sources.push(Declared {
            name: name.to_string(),
            files,
        });
    }

    /// One resource's `apt-get install` operands ("curl", "hello=1.0-1"), downloaded as it
    /// will install them.
    pub fn install(&mut self, specs: Vec<String>, recommends: bool) {
        if !specs.is_empty() {
            self.installs.push(Install { specs, recommends });
        }
    }

    fn package_count(&self) -> usize {
        self.installs
            .iter()
            .flat_map(|i| &i.specs)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// True when a declared source is not on the device as declared.
    fn sources_differ(&self, host: &Host) -> Result<bool, ResourceError> {
        for d in &self.sources {
            let path = format!("{SOURCES_DIR}/{}.sources", d.name);
            let have = read(host, &path)?;
            let differs = match &d.files {
                None => have.is_some(),
                Some(f) => {
                    have.as_deref() != Some(&f.sources[..])
                        || read(host, &f.keyring_path)?.as_deref() != Some(&f.keyring[..])
                }
            };
            if differs {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Fetch for AptDownload {
    fn describe(&self) -> String {
        match self.package_count() {
            0 => String::new(),
            1 => "1 package".into(),
            n => format!("{n} packages"),
        }
    }

    fn fetch(&mut self, host: &Host) -> Result<Fetched, ResourceError> {
        let archives = host.path(ARCHIVES)?;
        let before = debs(&archives);
        let staged = host.flags().apt_sources_changed
            || self.sources_differ(host)?
            || apt::lists_stale(
                apt::lists_refreshed_at(host)?,
                host.apt_lists_max_age,
                SystemTime::now(),
            );
        let result = if staged {
            let r = stage(host, &self.sources).and_then(|options| {
                tracing::info!(
                    packages = self.package_count(),
                    "refreshing staged package lists before the download"
                );
                run_apt(host, "update", &options, &[], false)?;
                self.download(host, &options)
            });
            if let Err(e) = remove_stage(host) {
                tracing::warn!(error = %e, "cannot remove the staging directory {STAGE}");
            }
            r
        } else {
            self.download(host, &[])
        };
        result?;
        let after = debs(&archives);
        let bytes = after.difference(&before).map(|(_, size)| size).sum();
        Ok(Fetched { bytes })
    }
}

impl AptDownload {
    fn download(&self, host: &Host, options: &[String]) -> Result<(), ResourceError> {
        for i in &self.installs {
            let mut extra: Vec<String> = options.to_vec();
            extra.push("--download-only".into());
            if i.specs.iter().any(|s| s.contains('=')) {
                extra.push("--allow-downgrades".into());
            }
            run_apt(host, "install", &extra, &i.specs, i.recommends)?;
        }
        Ok(())
    }
}

fn run_apt(
    host: &Host,
    subcommand: &str,
    extra: &[String],
    operands: &[String],
    recommends: bool,
) -> Result<(), ResourceError> {
    let mut argv: Vec<String> = vec!["apt-get".into(), subcommand.into()];
    argv.extend(apt::common_options(host, recommends));
    argv.extend(extra.iter().cloned());
    argv.extend(operands.iter().cloned());
    let shown = std::iter::once(format!("apt-get {subcommand}"))
        .chain(extra.iter().filter(|o| o.starts_with("--")).cloned())
        .chain(operands.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    apt::run(host, &argv, &shown).map(drop)
}

fn read(host: &Host, device_path: &str) -> Result<Option<Vec<u8>>, ResourceError> {
    match fs::read(host.path(device_path)?) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ResourceError::io(Path::new(device_path), e)),
    }
}

/// The .debs in the archive cache, by name and size: a download adds to it.
fn debs(dir: &Path) -> BTreeSet<(String, u64)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata().ok()?;
            (name.ends_with(".deb") && meta.is_file()).then_some((name, meta.len()))
        })
        .collect()
}

/// Builds the staging directory and returns the apt options that point apt at it.
fn stage(host: &Host, declared: &[Declared]) -> Result<Vec<String>, ResourceError> {
    fn io_err(p: &str) -> impl Fn(io::Error) -> ResourceError + '_ {
        move |e| ResourceError::io(Path::new(p), e)
    }
    remove_stage(host).map_err(io_err(STAGE))?;
    let parts = format!("{STAGE}/sources.list.d");
    let lists = format!("{STAGE}/lists");
    let keys = format!("{STAGE}/keyrings");
    for d in [&parts, &format!("{lists}/partial"), &keys] {
        fs::create_dir_all(host.path(d)?).map_err(io_err(d))?;
    }
    let ours: BTreeSet<String> = declared
        .iter()
        .map(|d| format!("{}.sources", d.name))
        .collect();
    // The device's other sources as they are.
    if let Ok(entries) = fs::read_dir(host.path(SOURCES_DIR)?) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.ends_with(".list") || name.ends_with(".sources")) || ours.contains(&name) {
                continue;
            }
            let from = format!("{SOURCES_DIR}/{name}");
            if let Some(bytes) = read(host, &from)? {
                write(host, &format!("{parts}/{name}"), &bytes)?;
            }
        }
    }
    // The declared ones, trusting their keys from the staging directory.
    for d in declared {
        let Some(f) = &d.files else { continue };
        let file = Path::new(&f.keyring_path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{}.asc", d.name));
        let key = format!("{keys}/{file}");
        write(host, &key, &f.keyring)?;
        let text = String::from_utf8_lossy(&f.sources).replace(&f.keyring_path, &key);
        write(
            host,
            &format!("{parts}/{}.sources", d.name),
            text.as_bytes(),
        )?;
    }
    link_lists(host, &lists)?;
    Ok([
        format!("Dir::Etc::SourceParts={parts}"),
        format!("Dir::State::Lists={lists}"),
        "Dir::Cache::pkgcache=".to_string(),
        "Dir::Cache::srcpkgcache=".to_string(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect())
}

/// Seeds the staged lists with the device's (hard links: apt replaces a list by a rename, never
/// in place), so the update fetches only what changed.
fn link_lists(host: &Host, staged: &str) -> Result<(), ResourceError> {
    let Ok(entries) = fs::read_dir(host.path(apt::LISTS)?) else {
        return Ok(());
    };
    let to_dir = host.path(staged)?;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        if name == "lock" || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let to = to_dir.join(&name);
        if fs::hard_link(e.path(), &to).is_err() {
            fs::copy(e.path(), &to).map_err(|err| ResourceError::io(&to, err))?;
        }
    }
    Ok(())
}

fn write(host: &Host, device_path: &str, bytes: &[u8]) -> Result<(), ResourceError> {
    let meta = Meta {
        mode: Some(0o644),
        ..Meta::default()
    };
    fsutil::atomic_write(&host.path(device_path)?, bytes, meta)
        .map_err(|e| ResourceError::io(Path::new(device_path), e))
}

fn remove_stage(host: &Host) -> io::Result<()> {
    let dir = host.path(STAGE).map_err(io::Error::other)?;
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(text: &str) -> SourceFiles {
        SourceFiles {
            sources: format!(
                "URIs: http://127.0.0.1/d\nSigned-By: /etc/apt/keyrings/v.asc\n{text}"
            )
            .into_bytes(),
            keyring: b"KEY\n".to_vec(),
            keyring_path: "/etc/apt/keyrings/v.asc".into(),
        }
    }

    #[test]
    fn nothing_to_install_is_nothing_to_describe() {
        let mut d = AptDownload::default();
        d.source("v", Some(files("")));
        d.install(Vec::new(), false);
        assert_eq!(d.describe(), "");
        d.install(vec!["curl".into(), "hello=1.0-1".into()], false);
        d.install(vec!["curl".into()], true);
        assert_eq!(d.describe(), "2 packages");
    }

    #[test]
    fn staging_puts_declared_sources_with_their_keys_beside_the_devices_others() {
        let root = tempfile::tempdir().unwrap();
        let host = Host::new(root.path());
        let at = |p: &str| root.path().join(p.trim_start_matches('/'));
        fs::create_dir_all(at(SOURCES_DIR)).unwrap();
        fs::write(at("/etc/apt/sources.list.d/debian.sources"), "debian\n").unwrap();
        fs::write(at("/etc/apt/sources.list.d/v.sources"), "old\n").unwrap();
        fs::write(at("/etc/apt/sources.list.d/gone.sources"), "gone\n").unwrap();
        fs::create_dir_all(at(apt::LISTS)).unwrap();
        fs::write(at("/var/lib/apt/lists/x_InRelease"), "list\n").unwrap();
        let declared = [
            Declared {
                name: "v".into(),
                files: Some(files("")),
            },
            Declared {
                name: "gone".into(),
                files: None,
            },
        ];
        let options = stage(&host, &declared).unwrap().join(" ");
        assert!(options.contains("-o Dir::Etc::SourceParts=/var/cache/tend/apt/sources.list.d"));
        assert!(options.contains("-o Dir::State::Lists=/var/cache/tend/apt/lists"));
        let staged = |p: &str| fs::read_to_string(at(&format!("{STAGE}/{p}"))).unwrap();
        assert_eq!(staged("sources.list.d/debian.sources"), "debian\n");
        assert_eq!(
            staged("sources.list.d/v.sources"),
            "URIs: http://127.0.0.1/d\nSigned-By: /var/cache/tend/apt/keyrings/v.asc\n"
        );
        assert_eq!(staged("keyrings/v.asc"), "KEY\n");
        assert!(!at(&format!("{STAGE}/sources.list.d/gone.sources")).exists());
        assert_eq!(staged("lists/x_InRelease"), "list\n");
        assert!(at(&format!("{STAGE}/lists/partial")).is_dir());
        assert_eq!(
            fs::read_to_string(at("/etc/apt/sources.list.d/v.sources")).unwrap(),
            "old\n",
            "the device's own source is untouched"
        );
        remove_stage(&host).unwrap();
        assert!(!at(STAGE).exists());
    }

    #[test]
    fn a_declared_source_differs_until_its_files_are_on_the_device() {
        let root = tempfile::tempdir().unwrap();
        let host = Host::new(root.path());
        let at = |p: &str| root.path().join(p.trim_start_matches('/'));
        let mut d = AptDownload::default();
        d.source("v", Some(files("")));
        assert!(d.sources_differ(&host).unwrap());
        fs::create_dir_all(at(SOURCES_DIR)).unwrap();
        fs::create_dir_all(at("/etc/apt/keyrings")).unwrap();
        fs::write(at("/etc/apt/sources.list.d/v.sources"), &files("").sources).unwrap();
        assert!(d.sources_differ(&host).unwrap(), "the key is missing");
        fs::write(at("/etc/apt/keyrings/v.asc"), "KEY\n").unwrap();
        assert!(!d.sources_differ(&host).unwrap());
        d.source("gone", None);
        assert!(!d.sources_differ(&host).unwrap());
        fs::write(at("/etc/apt/sources.list.d/gone.sources"), "x").unwrap();
        assert!(
            d.sources_differ(&host).unwrap(),
            "an absent source still there"
        );
    }
}
