//! Where the tend binary under test lives.
//!
//! Cargo cannot hand one package's binary to another package's tests (artifact dependencies are
//! unstable), so the test command builds `tend` first (`cargo build -p tend` in `scripts/test`) and
//! the suites find it here. Building from inside a test would fight the outer cargo for the build
//! lock and hide build errors in test output.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The tend binary to test: `$TEND_BIN` if set, else `tend` in the cargo target directory
/// (`$CARGO_TARGET_DIR`, else `<workspace>/target`), debug before release.
pub fn tend_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("TEND_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("TEND_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut target_dirs = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        target_dirs.push(workspace.join(dir));
    }
    target_dirs.push(workspace.join("target"));
    let candidates: Vec<PathBuf> = target_dirs
        .iter()
        .flat_map(|t| [t.join("debug/tend"), t.join("release/tend")])
        .collect();
    match candidates.iter().find(|c| c.is_file()) {
        Some(bin) => {
            warn_if_stale(bin, &workspace);
            Ok(bin.clone())
        }
        None => {
            bail!(
            "no tend binary found (looked at {}): run `cargo build -p tend` first (scripts/test \
             does), or set TEND_BIN",
            candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
        )
        }
    }
}

/// A binary older than its sources makes tests pass or fail for code that is no longer there;
/// say so loudly instead of guessing whether a rebuild is due.
fn warn_if_stale(bin: &Path, workspace: &Path) {
    let Ok(built) = bin.metadata().and_then(|m| m.modified()) else {
        return;
    };
    let newest = ["agent/src", "roles/src"]
        .iter()
        .filter_map(|d| newest_mtime(&workspace.join(d)))
        .max();
    if newest.is_some_and(|n| n > built) {
        eprintln!(
            "warning: {} is older than the agent/roles sources; run `cargo build -p tend`",
            bin.display()
        );
    }
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let t = if meta.is_dir() {
            newest_mtime(&entry.path())
        } else {
            meta.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// The tend .deb for Debian architecture `arch`, if `scripts/build-debs` built it from the
/// current sources (`scripts/build-debs --built ARCH` decides; the package and VM suites use it).
pub fn built_deb(arch: &str) -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = std::process::Command::new(workspace.join("scripts/build-debs"));
    cmd.args(["--built", arch]).current_dir(&workspace);
    let out = crate::run::run(
        cmd,
        "scripts/build-debs --built",
        std::time::Duration::from_secs(120),
    )?;
    if !out.success() {
        bail!("no current tend .deb for {arch}: {}", out.stderr.trim());
    }
    Ok(PathBuf::from(out.stdout.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_mtime_descends_into_directories() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("old"), "x").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(d.path().join("old"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::fs::write(d.path().join("sub/new"), "x").unwrap();
        let newest = newest_mtime(d.path()).unwrap();
        assert!(newest > old + std::time::Duration::from_secs(1800));
    }
}
