//! `tend publish pointer`, for the fleet's CI: the pointer for the head of a stage's branch,
//! signed with `ssh-keygen -Y sign` in the `git` namespace (the one the device verifies), so
//! nobody hand-writes one. It runs where CI signs commits, not on a device.
//!
//! The sequence defaults to the issue time in Unix seconds: it grows with every publication
//! whatever the commit (a rollback to an older commit is then a new, higher pointer, not a
//! replay), and two runs in the same second name the same head. CI that publishes more often
//! than once a second, or wants its own counter, passes `--sequence`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Document;

/// What to publish.
pub struct Publish {
    /// The fleet repo (a work tree or a bare repo).
    pub repo: PathBuf,
    pub stage: String,
    pub sequence: Option<u64>,
    /// A duration from now (`24h`, `7d`, `90m`, `3600s`) or an RFC 3339 time.
    pub expires: String,
    /// The private SSH key; default: the repo's `user.signingkey`.
    pub key: Option<PathBuf>,
    /// Bundles to write beside the pointer and list in it (`--bundles`).
    pub bundles: Option<super::publish_bundles::BundleOut>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{repo}: {why}")]
    Repo { repo: String, why: String },
    #[error(
        "--expires `{value}`: {why}; give a duration such as 24h, 7d, 90m, or an RFC 3339 time"
    )]
    Expires { value: String, why: String },
    #[error("bundles in {dir}: {why}")]
    Bundles { dir: String, why: String },
    #[error("signing the pointer with {key}: {why}")]
    Sign { key: String, why: String },
}

/// Makes the signed pointer file for `p`, issued at `now` (Unix seconds).
pub fn pointer(p: &Publish, now: i64) -> Result<Vec<u8>, PublishError> {
    let repo_err = |why: String| PublishError::Repo {
        repo: p.repo.display().to_string(),
        why,
    };
    let repo = gix::open(&p.repo).map_err(|e| repo_err(format!("not a git repo: {e}")))?;
    let name = format!("refs/heads/{}", p.stage);
    let mut reference = repo
        .try_find_reference(name.as_str())
        .map_err(|e| repo_err(format!("reading {name}: {e}")))?
        .ok_or_else(|| repo_err(format!("no branch {}; push the stage first", p.stage)))?;
    let commit = reference
        .peel_to_commit()
        .map_err(|e| repo_err(format!("{name} does not lead to a commit: {e}")))?
        .id;
    let key = match &p.key {
        Some(k) => k.clone(),
        None => signing_key(&repo).map_err(repo_err)?,
    };
    let expires = expiry(&p.expires, now).map_err(|why| PublishError::Expires {
        value: p.expires.clone(),
        why,
    })?;
    if expires <= now {
        return Err(PublishError::Expires {
            value: p.expires.clone(),
            why: "it is not in the future".into(),
        });
    }
    let bundles = match &p.bundles {
        Some(b) => b.write(&p.repo, &p.stage, &commit.to_string())?,
        None => Vec::new(),
    };
    let doc = Document {
        stage: p.stage.clone(),
        commit: commit.to_string(),
        sequence: p.sequence.unwrap_or(now.max(0) as u64),
        issued: rfc3339(now),
        expires: rfc3339(expires),
        bundles,
    };
    sign(&doc, &key)
}

/// The signed file for `doc`: its JSON line, then the SSH signature block over that line.
pub fn sign(doc: &Document, key: &Path) -> Result<Vec<u8>, PublishError> {
    let fail = |why: String| PublishError::Sign {
        key: key.display().to_string(),
        why,
    };
    let mut payload = serde_json::to_vec(doc).map_err(|e| fail(e.to_string()))?;
    payload.push(b'\n');
    // With no file, ssh-keygen signs its standard input and writes the signature to stdout.
    let mut child = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "git", "-f"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(format!(
                "cannot run ssh-keygen ({e}); install openssh-client"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&payload)
            .map_err(|e| fail(format!("writing to ssh-keygen: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("ssh-keygen: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "ssh-keygen -Y sign failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let sig = out.stdout;
    if !sig.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
        return Err(fail("ssh-keygen printed no signature".into()));
    }
    payload.extend_from_slice(&sig);
    Ok(payload)
}

/// The repo's `user.signingkey` as a key file (what `git commit -S` signs with, gpg.format=ssh).
fn signing_key(repo: &gix::Repository) -> Result<PathBuf, String> {
    let config = repo.config_snapshot();
    let value = config.string("user.signingkey").ok_or(
        "no --key and no user.signingkey in the repo's git config; pass --key with the private SSH key",
    )?;
    let value = value.to_string();
    if value.starts_with("key::") || value.starts_with("ssh-") {
        return Err(format!(
            "user.signingkey is a literal key ({}…), not a file; pass --key with the private SSH key",
            &value[..value.len().min(16)]
        ));
    }
    let path = match value.strip_prefix("~/") {
        Some(rest) => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(rest),
        None => PathBuf::from(value),
    };
    // git accepts the public half and finds the private key in the agent; ssh-keygen -Y sign
    // needs the private file, which sits next to it.
    Ok(match path.to_str().and_then(|p| p.strip_suffix(".pub")) {
        Some(private) if Path::new(private).is_file() => PathBuf::from(private),
        _ => path,
    })
}

/// `--expires`: a duration after `now`, or an RFC 3339 time; Unix seconds.
pub fn expiry(value: &str, now: i64) -> Result<i64, String> {
    if let Ok(t) = value.parse::<jiff::Timestamp>() {
        return Ok(t.as_second());
    }
    let (digits, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let n: i64 = digits
        .parse()
        .map_err(|_| "neither a duration nor an RFC 3339 time".to_string())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit `{unit}` (use s, m, h or d)")),
    };
    n.checked_mul(scale)
        .and_then(|d| now.checked_add(d))
        .ok_or_else(|| "too far in the future".into())
}

fn rfc3339(unix: i64) -> String {
    crate::clock::rfc3339(unix.max(0) as u64)
}
