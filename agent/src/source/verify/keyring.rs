//! The pinned OpenPGP keyring: which keys may sign, decided once at load time.
//!
//! rPGP parses certificates but leaves policy to the caller, so it is decided here, following
//! RFC 9580 and what gpg does for `git verify-commit`:
//! - a certificate needs a valid self-signature; the newest one gives its key flags, expiry and
//!   primary user id;
//! - a subkey counts only with a valid binding signature from the primary, and signs only if that
//!   binding says so (key flag S) and carries a valid back-signature from the subkey;
//! - a revocation made by the key itself revokes it (designated third-party revokers are not
//!   honoured: a device cannot fetch their keys, so list only keys you can revoke yourself);
//! - expiry is kept as a time and checked at verification.
//!
//! A certificate whose self-signatures do not verify fails the whole file: a broken trust root
//! must be loud, not quietly smaller.

use std::io::Cursor;

use pgp::composed::{Deserializable, SignedPublicKey};
use pgp::packet::{self, Signature, SignatureType, SubpacketData};
use pgp::types::{Fingerprint, KeyDetails, KeyId, PublicKeyTrait, Tag};

use super::VerifyError;

const BEGIN_PUBLIC: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const END_PUBLIC: &str = "-----END PGP PUBLIC KEY BLOCK-----";
const BEGIN_PRIVATE: &str = "-----BEGIN PGP PRIVATE KEY BLOCK-----";

/// The key material a signature is checked with.
#[derive(Debug, Clone)]
pub(crate) enum Material {
    Primary(packet::PublicKey),
    Sub(packet::PublicSubkey),
}

/// One primary key or subkey, with the policy decided for it.
#[derive(Debug, Clone)]
pub(crate) struct KeyEntry {
    pub material: Material,
    pub fingerprint: Fingerprint,
    pub key_id: KeyId,
    pub created: i64,
    /// Allowed to make data signatures.
    pub can_sign: bool,
    /// When it stops being valid (seconds since the epoch); None = never.
    pub expires: Option<i64>,
    /// Revocation reason, if revoked.
    pub revoked: Option<String>,
}

/// A certificate: a primary key, its user id and subkeys.
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    pub user_id: String,
    /// Primary first.
    pub keys: Vec<KeyEntry>,
}

#[derive(Debug, Clone)]
pub(crate) struct Keyring {
    /// The device path, for messages.
    pub file: String,
    pub certs: Vec<Cert>,
}

impl KeyEntry {
    pub fn verify(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        match &self.material {
            Material::Primary(k) => sig.verify(k, data),
            Material::Sub(k) => sig.verify(k, data),
        }
    }
}

impl Keyring {
    /// Parses an armored keyring (one or more PUBLIC KEY BLOCKs) or a binary `gpg --export`.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self, VerifyError> {
        let mut certs = Vec::new();
        let text = String::from_utf8_lossy(bytes);
        if text.contains(BEGIN_PRIVATE) {
            return Err(VerifyError::config(
                file,
                0,
                "contains a PRIVATE key: a device must hold only public keys; replace it with \
                 `gpg --export --armor <fingerprint>` and rotate the exposed key",
            ));
        }
        let blocks = armor_blocks(&text);
        if !blocks.is_empty() {
            for (line, block) in blocks {
                let keys = SignedPublicKey::from_armor_many(Cursor::new(block.into_bytes()))
                    .map_err(|e| bad_key(file, line, e))?
                    .0;
                for key in keys {
                    certs.push(Cert::evaluate(
                        &key.map_err(|e| bad_key(file, line, e))?,
                        file,
                        line,
                    )?);
                }
            }
        } else if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            let keys = SignedPublicKey::from_bytes_many(Cursor::new(bytes))
                .map_err(|e| bad_key(file, 0, e))?;
            for key in keys {
                certs.push(Cert::evaluate(
                    &key.map_err(|e| bad_key(file, 0, e))?,
                    file,
                    0,
                )?);
            }
        }
        if certs.is_empty() {
            return Err(VerifyError::config(
                file,
                0,
                "no public key found; write it with `gpg --export --armor <fingerprint> > FILE`, \
                 or remove verify.openpgp_keyring from the configuration",
            ));
        }
        Ok(Self {
            file: file.to_string(),
            certs,
        })
    }

    /// The key a signature names as its issuer, with its certificate.
    pub fn find(&self, sig: &Signature) -> Option<(&Cert, &KeyEntry)> {
        let fps = sig.issuer_fingerprint();
        let ids = sig.issuer();
        self.certs.iter().find_map(|c| {
            c.keys
                .iter()
                .find(|k| fps.contains(&&k.fingerprint) || ids.contains(&&k.key_id))
                .map(|k| (c, k))
        })
    }
}

fn bad_key(file: &str, line: u64, e: pgp::errors::Error) -> VerifyError {
    VerifyError::config(
        file,
        line,
        format!("cannot read the OpenPGP key ({e}); re-export it with `gpg --export --armor <fingerprint>`"),
    )
}

/// Each armored public key block with the 1-based line it starts on.
fn armor_blocks(text: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut current: Option<(u64, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == BEGIN_PUBLIC {
            current = Some((i as u64 + 1, String::new()));
        }
        if let Some((_, buf)) = current.as_mut() {
            buf.push_str(trimmed);
            buf.push('\n');
        }
        if trimmed == END_PUBLIC {
            out.extend(current.take());
        }
    }
    // An unterminated block is still handed to the parser, which then says what is wrong.
    out.extend(current);
    out
}

fn created(sig: &Signature) -> i64 {
    sig.created().map_or(i64::MIN, |t| t.timestamp())
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

/// Key creation + a key-expiration-time subpacket; zero means "never".
fn expiry(key_created: i64, sig: &Signature) -> Option<i64> {
    sig.key_expiration_time()
        .filter(|d| !d.is_zero())
        .map(|d| key_created.saturating_add(d.num_seconds()))
}

fn reason(sig: &Signature) -> String {
    let code = sig
        .revocation_reason_code()
        .map_or_else(|| "no reason given".to_string(), |c| format!("{c:?}"));
    match sig.revocation_reason_string() {
        Some(text) if !text.is_empty() => {
            format!("{code}: {}", String::from_utf8_lossy(text))
        }
        _ => code,
    }
}

impl Cert {
    fn evaluate(key: &SignedPublicKey, file: &str, line: u64) -> Result<Self, VerifyError> {
        let primary = &key.primary_key;
        let fpr = hex(primary.fingerprint().as_bytes());
        let p_created = primary.created_at().timestamp();

        // Valid self-signatures: user id certifications and direct-key signatures by the primary.
        // A user id its owner revoked contributes nothing (its revocation is no self-signature
        // either: taking it as the newest would drop the key's expiry).
        let mut self_sigs: Vec<(&Signature, Option<&pgp::types::SignedUser>)> = Vec::new();
        for user in &key.details.users {
            let by_primary = |s: &&Signature| {
                s.verify_certification(primary, Tag::UserId, &user.id)
                    .is_ok()
            };
            let revoked = user
                .signatures
                .iter()
                .filter(|s| s.typ() == Some(SignatureType::CertRevocation))
                .any(|s| by_primary(&s));
            if revoked {
                continue;
            }
            for sig in user.signatures.iter().filter(|s| {
                matches!(
                    s.typ(),
                    Some(
                        SignatureType::CertGeneric
                            | SignatureType::CertPersona
                            | SignatureType::CertCasual
                            | SignatureType::CertPositive
                    )
                )
            }) {
                if by_primary(&sig) {
                    self_sigs.push((sig, Some(user)));
                }
            }
        }
        for sig in &key.details.direct_signatures {
            if sig.typ() == Some(SignatureType::Key) && sig.verify_key(primary).is_ok() {
                self_sigs.push((sig, None));
            }
        }
        let Some(&(newest, _)) = self_sigs.iter().max_by_key(|(s, _)| created(s)) else {
            return Err(VerifyError::config(
                file,
                line,
                format!(
                    "key {fpr} has no valid self-signature on a user id that is not revoked, so \
                     nothing binds it to its owner; re-export it from the owner's keyring with \
                     `gpg --export --armor {fpr}`, or remove it"
                ),
            ));
        };
        // The primary user id: one flagged primary in a valid self-signature, else the first.
        let user = self_sigs
            .iter()
            .filter_map(|(s, u)| u.map(|u| (s, u)))
            .max_by_key(|(s, _)| (s.is_primary(), created(s)))
            .map(|(_, u)| String::from_utf8_lossy(u.id.id()).into_owned())
            .unwrap_or_default();
        let revoked = key
            .details
            .revocation_signatures
            .iter()
            .find(|s| s.verify_key(primary).is_ok())
            .map(reason);
        let expires = expiry(p_created, newest);
        let mut keys = vec![KeyEntry {
            material: Material::Primary(primary.clone()),
            fingerprint: primary.fingerprint(),
            key_id: primary.key_id(),
            created: p_created,
            can_sign: !has_key_flags(newest) || newest.key_flags().sign(),
            expires,
            revoked: revoked.clone(),
        }];

        for sub in &key.public_subkeys {
            let s_created = sub.key.created_at().timestamp();
            let bindings = sub.signatures.iter().filter(|s| {
                s.typ() == Some(SignatureType::SubkeyBinding)
                    && s.verify_subkey_binding(primary, &sub.key).is_ok()
            });
            // A subkey without a valid binding is not part of this certificate.
            let Some(binding) = bindings.max_by_key(|s| created(s)) else {
                continue;
            };
            let backsig_ok = binding
                .embedded_signature()
                .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
            let sub_revoked = sub
                .signatures
                .iter()
                .find(|s| {
                    s.typ() == Some(SignatureType::SubkeyRevocation)
                        && s.verify_subkey_binding(primary, &sub.key).is_ok()
                })
                .map(reason);
            // The certificate's own expiry bounds every subkey.
            let sub_expires = match (expiry(s_created, binding), expires) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            keys.push(KeyEntry {
                material: Material::Sub(sub.key.clone()),
                fingerprint: sub.key.fingerprint(),
                key_id: sub.key.key_id(),
                created: s_created,
                can_sign: binding.key_flags().sign() && backsig_ok,
                expires: sub_expires,
                revoked: revoked.clone().or(sub_revoked),
            });
        }
        Ok(Cert {
            user_id: user,
            keys,
        })
    }
}

/// Upper-case hex, as gpg prints fingerprints.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
