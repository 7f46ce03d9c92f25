//! Which https servers a fetch trusts when `ca_file` is set: the CA file's, and the system's
//! too. tend checks the CA file first and reads the system bundle only when that fails (parsing
//! it was a third of a no-op run); this proves the fallback still trusts a system-root server.
//!
//! Its own test binary: it points rustls-native-certs at a bundle through SSL_CERT_FILE, and
//! changing the environment while other tests' threads read it is not safe.

use std::time::Duration;

use anyhow::Result;
use tend_agent::source::fetch::{FetchError, LocalRepo, SourceConfig};
use tend_tests::gitserver::{Change, FleetRepo, HttpsGitServer, TestCa};

#[test]
fn a_server_certified_by_a_system_root_is_trusted_beside_a_ca_file() -> Result<()> {
    let fleet = FleetRepo::new()?;
    let head = fleet.commit(
        "main",
        "first",
        &[Change::file("fleet.yaml", "format: 1\n")],
    )?;
    let server_ca = TestCa::new("a CA in the system bundle")?;
    let server = HttpsGitServer::start(fleet.root(), &server_ca)?;
    let file_ca = TestCa::new("the fleet's own CA")?;
    let mut src = SourceConfig::new(server.url("fleet.git"));
    src.retries = 0;
    src.timeout = Duration::from_secs(30);
    src.ca_file = Some(file_ca.cert().to_path_buf());
    let state = tempfile::tempdir()?;
    let repo = LocalRepo::open(&state.path().join("repo.git"))?;

    // The system bundle does not know the server's CA: refused, naming the CA file.
    let empty = state.path().join("empty-bundle.pem");
    std::fs::write(&empty, "")?;
    std::env::set_var("SSL_CERT_DIR", state.path().join("no-such-dir"));
    std::env::set_var("SSL_CERT_FILE", &empty);
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(matches!(err, FetchError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("source.ca_file"), "{err}");

    // Once the system bundle holds it, the same server is trusted, the CA file set or not.
    std::env::set_var("SSL_CERT_FILE", server_ca.cert());
    let got = repo.fetch_branch(&src, "main")?;
    assert_eq!(got.head.to_string(), head);
    src.ca_file = None;
    assert_eq!(repo.fetch_branch(&src, "main")?.head.to_string(), head);
    Ok(())
}
