//! git over http(s) for gix: tend's own client (`crate::net`) behind gix-transport's `Http`
//! trait, configured by tend rather than by git config:
//! - TLS: the system's roots plus `ca_file` (see `trust`);
//! - the proxy: `source.proxy`, else `https_proxy`/`HTTPS_PROXY` (`http_proxy` for http URLs),
//!   with `no_proxy`/`NO_PROXY` honoured;
//! - `connect_timeout`, and `timeout` as the bound of each request including its body (a
//!   stalled server cannot hold a fetch forever);
//! - `min_transfer_rate` over `transfer_rate_window` (a trickling server is cut), and the byte,
//!   ref and object bounds of each answer (see `bounds`).
//!
//! gix hands over a POST's body after `post` returns, and reads the answer only once it has
//! dropped the body writer; so a POST is buffered (a fetch's negotiation is a few kilobytes) and
//! sent when gix first reads the response headers.

use std::io::{self, BufRead, Cursor, Read, Write};
use std::sync::{Arc, Mutex};

use gix::protocol::transport::client::blocking_io::http as gix_http;

use super::bounds::{Answer, Bounded};
use super::error::FetchError;
use super::SourceConfig;
use crate::net::quote::quote;

/// The proxy for `url` and the hosts that bypass it, from the config or else the environment
/// (read through `env` so tests need not touch the process environment).
pub(crate) fn proxy_settings(
    src: &SourceConfig,
    env: impl Fn(&str) -> Option<String>,
) -> (Option<String>, Option<String>) {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let (env_proxy, env_no_proxy) =
        crate::net::proxy::from_env(src.url.starts_with("https://"), env);
    (
        nonempty(&src.proxy).or(env_proxy),
        nonempty(&src.no_proxy).or(env_no_proxy),
    )
}

/// tend's client as `source:` configures it: its CA file, proxy, timeouts and minimum rate.
/// The git transport and the stage pointer's poll both speak through it.
pub fn client(src: &SourceConfig) -> Result<crate::net::Client, FetchError> {
    let tls = super::trust::client_config(src.ca_file.as_deref(), "source.ca_file")
        .map_err(|e| with_url(e, &src.url))?;
    let (proxy, no_proxy) = proxy_settings(src, |k| std::env::var(k).ok());
    Ok(crate::net::Client::new(
        tls,
        proxy.as_deref(),
        no_proxy.as_deref(),
        src.connect_timeout,
        src.timeout,
    )
    .map_err(|e| FetchError::other("source.proxy", e))?
    .with_min_rate(Some(crate::net::MinRate {
        bytes_per_sec: src.min_transfer_rate,
        window: src.transfer_rate_window,
    })))
}

/// The gix transport for an http(s) `url`, speaking through tend's client.
pub(crate) fn transport(
    src: &SourceConfig,
    url: gix::Url,
) -> Result<gix_http::Transport<GitHttp>, FetchError> {
    let client = client(src)?;
    let authorization = src.credentials.as_ref().map(|c| c.basic());
    Ok(gix_http::connect_http(
        GitHttp {
            client,
            authorization,
            max_fetch_bytes: src.max_fetch_bytes,
        },
        url,
        gix::protocol::transport::Protocol::V2,
        false,
    ))
}

/// gix-transport's HTTP backend, on [`crate::net::Client`].
pub(crate) struct GitHttp {
    client: crate::net::Client,
    /// `Basic …` from `source:` credentials; the URL itself carries none.
    authorization: Option<tend_roles::redact::Secret>,
    max_fetch_bytes: u64,
}

impl GitHttp {
    fn exchange(
        &self,
        method: &'static str,
        url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Arc<Mutex<Exchange>> {
        Arc::new(Mutex::new(Exchange {
            client: self.client.clone(),
            max_fetch_bytes: self.max_fetch_bytes,
            method,
            url: url.to_string(),
            headers: headers
                .into_iter()
                .map(|h| h.as_ref().to_string())
                .chain(
                    self.authorization
                        .iter()
                        .map(|a| format!("Authorization: {}", a.expose())),
                )
                .collect(),
            upload: Vec::new(),
            state: State::Unsent,
        }))
    }
}

impl gix_http::Http for GitHttp {
    type Headers = Lazy<Cursor<Vec<u8>>>;
    type ResponseBody = Lazy<Box<dyn BufRead + Send>>;
    type PostBody = Upload;

    fn get(
        &mut self,
        url: &str,
        _base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> gix_error::Result<gix_http::GetResponse<Self::Headers, Self::ResponseBody>> {
        let shared = self.exchange("GET", url, headers);
        Ok(gix_http::GetResponse {
            headers: Lazy::new(shared.clone()),
            body: Lazy::new(shared),
        })
    }

    fn post(
        &mut self,
        url: &str,
        _base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
        _body: gix_http::PostBodyDataKind,
    ) -> gix_error::Result<gix_http::PostResponse<Self::Headers, Self::ResponseBody, Self::PostBody>>
    {
        let shared = self.exchange("POST", url, headers);
        Ok(gix_http::PostResponse {
            post_body: Upload(shared.clone()),
            headers: Lazy::new(shared.clone()),
            body: Lazy::new(shared),
        })
    }

    /// gix's own http options come from git config, which tend does not use.
    fn configure(&mut self, _config: &dyn std::any::Any) -> gix_error::Result {
        Ok(())
    }
}

/// One request, sent when its answer is first read.
pub(crate) struct Exchange {
    client: crate::net::Client,
    max_fetch_bytes: u64,
    method: &'static str,
    url: String,
    headers: Vec<String>,
    upload: Vec<u8>,
    state: State,
}

enum State {
    Unsent,
    Answered {
        headers: Option<Vec<u8>>,
        body: Option<Box<dyn BufRead + Send>>,
    },
    /// The first reader gets the error itself (for classification), later ones its text.
    Failed(Option<io::Error>, io::ErrorKind, String),
}

impl Exchange {
    fn answer(&mut self) {
        if !matches!(self.state, State::Unsent) {
            return;
        }
        let upload = std::mem::take(&mut self.upload);
        let answer = Answer::of(self.method, &upload);
        self.state = match self
            .client
            .send(self.method, &self.url, &self.headers, &upload)
        {
            Ok(response) if (200..300).contains(&response.status()) => {
                let mut headers = Vec::new();
                for (name, value) in &response.head.headers {
                    headers.extend_from_slice(format!("{name}:{value}\n").as_bytes());
                }
                State::Answered {
                    headers: Some(headers),
                    body: Some(Box::new(Bounded::new(
                        response.into_body(),
                        answer,
                        self.max_fetch_bytes,
                    ))),
                }
            }
            Ok(response) => failed(status_error(&response)),
            Err(e) => {
                let kind = match &e {
                    e if e.is_timeout() => io::ErrorKind::TimedOut,
                    crate::net::HttpError::Connect { kind, .. } => *kind,
                    _ => io::ErrorKind::Other,
                };
                failed(io::Error::new(kind, e))
            }
        };
    }
}

fn failed(e: io::Error) -> State {
    let (kind, text) = (e.kind(), e.to_string());
    State::Failed(Some(e), kind, text)
}

/// What gix-transport's backends report for a status that is not success.
fn status_error(response: &crate::net::Response) -> io::Error {
    let status = response.status();
    if status == 401 {
        let www_authenticate = response
            .head
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
            .map(|(_, v)| quote(v.as_bytes()).into())
            .collect();
        return io::Error::new(
            io::ErrorKind::PermissionDenied,
            gix::protocol::transport::client::AuthenticationRequired { www_authenticate },
        );
    }
    if super::throttle::Throttle::is_throttle(status) {
        let retry_after = response
            .header("retry-after")
            .map(|v| super::throttle::parse(v, std::time::SystemTime::now()));
        return io::Error::other(super::throttle::Throttle {
            status,
            retry_after,
        });
    }
    let mut text = format!("Received HTTP status {status}");
    if let (300..=399, Some(location)) = (status, response.header("location")) {
        text.push_str(&format!(
            ": the server redirects to {}; set source.url to where the repository is",
            quote(location.as_bytes())
        ));
    }
    let kind = if status >= 500 && status != 501 {
        io::ErrorKind::ConnectionAborted
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, text)
}

/// The body gix writes for a POST, buffered until the answer is read.
pub(crate) struct Upload(Arc<Mutex<Exchange>>);

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0)?.upload.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The headers (`name:value` lines) or the body of an exchange, which is sent on the first read.
pub(crate) struct Lazy<R> {
    shared: Arc<Mutex<Exchange>>,
    reader: Option<R>,
}

impl<R> Lazy<R> {
    fn new(shared: Arc<Mutex<Exchange>>) -> Self {
        Lazy {
            shared,
            reader: None,
        }
    }
}

fn lock(shared: &Mutex<Exchange>) -> io::Result<std::sync::MutexGuard<'_, Exchange>> {
    shared
        .lock()
        .map_err(|_| io::Error::other("an earlier http request panicked"))
}

/// Which part of the answer a reader takes: decided by its type.
pub(crate) trait FromAnswer: Sized {
    fn take_part(
        headers: &mut Option<Vec<u8>>,
        body: &mut Option<Box<dyn BufRead + Send>>,
    ) -> Option<Self>;
}

impl FromAnswer for Cursor<Vec<u8>> {
    fn take_part(
        headers: &mut Option<Vec<u8>>,
        _: &mut Option<Box<dyn BufRead + Send>>,
    ) -> Option<Self> {
        headers.take().map(Cursor::new)
    }
}

impl FromAnswer for Box<dyn BufRead + Send> {
    fn take_part(
        _: &mut Option<Vec<u8>>,
        body: &mut Option<Box<dyn BufRead + Send>>,
    ) -> Option<Self> {
        body.take()
    }
}

impl<R: FromAnswer + BufRead> Lazy<R> {
    fn reader(&mut self) -> io::Result<&mut R> {
        if self.reader.is_none() {
            let mut exchange = lock(&self.shared)?;
            exchange.answer();
            let reader = match &mut exchange.state {
                State::Answered { headers, body } => R::take_part(headers, body)
                    .ok_or_else(|| io::Error::other("an http answer was read twice"))?,
                State::Failed(first, kind, text) => {
                    return Err(first
                        .take()
                        .unwrap_or_else(|| io::Error::new(*kind, text.clone())))
                }
                State::Unsent => unreachable!("answer() sends the request"),
            };
            self.reader = Some(reader);
        }
        Ok(self.reader.as_mut().expect("set above"))
    }
}

impl<R: FromAnswer + BufRead> Read for Lazy<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader()?.read(buf)
    }
}

impl<R: FromAnswer + BufRead> BufRead for Lazy<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.reader()?.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if let Some(r) = self.reader.as_mut() {
            r.consume(amt);
        }
    }
}

fn with_url(e: FetchError, url: &str) -> FetchError {
    match e {
        FetchError::Tls { cause, fix, .. } => FetchError::Tls {
            url: url.to_string(),
            cause,
            fix,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn src(url: &str) -> SourceConfig {
        SourceConfig::new(url)
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn config_proxy_wins_over_the_environment() {
        let mut s = src("https://git.example.com/fleet.git");
        s.proxy = Some("http://cfg:3128".into());
        let e = env(&[("https_proxy", "http://env:3128"), ("no_proxy", "internal")]);
        assert_eq!(
            proxy_settings(&s, e),
            (Some("http://cfg:3128".into()), Some("internal".into()))
        );
    }

    #[test]
    fn https_urls_use_https_proxy_and_http_urls_never_upper_case_http_proxy() {
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("HTTP_PROXY", "http://cgi:1"),
            ("NO_PROXY", "a,b"),
        ]);
        let s = src("https://git.example.com/fleet.git");
        assert_eq!(
            proxy_settings(&s, &e),
            (Some("http://upper:1".into()), Some("a,b".into()))
        );
        let s = src("http://git.example.com/fleet.git");
        assert_eq!(proxy_settings(&s, &e), (None, Some("a,b".into())));
    }

    #[test]
    fn empty_values_mean_unset() {
        let mut s = src("https://git.example.com/fleet.git");
        s.proxy = Some(" ".into());
        let e = env(&[("https_proxy", "http://env:1"), ("no_proxy", "")]);
        assert_eq!(proxy_settings(&s, e), (Some("http://env:1".into()), None));
    }
}
