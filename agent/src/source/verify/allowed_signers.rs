//! git's / ssh-keygen's ALLOWED SIGNERS file (ssh-keygen(1)): which SSH keys may sign, for which
//! namespaces, and when.
//!
//! Each line is `principals [options] keytype base64-key [comment]`; `#` comments and blank lines
//! are skipped. Options are `namespaces="…"`, `valid-after="…"`, `valid-before="…"` (quoted, as
//! ssh-keygen requires) and `cert-authority`.
//!
//! The parser is as strict as ssh-keygen and stricter where a device must be: any bad line fails
//! the whole file (a half-read trust root is worse than none, because it looks configured), and
//! these are refused with a reason instead of being half-supported:
//! - `cert-authority` and certificate keys: tend verifies plain keys only. Certificate chains need
//!   principal matching against the certificate and a CA revocation story; list the signers' own
//!   keys instead.
//! - FIDO keys (`sk-…`): ssh-keygen requires a user-presence flag on their signatures, which the
//!   verifier used here does not check; tend would be laxer than git, so it refuses them.
//! - `ssh-dss` (DSA, removed from OpenSSH) and RSA keys below 2048 bits.

use ssh_key::public::KeyData;

use super::{sshtime, VerifyError};

/// Key types tend verifies.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];
/// Key types recognised (so the line parses as ssh-keygen would) but refused.
const REFUSED_KEY_TYPES: &[&str] = &[
    "ssh-dss",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];
const CERT_SUFFIX: &str = "-cert-v01@openssh.com";
const MIN_RSA_BITS: usize = 2048;

/// One trusted key with its constraints.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// 1-based line in the file.
    pub line: u64,
    /// The principals field as written (what `ssh-keygen -Y find-principals` prints).
    pub principals: String,
    /// `namespaces=` pattern list; None allows every namespace.
    pub namespaces: Option<String>,
    pub valid_after: Option<i64>,
    pub valid_before: Option<i64>,
    pub key: KeyData,
}

/// A parsed allowed_signers file.
#[derive(Debug, Clone)]
pub(crate) struct AllowedSigners {
    /// The device path, for messages.
    pub file: String,
    pub entries: Vec<Entry>,
}

impl AllowedSigners {
    /// Parses the whole file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, VerifyError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i as u64 + 1;
            let l = raw.trim_start_matches([' ', '\t']).trim_end_matches('\r');
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let entry =
                parse_line(l, line).map_err(|message| VerifyError::config(file, line, message))?;
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(VerifyError::config(
                file,
                0,
                "no keys: add one line per signer, e.g. \
                 `alice@example.com namespaces=\"git\" ssh-ed25519 AAAA…`, \
                 or remove verify.allowed_signers from the configuration",
            ));
        }
        Ok(Self {
            file: file.to_string(),
            entries,
        })
    }

    /// The lines that list `key`, in file order.
    pub fn entries_for<'a>(&'a self, key: &'a KeyData) -> impl Iterator<Item = &'a Entry> {
        self.entries.iter().filter(move |e| &e.key == key)
    }
}

impl Entry {
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_deref()
            .is_none_or(|list| super::pattern::list_allows(namespace, list))
    }

    /// Both bounds are inclusive, as in ssh-keygen.
    pub fn valid_at(&self, time: i64) -> bool {
        self.valid_after.is_none_or(|a| time >= a) && self.valid_before.is_none_or(|b| time <= b)
    }
}

/// A cursor over one line.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    /// The next whitespace-delimited token; a token starting with `"` runs to the closing quote.
    fn token(&mut self) -> Result<&'a str, String> {
        self.skip_space();
        if let Some(q) = self.rest.strip_prefix('"') {
            let end = q.find('"').ok_or("unterminated quote")?;
            self.rest = &q[end + 1..];
            if !(self.rest.is_empty() || self.rest.starts_with([' ', '\t'])) {
                return Err("a quoted field must be followed by a space".into());
            }
            return Ok(&q[..end]);
        }
        let end = self.rest.find([' ', '\t']).unwrap_or(self.rest.len());
        let (tok, rest) = self.rest.split_at(end);
        self.rest = rest;
        Ok(tok)
    }

    fn peek_token(&self) -> &'a str {
        let r = self.rest.trim_start_matches([' ', '\t']);
        &r[..r.find([' ', '\t']).unwrap_or(r.len())]
    }

    /// A double-quoted option value, with `\"` as an escaped quote (OpenSSH `opt_dequote`).
    fn quoted(&mut self, name: &str) -> Result<String, String> {
        let Some(body) = self.rest.strip_prefix('"') else {
            return Err(format!(
                "the value of {name}= must be in double quotes, e.g. {name}=\"{}\"",
                if name == "namespaces" {
                    "git"
                } else {
                    "20250101Z"
                }
            ));
        };
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' if body[i + 1..].starts_with('"') => {
                    out.push('"');
                    chars.next();
                }
                '"' => {
                    self.rest = &body[i + 1..];
                    return Ok(out);
                }
                _ => out.push(c),
            }
        }
        Err(format!("unterminated quote in {name}="))
    }
}

fn is_key_type(tok: &str) -> bool {
    KEY_TYPES.contains(&tok) || REFUSED_KEY_TYPES.contains(&tok) || tok.ends_with(CERT_SUFFIX)
}

fn parse_line(l: &str, line: u64) -> Result<Entry, String> {
    let mut cur = Cursor { rest: l };
    let principals = cur.token()?.to_string();
    if principals.is_empty() {
        return Err("empty principals field".into());
    }
    cur.skip_space();
    if cur.rest.is_empty() {
        return Err(format!(
            "no key after the principals `{principals}`; a line reads \
             `principals [options] keytype base64-key`"
        ));
    }
    let mut opts = Options::default();
    if !is_key_type(cur.peek_token()) {
        opts = parse_options(&mut cur)?;
    }
    let keytype = cur.token()?;
    let base64 = cur.token()?;
    Ok(Entry {
        line,
        principals,
        namespaces: opts.namespaces,
        valid_after: opts.valid_after,
        valid_before: opts.valid_before,
        key: parse_key(keytype, base64)?,
    })
}

#[derive(Default)]
struct Options {
    namespaces: Option<String>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
}

fn parse_options(cur: &mut Cursor<'_>) -> Result<Options, String> {
    let mut opts = Options::default();
    loop {
        let lower = cur.rest.to_ascii_lowercase();
        if lower.starts_with("cert-authority")
            && matches!(lower.as_bytes().get(14), None | Some(b',' | b' ' | b'\t'))
        {
            return Err(
                "cert-authority: SSH certificates are not supported by tend; \
                 list each signer's own key instead"
                    .into(),
            );
        } else if let Some(name) = ["namespaces", "valid-after", "valid-before"]
            .into_iter()
            .find(|n| lower.starts_with(&format!("{n}=")))
        {
            cur.rest = &cur.rest[name.len() + 1..];
            let value = cur.quoted(name)?;
            let twice = || format!("{name}= is given twice; keep one");
            match name {
                "namespaces" => {
                    if opts.namespaces.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                _ => {
                    let t = sshtime::parse(&value).map_err(|e| format!("{name}: {e}"))?;
                    let slot = if name == "valid-after" {
                        &mut opts.valid_after
                    } else {
                        &mut opts.valid_before
                    };
                    if slot.replace(t).is_some() {
                        return Err(twice());
                    }
                }
            }
        } else {
            let opt = cur.peek_token();
            return Err(format!(
                "unknown option or key type `{}`; options are namespaces=\"…\", \
                 valid-after=\"…\", valid-before=\"…\" (no spaces around `,` and `=`), and key \
                 types are {}",
                opt.split(',').next().unwrap_or(opt),
                KEY_TYPES.join(", ")
            ));
        }
        match cur.rest.chars().next() {
            None | Some(' ' | '\t') => break,
            Some(',') => {
                cur.rest = &cur.rest[1..];
                if cur.rest.is_empty() || cur.rest.starts_with([' ', '\t']) {
                    return Err("unexpected end of options after `,`".into());
                }
            }
            Some(_) => {
                return Err(format!(
                    "unexpected `{}` after an option; separate options with `,` and no spaces",
                    cur.peek_token()
                ))
            }
        }
    }
    if let (Some(a), Some(b)) = (opts.valid_after, opts.valid_before) {
        if b <= a {
            return Err("valid-before is not after valid-after; swap or fix the dates".into());
        }
    }
    cur.skip_space();
    if cur.rest.is_empty() {
        return Err("options but no key; append `keytype base64-key`".into());
    }
    Ok(opts)
}

fn parse_key(keytype: &str, base64: &str) -> Result<KeyData, String> {
    if keytype.ends_with(CERT_SUFFIX) {
        return Err(format!(
            "{keytype}: SSH certificates are not supported by tend; list the signer's plain key"
        ));
    }
    if keytype.starts_with("sk-") {
        return Err(format!(
            "{keytype}: FIDO security-key signatures are not supported by tend; sign with an \
             ed25519, ecdsa or rsa key"
        ));
    }
    if keytype == "ssh-dss" {
        return Err("ssh-dss: DSA keys are obsolete and refused; use ed25519".into());
    }
    if !KEY_TYPES.contains(&keytype) {
        return Err(format!(
            "unknown key type `{keytype}`; expected one of {}",
            KEY_TYPES.join(", ")
        ));
    }
    if base64.is_empty() {
        return Err(format!("{keytype}: the base64 key is missing"));
    }
    let key = ssh_key::PublicKey::from_openssh(&format!("{keytype} {base64}")).map_err(|e| {
        format!(
            "{keytype}: invalid key ({e}); copy the whole line of the signer's .pub file \
             after the principals"
        )
    })?;
    let key = key.key_data().clone();
    if let Some(rsa) = key.rsa() {
        let n = rsa.n.as_positive_bytes().unwrap_or_default();
        let bits =
            (n.len() * 8).saturating_sub(n.first().map_or(8, |b| b.leading_zeros() as usize));
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "ssh-rsa: a {bits}-bit key is too weak; use ed25519 or RSA of at least \
                 {MIN_RSA_BITS} bits"
            ));
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn parse(text: &str) -> Result<AllowedSigners, VerifyError> {
        AllowedSigners::parse("/etc/tend/allowed_signers", text)
    }

    fn err(text: &str) -> (u64, String) {
        match parse(text).unwrap_err() {
            VerifyError::Config { line, message, .. } => (line, message),
            other => panic!("not a config error: {other}"),
        }
    }

    #[test]
    fn plain_line_with_comment() {
        let a = parse(&format!(
            "# fleet signers\n\n  alice@example.com {ED} alice laptop\n"
        ))
        .unwrap();
        assert_eq!(a.entries.len(), 1);
        let e = &a.entries[0];
        assert_eq!((e.line, e.principals.as_str()), (3, "alice@example.com"));
        assert!(e.allows_namespace("git") && e.valid_at(0));
    }

    #[test]
    fn options_are_parsed_case_insensitively() {
        let a = parse(&format!(
            "a@x,b@x NAMESPACES=\"git,file\",Valid-After=\"20240101Z\",valid-before=\"20250101Z\" {ED}"
        ))
        .unwrap();
        let e = &a.entries[0];
        assert_eq!(e.principals, "a@x,b@x");
        assert_eq!(e.namespaces.as_deref(), Some("git,file"));
        assert!(e.allows_namespace("git") && !e.allows_namespace("ssh"));
        assert!(!e.valid_at(1_704_067_199));
        assert!(e.valid_at(1_704_067_200), "valid-after is inclusive");
        assert!(e.valid_at(1_735_689_600), "valid-before is inclusive");
        assert!(!e.valid_at(1_735_689_601));
    }

    #[test]
    fn quoted_principals_and_tabs() {
        let a = parse(&format!("\"a b@x\"\tnamespaces=\"git\"\t{ED}")).unwrap();
        assert_eq!(a.entries[0].principals, "a b@x");
    }

    #[test]
    fn quoted_value_may_hold_spaces_and_escaped_quotes() {
        let a = parse(&format!("p namespaces=\"g it,\\\"q\\\"\" {ED}")).unwrap();
        assert_eq!(a.entries[0].namespaces.as_deref(), Some("g it,\"q\""));
    }

    #[test]
    fn negated_namespace_denies_git() {
        let a = parse(&format!("p namespaces=\"*,!git\" {ED}")).unwrap();
        assert!(!a.entries[0].allows_namespace("git"));
        assert!(a.entries[0].allows_namespace("file"));
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let (line, m) = err(&format!("# c\np valid-after=20240101 {ED}"));
        assert_eq!(line, 2);
        assert!(m.contains("double quotes"), "{m}");

        let (_, m) = err(&format!("p cert-authority {ED}"));
        assert!(m.contains("certificates are not supported"), "{m}");
        let (_, m) = err(&format!("p cert-authority,namespaces=\"git\" {ED}"));
        assert!(m.contains("certificates are not supported"), "{m}");

        let (_, m) = err(&format!("p namespace=\"git\" {ED}"));
        assert!(
            m.contains("unknown option") && m.contains("namespace"),
            "{m}"
        );

        let (_, m) = err(&format!("p namespaces=\"git\",namespaces=\"file\" {ED}"));
        assert!(m.contains("twice"), "{m}");

        let (_, m) = err(&format!("p namespaces=\"git\", {ED}"));
        assert!(m.contains("end of options"), "{m}");

        let (_, m) = err(&format!(
            "p valid-after=\"20250101Z\",valid-before=\"20240101Z\" {ED}"
        ));
        assert!(m.contains("not after"), "{m}");

        let (_, m) = err(&format!("p valid-before=\"2024\" {ED}"));
        assert!(m.contains("YYYYMMDD"), "{m}");

        let (_, m) = err("p");
        assert!(m.contains("no key"), "{m}");

        let (_, m) = err("p namespaces=\"git\"");
        assert!(m.contains("no key"), "{m}");

        let (_, m) = err("p ssh-ed25519 AAAAnotbase64!");
        assert!(m.contains("invalid key"), "{m}");

        let (_, m) = err("p ssh-ed25519");
        assert!(m.contains("missing"), "{m}");

        let (_, m) = err("p namespaces=\"git\" ssh-ed448 AAAA");
        assert!(
            m.contains("unknown option or key type") || m.contains("unknown key type"),
            "{m}"
        );

        let (_, m) = err("p namespaces=\"git unterminated ssh-ed25519 AAAA");
        assert!(m.contains("unterminated"), "{m}");
    }

    #[test]
    fn key_type_must_match_the_key_blob() {
        let (_, m) = err(&format!("p ssh-rsa {}", ED.split_once(' ').unwrap().1));
        assert!(m.contains("invalid key"), "{m}");
    }

    #[test]
    fn refused_key_types_say_why() {
        let (_, m) = err("p sk-ssh-ed25519@openssh.com AAAA");
        assert!(m.contains("FIDO"), "{m}");
        let (_, m) = err("p ssh-ed25519-cert-v01@openssh.com AAAA");
        assert!(m.contains("certificates"), "{m}");
        let (_, m) = err("p ssh-dss AAAA");
        assert!(m.contains("DSA"), "{m}");
    }

    #[test]
    fn an_empty_file_is_an_error_not_an_empty_trust_root() {
        let (line, m) = err("# nobody\n\n");
        assert_eq!(line, 0);
        assert!(m.contains("no keys"), "{m}");
    }

    #[test]
    fn entries_for_finds_every_line_of_a_key() {
        let a = parse(&format!("a {ED}\nb namespaces=\"file\" {ED}\n")).unwrap();
        let key = a.entries[0].key.clone();
        let lines: Vec<u64> = a.entries_for(&key).map(|e| e.line).collect();
        assert_eq!(lines, [1, 2]);
    }
}
