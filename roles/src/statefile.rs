//! tend's own files (the report, the run state, the managed list, pending handlers, the revert
//! journal, the metrics textfile): one way to write them.
//!
//! Atomically, like every file tend writes (`fsutil::atomic_write`), and not at all when the file
//! already holds exactly these bytes with this mode: flash wears out, and a run with nothing new
//! should not rewrite what it found.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::Serialize;

use crate::fsutil;

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The file already held these bytes with this mode; nothing was written.
    Unchanged,
    Replaced,
}

/// `value` as pretty JSON with a final newline (readable with `cat`, diffable between runs).
pub fn write_json<T: Serialize>(path: &Path, value: &T, mode: u32) -> io::Result<Written> {
    let mut json = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    json.push(b'\n');
    write_bytes(path, &json, mode)
}

/// Replaces `path` with `bytes` (creating its directory), unless it already holds them.
pub fn write_bytes(path: &Path, bytes: &[u8], mode: u32) -> io::Result<Written> {
    if holds(path, bytes, mode) {
        return Ok(Written::Unchanged);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    fsutil::atomic_write(
        path,
        bytes,
        fsutil::Meta {
            mode: Some(mode),
            ..Default::default()
        },
    )?;
    Ok(Written::Replaced)
}

/// Whether `path` is a regular file (not a link) with exactly `bytes` and `mode`.
fn holds(path: &Path, bytes: &[u8], mode: u32) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    meta.is_file()
        && meta.len() == bytes.len() as u64
        && meta.permissions().mode() & 0o7777 == mode
        && std::fs::read(path).is_ok_and(|old| old == bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_same_bytes_are_not_written_again() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state/state.json");
        let value = serde_json::json!({"branch": "main"});
        assert_eq!(write_json(&path, &value, 0o600).unwrap(), Written::Replaced);
        let inode = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(
            write_json(&path, &value, 0o600).unwrap(),
            Written::Unchanged
        );
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "rewritten");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n  \"branch\": \"main\"\n}\n"
        );
    }

    #[test]
    fn other_bytes_another_mode_or_a_link_are_replaced() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("report.json");
        write_bytes(&path, b"one", 0o644).unwrap();
        assert_eq!(
            write_bytes(&path, b"two", 0o644).unwrap(),
            Written::Replaced
        );
        assert_eq!(
            write_bytes(&path, b"two", 0o600).unwrap(),
            Written::Replaced
        );
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let elsewhere = d.path().join("elsewhere");
        std::fs::write(&elsewhere, b"two").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert_eq!(
            write_bytes(&path, b"two", 0o644).unwrap(),
            Written::Replaced
        );
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
    }
}
