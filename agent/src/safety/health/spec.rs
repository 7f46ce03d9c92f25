//! A role's `checks:` entry, parsed from its rendered keys and validated before anything applies.
//!
//! A check names exactly one probe (`command`, `unit`, `http`, `tcp`); everything else has a
//! default. Errors name the key they are about, so the loader can point at its line.

use std::time::Duration;

use crate::net::url::host_port;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tend_roles::spec::parse_spec;
use tend_roles::SpecError;

pub const DEFAULT_TIMEOUT: u64 = 10;
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_INTERVAL: u64 = 2;
const MAX_TIMEOUT: u64 = 600;
const MAX_RETRIES: u32 = 30;

/// The keys a check entry takes (`when` is handled by the loader).
pub const KEYS: &[&str] = &[
    "name", "command", "unit", "http", "tcp", "timeout", "retries", "interval", "revert",
];

/// What a check probes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Probe {
    /// A shell line (`/bin/sh -c`) or an argv, run inside the root; must exit 0.
    Command { argv: Vec<String>, shown: String },
    /// `systemctl is-active` must say `active`.
    Unit { unit: String },
    /// A GET that must answer 2xx.
    Http {
        url: String,
        host: String,
        port: u16,
        path: String,
    },
    /// Something must accept a TCP connection.
    Tcp { host: String, port: u16 },
}

impl Probe {
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Command { .. } => "command",
            Probe::Unit { .. } => "unit",
            Probe::Http { .. } => "http",
            Probe::Tcp { .. } => "tcp",
        }
    }

    /// What is probed, as operators read it.
    pub fn target(&self) -> String {
        match self {
            Probe::Command { shown, .. } => shown.clone(),
            Probe::Unit { unit } => unit.clone(),
            Probe::Http { url, .. } => url.clone(),
            Probe::Tcp { host, port } => format!("{host}:{port}"),
        }
    }
}

/// One health check of a role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub role: String,
    /// `name:`, else "<kind> <target>".
    pub name: String,
    pub probe: Probe,
    /// Bound on one attempt.
    pub timeout: Duration,
    /// Further attempts after a failed one.
    pub retries: u32,
    /// Wait between attempts (a restarted service needs a moment).
    pub interval: Duration,
    /// A failure reverts a new commit to the last good one.
    pub revert: bool,
    /// "roles/web/role.yaml:12"
    pub origin: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    command: Option<Value>,
    unit: Option<String>,
    http: Option<String>,
    tcp: Option<Value>,
    timeout: Option<u64>,
    retries: Option<u32>,
    interval: Option<u64>,
    revert: Option<bool>,
}

/// Builds a check from its rendered keys (without `when`).
pub fn build(role: &str, origin: String, spec: Value) -> Result<Check, SpecError> {
    let raw: Raw = parse_spec(spec)?;
    let given: Vec<&str> = [
        ("command", raw.command.is_some()),
        ("unit", raw.unit.is_some()),
        ("http", raw.http.is_some()),
        ("tcp", raw.tcp.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| *k)
    .collect();
    if given.len() != 1 {
        let msg = if given.is_empty() {
            "a check names no probe: give one of `command`, `unit`, `http`, `tcp`".to_string()
        } else {
            format!(
                "a check has one probe, this one has {}: split it into several checks",
                given.join(", ")
            )
        };
        return Err(SpecError::at_key(
            given.get(1).copied().unwrap_or("name"),
            msg,
        ));
    }
    let probe = if let Some(c) = raw.command {
        command(c)?
    } else if let Some(u) = raw.unit {
        unit(u)?
    } else if let Some(h) = raw.http {
        http(h)?
    } else {
        tcp(raw.tcp.unwrap_or_default())?
    };
    let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout == 0 || timeout > MAX_TIMEOUT {
        return Err(SpecError::at_key(
            "timeout",
            format!("timeout is seconds per attempt, 1 to {MAX_TIMEOUT}; got {timeout}"),
        ));
    }
    let retries = raw.retries.unwrap_or(DEFAULT_RETRIES);
    if retries > MAX_RETRIES {
        return Err(SpecError::at_key(
            "retries",
            format!(
                "retries is at most {MAX_RETRIES}; got {retries} (raise `interval` to wait longer)"
            ),
        ));
    }
    let interval = raw.interval.unwrap_or(DEFAULT_INTERVAL);
    if interval > MAX_TIMEOUT {
        return Err(SpecError::at_key(
            "interval",
            format!("interval is seconds between attempts, at most {MAX_TIMEOUT}; got {interval}"),
        ));
    }
    let name = match raw.name {
        Some(n) if n.trim().is_empty() => {
            return Err(SpecError::at_key(
                "name",
                "name is empty: drop it or say what is checked",
            ))
        }
        Some(n) => n,
        None => format!("{} {}", probe.kind(), probe.target()),
    };
    Ok(Check {
        role: role.to_string(),
        name,
        probe,
        timeout: Duration::from_secs(timeout),
        retries,
        interval: Duration::from_secs(interval),
        revert: raw.revert.unwrap_or(false),
        origin,
    })
}

fn command(v: Value) -> Result<Probe, SpecError> {
    let bad = || {
        SpecError::at_key(
            "command",
            "command is a shell line (`command: \"curl -fsS localhost\"`) or a non-empty list of arguments",
        )
    };
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(Probe::Command {
            argv: vec!["/bin/sh".into(), "-c".into(), s.clone()],
            shown: s,
        }),
        Value::Array(a) if !a.is_empty() => {
            let argv: Vec<String> = a
                .iter()
                .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
                .collect::<Result<_, _>>()?;
            if argv[0].is_empty() {
                return Err(bad());
            }
            Ok(Probe::Command {
                shown: argv.join(" "),
                argv,
            })
        }
        _ => Err(bad()),
    }
}

fn unit(u: String) -> Result<Probe, SpecError> {
    if u.is_empty() || u.contains('/') || u.chars().any(char::is_whitespace) {
        return Err(SpecError::at_key(
            "unit",
            format!("'{u}' is not a unit name: write e.g. `unit: nginx.service`"),
        ));
    }
    Ok(Probe::Unit { unit: u })
}

fn http(url: String) -> Result<Probe, SpecError> {
    let err = |why: &str| {
        SpecError::at_key(
            "http",
            format!("'{url}': {why}; write e.g. `http: http://127.0.0.1:8080/health`"),
        )
    };
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        err("only http:// is probed (a check asks a service on the device itself)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = host_port(authority, 80).map_err(|w| err(&w))?;
    Ok(Probe::Http {
        host,
        port,
        path: path.to_string(),
        url,
    })
}

fn tcp(v: Value) -> Result<Probe, SpecError> {
    let err = |why: String| {
        SpecError::at_key(
            "tcp",
            format!("{why}; write a port (`tcp: 8080`, on 127.0.0.1) or `tcp: \"host:port\"`"),
        )
    };
    let (host, port) = match &v {
        Value::Number(n) => {
            let port = n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| err(format!("{n} is not a port")))?;
            ("127.0.0.1".to_string(), port)
        }
        Value::String(s) if s.parse::<u16>().is_ok() => {
            host_port(&format!("127.0.0.1:{s}"), 0).map_err(err)?
        }
        Value::String(s) => host_port(s, 0).map_err(err)?,
        other => return Err(err(format!("{other} is not a port"))),
    };
    if port == 0 {
        return Err(err("the port is missing or 0".into()));
    }
    Ok(Probe::Tcp { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(spec: Value) -> Result<Check, SpecError> {
        build("web", "roles/web/role.yaml:3".into(), spec)
    }

    #[test]
    fn defaults_and_generated_names() {
        let c = check(json!({"unit": "nginx.service"})).unwrap();
        assert_eq!(c.name, "unit nginx.service");
        assert_eq!(c.timeout, Duration::from_secs(DEFAULT_TIMEOUT));
        assert_eq!(c.retries, DEFAULT_RETRIES);
        assert!(!c.revert);
        let c = check(json!({"name": "web answers", "http": "http://127.0.0.1:8080/health", "revert": true, "retries": 0}))
            .unwrap();
        assert_eq!(c.name, "web answers");
        assert!(c.revert && c.retries == 0);
        assert_eq!(
            c.probe,
            Probe::Http {
                url: "http://127.0.0.1:8080/health".into(),
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/health".into()
            }
        );
    }

    #[test]
    fn command_is_a_shell_line_or_an_argv() {
        let c = check(json!({"command": "test -e /run/app.pid"})).unwrap();
        assert_eq!(
            c.probe,
            Probe::Command {
                argv: vec!["/bin/sh".into(), "-c".into(), "test -e /run/app.pid".into()],
                shown: "test -e /run/app.pid".into()
            }
        );
        let c = check(json!({"command": ["/bin/true", "x"]})).unwrap();
        assert_eq!(c.probe.target(), "/bin/true x");
        let e = check(json!({"command": []})).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("command"));
    }

    #[test]
    fn tcp_takes_a_port_or_host_and_port() {
        let c = check(json!({"tcp": 22})).unwrap();
        assert_eq!(c.probe.target(), "127.0.0.1:22");
        let c = check(json!({"tcp": "8080"})).unwrap();
        assert_eq!(c.probe.target(), "127.0.0.1:8080");
        let c = check(json!({"tcp": "[::1]:53"})).unwrap();
        assert_eq!(c.probe.target(), "::1:53");
        for bad in [json!(0), json!(70000), json!("localhost"), json!("h:x")] {
            let e = check(json!({ "tcp": bad })).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("tcp"), "{bad}: {e}");
        }
    }

    #[test]
    fn exactly_one_probe_and_sane_bounds() {
        let e = check(json!({"name": "x"})).unwrap_err();
        assert!(e.message.contains("names no probe"), "{e}");
        let e = check(json!({"unit": "a.service", "tcp": 1})).unwrap_err();
        assert!(e.message.contains("unit, tcp"), "{e}");
        assert_eq!(e.key.as_deref(), Some("tcp"));
        let e = check(json!({"unit": "a", "timeout": 0})).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("timeout"));
        let e = check(json!({"unit": "a", "retries": 99})).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("retries"));
        let e = check(json!({"http": "https://x/"})).unwrap_err();
        assert!(e.message.contains("only http://"), "{e}");
        let e = check(json!({"unit": "a", "revrt": true})).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("revrt"));
        let e = check(json!({"unit": "a b"})).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("unit"));
    }
}
