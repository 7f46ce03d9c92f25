//! Objects from static hosting: the git bundles CI publishes beside the stage pointer
//! (`tend publish pointer --bundles`), listed in the signed pointer with their size and sha256.
//!
//! Why: after a merge every device of a stage wants the same few objects. Served as files, they
//! are one origin fetch per bundle for a CDN, not one `git-upload-pack` per device. The CDN needs
//! no trust: the device checks the size and the hash the pointer signed before it unpacks a byte,
//! and the commit the bundle brings still goes through every check a fetched head does (its
//! signature, the pointer's commit, descent from the last verified one). A bundle that is
//! missing, truncated, corrupted or does not connect is refused, the reason reported, and git
//! serves the run as it would without bundles.
//!
//! Which one: the smallest incremental bundle whose prerequisite (the commit it builds on) the
//! device has, else the full one, else none (git).

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::net::quote::bounded;
use crate::source::fetch::{LocalRepo, ObjectId};

/// More entries than this is not a bundle list CI made.
pub const MAX_BUNDLES: usize = 64;

/// One bundle in the pointer's list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The commit the bundle builds on (40 hex); none: a full bundle of the stage's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prerequisite: Option<String>,
    /// A file name beside the pointer (no directory part).
    pub file: String,
    /// Bytes.
    pub size: u64,
    /// 64 hex digits.
    pub sha256: String,
}

/// Checks the list as parsed from a pointer's payload.
pub fn check_list(list: &[Bundle]) -> Result<(), String> {
    if list.len() > MAX_BUNDLES {
        return Err(format!(
            "it lists {} bundles, more than {MAX_BUNDLES}",
            list.len()
        ));
    }
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    for b in list {
        let name = bounded(b.file.as_bytes(), 64);
        if !plain_name(&b.file) {
            return Err(format!(
                "bundle file `{name}` is not a plain file name (letters, digits, `.`, `-`, `_`)"
            ));
        }
        if !hex(&b.sha256, 64) {
            return Err(format!("bundle {name}: sha256 is not 64 hex digits"));
        }
        if b.prerequisite.as_deref().is_some_and(|p| !hex(p, 40)) {
            return Err(format!(
                "bundle {name}: prerequisite is not a full 40-digit hex id"
            ));
        }
    }
    Ok(())
}

/// A name that stays beside the pointer: no `/`, no leading dot, nothing to escape in a URL.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The bundle to fetch: the smallest whose prerequisite `has` says the device has, else the full
/// one; a bundle larger than `max_bytes` is never chosen.
pub fn pick(list: &[Bundle], max_bytes: u64, has: impl Fn(&ObjectId) -> bool) -> Option<&Bundle> {
    let fits = |b: &&Bundle| b.size <= max_bytes;
    let connects = list
        .iter()
        .filter(fits)
        .filter(|b| {
            b.prerequisite
                .as_deref()
                .and_then(|p| ObjectId::from_hex(p.as_bytes()).ok())
                .is_some_and(|p| has(&p))
        })
        .min_by_key(|b| b.size);
    connects.or_else(|| {
        list.iter()
            .filter(fits)
            .filter(|b| b.prerequisite.is_none())
            .min_by_key(|b| b.size)
    })
}

/// The URL of `file` beside the pointer at `pointer_url`.
pub fn url_beside(pointer_url: &str, file: &str) -> String {
    let base = pointer_url.split(['?', '#']).next().unwrap_or(pointer_url);
    match base.rfind('/') {
        Some(i) => format!("{}{file}", &base[..=i]),
        None => file.to_string(),
    }
}

/// Fetches `bundle` from beside `pointer_url` into `part` (a file in the state dir), checks its
/// size and sha256 against the signed list, and imports it into `repo`, whose
/// `refs/remotes/origin/<branch>` then names `commit`. The error is why it was refused.
pub fn fetch_and_import(
    client: &crate::net::Client,
    pointer_url: &str,
    bundle: &Bundle,
    part: &Path,
    repo: &LocalRepo,
    branch: &str,
    commit: ObjectId,
) -> Result<(), String> {
    let url = url_beside(pointer_url, &bundle.file);
    let result = download(client, &url, bundle, part)
        .and_then(|()| repo.import_fetched_bundle(part, branch, commit));
    // The file's bytes are in the pack store now, or refused: either way it is not kept.
    let _ = std::fs::remove_file(part);
    result.map_err(|why| format!("bundle {url} refused: {why}"))
}

/// Streams the body into `part` while hashing it, never reading more than the signed size + 1.
fn download(
    client: &crate::net::Client,
    url: &str,
    bundle: &Bundle,
    part: &Path,
) -> Result<(), String> {
    let response = client
        .send("GET", url, &[], &[])
        .map_err(|e| format!("fetching it failed: {e}"))?;
    if response.status() != 200 {
        return Err(format!(
            "the server answered HTTP {} {}",
            response.status(),
            bounded(response.head.reason.as_bytes(), 64)
        ));
    }
    let mut body = response.into_body().take(bundle.size + 1);
    let mut file =
        std::fs::File::create(part).map_err(|e| format!("creating {}: {e}", part.display()))?;
    let mut hash = Sha256::new();
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf).map_err(|e| {
            format!(
                "reading it failed after {got} of {} bytes: {e}",
                bundle.size
            )
        })?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if got > bundle.size {
            return Err(format!(
                "it is larger than the {} bytes the signed pointer lists",
                bundle.size
            ));
        }
        hash.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| format!("writing {}: {e}", part.display()))?;
    }
    if got != bundle.size {
        return Err(format!(
            "it is truncated: {got} of the {} bytes the signed pointer lists",
            bundle.size
        ));
    }
    let sha = format!("{:x}", hash.finalize());
    if !sha.eq_ignore_ascii_case(&bundle.sha256) {
        return Err(format!(
            "its sha256 is {sha}, not {}, the one the signed pointer lists: corrupted or replaced",
            bundle.sha256
        ));
    }
    file.flush()
        .map_err(|e| format!("writing {}: {e}", part.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn entry(prerequisite: Option<&str>, file: &str, size: u64) -> Bundle {
        Bundle {
            prerequisite: prerequisite.map(str::to_string),
            file: file.into(),
            size,
            sha256: "0".repeat(64),
        }
    }

    #[test]
    fn the_smallest_connecting_bundle_is_picked_else_the_full_one_else_none() {
        let list = vec![
            entry(None, "full.bundle", 1000),
            entry(Some(A), "a.bundle", 300),
            entry(Some(B), "b.bundle", 100),
        ];
        let a = ObjectId::from_hex(A.as_bytes()).unwrap();
        let b = ObjectId::from_hex(B.as_bytes()).unwrap();
        let has = |set: Vec<ObjectId>| move |id: &ObjectId| set.contains(id);
        assert_eq!(
            pick(&list, u64::MAX, has(vec![a, b])).unwrap().file,
            "b.bundle"
        );
        assert_eq!(
            pick(&list, u64::MAX, has(vec![a])).unwrap().file,
            "a.bundle"
        );
        assert_eq!(
            pick(&list, u64::MAX, has(vec![])).unwrap().file,
            "full.bundle"
        );
        assert!(pick(&list, 999, has(vec![])).is_none(), "over the size cap");
        assert!(pick(&list[1..], u64::MAX, has(vec![])).is_none());
    }

    #[test]
    fn a_bundle_name_that_leaves_the_pointers_directory_is_refused() {
        for bad in ["../x.bundle", "a/b.bundle", ".hidden", "", "a b", "a%2f"] {
            let err = check_list(&[entry(None, bad, 1)]).unwrap_err();
            assert!(err.contains("plain file name"), "{bad}: {err}");
        }
        assert!(check_list(&[entry(Some("zz"), "ok.bundle", 1)]).is_err());
        check_list(&[entry(Some(A), "main.1234.full-x_y.bundle", 1)]).unwrap();
    }

    #[test]
    fn a_bundle_url_is_beside_the_pointer() {
        assert_eq!(
            url_beside("https://cdn.example/fleet/main.pointer?x=1", "a.bundle"),
            "https://cdn.example/fleet/a.bundle"
        );
    }
}
