//! A signed local apt repository, built at test time and served on loopback.
//!
//! apt_source and package are only proven by a real `apt-get update` verifying a real signature,
//! so the repository is a real one: packages from [`crate::deb`], indexes from `apt-ftparchive`,
//! `InRelease` and `Release.gpg` signed by a throwaway key. Building takes a few seconds (key
//! generation, dpkg-deb), so the result is cached under `<cache>/aptrepo-<hash of the inputs>`;
//! the key is generated once per cached repository and kept only in its public form.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::cache::{self, cache_dir};
use crate::deb::DebSpec;
use crate::http::StaticServer;
use crate::run::run_ok;
use crate::treehash::hex;

/// Bumped whenever the layout or signing changes, so old cached repositories are not reused.
const FORMAT: &str = "tend-aptrepo-1";
pub const SUITE: &str = "tend";
pub const COMPONENT: &str = "main";
pub const ARCHITECTURES: &[&str] = &["all", "amd64", "arm64", "armhf"];

/// The unit `tend-demo-service` ships (a service that runs until stopped).
pub const DEMO_UNIT: &str = "[Unit]\nDescription=tend demo service\n\n[Service]\nType=simple\n\
ExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n";

/// The standard test packages:
/// - `tend-hello` 1.0-1 and 2.0-1: `/usr/share/tend-hello/version` holds the version and
///   `/usr/bin/tend-hello` prints it (so `latest` and pinned versions mean something);
/// - `tend-tool` 1.0-1: `/usr/bin/tend-tool`;
/// - `tend-with-recommends` 1.0-1, which Recommends `tend-recommended` 1.0-1 (to prove that
///   recommends are not installed by default);
/// - `tend-demo-service` 1.0-1: ships `tend-demo.service` (WantedBy=multi-user.target), with no
///   maintainer scripts, so it is installed but not enabled;
/// - `tend-conffile` 1.0-1: the conffile `/etc/tend-conffile.conf`.
pub fn standard_packages() -> Vec<DebSpec> {
    let hello = |v: &str| {
        DebSpec::new("tend-hello", v)
            .file("/usr/share/tend-hello/version", &format!("{v}\n"), 0o644)
            .file(
                "/usr/bin/tend-hello",
                "#!/bin/sh\ncat /usr/share/tend-hello/version\n",
                0o755,
            )
    };
    vec![
        hello("1.0-1"),
        hello("2.0-1"),
        DebSpec::new("tend-tool", "1.0-1").file(
            "/usr/bin/tend-tool",
            "#!/bin/sh\necho tend-tool 1.0-1\n",
            0o755,
        ),
        DebSpec::new("tend-recommended", "1.0-1").file(
            "/usr/share/tend-recommended/marker",
            "recommended\n",
            0o644,
        ),
        DebSpec::new("tend-with-recommends", "1.0-1")
            .recommends("tend-recommended")
            .file(
                "/usr/share/tend-with-recommends/marker",
                "with-recommends\n",
                0o644,
            ),
        DebSpec::new("tend-demo-service", "1.0-1").file(
            "/usr/lib/systemd/system/tend-demo.service",
            DEMO_UNIT,
            0o644,
        ),
        DebSpec::new("tend-conffile", "1.0-1").conffile(
            "/etc/tend-conffile.conf",
            "# shipped by tend-conffile\nsetting=1\n",
        ),
    ]
}

/// A built repository being served; the server stops when this is dropped.
pub struct AptRepo {
    dir: PathBuf,
    server: StaticServer,
}

impl AptRepo {
    /// Where [`crate::Device::use_apt_repo`] puts the key and the source inside a device.
    pub const KEYRING_PATH: &'static str = "/etc/apt/keyrings/tend-test.asc";
    pub const SOURCES_PATH: &'static str = "/etc/apt/sources.list.d/tend-test.sources";

    /// The repository of [`standard_packages`], served.
    pub fn standard() -> Result<AptRepo> {
        AptRepo::with_packages(&standard_packages())
    }

    /// A repository of `packages` (cached by content), served.
    pub fn with_packages(packages: &[DebSpec]) -> Result<AptRepo> {
        let dir = build_cached(packages)?;
        let server = StaticServer::serve(&dir)?;
        Ok(AptRepo { dir, server })
    }

    /// The repository URL, for `URIs:`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server, for its request log.
    pub fn server(&self) -> &StaticServer {
        &self.server
    }

    /// The signing key's public part, ASCII-armored.
    pub fn key_armored(&self) -> Result<String> {
        Ok(fs::read_to_string(self.dir.join("key.asc"))?)
    }

    /// The signing key's public part, binary (a keyring file apt accepts as `.gpg`).
    pub fn key_binary(&self) -> Result<Vec<u8>> {
        Ok(fs::read(self.dir.join("key.gpg"))?)
    }

    pub fn key_fingerprint(&self) -> Result<String> {
        Ok(fs::read_to_string(self.dir.join("key.fingerprint"))?
            .trim()
            .to_string())
    }

    /// A deb822 source stanza for this repository, trusting the key at `signed_by`.
    pub fn sources_deb822(&self, signed_by: &str) -> String {
        format!(
            "Types: deb\nURIs: {}\nSuites: {SUITE}\nComponents: {COMPONENT}\nSigned-By: {signed_by}\n",
            self.url()
        )
    }
}

/// The cached repository directory for `packages`, built if missing.
fn build_cached(packages: &[DebSpec]) -> Result<PathBuf> {
    let mut h = Sha256::new();
    h.update(FORMAT);
    for p in packages {
        p.digest_into(&mut h);
    }
    let digest = hex(&h.finalize());
    let dest = cache_dir().join(format!("aptrepo-{}", &digest[..16]));
    if let Some(took) = cache::get_or_build(&dest, &digest, |tmp| build(packages, tmp))? {
        cache::log_timing(&format!("apt repository {} built", dest.display()), took);
    }
    Ok(dest)
}

fn build(packages: &[DebSpec], out: &Path) -> Result<()> {
    let pool = out.join("pool").join(COMPONENT);
    fs::create_dir_all(&pool)?;
    for p in packages {
        p.build(&pool)?;
    }
    let dists = out.join("dists").join(SUITE);
    for arch in ARCHITECTURES {
        let dir = dists.join(COMPONENT).join(format!("binary-{arch}"));
        fs::create_dir_all(&dir)?;
        let mut cmd = Command::new("apt-ftparchive");
        cmd.args(["--arch", arch, "packages", "pool"])
            .current_dir(out);
        let listing = run_ok(cmd, "apt-ftparchive packages", Duration::from_secs(120))?;
        fs::write(dir.join("Packages"), listing.stdout)?;
    }
    let mut cmd = Command::new("apt-ftparchive");
    let arches = ARCHITECTURES.join(" ");
    for (field, value) in [
        ("Origin", "tend-tests"),
        ("Label", "tend-tests"),
        ("Suite", SUITE),
        ("Codename", SUITE),
        ("Architectures", &arches),
        ("Components", COMPONENT),
        ("Description", "tend test repository"),
    ] {
        cmd.arg("-o")
            .arg(format!("APT::FTPArchive::Release::{field}={value}"));
    }
    cmd.arg("release").arg(".").current_dir(&dists);
    let release = run_ok(cmd, "apt-ftparchive release", Duration::from_secs(120))?;
    fs::write(dists.join("Release"), release.stdout)?;
    sign(&dists, out)
}

/// Generates a throwaway key, signs `Release` both ways and exports the public key to `out`.
fn sign(dists: &Path, out: &Path) -> Result<()> {
    // A short path: gpg-agent's socket lives in GNUPGHOME and socket paths are limited to 108 bytes.
    let home = tempfile::Builder::new().prefix("tend-gpg").tempdir()?;
    let gpg = Gpg { home: home.path() };
    let result = (|| {
        gpg.run(&[
            "--passphrase",
            "",
            "--pinentry-mode",
            "loopback",
            "--quick-gen-key",
            "tend test repository <tend-tests@example.invalid>",
            "ed25519",
            "sign",
            "never",
        ])?;
        let fpr = fingerprint(&gpg.run(&["--with-colons", "--list-keys"])?)?;
        let release = dists.join("Release");
        let (inrelease, detached) = (dists.join("InRelease"), dists.join("Release.gpg"));
        gpg.run_paths(
            &["--local-user", &fpr, "--clearsign", "--output"],
            &inrelease,
            &release,
        )?;
        gpg.run_paths(
            &["--local-user", &fpr, "--detach-sign", "--armor", "--output"],
            &detached,
            &release,
        )?;
        fs::write(
            out.join("key.asc"),
            gpg.run(&["--armor", "--export", &fpr])?,
        )?;
        let binary = gpg.command(&["--export", &fpr]).output()?;
        if !binary.status.success() || binary.stdout.is_empty() {
            bail!("gpg --export produced no key");
        }
        fs::write(out.join("key.gpg"), binary.stdout)?;
        fs::write(out.join("key.fingerprint"), format!("{fpr}\n"))?;
        Ok(())
    })();
    // The agent gpg started would otherwise outlive the test run.
    let _ = Command::new("gpgconf")
        .args(["--kill", "all"])
        .env("GNUPGHOME", home.path())
        .output();
    result
}

struct Gpg<'a> {
    home: &'a Path,
}

impl Gpg<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.args(["--batch", "--quiet", "--no-tty"])
            .args(args)
            .env("GNUPGHOME", self.home);
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let shown = format!("gpg {}", args.join(" "));
        Ok(run_ok(self.command(args), &shown, Duration::from_secs(120))?.stdout)
    }

    /// `gpg <args> <output> <input>`.
    fn run_paths(&self, args: &[&str], output: &Path, input: &Path) -> Result<()> {
        let mut cmd = self.command(args);
        cmd.arg(output).arg(input);
        run_ok(
            cmd,
            &format!("gpg {} {}", args.join(" "), input.display()),
            Duration::from_secs(120),
        )
        .map(drop)
    }
}

/// The first `fpr` record of `gpg --with-colons` output.
fn fingerprint(colons: &str) -> Result<String> {
    colons
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|rest| rest.split(':').find(|f| !f.is_empty()))
        .map(str::to_string)
        .context("gpg listed no fingerprint")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_read_from_colon_output() {
        let out = "tru::1:1700000000:0:3:1:5\npub:u:255:22:ABCDEF:1700000000:::u:::scSC:::::ed25519:::0:\n\
                   fpr:::::::::0123456789ABCDEF0123456789ABCDEF01234567:\nuid:u::::1::X::n <n@x>::::::::::0:\n";
        assert_eq!(
            fingerprint(out).unwrap(),
            "0123456789ABCDEF0123456789ABCDEF01234567"
        );
        assert!(fingerprint("pub:u:255\n").is_err());
    }

    #[test]
    fn standard_set_has_both_hello_versions_and_the_recommends_pair() {
        let pkgs = standard_packages();
        let hello: Vec<_> = pkgs
            .iter()
            .filter(|p| p.name == "tend-hello")
            .map(|p| p.version.as_str())
            .collect();
        assert_eq!(hello, ["1.0-1", "2.0-1"]);
        let rec = pkgs
            .iter()
            .find(|p| p.name == "tend-with-recommends")
            .unwrap();
        assert_eq!(rec.recommends, ["tend-recommended"]);
        assert!(pkgs.iter().any(|p| p.name == "tend-recommended"));
        assert!(pkgs.iter().any(|p| !p.conffiles.is_empty()));
    }
}
