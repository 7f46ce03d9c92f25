//! Host name resolution, safe in a static binary.
//!
//! musl (amd64, arm64) resolves in-process from /etc/hosts and /etc/resolv.conf and never loads
//! NSS modules. A statically linked glibc (armhf) still dlopens the modules nsswitch.conf names
//! (a Raspberry Pi lists mdns4_minimal), which pulls the device's shared libc into the static
//! process and crashes when the two glibc versions differ. So the static glibc build asks
//! `getent ahosts` (libc-bin, Essential), which runs with the device's own glibc and resolves
//! exactly as every other program does. See docs/packaging.md.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tend_roles::child::{Error as ChildError, Finished};

use super::HttpError;

/// Whether this binary links glibc statically (the armhf build).
const STATIC_GLIBC: bool = cfg!(all(target_env = "gnu", target_feature = "crt-static"));

/// The addresses of `host`, in the resolver's order of preference.
pub fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, HttpError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs = if STATIC_GLIBC {
        with_getent(host, timeout)?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    } else {
        in_process(host, port, timeout)?
    };
    if addrs.is_empty() {
        return Err(HttpError::Resolve {
            host: host.to_string(),
            cause: "no address".into(),
        });
    }
    Ok(addrs)
}

/// The libc resolver (musl's, or a dynamic glibc's NSS), on a thread: getaddrinfo has no timeout
/// of its own, and a dead DNS server must not hold the run past `timeout`.
fn in_process(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, HttpError> {
    let failed = |cause: String| HttpError::Resolve {
        host: host.to_string(),
        cause,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_string();
    std::thread::spawn(move || {
        let r = (name.as_str(), port)
            .to_socket_addrs()
            .map(|a| a.collect::<Vec<_>>());
        let _ = tx.send(r);
    });
    match rx.recv_timeout(timeout.max(Duration::from_secs(1))) {
        Ok(r) => r.map_err(|e| failed(e.to_string())),
        Err(_) => Err(failed(format!("no answer within {}s", timeout.as_secs()))),
    }
}

/// `getent ahosts HOST`, bounded by `timeout` (a dead DNS server must not hold the run).
pub fn with_getent(host: &str, timeout: Duration) -> Result<Vec<IpAddr>, HttpError> {
    let failed = |cause: String| HttpError::Resolve {
        host: host.to_string(),
        cause,
    };
    if host.starts_with('-') || host.chars().any(char::is_whitespace) {
        return Err(failed("not a host name".into()));
    }
    let mut cmd = std::process::Command::new("getent");
    cmd.args(["ahosts", host])
        .stdin(std::process::Stdio::null());
    let out = match tend_roles::child::run(cmd, timeout.max(Duration::from_secs(1))) {
        Ok(Finished::Exited(out)) => out,
        Ok(Finished::TimedOut(_)) => {
            return Err(failed(format!("no answer within {}s", timeout.as_secs())))
        }
        Err(ChildError::Spawn(e)) => return Err(failed(format!("running getent: {e}"))),
        Err(ChildError::Wait(e)) => return Err(failed(e.to_string())),
    };
    let status = out.status;
    let out = String::from_utf8_lossy(&out.stdout);
    if !status.success() {
        // getent exits 2 for "not found".
        return Err(failed("unknown host".into()));
    }
    Ok(parse_ahosts(&out))
}

/// `getent ahosts` prints each address once per socket type; keep the first of each, in order.
fn parse_ahosts(out: &str) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for ip in out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|a| a.parse::<IpAddr>().ok())
    {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getent_output_gives_each_address_once_in_order() {
        let out = "::1             STREAM localhost\n::1             DGRAM  \n\
                   127.0.0.1       STREAM \n127.0.0.1       DGRAM  \n";
        assert_eq!(
            parse_ahosts(out),
            vec![
                "::1".parse::<IpAddr>().unwrap(),
                "127.0.0.1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn getent_resolves_localhost_and_refuses_what_is_not_a_name() {
        let ips = with_getent("localhost", Duration::from_secs(5)).unwrap();
        assert!(ips.iter().any(|ip| ip.is_loopback()), "{ips:?}");
        assert!(with_getent("-s x", Duration::from_secs(5)).is_err());
        let e = with_getent("tend-no-such-host.invalid", Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("tend-no-such-host.invalid"), "{e}");
    }

    #[test]
    fn addresses_need_no_lookup() {
        let a = resolve("127.0.0.1", 8443, Duration::from_secs(1)).unwrap();
        assert_eq!(a, vec!["127.0.0.1:8443".parse().unwrap()]);
    }
}
