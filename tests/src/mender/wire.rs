//! HTTP/1.1 as Go's net/http client speaks it to a server: keep-alive, request bodies with
//! Content-Length or chunked transfer coding, and responses with Content-Length.

use std::io::{self, BufRead, Write};

/// Bodies beyond this are refused; the device API's largest body is an inventory of a few KB.
const MAX_BODY: usize = 4 << 20;

#[derive(Debug)]
pub struct HttpRequest {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: String,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl HttpRequest {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The next request on the connection; None at a clean end of stream.
pub fn read_request(r: &mut impl BufRead) -> io::Result<Option<HttpRequest>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("bad request line {line:?}")));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
        keep_alive: version == "HTTP/1.1",
    };
    loop {
        let mut header = String::new();
        if r.read_line(&mut header)? == 0 {
            return Err(invalid("end of stream inside the headers".into()));
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header {header:?}")))?;
        req.headers
            .push((name.trim().to_string(), value.trim().to_string()));
    }
    if let Some(c) = req.header("connection") {
        req.keep_alive = if c.eq_ignore_ascii_case("close") {
            false
        } else {
            req.keep_alive || c.eq_ignore_ascii_case("keep-alive")
        };
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    req.body = if chunked {
        read_chunked(r)?
    } else {
        let len = match req.header("content-length") {
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| invalid(format!("bad Content-Length {v:?}")))?,
            None => 0,
        };
        if len > MAX_BODY {
            return Err(invalid(format!("body of {len} bytes is too large")));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        body
    };
    Ok(Some(req))
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        r.read_line(&mut size_line)?;
        let size_hex = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
        if body.len() + size > MAX_BODY {
            return Err(invalid("chunked body is too large".into()));
        }
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut trailer = String::new();
                if r.read_line(&mut trailer)? == 0 || trailer.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

pub fn write_response(
    w: &mut impl Write,
    status: u16,
    content_type: &str,
    headers: &[(&str, String)],
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    // 204 carries neither a body nor a Content-Length (RFC 9110 8.6).
    if status != 204 {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    let conn = if keep_alive { "keep-alive" } else { "close" };
    head.push_str(&format!("Connection: {conn}\r\n\r\n"));
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_and_chunked_bodies_and_keep_alive_are_read() {
        let raw = "PUT /a/b?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloPOST /c \
                   HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n\
                   2;ext=1\r\nde\r\n0\r\n\r\n";
        let mut r = io::BufReader::new(raw.as_bytes());
        let a = read_request(&mut r).unwrap().unwrap();
        assert_eq!(
            (a.method.as_str(), a.path.as_str(), a.query.as_str()),
            ("PUT", "/a/b", "x=1")
        );
        assert_eq!(a.body, b"hello");
        assert!(a.keep_alive);
        assert_eq!(a.header("HOST"), Some("h"));
        let b = read_request(&mut r).unwrap().unwrap();
        assert_eq!(b.body, b"abcde");
        assert!(!b.keep_alive);
        assert!(read_request(&mut r).unwrap().is_none());
    }

    #[test]
    fn garbage_and_oversized_bodies_are_errors() {
        let mut r = io::BufReader::new("nonsense\r\n\r\n".as_bytes());
        assert!(read_request(&mut r).is_err());
        let big = format!("PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert!(read_request(&mut io::BufReader::new(big.as_bytes())).is_err());
    }

    #[test]
    fn no_content_has_no_length_and_others_do() {
        let mut out = Vec::new();
        write_response(&mut out, 204, "text/plain", &[], b"", true).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 204 No Content\r\n") && !s.contains("Content-Length"));
        let mut out = Vec::new();
        let total = [("X-Total-Count", "3".to_string())];
        write_response(&mut out, 401, "application/json", &total, b"{}", false).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Content-Length: 2\r\n") && s.contains("Connection: close"));
        assert!(s.contains("\r\nX-Total-Count: 3\r\n"));
    }
}
