//! Why a commit or tag was refused, in words a fleet engineer can act on.
//!
//! Each variant is a distinct cause (the run report and the metrics key on it), and each message
//! says what is wrong and how to fix it. The object id is not known here: callers prefix it.

/// A refused signature, or trust roots that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No signature at all.
    #[error("{object} is not signed; {fix}")]
    Unsigned { object: &'static str, fix: String },

    /// Signed, but by a key the device does not trust (or cannot use for signing).
    #[error("signed by {method} key {fingerprint}, which this device does not trust; {fix}")]
    UnknownSigner {
        method: &'static str,
        fingerprint: String,
        fix: String,
    },

    /// The signature does not match the signed bytes: tampered content or a corrupt signature.
    #[error(
        "bad signature by {method} key {fingerprint}: {detail}; the signed content was changed \
         after signing or the signature is corrupt: do not deploy it, re-sign the original"
    )]
    BadSignature {
        method: &'static str,
        fingerprint: String,
        detail: String,
    },

    /// An SSH signature made for another purpose than git, or a key not allowed for git.
    #[error("wrong signature namespace: {detail}; {fix}")]
    WrongNamespace { detail: String, fix: String },

    /// The key (or signature) was not valid at the time that counts.
    #[error("signing key {fingerprint} is outside its validity: {detail}; {fix}")]
    OutsideValidity {
        fingerprint: String,
        detail: String,
        fix: String,
    },

    /// The OpenPGP key was revoked by its owner.
    #[error("signing key {fingerprint} is revoked ({reason}); re-sign with a key that is not revoked and remove the revoked key from {file}")]
    Revoked {
        fingerprint: String,
        reason: String,
        file: String,
    },

    /// The repo's signed policy (policy/policy.yaml) is not trusted, or the head lacks approvals.
    #[error("{detail}")]
    Policy { detail: String },

    /// The object or its signature cannot be parsed.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },

    /// A trust-root file (allowed_signers, keyring) is unreadable or wrong. `line` is 1-based,
    /// 0 when the problem is about the file as a whole; `message` includes the fix.
    #[error("{}", config_message(file, *line, message))]
    Config {
        file: String,
        line: u64,
        message: String,
    },
}

fn config_message(file: &str, line: u64, message: &str) -> String {
    if line > 0 {
        format!("{file}:{line}: {message}")
    } else {
        format!("{file}: {message}")
    }
}

impl VerifyError {
    pub(crate) fn config(file: &str, line: u64, message: impl Into<String>) -> Self {
        VerifyError::Config {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }

    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        VerifyError::Malformed {
            what,
            detail: detail.into(),
        }
    }

    /// A short stable name for reports and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            VerifyError::Unsigned { .. } => "unsigned",
            VerifyError::UnknownSigner { .. } => "unknown_signer",
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::WrongNamespace { .. } => "wrong_namespace",
            VerifyError::OutsideValidity { .. } => "outside_validity",
            VerifyError::Revoked { .. } => "revoked",
            VerifyError::Policy { .. } => "policy",
            VerifyError::Malformed { .. } => "malformed",
            VerifyError::Config { .. } => "config",
        }
    }
}
