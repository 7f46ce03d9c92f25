//! tend's HTTP client: blocking HTTP/1.1 over rustls, for git's smart protocol (under gix, see
//! `fetch::http`) and for Mender's management API (`tend gate`).
//!
//! A general-purpose client (reqwest) brings an async runtime, HTTP/2, and URL and IDNA tables:
//! over a megabyte of a binary that must fit a small device, for a run that makes a handful of
//! sequential requests. This one does exactly what tend needs, and all of it is configured by
//! tend, never by the environment behind its back:
//! - TLS: a rustls config the caller builds (the system roots plus a CA file);
//! - an HTTP proxy (CONNECT for https), bypassed per `no_proxy`;
//! - `connect_timeout` for resolving, connecting and the TLS handshake, and `timeout` as a
//!   deadline for the whole request, body included;
//! - name resolution that is safe in a static binary (see `resolve`).
//!
//! Redirects are not followed: a device's URLs are configured, and a redirect is reported with
//! where it points, so the configuration can be fixed.

pub mod proxy;
pub mod quote;
pub mod resolve;
mod stream;
pub mod url;
/// Public for the `http_response` fuzz target; the client is the way in.
pub mod wire;

use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use proxy::NoProxy;
pub use stream::{connect_any, tcp_connect, MinRate};
pub use url::Url;
pub use wire::Head;

use stream::Stream;
use wire::{Body, Framing};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("`{url}` is not a usable URL: {why}")]
    Url { url: String, why: String },
    #[error("cannot resolve {host}: {cause}")]
    Resolve { host: String, cause: String },
    #[error("cannot connect to {addr}: {cause}")]
    Connect {
        addr: String,
        kind: io::ErrorKind,
        cause: String,
    },
    #[error("connecting to {host} timed out after {}s", after.as_secs())]
    ConnectTimeout { host: String, after: Duration },
    #[error("the request's deadline passed")]
    Deadline,
    #[error(
        "the server sent {got} bytes in {}s, below the minimum of {rate} bytes/s",
        window.as_secs_f64()
    )]
    TooSlow {
        got: u64,
        window: Duration,
        rate: u64,
    },
    #[error("TLS: {0}")]
    Tls(#[source] rustls::Error),
    #[error("the proxy {proxy} refused the tunnel: {answer}")]
    Proxy { proxy: String, answer: String },
    #[error("bad HTTP from the server: {0}")]
    Protocol(String),
    /// The peer reset or aborted the connection, or closed it under a write.
    #[error("{0}")]
    Cut(String),
    #[error("{0}")]
    Io(String),
}

impl HttpError {
    /// Keeps the client's own errors (a deadline, a TLS alert) when they come back inside an
    /// io::Error from a read or write.
    fn from_io(e: io::Error) -> HttpError {
        if e.get_ref().is_some_and(|i| i.is::<HttpError>()) {
            let inner = e.into_inner().expect("checked above");
            return *inner.downcast::<HttpError>().expect("checked above");
        }
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return HttpError::Tls(tls.clone());
        }
        HttpError::io(e)
    }

    /// An io::Error as is, but a reset, aborted or broken connection is [`HttpError::Cut`].
    pub(crate) fn io(e: io::Error) -> HttpError {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => HttpError::Cut(e.to_string()),
            _ => HttpError::Io(e.to_string()),
        }
    }

    /// The deadline passed or connecting took too long.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Deadline | Self::ConnectTimeout { .. })
    }

    /// The failure happened before the server was reached.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::Resolve { .. } | Self::Connect { .. } | Self::ConnectTimeout { .. }
        )
    }
}

/// How requests are made; see the module documentation.
#[derive(Clone)]
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    proxy: Option<Url>,
    no_proxy: NoProxy,
    connect_timeout: Duration,
    timeout: Duration,
    min_rate: Option<MinRate>,
}

impl Client {
    /// `proxy` is an `http://[user:pass@]host:port` URL; a zero duration means no bound.
    pub fn new(
        tls: rustls::ClientConfig,
        proxy: Option<&str>,
        no_proxy: Option<&str>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Client, HttpError> {
        let proxy = proxy.map(Url::parse).transpose()?;
        if let Some(p) = &proxy {
            if p.https {
                return Err(HttpError::Url {
                    url: format!("https://{}", p.authority()),
                    why: "the proxy must be an http:// URL (https is tunnelled through it)".into(),
                });
            }
        }
        Ok(Client {
            tls: Arc::new(tls),
            proxy,
            no_proxy: no_proxy.map(NoProxy::parse).unwrap_or_default(),
            connect_timeout,
            timeout,
            min_rate: None,
        })
    }

    /// Answers must keep up with `rate` (see `stream`), on top of the deadline.
    pub fn with_min_rate(mut self, rate: Option<MinRate>) -> Client {
        self.min_rate = rate;
        self
    }

    /// Sends one request and reads the response head. `headers` are `Name: value` lines; Host,
    /// Content-Length, Connection and (from URL credentials) Authorization are added.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[String],
        body: &[u8],
    ) -> Result<Response, HttpError> {
        let target = Url::parse(url)?;
        let deadline = (!self.timeout.is_zero()).then(|| Instant::now() + self.timeout);
        let proxy = self
            .proxy
            .as_ref()
            .filter(|_| !self.no_proxy.bypasses(&target.host, target.port));
        let mut stream =
            Stream::connect(&target, proxy, &self.tls, self.connect_timeout, deadline)?;
        stream.set_min_rate(self.min_rate);
        // Plain http through a proxy asks it for the absolute URL; https is tunnelled.
        let request_target = match proxy {
            Some(_) if !target.https => format!("http://{}{}", target.authority(), target.target),
            _ => target.target.clone(),
        };
        let mut head = format!(
            "{method} {request_target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            target.host_header()
        );
        let has = |name: &str| {
            headers.iter().any(|h| {
                h.split(':')
                    .next()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
            })
        };
        if !has("authorization") {
            if let Some(auth) = wire::basic_auth(target.userinfo.as_deref()) {
                head.push_str(&format!("Authorization: {auth}\r\n"));
            }
        }
        if let (Some(p), false) = (proxy, target.https) {
            if let Some(auth) = wire::basic_auth(p.userinfo.as_deref()) {
                head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
            }
        }
        if !has("user-agent") {
            head.push_str(concat!(
                "User-Agent: tend/",
                env!("CARGO_PKG_VERSION"),
                "\r\n"
            ));
        }
        for h in headers {
            if h.contains(['\r', '\n']) {
                return Err(HttpError::Protocol(format!(
                    "header `{}` has a line break",
                    h.trim()
                )));
            }
            head.push_str(h);
            head.push_str("\r\n");
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).map_err(HttpError::from_io)?;
        stream.flush().map_err(HttpError::from_io)?;
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let head = loop {
            let head = wire::read_head(&mut reader)?;
            // 100 Continue and other interim answers precede the real one.
            if !(100..200).contains(&head.status) {
                break head;
            }
        };
        let framing = Framing::of(&head, method)?;
        Ok(Response {
            head,
            body: Body::new(reader, framing),
        })
    }
}

/// A response: its head, and a body to read (bounded by the request's deadline).
pub struct Response {
    pub head: Head,
    body: Body<BufReader<Stream>>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The body as a reader; io errors carry an [`HttpError`] (a deadline, a truncation).
    pub fn into_body(self) -> impl io::BufRead + Send {
        self.body
    }

    /// The whole body, at most `limit` bytes (an error beyond: a server must not fill memory).
    pub fn bytes(self, limit: u64) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        self.body
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(HttpError::from_io)?;
        if out.len() as u64 > limit {
            return Err(HttpError::Protocol(format!(
                "the response is larger than {limit} bytes"
            )));
        }
        Ok(out)
    }
}
