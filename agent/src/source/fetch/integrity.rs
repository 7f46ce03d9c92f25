//! Is the local repo whole? Checked each time it is opened.
//!
//! A device loses power mid-write, and flash wears out. gix opens a repo without reading its
//! objects, so damage would surface later as a confusing fetch or load error, or worse, a fleet
//! tree with missing files. The checks are cheap for a fleet repo (a few MB): every pack's and
//! index's SHA-1 trailer, every loose object's hash, every ref's target, and the shallow file.

use std::io::{Read, Seek};
use std::path::Path;

/// Why the repo at `repo` cannot be trusted, or Ok.
pub(crate) fn check(repo: &gix::Repository) -> Result<(), String> {
    let objects = repo.git_dir().join("objects");
    check_packs(&objects.join("pack"))?;
    check_loose(repo, &objects)?;
    check_refs(repo)?;
    repo.shallow_commits()
        .map_err(|e| format!("the shallow file is unreadable: {e}"))?;
    Ok(())
}

/// (computed checksum, stored checksum, the 20 bytes before the stored one).
type Trailer = ([u8; 20], [u8; 20], [u8; 20]);

/// The SHA-1 of a file's contents except its last 20 bytes, those 20 bytes (the stored checksum),
/// and the 20 bytes before them (in an index: the checksum of its pack).
fn trailer(path: &Path) -> Result<Trailer, String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let len = std::fs::metadata(path).map_err(err)?.len();
    if len < 40 {
        return Err(format!("{} is truncated ({len} bytes)", path.display()));
    }
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    let mut left = len - 20;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = buf.len().min(left as usize);
        f.read_exact(&mut buf[..n]).map_err(err)?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut stored = [0u8; 20];
    f.read_exact(&mut stored).map_err(err)?;
    let computed = hasher
        .try_finalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut before = [0u8; 20];
    f.seek(std::io::SeekFrom::Start(len - 40)).map_err(err)?;
    f.read_exact(&mut before).map_err(err)?;
    let mut c = [0u8; 20];
    c.copy_from_slice(computed.as_bytes());
    Ok((c, stored, before))
}

fn check_packs(dir: &Path) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "idx") {
            continue;
        }
        let pack = path.with_extension("pack");
        if !pack.exists() {
            return Err(format!(
                "{} has no pack file {}",
                path.display(),
                pack.display()
            ));
        }
        let (computed, stored, _) = trailer(&pack)?;
        if computed != stored {
            return Err(format!(
                "{} is damaged (its checksum does not match)",
                pack.display()
            ));
        }
        let (idx_computed, idx_stored, idx_names_pack) = trailer(&path)?;
        if idx_computed != idx_stored {
            return Err(format!(
                "{} is damaged (its checksum does not match)",
                path.display()
            ));
        }
        if idx_names_pack != stored {
            return Err(format!(
                "{} does not belong to {}",
                path.display(),
                pack.display()
            ));
        }
    }
    Ok(())
}

fn check_loose(repo: &gix::Repository, objects: &Path) -> Result<(), String> {
    let Ok(fanout) = std::fs::read_dir(objects) else {
        return Err(format!("{} is missing", objects.display()));
    };
    for dir in fanout.flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        if name.len() != 2 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let rest = file.file_name().to_string_lossy().into_owned();
            let Ok(id) = gix::ObjectId::from_hex(format!("{name}{rest}").as_bytes()) else {
                continue;
            };
            let obj = repo
                .find_object(id)
                .map_err(|e| format!("loose object {id} is unreadable: {e}"))?;
            let actual = gix::objs::compute_hash(repo.object_hash(), obj.kind, &obj.data)
                .map_err(|e| format!("loose object {id}: {e}"))?;
            if actual != id {
                return Err(format!(
                    "loose object {id} is damaged (its content hashes to {actual})"
                ));
            }
        }
    }
    Ok(())
}

fn check_refs(repo: &gix::Repository) -> Result<(), String> {
    let platform = repo
        .references()
        .map_err(|e| format!("the refs are unreadable: {e}"))?;
    let all = platform
        .all()
        .map_err(|e| format!("the refs are unreadable: {e}"))?;
    for r in all {
        let r = r.map_err(|e| format!("a ref is unreadable: {e}"))?;
        let Some(id) = r.target().try_id().map(ToOwned::to_owned) else {
            continue;
        };
        if !repo.has_object(id) {
            return Err(format!(
                "{} points to {id}, which is missing",
                r.name().as_bstr()
            ));
        }
    }
    Ok(())
}
