//! Tiny Debian packages, described in code and built with `dpkg-deb`.
//!
//! The package resource is tested against real dpkg behaviour (versions, Recommends, conffiles,
//! units shipped by packages), so the test packages are real .debs; they are arch `all` and a few
//! hundred bytes, so one set serves every architecture.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// A file a package ships.
#[derive(Clone, Debug)]
pub struct DebFile {
    pub path: String,
    pub content: String,
    pub mode: u32,
}

#[derive(Clone, Debug)]
pub struct DebSpec {
    pub name: String,
    pub version: String,
    pub description: String,
    pub depends: Vec<String>,
    pub recommends: Vec<String>,
    pub files: Vec<DebFile>,
    /// Paths among `files` that dpkg treats as conffiles.
    pub conffiles: Vec<String>,
}

impl DebSpec {
    pub fn new(name: &str, version: &str) -> DebSpec {
        DebSpec {
            name: name.into(),
            version: version.into(),
            description: format!("tend test package {name}"),
            depends: Vec::new(),
            recommends: Vec::new(),
            files: Vec::new(),
            conffiles: Vec::new(),
        }
    }

    pub fn file(mut self, path: &str, content: &str, mode: u32) -> DebSpec {
        self.files.push(DebFile {
            path: path.into(),
            content: content.into(),
            mode,
        });
        self
    }

    pub fn conffile(mut self, path: &str, content: &str) -> DebSpec {
        self.conffiles.push(path.into());
        self.file(path, content, 0o644)
    }

    pub fn recommends(mut self, package: &str) -> DebSpec {
        self.recommends.push(package.into());
        self
    }

    pub fn depends(mut self, package: &str) -> DebSpec {
        self.depends.push(package.into());
        self
    }

    /// `name_version_all.deb`, as in a Debian pool (an epoch's colon is dropped, as Debian does).
    pub fn filename(&self) -> String {
        let version = self
            .version
            .split_once(':')
            .map_or(&*self.version, |(_, v)| v);
        format!("{}_{version}_all.deb", self.name)
    }

    pub fn control(&self) -> String {
        let mut c = format!(
            "Package: {}\nVersion: {}\nArchitecture: all\nMaintainer: tend tests \
             <tend-tests@example.invalid>\nSection: misc\nPriority: optional\n",
            self.name, self.version
        );
        if !self.depends.is_empty() {
            c.push_str(&format!("Depends: {}\n", self.depends.join(", ")));
        }
        if !self.recommends.is_empty() {
            c.push_str(&format!("Recommends: {}\n", self.recommends.join(", ")));
        }
        c.push_str(&format!("Description: {}\n", self.description));
        c
    }

    /// Feeds everything the built package depends on into a cache key.
    pub fn digest_into(&self, h: &mut Sha256) {
        h.update(self.control());
        for f in &self.files {
            h.update(format!("\0{}\0{:o}\0{}", f.path, f.mode, f.content));
        }
        for c in &self.conffiles {
            h.update(format!("\0conffile {c}"));
        }
    }

    /// Builds the package into `out_dir/<filename>`, owned by root, reproducibly.
    pub fn build(&self, out_dir: &Path) -> Result<()> {
        let work = tempfile::tempdir()?;
        let tree = work.path().join("tree");
        fs::create_dir_all(tree.join("DEBIAN"))?;
        fs::write(tree.join("DEBIAN/control"), self.control())?;
        if !self.conffiles.is_empty() {
            fs::write(
                tree.join("DEBIAN/conffiles"),
                self.conffiles.join("\n") + "\n",
            )?;
        }
        for f in &self.files {
            let path = tree.join(f.path.trim_start_matches('/'));
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            fs::write(&path, &f.content)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(f.mode))?;
        }
        set_dir_modes(&tree)?;
        let mut cmd = Command::new("dpkg-deb");
        cmd.args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&tree)
            .arg(out_dir.join(self.filename()))
            .env("SOURCE_DATE_EPOCH", "1700000000");
        crate::run::run_ok(
            cmd,
            &format!("dpkg-deb --build {}", self.name),
            Duration::from_secs(120),
        )
        .with_context(|| format!("building {}", self.filename()))?;
        Ok(())
    }
}

/// dpkg-deb refuses control directories with odd modes, and the umask of whoever runs the tests
/// must not leak into the packages.
fn set_dir_modes(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            set_dir_modes(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lists_relations_only_when_present() {
        let plain = DebSpec::new("tend-tool", "1.0-1").control();
        assert!(plain.contains("Package: tend-tool\nVersion: 1.0-1\nArchitecture: all\n"));
        assert!(!plain.contains("Recommends"));
        let rec = DebSpec::new("a", "1")
            .recommends("b")
            .recommends("c")
            .control();
        assert!(rec.contains("Recommends: b, c\n"));
    }

    #[test]
    fn filename_drops_the_epoch() {
        assert_eq!(DebSpec::new("x", "1:2.0-1").filename(), "x_2.0-1_all.deb");
    }

    #[test]
    fn digest_changes_with_content() {
        let a = DebSpec::new("x", "1").file("/a", "one", 0o644);
        let b = DebSpec::new("x", "1").file("/a", "two", 0o644);
        let (mut ha, mut hb) = (Sha256::new(), Sha256::new());
        a.digest_into(&mut ha);
        b.digest_into(&mut hb);
        assert_ne!(ha.finalize(), hb.finalize());
    }

    #[test]
    fn builds_a_package_dpkg_can_read() {
        if crate::gate::find_in_path("dpkg-deb").is_none() {
            panic!("dpkg-deb is missing: run scripts/testbed-deps");
        }
        let out = tempfile::tempdir().unwrap();
        let spec = DebSpec::new("tend-unit", "1.0-1")
            .conffile("/etc/tend-unit.conf", "x=1\n")
            .file("/usr/bin/tend-unit", "#!/bin/sh\necho hi\n", 0o755);
        spec.build(out.path()).unwrap();
        let deb = out.path().join("tend-unit_1.0-1_all.deb");
        let info = Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("Package: tend-unit"), "{info}");
        let list = Command::new("dpkg-deb")
            .arg("-c")
            .arg(&deb)
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(list.contains("-rwxr-xr-x root/root") && list.contains("./usr/bin/tend-unit"));
        let conf = Command::new("dpkg-deb")
            .args(["--ctrl-tarfile"])
            .arg(&deb)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&conf.stdout).contains("conffiles"));
    }
}
