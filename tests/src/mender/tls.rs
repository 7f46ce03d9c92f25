//! TLS for the double: a throwaway CA and a server certificate for 127.0.0.1, made with the host's
//! openssl at start, served with rustls.
//!
//! Mender's client only talks https to a ServerURL and verifies the server as any Go client does
//! (a SAN must match; the CN is ignored), so the test gives the device the CA through
//! `ServerCertificate` in mender.conf, exactly as a fleet with a private CA would. A CA plus a
//! leaf, rather than one self-signed certificate, is the shape real deployments have. Keys are
//! P-256: generated in milliseconds, and accepted by both Go and rustls.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::run::run_ok;

/// What the double serves and what the device must trust.
pub struct Certs {
    /// The CA certificate, PEM: the device's `ServerCertificate`.
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

impl Certs {
    pub fn generate() -> Result<Certs> {
        let dir = tempfile::Builder::new()
            .prefix("tend-mender-tls")
            .tempdir()?;
        let d = dir.path();
        let ext = d.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n",
        )?;
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(
            d,
            &format!(
                "req -x509 {ec} -days 2 -subj /CN=tend-test-Mender-CA -keyout ca.key -out ca.pem \
                 -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign"
            ),
        )?;
        openssl(
            d,
            &format!("req {ec} -subj /CN=localhost -keyout server.key -out server.csr"),
        )?;
        openssl(
            d,
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
             -extfile server.ext -outform DER -out server.der",
        )?;
        // rustls takes DER. (`pkey -outform DER` would write SEC1 for an EC key.)
        openssl(
            d,
            "pkcs8 -topk8 -nocrypt -in server.key -outform DER -out server.key.der",
        )?;

        let cert = CertificateDer::from(std::fs::read(d.join("server.der"))?);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(std::fs::read(
            d.join("server.key.der"),
        )?));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .context("building the TLS server config")?;
        Ok(Certs {
            ca_pem: std::fs::read_to_string(d.join("ca.pem"))?,
            config: Arc::new(config),
        })
    }
}

/// `openssl <args>` in `dir`; `args` is split at whitespace (no argument contains any).
fn openssl(dir: &Path, args: &str) -> Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.args(args.split_whitespace()).current_dir(dir);
    run_ok(cmd, &format!("openssl {args}"), Duration::from_secs(60))?;
    Ok(())
}
