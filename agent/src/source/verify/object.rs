//! Splits a raw git commit or annotated tag into its signed payload and its signature, the way git
//! does (commit.c `parse_buffer_signed_by_header`, gpg-interface.c `parse_signed_buffer`).
//!
//! Getting this byte-exact matters more than anything else here: the payload is what the signer
//! signed, so one byte of difference from git's split turns every good signature into a bad one,
//! and a laxer split could let unsigned bytes ride along with a good signature. The commit is also
//! parsed strictly enough (one `gpgsig`, one `committer`) that no two readers can disagree on it.

use super::VerifyError;

/// A signature is never this large; bigger is an attack on the parser, not a signature.
const MAX_SIGNATURE: usize = 64 * 1024;

/// The armor lines git recognises as the start of a signature (gpg-interface.c `sig_formats`).
const SSH_BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const PGP_BEGIN: &str = "-----BEGIN PGP SIGNATURE-----";
const SSH_END: &str = "-----END SSH SIGNATURE-----";
const PGP_END: &str = "-----END PGP SIGNATURE-----";
const PGP_MESSAGE_BEGIN: &str = "-----BEGIN PGP MESSAGE-----";
const X509_BEGIN: &str = "-----BEGIN SIGNED MESSAGE-----";

/// Which verifier a signature goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigFormat {
    Ssh,
    OpenPgp,
}

/// A git object cut into what was signed and the signature over it.
#[derive(Debug)]
pub(crate) struct SignedObject {
    /// "commit" or "tag", for messages.
    pub kind: &'static str,
    /// The exact bytes the signer signed.
    pub payload: Vec<u8>,
    /// The armored signature, if any.
    pub signature: Option<Vec<u8>>,
    /// The committer (commit) or tagger (tag) timestamp, seconds since the epoch. git checks an
    /// SSH key's valid-after/valid-before against it.
    pub time: Option<i64>,
}

impl SignedObject {
    /// The signature and its format, or the reason it cannot be checked.
    pub fn signature(&self) -> Result<Option<(SigFormat, &[u8])>, VerifyError> {
        let Some(sig) = self.signature.as_deref() else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&sig[..sig.len().min(64)]);
        let format = if text.starts_with(SSH_BEGIN) {
            SigFormat::Ssh
        } else if text.starts_with(PGP_BEGIN) {
            SigFormat::OpenPgp
        } else if text.starts_with(X509_BEGIN) {
            return Err(VerifyError::malformed(
                "signature",
                "X.509 (gpgsm) signatures are not supported; sign with an SSH key \
                 (gpg.format=ssh) or an OpenPGP key",
            ));
        } else if text.starts_with(PGP_MESSAGE_BEGIN) {
            return Err(VerifyError::malformed(
                "signature",
                "an OpenPGP message is not a detached signature; sign with `git commit -S` / \
                 `git tag -s`",
            ));
        } else {
            return Err(VerifyError::malformed(
                "signature",
                format!(
                    "the {} signature does not start with {SSH_BEGIN} or {PGP_BEGIN}",
                    self.kind
                ),
            ));
        };
        // Nothing may follow the armor: git and gix would disagree on where such bytes belong.
        let end = match format {
            SigFormat::Ssh => SSH_END,
            SigFormat::OpenPgp => PGP_END,
        };
        if !sig.trim_ascii_end().ends_with(end.as_bytes()) {
            return Err(VerifyError::malformed(
                "signature",
                format!("the {} signature does not end with {end}", self.kind),
            ));
        }
        Ok(Some((format, sig)))
    }
}

/// Lines of `buf`, each with its terminating newline (the last may lack one).
fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split_inclusive(|&b| b == b'\n')
}

/// Splits a commit: the `gpgsig` header (and its continuation lines) is the signature; it and any
/// `gpgsig-sha256` header are cut out of the payload.
pub(crate) fn split_commit(raw: &[u8]) -> Result<SignedObject, VerifyError> {
    if !raw.starts_with(b"tree ") {
        return Err(VerifyError::malformed(
            "commit",
            "the object does not start with a `tree` line; pass the raw commit \
             (as `git cat-file commit <id>` prints it)",
        ));
    }
    let mut payload = Vec::with_capacity(raw.len());
    let mut signature: Option<Vec<u8>> = None;
    let mut time = None;
    // Which header the current continuation lines belong to.
    #[derive(PartialEq)]
    enum In {
        Sig,
        OtherSig,
        Kept,
    }
    let mut state = In::Kept;
    let mut offset = 0;
    for line in lines(raw) {
        if line == b"\n" {
            // The end of the headers: the message is signed verbatim.
            payload.extend_from_slice(&raw[offset..]);
            break;
        }
        offset += line.len();
        if let Some(cont) = line.strip_prefix(b" ") {
            match state {
                In::Sig => push_sig(signature.as_mut(), cont)?,
                In::OtherSig => {}
                In::Kept => payload.extend_from_slice(line),
            }
            continue;
        }
        let (key, value) = split_header(line);
        match key {
            b"gpgsig" if !value.is_empty() => {
                if signature.is_some() {
                    return Err(VerifyError::malformed(
                        "commit",
                        "two gpgsig headers; a commit carries exactly one signature",
                    ));
                }
                signature = Some(Vec::new());
                push_sig(signature.as_mut(), value)?;
                state = In::Sig;
            }
            b"gpgsig-sha256" => state = In::OtherSig,
            // git drops any header starting with "gpgsig" from the payload; refuse the oddities
            // instead of guessing which reading the signer meant.
            _ if key.starts_with(b"gpgsig") => {
                return Err(VerifyError::malformed(
                    "commit",
                    format!(
                        "unexpected header `{}`; the object was crafted, not made by git",
                        String::from_utf8_lossy(key)
                    ),
                ));
            }
            _ => {
                if key == b"committer" {
                    if time.is_some() {
                        return Err(VerifyError::malformed(
                            "commit",
                            "two committer lines; the object was crafted, not made by git",
                        ));
                    }
                    time = Some(ident_time(value).ok_or_else(|| {
                        VerifyError::malformed(
                            "commit",
                            "the committer line has no valid timestamp",
                        )
                    })?);
                }
                payload.extend_from_slice(line);
                state = In::Kept;
            }
        }
    }
    if time.is_none() {
        return Err(VerifyError::malformed(
            "commit",
            "no committer line; pass the raw commit (as `git cat-file commit <id>` prints it)",
        ));
    }
    Ok(SignedObject {
        kind: "commit",
        payload,
        signature,
        time,
    })
}

fn push_sig(sig: Option<&mut Vec<u8>>, bytes: &[u8]) -> Result<(), VerifyError> {
    if let Some(sig) = sig {
        if sig.len() + bytes.len() > MAX_SIGNATURE {
            return Err(VerifyError::malformed(
                "signature",
                format!("larger than {MAX_SIGNATURE} bytes"),
            ));
        }
        sig.extend_from_slice(bytes);
    }
    Ok(())
}

/// `key value\n` → (key, `value\n`).
fn split_header(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line.strip_suffix(b"\n").unwrap_or(line), &[]),
    }
}

/// The timestamp of an ident value: `Name <email> 1700000000 +0100`.
fn ident_time(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?.trim_end_matches('\n');
    let (rest, tz) = text.rsplit_once(' ')?;
    let (ident, secs) = rest.rsplit_once(' ')?;
    let tz_ok = tz.len() == 5
        && (tz.starts_with('+') || tz.starts_with('-'))
        && tz[1..].bytes().all(|b| b.is_ascii_digit());
    if !ident.ends_with('>') || !tz_ok || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    secs.parse().ok()
}

/// Splits an annotated tag: the signature starts at the last line that begins a signature armor,
/// and the payload is everything before it.
pub(crate) fn split_tag(raw: &[u8]) -> Result<SignedObject, VerifyError> {
    if !raw.starts_with(b"object ") {
        return Err(VerifyError::malformed(
            "tag",
            "the object does not start with an `object` line; pass the raw annotated tag \
             (as `git cat-file tag <name>` prints it)",
        ));
    }
    let mut start = None;
    let mut offset = 0;
    for line in lines(raw) {
        if [SSH_BEGIN, PGP_BEGIN, PGP_MESSAGE_BEGIN, X509_BEGIN]
            .iter()
            .any(|m| line.starts_with(m.as_bytes()))
        {
            start = Some(offset);
        }
        offset += line.len();
    }
    let (payload, signature) = match start {
        Some(at) => {
            if raw.len() - at > MAX_SIGNATURE {
                return Err(VerifyError::malformed(
                    "signature",
                    format!("larger than {MAX_SIGNATURE} bytes"),
                ));
            }
            (raw[..at].to_vec(), Some(raw[at..].to_vec()))
        }
        None => (raw.to_vec(), None),
    };
    // The tagger line is optional in old tags; git then checks validity against the current time.
    let mut time = None;
    for line in lines(&payload) {
        if line == b"\n" {
            break;
        }
        if let Some(value) = line.strip_prefix(b"tagger ") {
            time = Some(ident_time(value).ok_or_else(|| {
                VerifyError::malformed("tag", "the tagger line has no valid timestamp")
            })?);
        }
    }
    Ok(SignedObject {
        kind: "tag",
        payload,
        signature,
        time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &[u8] = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
author A U Thor <a@example.com> 1700000000 +0100\n\
committer C O Mitter <c@example.com> 1700000100 -0200\n\
gpgsig -----BEGIN SSH SIGNATURE-----\n \
U1NIU0lH\n \n \
-----END SSH SIGNATURE-----\n\
mergetag object 1234\n \
type commit\n\
\n\
message\n\
gpgsig in the message is not a header\n";

    #[test]
    fn commit_signature_is_cut_out_with_its_continuation_lines() {
        let o = split_commit(COMMIT).unwrap();
        assert_eq!(
            o.signature.as_deref().unwrap(),
            b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n\n-----END SSH SIGNATURE-----\n"
        );
        let expected = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
author A U Thor <a@example.com> 1700000000 +0100\n\
committer C O Mitter <c@example.com> 1700000100 -0200\n\
mergetag object 1234\n \
type commit\n\
\n\
message\n\
gpgsig in the message is not a header\n";
        assert_eq!(
            String::from_utf8_lossy(&o.payload),
            String::from_utf8_lossy(expected)
        );
        assert_eq!(o.time, Some(1_700_000_100));
        assert_eq!(o.signature().unwrap().unwrap().0, SigFormat::Ssh);
    }

    #[test]
    fn gpgsig_sha256_is_removed_from_the_payload_and_ignored() {
        let raw = b"tree 4b82\ncommitter C <c@x> 5 +0000\ngpgsig-sha256 -----BEGIN PGP SIGNATURE-----\n x\n -----END PGP SIGNATURE-----\n\nm\n";
        let o = split_commit(raw).unwrap();
        assert!(o.signature.is_none());
        assert_eq!(o.payload, b"tree 4b82\ncommitter C <c@x> 5 +0000\n\nm\n");
    }

    #[test]
    fn two_gpgsig_headers_are_refused() {
        let raw = b"tree 4b82\ncommitter C <c@x> 5 +0000\ngpgsig a\ngpgsig b\n\nm\n";
        let err = split_commit(raw).unwrap_err();
        assert!(matches!(err, VerifyError::Malformed { .. }), "{err}");
    }

    #[test]
    fn odd_gpgsig_headers_are_refused() {
        for raw in [
            &b"tree 4b82\ncommitter C <c@x> 5 +0000\ngpgsig\n -----BEGIN SSH SIGNATURE-----\n\nm\n"
                [..],
            b"tree 4b82\ncommitter C <c@x> 5 +0000\ngpgsigx y\n\nm\n",
        ] {
            let err = split_commit(raw).unwrap_err();
            assert!(err.to_string().contains("unexpected header"), "{err}");
        }
    }

    #[test]
    fn bytes_after_the_armor_are_refused() {
        let raw = b"object 1\ntype commit\ntag v\n\nm\n-----BEGIN SSH SIGNATURE-----\nabc\n-----END SSH SIGNATURE-----\nmore\n";
        let err = split_tag(raw).unwrap().signature().unwrap_err();
        assert!(err.to_string().contains("does not end with"), "{err}");
        let raw = b"tree 4b82\ncommitter C <c@x> 5 +0000\ngpgsig -----BEGIN PGP SIGNATURE-----\n x\n\nm\n";
        assert!(split_commit(raw).unwrap().signature().is_err());
    }

    #[test]
    fn two_committer_lines_are_refused() {
        let raw = b"tree 4b82\ncommitter C <c@x> 5 +0000\ncommitter D <d@x> 6 +0000\n\nm\n";
        assert!(split_commit(raw).is_err());
    }

    #[test]
    fn a_commit_without_committer_time_is_malformed() {
        assert!(split_commit(b"tree 4b82\n\nm\n").is_err());
        assert!(split_commit(b"tree 4b82\ncommitter C <c@x> soon +0000\n\nm\n").is_err());
        assert!(split_commit(b"tree 4b82\ncommitter C <c@x> 5 0000\n\nm\n").is_err());
    }

    #[test]
    fn a_tag_passed_as_a_commit_is_malformed() {
        assert!(split_commit(b"object 1234\ntype commit\n").is_err());
        assert!(split_tag(b"tree 1234\n").is_err());
    }

    #[test]
    fn an_unsigned_commit_has_no_signature() {
        let o = split_commit(b"tree 4b82\ncommitter C <c@x> 5 +0000\n\nm\n").unwrap();
        assert!(o.signature().unwrap().is_none());
    }

    #[test]
    fn tag_signature_starts_at_the_last_armor_line() {
        let raw = b"object 1234\ntype commit\ntag v1\ntagger T <t@x> 42 +0000\n\nnotes\n\
-----BEGIN PGP SIGNATURE-----\nquoted in the message\n-----END PGP SIGNATURE-----\n\
-----BEGIN SSH SIGNATURE-----\nabc\n-----END SSH SIGNATURE-----\n";
        let o = split_tag(raw).unwrap();
        assert_eq!(
            o.signature.as_deref().unwrap(),
            b"-----BEGIN SSH SIGNATURE-----\nabc\n-----END SSH SIGNATURE-----\n"
        );
        assert!(o.payload.ends_with(b"-----END PGP SIGNATURE-----\n"));
        assert_eq!(o.time, Some(42));
    }

    #[test]
    fn x509_signatures_are_refused_with_a_reason() {
        let raw = b"object 1\ntype commit\ntag v\n\nm\n-----BEGIN SIGNED MESSAGE-----\nx\n";
        let err = split_tag(raw).unwrap().signature().unwrap_err();
        assert!(err.to_string().contains("X.509"), "{err}");
    }
}
