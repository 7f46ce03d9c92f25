//! Which https servers tend trusts: the system's roots (Debian's /etc/ssl/certs, read at run
//! time so `ca-certificates` updates apply) plus the configured CA file, on rustls with *ring*.
//!
//! Why a verifier of our own: parsing the system bundle (≈140 certificates) cost a third of a
//! no-op run's instructions, and a fleet that sets a CA file reaches its server through that CA.
//! So with a CA file, a certificate is checked against the file's CAs first, and the system
//! bundle is read only when that fails; the result is the same as checking against both at once
//! (webpki accepts a chain if any root anchors it), and so are the errors, which then come
//! from the check against both.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::FetchError;

/// A TLS client config trusting the system roots plus `ca_file`. `setting` names where the CA
/// file was configured (`source.ca_file`, `--ca-file`), for errors.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
    setting: &str,
) -> Result<rustls::ClientConfig, FetchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match ca_file {
        Some(path) => {
            let ca_roots = ca_file_roots(path, setting)?;
            Arc::new(CaFileFirst {
                ca_file: build(ca_roots.clone(), &provider)?,
                ca_roots,
                both: OnceLock::new(),
                provider: provider.clone(),
            })
        }
        None => build(system_root_store(setting)?, &provider)?,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::other("setting up TLS", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // gix-transport speaks HTTP/1.1 (title-case headers); offering only it keeps proxies simple.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The system roots alone (no CA file is set); an error when there are none.
fn system_root_store(setting: &str) -> Result<RootCertStore, FetchError> {
    let mut roots = RootCertStore::empty();
    add_system_roots(&mut roots);
    if roots.is_empty() {
        return Err(FetchError::Tls {
            url: String::new(),
            cause: format!("no trusted CA: /etc/ssl/certs has none and {setting} is not set"),
            fix: format!("install the ca-certificates package, or set {setting}"),
        });
    }
    Ok(roots)
}

/// Missing system roots are not an error by themselves: a device with only a private CA
/// (ca_file) and no ca-certificates package is a valid setup.
fn add_system_roots(roots: &mut RootCertStore) {
    let native = rustls_native_certs::load_native_certs();
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
}

/// The CA file's certificates; errors name the file and the setting.
fn ca_file_roots(path: &Path, setting: &str) -> Result<RootCertStore, FetchError> {
    let tls = |cause: String, fix: String| FetchError::Tls {
        url: String::new(),
        cause,
        fix,
    };
    let pem_fix =
        || format!("{setting} must hold one or more `-----BEGIN CERTIFICATE-----` blocks");
    let bytes = std::fs::read(path).map_err(|e| {
        tls(
            format!("cannot read {setting} {}: {e}", path.display()),
            format!("point {setting} at a readable PEM file"),
        )
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            tls(
                format!("{} is not a PEM certificate file: {e}", path.display()),
                pem_fix(),
            )
        })?;
    if certs.is_empty() {
        return Err(tls(
            format!("{} holds no certificate", path.display()),
            pem_fix(),
        ));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            tls(
                format!("a certificate in {} is unusable: {e}", path.display()),
                format!("{setting} must hold X.509 CA certificates"),
            )
        })?;
    }
    Ok(roots)
}

fn build(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, FetchError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| FetchError::other("setting up TLS", e))
}

/// Checks against the CA file, then against the CA file plus the system roots.
#[derive(Debug)]
struct CaFileFirst {
    ca_file: Arc<WebPkiServerVerifier>,
    ca_roots: RootCertStore,
    both: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
    provider: Arc<CryptoProvider>,
}

impl CaFileFirst {
    fn both(&self) -> Result<&Arc<WebPkiServerVerifier>, rustls::Error> {
        self.both
            .get_or_init(|| {
                let mut roots = self.ca_roots.clone();
                add_system_roots(&mut roots);
                build(roots, &self.provider).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| rustls::Error::General(e.clone()))
    }
}

impl ServerCertVerifier for CaFileFirst {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.ca_file
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .or_else(|_| {
                self.both()?
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            })
    }

    // Handshake signatures depend on the certificate's key, not on the roots.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca_file.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca_file.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.ca_file.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused_with_the_path() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ca.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        let e = client_config(Some(&f), "source.ca_file")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca.pem") && e.contains("no certificate"), "{e}");
        let e = client_config(Some(&d.path().join("missing.pem")), "source.ca_file")
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
        let roots = system_root_store("source.ca_file").unwrap();
        assert!(roots.len() > 50, "only {} system roots", roots.len());
    }
}
