//! OpenPGP signatures on git objects (`gpg.format=openpgp`, git's default), checked against the
//! pinned keyring like `git verify-commit` with gpg: the detached signature must verify over the
//! payload with a signing-capable key from the keyring that is neither revoked nor expired now.
//!
//! Stricter than gpg's defaults where a device must be: document signatures only (binary or
//! text), and no MD5, SHA-1 or RIPEMD-160 (SHA-1 signatures are forgeable by chosen prefix).

use std::io::Cursor;

use pgp::composed::{Deserializable, StandaloneSignature};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType};

use super::keyring::{hex, Keyring};
use super::sshsig::stamp;
use super::{Signer, VerifyError};

/// Verifies `armor` (the PGP SIGNATURE block) over `payload` at time `now`.
pub(crate) fn verify(
    armor: &[u8],
    payload: &[u8],
    now: i64,
    ring: Option<&Keyring>,
) -> Result<Signer, VerifyError> {
    let malformed = |e: String| VerifyError::malformed("OpenPGP signature", e);
    let (sigs, _headers) = StandaloneSignature::from_armor_many(Cursor::new(armor))
        .map_err(|e| malformed(format!("cannot decode the armor: {e}")))?;
    let sigs: Vec<StandaloneSignature> = sigs
        .collect::<Result<_, _>>()
        .map_err(|e| malformed(format!("cannot decode the signature: {e}")))?;
    if sigs.is_empty() {
        return Err(malformed("the armor holds no signature".into()));
    }
    // git writes one signature; with several, any one by a trusted key is enough (as with gpg).
    let mut first_err = None;
    for sig in &sigs {
        match verify_one(&sig.signature, payload, now, ring) {
            Ok(signer) => return Ok(signer),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| malformed("no signature".into())))
}

fn issuer(sig: &Signature) -> String {
    if let Some(fp) = sig.issuer_fingerprint().first() {
        hex(fp.as_bytes())
    } else if let Some(id) = sig.issuer().first() {
        format!("with key id {}", hex(id.as_ref()))
    } else {
        "(no issuer)".into()
    }
}

fn verify_one(
    sig: &Signature,
    payload: &[u8],
    now: i64,
    ring: Option<&Keyring>,
) -> Result<Signer, VerifyError> {
    let malformed = |e: String| VerifyError::malformed("OpenPGP signature", e);
    if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
        return Err(malformed(format!(
            "a {:?} signature is not a signature over a document; sign with `git commit -S`",
            sig.typ()
        )));
    }
    let hash = sig.hash_alg();
    if matches!(
        hash,
        None | Some(
            HashAlgorithm::None
                | HashAlgorithm::Md5
                | HashAlgorithm::Sha1
                | HashAlgorithm::Ripemd160
        )
    ) {
        return Err(malformed(format!(
            "the signature uses the weak hash {}; re-sign with SHA-256 or better \
             (gpg: personal-digest-preferences SHA512 SHA384 SHA256)",
            hash.map_or_else(|| "?".into(), |h| h.to_string())
        )));
    }
    let fingerprint = issuer(sig);
    let Some(ring) = ring else {
        return Err(VerifyError::UnknownSigner {
            method: "openpgp",
            fingerprint,
            fix: "no OpenPGP keyring is configured; set verify.openpgp_keyring in \
                  /etc/tend/tend.yaml to a file made with `gpg --export --armor <fingerprint>`"
                .into(),
        });
    };
    let Some((cert, key)) = ring.find(sig) else {
        return Err(VerifyError::UnknownSigner {
            method: "openpgp",
            fingerprint,
            fix: format!(
                "if this signer is trusted, append `gpg --export --armor <fingerprint>` of the key \
                 to {}; otherwise re-sign with a key from it",
                ring.file
            ),
        });
    };
    let fingerprint = hex(key.fingerprint.as_bytes());
    key.verify(sig, payload)
        .map_err(|e| VerifyError::BadSignature {
            method: "openpgp",
            fingerprint: fingerprint.clone(),
            detail: e.to_string(),
        })?;
    let made = sig.created().map(|t| t.timestamp());
    if made.is_none_or(|m| m < key.created) {
        return Err(VerifyError::BadSignature {
            method: "openpgp",
            fingerprint,
            detail: "the signature has no creation time or predates its key".into(),
        });
    }
    if let Some(reason) = &key.revoked {
        return Err(VerifyError::Revoked {
            fingerprint,
            reason: reason.clone(),
            file: ring.file.clone(),
        });
    }
    if let Some(exp) = key.expires.filter(|&e| now >= e) {
        return Err(VerifyError::OutsideValidity {
            fingerprint,
            detail: format!("the key expired on {}", stamp(exp)),
            fix: format!(
                "extend the key's expiry (`gpg --quick-set-expire`) and re-export it to {}, \
                 or re-sign with a valid key",
                ring.file
            ),
        });
    }
    if let Some(d) = sig.signature_expiration_time().filter(|d| !d.is_zero()) {
        let until = made.unwrap_or_default().saturating_add(d.num_seconds());
        if now >= until {
            return Err(VerifyError::OutsideValidity {
                fingerprint,
                detail: format!("the signature itself expired on {}", stamp(until)),
                fix: "re-sign without a signature expiry".into(),
            });
        }
    }
    if !key.can_sign {
        return Err(VerifyError::UnknownSigner {
            method: "openpgp",
            fingerprint,
            fix: format!(
                "the key is in {} but not certified for signing (its key flags or its subkey \
                 back-signature); sign with the certificate's signing key",
                ring.file
            ),
        });
    }
    Ok(Signer {
        method: "openpgp",
        principal: cert.user_id.clone(),
        fingerprint,
    })
}
