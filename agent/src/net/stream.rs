//! A connection to a server: TCP (direct or through an HTTP CONNECT proxy), then TLS for https,
//! with every read and write bounded by the request's deadline.
//!
//! The deadline is enforced with the socket's own read and write timeouts, re-armed before each
//! call with the time that is left, so a server that stalls mid-body fails the request when
//! `timeout` has passed instead of holding the run.
//!
//! A minimum transfer rate (`MinRate`) cuts a server that trickles: the bytes read are counted
//! over consecutive windows, and a window that ends with fewer than `rate × window` bytes ends
//! the request. The socket's read timeout is armed to the window's end, so a server that sends
//! nothing at all is cut at the same moment.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::url::Url;
use super::{resolve, HttpError};

pub struct Stream {
    inner: Inner,
    deadline: Option<Instant>,
    rate: Option<MinRate>,
    window_start: Instant,
    window_bytes: u64,
}

/// The least a server must send, in bytes per second averaged over `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinRate {
    pub bytes_per_sec: u64,
    pub window: Duration,
}

impl MinRate {
    /// What a window of this length must bring.
    fn needed(&self) -> u64 {
        (u128::from(self.bytes_per_sec) * self.window.as_millis() / 1000) as u64
    }
}

enum Inner {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// Connects to `target` (through `proxy` when given) and, for https, completes TLS.
    pub fn connect(
        target: &Url,
        proxy: Option<&Url>,
        tls: &Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<Stream, HttpError> {
        let hop = proxy.unwrap_or(target);
        let tcp = tcp_connect(&hop.host, hop.port, connect_timeout)?;
        // Connecting (TCP, the proxy's CONNECT, the TLS handshake) is bounded by
        // connect_timeout, and by the request's deadline if that comes first.
        let connect_deadline = if connect_timeout.is_zero() {
            deadline
        } else {
            let bound = Instant::now() + connect_timeout;
            Some(deadline.map_or(bound, |d| d.min(bound)))
        };
        let mut stream = Stream {
            inner: Inner::Plain(tcp),
            deadline: connect_deadline,
            rate: None,
            window_start: Instant::now(),
            window_bytes: 0,
        };
        if let (Some(proxy), true) = (proxy, target.https) {
            stream.tunnel(proxy, target)?;
        }
        if target.https {
            let Inner::Plain(tcp) = stream.inner else {
                unreachable!("TLS is set up once, on the TCP stream")
            };
            let name =
                rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
                    HttpError::Url {
                        url: target.host.clone(),
                        why: format!("not a TLS server name: {e}"),
                    }
                })?;
            let conn = rustls::ClientConnection::new(tls.clone(), name).map_err(HttpError::Tls)?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            // The handshake is part of connecting: bounded by connect_timeout.
            while tls.conn.is_handshaking() {
                arm(&tls.sock, stream.deadline).map_err(HttpError::from_io)?;
                tls.conn
                    .complete_io(&mut tls.sock)
                    .map_err(|e| connect_error(e, &target.host, connect_timeout))?;
            }
            stream.inner = Inner::Tls(Box::new(tls));
        }
        stream.deadline = deadline;
        Ok(stream)
    }

    /// HTTP CONNECT through the proxy, so TLS runs end to end with the server.
    fn tunnel(&mut self, proxy: &Url, target: &Url) -> Result<(), HttpError> {
        let authority = target.authority();
        let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(auth) = super::wire::basic_auth(proxy.userinfo.as_deref()) {
            request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        request.push_str("\r\n");
        self.write_all(request.as_bytes()).map_err(HttpError::io)?;
        // Read the proxy's answer byte by byte: nothing past its blank line may be consumed,
        // since what follows belongs to the TLS handshake.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 16 * 1024 || self.read(&mut byte).map_err(HttpError::from_io)? == 0 {
                return Err(HttpError::Proxy {
                    proxy: proxy.authority(),
                    answer: "closed the connection".into(),
                });
            }
            head.push(byte[0]);
        }
        let end = head.iter().position(|&b| b == b'\r').unwrap_or(head.len());
        let status_line = super::quote::quote(&head[..end]);
        let ok = status_line
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('2'));
        if !ok {
            return Err(HttpError::Proxy {
                proxy: proxy.authority(),
                answer: status_line,
            });
        }
        Ok(())
    }

    /// From now on, reads must keep up with `rate` (None: no bound but the deadline).
    pub fn set_min_rate(&mut self, rate: Option<MinRate>) {
        self.rate = rate.filter(|r| r.bytes_per_sec > 0 && !r.window.is_zero());
        self.window_start = Instant::now();
        self.window_bytes = 0;
    }

    /// Ends a window that is over: an error if it brought too little, else a new window.
    fn check_window(&mut self) -> io::Result<()> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        if self.window_start.elapsed() < rate.window {
            return Ok(());
        }
        if self.window_bytes < rate.needed() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                HttpError::TooSlow {
                    got: self.window_bytes,
                    window: rate.window,
                    rate: rate.bytes_per_sec,
                },
            ));
        }
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }

    /// The socket's read timeout: the deadline, or the current window's end if sooner.
    fn arm_read(&self) -> io::Result<()> {
        let window_end = self.rate.map(|r| self.window_start + r.window);
        match (self.deadline, window_end) {
            (Some(d), Some(w)) if w < d => arm_window(self.socket(), w),
            (None, Some(w)) => arm_window(self.socket(), w),
            (deadline, _) => arm(self.socket(), deadline),
        }
    }

    fn socket(&self) -> &TcpStream {
        match &self.inner {
            Inner::Plain(s) => s,
            Inner::Tls(s) => &s.sock,
        }
    }
}

/// Resolves `host` (see `resolve`) and connects to the first address that answers.
pub fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, HttpError> {
    let addrs = resolve::resolve(host, port, timeout)?;
    connect_any(&addrs, host, timeout)
}

/// Tries each address in turn, all of them within one `timeout` (zero: no bound), so that a
/// name with many dead addresses costs the configured bound, not a multiple of it.
pub fn connect_any(
    addrs: &[SocketAddr],
    host: &str,
    timeout: Duration,
) -> Result<TcpStream, HttpError> {
    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    let mut last = None;
    for &addr in addrs {
        let attempt = match deadline {
            None => TcpStream::connect(addr),
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => TcpStream::connect_timeout(&addr, left),
                _ => Err(io::ErrorKind::TimedOut.into()),
            },
        };
        match attempt {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    match last {
        Some((addr, e)) => Err(connect_error_at(e, addr, host, timeout)),
        None => Err(HttpError::Resolve {
            host: host.to_string(),
            cause: "no address".into(),
        }),
    }
}

fn connect_error_at(e: io::Error, addr: SocketAddr, host: &str, timeout: Duration) -> HttpError {
    if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock {
        HttpError::ConnectTimeout {
            host: host.to_string(),
            after: timeout,
        }
    } else {
        HttpError::Connect {
            addr: addr.to_string(),
            kind: e.kind(),
            cause: e.to_string(),
        }
    }
}

fn connect_error(e: io::Error, host: &str, timeout: Duration) -> HttpError {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return HttpError::Tls(tls.clone());
    }
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => HttpError::ConnectTimeout {
            host: host.to_string(),
            after: timeout,
        },
        _ => HttpError::io(e),
    }
}

/// Sets the socket's timeouts to what is left until `deadline`; an error once it has passed.
fn arm(socket: &TcpStream, deadline: Option<Instant>) -> io::Result<()> {
    let Some(deadline) = deadline else {
        socket.set_read_timeout(None)?;
        return socket.set_write_timeout(None);
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, HttpError::Deadline));
    }
    socket.set_read_timeout(Some(left))?;
    socket.set_write_timeout(Some(left))
}

/// Sets the read timeout to the end of a rate window (at least a millisecond: a zero timeout
/// would mean none).
fn arm_window(socket: &TcpStream, end: Instant) -> io::Result<()> {
    let left = end.saturating_duration_since(Instant::now());
    socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))
}

/// A socket timeout is the deadline passing: say so, so callers classify it as a timeout.
fn timed(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut {
        io::Error::new(io::ErrorKind::TimedOut, HttpError::Deadline)
    } else {
        e
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.check_window()?;
            self.arm_read()?;
            let got = match &mut self.inner {
                Inner::Plain(s) => s.read(buf),
                Inner::Tls(s) => match s.read(buf) {
                    // A server that closes without close_notify: the body's framing decides
                    // whether anything is missing.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                    other => other,
                },
            };
            match got {
                Ok(n) => {
                    self.window_bytes += n as u64;
                    return Ok(n);
                }
                // The window ended before the deadline: judge it on the next turn.
                Err(e)
                    if self.rate.is_some()
                        && matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        )
                        && self.deadline.is_none_or(|d| Instant::now() < d) => {}
                Err(e) => return Err(timed(e)),
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        arm(self.socket(), self.deadline)?;
        match &mut self.inner {
            Inner::Plain(s) => s.write(buf),
            Inner::Tls(s) => s.write(buf),
        }
        .map_err(timed)
    }

    fn flush(&mut self) -> io::Result<()> {
        arm(self.socket(), self.deadline)?;
        match &mut self.inner {
            Inner::Plain(s) => s.flush(),
            Inner::Tls(s) => s.flush(),
        }
        .map_err(timed)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use super::MinRate;
    use crate::net::{Client, HttpError};

    /// A server on 127.0.0.1 that answers one request with a 2000-byte body, `gap` between bytes.
    fn trickling(gap: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let mut out = conn;
            let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n");
            for _ in 0..2000 {
                if out.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(gap);
            }
        });
        url
    }

    fn body(url: &str) -> (Result<Vec<u8>, HttpError>, Duration) {
        let tls = crate::source::fetch::client_config(None, "ca_file").unwrap();
        let client = Client::new(
            tls,
            None,
            None,
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .unwrap()
        .with_min_rate(Some(MinRate {
            bytes_per_sec: 1024,
            window: Duration::from_secs(1),
        }));
        let started = Instant::now();
        let got = client.send("GET", url, &[], &[]).and_then(|r| {
            let mut out = Vec::new();
            r.into_body()
                .read_to_end(&mut out)
                .map_err(HttpError::from_io)
                .map(|_| out)
        });
        (got, started.elapsed())
    }

    #[test]
    fn a_trickling_server_is_cut_at_the_end_of_a_rate_window() {
        let (got, took) = body(&trickling(Duration::from_millis(20)));
        let e = got.unwrap_err();
        assert!(matches!(e, HttpError::TooSlow { rate: 1024, .. }), "{e}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        let (got, _) = body(&trickling(Duration::ZERO));
        assert_eq!(got.unwrap().len(), 2000);
    }
}
