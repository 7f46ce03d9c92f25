//! Issue 7, steps 1 and 2 on arm64: the rollout fleet's first run and a promotion merge, in a
//! bookworm arm64 chroot (qemu-user binfmt) with the arm64 .deb installed by `dpkg -i` and
//! `tend run` started by hand. The git server (https, test CA, signed commits) and the stages'
//! apt snapshots are the same as the booted VM's (tests/tests/e2e.rs), on loopback. The VM proves
//! the timer, systemd and Mender on amd64; this proves the arm64 build on its own userland.
//!
//! Run alone (as root, after `scripts/build-debs arm64`):
//! `cargo test -p tend-tests --test rollout_arm64`.

use anyhow::{ensure, Result};
use tend_tests::gitserver::{FleetRepo, HttpsGitServer, TestCa};
use tend_tests::publisher::{keygen, Publisher};
use tend_tests::{rollout, skip_chroot_tests, AptRepo, Arch, Device, Suite};

const DEVICE: &str = "pi1";
const STAGES: [&str; 3] = ["development", "canary", "production"];

struct Bed {
    dev: Device,
    publisher: Publisher,
    _git: HttpsGitServer,
    _repo: FleetRepo,
    apt: Vec<AptRepo>,
    _keys: tempfile::TempDir,
}

impl Bed {
    fn new() -> Result<(Bed, String)> {
        let deb = tend_tests::built_deb("arm64")?;
        let keys = tempfile::tempdir()?;
        let key = keygen(keys.path(), "ops")?;
        let repo = FleetRepo::new()?;
        let ca = TestCa::new("tend-rollout-arm64")?;
        let git = HttpsGitServer::start(repo.root(), &ca)?;
        let apt = vec![
            AptRepo::with_packages(&[rollout::hello("3.0-1"), rollout::tool()])?,
            AptRepo::with_packages(&[rollout::hello("2.0-1"), rollout::tool()])?,
            AptRepo::with_packages(&[rollout::hello("1.0-1"), rollout::tool()])?,
        ];
        let publisher = Publisher::new(repo.path(), key, "e2e-fleet")?;
        let mut ports = [0u16; 3];
        for (i, (stage, snapshot)) in STAGES.iter().zip(&apt).enumerate() {
            publisher.write(
                &format!("roles/app/files/{stage}.asc"),
                &snapshot.key_armored()?,
            )?;
            ports[i] = rollout::port_of(&snapshot.url())?;
        }
        let (canary, _production) = rollout::publish_fleet(&publisher, DEVICE, ports)?;

        let dev = Device::new(Suite::Bookworm, Arch::Arm64)?;
        dev.install_tend_deb(&deb)?;
        dev.write("/etc/tend/ca.pem", std::fs::read(ca.cert())?)?;
        dev.write("/etc/tend/allowed_signers", publisher.allowed_signers()?)?;
        dev.write(
            "/etc/tend/tend.d/50-test.yaml",
            format!(
                "source:\n  url: {}\n  branch: canary\n  ca_file: /etc/tend/ca.pem\n  retries: 0\n\
                 verify:\n  allowed_signers: /etc/tend/allowed_signers\n\
                 device:\n  id: {DEVICE}\n",
                git.url("fleet.git")
            ),
        )?;
        let bed = Bed {
            dev,
            publisher,
            _git: git,
            _repo: repo,
            apt,
            _keys: keys,
        };
        Ok((bed, canary))
    }

    fn sh(&self, script: &str) -> Result<String> {
        Ok(self.dev.run_ok(&["sh", "-c", script])?.stdout)
    }
}

#[test]
fn arm64_device_follows_canary_and_applies_a_promotion_merge() -> Result<()> {
    if skip_chroot_tests("arm64_device_follows_canary_and_applies_a_promotion_merge") {
        return Ok(());
    }
    let (bed, canary) = Bed::new()?;
    let arch = bed.sh("uname -m; dpkg --print-architecture")?;
    ensure!(
        arch == "aarch64\narm64\n",
        "not an arm64 userland: {arch:?}"
    );

    // Step 1: the first run on canary.
    bed.dev.tend(&["run"])?.expect_code(2)?;
    let r = bed.dev.report()?;
    ensure!(r["git"]["commit"] == canary.as_str(), "{r:#}");
    ensure!(r["git"]["branch"] == "canary", "{r:#}");
    let hello = bed.sh("dpkg-query -W -f '${Version}' tend-hello")?;
    ensure!(
        hello == "2.0-1",
        "the canary snapshot has tend-hello 2.0-1, installed {hello:?}"
    );
    let conf = bed.dev.read_string("/etc/e2e-app.conf")?;
    ensure!(
        conf == "# managed by tend\nsite=lab-7\ngreeting=hello\n",
        "{conf:?}"
    );
    let wants = "etc/systemd/system/multi-user.target.wants/e2e-app.service";
    ensure!(
        bed.dev.root().join(wants).is_symlink(),
        "e2e-app is not enabled ({wants} is missing)\n{r:#}"
    );
    // Nothing new: nothing changes.
    bed.dev.tend(&["run"])?.expect_code(0)?;

    // Step 2: a change on main, promoted to canary by a signed merge.
    bed.publisher.checkout("main")?;
    bed.publisher
        .write("roles/app/role.yaml", &rollout::role("hi", ""))?;
    let merged = rollout::merge_main_into_canary(&bed.publisher, "greet with hi")?;
    bed.dev.tend(&["run"])?.expect_code(2)?;
    let r = bed.dev.report()?;
    ensure!(r["git"]["commit"] == merged.as_str(), "{r:#}");
    let changed = tend_tests::reports::changed(&r);
    ensure!(
        changed == ["file /etc/e2e-app.conf"],
        "the merge changes only the config, not {changed:?}\n{r:#}"
    );
    let conf = bed.dev.read_string("/etc/e2e-app.conf")?;
    ensure!(conf.contains("greeting=hi\n"), "{conf:?}");
    let sources = bed.dev.read_string("/etc/apt/sources.list.d/e2e.sources")?;
    let canary_port = rollout::port_of(&bed.apt[1].url())?;
    ensure!(
        sources.contains(&format!("127.0.0.1:{canary_port}")),
        "the merge must not bring main's snapshot to canary:\n{sources}"
    );
    bed.dev.tend(&["run"])?.expect_code(0)?;
    Ok(())
}
