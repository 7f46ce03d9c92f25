//! The run suite's bed: a chroot following the https git server (`PullBed`) with this suite's
//! ways to sign a head, point the source elsewhere and read who signed what was applied.

use super::*;

pub(crate) struct Bed {
    pub(crate) pb: PullBed,
}

/// The suite's bed is the shared pulling device (`bed.dev`, `bed.publisher` …).
impl std::ops::Deref for Bed {
    type Target = PullBed;
    fn deref(&self) -> &PullBed {
        &self.pb
    }
}

impl Bed {
    pub(crate) fn new() -> Result<Bed> {
        let pb = PullBed::new("run-fleet")?;
        pb.configure(&pb.url(), "", "")?;
        Ok(Bed { pb })
    }

    /// Points source.url at a loopback port where nothing listens: the server is gone, or the
    /// device has no network yet.
    pub(crate) fn point_at_closed_port(&self) -> Result<()> {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        self.set_url(&format!("https://127.0.0.1:{closed}/git/fleet.git"))
    }

    pub(crate) fn set_url(&self, url: &str) -> Result<()> {
        let cfg = self.dev.read_string("/etc/tend/tend.yaml")?;
        let url_start = cfg.find("url: ").context("url")? + "url: ".len();
        let url_end = url_start + cfg[url_start..].find('\n').context("url end")?;
        self.dev.write(
            "/etc/tend/tend.yaml",
            format!("{}{url}{}", &cfg[..url_start], &cfg[url_end..]),
        )
    }

    pub(crate) fn signed(&self, branch: &str, msg: &str) -> Result<String> {
        self.publisher.signed(branch, msg)
    }

    /// The key the applied commit was trusted under is in the report, `tend status` and the
    /// Mender inventory (`tend_signer`), with its fingerprint.
    pub(crate) fn expect_signer_shown(&self, principal: &str) -> Result<()> {
        let signer = &self.report()?["git"]["signer"];
        let fingerprint = signer["fingerprint"].as_str().unwrap_or("");
        ensure!(
            signer["principal"] == principal && fingerprint.starts_with("SHA256:"),
            "{signer}"
        );
        let status = self.dev.tend(&["status"])?.ok()?.stdout;
        ensure!(
            status.contains(&format!("signed by:  ssh {principal} ({fingerprint})")),
            "{status}"
        );
        let inventory = self.dev.tend(&["inventory"])?.ok()?.stdout;
        ensure!(
            inventory.contains(&format!("tend_signer=ssh {principal} ({fingerprint})")),
            "{inventory}"
        );
        Ok(())
    }
}
