//! Bounds on what a git server may send over http(s), whatever it claims.
//!
//! Without them an endless `ls-refs` answer grew tend to 4.5 GB in 15 s, and a pack declaring
//! 30 M objects to 1.9 GB: gix keeps a ref listing in memory and sizes its pack index by the
//! object count the pack's header declares. Each answer of a fetch is therefore read through
//! [`Bounded`], which counts its bytes and follows its pkt-lines as they stream by:
//! - the capability advertisement (`GET info/refs`): [`MAX_ADVERTISEMENT`] bytes;
//! - the ref listing (`ls-refs`): [`MAX_REF_LISTING`] bytes and [`MAX_REFS`] refs. tend asks
//!   only for the refs it follows (`ref-prefix`), so an honest answer is a few hundred bytes;
//! - the pack (`fetch`): `source.max_fetch_bytes`, and a declared object count of at most one
//!   object per [`BYTES_PER_OBJECT`] of that bound, checked on the pack's 12-byte header before
//!   gix reads an object.
//!
//! A bound hit ends the fetch with [`BoundHit`] inside the io error gix reports, which the
//! classifier turns into `FetchError::Bound`.

use std::fmt;
use std::io::{self, BufRead, Read};

/// The capability advertisement: a few hundred bytes from an honest server.
pub const MAX_ADVERTISEMENT: u64 = 1 << 20;
/// The `ls-refs` answer, in bytes and in refs.
pub const MAX_REF_LISTING: u64 = 4 << 20;
pub const MAX_REFS: u64 = 10_000;
/// The pack may declare one object per this many bytes of `source.max_fetch_bytes`. gix's
/// index takes ≈64 bytes of memory per declared object (1.9 GB for 30 M), so the default
/// 256 MiB admits 1 M objects and ≈64 MB of index, in proportion to the pack itself; a fleet
/// repo's objects (commits, trees, YAML and unit files) average well above 256 bytes.
pub const BYTES_PER_OBJECT: u64 = 256;

/// Which bound a server went past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Advertisement,
    RefListing,
    RefCount,
    Pack,
    PackObjects,
    Rate,
}

impl Limit {
    /// What was bounded, as the error names it.
    pub fn what(self) -> &'static str {
        match self {
            Limit::Advertisement => "the capability advertisement",
            Limit::RefListing | Limit::RefCount => "the ref listing",
            Limit::Pack => "the pack",
            Limit::PackObjects => "the pack's object count",
            Limit::Rate => "the transfer rate",
        }
    }

    /// The config key that moves the bound; None for the fixed ones.
    pub fn key(self) -> Option<&'static str> {
        match self {
            Limit::Advertisement | Limit::RefListing | Limit::RefCount => None,
            Limit::Pack | Limit::PackObjects => Some("source.max_fetch_bytes"),
            Limit::Rate => Some("source.min_transfer_rate"),
        }
    }

    pub fn fix(self) -> &'static str {
        match self {
            Limit::Advertisement | Limit::RefListing | Limit::RefCount => {
                "this bound is fixed: tend asks only for the refs it follows, and an honest \
                 server answers in a few hundred bytes; check the git server (or what answers \
                 in its place)"
            }
            Limit::Pack => {
                "raise source.max_fetch_bytes if the fleet repo's pack really is that large; \
                 otherwise check the git server"
            }
            Limit::PackObjects => {
                "the bound is source.max_fetch_bytes / 256; raise source.max_fetch_bytes if the \
                 fleet repo really has that many objects, otherwise check the git server"
            }
            Limit::Rate => {
                "lower source.min_transfer_rate (0 turns the check off) or lengthen \
                 source.transfer_rate_window if the link really is that slow; otherwise check \
                 the git server and the network"
            }
        }
    }
}

/// A bound hit while reading an answer: which one, and the figures.
#[derive(Debug)]
pub struct BoundHit {
    pub limit: Limit,
    pub detail: String,
}

impl fmt::Display for BoundHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} went past its bound: {}",
            self.limit.what(),
            self.detail
        )
    }
}

impl std::error::Error for BoundHit {}

/// Which answer of a fetch a reader carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Advertisement,
    RefListing,
    Pack,
}

impl Answer {
    /// Told apart by the request: `GET info/refs`, else the v2 command in the POST's body.
    pub fn of(method: &str, upload: &[u8]) -> Answer {
        if method == "GET" {
            Answer::Advertisement
        } else if upload.windows(15).any(|w| w == b"command=ls-refs") {
            Answer::RefListing
        } else {
            Answer::Pack
        }
    }
}

/// An answer's reader that fails once the answer goes past its bounds.
pub struct Bounded<R> {
    inner: R,
    limit: Limit,
    max_bytes: u64,
    /// Bytes handed to the reader (consumed).
    consumed: u64,
    /// Bytes of the current buffer already scanned but not yet consumed.
    scanned: usize,
    scan: PktScan,
}

impl<R: BufRead> Bounded<R> {
    pub fn new(inner: R, answer: Answer, max_fetch_bytes: u64) -> Self {
        let (limit, max_bytes) = match answer {
            Answer::Advertisement => (Limit::Advertisement, MAX_ADVERTISEMENT),
            Answer::RefListing => (Limit::RefListing, MAX_REF_LISTING),
            Answer::Pack => (Limit::Pack, max_fetch_bytes),
        };
        let scan = PktScan {
            max_refs: (answer == Answer::RefListing).then_some(MAX_REFS),
            max_objects: (answer == Answer::Pack).then_some(max_fetch_bytes / BYTES_PER_OBJECT),
            ..PktScan::default()
        };
        Bounded {
            inner,
            limit,
            max_bytes,
            consumed: 0,
            scanned: 0,
            scan,
        }
    }
}

impl<R: BufRead> BufRead for Bounded<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let buf = self.inner.fill_buf()?;
        let room = self.max_bytes.saturating_sub(self.consumed);
        if room == 0 && !buf.is_empty() {
            return Err(io::Error::other(BoundHit {
                limit: self.limit,
                detail: format!("the server sent more than {} bytes", self.max_bytes),
            }));
        }
        let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if n > self.scanned {
            self.scan
                .feed(&buf[self.scanned..n])
                .map_err(io::Error::other)?;
            self.scanned = n;
        }
        Ok(&buf[..n])
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.consumed += amt as u64;
        self.scanned = self.scanned.saturating_sub(amt);
    }
}

impl<R: BufRead> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::net::wire::read_buffered(self, buf)
    }
}

/// How many leading payload bytes of each pkt-line the scan looks at: a section name
/// (`packfile\n`), or a sideband byte and the pack's 12-byte header.
const PREFIX: usize = 16;

/// Follows pkt-lines (`<4 hex digits of length><payload>`) across buffer boundaries, counting
/// refs and reading the pack header. Anything that is not a pkt-line stops the scan: gix
/// reports the protocol error itself.
#[derive(Default)]
struct PktScan {
    max_refs: Option<u64>,
    max_objects: Option<u64>,
    head: [u8; 4],
    head_len: usize,
    /// Payload length of the current pkt-line and how much of it is still to come.
    payload: usize,
    left: usize,
    prefix: Vec<u8>,
    lines: u64,
    in_packfile: bool,
    pack_header: Vec<u8>,
    stopped: bool,
}

impl PktScan {
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), BoundHit> {
        while !bytes.is_empty() && !self.stopped {
            if self.left == 0 {
                let take = (4 - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&bytes[..take]);
                self.head_len += take;
                bytes = &bytes[take..];
                if self.head_len == 4 {
                    self.head_len = 0;
                    self.start_line()?;
                }
                continue;
            }
            let take = self.left.min(bytes.len());
            let want = PREFIX.min(self.payload);
            if self.prefix.len() < want {
                let n = (want - self.prefix.len()).min(take);
                self.prefix.extend_from_slice(&bytes[..n]);
                if self.prefix.len() == want {
                    self.on_prefix()?;
                }
            }
            self.left -= take;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    fn start_line(&mut self) -> Result<(), BoundHit> {
        let len = std::str::from_utf8(&self.head)
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok());
        let Some(len) = len else {
            self.stopped = true;
            return Ok(());
        };
        // 0000 flush, 0001 delimiter, 0002 response end: no payload.
        if len <= 4 {
            return Ok(());
        }
        self.payload = len - 4;
        self.left = self.payload;
        self.prefix.clear();
        self.lines += 1;
        if let Some(max) = self.max_refs {
            if self.lines > max {
                return Err(BoundHit {
                    limit: Limit::RefCount,
                    detail: format!("the server listed more than {max} refs"),
                });
            }
        }
        Ok(())
    }

    fn on_prefix(&mut self) -> Result<(), BoundHit> {
        let Some(max) = self.max_objects else {
            return Ok(());
        };
        if !self.in_packfile {
            self.in_packfile = self.prefix == b"packfile\n";
            return Ok(());
        }
        // Band 1 carries the pack; 2 and 3 are progress and errors.
        if self.prefix.first() != Some(&1) || self.pack_header.len() == 12 {
            return Ok(());
        }
        let need = 12 - self.pack_header.len();
        let data = &self.prefix[1..];
        self.pack_header
            .extend_from_slice(&data[..need.min(data.len())]);
        if self.pack_header.len() < 12 {
            return Ok(());
        }
        if &self.pack_header[..4] != b"PACK" {
            self.stopped = true;
            return Ok(());
        }
        let declared = u32::from_be_bytes(self.pack_header[8..12].try_into().expect("4 bytes"));
        if u64::from(declared) > max {
            return Err(BoundHit {
                limit: Limit::PackObjects,
                detail: format!(
                    "the pack declares {declared} objects, more than {max} (one per \
                     {BYTES_PER_OBJECT} bytes of source.max_fetch_bytes)"
                ),
            });
        }
        self.stopped = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn pkt(payload: &[u8]) -> Vec<u8> {
        let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
        out.extend_from_slice(payload);
        out
    }

    /// Reads `answer` through the bound in small pieces, as a slow socket would deliver it.
    fn read_all(answer: Vec<u8>, kind: Answer, max_fetch_bytes: u64) -> io::Result<usize> {
        let reader = io::BufReader::with_capacity(7, Cursor::new(answer));
        let mut bounded = Bounded::new(reader, kind, max_fetch_bytes);
        let mut sink = Vec::new();
        bounded.read_to_end(&mut sink)
    }

    fn hit(e: io::Error) -> Limit {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<BoundHit>())
            .map(|b| b.limit)
            .unwrap_or_else(|| panic!("not a bound: {e}"))
    }

    fn pack_answer(objects: u32) -> Vec<u8> {
        let mut header = vec![1u8];
        header.extend_from_slice(b"PACK\0\0\0\x02");
        header.extend_from_slice(&objects.to_be_bytes());
        header.extend_from_slice(&[0x30; 40]);
        let mut answer = pkt(b"shallow-info\n");
        answer.extend(pkt(b"shallow 1111111111111111111111111111111111111111\n"));
        answer.extend(b"0001");
        answer.extend(pkt(b"packfile\n"));
        answer.extend(pkt(b"\x02Enumerating objects: 3\n"));
        answer.extend(pkt(&header));
        answer.extend(b"0000");
        answer
    }

    #[test]
    fn the_requests_tell_which_answer_comes() {
        assert_eq!(Answer::of("GET", b""), Answer::Advertisement);
        assert_eq!(
            Answer::of("POST", b"0014command=ls-refs\n"),
            Answer::RefListing
        );
        assert_eq!(Answer::of("POST", b"0012command=fetch\n"), Answer::Pack);
    }

    #[test]
    fn a_listing_of_too_many_refs_is_cut() {
        let line = pkt(b"1111111111111111111111111111111111111111 refs/heads/x\n");
        let ok = line.repeat(MAX_REFS as usize);
        assert!(read_all(ok, Answer::RefListing, 0).is_ok());
        let many = line.repeat(MAX_REFS as usize + 1);
        assert_eq!(
            hit(read_all(many, Answer::RefListing, 0).unwrap_err()),
            Limit::RefCount
        );
    }

    #[test]
    fn an_answer_past_its_byte_bound_is_cut() {
        let big = pkt(&[b'x'; 60_000]).repeat(80);
        assert_eq!(
            hit(read_all(big, Answer::Advertisement, 0).unwrap_err()),
            Limit::Advertisement
        );
        let pack = pack_answer(0);
        let len = pack.len() as u64;
        assert!(read_all(pack.clone(), Answer::Pack, len).is_ok());
        assert_eq!(
            hit(read_all(pack, Answer::Pack, len - 1).unwrap_err()),
            Limit::Pack
        );
    }

    #[test]
    fn a_pack_declaring_more_objects_than_its_bound_allows_is_refused() {
        let max = 1 << 20;
        assert!(read_all(pack_answer(4096), Answer::Pack, max).is_ok());
        assert_eq!(
            hit(read_all(pack_answer(4097), Answer::Pack, max).unwrap_err()),
            Limit::PackObjects
        );
        assert_eq!(
            hit(read_all(pack_answer(30_000_000), Answer::Pack, 256 << 20).unwrap_err()),
            Limit::PackObjects
        );
    }
}
