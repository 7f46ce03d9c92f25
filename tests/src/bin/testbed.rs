//! The test bed from the shell: scripts (the demo, CI) reuse the suites' cached chroots instead of
//! building their own.
//!
//!   testbed tarball SUITE ARCH    build (once) and print the cached chroot tarball's path
//!   testbed serve-git DIR CA      serve the git repos below DIR over https on 127.0.0.1 (a test
//!                                 CA, written to CA); print the URL of DIR/fleet.git; serve until
//!                                 stdin closes

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Result};
use tend_tests::gitserver::{HttpsGitServer, TestCa};
use tend_tests::{Arch, Suite};

fn suite(name: &str) -> Result<Suite> {
    match Suite::ALL.into_iter().find(|s| s.name() == name) {
        Some(s) => Ok(s),
        None => bail!(
            "unknown suite {name}; one of: {}",
            Suite::ALL.map(|s| s.name()).join(", ")
        ),
    }
}

fn arch(name: &str) -> Result<Arch> {
    match [Arch::Amd64, Arch::Arm64, Arch::Armhf]
        .into_iter()
        .find(|a| a.name() == name)
    {
        Some(a) => Ok(a),
        None => bail!("unknown architecture {name}; one of: amd64, arm64, armhf"),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tarball", s, a] => {
            let path = tend_tests::chroot::tarball(suite(s)?, arch(a)?)?;
            println!("{}", path.display());
            Ok(())
        }
        ["serve-git", dir, ca_out] => {
            let ca = TestCa::new("tend-demo")?;
            std::fs::copy(ca.cert(), ca_out)?;
            let server = HttpsGitServer::start(Path::new(dir), &ca)?;
            let mut out = std::io::stdout();
            writeln!(out, "{}", server.url("fleet.git"))?;
            out.flush()?;
            // The caller holds stdin open for as long as it needs the server; dropping the
            // server then stops lighttpd.
            std::io::stdin().read_to_end(&mut Vec::new())?;
            Ok(())
        }
        _ => bail!("usage: testbed tarball SUITE ARCH | testbed serve-git DIR CA"),
    }
}
