//! Signature verification of fleet commits and tags, in-process (no gpg or ssh-keygen on the
//! device): tend applies only what a pinned key signed.
//!
//! Two trust roots, either or both: an SSH `allowed_signers` file in git's format (SSH signatures,
//! namespace `git`, validity windows checked at the committer time, as git does) and an OpenPGP
//! keyring (expiry and revocation checked at the current time, as gpg does). Each signature goes
//! to the root of its format; a signature of a format with no configured root is an unknown signer.
//!
//! What is refused up front rather than half-supported (see `allowed_signers` and `keyring`):
//! SSH certificates and `cert-authority`, FIDO (`sk-`) keys, DSA, RSA below 2048 bits, X.509
//! signatures, OpenPGP designated revokers, and MD5/SHA-1 OpenPGP signatures.

mod allowed_signers;
mod error;
mod keyring;
mod object;
mod openpgp;
mod pattern;
mod policy;
mod sshsig;
mod sshtime;

#[cfg(test)]
mod tests;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use error::VerifyError;
pub use policy::{Approved, Policy, PolicyRoots, FILE as POLICY_FILE};

use allowed_signers::AllowedSigners;
use keyring::Keyring;
use object::{SigFormat, SignedObject};

/// Trust-root files are small; anything bigger is a mistake (or an attack on the parser).
const MAX_ALLOWED_SIGNERS: u64 = 1024 * 1024;
const MAX_KEYRING: u64 = 4 * 1024 * 1024;

/// The keys this device trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustRoots {
    allowed_signers: Option<AllowedSigners>,
    keyring: Option<Keyring>,
    policy: Option<PolicyRoots>,
}

/// Who signed a verified object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signer {
    /// "ssh" or "openpgp".
    pub method: &'static str,
    /// The allowed_signers principals field, or the OpenPGP primary user id.
    pub principal: String,
    /// `SHA256:…` for SSH keys; the signing (sub)key's hex fingerprint for OpenPGP (git's `%GF`).
    pub fingerprint: String,
}

impl TrustRoots {
    /// Loads the configured files. Paths are device paths, resolved under `root`; None means not
    /// configured. A configured file that is missing, unreadable or empty is an error, never an
    /// empty trust root.
    pub fn load(
        root: &Path,
        allowed_signers: Option<&str>,
        openpgp_keyring: Option<&str>,
    ) -> Result<Self, VerifyError> {
        let allowed_signers = match allowed_signers {
            Some(path) => {
                let text = read_signers_file(root, path, "allowed_signers")?;
                Some(AllowedSigners::parse(path, &text)?)
            }
            None => None,
        };
        let keyring = match openpgp_keyring {
            Some(path) => {
                let bytes = read_bounded(root, path, MAX_KEYRING, "openpgp_keyring")?;
                Some(Keyring::parse(path, &bytes)?)
            }
            None => None,
        };
        Ok(Self {
            allowed_signers,
            keyring,
            policy: None,
        })
    }

    /// Adds `verify.policy_roots` (a device path): branch heads then need the approvals the
    /// repo's root-signed policy asks for, instead of a signature by a pinned key.
    pub fn load_policy(
        &mut self,
        root: &Path,
        path: &str,
        threshold: u32,
    ) -> Result<(), VerifyError> {
        let text = read_signers_file(root, path, "policy_roots")?;
        self.policy = Some(PolicyRoots::parse(path, &text, threshold)?);
        Ok(())
    }

    /// The policy roots, when the device uses an in-repo policy.
    pub fn policy(&self) -> Option<&PolicyRoots> {
        self.policy.as_ref()
    }

    /// No keys configured: callers warn loudly, every run.
    pub fn is_empty(&self) -> bool {
        self.allowed_signers.is_none() && self.keyring.is_none() && self.policy.is_none()
    }

    /// For logs: which files and how many keys.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = &self.allowed_signers {
            parts.push(format!(
                "{} SSH key line(s) from {}",
                a.entries.len(),
                a.file
            ));
        }
        if let Some(k) = &self.keyring {
            parts.push(format!("{} OpenPGP key(s) from {}", k.certs.len(), k.file));
        }
        if let Some(p) = &self.policy {
            parts.push(format!(
                "{} policy root line(s) from {} (threshold {})",
                p.signers.entries.len(),
                p.signers.file,
                p.threshold
            ));
        }
        if parts.is_empty() {
            "no trusted keys".into()
        } else {
            parts.join(", ")
        }
    }

    fn where_to_add(&self) -> String {
        let files: Vec<&str> = self
            .allowed_signers
            .iter()
            .map(|a| a.file.as_str())
            .chain(self.keyring.iter().map(|k| k.file.as_str()))
            .collect();
        if files.is_empty() {
            "configure verify.allowed_signers or verify.openpgp_keyring in /etc/tend/tend.yaml"
                .into()
        } else {
            format!("with a key listed in {}", files.join(" or "))
        }
    }
}

/// An allowed_signers-format device file (`verify.<key>`) as text.
fn read_signers_file(root: &Path, path: &str, key: &str) -> Result<String, VerifyError> {
    let bytes = read_bounded(root, path, MAX_ALLOWED_SIGNERS, key)?;
    String::from_utf8(bytes).map_err(|_| {
        VerifyError::config(
            path,
            0,
            "not UTF-8 text; it should be an allowed_signers file",
        )
    })
}

/// Reads a device file under `root`, following symlinks inside the root, at most `max` bytes.
fn read_bounded(
    root: &Path,
    device_path: &str,
    max: u64,
    key: &str,
) -> Result<Vec<u8>, VerifyError> {
    let fail = |m: String| VerifyError::config(device_path, 0, m);
    let host = resolve_file(root, device_path).map_err(fail)?;
    let file = fs::File::open(&host).map_err(|e| {
        fail(format!(
            "cannot read it ({e}); create it, or remove verify.{key} from the configuration"
        ))
    })?;
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(fail("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(fail(format!(
            "larger than {max} bytes; it should hold only public keys"
        )));
    }
    Ok(bytes)
}

/// Resolves a device path under `root`, following a symlink at the last component too (a
/// trust root linked to an absolute path must not escape the root).
fn resolve_file(root: &Path, device_path: &str) -> Result<PathBuf, String> {
    if !device_path.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    let mut path = PathBuf::from(device_path);
    for _ in 0..40 {
        let dev = path.to_string_lossy().into_owned();
        let host = tend_roles::fsutil::resolve_in_root(root, &dev).map_err(|e| e.to_string())?;
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&host).map_err(|e| e.to_string())?;
                path = if target.is_absolute() {
                    target
                } else {
                    path.parent().unwrap_or(Path::new("/")).join(target)
                };
            }
            _ => return Ok(host),
        }
    }
    Err("too many levels of symbolic links".into())
}

pub(crate) fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Verifies a raw commit: the loose object's content as `git cat-file commit <id>` prints it.
pub fn verify_commit(raw_commit: &[u8], trust: &TrustRoots) -> Result<Signer, VerifyError> {
    check(object::split_commit(raw_commit)?, trust, now())
}

/// Verifies a raw annotated tag, as `git cat-file tag <name>` prints it.
pub fn verify_tag(raw_tag: &[u8], trust: &TrustRoots) -> Result<Signer, VerifyError> {
    check(object::split_tag(raw_tag)?, trust, now())
}

/// The committer time of a raw commit, as the signature check judges it (seconds since the epoch).
pub fn commit_time(raw_commit: &[u8]) -> Result<i64, VerifyError> {
    object::split_commit(raw_commit)?
        .time
        .ok_or_else(|| VerifyError::malformed("commit", "no committer time"))
}

/// The tagger time of a raw annotated tag; None for an old tag without a tagger line (its
/// signature is then judged at the current time, so it cannot be backdated).
pub fn tag_time(raw_tag: &[u8]) -> Result<Option<i64>, VerifyError> {
    Ok(object::split_tag(raw_tag)?.time)
}

pub(crate) use sshsig::stamp;

/// Verifies a detached signature `armor` (an SSH SIGNATURE or PGP SIGNATURE block) over
/// `payload`, as the same roots verify commits: SSH in the `git` namespace with the key's
/// validity window judged at `time` (what the signer dated the document), OpenPGP expiry and
/// revocation at the current time. `kind` names the document in messages ("pointer").
pub fn verify_detached(
    kind: &'static str,
    payload: &[u8],
    armor: &[u8],
    time: i64,
    trust: &TrustRoots,
) -> Result<Signer, VerifyError> {
    let obj = SignedObject {
        kind,
        payload: payload.to_vec(),
        signature: Some(armor.to_vec()),
        time: Some(time),
    };
    check(obj, trust, now())
}

/// The check itself, with the current time given (OpenPGP expiry is judged at `now`; SSH validity
/// at the object's own time, or `now` for a tag without a tagger).
fn check(obj: SignedObject, trust: &TrustRoots, now: i64) -> Result<Signer, VerifyError> {
    match obj.signature()? {
        None => Err(VerifyError::Unsigned {
            object: obj.kind,
            fix: format!(
                "sign it (`git commit -S`, `git tag -s`) {}",
                trust.where_to_add()
            ),
        }),
        Some((SigFormat::Ssh, sig)) => sshsig::verify(
            sig,
            &obj.payload,
            obj.time.unwrap_or(now),
            trust.allowed_signers.as_ref(),
        ),
        Some((SigFormat::OpenPgp, sig)) => {
            openpgp::verify(sig, &obj.payload, now, trust.keyring.as_ref())
        }
    }
}
