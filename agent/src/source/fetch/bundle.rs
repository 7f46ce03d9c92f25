//! Image-time seeding: a git bundle of the fleet repo, placed in the image by its build, lets a
//! device converge on its first boot before any network exists.
//!
//! The bundle is only a transport. Its head goes through the same signature check, subscription
//! and validation as a fetched head, so a bundle gives a device nothing its keys would not accept
//! from the git server. It is read in-process (git's bundle format: a header naming the refs,
//! then a pack) and its pack is indexed into the local repo with gix, so no `git` binary is
//! needed on the device.
//!
//! The same reader imports the bundles CI publishes beside the stage pointer
//! (`source::pointer::bundles`): the pointer's signed list vouches for their bytes, and the head
//! they carry is then verified like a fetched one.

use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::{FetchError, LocalRepo, ObjectId};

/// The refs a bundle carries: full name and the object it points to.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    refs: Vec<(String, ObjectId)>,
    /// Commits the bundle's pack builds on (an incremental bundle).
    prerequisites: Vec<ObjectId>,
}

impl LocalRepo {
    /// Imports the bundle's objects and points `refs/remotes/origin/<branch>` at the bundle's
    /// `refs/heads/<branch>`, as a fetch would. Returns that head, or `None` when the bundle does
    /// not carry the branch.
    pub fn import_bundle(
        &self,
        bundle: &Path,
        branch: &str,
    ) -> Result<Option<ObjectId>, FetchError> {
        let bad = |cause: String| {
            FetchError::other(
                format!("the seed bundle {}", bundle.display()),
                format!("{cause}. Fix: create it with `git bundle create seed.bundle {branch}`"),
            )
        };
        let file = std::fs::File::open(bundle).map_err(|e| {
            FetchError::other(format!("opening the seed bundle {}", bundle.display()), e)
        })?;
        let mut reader = std::io::BufReader::new(file);
        let header = read_header(&mut reader).map_err(bad)?;
        let wanted = format!("refs/heads/{branch}");
        let Some(head) = header
            .refs
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, id)| *id)
        else {
            return Ok(None);
        };
        self.unpack(
            &mut reader,
            &header,
            head,
            branch,
            "tend: seeded from the image's bundle",
        )
        .map_err(bad)?;
        Ok(Some(head))
    }

    /// Imports a bundle fetched from static hosting (`source.pointer`'s bundle list), whose
    /// size and sha256 the signed pointer vouched for: its refs must name `commit` as
    /// `refs/heads/<branch>`, which then becomes `refs/remotes/origin/<branch>` as after a fetch.
    /// The error is the reason, for the caller to report before it falls back to git.
    pub fn import_fetched_bundle(
        &self,
        bundle: &Path,
        branch: &str,
        commit: ObjectId,
    ) -> Result<(), String> {
        let file = std::fs::File::open(bundle)
            .map_err(|e| format!("opening {}: {e}", bundle.display()))?;
        let mut reader = std::io::BufReader::new(file);
        let header = read_header(&mut reader)?;
        let wanted = format!("refs/heads/{branch}");
        if !header
            .refs
            .iter()
            .any(|(name, id)| *name == wanted && *id == commit)
        {
            return Err(format!(
                "it does not carry {wanted} at {commit}, the commit the pointer names"
            ));
        }
        self.unpack(
            &mut reader,
            &header,
            commit,
            branch,
            "tend: from the pointer's bundle",
        )
    }

    /// Indexes the pack that follows a bundle's header into the local repo and points
    /// `refs/remotes/origin/<branch>` at `head`.
    fn unpack(
        &self,
        reader: &mut impl BufRead,
        header: &Header,
        head: ObjectId,
        branch: &str,
        log: &str,
    ) -> Result<(), String> {
        let repo = self.local();
        if let Some(missing) = header.prerequisites.iter().find(|id| !repo.has_object(*id)) {
            return Err(format!(
                "it builds on commit {missing}, which this device does not have (an incremental bundle)"
            ));
        }
        let pack_dir = repo.objects.store_ref().path().join("pack");
        std::fs::create_dir_all(&pack_dir)
            .map_err(|e| format!("creating {}: {e}", pack_dir.display()))?;
        gix::odb::pack::Bundle::write_to_directory(
            reader,
            Some(&pack_dir),
            &mut gix::progress::Discard,
            &AtomicBool::new(false),
            Some(repo.objects.clone()),
            gix::hash::Kind::Sha1,
            gix::odb::pack::bundle::write::Options::default(),
        )
        .map_err(|e| format!("its pack does not read: {e}"))?;
        if !repo.has_object(head) {
            return Err(format!(
                "its pack lacks the commit {head} that refs/heads/{branch} names"
            ));
        }
        repo.reference(
            format!("refs/remotes/origin/{branch}"),
            head,
            gix::refs::transaction::PreviousValue::Any,
            log,
        )
        .map_err(|e| format!("setting refs/remotes/origin/{branch}: {e}"))?;
        Ok(())
    }
}

/// Reads git's bundle header (v2 or v3) up to the blank line that precedes the pack.
fn read_header(reader: &mut impl BufRead) -> Result<Header, String> {
    let mut line = String::new();
    let mut next = |line: &mut String| next_line(reader, line);
    if !next(&mut line)? {
        return Err("it is empty".into());
    }
    let v3 = match line.as_str() {
        "# v2 git bundle" => false,
        "# v3 git bundle" => true,
        _ => return Err(format!("it starts with `{line}`, not `# v2 git bundle`")),
    };
    let mut header = Header {
        refs: Vec::new(),
        prerequisites: Vec::new(),
    };
    loop {
        if !next(&mut line)? {
            return Err("it ends before its pack".into());
        }
        if line.is_empty() {
            break;
        }
        if let Some(capability) = line.strip_prefix('@') {
            if !v3 || capability != "object-format=sha1" {
                return Err(format!(
                    "it needs the capability `{capability}`, which tend does not support"
                ));
            }
            continue;
        }
        let (prerequisite, rest) = match line.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, line.as_str()),
        };
        let (hex, name) = rest.split_once(' ').unwrap_or((rest, ""));
        let id = ObjectId::from_hex(hex.as_bytes())
            .map_err(|_| format!("its header line `{line}` does not start with an object id"))?;
        if prerequisite {
            header.prerequisites.push(id);
        } else if name.starts_with("refs/") {
            header.refs.push((name.to_string(), id));
        }
    }
    Ok(header)
}

/// One header line, without its newline; false at the end of the input.
fn next_line<R: BufRead>(reader: &mut R, line: &mut String) -> Result<bool, String> {
    line.clear();
    // The header is text; a missing newline or an absurd line means it is not a bundle.
    let n = reader
        .by_ref()
        .take(4096)
        .read_line(line)
        .map_err(|e| format!("it does not read: {e}"))?;
    if n > 0 && !line.ends_with('\n') {
        return Err("its header is not git's bundle format".into());
    }
    line.pop();
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn parse(text: &str) -> Result<Header, String> {
        read_header(&mut std::io::Cursor::new(text.as_bytes()))
    }

    #[test]
    fn v2_and_v3_headers_give_refs_and_prerequisites() {
        let h = parse(&format!(
            "# v2 git bundle\n-{B} base\n{A} refs/heads/production\n{A} HEAD\n\nPACK"
        ))
        .unwrap();
        assert_eq!(
            h.refs,
            vec![(
                "refs/heads/production".into(),
                ObjectId::from_hex(A.as_bytes()).unwrap()
            )]
        );
        assert_eq!(
            h.prerequisites,
            vec![ObjectId::from_hex(B.as_bytes()).unwrap()]
        );
        let v3 = parse(&format!(
            "# v3 git bundle\n@object-format=sha1\n{A} refs/heads/main\n\nPACK"
        ))
        .unwrap();
        assert_eq!(v3.refs.len(), 1);
    }

    #[test]
    fn what_is_not_a_bundle_is_refused_with_the_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("PACK\0\0\0\x02", "not git's bundle format"),
            ("# v2 git bundle\n", "ends before its pack"),
            ("# v9 git bundle\n\n", "not `# v2 git bundle`"),
            (
                "# v3 git bundle\n@object-format=sha256\n\n",
                "object-format=sha256",
            ),
            ("# v2 git bundle\nzz refs/heads/main\n\n", "object id"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }
}
