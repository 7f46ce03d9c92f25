//! The parts of an http(s) URL the client needs: scheme, credentials, host, port and target.
//!
//! Only absolute `http://` and `https://` URLs are accepted; anything else is a configuration
//! error the caller reports with the setting's name. Credentials in the URL
//! (`https://user:token@host/`) become a Basic `Authorization` header.

use super::HttpError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// `user:password`, percent-decoded, for Basic authentication.
    pub userinfo: Option<String>,
    /// A name or an IP address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// The request target: path and query, at least `/`.
    pub target: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, HttpError> {
        let bad = |why: &str| HttpError::Url {
            url: url.to_string(),
            why: why.to_string(),
        };
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("it must start with https:// or http://"));
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let target = if target.starts_with('?') {
            format!("/{target}")
        } else {
            target
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(percent_decode(u)), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 host lacks `]`"))?;
            (host.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("it names no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("its port is not a number"))?,
            None if https => 443,
            None => 80,
        };
        Ok(Url {
            https,
            userinfo,
            host,
            port,
            target,
        })
    }

    /// `host:port` as a `Host` header or a CONNECT target (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    pub fn host_header(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            if self.host.contains(':') {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            }
        } else {
            self.authority()
        }
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// "host", "host:port", "[v6]:port" → (host, port); `default` when no port is given.
pub fn host_port(authority: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("'{authority}' has an unclosed '['"))?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains('@') {
        return Err(format!("'{authority}' names no host"));
    }
    let port = match port {
        None => default,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("'{p}' is not a port number"))?,
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ports_targets_and_credentials_are_split() {
        let u = Url::parse("https://git.example.com/fleet.git").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.target.as_str()),
            (true, "git.example.com", 443, "/fleet.git")
        );
        assert_eq!(u.host_header(), "git.example.com");
        let u = Url::parse("http://ci:p%40ss@127.0.0.1:8080?x=1").unwrap();
        assert_eq!(u.userinfo.as_deref(), Some("ci:p@ss"));
        assert_eq!((u.port, u.target.as_str()), (8080, "/?x=1"));
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        let u = Url::parse("https://[::1]:8443/a").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority()),
            ("::1", "[::1]:8443".into())
        );
    }

    #[test]
    fn what_is_not_an_http_url_says_why() {
        for (url, why) in [
            ("git@host:fleet.git", "https://"),
            ("https:///fleet.git", "no host"),
            ("https://host:99999/", "port"),
            ("https://[::1/", "`]`"),
        ] {
            let e = Url::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
