//! The bench bed: the test bed's parts, arranged so the three tools get the same start.
//!
//! - one chroot tarball, bookworm amd64 from the test bed plus ansible-core, git and
//!   openssh-client (what ansible-pull needs), cached next to the test bed's chroots; every
//!   device of every tool is a fresh copy of it;
//! - the signed local apt repo with the reference state's 10 packages;
//! - one https git server (test CA) holding the tend fleet repo and the ansible-pull repo, both
//!   with commits signed by the same SSH key that the devices pin, behind a relay that counts the
//!   bytes on the wire.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tend_tests::aptrepo::AptRepo;
use tend_tests::cache::{self, cache_dir};
use tend_tests::faultrelay::{Fault, FaultyRelay};
use tend_tests::gitserver::{HttpsGitServer, TestCa};
use tend_tests::publisher::{git, keygen, Publisher};
use tend_tests::{Arch, Device, Suite};

use crate::measure::{self, Sample};
use crate::refstate::{self, AptRef, RefState};
use crate::writes::{self, Writes};

/// What the bench chroot adds to the test bed's: ansible-pull's needs (git to clone, ssh-keygen
/// for `--verify-commit` of SSH-signed commits, python3-apt for the apt module).
const ANSIBLE_PACKAGES: &[&str] = &["ansible-core", "git", "openssh-client", "python3-apt"];

/// Where rash's script and files live on its devices.
pub const RASH_DIR: &str = "/srv/rash";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Tend,
    Rash,
    /// ansible-pull as shipped: facts gathered, the playbook run on every poll.
    Ansible,
    /// ansible-pull at its fastest: `gather_facts: false` and `-o` (skip the playbook when the
    /// checkout did not change).
    AnsibleBest,
}

impl Tool {
    pub const ALL: [Tool; 4] = [Tool::Tend, Tool::Rash, Tool::Ansible, Tool::AnsibleBest];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Tend => "tend",
            Tool::Rash => "rash",
            Tool::Ansible => "ansible-pull",
            Tool::AnsibleBest => "ansible-pull-o-nofacts",
        }
    }

    pub fn is_ansible(self) -> bool {
        matches!(self, Tool::Ansible | Tool::AnsibleBest)
    }
}

pub struct Bed {
    tarball: PathBuf,
    pub apt: AptRepo,
    ca: TestCa,
    server: HttpsGitServer,
    pub relay: FaultyRelay,
    repos: tempfile::TempDir,
    _keys: tempfile::TempDir,
    key: PathBuf,
    tend_bin: PathBuf,
    rash_bin: PathBuf,
}

impl Bed {
    pub fn new(tend_bin: &Path, rash_bin: &Path) -> Result<Bed> {
        let tarball = bench_tarball()?;
        let apt = AptRepo::with_packages(&refstate::packages())?;
        let keys = tempfile::tempdir()?;
        let key = keygen(keys.path(), "ops")?;
        let ca = TestCa::new("tend-bench")?;
        let repos = tempfile::tempdir()?;
        let server = HttpsGitServer::start(repos.path(), &ca)?;
        let relay = FaultyRelay::start(([127, 0, 0, 1], server.port()).into())?;
        Ok(Bed {
            tarball,
            apt,
            ca,
            server,
            relay,
            repos,
            _keys: keys,
            key,
            tend_bin: tend_bin.to_path_buf(),
            rash_bin: rash_bin.to_path_buf(),
        })
    }

    /// The apt repo as the reference state names it.
    pub fn apt_ref(&self) -> Result<AptRef> {
        Ok(AptRef {
            url: self.apt.url(),
            key_armored: self.apt.key_armored()?,
        })
    }

    /// The URL of repo `name`, through the counting relay.
    pub fn url(&self, name: &str) -> String {
        self.server.url(name).replace(
            &format!(":{}/", self.server.port()),
            &format!(":{}/", self.relay.port()),
        )
    }

    /// A publisher of signed commits to a new bare repo `name` on the server.
    pub fn publisher(&self, name: &str) -> Result<Publisher> {
        let bare = self.repos.path().join(name);
        fs::create_dir_all(&bare)?;
        git(&bare, &["init", "-q", "--bare", "-b", "main"])?;
        let empty = tempfile::tempdir()?;
        Publisher::from_dir(&bare, self.key.clone(), empty.path())
    }

    /// Replaces the publisher's tree by what `write` writes, and publishes it on main, signed.
    pub fn publish(
        &self,
        p: &Publisher,
        message: &str,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<String> {
        for entry in fs::read_dir(p.work())? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if path.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
        write(p.work())?;
        p.signed("main", message)
    }

    /// Publishes `state` (template revision `rev`) to the tend repo and the ansible repo.
    pub fn publish_state(
        &self,
        tend: &Publisher,
        ansible: &Publisher,
        state: RefState,
        rev: usize,
    ) -> Result<()> {
        let apt = self.apt_ref()?;
        let msg = format!("{} files, revision {rev}", state.files);
        self.publish(tend, &msg, |d| state.write_tend(d, &apt, rev))?;
        self.publish(ansible, &msg, |d| state.write_ansible(d, &apt, rev))?;
        Ok(())
    }

    /// Writes rash's script and files for `state` into `dev`.
    pub fn write_rash(&self, dev: &Device, state: RefState, rev: usize) -> Result<()> {
        let apt = self.apt_ref()?;
        let dir = dev.root().join(RASH_DIR.trim_start_matches('/'));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        state.write_rash(&dir, RASH_DIR, &apt, rev)
    }

    /// A fresh device for `tool`; tend's follows `tend_repo`.
    pub fn device(&self, tool: Tool, tend_repo: &str) -> Result<Device> {
        let mut dev = Device::from_tarball(&self.tarball, Suite::Bookworm, Arch::Amd64)?;
        dev.set_timeout(Duration::from_secs(1800));
        dev.write("/etc/tend/ca.pem", fs::read(self.ca.cert())?)?;
        let pubkey = fs::read_to_string(self.key.with_extension("pub"))?;
        dev.write(
            "/etc/tend/allowed_signers",
            format!("ops@example.org namespaces=\"git\" {pubkey}"),
        )?;
        match tool {
            Tool::Tend => {
                dev.install_tend(&self.tend_bin)?;
                dev.write(
                    "/etc/tend/tend.yaml",
                    format!(
                        "source:\n  url: {}\n  branch: main\n  ca_file: /etc/tend/ca.pem\n  retries: 0\n\
                         verify:\n  allowed_signers: /etc/tend/allowed_signers\ndevice:\n  id: {}\n",
                        self.url(tend_repo),
                        refstate::DEVICE
                    ),
                )?;
            }
            Tool::Rash => {
                dev.write_mode("/usr/local/bin/rash", fs::read(&self.rash_bin)?, 0o755)?;
            }
            Tool::Ansible | Tool::AnsibleBest => {
                // `--verify-commit` runs `git verify-commit`, which checks SSH signatures
                // against the same pinned signers as tend's.
                dev.write(
                    "/root/.gitconfig",
                    "[gpg]\n\tformat = ssh\n[gpg \"ssh\"]\n\tallowedSignersFile = /etc/tend/allowed_signers\n",
                )?;
            }
        }
        Ok(dev)
    }

    /// One measured run of `tool` on `dev`; ansible-pull pulls `ansible_repo`.
    pub fn run(&self, tool: Tool, dev: &Device, ansible_repo: &str) -> Result<Sample> {
        self.relay.set(Fault::None);
        let (argv, env) = self.command(tool, ansible_repo);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        measure::run(Some(dev.root()), &argv, env)
    }

    /// The same run as [`Bed::run`], traced (not timed): what it wrote to the device's storage.
    pub fn writes(&self, tool: Tool, dev: &Device, ansible_repo: &str) -> Result<Writes> {
        self.relay.set(Fault::None);
        let (argv, env) = self.command(tool, ansible_repo);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        writes::trace(dev.root(), &argv, env)
    }

    /// The command line a run of `tool` is, and its extra environment.
    fn command(
        &self,
        tool: Tool,
        ansible_repo: &str,
    ) -> (Vec<String>, &'static [(&'static str, &'static str)]) {
        let url = self.url(ansible_repo);
        let ansible = |best: bool| {
            let mut v = vec![
                "ansible-pull",
                "-U",
                url.as_str(),
                "-C",
                "main",
                "-d",
                "/var/lib/ansible-pull",
                "-i",
                "localhost,",
                "--verify-commit",
            ];
            v.extend(if best {
                ["-o", "local-nofacts.yml"].as_slice()
            } else {
                ["local.yml"].as_slice()
            });
            v
        };
        let rash_script = format!("{RASH_DIR}/bench.rh");
        let argv: Vec<&str> = match tool {
            Tool::Tend => vec!["/usr/bin/tend", "run"],
            Tool::Rash => vec!["/usr/local/bin/rash", rash_script.as_str()],
            Tool::Ansible => ansible(false),
            Tool::AnsibleBest => ansible(true),
        };
        let env: &[(&str, &str)] = match tool {
            Tool::Ansible | Tool::AnsibleBest => &[("GIT_SSL_CAINFO", "/etc/tend/ca.pem")],
            _ => &[],
        };
        (argv.into_iter().map(String::from).collect(), env)
    }
}

/// How many resources a run changed, from the tool's own output (None: it does not say).
pub fn changed(tool: Tool, s: &Sample) -> Option<u64> {
    match tool {
        Tool::Tend => match s.code {
            0 => Some(0),
            _ => None,
        },
        Tool::Ansible | Tool::AnsibleBest => {
            if s.stdout.contains("Repository has not changed, quitting") {
                return Some(0);
            }
            let recap = s.stdout.rsplit("PLAY RECAP").next()?;
            let at = recap.find("changed=")? + "changed=".len();
            recap[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        }
        Tool::Rash => None,
    }
}

/// Fails unless the run succeeded (`tend`: exit 0 or 2).
pub fn expect_ok(tool: Tool, s: &Sample) -> Result<()> {
    let ok = match tool {
        Tool::Tend => s.code == 0 || s.code == 2,
        _ => s.code == 0,
    };
    if !ok {
        bail!(
            "{} exited {}\n--- stdout\n{}\n--- stderr\n{}",
            tool.name(),
            s.code,
            tail(&s.stdout),
            tail(&s.stderr)
        );
    }
    Ok(())
}

fn tail(s: &str) -> &str {
    let cut = s.len().saturating_sub(4000);
    let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[cut..]
}

/// A digest of what the reference state manages on `dev`, for proving that the three tools
/// converged to the same state: /etc/bench's files (name, mode, content), /srv/bench, the
/// bench packages dpkg has installed, the enabled bench units, the bench user's home and shell,
/// and the apt source's key.
pub fn state_digest(dev: &Device) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let root = dev.root();
    let mut parts: Vec<String> = Vec::new();
    let mut names: Vec<_> = fs::read_dir(root.join("etc/bench"))
        .context("/etc/bench is missing")?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut h = Sha256::new();
    for n in &names {
        let p = root.join("etc/bench").join(n);
        let mode = fs::metadata(&p)?.permissions().mode() & 0o7777;
        let content = fs::read_to_string(&p)?;
        h.update(format!(
            "{} {mode:o} {}\n",
            n.to_string_lossy(),
            content.trim_end()
        ));
    }
    parts.push(format!(
        "/etc/bench: {} files {:x}",
        names.len(),
        h.finalize()
    ));
    parts.push(format!(
        "/srv/bench/initialized: {}",
        root.join("srv/bench/initialized").is_file()
    ));
    let status = fs::read_to_string(root.join("var/lib/dpkg/status"))?;
    let installed = status
        .split("\n\n")
        .filter(|s| s.contains("Package: bench-pkg-") && s.contains("Status: install ok installed"))
        .count();
    parts.push(format!("bench packages installed: {installed}"));
    let mut enabled: Vec<String> =
        fs::read_dir(root.join("etc/systemd/system/multi-user.target.wants"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("bench-svc-"))
                    .collect()
            })
            .unwrap_or_default();
    enabled.sort();
    parts.push(format!("enabled: {}", enabled.join(" ")));
    let passwd = fs::read_to_string(root.join("etc/passwd"))?;
    let user = passwd
        .lines()
        .find(|l| l.starts_with("bench:"))
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            format!("{}:{}", f.get(5).unwrap_or(&""), f.get(6).unwrap_or(&""))
        })
        .unwrap_or_else(|| "missing".into());
    parts.push(format!("user bench: {user}"));
    Ok(parts.join("; "))
}

/// The bench chroot (see the module doc), built once and cached.
fn bench_tarball() -> Result<PathBuf> {
    let base = tend_tests::chroot::tarball(Suite::Bookworm, Arch::Amd64)?;
    let base_recipe = fs::read_to_string(base.with_extension("tar.recipe")).unwrap_or_default();
    let dest = cache_dir().join("chroots/bench-bookworm-amd64.tar");
    let mirror =
        std::env::var("TEND_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    let recipe = format!(
        "{base_recipe}\n+ {}\nmirror {mirror}",
        ANSIBLE_PACKAGES.join(" ")
    );
    let built = cache::get_or_build(&dest, &recipe, |tmp| {
        let dev = Device::from_tarball(&base, Suite::Bookworm, Arch::Amd64)?;
        dev.write(
            "/etc/apt/sources.list.d/debian.sources",
            format!("Types: deb\nURIs: {mirror}\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
        )?;
        let resolv = dev.read("/etc/resolv.conf").ok();
        dev.write("/etc/resolv.conf", fs::read("/etc/resolv.conf")?)?;
        dev.run_ok(&["apt-get", "update", "-q"])?;
        let mut install = vec!["apt-get", "install", "-q", "-y", "--no-install-recommends"];
        install.extend(ANSIBLE_PACKAGES);
        dev.run_ok(&install)?;
        dev.run_ok(&["apt-get", "clean"])?;
        dev.sh("rm -rf /var/lib/apt/lists/* /etc/apt/sources.list.d/debian.sources")?;
        match resolv {
            Some(r) => dev.write("/etc/resolv.conf", r)?,
            None => fs::remove_file(dev.root().join("etc/resolv.conf"))?,
        }
        let mut tar = std::process::Command::new("tar");
        tar.args([
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--one-file-system",
            "-cf",
        ])
        .arg(tmp)
        .arg("-C")
        .arg(dev.root())
        .arg(".");
        tend_tests::run::run_ok(tar, "tar -c (bench chroot)", Duration::from_secs(600))?;
        Ok(())
    })?;
    if let Some(took) = built {
        cache::log_timing("chroot bench-bookworm-amd64 built", took);
    }
    Ok(dest)
}
