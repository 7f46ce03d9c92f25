//! The floor of a no-op run: the work no agent can skip when nothing changed, done as directly
//! as possible, so that a tool's no-op can be compared with it. It reads dpkg's status (are the
//! packages installed?), stats and hashes every managed file (is each as desired?), and makes one
//! ref advertisement over https (has the branch moved?). It trusts only the test CA: loading a
//! system certificate bundle is tend's policy, not part of the floor.
//!
//!   tend-bench floor ROOT URL     ROOT: the device's root; URL: the fleet repo's https URL

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

/// The directories whose files the reference state manages.
const MANAGED_DIRS: &[&str] = &["etc/bench", "etc/apt/keyrings", "etc/apt/sources.list.d"];

pub fn run(root: &Path, url: &str) -> Result<()> {
    let status = fs::read_to_string(root.join("var/lib/dpkg/status"))?;
    let installed = status
        .lines()
        .filter(|l| *l == "Status: install ok installed")
        .count();
    ensure!(installed > 0, "no installed package in dpkg's status");

    let mut hashed = 0;
    let mut buf = Vec::new();
    for dir in MANAGED_DIRS {
        for entry in fs::read_dir(root.join(dir))? {
            let path = entry?.path();
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_file() {
                buf.clear();
                fs::File::open(&path)?.read_to_end(&mut buf)?;
                std::hint::black_box(Sha256::digest(&buf));
                hashed += 1;
            }
        }
    }
    ensure!(hashed > 0, "no managed file under {}", root.display());

    let mut roots = rustls::RootCertStore::empty();
    let pem = fs::read(root.join("etc/tend/ca.pem"))?;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = tend_agent::net::Client::new(
        tls,
        None,
        None,
        Duration::from_secs(10),
        Duration::from_secs(10),
    )?;
    let refs = client
        .send(
            "GET",
            &format!("{url}/info/refs?service=git-upload-pack"),
            &[],
            &[],
        )
        .context("ref advertisement")?;
    ensure!(
        refs.status() == 200,
        "ref advertisement: HTTP {}",
        refs.status()
    );
    let body = refs.bytes(1 << 20)?;
    ensure!(
        body.windows(15).any(|w| w == b"refs/heads/main"),
        "the advertisement has no refs/heads/main"
    );
    Ok(())
}
