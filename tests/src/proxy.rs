//! Network middlemen for transport tests, all on 127.0.0.1 and stopped on drop:
//! - [`ConnectProxy`]: an HTTP CONNECT proxy that records every target it tunnels, so a test can
//!   prove its client really went through the proxy (and that `no_proxy` bypassed it);
//! - [`StallServer`]: accepts TCP connections and never says a word, so a test can prove a
//!   client's timeout fires instead of hanging;
//! - [`SynDropServer`]: a listening socket whose accept queue is full, so new connections are
//!   never completed (the kernel drops their SYNs), to prove a connect timeout fires.
//!
//! Only loopback targets are tunnelled: tests must not reach any other address.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Result};

/// A tunnel idle this long is closed (tests are short; nothing may linger).
const IDLE: Duration = Duration::from_secs(30);

/// Accepts on `listener` until `stop`, handing each connection to `serve` on its own thread.
pub(crate) struct Acceptor {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    pub(crate) fn start(
        serve: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    ) -> Result<Acceptor> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let serve = Arc::new(serve);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (serve, stop) = (serve.clone(), stop2.clone());
                std::thread::spawn(move || serve(conn, &stop));
            }
        });
        Ok(Acceptor {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct ConnectProxy {
    acceptor: Acceptor,
    targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start() -> Result<ConnectProxy> {
        let targets = Arc::new(Mutex::new(Vec::new()));
        let log = targets.clone();
        let acceptor = Acceptor::start(move |conn, stop| {
            let _ = tunnel(conn, &log, stop);
        })?;
        Ok(ConnectProxy { acceptor, targets })
    }

    /// `http://127.0.0.1:<port>`, as a client's proxy setting.
    pub fn url(&self) -> String {
        format!("http://{}", self.acceptor.addr)
    }

    /// The `host:port` of every CONNECT so far, in order.
    pub fn targets(&self) -> Vec<String> {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn tunnel(client: TcpStream, log: &Mutex<Vec<String>>, stop: &AtomicBool) -> Result<()> {
    client.set_read_timeout(Some(IDLE))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut out = client.try_clone()?;
    let mut parts = line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        out.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(target.to_string());
    let upstream = target
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.find(|a| a.ip().is_loopback()))
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).ok());
    let Some(upstream) = upstream else {
        out.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    upstream.set_read_timeout(Some(IDLE))?;
    // Copying from the reader also forwards what the client sent right after the request
    // head (already in the reader's buffer).
    let mut up_write = upstream.try_clone()?;
    let mut up_read = upstream;
    let to_server = std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut up_write);
        let _ = up_write.shutdown(Shutdown::Write);
    });
    if !stop.load(Ordering::SeqCst) {
        let _ = std::io::copy(&mut up_read, &mut out);
    }
    let _ = out.shutdown(Shutdown::Both);
    let _ = to_server.join();
    Ok(())
}

pub struct StallServer {
    acceptor: Acceptor,
}

impl StallServer {
    pub fn start() -> Result<StallServer> {
        let acceptor = Acceptor::start(|mut conn, stop| {
            // Hold the connection, read and discard, never answer; end when stopped or closed.
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 4096];
            for _ in 0..(IDLE.as_millis() / 200) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
        })?;
        Ok(StallServer { acceptor })
    }

    pub fn addr(&self) -> SocketAddr {
        self.acceptor.addr
    }

    pub fn port(&self) -> u16 {
        self.acceptor.addr.port()
    }
}

pub struct SynDropServer {
    addr: SocketAddr,
    _listener: OwnedFd,
    _queued: Vec<TcpStream>,
}

impl SynDropServer {
    /// Listens with a backlog of 0 and fills the queue, so further connects hang.
    pub fn start() -> Result<SynDropServer> {
        // std's TcpListener always asks for a large backlog; a full queue needs listen(fd, 0).
        // SAFETY: plain socket calls on a descriptor we own (wrapped in OwnedFd at once).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: sa is a valid sockaddr_in of length len.
        if unsafe {
            libc::bind(
                owned.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                len,
            )
        } != 0
            || unsafe { libc::listen(owned.as_raw_fd(), 0) } != 0
        {
            bail!("bind/listen: {}", std::io::Error::last_os_error());
        }
        let mut got = sa;
        let mut got_len = len;
        // SAFETY: getsockname writes at most got_len bytes into got.
        if unsafe {
            libc::getsockname(
                owned.as_raw_fd(),
                &mut got as *mut _ as *mut libc::sockaddr,
                &mut got_len,
            )
        } != 0
        {
            bail!("getsockname: {}", std::io::Error::last_os_error());
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], u16::from_be(got.sin_port)));
        // Fill the accept queue; stop at the first connect that does not complete.
        let mut queued = Vec::new();
        while queued.len() < 8 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => queued.push(s),
                Err(_) => break,
            }
        }
        if queued.len() == 8 {
            bail!("the kernel kept accepting connections: cannot make connects hang here");
        }
        Ok(SynDropServer {
            addr,
            _listener: owned,
            _queued: queued,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_tunnels_to_loopback_and_records_the_target() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = echo.accept().unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            c.write_all(&buf).unwrap();
        });
        let proxy = ConnectProxy::start().unwrap();
        let mut c = TcpStream::connect(proxy.acceptor.addr).unwrap();
        write!(
            c,
            "CONNECT {echo_addr} HTTP/1.1\r\nHost: {echo_addr}\r\n\r\nhello"
        )
        .unwrap();
        let mut resp = vec![0u8; "HTTP/1.1 200 Connection established\r\n\r\nhello".len()];
        c.read_exact(&mut resp).unwrap();
        assert!(String::from_utf8_lossy(&resp).ends_with("\r\n\r\nhello"));
        assert_eq!(proxy.targets(), vec![echo_addr.to_string()]);
    }

    #[test]
    fn proxy_refuses_plain_requests() {
        let proxy = ConnectProxy::start().unwrap();
        let mut c = TcpStream::connect(proxy.acceptor.addr).unwrap();
        c.write_all(b"GET http://example.com/ HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
        assert!(proxy.targets().is_empty());
    }

    #[test]
    fn stall_server_accepts_and_never_answers() {
        let s = StallServer::start().unwrap();
        let mut c = TcpStream::connect(s.addr()).unwrap();
        c.write_all(b"hello?\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 1];
        let e = c.read(&mut buf).unwrap_err();
        assert!(matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ));
    }

    #[test]
    fn syn_drop_server_makes_connects_hang() {
        let s = SynDropServer::start().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], s.port()));
        let e = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }
}
