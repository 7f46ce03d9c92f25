//! One attempt of a probe: a command inside the root, a unit's state, an HTTP GET, a TCP connect.
//!
//! HTTP is spoken by hand (HTTP/1.0, one GET, the status line read) because a health check asks
//! a service on the device itself: no TLS, no proxy, no redirects, nothing that could make a
//! healthy service look broken or a broken one look healthy.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tend_roles::types::command::run_with_timeout;
use tend_roles::Host;

use super::spec::Probe;

/// How one attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Passed,
    Failed(String),
    /// Cannot be probed here (e.g. a unit while systemd is not running): not a failure.
    Skipped(String),
}

pub fn attempt(probe: &Probe, host: &Host, timeout: Duration) -> Attempt {
    let result = match probe {
        Probe::Command { argv, shown } => {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            run_with_timeout(host, &argv, shown, timeout)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Probe::Unit { unit } => {
            if !host.systemd_running {
                return Attempt::Skipped(format!(
                    "offline: systemd is not running in this root, so {unit} cannot be active"
                ));
            }
            unit_active(host, unit, timeout)
        }
        Probe::Http {
            host: h,
            port,
            path,
            ..
        } => http_get(h, *port, path, timeout),
        Probe::Tcp { host: h, port } => connect(h, *port, timeout).map(|_| ()),
    };
    match result {
        Ok(()) => Attempt::Passed,
        Err(e) => Attempt::Failed(host.redact(&e)),
    }
}

fn unit_active(host: &Host, unit: &str, timeout: Duration) -> Result<(), String> {
    let argv = ["systemctl", "is-active", unit];
    match run_with_timeout(host, &argv, &argv.join(" "), timeout) {
        Ok(_) => Ok(()),
        Err(tend_roles::ResourceError::Command { output, .. }) => Err(format!(
            "{unit} is {}",
            if output.trim().is_empty() {
                "not active"
            } else {
                output.trim()
            }
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Connects to the first address of `host:port` that answers, resolving and connecting as
/// fetches do (`crate::net`).
pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    crate::net::tcp_connect(host, port, timeout).map_err(|e| e.to_string())
}

fn http_get(host: &str, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let mut stream = connect(host, port, timeout)?;
    let io = |e: std::io::Error| format!("GET http://{host}:{port}{path}: {e}");
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: tend-health-check\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("").trim();
    let status = line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("GET http://{authority}{path}: not an HTTP answer: '{line}'"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("GET http://{authority}{path} answered {line}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves one canned answer per connection, `n` times.
    fn serve(answer: &'static str, n: usize) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming().take(n) {
                let mut s = s.unwrap();
                // The whole request first: closing with unread bytes would reset the connection.
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(answer.as_bytes());
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
        });
        port
    }

    fn http(port: u16) -> Probe {
        Probe::Http {
            url: String::new(),
            host: "127.0.0.1".into(),
            port,
            path: "/health".into(),
        }
    }

    #[test]
    fn http_2xx_passes_and_5xx_fails_with_the_status_line() {
        let host = Host::new("/");
        let t = Duration::from_secs(5);
        let ok = serve("HTTP/1.1 204 No Content\r\n\r\n", 1);
        assert_eq!(attempt(&http(ok), &host, t), Attempt::Passed);
        let bad = serve("HTTP/1.1 503 Service Unavailable\r\n\r\n", 1);
        match attempt(&http(bad), &host, t) {
            Attempt::Failed(e) => assert!(e.contains("503 Service Unavailable"), "{e}"),
            other => panic!("{other:?}"),
        }
        let junk = serve("SSH-2.0-OpenSSH\r\n", 1);
        match attempt(&http(junk), &host, t) {
            Attempt::Failed(e) => assert!(e.contains("not an HTTP answer"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tcp_passes_while_listening_and_fails_after() {
        let host = Host::new("/");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let probe = Probe::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        assert_eq!(
            attempt(&probe, &host, Duration::from_secs(2)),
            Attempt::Passed
        );
        drop(l);
        match attempt(&probe, &host, Duration::from_secs(2)) {
            Attempt::Failed(e) => assert!(e.contains("refused"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_command_must_exit_zero_within_its_timeout() {
        let host = Host::new("/");
        let sh = |s: &str| Probe::Command {
            argv: vec!["/bin/sh".into(), "-c".into(), s.into()],
            shown: s.into(),
        };
        assert_eq!(
            attempt(&sh("exit 0"), &host, Duration::from_secs(5)),
            Attempt::Passed
        );
        match attempt(
            &sh("echo db down >&2; exit 3"),
            &host,
            Duration::from_secs(5),
        ) {
            Attempt::Failed(e) => assert!(e.contains("db down"), "{e}"),
            other => panic!("{other:?}"),
        }
        match attempt(&sh("sleep 20"), &host, Duration::from_secs(1)) {
            Attempt::Failed(e) => assert!(e.contains("timed out"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_unit_is_skipped_where_systemd_is_not_running() {
        let d = tempfile::tempdir().unwrap();
        let probe = Probe::Unit {
            unit: "nginx.service".into(),
        };
        match attempt(&probe, &Host::new(d.path()), Duration::from_secs(1)) {
            Attempt::Skipped(why) => assert!(why.contains("offline"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
