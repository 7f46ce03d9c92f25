//! A small static file server on 127.0.0.1, for the apt repository and anything else tests serve.
//!
//! Only what apt and similar clients need: GET and HEAD, Content-Length, keep-alive (apt pipelines
//! requests on one connection), 404. Every request is logged so a test can assert that a run made
//! no request at all (check mode, an unchanged source) or exactly the ones expected.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result};

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub status: u16,
}

pub struct StaticServer {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

/// An idle keep-alive connection is dropped after this long.
const IDLE: Duration = Duration::from_secs(15);

impl StaticServer {
    /// Serves the files below `dir` on an ephemeral loopback port until dropped.
    pub fn serve(dir: &Path) -> Result<StaticServer> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("serving {}", dir.display()))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (dir, log, stop) = (dir.clone(), log2.clone(), stop2.clone());
                thread::spawn(move || serve_connection(conn, &dir, &log, &stop));
            }
        });
        Ok(StaticServer {
            addr,
            log,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn request_count(&self) -> usize {
        self.lock().len()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Request>> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn serve_connection(conn: TcpStream, dir: &Path, log: &Mutex<Vec<Request>>, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(IDLE));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while !stop.load(Ordering::SeqCst) {
        let Some((method, target, keep_alive)) = read_request(&mut reader) else {
            break;
        };
        let path = target.split(['?', '#']).next().unwrap_or("").to_string();
        let (status, body) = match method.as_str() {
            "GET" | "HEAD" => match file_for(dir, &path) {
                Some(bytes) => (200, bytes),
                None => (404, b"not found\n".to_vec()),
            },
            _ => (405, b"method not allowed\n".to_vec()),
        };
        log.lock().unwrap_or_else(|p| p.into_inner()).push(Request {
            method: method.clone(),
            path,
            status,
        });
        let reason = match status {
            200 => "OK",
            404 => "Not Found",
            _ => "Method Not Allowed",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: \
             application/octet-stream\r\nConnection: {}\r\n\r\n",
            body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        );
        let mut response = head.into_bytes();
        if method != "HEAD" {
            response.extend_from_slice(&body);
        }
        if out.write_all(&response).is_err() || !keep_alive {
            break;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
}

/// The request line and whether the client keeps the connection; None at EOF or on garbage.
fn read_request(reader: &mut impl BufRead) -> Option<(String, String, bool)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let mut keep_alive = version == "HTTP/1.1";
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("connection") {
                let v = value.trim();
                keep_alive = !v.eq_ignore_ascii_case("close")
                    && (keep_alive || v.eq_ignore_ascii_case("keep-alive"));
            }
        }
    }
    Some((method.to_string(), target.to_string(), keep_alive))
}

/// The bytes of the regular file a URL path names below `dir`; None for anything else,
/// including paths that climb out of `dir`.
fn file_for(dir: &Path, url_path: &str) -> Option<Vec<u8>> {
    let decoded = percent_decode(url_path)?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let path: PathBuf = dir.join(rel).canonicalize().ok()?;
    if !path.starts_with(dir) || !path.is_file() {
        return None;
    }
    std::fs::read(path).ok()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn served() -> (tempfile::TempDir, StaticServer) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("pool")).unwrap();
        std::fs::write(d.path().join("pool/a+b_1.0.deb"), "deb bytes").unwrap();
        let s = StaticServer::serve(d.path()).unwrap();
        (d, s)
    }

    fn exchange(s: &StaticServer, raw: &str) -> String {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(raw.as_bytes()).unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        resp
    }

    #[test]
    fn get_head_and_404_are_answered_and_logged() {
        let (_d, s) = served();
        let get = exchange(&s, "GET /pool/a%2bb_1.0.deb HTTP/1.0\r\n\r\n");
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        assert!(get.contains("Content-Length: 9\r\n") && get.ends_with("deb bytes"));
        let head = exchange(
            &s,
            "HEAD /pool/a+b_1.0.deb HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(
            head.contains("Content-Length: 9") && !head.contains("deb bytes"),
            "{head}"
        );
        let missing = exchange(&s, "GET /nope HTTP/1.0\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404"));
        let statuses: Vec<u16> = s.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 200, 404]);
        assert_eq!(s.request_count(), 3);
    }

    #[test]
    fn pipelined_requests_on_one_connection_are_all_answered() {
        let (_d, s) = served();
        let resp = exchange(
            &s,
            "GET /pool/a+b_1.0.deb HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: \
             x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 2, "{resp}");
        assert!(resp.contains("404 Not Found"));
    }

    #[test]
    fn paths_cannot_climb_out_of_the_served_directory() {
        let (d, s) = served();
        std::fs::write(d.path().parent().unwrap().join("tend-secret-probe"), "x").ok();
        let resp = exchange(&s, "GET /../tend-secret-probe HTTP/1.0\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        let resp = exchange(&s, "GET /%2e%2e/tend-secret-probe HTTP/1.0\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        let _ = std::fs::remove_file(d.path().parent().unwrap().join("tend-secret-probe"));
    }

    #[test]
    fn other_methods_are_refused() {
        let (_d, s) = served();
        let resp = exchange(&s, "POST /pool/a+b_1.0.deb HTTP/1.0\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    }

    #[test]
    fn dropping_the_server_closes_the_port() {
        let (_d, s) = served();
        let addr = s.addr;
        drop(s);
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
    }
}
