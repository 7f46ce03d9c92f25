//! A device that pulls: a bookworm amd64 chroot with the tend under test, the https git server
//! on 127.0.0.1 with its test CA, and a publisher of signed commits whose key the device pins.
//! The pull suites (run, safety, faults) differ only in the fixture and the device's tend.yaml.

use anyhow::Result;

use crate::gitserver::{FleetRepo, HttpsGitServer, TestCa};
use crate::publisher::{keygen, Publisher};
use crate::{tend_binary, Arch, Device, Outcome, Suite};

pub struct PullBed {
    pub dev: Device,
    pub publisher: Publisher,
    pub server: HttpsGitServer,
    pub repo: FleetRepo,
    /// Holds the publisher's key; suites make other keys here too.
    pub keys: tempfile::TempDir,
}

impl PullBed {
    /// The publisher's work tree starts as `fixture`; the device holds the CA and
    /// allowed_signers, and no tend.yaml yet (see [`PullBed::configure`]).
    pub fn new(fixture: &str) -> Result<PullBed> {
        Self::with_auth(fixture, None)
    }

    /// As [`PullBed::new`], with a server that requires HTTP Basic `(user, password)`.
    pub fn with_auth(fixture: &str, basic_auth: Option<(&str, &str)>) -> Result<PullBed> {
        let keys = tempfile::tempdir()?;
        let key = keygen(keys.path(), "ops")?;
        let repo = FleetRepo::new()?;
        let ca = TestCa::new("tend-pull")?;
        let server = HttpsGitServer::start_with(repo.root(), &ca, basic_auth)?;
        let publisher = Publisher::new(repo.path(), key, fixture)?;
        let dev = Device::new(Suite::Bookworm, Arch::Amd64)?;
        dev.install_tend(&tend_binary()?)?;
        dev.write("/etc/tend/ca.pem", std::fs::read(ca.cert())?)?;
        dev.write("/etc/tend/allowed_signers", publisher.allowed_signers()?)?;
        Ok(PullBed {
            dev,
            publisher,
            server,
            repo,
            keys,
        })
    }

    /// `tend run` for device `dev1`, the id the pull fixtures' device files use.
    pub fn run(&self) -> Result<Outcome> {
        self.dev.tend(&["run", "--device", "dev1"])
    }

    /// The last run's report.
    pub fn report(&self) -> Result<serde_json::Value> {
        self.dev.report()
    }

    /// /etc/site, which the pull fixtures write from the device's `site` var ("" if absent).
    pub fn site(&self) -> String {
        self.dev.read_string("/etc/site").unwrap_or_default()
    }

    /// The served fleet's URL as the device would use it.
    pub fn url(&self) -> String {
        self.server.url("fleet.git")
    }

    /// Writes the device's tend.yaml: `url` on branch main with the CA, no retries, and the
    /// pinned signers; `source_extra` adds keys to `source:` (each line indented two spaces),
    /// `extra` adds top-level sections.
    pub fn configure(&self, url: &str, source_extra: &str, extra: &str) -> Result<()> {
        self.dev.write(
            "/etc/tend/tend.yaml",
            format!(
                "source:\n  url: {url}\n  branch: main\n  ca_file: /etc/tend/ca.pem\n  retries: 0\n\
                 {source_extra}verify:\n  allowed_signers: /etc/tend/allowed_signers\n{extra}"
            ),
        )
    }
}
