//! What can go wrong while fetching, in terms a device operator can act on.
//!
//! gix reports transport failures as a tree of wrapped errors (gix, tend's http client, rustls, io,
//! and for ssh only the text `ssh` printed). [`classify`] walks that tree once and decides which
//! of a few actionable kinds it is, so the report says what failed, where, and what to change,
//! and the retry loop knows which failures are worth another attempt.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::bounds::{BoundHit, Limit};
use super::throttle::{RetryAfter, Throttle};
use crate::net::quote;

/// The most of a composed cause a message shows; its server-supplied parts are quoted (200
/// bytes each) where they are read.
const CAUSE_SHOWN: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "branch `{branch}` does not exist on {url} (deleted or renamed on the server). Fix: push \
         the branch again, or point the device at another one (source.branch, or \
         subscribed_branch in its devices/<id>.yaml)"
    )]
    BranchMissing { url: String, branch: String },

    #[error(
        "cannot reach {url}: {cause}. Fix: check the device's network, DNS and proxy \
         (source.proxy, https_proxy), and that the git server is up"
    )]
    Unreachable { url: String, cause: String },

    #[error(
        "{url} cut the connection: {cause}. Fix: nothing on the device if it passes; if it \
         repeats, check the server and what stands between (proxy, firewall, load balancer)"
    )]
    Cut { url: String, cause: String },

    #[error("TLS with {url} failed: {cause}. Fix: {fix}")]
    Tls {
        url: String,
        cause: String,
        fix: String,
    },

    #[error("the ssh host key of {host} is not trusted: {cause}. Fix: {fix}")]
    HostKey {
        host: String,
        cause: String,
        fix: String,
    },

    #[error(
        "{url}: {what} took longer than {}s. Fix: raise source.{key} if the link is slow; {}",
        after.as_secs(),
        timeout_hint(key)
    )]
    Timeout {
        url: String,
        what: &'static str,
        after: Duration,
        key: &'static str,
    },

    #[error("{url} refused access: {cause}. Fix: {fix}")]
    Auth {
        url: String,
        cause: String,
        fix: String,
    },

    #[error(
        "the local repo {} is damaged: {cause}. Fix: tend re-creates it the next time it opens \
         it; if that fails or repeats, remove it (rm -r {}) and check the storage (dmesg, df)",
        path.display(),
        path.display()
    )]
    Corrupt { path: PathBuf, cause: String },

    #[error(
        "{url}: {} went past tend's bound ({detail}); the fetch was cut and nothing it brought \
         is used. Fix: {}",
        limit.what(),
        limit.fix()
    )]
    Bound {
        url: String,
        limit: Limit,
        detail: String,
    },

    #[error(
        "{}{stopped}. Fix: nothing on the device: it keeps its last good commit and asks again \
         on its next run; if this persists, raise the server's rate limit for devices or poll \
         less often (OnCalendar= in tend.timer)",
        throttled_by(host, *status, retry_after.as_ref())
    )]
    Throttled {
        url: String,
        host: String,
        status: u16,
        retry_after: Option<RetryAfter>,
        /// Why tend stopped asking ("after 4 attempts", "Retry-After is past the budget").
        stopped: String,
    },

    #[error(
        "{url} answered HTTP {status}: {cause}. Fix: the git server failed, not the device; \
         check the server's logs, or list a further server in source.mirrors"
    )]
    Server {
        url: String,
        status: u16,
        cause: String,
    },

    #[error("{context}: {cause}")]
    Other { context: String, cause: String },
}

/// "throttled by <host> (429, Retry-After 30 s)": the journal's line for a throttled fetch.
pub(crate) fn throttled_by(host: &str, status: u16, retry_after: Option<&RetryAfter>) -> String {
    let wait = retry_after.map_or_else(|| "no Retry-After".to_string(), |r| r.to_string());
    format!("throttled by {host} ({status}, {wait})")
}

fn timeout_hint(key: &str) -> &'static str {
    if key == "connect_timeout" {
        "otherwise check that the server is up and that no firewall drops the connection"
    } else {
        "otherwise the server accepted the connection but stopped answering: check it"
    }
}

impl FetchError {
    /// Failures that may pass by themselves: worth a bounded retry.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::Timeout { .. }
                | Self::Bound {
                    limit: Limit::Rate,
                    ..
                }
        )
    }

    /// The source could not be reached or failed as a server (refused or cut connection, TLS,
    /// timeout, too slow, HTTP 5xx, still throttled after the retries): the next of
    /// `source.mirrors` is worth asking. Everything else (a missing branch, refused credentials,
    /// a pack past the bounds, a damaged local repo) would be the same or worse elsewhere, or
    /// is the device's own fault, and stops the run as it did without mirrors.
    pub fn falls_through(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::Cut { .. }
                | Self::Tls { .. }
                | Self::Timeout { .. }
                | Self::Server { .. }
                | Self::Throttled { .. }
                | Self::Bound {
                    limit: Limit::Rate,
                    ..
                }
        )
    }

    /// A throttled fetch's "throttled by …" line, without the fix.
    pub fn summary(&self) -> String {
        match self {
            Self::Throttled {
                host,
                status,
                retry_after,
                ..
            } => throttled_by(host, *status, retry_after.as_ref()),
            other => other.to_string(),
        }
    }

    /// Records why a throttled fetch stopped asking.
    pub(crate) fn stopped(self, why: String) -> Self {
        match self {
            Self::Throttled {
                url,
                host,
                status,
                retry_after,
                ..
            } => Self::Throttled {
                url,
                host,
                status,
                retry_after,
                stopped: why,
            },
            other => other,
        }
    }

    pub(crate) fn other(context: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        Self::Other {
            context: context.into(),
            cause: cause.to_string(),
        }
    }

    pub(crate) fn corrupt(path: &Path, cause: impl std::fmt::Display) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            cause: cause.to_string(),
        }
    }
}

/// What the classifier needs to know about the attempt that failed.
pub(crate) struct Attempt<'a> {
    pub url: &'a str,
    pub scheme: Scheme,
    pub ca_file: Option<&'a Path>,
    pub known_hosts: Option<&'a Path>,
    pub ssh_key: Option<&'a Path>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// How long the attempt ran before it failed.
    pub elapsed: Duration,
    /// What `ssh -E` logged (ssh only): gix hides ssh's own messages from the error.
    pub ssh_log: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Https,
    Http,
    Ssh,
    File,
}

/// Every error in gix's tree and below, including the errors wrapped inside `io::Error`s (whose
/// `source()` skips the wrapped error itself).
fn chain(err: &gix::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut out: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut todo: Vec<&(dyn std::error::Error + 'static)> = err.iter_errors().collect();
    todo.reverse();
    while let Some(e) = todo.pop() {
        if out.iter().any(|seen| std::ptr::addr_eq(*seen, e)) || out.len() > 64 {
            continue;
        }
        out.push(e);
        if let Some(source) = e.source() {
            todo.push(source);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            todo.push(inner);
        }
    }
    out
}

/// The most specific message in the chain: the deepest one that is not a bare wrapper.
fn cause_text(errors: &[&(dyn std::error::Error + 'static)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in errors {
        let text = e.to_string();
        if text.is_empty() || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        parts.retain(|p| !text.contains(p.as_str()));
        parts.push(text);
    }
    let tail: Vec<String> = parts.into_iter().rev().take(3).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(": ")
}

pub(crate) fn classify(err: &gix::Error, a: &Attempt<'_>) -> FetchError {
    let errors = chain(err);
    // gix relays what the server said (an `ERR` line, a bad pkt-line): escaped and bounded.
    let cause = quote::bounded(cause_text(&errors).as_bytes(), CAUSE_SHOWN);
    for e in &errors {
        if let Some(hit) = e.downcast_ref::<BoundHit>() {
            return FetchError::Bound {
                url: a.url.to_string(),
                limit: hit.limit,
                detail: hit.detail.clone(),
            };
        }
        if let Some(crate::net::HttpError::TooSlow { .. }) =
            e.downcast_ref::<crate::net::HttpError>()
        {
            return FetchError::Bound {
                url: a.url.to_string(),
                limit: Limit::Rate,
                detail: e.to_string(),
            };
        }
    }
    if let Some(t) = errors.iter().find_map(|e| e.downcast_ref::<Throttle>()) {
        return FetchError::Throttled {
            url: a.url.to_string(),
            host: crate::net::Url::parse(a.url)
                .map(|u| u.host)
                .unwrap_or_else(|_| a.url.to_string()),
            status: t.status,
            retry_after: t.retry_after.clone(),
            stopped: String::new(),
        };
    }
    if a.scheme == Scheme::Ssh {
        if let Some(e) = classify_ssh(a, &cause) {
            return e;
        }
    }
    for e in &errors {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return tls_error(a, tls);
        }
        if let Some(crate::net::HttpError::Tls(tls)) = e.downcast_ref::<crate::net::HttpError>() {
            return tls_error(a, tls);
        }
    }
    for e in &errors {
        if let Some(r) = e.downcast_ref::<crate::net::HttpError>() {
            if r.is_timeout() {
                return timeout(a, r.is_connect());
            }
            if r.is_connect() {
                return FetchError::Unreachable {
                    url: a.url.to_string(),
                    cause: cause.clone(),
                };
            }
            if let crate::net::HttpError::Cut(_) = r {
                return FetchError::Cut {
                    url: a.url.to_string(),
                    cause: cause.clone(),
                };
            }
        }
    }
    for e in &errors {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                TimedOut => return timeout(a, false),
                ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable => {
                    return FetchError::Unreachable {
                        url: a.url.to_string(),
                        cause,
                    }
                }
                ConnectionReset | ConnectionAborted | BrokenPipe => {
                    return FetchError::Cut {
                        url: a.url.to_string(),
                        cause,
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(status) = http_status(&cause) {
        if status == 404 {
            return FetchError::Other {
                context: format!("fetching from {}", a.url),
                cause: "the server has no git repository there (HTTP 404); check the path in \
                        source.url"
                    .into(),
            };
        }
        if status >= 500 {
            return FetchError::Server {
                url: a.url.to_string(),
                status,
                cause,
            };
        }
    }
    if err.is_unauthenticated()
        || err.is_permission_denied()
        || matches!(http_status(&cause), Some(401 | 403))
        || errors.iter().any(|e| {
            e.downcast_ref::<gix::protocol::transport::client::AuthenticationRequired>()
                .is_some()
        })
    {
        return FetchError::Auth {
            url: a.url.to_string(),
            cause,
            fix: "this device has no credentials for https; serve the fleet repo without \
                  authentication to devices, or use an ssh URL with source.ssh_key"
                .into(),
        };
    }
    // A transport that died once the deadline had passed was cut by it (ssh under `timeout`).
    if a.scheme != Scheme::File && a.elapsed >= a.timeout {
        return timeout(a, false);
    }
    FetchError::Other {
        context: format!("fetching from {}", a.url),
        cause,
    }
}

/// The HTTP status gix-transport reports ("Received HTTP status 404").
fn http_status(cause: &str) -> Option<u16> {
    let (_, rest) = cause.split_once("Received HTTP status ")?;
    rest.get(..3)?.parse().ok()
}

fn timeout(a: &Attempt<'_>, connecting: bool) -> FetchError {
    if connecting {
        FetchError::Timeout {
            url: a.url.to_string(),
            what: "connecting",
            after: a.connect_timeout,
            key: "connect_timeout",
        }
    } else {
        FetchError::Timeout {
            url: a.url.to_string(),
            what: "the fetch",
            after: a.timeout,
            key: "timeout",
        }
    }
}

fn tls_error(a: &Attempt<'_>, err: &rustls::Error) -> FetchError {
    use rustls::{CertificateError, Error as E};
    let untrusted = matches!(
        err,
        E::InvalidCertificate(CertificateError::UnknownIssuer)
            | E::InvalidCertificate(CertificateError::BadSignature)
    );
    let fix = match (untrusted, a.ca_file) {
        (true, Some(ca)) => format!(
            "the server's certificate is signed neither by {} nor by a system CA \
             (/etc/ssl/certs); set source.ca_file to the PEM file of the CA that signed it",
            ca.display()
        ),
        (true, None) => "the server's certificate is not signed by a system CA (/etc/ssl/certs, \
                         from the ca-certificates package); for a private CA set source.ca_file \
                         to its PEM certificate"
            .into(),
        (false, _) => match err {
            E::InvalidCertificate(CertificateError::Expired)
            | E::InvalidCertificate(CertificateError::NotValidYet) => {
                "the certificate is outside its validity period: check the device clock \
                 (timedatectl) and the server's certificate"
                    .into()
            }
            E::InvalidCertificate(CertificateError::NotValidForName)
            | E::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
                "the certificate does not name this host: use the host name the certificate \
                 was issued for in source.url"
                    .into()
            }
            _ => "check the server's TLS setup and source.ca_file".into(),
        },
    };
    FetchError::Tls {
        url: a.url.to_string(),
        cause: err.to_string(),
        fix,
    }
}

/// ssh prints its reasons on stderr (captured with `-E`); these are stable OpenSSH messages.
fn classify_ssh(a: &Attempt<'_>, cause: &str) -> Option<FetchError> {
    let log = a.ssh_log.as_str();
    // Without the final period: messages go on after the cause.
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .map(|l| quote::quote(l.trim().trim_end_matches('.').as_bytes()))
    };
    let (host, port) = ssh_host_port(a.url);
    if let Some(l) = line("Host key verification failed")
        .or_else(|| line("REMOTE HOST IDENTIFICATION HAS CHANGED"))
        .or_else(|| line("host key is known for"))
    {
        let detail = line("host key is known for")
            .or_else(|| line("REMOTE HOST IDENTIFICATION HAS CHANGED"))
            .unwrap_or(l);
        let file = a
            .known_hosts
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "~/.ssh/known_hosts".into());
        let scan = match port {
            Some(p) => format!("ssh-keyscan -p {p} {host}"),
            None => format!("ssh-keyscan {host}"),
        };
        return Some(FetchError::HostKey {
            host: match port {
                Some(p) => format!("[{host}]:{p}"),
                None => host,
            },
            cause: detail,
            fix: format!(
                "pin the server's key in {file} (source.known_hosts): get it from the server \
                 admin, or run `{scan} >> {file}` on a trusted network and compare its \
                 fingerprint (ssh-keygen -lf {file}) with the server's"
            ),
        });
    }
    if let Some(l) = line("Permission denied") {
        let key = a
            .ssh_key
            .map(|p| format!("{}.pub", p.display()))
            .unwrap_or_else(|| "the device's public key (set source.ssh_key)".into());
        return Some(FetchError::Auth {
            url: a.url.to_string(),
            cause: l,
            fix: format!("add {key} to the git server's authorized keys for this user"),
        });
    }
    if let Some(l) = line("timed out") {
        let _ = l;
        return Some(timeout(a, true));
    }
    for needle in [
        "Connection refused",
        "Could not resolve hostname",
        "No route to host",
        "Network is unreachable",
        "Connection closed by",
        "Connection reset",
    ] {
        if let Some(l) = line(needle) {
            return Some(FetchError::Unreachable {
                url: a.url.to_string(),
                cause: l,
            });
        }
    }
    if a.elapsed >= a.timeout {
        return Some(timeout(a, false));
    }
    // The server's own refusal (git's `fatal: …`, a forge's `ERROR: …`).
    if let Some(l) = log
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("fatal:") || l.starts_with("ERROR:"))
    {
        return Some(FetchError::Other {
            context: format!("fetching from {}", a.url),
            cause: format!("the server says: {l} (check the path in source.url)"),
        });
    }
    let detail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    if !detail.is_empty() && !cause.contains(detail[detail.len() - 1]) {
        return Some(FetchError::Other {
            context: format!("fetching from {} over ssh", a.url),
            cause: format!("{cause} (ssh: {})", detail.join("; ")),
        });
    }
    None
}

/// Host and port of an `ssh://` or scp-like URL, for messages.
fn ssh_host_port(url: &str) -> (String, Option<u16>) {
    match gix::url::parse(gix::bstr::BStr::new(url)) {
        Ok(u) => (u.host().unwrap_or("?").to_string(), u.port),
        Err(_) => (url.to_string(), None),
    }
}

#[cfg(test)]
mod tests;
