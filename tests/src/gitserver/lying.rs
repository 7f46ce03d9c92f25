//! A git server that lies: plain HTTP/1.1 on 127.0.0.1 in front of the real `git http-backend`
//! (run as CGI for each request), with a programmable lie applied to what it answers.
//!
//! A pull agent's trust model is only as good as what it assumes about the server. The honest
//! servers in this module agree with every client; this one serves the genuine objects and
//! packs of a real repo, so signatures verify, but rewrites what the server alone vouches for:
//! the `peeled:` ids of the protocol-v2 ref advertisement. Tests then show that tend believes
//! only what it can check locally. It also attacks the client itself: an endless ref listing,
//! a pack declaring millions of objects, a trickle of bytes, a bad response header. And it can
//! throttle (429/503 with a `Retry-After`), logging when each request came and what it cost.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// What the server falsifies in its next answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Lie {
    /// Answers as `git http-backend` does.
    #[default]
    None,
    /// In `ls-refs` answers, `refs/tags/<tag>` is advertised as peeling to `to`.
    Peel { tag: String, to: String },
    /// `ls-refs` is answered with refs that never end.
    EndlessRefs,
    /// The pack of a `fetch` answer declares `objects` objects and streams empty blobs.
    Objects(u32),
    /// Every answer is sent one byte every `delay_ms` milliseconds.
    Trickle { delay_ms: u64 },
    /// Every answer's head carries this raw line.
    BadHeader(Vec<u8>),
    /// The next `times` requests are answered `status` (429, 503) with this `Retry-After`,
    /// and no body from git; then the server answers honestly again.
    Throttle {
        status: u16,
        retry_after: Option<String>,
        times: u32,
    },
}

/// One request the server answered, as its log records it.
#[derive(Clone, Debug)]
pub struct Served {
    pub at: Instant,
    pub method: String,
    pub target: String,
    pub status: u16,
    /// Bytes of the answer, head included (0 for the endless and broken answers).
    pub bytes: u64,
    /// The `ref-prefix` arguments of an `ls-refs` request.
    pub ref_prefixes: Vec<String>,
}

pub struct LyingGitServer {
    port: u16,
    lie: Arc<Mutex<Lie>>,
    log: Arc<Mutex<Vec<Served>>>,
}

impl LyingGitServer {
    /// Serves the repos below `project_root` at `http://127.0.0.1:<port>/git/<name>`. The
    /// accepting thread ends with the test process.
    pub fn start(project_root: &Path) -> Result<LyingGitServer> {
        let backend = PathBuf::from("/usr/lib/git-core/git-http-backend");
        if !backend.is_file() {
            bail!("{} is missing: install git", backend.display());
        }
        let root = project_root.canonicalize()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let lie = Arc::new(Mutex::new(Lie::None));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (shared, shared_log) = (Arc::clone(&lie), Arc::clone(&log));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (root, backend) = (root.clone(), backend.clone());
                let (lie, log) = (Arc::clone(&shared), Arc::clone(&shared_log));
                std::thread::spawn(move || {
                    if let Err(e) = serve(conn, &root, &backend, &lie, &log) {
                        eprintln!("lying git server: {e:#}");
                    }
                });
            }
        });
        Ok(LyingGitServer { port, lie, log })
    }

    /// Every request answered so far, in the order they arrived.
    pub fn log(&self) -> Vec<Served> {
        let mut log = self.log.lock().unwrap().clone();
        log.sort_by_key(|s| s.at);
        log
    }

    /// The URL of repo `name` (a directory below the project root).
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/git/{name}", self.port)
    }

    /// From now on, answers carry `lie`.
    pub fn lie(&self, lie: Lie) {
        *self.lie.lock().unwrap() = lie;
    }
}

/// The lie for the request that just arrived; a counted throttle is used up by it.
fn take_lie(shared: &Mutex<Lie>) -> Lie {
    let Ok(mut lie) = shared.lock() else {
        return Lie::None;
    };
    let now = lie.clone();
    if let Lie::Throttle { times, .. } = &mut *lie {
        *times = times.saturating_sub(1);
        if *times == 0 {
            *lie = Lie::None;
        }
    }
    now
}

/// One request on one connection (tend sends `Connection: close`).
fn serve(
    conn: TcpStream,
    root: &Path,
    backend: &Path,
    shared: &Mutex<Lie>,
    log: &Mutex<Vec<Served>>,
) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    // A connection that closes without a request (a reachability probe) gets no answer.
    if reader.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let at = Instant::now();
    let lie = &take_lie(shared);
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = read_body(&mut reader, &header)?;
    let mut served = Served {
        at,
        method: method.clone(),
        target: target.clone(),
        status: 0,
        bytes: 0,
        ref_prefixes: ref_prefixes(&body),
    };
    let mut out = conn;
    if let Lie::Throttle {
        status,
        retry_after,
        ..
    } = lie
    {
        let mut answer = format!("HTTP/1.1 {status} Slow Down\r\n");
        if let Some(r) = retry_after {
            answer.push_str(&format!("Retry-After: {r}\r\n"));
        }
        answer.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
        out.write_all(answer.as_bytes())?;
        served.status = *status;
        served.bytes = answer.len() as u64;
        log.lock().unwrap().push(served);
        return Ok(());
    }
    if *lie == Lie::EndlessRefs && find(&body, b"command=ls-refs").is_some() {
        return endless_refs(&mut out);
    }
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let path_info = path.strip_prefix("/git").unwrap_or(path);
    let mut cgi = Command::new(backend)
        .env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path_info)
        .env("REQUEST_METHOD", &method)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .env(
            "HTTP_CONTENT_ENCODING",
            header("content-encoding").unwrap_or_default(),
        )
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting git http-backend")?;
    let mut stdin = cgi.stdin.take().context("stdin")?;
    let feeder = std::thread::spawn(move || stdin.write_all(&body));
    let mut answer = Vec::new();
    cgi.stdout
        .take()
        .context("stdout")?
        .read_to_end(&mut answer)?;
    let _ = feeder.join();
    cgi.wait()?;
    let split = find(&answer, b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| find(&answer, b"\n\n").map(|i| (i, 2)))
        .context("git http-backend answered without a header")?;
    let cgi_head = String::from_utf8_lossy(&answer[..split.0]).into_owned();
    let mut content = answer[split.0 + split.1..].to_vec();
    let mut status = "200 OK".to_string();
    let mut head = String::new();
    for h in cgi_head.lines() {
        match h.split_once(':') {
            Some((n, v)) if n.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            Some(_) => head.push_str(&format!("{h}\r\n")),
            None => {}
        }
    }
    match lie {
        Lie::Peel { tag, to } if path.ends_with("/git-upload-pack") => {
            content = rewrite_peel(&content, &format!("refs/tags/{tag}"), to);
        }
        Lie::Objects(objects) if find(&content, b"packfile\n").is_some() => {
            return endless_pack(&mut out, &head, &content, *objects);
        }
        Lie::BadHeader(line) => {
            out.write_all(format!("HTTP/1.1 {status}\r\n").as_bytes())?;
            out.write_all(line)?;
            out.write_all(b"\r\n\r\n")?;
            return Ok(());
        }
        _ => {}
    }
    let mut answer = format!(
        "HTTP/1.1 {status}\r\n{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    )
    .into_bytes();
    answer.extend_from_slice(&content);
    served.status = status
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    served.bytes = answer.len() as u64;
    log.lock().unwrap().push(served);
    if let Lie::Trickle { delay_ms } = lie {
        for byte in answer {
            if out.write_all(&[byte]).is_err() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(*delay_ms));
        }
        return Ok(());
    }
    out.write_all(&answer)?;
    Ok(())
}

fn pkt(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A ref listing without end, framed until the connection closes; stops when tend hangs up.
fn endless_refs(out: &mut TcpStream) -> Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-result\r\n\
          Connection: close\r\n\r\n",
    )?;
    let mut n = 0u64;
    loop {
        let mut batch = Vec::with_capacity(64 * 1024);
        for _ in 0..1000 {
            n += 1;
            let line = format!("{n:040x} refs/heads/production-{n}\n");
            batch.extend(pkt(line.as_bytes()));
        }
        if out.write_all(&batch).is_err() {
            return Ok(());
        }
    }
}

/// The genuine `fetch` answer up to its pack, then a pack header declaring `objects` objects
/// and empty blobs (9 bytes each) in sideband pkt-lines until tend hangs up.
fn endless_pack(out: &mut TcpStream, head: &str, genuine: &[u8], objects: u32) -> Result<()> {
    let start = find(genuine, b"packfile\n").context("no packfile section")? + 9;
    out.write_all(format!("HTTP/1.1 200 OK\r\n{head}Connection: close\r\n\r\n").as_bytes())?;
    out.write_all(&genuine[..start])?;
    let mut header = vec![1u8];
    header.extend_from_slice(b"PACK\0\0\0\x02");
    header.extend_from_slice(&objects.to_be_bytes());
    out.write_all(&pkt(&header))?;
    // Type blob, size 0, then an empty zlib stream.
    let blob = [0x30u8, 0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01];
    let mut band = vec![1u8];
    for _ in 0..7000 {
        band.extend_from_slice(&blob);
    }
    let line = pkt(&band);
    for _ in 0..(objects / 7000).max(1) {
        if out.write_all(&line).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn read_body(
    reader: &mut impl BufRead,
    header: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = header("content-length") {
        body.resize(len.parse()?, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(body)
}

/// The `ref-prefix` arguments of a protocol-v2 request body (one pkt-line each).
fn ref_prefixes(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split('\n')
        .filter_map(|l| l.split_once("ref-prefix ").map(|(_, p)| p.to_string()))
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Rewrites the `peeled:` id of `full_ref` in a protocol-v2 `ls-refs` answer, re-framing the
/// pkt-line it is in; any other pkt-line (and a `fetch` answer) passes through unchanged.
fn rewrite_peel(answer: &[u8], full_ref: &str, to: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(answer.len());
    let mut rest = answer;
    while rest.len() >= 4 {
        let Ok(len) = usize::from_str_radix(&String::from_utf8_lossy(&rest[..4]), 16) else {
            break;
        };
        if len < 4 || len > rest.len() {
            out.extend_from_slice(&rest[..4]);
            rest = &rest[4..];
            continue;
        }
        let payload = &rest[4..len];
        let text = String::from_utf8_lossy(payload);
        let mut fields: Vec<&str> = text.trim_end_matches('\n').split(' ').collect();
        if fields.len() >= 3 && fields[1] == full_ref {
            let peeled = format!("peeled:{to}");
            for f in fields.iter_mut().skip(2) {
                if f.starts_with("peeled:") {
                    *f = &peeled;
                }
            }
            let line = format!("{}\n", fields.join(" "));
            out.extend_from_slice(format!("{:04x}", line.len() + 4).as_bytes());
            out.extend_from_slice(line.as_bytes());
        } else {
            out.extend_from_slice(&rest[..len]);
        }
        rest = &rest[len..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peel_is_rewritten_and_its_pkt_line_reframed() {
        let a = "1111111111111111111111111111111111111111";
        let b = "2222222222222222222222222222222222222222";
        let line = format!("{a} refs/tags/p/1 peeled:{a}\n");
        let answer = format!("{:04x}{line}0000", line.len() + 4);
        let lied = rewrite_peel(answer.as_bytes(), "refs/tags/p/1", b);
        let want = format!("{a} refs/tags/p/1 peeled:{b}\n");
        assert_eq!(
            String::from_utf8(lied).unwrap(),
            format!("{:04x}{want}0000", want.len() + 4)
        );
    }
}
