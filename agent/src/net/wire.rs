//! HTTP/1.1 on the wire: the request head, the response head, and the body's framing
//! (Content-Length, chunked, or until the server closes).
//!
//! Each request uses its own connection (`Connection: close`): a run makes a handful of
//! requests, and a fresh connection per request keeps the framing rules simple and strict.

use std::io::{self, BufRead, Read};

use super::quote::quote;
use super::HttpError;

/// The whole response head (status line and headers) may not exceed this: a server must not
/// fill memory before the body's own bounds apply.
const MAX_HEAD: u64 = 64 * 1024;

/// The head of a response: status, reason and headers (names as sent).
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in the order sent.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `Basic <base64(user:password)>` for credentials from a URL.
pub fn basic_auth(userinfo: Option<&str>) -> Option<String> {
    use base64::Engine as _;
    userinfo.map(|u| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(u.as_bytes())
        )
    })
}

/// Reads the status line and headers, up to the blank line.
pub fn read_head(reader: &mut impl BufRead) -> Result<Head, HttpError> {
    let mut line = String::new();
    let mut left = MAX_HEAD;
    let mut read_line = |line: &mut String| -> Result<(), HttpError> {
        line.clear();
        let mut raw = Vec::new();
        let n = reader
            .by_ref()
            .take(left)
            .read_until(b'\n', &mut raw)
            .map_err(HttpError::from_io)?;
        if n == 0 && left == 0 {
            return Err(HttpError::Protocol(format!(
                "the response head is longer than {MAX_HEAD} bytes"
            )));
        }
        if n == 0 {
            return Err(HttpError::Protocol(
                "the server closed the connection before answering".into(),
            ));
        }
        left -= n as u64;
        if !raw.ends_with(b"\n") {
            return Err(HttpError::Protocol(format!(
                "the response head is longer than {MAX_HEAD} bytes or cut short: `{}`",
                quote(&raw)
            )));
        }
        match String::from_utf8(raw) {
            Ok(text) => *line = text,
            Err(e) => {
                return Err(HttpError::Protocol(format!(
                    "a response header is not text: `{}`",
                    quote(e.as_bytes())
                )))
            }
        }
        while line.ends_with(['\r', '\n']) {
            line.pop();
        }
        Ok(())
    };
    read_line(&mut line)?;
    let mut parts = line.splitn(3, ' ');
    let (version, status) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Protocol(format!(
            "the answer `{}` is not HTTP/1.x",
            quote(line.as_bytes())
        )));
    }
    let status: u16 = status.parse().map_err(|_| {
        HttpError::Protocol(format!("bad status line `{}`", quote(line.as_bytes())))
    })?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        read_line(&mut line)?;
        if line.is_empty() {
            break;
        }
        if headers.len() > 200 {
            return Err(HttpError::Protocol("more than 200 response headers".into()));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| {
            HttpError::Protocol(format!("bad header line `{}`", quote(line.as_bytes())))
        })?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(Head {
        status,
        reason,
        headers,
    })
}

/// How the body of a response ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// At most this many trailer lines after the last chunk: they are read and dropped, and an
/// endless stream of them must not hold a run until its deadline.
const MAX_TRAILERS: usize = 64;

impl Framing {
    /// The framing of a response, strictly (RFC 9112 §6): `chunked` is the only transfer coding
    /// tend reads, a body with both Transfer-Encoding and Content-Length is refused (the mark of
    /// response smuggling), and Content-Length is plain digits, the same in every copy.
    pub fn of(head: &Head, method: &str) -> Result<Framing, HttpError> {
        if method == "HEAD" || head.status == 204 || head.status == 304 || head.status < 200 {
            return Ok(Framing::Length(0));
        }
        let te: Vec<&str> = head.values("transfer-encoding").collect();
        let lengths: Vec<&str> = head.values("content-length").collect();
        if !te.is_empty() {
            if !lengths.is_empty() {
                return Err(HttpError::Protocol(
                    "the response has both Transfer-Encoding and Content-Length".into(),
                ));
            }
            return match te.as_slice() {
                [one] if one.trim().eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
                _ => Err(HttpError::Protocol(format!(
                    "unsupported Transfer-Encoding `{}` (only `chunked` is read)",
                    quote(te.join(", ").as_bytes())
                ))),
            };
        }
        let Some(first) = lengths.first() else {
            return Ok(Framing::UntilClose);
        };
        let bad =
            || HttpError::Protocol(format!("bad Content-Length `{}`", quote(first.as_bytes())));
        if lengths.iter().any(|l| l.trim() != first.trim()) {
            return Err(HttpError::Protocol(
                "the response has differing Content-Length headers".into(),
            ));
        }
        let digits = first.trim();
        // u64's parser also takes a leading `+`; a Content-Length is digits only.
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        digits.parse().map(Framing::Length).map_err(|_| bad())
    }
}

/// A response body: exactly what its framing says, and an error if the connection ends early.
pub struct Body<R> {
    inner: R,
    framing: Framing,
    /// Bytes left in the current chunk (or of the whole body, for Length).
    left: u64,
    /// A chunk's data was read; its CRLF comes before the next size line.
    chunk_end: bool,
    done: bool,
}

impl<R: BufRead> Body<R> {
    pub fn new(inner: R, framing: Framing) -> Self {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Body {
            inner,
            framing,
            left,
            chunk_end: false,
            done: matches!(framing, Framing::Length(0)),
        }
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        if self.chunk_end {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
            if &crlf != b"\r\n" {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    HttpError::Protocol("a chunk is longer than its size line says".into()),
                ));
            }
            self.chunk_end = false;
        }
        let mut line = String::new();
        (&mut self.inner).take(1024).read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or("").trim();
        self.left = u64::from_str_radix(size, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                HttpError::Protocol(format!(
                    "bad chunk size line `{}`",
                    quote(line.trim_end().as_bytes())
                )),
            )
        })?;
        if self.left == 0 {
            // Trailers, then the final blank line.
            for trailers in 0.. {
                line.clear();
                let n = (&mut self.inner).take(8192).read_line(&mut line)?;
                if n == 0 || line.trim_end().is_empty() {
                    break;
                }
                if trailers == MAX_TRAILERS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        HttpError::Protocol(format!("more than {MAX_TRAILERS} trailer lines")),
                    ));
                }
            }
            self.done = true;
        }
        Ok(())
    }

    fn truncated() -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            HttpError::Protocol("the connection ended in the middle of the body".into()),
        )
    }
}

/// `Read::read` for a reader whose `BufRead` side does the work (the body, and the bounded
/// readers around it).
pub fn read_buffered(reader: &mut impl BufRead, buf: &mut [u8]) -> io::Result<usize> {
    let available = reader.fill_buf()?;
    let n = available.len().min(buf.len());
    buf[..n].copy_from_slice(&available[..n]);
    reader.consume(n);
    Ok(n)
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, buf)
    }
}

impl<R: BufRead> BufRead for Body<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.done {
            return Ok(&[]);
        }
        if self.framing == Framing::Chunked && self.left == 0 {
            self.next_chunk()?;
            if self.done {
                return Ok(&[]);
            }
        }
        let framing = self.framing;
        let left = self.left;
        let buf = self.inner.fill_buf()?;
        if buf.is_empty() {
            return match framing {
                Framing::UntilClose => {
                    self.done = true;
                    Ok(&[])
                }
                _ => Err(Self::truncated()),
            };
        }
        let n = match framing {
            Framing::UntilClose => buf.len(),
            _ => buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
        };
        // Reborrow: the slice must come from inner's buffer after the framing math.
        Ok(&self.inner.fill_buf()?[..n])
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        if amt == 0 || self.framing == Framing::UntilClose {
            return;
        }
        self.left -= amt as u64;
        if self.left == 0 {
            match self.framing {
                Framing::Length(_) => self.done = true,
                Framing::Chunked => self.chunk_end = true,
                Framing::UntilClose => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn body(raw: &str) -> io::Result<String> {
        let mut reader = Cursor::new(raw.as_bytes().to_vec());
        let head = read_head(&mut reader).unwrap();
        let framing = Framing::of(&head, "GET").unwrap();
        let mut out = String::new();
        Body::new(reader, framing).read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn heads_are_parsed_with_case_insensitive_header_lookup() {
        let head = read_head(&mut Cursor::new(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nX-Total-Count: 3\r\n\r\n",
        ))
        .unwrap();
        assert_eq!((head.status, head.reason.as_str()), (401, "Unauthorized"));
        assert_eq!(head.header("x-total-count"), Some("3"));
        assert!(read_head(&mut Cursor::new("SSH-2.0-OpenSSH\r\n\r\n")).is_err());
        assert!(read_head(&mut Cursor::new("")).is_err());
    }

    #[test]
    fn bodies_end_as_their_framing_says() {
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more").unwrap(),
            "hello"
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: t\r\n\r\n")
                .unwrap(),
            "hello, world"
        );
        assert_eq!(
            body("HTTP/1.0 200 OK\r\n\r\nuntil close").unwrap(),
            "until close"
        );
        assert_eq!(body("HTTP/1.1 204 No Content\r\n\r\n").unwrap(), "");
    }

    #[test]
    fn a_body_cut_short_is_an_error_not_a_short_read() {
        let e = body("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }

    #[test]
    fn framing_is_strict_where_a_lenient_reader_could_be_smuggled_to() {
        let framing = |headers: &str| {
            let raw = format!("HTTP/1.1 200 OK\r\n{headers}\r\n");
            Framing::of(&read_head(&mut Cursor::new(raw)).unwrap(), "GET")
        };
        assert_eq!(
            framing("Transfer-Encoding: Chunked\r\n").unwrap(),
            Framing::Chunked
        );
        assert_eq!(
            framing("Content-Length: 12\r\n").unwrap(),
            Framing::Length(12)
        );
        assert_eq!(
            framing("Content-Length: 7\r\ncontent-length: 7\r\n").unwrap(),
            Framing::Length(7)
        );
        for refused in [
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: 99999999999999999999\r\n",
        ] {
            assert!(framing(refused).is_err(), "{refused:?} was accepted");
        }
        let e = framing("Transfer-Encoding: \u{1b}[2Jx\r\n")
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\u{1b}') && e.contains("\\x1b"), "{e}");
    }

    #[test]
    fn a_bad_header_is_shown_truncated_and_escaped() {
        let evil = format!("\u{1b}[2J{}", "A".repeat(60_000));
        let raw = format!("HTTP/1.1 200 OK\r\n{evil}\r\n\r\n");
        let e = read_head(&mut Cursor::new(raw)).unwrap_err().to_string();
        assert!(
            e.len() < 300 && !e.contains('\u{1b}') && e.contains("\\x1b"),
            "{e}"
        );
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            format!("X: {}\r\n", "y".repeat(500)).repeat(190)
        );
        let e = read_head(&mut Cursor::new(many)).unwrap_err().to_string();
        assert!(e.contains("longer than 65536 bytes"), "{e}");
    }

    #[test]
    fn endless_trailers_are_an_error() {
        let mut raw =
            String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n");
        for n in 0..100 {
            raw.push_str(&format!("X-T{n}: t\r\n"));
        }
        raw.push_str("\r\n");
        assert!(body(&raw).is_err());
    }

    #[test]
    fn url_credentials_become_basic_auth() {
        assert_eq!(
            basic_auth(Some("Aladdin:open sesame")).as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
    }
}
