//! SSH signatures (OpenSSH PROTOCOL.sshsig) on git objects, checked like `git verify-commit` with
//! `gpg.format=ssh`: the signature must verify, its namespace must be `git`, and its key must be
//! listed in allowed_signers on a line that allows the `git` namespace and whose validity window
//! contains the object's committer (or tagger) time.

use ssh_key::{HashAlg, PublicKey, SshSig};

use super::allowed_signers::{AllowedSigners, Entry};
use super::{Signer, VerifyError};

const NAMESPACE: &str = "git";

/// Verifies `armor` (the SSH SIGNATURE block) over `payload`; `time` is the object's time.
pub(crate) fn verify(
    armor: &[u8],
    payload: &[u8],
    time: i64,
    signers: Option<&AllowedSigners>,
) -> Result<Signer, VerifyError> {
    let sig = SshSig::from_pem(armor)
        .map_err(|e| VerifyError::malformed("SSH signature", format!("cannot decode it: {e}")))?;
    let key = PublicKey::new(sig.public_key().clone(), "");
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let unknown = |fix: String| VerifyError::UnknownSigner {
        method: "ssh",
        fingerprint: fingerprint.clone(),
        fix,
    };
    let key_line = key.to_openssh().unwrap_or_default();
    let Some(signers) = signers else {
        return Err(unknown(format!(
            "no allowed_signers file is configured; set verify.allowed_signers in \
             /etc/tend/tend.yaml and list the key there: `<principal> namespaces=\"git\" {key_line}`"
        )));
    };
    let entries: Vec<&Entry> = signers.entries_for(sig.public_key()).collect();
    if entries.is_empty() {
        return Err(unknown(format!(
            "if this signer is trusted, add the key to {}: `<principal> namespaces=\"git\" {key_line}`; \
             otherwise re-sign with a listed key",
            signers.file
        )));
    }
    // The signature's own namespace is part of what was signed, so check the bytes first: a
    // tampered namespace field then shows as a bad signature, not as a policy mismatch.
    key.verify(sig.namespace(), payload, &sig)
        .map_err(|e| VerifyError::BadSignature {
            method: "ssh",
            fingerprint: fingerprint.clone(),
            detail: e.to_string(),
        })?;
    if sig.namespace() != NAMESPACE {
        return Err(VerifyError::WrongNamespace {
            detail: format!(
                "the signature was made for namespace \"{}\", not \"{NAMESPACE}\"",
                sig.namespace()
            ),
            fix: "sign with git itself (`git commit -S` / `git tag -s` with gpg.format=ssh), \
                  which signs in the git namespace"
                .into(),
        });
    }
    if let Some(ok) = entries
        .iter()
        .find(|e| e.allows_namespace(NAMESPACE) && e.valid_at(time))
    {
        return Ok(Signer {
            method: "ssh",
            principal: ok.principals.clone(),
            fingerprint,
        });
    }
    if let Some(e) = entries.iter().find(|e| e.allows_namespace(NAMESPACE)) {
        return Err(VerifyError::OutsideValidity {
            fingerprint,
            detail: format!(
                "{}:{} allows it {}, and the object is dated {}",
                signers.file,
                e.line,
                window(e),
                stamp(time)
            ),
            fix: "re-sign with a key that is valid now, or correct valid-after/valid-before \
                  if the window is wrong"
                .into(),
        });
    }
    let e = entries[0];
    Err(VerifyError::WrongNamespace {
        detail: format!(
            "{}:{} allows this key only for namespaces=\"{}\"",
            signers.file,
            e.line,
            e.namespaces.as_deref().unwrap_or_default()
        ),
        fix: "add git to that line's namespaces=\"…\" if the key may sign commits".into(),
    })
}

fn window(e: &Entry) -> String {
    match (e.valid_after, e.valid_before) {
        (Some(a), Some(b)) => format!("from {} to {}", stamp(a), stamp(b)),
        (Some(a), None) => format!("from {}", stamp(a)),
        (None, Some(b)) => format!("until {}", stamp(b)),
        (None, None) => "at any time".into(),
    }
}

/// A UTC timestamp for messages.
pub(crate) fn stamp(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| format!("@{secs}"))
}
