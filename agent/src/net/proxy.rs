//! Which requests go through the proxy: `no_proxy` as curl and git read it.
//!
//! A comma-separated list; `*` bypasses the proxy for every host. An entry matches its host
//! exactly and, for names, every subdomain (`example.com` and `.example.com` both match
//! `git.example.com`). IP addresses match exactly, or by prefix in CIDR form (`10.0.0.0/8`).
//! An entry's port, if given, must match too.

use std::net::IpAddr;

/// The proxy and the `no_proxy` list the environment gives a request to an `https` (or plain
/// http) URL, read through `env` so that tests need not touch the process environment. As curl
/// does: `https_proxy` or `HTTPS_PROXY`; for plain http only the lower-case `http_proxy` (CGI sets
/// the upper-case one from a request header); `no_proxy` or `NO_PROXY`. Empty values count as
/// unset.
pub fn from_env(
    https: bool,
    env: impl Fn(&str) -> Option<String>,
) -> (Option<String>, Option<String>) {
    let get = |k: &str| env(k).filter(|s| !s.trim().is_empty());
    let proxy = if https {
        get("https_proxy").or_else(|| get("HTTPS_PROXY"))
    } else {
        get("http_proxy")
    };
    (proxy, get("no_proxy").or_else(|| get("NO_PROXY")))
}

#[derive(Clone, Debug, Default)]
pub struct NoProxy {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
enum Entry {
    All,
    Name { suffix: String, port: Option<u16> },
    Net { net: IpAddr, bits: u8 },
}

impl NoProxy {
    pub fn parse(list: &str) -> NoProxy {
        let entries = list
            .split([',', ' '])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .filter_map(|e| {
                if e == "*" {
                    return Some(Entry::All);
                }
                if let Some((addr, bits)) = e.split_once('/') {
                    let net: IpAddr = addr.parse().ok()?;
                    let bits: u8 = bits.parse().ok()?;
                    return Some(Entry::Net { net, bits });
                }
                if let Ok(ip) = e.trim_matches(['[', ']']).parse::<IpAddr>() {
                    let bits = if ip.is_ipv4() { 32 } else { 128 };
                    return Some(Entry::Net { net: ip, bits });
                }
                let (name, port) = match e.rsplit_once(':') {
                    Some((n, p)) => (n, Some(p.parse().ok()?)),
                    None => (e, None),
                };
                Some(Entry::Name {
                    suffix: name.trim_start_matches('.').to_ascii_lowercase(),
                    port,
                })
            })
            .collect();
        NoProxy { entries }
    }

    /// Whether a request to `host:port` bypasses the proxy.
    pub fn bypasses(&self, host: &str, port: u16) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.entries.iter().any(|e| match e {
            Entry::All => true,
            Entry::Net { net, bits } => ip.is_some_and(|ip| in_net(ip, *net, *bits)),
            Entry::Name { suffix, port: p } => {
                p.is_none_or(|p| p == port)
                    && (host == *suffix || host.ends_with(&format!(".{suffix}")))
            }
        })
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let bits = u32::from(bits).min(width);
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_themselves_and_their_subdomains_only() {
        let n = NoProxy::parse("example.com, .lan,git.internal:8443");
        assert!(n.bypasses("example.com", 443));
        assert!(n.bypasses("git.example.com", 443));
        assert!(!n.bypasses("badexample.com", 443));
        assert!(n.bypasses("fleet.lan", 80));
        assert!(n.bypasses("git.internal", 8443));
        assert!(!n.bypasses("git.internal", 443));
    }

    #[test]
    fn addresses_match_exactly_or_by_network() {
        let n = NoProxy::parse("127.0.0.1,10.0.0.0/8,::1");
        assert!(n.bypasses("127.0.0.1", 1));
        assert!(!n.bypasses("127.0.0.2", 1));
        assert!(n.bypasses("10.20.30.40", 1));
        assert!(!n.bypasses("11.0.0.1", 1));
        assert!(n.bypasses("[::1]", 1));
        assert!(!NoProxy::parse("").bypasses("localhost", 1));
        assert!(NoProxy::parse("*").bypasses("anything", 1));
    }
}
