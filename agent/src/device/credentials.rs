//! The credential for the git server, kept out of everything tend writes.
//!
//! A token in `source.url` (`https://deploy:TOKEN@host/…`) is split off when the config is
//! loaded: the URL that reports, logs and status show carries no userinfo, and the token lives
//! in a [`Secret`] that only the http transport reads (for its `Authorization: Basic` header).
//! The recommended form keeps it out of tend.yaml altogether: `source.username` plus
//! `source.password_file`, a root-only file holding the token.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tend_roles::redact::Secret;

use crate::diag::Diagnostic;

/// The longest password file tend reads: a token, not a document.
pub const MAX_PASSWORD_FILE: u64 = 4096;

/// HTTP Basic credentials for the git server.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// None for a URL that carries a token alone (`https://TOKEN@host`), sent as it came.
    pub username: Option<String>,
    pub password: Secret,
}

impl Credentials {
    /// The value of the `Authorization` header.
    pub fn basic(&self) -> Secret {
        let pair = match &self.username {
            Some(u) => format!("{u}:{}", self.password.expose()),
            None => self.password.expose().to_string(),
        };
        let header = crate::net::wire::basic_auth(Some(&pair)).unwrap_or_default();
        Secret::new(header)
    }
}

/// `url` without its credential, and the credential. The user of an ssh URL is a login name and
/// stays; only a password (which ssh never uses) is taken out.
pub fn split_url(url: &str) -> (String, Option<Credentials>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return (url.to_string(), None);
    };
    let (userinfo, after) = (&rest[..at], &rest[at + 1..]);
    let decode = crate::net::url::percent_decode;
    let ssh = scheme.to_ascii_lowercase().contains("ssh");
    match userinfo.split_once(':') {
        Some((user, pass)) => {
            let kept = if ssh {
                format!("{scheme}://{user}@{after}")
            } else {
                format!("{scheme}://{after}")
            };
            let creds = (!ssh).then(|| Credentials {
                username: Some(decode(user)),
                password: Secret::new(decode(pass)),
            });
            if ssh {
                Secret::new(decode(pass));
            }
            (kept, creds)
        }
        None if ssh => (url.to_string(), None),
        None => (
            format!("{scheme}://{after}"),
            Some(Credentials {
                username: None,
                password: Secret::new(decode(userinfo)),
            }),
        ),
    }
}

/// Reads the token from `file` (a device path, read under `root`): at most 4 KiB, trailing
/// newline stripped, and only from a file nobody but its owner (root or tend's own user) can
/// read, so a token is not one `cat` away for every local account.
pub fn read_password_file(root: &Path, file: &str) -> Result<Secret, Diagnostic> {
    let at = |m: String| Diagnostic::new(file, 0, m);
    let path = root.join(file.trim_start_matches('/'));
    let mut f = std::fs::File::open(&path)
        .map_err(|e| at(format!("source.password_file: cannot open it: {e}")))?;
    let meta = f
        .metadata()
        .map_err(|e| at(format!("source.password_file: {e}")))?;
    if !meta.is_file() {
        return Err(at("source.password_file is not a regular file".into()));
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(at(format!(
            "source.password_file is owned by uid {}, not by root or the user tend runs as",
            meta.uid()
        ))
        .fix(format!("chown root: {file} && chmod 600 {file}")));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(at(format!(
            "source.password_file is readable by others (mode {:o}): the token would be readable by every local user",
            meta.mode() & 0o777
        ))
        .fix(format!("chmod 600 {file}")));
    }
    if meta.len() > MAX_PASSWORD_FILE {
        return Err(at(format!(
            "source.password_file holds {} bytes; a token is at most {MAX_PASSWORD_FILE}",
            meta.len()
        ))
        .fix("put only the token in the file"));
    }
    let mut text = String::new();
    f.by_ref()
        .take(MAX_PASSWORD_FILE)
        .read_to_string(&mut text)
        .map_err(|e| at(format!("source.password_file: {e}")))?;
    let token = text.strip_suffix('\n').unwrap_or(&text);
    let token = token.strip_suffix('\r').unwrap_or(token);
    if token.is_empty() {
        return Err(at("source.password_file is empty".into()).fix("write the token into it"));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_token_in_the_url_is_split_off() {
        let (url, c) = split_url("https://deploy:t%40ken-123@git.lan:8443/fleet.git");
        assert_eq!(url, "https://git.lan:8443/fleet.git");
        let c = c.unwrap();
        assert_eq!(c.username.as_deref(), Some("deploy"));
        assert_eq!(c.password.expose(), "t@ken-123");
        assert!(!format!("{c:?}").contains("t@ken"));
        let (url, c) = split_url("https://ghp_tokenonly@git.lan/f.git");
        assert_eq!(url, "https://git.lan/f.git");
        assert_eq!(c.unwrap().password.expose(), "ghp_tokenonly");
    }

    #[test]
    fn an_ssh_user_stays_and_plain_urls_are_untouched() {
        assert_eq!(
            split_url("ssh://git@git.lan:2222/fleet").0,
            "ssh://git@git.lan:2222/fleet"
        );
        let (url, c) = split_url("ssh://git:pw-xyz@git.lan/fleet");
        assert_eq!(url, "ssh://git@git.lan/fleet");
        assert!(c.is_none());
        assert_eq!(split_url("git@git.lan:fleet").0, "git@git.lan:fleet");
        assert_eq!(split_url("https://git.lan/a@b").0, "https://git.lan/a@b");
    }

    #[test]
    fn basic_header_matches_what_the_url_form_sent() {
        let c = Credentials {
            username: Some("Aladdin".into()),
            password: Secret::new("open sesame"),
        };
        assert_eq!(c.basic().expose(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn password_file_is_read_and_an_open_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/tend")).unwrap();
        let p = d.path().join("etc/tend/git-token");
        std::fs::write(&p, "tok-from-file\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = read_password_file(d.path(), "/etc/tend/git-token").unwrap();
        assert_eq!(s.expose(), "tok-from-file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_password_file(d.path(), "/etc/tend/git-token").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("/etc/tend/git-token") && text.contains("chmod 600 /etc/tend/git-token"),
            "{text}"
        );
        std::fs::write(&p, vec![b'x'; 5000]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_password_file(d.path(), "/etc/tend/git-token").is_err());
    }
}
