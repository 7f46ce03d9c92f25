//! The test bed from the shell: scripts (the demo, CI) reuse the suites' cached chroots instead of
//! building their own.
//!
//!   testbed tarball SUITE ARCH    build (once) and print the cached chroot tarball's path

use anyhow::{bail, Result};
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
        _ => bail!("usage: testbed tarball SUITE ARCH"),
    }
}
