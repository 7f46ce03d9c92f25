//! tend's own files (the report, the run state, the managed list, pending handlers, the revert
//! journal, the metrics textfile): one way to write them.
//!
//! Atomically, like every file tend writes (`fsutil::atomic_write`), and not at all when the file
//! already holds exactly these bytes with this mode: flash wears out, and a run with nothing new
//! should not rewrite what it found.

use std::borrow::Cow;
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
/// The comparison with what the file holds streams, so a large unchanged record (the managed
/// list of 10,000 files) is never held twice.
pub fn write_json<T: Serialize>(path: &Path, value: &T, mode: u32) -> io::Result<Written> {
    if has_mode(path, mode) && reads_as(path, value, &Lines::exact()) {
        return Ok(Written::Unchanged);
    }
    let mut json = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    json.push(b'\n');
    replace(path, &json, mode)?;
    Ok(Written::Replaced)
}

/// How [`reads_as`] compares lines: `skip` drops a line on both sides (a timestamp), `map`
/// turns a new line into what the file would hold (scrubbed of credentials).
pub struct Lines<'a> {
    pub skip: &'a dyn Fn(&[u8]) -> bool,
    pub map: &'a dyn Fn(&[u8]) -> Cow<'_, [u8]>,
}

/// A line as it is, for [`Lines::map`].
fn as_it_is(line: &[u8]) -> Cow<'_, [u8]> {
    Cow::Borrowed(line)
}

impl Lines<'static> {
    /// Every line, as it is.
    pub fn exact() -> Self {
        Lines {
            skip: &|_| false,
            map: &as_it_is,
        }
    }
}

/// Whether the file at `path` holds the lines `value` serializes to as pretty JSON with a final
/// newline, compared as `lines` says. Neither side is held whole: the serializer's output is
/// checked line by line against the file as it is read, and the first difference stops both.
pub fn reads_as<T: Serialize>(path: &Path, value: &T, lines: &Lines) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut cmp = SameLines {
        old: io::BufReader::new(file),
        line: Vec::new(),
        old_line: Vec::new(),
        lines,
    };
    // Buffered: the serializer writes a token at a time, the comparison wants whole lines.
    let mut buffered = io::BufWriter::with_capacity(8 << 10, &mut cmp);
    let same = serde_json::to_writer_pretty(&mut buffered, value).is_ok()
        && io::Write::write_all(&mut buffered, b"\n").is_ok()
        && io::Write::flush(&mut buffered).is_ok();
    drop(buffered);
    same && cmp.line.is_empty() && cmp.next_old().is_ok_and(|more| !more)
}

/// The writer behind [`reads_as`]: an error as soon as a line differs.
struct SameLines<'a, R> {
    old: R,
    line: Vec<u8>,
    old_line: Vec<u8>,
    lines: &'a Lines<'a>,
}

impl<R: io::BufRead> SameLines<'_, R> {
    /// Reads the file's next line that is not skipped into `old_line`; false at its end.
    fn next_old(&mut self) -> io::Result<bool> {
        loop {
            self.old_line.clear();
            if self.old.read_until(b'\n', &mut self.old_line)? == 0 {
                return Ok(false);
            }
            if !(self.lines.skip)(&self.old_line) {
                return Ok(true);
            }
        }
    }

    fn compare(&mut self) -> io::Result<()> {
        let line = std::mem::take(&mut self.line);
        let same = (self.lines.skip)(&line)
            || (self.next_old()? && *(self.lines.map)(&line) == *self.old_line);
        self.line = line;
        self.line.clear();
        if same {
            Ok(())
        } else {
            Err(io::Error::other("the file differs"))
        }
    }
}

impl<R: io::BufRead> io::Write for SameLines<'_, R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&rest[..=at]);
            self.compare()?;
            rest = &rest[at + 1..];
        }
        self.line.extend_from_slice(rest);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Replaces `path` with `bytes` (creating its directory), unless it already holds them.
pub fn write_bytes(path: &Path, bytes: &[u8], mode: u32) -> io::Result<Written> {
    if holds(path, bytes, mode) {
        return Ok(Written::Unchanged);
    }
    replace(path, bytes, mode)?;
    Ok(Written::Replaced)
}

/// Writes `bytes` to `path` atomically, creating its directory.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
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
    Ok(())
}

/// Whether `path` is a regular file (not a link) with `mode`.
fn has_mode(path: &Path, mode: u32) -> bool {
    std::fs::symlink_metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o7777 == mode)
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
    fn a_record_that_differs_in_one_line_or_in_length_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("managed.json");
        let many: Vec<String> = (0..1000).map(|i| format!("/etc/f-{i}")).collect();
        assert_eq!(write_json(&path, &many, 0o600).unwrap(), Written::Replaced);
        assert_eq!(write_json(&path, &many, 0o600).unwrap(), Written::Unchanged);
        let mut one_off = many.clone();
        one_off[500] = "/etc/other".into();
        assert_eq!(
            write_json(&path, &one_off, 0o600).unwrap(),
            Written::Replaced
        );
        assert_eq!(
            write_json(&path, &one_off[..999].to_vec(), 0o600).unwrap(),
            Written::Replaced,
            "a shorter record is a change"
        );
        assert_eq!(
            write_json(&path, &one_off, 0o600).unwrap(),
            Written::Replaced
        );
        let want = serde_json::to_string_pretty(&one_off).unwrap() + "\n";
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        let mut longer = want.clone();
        longer.push('\n');
        std::fs::write(&path, longer).unwrap();
        assert_eq!(
            write_json(&path, &one_off, 0o600).unwrap(),
            Written::Replaced,
            "trailing bytes are a change"
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
