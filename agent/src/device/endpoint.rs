//! An endpoint the connectivity guard must still reach (`guard.endpoints`): parsed with the
//! config, checked by the guard, so it lives below both.

use crate::net::url::host_port;

/// A place the device must still reach: resolve and connect, and a TLS handshake when `tls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// As configured.
    pub shown: String,
}

impl Endpoint {
    /// `https://host[:port][/…]` or `[tcp://]host:port`.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let (rest, tls, default) = if let Some(r) = s.strip_prefix("https://") {
            (r, true, 443)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (r, false, 0)
        } else if s.contains("://") {
            return Err(format!(
                "'{s}': only https:// and tcp:// endpoints are checked"
            ));
        } else {
            (s, false, 0)
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = host_port(authority, default).map_err(|e| format!("'{s}': {e}"))?;
        if port == 0 {
            return Err(format!("'{s}' has no port"));
        }
        Ok(Endpoint {
            host,
            port,
            tls,
            shown: s.to_string(),
        })
    }
}
