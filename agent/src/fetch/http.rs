//! The https client gix uses, configured by tend rather than by git config.
//!
//! gix-transport's reqwest backend ignores git's `http.sslCAInfo`, `http.proxy`, `http.lowSpeed*`
//! and `http.connectTimeout`; what it offers instead is a hook that receives reqwest's
//! `ClientBuilder` before the client is built. Everything is wired there:
//! - TLS: a rustls config on the *ring* provider whose roots are the system's (Debian's
//!   /etc/ssl/certs, read at run time so `ca-certificates` updates apply) plus `ca_file`;
//! - the proxy: `source.proxy`, else `https_proxy`/`HTTPS_PROXY` (`http_proxy` for http URLs),
//!   with `no_proxy`/`NO_PROXY` honoured; reqwest's own environment lookup is switched off so
//!   the rules here are the only ones;
//! - `connect_timeout`, and `timeout` as the bound of each request including its body (a
//!   stalled server cannot hold a fetch forever).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gix::protocol::transport::client::blocking_io::http as gix_http;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::error::FetchError;
use super::SourceConfig;

/// The root certificates a device trusts: the system bundle plus the configured CA file.
pub(crate) fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    // Missing system roots are not an error by themselves: a device with only a private CA
    // (ca_file) and no ca-certificates package is a valid setup.
    let native = rustls_native_certs::load_native_certs();
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let bytes = std::fs::read(path).map_err(|e| FetchError::Tls {
            url: String::new(),
            cause: format!("cannot read source.ca_file {}: {e}", path.display()),
            fix: "point source.ca_file at a readable PEM file".into(),
        })?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| FetchError::Tls {
                url: String::new(),
                cause: format!("{} is not a PEM certificate file: {e}", path.display()),
                fix: "source.ca_file must hold one or more `-----BEGIN CERTIFICATE-----` blocks"
                    .into(),
            })?;
        if certs.is_empty() {
            return Err(FetchError::Tls {
                url: String::new(),
                cause: format!("{} holds no certificate", path.display()),
                fix: "source.ca_file must hold one or more `-----BEGIN CERTIFICATE-----` blocks"
                    .into(),
            });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| FetchError::Tls {
                url: String::new(),
                cause: format!("a certificate in {} is unusable: {e}", path.display()),
                fix: "source.ca_file must hold X.509 CA certificates".into(),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(FetchError::Tls {
            url: String::new(),
            cause: "no trusted CA: /etc/ssl/certs has none and source.ca_file is not set".into(),
            fix: "install the ca-certificates package, or set source.ca_file".into(),
        });
    }
    Ok(roots)
}

fn tls_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, FetchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::other("setting up TLS", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // gix-transport speaks HTTP/1.1 (title-case headers); offering only it keeps proxies simple.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The proxy for `url` and the hosts that bypass it, from the config or else the environment
/// (read through `env` so tests need not touch the process environment).
pub(crate) fn proxy_settings(
    src: &SourceConfig,
    env: impl Fn(&str) -> Option<String>,
) -> (Option<String>, Option<String>) {
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let https = src.url.starts_with("https://");
    let proxy = nonempty(src.proxy.clone()).or_else(|| {
        if https {
            nonempty(env("https_proxy")).or_else(|| nonempty(env("HTTPS_PROXY")))
        } else {
            // Like curl, never the upper-case HTTP_PROXY: CGI sets it from a request header.
            nonempty(env("http_proxy"))
        }
    });
    let no_proxy = nonempty(src.no_proxy.clone())
        .or_else(|| nonempty(env("no_proxy")))
        .or_else(|| nonempty(env("NO_PROXY")));
    (proxy, no_proxy)
}

/// The transport options gix hands to the http backend: tend's client configuration.
pub(crate) fn transport_options(src: &SourceConfig) -> Result<gix_http::Options, FetchError> {
    let roots = root_store(src.ca_file.as_deref()).map_err(|e| with_url(e, &src.url))?;
    let tls = tls_config(roots)?;
    let (proxy, no_proxy) = proxy_settings(src, |k| std::env::var(k).ok());
    let proxy = match proxy {
        Some(p) => Some(
            reqwest::Proxy::all(p.as_str())
                .map_err(|e| FetchError::other(format!("source.proxy `{p}` is not a URL"), e))?
                .no_proxy(no_proxy.as_deref().and_then(reqwest::NoProxy::from_string)),
        ),
        None => None,
    };
    let (connect_timeout, timeout) = (src.connect_timeout, src.timeout);
    let configure = move |builder: reqwest::blocking::ClientBuilder| {
        let builder = builder
            .no_proxy()
            .tls_backend_preconfigured(tls.clone())
            .connect_timeout(connect_timeout)
            .timeout(nonzero(timeout));
        Ok(match &proxy {
            Some(p) => builder.proxy(p.clone()),
            None => builder,
        })
    };
    let backend = gix_http::reqwest::Options {
        configure_client: Some(Box::new(configure)),
        configure_request: None,
    };
    let backend: Arc<Mutex<dyn std::any::Any + Send + Sync>> = Arc::new(Mutex::new(backend));
    Ok(gix_http::Options {
        connect_timeout: Some(connect_timeout),
        backend: Some(backend),
        ..Default::default()
    })
}

/// reqwest treats a zero timeout as "fail at once"; zero in the config means "no bound".
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
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

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused_with_the_path() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ca.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        let e = root_store(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("ca.pem") && e.contains("no certificate"), "{e}");
        let e = root_store(Some(&d.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read source.ca_file"), "{e}");
    }

    #[test]
    fn debian_system_roots_are_found() {
        // Every supported device has ca-certificates; so does the build host.
        if !Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
            panic!("/etc/ssl/certs/ca-certificates.crt is missing: install ca-certificates");
        }
        let roots = root_store(None).unwrap();
        assert!(roots.len() > 50, "only {} system roots", roots.len());
    }
}
