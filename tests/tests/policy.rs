//! Issue #14, key compromise: k-of-n approvals per stage and in-band key rotation. The device
//! pins root keys (`verify.policy_roots`); the fleet repo carries `policy/policy.yaml` signed by
//! them (`ssh-keygen -Y sign -n tend-policy`), naming each stage's signers and threshold; a head
//! needs that many approvals (its own signature, signed tags `approve/<commit>/<name>`). Real
//! git server, real SSH signatures, bookworm chroot.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Result};
use tend_tests::publisher::{git, keygen};
use tend_tests::pullbed::PullBed;
use tend_tests::skip_chroot_tests;

struct Bed {
    pb: PullBed,
    root1: PathBuf,
    root2: PathBuf,
    alice: PathBuf,
    bob: PathBuf,
    carol: PathBuf,
}

fn public(key: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(key.with_extension("pub"))?
        .trim()
        .to_string())
}

impl Bed {
    /// A device that pins `roots` as policy roots (threshold 1).
    fn new(roots: &[&str]) -> Result<Bed> {
        let pb = PullBed::new("run-fleet")?;
        pb.configure(
            &pb.url(),
            "",
            "  policy_roots: /etc/tend/policy_roots\n  policy_threshold: 1\n",
        )?;
        let k = |n: &str| keygen(pb.keys.path(), n);
        let bed = Bed {
            root1: k("root1")?,
            root2: k("root2")?,
            alice: k("alice")?,
            bob: k("bob")?,
            carol: k("carol")?,
            pb,
        };
        let mut lines = String::new();
        for r in roots {
            let key = bed.pb.keys.path().join(r);
            lines += &format!("{r} namespaces=\"tend-policy\" {}\n", public(&key)?);
        }
        bed.pb.dev.write("/etc/tend/policy_roots", lines)?;
        Ok(bed)
    }

    /// Writes policy/policy.yaml (stage main: `signers`, `threshold`) and its signatures by
    /// `roots`, replacing any earlier ones.
    fn policy(
        &self,
        version: u64,
        signers: &[&Path],
        threshold: usize,
        roots: &[&Path],
    ) -> Result<()> {
        let mut yaml = format!(
            "version: {version}\nstages:\n  main:\n    threshold: {threshold}\n    signers:\n"
        );
        for s in signers {
            let name = s.file_name().unwrap_or_default().to_string_lossy();
            yaml += &format!(
                "      - '{name}@example.org namespaces=\"git\" {}'\n",
                public(s)?
            );
        }
        let dir = self.pb.publisher.work().join("policy");
        let _ = std::fs::remove_dir_all(&dir);
        self.pb.publisher.write("policy/policy.yaml", &yaml)?;
        for r in roots {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-Y", "sign", "-n", "tend-policy", "-f"])
                .arg(r)
                .arg(dir.join("policy.yaml"))
                .status()?;
            ensure!(st.success(), "ssh-keygen -Y sign failed");
            let name = r.file_name().unwrap_or_default().to_string_lossy();
            std::fs::rename(
                dir.join("policy.yaml.sig"),
                dir.join(format!("policy.yaml.{name}.sig")),
            )?;
        }
        Ok(())
    }

    /// Commits site `site` on main signed by `key`; returns the commit id.
    fn commit(&self, site: &str, key: &Path) -> Result<String> {
        self.pb
            .publisher
            .write("devices/dev1.yaml", &format!("vars: {{site: {site}}}\n"))?;
        self.pb.publisher.publish("main", site, Some(key))
    }

    /// A signed tag `approve/<commit>/<key name>` by `key`, pushed.
    fn approve(&self, commit: &str, key: &Path) -> Result<()> {
        let name = format!(
            "approve/{commit}/{}",
            key.file_name().unwrap_or_default().to_string_lossy()
        );
        let dir = self.pb.publisher.work();
        let signing = format!("user.signingkey={}", key.display());
        git(
            dir,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &signing,
                "tag",
                "-s",
                "-m",
                "approve",
                &name,
                commit,
            ],
        )?;
        let bare = self.pb.publisher.bare().display().to_string();
        git(dir, &["push", "-q", &bare, &format!("refs/tags/{name}")])?;
        Ok(())
    }

    fn refused(&self) -> Result<String> {
        Ok(self.pb.report()?["git"]["refused"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }
}

#[test]
fn too_few_signatures_is_refused() -> Result<()> {
    if skip_chroot_tests("too_few_signatures_is_refused") {
        return Ok(());
    }
    let bed = Bed::new(&["root1"])?;
    bed.policy(1, &[&bed.alice, &bed.bob], 2, &[&bed.root1])?;
    let head = bed.commit("two-of-two", &bed.alice)?;
    let out = bed.pb.run()?;
    out.expect_code(4)?;
    ensure!(bed.pb.site().is_empty(), "applied with one approval\n{out}");
    let why = bed.refused()?;
    ensure!(why.contains("1 of the 2 approvals"), "{why}");

    // The second signer approves the same commit: now it counts twice, by two distinct keys.
    bed.approve(&head, &bed.bob)?;
    bed.pb.run()?.expect_code(2)?;
    ensure!(bed.pb.site() == "two-of-two\n");
    ensure!(bed.pb.report()?["git"]["commit"] == head.as_str());
    Ok(())
}

#[test]
fn policy_signed_by_a_rotated_out_key_is_refused() -> Result<()> {
    if skip_chroot_tests("policy_signed_by_a_rotated_out_key_is_refused") {
        return Ok(());
    }
    // The device's roots were rotated to root2; a policy signed by the old root1 is not trusted.
    let bed = Bed::new(&["root2"])?;
    bed.policy(1, &[&bed.alice], 1, &[&bed.root1])?;
    bed.commit("old-root", &bed.alice)?;
    let out = bed.pb.run()?;
    out.expect_code(4)?;
    ensure!(bed.pb.site().is_empty(), "{out}");
    let why = bed.refused()?;
    ensure!(
        why.contains("not a policy root") && why.contains("0 of the 1"),
        "{why}"
    );

    bed.policy(1, &[&bed.alice], 1, &[&bed.root2])?;
    bed.commit("new-root", &bed.alice)?;
    bed.pb.run()?.expect_code(2)?;
    ensure!(bed.pb.site() == "new-root\n");
    Ok(())
}

#[test]
fn policy_rollback_is_refused() -> Result<()> {
    if skip_chroot_tests("policy_rollback_is_refused") {
        return Ok(());
    }
    let bed = Bed::new(&["root1"])?;
    bed.policy(2, &[&bed.alice], 1, &[&bed.root1])?;
    bed.commit("v2", &bed.alice)?;
    bed.pb.run()?.expect_code(2)?;
    ensure!(bed.pb.site() == "v2\n");

    // A genuine, root-signed but older policy (one that still trusted bob) comes back.
    bed.policy(1, &[&bed.bob], 1, &[&bed.root1])?;
    bed.commit("v1-again", &bed.bob)?;
    let out = bed.pb.run()?;
    out.expect_code(4)?;
    ensure!(
        bed.pb.site() == "v2\n",
        "an older policy was accepted\n{out}"
    );
    let why = bed.refused()?;
    ensure!(
        why.contains("policy rollback") && why.contains("version 2"),
        "{why}"
    );
    Ok(())
}

#[test]
fn rotation_commit_is_accepted_and_the_old_key_stops_working() -> Result<()> {
    if skip_chroot_tests("rotation_commit_is_accepted_and_the_old_key_stops_working") {
        return Ok(());
    }
    let bed = Bed::new(&["root1"])?;
    bed.policy(1, &[&bed.alice], 1, &[&bed.root1])?;
    bed.commit("alice", &bed.alice)?;
    bed.pb.run()?.expect_code(2)?;
    ensure!(bed.pb.site() == "alice\n");

    // Rotation: the roots sign a policy that replaces alice by carol; carol signs that commit.
    bed.policy(2, &[&bed.carol], 1, &[&bed.root1])?;
    let rotation = bed.commit("carol", &bed.carol)?;
    bed.pb.run()?.expect_code(2)?;
    ensure!(bed.pb.site() == "carol\n");
    let r = bed.pb.report()?;
    ensure!(
        r["git"]["commit"] == rotation.as_str()
            && r["git"]["signer"]["principal"] == "carol@example.org",
        "{r:#}"
    );

    // alice's key no longer counts, neither as the commit's signer nor as an approval.
    let stale = bed.commit("alice-again", &bed.alice)?;
    bed.approve(&stale, &bed.alice)?;
    let out = bed.pb.run()?;
    out.expect_code(4)?;
    ensure!(
        bed.pb.site() == "carol\n",
        "the rotated-out key still works\n{out}"
    );
    let why = bed.refused()?;
    ensure!(why.contains("0 of the 1 approvals"), "{why}");
    Ok(())
}
