//! The shared cache of expensive artifacts (chroot tarballs, the signed apt repository).
//!
//! Test threads and test binaries run in parallel and all want the same artifacts, so each one is
//! built under an exclusive file lock (the first caller builds, the others wait and reuse), into
//! a temporary name that is renamed into place only when complete: a crash or a killed test never
//! leaves half an artifact that a later run would trust.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// `$TEND_CACHE`, else `~/.cache/tend`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TEND_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/tend")
}

/// An exclusive `flock` on a file, released on drop. flock locks belong to the open file
/// description, so threads of one process exclude each other as well as processes do.
pub struct FileLock {
    file: File,
}

impl FileLock {
    pub fn acquire(path: &Path) -> Result<FileLock> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock {}", path.display()))?;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(FileLock { file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we own; closing it would unlock too.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Returns `dest`, building it first with `build(tmp)` unless it exists and was built from the
/// same `recipe` (a text naming everything the artifact depends on; it is kept next to the
/// artifact as `<dest>.recipe`). `build` writes a file or directory at `tmp`, which is renamed to
/// `dest` only after `build` succeeds. Returns how long the build took, None when reused.
pub fn get_or_build(
    dest: &Path,
    recipe: &str,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<Option<Duration>> {
    let _lock = FileLock::acquire(&with_suffix(dest, ".lock"))?;
    let recipe_path = with_suffix(dest, ".recipe");
    if dest.exists() && fs::read_to_string(&recipe_path).is_ok_and(|r| r == recipe) {
        return Ok(None);
    }
    remove_any(dest);
    remove_stale_temporaries(dest);
    let tmp = with_suffix(dest, &format!(".tmp-{}", std::process::id()));
    let started = Instant::now();
    let result = build(&tmp).and_then(|()| {
        let tmp_recipe = with_suffix(&tmp, ".recipe");
        fs::write(&tmp_recipe, recipe)?;
        fs::rename(&tmp_recipe, &recipe_path)?;
        fs::rename(&tmp, dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
    });
    if let Err(e) = result {
        remove_any(&tmp);
        return Err(e);
    }
    Ok(Some(started.elapsed()))
}

/// Appends a line to `<cache>/timings.log` and stderr, so that build costs are visible even when
/// the test harness captures output (`scripts/test` prints the lines a stage added).
pub fn log_timing(what: &str, took: Duration) {
    let line = format!("{what}: {:.1}s", took.as_secs_f64());
    eprintln!("{line}");
    let path = cache_dir().join("timings.log");
    let _ = fs::create_dir_all(cache_dir());
    if let Ok(mut f) = File::options().create(true).append(true).open(path) {
        use std::io::Write;
        let _ = writeln!(f, "{line}");
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Temporaries of builds that died (we hold the lock, so no build is running).
fn remove_stale_temporaries(dest: &Path) {
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return;
    };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            remove_any(&entry.path());
        }
    }
}

fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => drop(fs::remove_dir_all(path)),
        Ok(_) => drop(fs::remove_file(path)),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn parallel_callers_build_once() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("artifact");
        let builds = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (dest, builds) = (dest.clone(), builds.clone());
                std::thread::spawn(move || {
                    get_or_build(&dest, "r1", |tmp| {
                        builds.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        Ok(fs::write(tmp, "done")?)
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert_eq!(fs::read_to_string(&dest).unwrap(), "done");
    }

    #[test]
    fn failed_build_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("artifact");
        let err = get_or_build(&dest, "r1", |tmp| {
            fs::write(tmp, "half")?;
            anyhow::bail!("build broke")
        });
        assert!(err.is_err());
        assert!(!dest.exists());
        let left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "artifact.lock")
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn stale_temporary_of_a_dead_build_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("artifact");
        fs::write(d.path().join("artifact.tmp-999999"), "crashed").unwrap();
        get_or_build(&dest, "r1", |tmp| Ok(fs::write(tmp, "ok")?)).unwrap();
        assert!(!d.path().join("artifact.tmp-999999").exists());
    }

    #[test]
    fn a_changed_recipe_rebuilds_and_the_same_recipe_reuses() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("artifact");
        assert!(get_or_build(&dest, "r1", |tmp| Ok(fs::write(tmp, "one")?))
            .unwrap()
            .is_some());
        assert!(get_or_build(&dest, "r1", |_| anyhow::bail!("must reuse"))
            .unwrap()
            .is_none());
        assert!(get_or_build(&dest, "r2", |tmp| Ok(fs::write(tmp, "two")?))
            .unwrap()
            .is_some());
        assert_eq!(fs::read_to_string(&dest).unwrap(), "two");
    }
}
