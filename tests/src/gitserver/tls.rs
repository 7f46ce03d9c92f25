//! A throwaway certificate authority, made with `openssl` at test time.
//!
//! Nothing is checked in: a key in the repo would be a key anyone could use, and a checked-in
//! certificate would expire. Keys are P-256 (fast to make, verified by rustls' ring provider);
//! certificates carry the extensions a strict verifier (webpki) insists on.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use super::{require, run};

pub struct TestCa {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<TestCa> {
        let openssl = require("openssl")?;
        let dir = tempfile::tempdir()?;
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        run(Command::new(&openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert))?;
        Ok(TestCa {
            _dir: dir,
            cert,
            key,
        })
    }

    /// The CA certificate (PEM): what a client puts in `ca_file`.
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// Issues a server certificate for 127.0.0.1 and localhost into `dir`; returns (cert, key).
    pub fn issue_server(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let openssl = require("openssl")?;
        let (cert, key, csr, ext) = (
            dir.join("server.pem"),
            dir.join("server.key"),
            dir.join("server.csr"),
            dir.join("server.ext"),
        );
        run(Command::new(&openssl)
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr))?;
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )?;
        let serial = format!(
            "0x{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        );
        run(Command::new(&openssl)
            .args(["x509", "-req", "-days", "2", "-set_serial", &serial])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&self.cert)
            .arg("-CAkey")
            .arg(&self.key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert))?;
        Ok((cert, key))
    }
}
