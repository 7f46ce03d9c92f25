//! Issue #14, finding 9: an SSH key's validity is judged at the committer (or tagger) date, which
//! the signer writes. A key retired with `valid-before` could sign a commit dated inside its old
//! window; the device must refuse a head dated before the last one it verified. Real git server,
//! real signatures (`git commit -S` / `git tag -s`, gpg.format=ssh), bookworm chroot.

use std::path::Path;

use anyhow::ensure;
use anyhow::Result;
use tend_tests::publisher::{git_with_env, keygen};
use tend_tests::pullbed::PullBed;
use tend_tests::skip_chroot_tests;

/// A date inside the retired key's window (it was retired at the start of 2024).
const BACKDATED: &str = "2023-06-01T12:00:00Z";

/// A pulling device that pins the publisher's key and a key retired on 2024-01-01; returns the
/// bed and the retired key.
fn bed(source_extra: &str) -> Result<(PullBed, std::path::PathBuf)> {
    let bed = PullBed::new("run-fleet")?;
    bed.configure(&bed.url(), source_extra, "")?;
    let retired = keygen(bed.keys.path(), "retired")?;
    let line = format!(
        "{}retired@example.org namespaces=\"git\",valid-before=\"20240101Z\" {}",
        bed.publisher.allowed_signers()?,
        std::fs::read_to_string(retired.with_extension("pub"))?
    );
    bed.dev.write("/etc/tend/allowed_signers", line)?;
    Ok((bed, retired))
}

/// Runs git in the publisher's work tree with the committer (and tagger) date `date`, signing
/// with `key`.
fn git_at(dir: &Path, date: &str, key: &Path, args: &[&str]) -> Result<String> {
    let signing_key = format!("user.signingkey={}", key.display());
    let mut all = vec!["-c", "gpg.format=ssh", "-c", &signing_key];
    all.extend_from_slice(args);
    git_with_env(dir, &all, &[("GIT_COMMITTER_DATE", date)])
}

/// Commits the work tree on main dated `date`, signed by `key`, pushes it; returns its id.
fn commit_at(bed: &PullBed, site: &str, date: &str, key: &Path) -> Result<String> {
    let dir = bed.publisher.work();
    bed.publisher
        .write("devices/dev1.yaml", &format!("vars: {{site: {site}}}\n"))?;
    git_at(dir, date, key, &["add", "-A"])?;
    git_at(dir, date, key, &["commit", "-q", "-S", "-m", site])?;
    let bare = bed.publisher.bare().display().to_string();
    git_at(dir, date, key, &["push", "-q", "-f", &bare, "main:main"])?;
    git_at(dir, date, key, &["rev-parse", "HEAD"])
}

/// A signed annotated tag `name` on `commit` dated `date`, signed by `key`, pushed.
fn tag_at(bed: &PullBed, name: &str, commit: &str, date: &str, key: &Path) -> Result<()> {
    let dir = bed.publisher.work();
    git_at(
        dir,
        date,
        key,
        &["tag", "-f", "-s", "-m", name, name, commit],
    )?;
    let bare = bed.publisher.bare().display().to_string();
    git_at(
        dir,
        date,
        key,
        &["push", "-q", "-f", &bare, &format!("refs/tags/{name}")],
    )?;
    Ok(())
}

fn refused(bed: &PullBed) -> Result<String> {
    Ok(bed.report()?["git"]["refused"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[test]
fn backdated_commit_signed_by_a_retired_key_is_refused() -> Result<()> {
    if skip_chroot_tests("backdated_commit_signed_by_a_retired_key_is_refused") {
        return Ok(());
    }
    let (bed, retired) = bed("")?;
    let good = commit_at(&bed, "one", "2026-01-01T00:00:00Z", bed.publisher.key())?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "one\n");

    // It descends from the verified head, and the retired key was valid at the date it claims.
    commit_at(&bed, "evil", BACKDATED, &retired)?;
    let out = bed.run()?;
    out.expect_code(4)?;
    ensure!(
        bed.site() == "one\n",
        "a backdated commit was applied\n{out}"
    );
    let why = refused(&bed)?;
    ensure!(
        why.contains("backdated")
            && why.contains("2023-06-01 12:00:00 UTC")
            && why.contains("2026-01-01 00:00:00 UTC"),
        "{why}"
    );
    ensure!(bed.report()?["git"]["commit"] == good.as_str());
    Ok(())
}

#[test]
fn equal_dates_are_accepted() -> Result<()> {
    if skip_chroot_tests("equal_dates_are_accepted") {
        return Ok(());
    }
    let (bed, _) = bed("")?;
    let date = "2026-01-01T00:00:00Z";
    commit_at(&bed, "one", date, bed.publisher.key())?;
    bed.run()?.expect_code(2)?;
    let second = commit_at(&bed, "two", date, bed.publisher.key())?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "two\n");
    ensure!(bed.report()?["git"]["commit"] == second.as_str());
    Ok(())
}

#[test]
fn backdated_tag_signed_by_a_retired_key_is_refused() -> Result<()> {
    if skip_chroot_tests("backdated_tag_signed_by_a_retired_key_is_refused") {
        return Ok(());
    }
    let (bed, retired) = bed("  follow: tags\n")?;
    let cfg = bed.dev.read_string("/etc/tend/tend.yaml")?;
    bed.dev.write(
        "/etc/tend/tend.yaml",
        cfg.replace("branch: main", "branch: production"),
    )?;
    let key = bed.publisher.key().to_path_buf();
    let one = commit_at(&bed, "prod-1", "2026-01-01T00:00:00Z", &key)?;
    tag_at(&bed, "production/1", &one, "2026-01-01T00:00:00Z", &key)?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "prod-1\n");

    // A higher number, so the rollback rule passes; only the date gives it away.
    let two = commit_at(&bed, "evil", BACKDATED, &retired)?;
    tag_at(&bed, "production/2", &two, BACKDATED, &retired)?;
    let out = bed.run()?;
    out.expect_code(4)?;
    ensure!(
        bed.site() == "prod-1\n",
        "a backdated tag was applied\n{out}"
    );
    let why = refused(&bed)?;
    ensure!(
        why.contains("tag production/2") && why.contains("backdated"),
        "{why}"
    );
    Ok(())
}
