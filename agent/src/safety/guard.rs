//! The connectivity guard: after a change, can the device still reach what brings it the next
//! commit?
//!
//! A device that cannot fetch cannot be fixed by a new commit, so after every apply that changed
//! something, tend walks the path its next update takes, one step at a time, so that the report
//! says which step broke: resolve the name (as the device resolves it: through its own NSS when
//! tend manages `/`, through the root's /etc/hosts first otherwise), connect, complete a TLS
//! handshake (https, verified as fetches verify), and ask: list the followed refs through the
//! fetch code, or, when the device follows a stage pointer that lists bundles (its next commit
//! comes from them, git only as a fallback), poll the pointer as a run does, so that a fleet's
//! merge costs the git server nothing per device. The same (minus the asking) for every extra
//! endpoint the device config names, such as a Mender server. The whole guard is retried a few
//! times before it counts as failed, so that a blip does not revert a good commit.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::device::config::Guard;
use crate::device::endpoint::Endpoint;
use crate::net::url::host_port;
use crate::net::NoProxy;
use crate::source::fetch::SourceConfig;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    /// What was reached for: "git server git.example.com:443", "endpoint https://…".
    pub target: String,
    /// resolve, connect, tls, refs
    pub step: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the guard found, as the report carries it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GuardReport {
    pub ok: bool,
    pub attempts: u32,
    /// The last attempt's steps.
    pub steps: Vec<Step>,
}

impl GuardReport {
    /// "connectivity guard: git server localhost:443: resolve failed: …"
    pub fn failure(&self) -> Option<String> {
        self.steps.iter().find(|s| !s.ok).map(|s| {
            format!(
                "connectivity guard: {}: {} failed: {}",
                s.target,
                s.step,
                s.error.as_deref().unwrap_or("failed")
            )
        })
    }
}

/// Where the guard looks: the device root, the source (for the git server and its CA and
/// proxy), what brings the next commit, and how to ask it (the fetch code's ref listing, as the
/// run follows refs, or the pointer's poll).
pub struct Inputs<'a> {
    pub root: &'a Path,
    pub src: &'a SourceConfig,
    pub config: &'a Guard,
    pub via: Via<'a>,
    pub ask: &'a dyn Fn() -> Result<(), String>,
}

/// What brings the device its next commit.
#[derive(Clone, Copy, Debug)]
pub enum Via<'a> {
    /// The git server of `source.url`.
    Git,
    /// The stage pointer at this URL, and the bundles beside it.
    Pointer(&'a str),
}

pub fn check(i: &Inputs) -> GuardReport {
    let mut report = GuardReport::default();
    for n in 0..=i.config.retries {
        if n > 0 {
            std::thread::sleep(i.config.interval);
        }
        report.attempts = n + 1;
        report.steps = attempt(i);
        report.ok = report.steps.iter().all(|s| s.ok);
        if report.ok {
            break;
        }
        tracing::warn!(attempt = n + 1, "{}", report.failure().unwrap_or_default());
    }
    report
}

fn attempt(i: &Inputs) -> Vec<Step> {
    let mut steps = Vec::new();
    let timeout = i.config.timeout;
    let (url, server, target, step) = match i.via {
        Via::Git => (
            i.src.url.as_str(),
            "git server",
            format!("git server {}", i.src.url),
            "refs",
        ),
        Via::Pointer(url) => (url, "pointer host", format!("pointer {url}"), "pointer"),
    };
    if let Some((hop_target, hop)) = first_hop(url, server, i.src) {
        if !reach(i.root, &hop_target, &hop, i.src, timeout, &mut steps) {
            return steps;
        }
    }
    let answered = (i.ask)();
    steps.push(Step {
        target,
        step: step.into(),
        ok: answered.is_ok(),
        error: answered.err(),
    });
    for e in &i.config.endpoints {
        reach(
            i.root,
            &format!("endpoint {}", e.shown),
            e,
            i.src,
            timeout,
            &mut steps,
        );
    }
    steps
}

/// The host of `url` (named as `server`), or the proxy's when `src`'s requests go through one;
/// None for file:// URLs.
fn first_hop(url: &str, server: &str, src: &SourceConfig) -> Option<(String, Endpoint)> {
    let url = gix::url::parse(gix::bstr::BStr::new(url)).ok()?;
    let host = url.host()?.trim_matches(['[', ']']).to_string();
    let (tls, default) = match url.scheme {
        gix::url::Scheme::Https => (true, 443),
        gix::url::Scheme::Http => (false, 80),
        gix::url::Scheme::Ssh => (false, 22),
        _ => return None,
    };
    let port = url.port.unwrap_or(default);
    if matches!(url.scheme, gix::url::Scheme::Https | gix::url::Scheme::Http) {
        let (proxy, no_proxy) =
            crate::source::fetch::proxy_settings(src, |k| std::env::var(k).ok());
        let no_proxy = no_proxy.as_deref().map(NoProxy::parse).unwrap_or_default();
        if let Some(p) = proxy.filter(|_| !no_proxy.bypasses(&host, port)) {
            let authority = p
                .split_once("://")
                .map_or(p.as_str(), |(_, r)| r)
                .split('/')
                .next()
                .unwrap_or_default();
            let authority = authority.rsplit('@').next().unwrap_or(authority);
            if let Ok((h, port)) = host_port(authority, 3128) {
                // TLS runs through the tunnel; the ref listing covers it.
                let hop = Endpoint {
                    host: h,
                    port,
                    tls: false,
                    shown: p.clone(),
                };
                return Some((format!("proxy {p}"), hop));
            }
        }
    }
    let hop = Endpoint {
        shown: format!("{host}:{port}"),
        host,
        port,
        tls,
    };
    Some((format!("{server} {}", hop.shown), hop))
}

/// Resolve, connect and (for TLS endpoints) handshake; pushes a step for each one tried.
fn reach(
    root: &Path,
    target: &str,
    e: &Endpoint,
    src: &SourceConfig,
    timeout: Duration,
    steps: &mut Vec<Step>,
) -> bool {
    let mut record = |step: &str, r: Result<(), String>| {
        let ok = r.is_ok();
        steps.push(Step {
            target: target.to_string(),
            step: step.into(),
            ok,
            error: r.err(),
        });
        ok
    };
    let addrs = resolve(root, &e.host, e.port, timeout);
    let addrs = match addrs {
        Ok(a) => {
            record("resolve", Ok(()));
            a
        }
        Err(err) => return record("resolve", Err(err)),
    };
    let stream = crate::net::connect_any(&addrs, &e.host, timeout).map_err(|e| e.to_string());
    let stream = match stream {
        Ok(s) => {
            record("connect", Ok(()));
            s
        }
        Err(err) => return record("connect", Err(err)),
    };
    if !e.tls {
        return true;
    }
    record("tls", handshake(stream, &e.host, src, timeout))
}

/// Resolves as the device would. With the real root, the system resolver is the device's (NSS:
/// /etc/hosts, DNS, systemd-resolved …). With another root, its /etc/hosts is read first, since
/// that is the file a configuration change in that root can break.
pub fn resolve(
    root: &Path,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if root != Path::new("/") {
        let found = hosts_file_lookup(&root.join("etc/hosts"), host);
        if !found.is_empty() {
            return Ok(found
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect());
        }
    }
    crate::net::resolve::resolve(host, port, timeout).map_err(|e| e.to_string())
}

/// The addresses /etc/hosts gives `host` (names are case-insensitive; `#` starts a comment).
fn hosts_file_lookup(path: &Path, host: &str) -> Vec<IpAddr> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next().unwrap_or_default();
            let mut fields = l.split_whitespace();
            let ip = fields.next()?.parse::<IpAddr>().ok()?;
            fields.any(|n| n.eq_ignore_ascii_case(host)).then_some(ip)
        })
        .collect()
}

/// A full TLS handshake, with the certificate verified as fetches verify it (system roots plus
/// `source.ca_file`).
fn handshake(
    mut tcp: TcpStream,
    host: &str,
    src: &SourceConfig,
    timeout: Duration,
) -> Result<(), String> {
    let config = crate::source::fetch::client_config(src.ca_file.as_deref(), "source.ca_file")
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("'{host}' is not a TLS server name: {e}"))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let io = |e: io::Error| e.to_string();
    tcp.set_read_timeout(Some(timeout)).map_err(io)?;
    tcp.set_write_timeout(Some(timeout)).map_err(io)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn src(url: &str) -> SourceConfig {
        let mut s = SourceConfig::new(url);
        s.proxy = Some(String::new());
        s
    }

    fn bound_not_listening() -> (std::os::fd::OwnedFd, u16) {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a descriptor this function owns.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let sa = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
            assert_eq!(libc::bind(fd, sa, len), 0);
            let mut got = len;
            assert_eq!(libc::getsockname(fd, sa, &mut got), 0);
            (owned, u16::from_be(addr.sin_port))
        }
    }

    fn quick() -> Guard {
        Guard {
            endpoints: Vec::new(),
            timeout: Duration::from_secs(3),
            retries: 0,
            interval: Duration::ZERO,
        }
    }

    #[test]
    fn endpoints_parse_with_default_ports() {
        let e = Endpoint::parse("https://mender.example.com/api").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("mender.example.com", 443, true)
        );
        let e = Endpoint::parse("broker.lan:8883").unwrap();
        assert_eq!((e.port, e.tls), (8883, false));
        assert!(Endpoint::parse("broker.lan")
            .unwrap_err()
            .contains("no port"));
        assert!(Endpoint::parse("ftp://x:21")
            .unwrap_err()
            .contains("only https://"));
    }

    #[test]
    fn another_roots_hosts_file_is_read_first() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/hosts"),
            "# fleet\n10.1.2.3  Git.Fleet.Test git # comment\n",
        )
        .unwrap();
        let a = resolve(d.path(), "git.fleet.test", 443, Duration::from_secs(2)).unwrap();
        assert_eq!(a, ["10.1.2.3:443".parse().unwrap()]);
        let a = resolve(d.path(), "127.0.0.1", 80, Duration::from_secs(2)).unwrap();
        assert_eq!(a, ["127.0.0.1:80".parse().unwrap()]);
    }

    #[test]
    fn a_name_nobody_resolves_fails_the_resolve_step() {
        let d = tempfile::tempdir().unwrap();
        let s = src("https://no-such-host.invalid/fleet.git");
        let r = check(&Inputs {
            root: d.path(),
            src: &s,
            config: &quick(),
            via: Via::Git,
            ask: &|| panic!("no ref listing after a failed resolve"),
        });
        assert!(!r.ok);
        let f = r.failure().unwrap();
        assert!(
            f.starts_with(
                "connectivity guard: git server no-such-host.invalid:443: resolve failed"
            ),
            "{f}"
        );
    }

    #[test]
    fn a_closed_port_fails_connect_and_an_open_one_reaches_the_ref_listing() {
        let d = tempfile::tempdir().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let s = src(&format!("ssh://git@127.0.0.1:{port}/fleet.git"));
        let listed = std::cell::Cell::new(0);
        let mut cfg = quick();
        cfg.endpoints = vec![Endpoint::parse(&format!("127.0.0.1:{port}")).unwrap()];
        let r = check(&Inputs {
            root: d.path(),
            src: &s,
            config: &cfg,
            via: Via::Git,
            ask: &|| {
                listed.set(listed.get() + 1);
                Ok(())
            },
        });
        assert!(r.ok, "{:?}", r.failure());
        assert_eq!(listed.get(), 1);
        let names: Vec<&str> = r.steps.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(names, ["resolve", "connect", "refs", "resolve", "connect"]);
        // A port that was just freed may be handed to another test's listener; a bound socket
        // that never listens keeps its port taken and refuses every connection.
        drop(l);
        let (_held, closed) = bound_not_listening();
        let s = src(&format!("ssh://git@127.0.0.1:{closed}/fleet.git"));
        let r = check(&Inputs {
            root: d.path(),
            src: &s,
            config: &quick(),
            via: Via::Git,
            ask: &|| Ok(()),
        });
        assert!(r.failure().unwrap().contains("connect failed"), "{r:?}");
    }

    #[test]
    fn with_a_pointer_the_guard_walks_to_the_pointers_host_and_polls_it_not_git() {
        let d = tempfile::tempdir().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (_held, closed) = bound_not_listening();
        // The git server is unreachable; the pointer's host answers.
        let s = src(&format!("ssh://git@127.0.0.1:{closed}/fleet.git"));
        let url = format!("http://127.0.0.1:{port}/main.pointer");
        let polled = std::cell::Cell::new(0);
        let r = check(&Inputs {
            root: d.path(),
            src: &s,
            config: &quick(),
            via: Via::Pointer(&url),
            ask: &|| {
                polled.set(polled.get() + 1);
                Ok(())
            },
        });
        assert!(r.ok, "{:?}", r.failure());
        assert_eq!(polled.get(), 1);
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|s| format!("{} {}", s.step, s.target))
            .collect();
        assert_eq!(
            steps,
            [
                format!("resolve pointer host 127.0.0.1:{port}"),
                format!("connect pointer host 127.0.0.1:{port}"),
                format!("pointer pointer {url}"),
            ]
        );
        drop(l);
        let r = check(&Inputs {
            root: d.path(),
            src: &s,
            config: &quick(),
            via: Via::Pointer(&format!("http://127.0.0.1:{closed}/main.pointer")),
            ask: &|| panic!("no poll after a failed connect"),
        });
        let f = r.failure().unwrap();
        assert!(
            f.starts_with(&format!(
                "connectivity guard: pointer host 127.0.0.1:{closed}: connect failed"
            )),
            "{f}"
        );
    }

    #[test]
    fn a_failing_ref_listing_is_retried_then_named() {
        let d = tempfile::tempdir().unwrap();
        let s = src("file:///srv/fleet.git");
        let calls = std::cell::Cell::new(0);
        let mut cfg = quick();
        cfg.retries = 2;
        let r = check(&Inputs {
            root: d.path(),
            src: &s,
            config: &cfg,
            via: Via::Git,
            ask: &|| {
                calls.set(calls.get() + 1);
                Err("branch main: server hung up".into())
            },
        });
        assert_eq!((r.ok, r.attempts, calls.get()), (false, 3, 3));
        assert!(r
            .failure()
            .unwrap()
            .contains("refs failed: branch main: server hung up"));
    }

    #[test]
    fn the_guard_bypasses_the_proxy_exactly_as_fetches_do() {
        let mut s = SourceConfig::new("https://10.1.2.3:8443/fleet.git");
        s.proxy = Some("http://proxy.lan:3128".into());
        s.no_proxy = Some("10.0.0.0/8".into());
        assert_eq!(
            first_hop(&s.url, "git server", &s).unwrap().0,
            "git server 10.1.2.3:8443"
        );
        s.no_proxy = Some("git.lan:443".into());
        assert_eq!(
            first_hop(&s.url, "git server", &s).unwrap().0,
            "proxy http://proxy.lan:3128"
        );
        s.url = "https://git.lan/fleet.git".into();
        assert_eq!(
            first_hop(&s.url, "git server", &s).unwrap().0,
            "git server git.lan:443"
        );
    }
}
