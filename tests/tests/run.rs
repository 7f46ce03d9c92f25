//! Issue #3: `tend run` against a real https git server (lighttpd + git-http-backend, test CA) on
//! 127.0.0.1, inside a Debian chroot. Commits are signed with a real SSH key (`git commit -S`),
//! and the device pins it in allowed_signers. Each case asserts the exit code, the report and the
//! files on the device: a signed head is applied; unsigned, unknown-signer and rolled-back heads
//! are refused and the device keeps converging to its last good commit; a device file moves the
//! device to another branch, a subscription cycle keeps it where it is; a first boot with nothing
//! verifiable applies nothing; a second run while one holds the lock exits at once.

use std::os::unix::process::CommandExt;

use anyhow::{ensure, Context, Result};
use tend_tests::publisher::{git, keygen};
use tend_tests::pullbed::PullBed;
use tend_tests::skip_chroot_tests;

#[path = "run/bed.rs"]
mod bed;
use bed::*;

#[path = "run/tags.rs"]
mod tags;

#[test]
fn signed_heads_apply_and_refused_heads_fall_back_to_the_last_good_commit() -> Result<()> {
    if skip_chroot_tests("signed_heads_apply_and_refused_heads_fall_back_to_the_last_good_commit") {
        return Ok(());
    }
    let bed = Bed::new()?;

    // First boot, head unsigned: nothing verifiable, nothing applied.
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    bed.publisher.publish("main", "unsigned start", None)?;
    let out = bed.run()?;
    out.expect_code(4)?;
    ensure!(
        !bed.dev.exists("/etc/site"),
        "nothing may be applied on a first boot without a verified commit"
    );
    ensure!(
        bed.report()?["git"]["refused"]
            .as_str()
            .unwrap_or("")
            .contains("not signed"),
        "{}",
        bed.report()?
    );

    // A signed head is applied; a second run changes nothing.
    let good = bed.signed("main", "site one")?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "one\n");
    let r = bed.report()?;
    ensure!(
        r["git"]["commit"] == good.as_str() && r["git"]["branch"] == "main",
        "{r:#}"
    );
    ensure!(
        r["git"]["signer"]["principal"]
            .as_str()
            .unwrap_or("")
            .contains("ops@example.org"),
        "{r:#}"
    );
    bed.run()?.expect_code(0)?;
    bed.expect_signer_shown("ops@example.org")?;

    // Unsigned, then signed by an unknown key: refused, the device stays on the good commit.
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: two}\n")?;
    let unsigned = bed.publisher.publish("main", "unsigned change", None)?;
    let out = bed.run()?;
    out.expect_code(4)?;
    ensure!(
        bed.site() == "one\n",
        "an unsigned commit was applied\n{out}"
    );
    let r = bed.report()?;
    ensure!(
        r["git"]["fell_back"] == true
            && r["git"]["commit"] == good.as_str()
            && r["git"]["head"] == unsigned.as_str(),
        "{r:#}"
    );
    // The fallback names the key the applied (last good) commit was trusted under.
    bed.expect_signer_shown("ops@example.org")?;

    let stranger = keygen(bed.keys.path(), "stranger")?;
    bed.publisher
        .publish("main", "signed by a stranger", Some(&stranger))?;
    let out = bed.run()?;
    out.expect_code(4)?;
    ensure!(bed.site() == "one\n", "{out}");
    ensure!(
        bed.report()?["git"]["refused"]
            .as_str()
            .unwrap_or("")
            .contains("allowed_signers"),
        "{}",
        bed.report()?
    );

    // Drift is repaired by the fallback convergence.
    bed.dev.write("/etc/site", "tampered\n")?;
    bed.run()?.expect_code(6)?;
    ensure!(bed.site() == "one\n", "the fallback run repairs drift");

    // A new signed head is applied; then the branch is rewound to the older signed commit.
    let newer = bed.signed("main", "site two")?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "two\n");
    bed.publisher.reset_server("main", &good)?;
    let out = bed.run()?;
    out.expect_code(4)?;
    ensure!(
        bed.site() == "two\n",
        "a replayed old signed commit was applied\n{out}"
    );
    let r = bed.report()?;
    ensure!(
        r["git"]["refused"]
            .as_str()
            .unwrap_or("")
            .contains("does not descend"),
        "{r:#}"
    );
    ensure!(r["git"]["commit"] == newer.as_str(), "{r:#}");
    Ok(())
}

#[test]
fn device_file_moves_the_device_and_a_cycle_keeps_it_in_place() -> Result<()> {
    if skip_chroot_tests("device_file_moves_the_device_and_a_cycle_keeps_it_in_place") {
        return Ok(());
    }
    let bed = Bed::new()?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: main}\n")?;
    bed.signed("main", "main")?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: canary}\n")?;
    let canary = bed.signed("canary", "canary")?;
    bed.publisher.checkout("main")?;
    bed.publisher.write(
        "devices/dev1.yaml",
        "subscribed_branch: canary\nvars: {site: main}\n",
    )?;
    bed.signed("main", "move dev1 to canary")?;

    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "canary\n");
    let r = bed.report()?;
    ensure!(
        r["git"]["branch"] == "canary"
            && r["git"]["switched_from"] == "main"
            && r["git"]["commit"] == canary.as_str(),
        "{r:#}"
    );

    // canary → main → canary: an error, reported; the device stays on canary.
    bed.publisher.checkout("canary")?;
    bed.publisher.write(
        "devices/dev1.yaml",
        "subscribed_branch: main\nvars: {site: canary-2}\n",
    )?;
    bed.signed("canary", "back to main")?;
    let out = bed.run()?;
    out.expect_code(6)?;
    ensure!(bed.site() == "canary-2\n", "{out}");
    let r = bed.report()?;
    ensure!(r["git"]["branch"] == "canary", "{r:#}");
    ensure!(
        r["warnings"].to_string().contains("subscription cycle"),
        "{r:#}"
    );
    Ok(())
}

#[test]
fn a_second_run_exits_at_once_while_one_holds_the_lock() -> Result<()> {
    if skip_chroot_tests("a_second_run_exits_at_once_while_one_holds_the_lock") {
        return Ok(());
    }
    let bed = Bed::new()?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    bed.signed("main", "one")?;
    let lock_path = bed.dev.path("/run/tend/lock")?;
    std::fs::create_dir_all(lock_path.parent().unwrap())?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .context("lock file")?;
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor we own, as tend does.
    ensure!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0);
    let out = bed.run()?;
    out.expect_code(12)?;
    ensure!(out.stderr.contains("holds the lock"), "{out}");
    ensure!(!bed.dev.exists("/etc/site"));
    drop(file);
    bed.run()?.expect_code(2)?;
    Ok(())
}

#[test]
fn apply_ref_verifies_unless_told_not_to_and_keeps_the_subscription() -> Result<()> {
    if skip_chroot_tests("apply_ref_verifies_unless_told_not_to_and_keeps_the_subscription") {
        return Ok(());
    }
    let bed = Bed::new()?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: main}\n")?;
    let main = bed.signed("main", "main")?;
    bed.run()?.expect_code(2)?;

    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: feature}\n")?;
    bed.publisher.publish("feature", "unsigned feature", None)?;
    let out = bed
        .dev
        .tend(&["apply", "--ref", "feature", "--device", "dev1"])?;
    out.expect_code(4)?;
    ensure!(bed.site() == "main\n", "an unsigned ref was applied\n{out}");

    let out = bed.dev.tend(&[
        "apply",
        "--ref",
        "feature",
        "--insecure-skip-verify",
        "--device",
        "dev1",
    ])?;
    out.expect_code(2)?;
    ensure!(bed.site() == "feature\n");
    ensure!(
        bed.report()?["warnings"]
            .to_string()
            .contains("insecure-skip-verify"),
        "{}",
        bed.report()?
    );

    // The next timer run returns the device to its subscription and its last good commit.
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "main\n");
    ensure!(bed.report()?["git"]["commit"] == main.as_str());
    Ok(())
}

#[test]
fn deleted_branch_and_server_down_keep_the_last_good_commit() -> Result<()> {
    if skip_chroot_tests("deleted_branch_and_server_down_keep_the_last_good_commit") {
        return Ok(());
    }
    let bed = Bed::new()?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    bed.signed("main", "one")?;
    bed.run()?.expect_code(2)?;

    bed.repo.delete_branch("main")?;
    bed.dev.write("/etc/site", "drifted\n")?;
    let out = bed.run()?;
    out.expect_code(6)?;
    ensure!(
        bed.site() == "one\n",
        "the last good commit is applied again\n{out}"
    );
    ensure!(bed.report()?["git"]["fell_back"] == true);

    // The server goes away entirely.
    bed.point_at_closed_port()?;
    let out = bed.run()?;
    out.expect_code(4)?;
    ensure!(bed.site() == "one\n");
    ensure!(
        bed.report()?["git"]["refused"]
            .as_str()
            .unwrap_or("")
            .contains("fetching main failed"),
        "{}",
        bed.report()?
    );
    Ok(())
}

/// Issue #5, image-time seeding: the image carries a git bundle of the fleet; on first boot, with
/// no network, tend verifies its head like a fetched one and converges. Later runs fetch from the
/// server, and the seed is never applied again (an old image must not replay it).
#[test]
fn seeded_image_converges_offline_then_fetches_normally() -> Result<()> {
    if skip_chroot_tests("seeded_image_converges_offline_then_fetches_normally") {
        return Ok(());
    }
    let bed = Bed::new()?;
    let served_url = {
        let cfg = bed.dev.read_string("/etc/tend/tend.yaml")?;
        let start = cfg.find("url: ").context("url")? + "url: ".len();
        cfg[start..].lines().next().context("url line")?.to_string()
    };
    let bundle = |name: &str| -> Result<Vec<u8>> {
        let path = bed.keys.path().join(name);
        git(
            bed.publisher.work(),
            &["bundle", "create", &path.display().to_string(), "main"],
        )?;
        Ok(std::fs::read(path)?)
    };
    bed.point_at_closed_port()?;

    // An unsigned seed is refused like an unsigned head: nothing applied.
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: forged}\n")?;
    bed.publisher.publish("main", "unsigned seed", None)?;
    bed.dev
        .write("/usr/lib/tend/seed.bundle", bundle("forged.bundle")?)?;
    let out = bed.run()?;
    out.expect_code(4)?;
    ensure!(
        !bed.dev.exists("/etc/site"),
        "an unsigned seed was applied\n{out}"
    );

    // The image's signed seed converges the device with no server at all.
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: seeded}\n")?;
    let seeded = bed.signed("main", "seeded")?;
    bed.dev
        .write("/usr/lib/tend/seed.bundle", bundle("seed.bundle")?)?;
    let out = bed.run()?;
    out.expect_code(2)?;
    ensure!(bed.site() == "seeded\n", "{out}");
    let r = bed.report()?;
    ensure!(r["git"]["commit"] == seeded.as_str(), "{r:#}");
    ensure!(
        r["warnings"].to_string().contains("seed bundle"),
        "the report must say the fleet came from the seed: {r:#}"
    );

    // The network arrives: the next commit is fetched on top of the seeded history.
    bed.set_url(&served_url)?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: fetched}\n")?;
    let fetched = bed.signed("main", "fetched")?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "fetched\n");
    ensure!(bed.report()?["git"]["commit"] == fetched.as_str());

    // Offline again: the last good commit stays; the older seed is not replayed.
    bed.point_at_closed_port()?;
    let out = bed.run()?;
    out.expect_code(4)?;
    ensure!(bed.site() == "fetched\n", "the seed was replayed\n{out}");
    Ok(())
}

/// Issue #14, finding 5: one 60 MB source in a `loop:` of 40 files took 2.4 GB, so under a
/// 1.5 GiB address-space limit `tend run` aborted (exit 134) on every run, with no refusal, no
/// fallback and a stale report. The desired state is now counted against
/// `apply.max_desired_bytes` (each distinct content once): above it the commit is invalid, named
/// by file:line, and the device converges to its last good commit, all under the limit.
#[test]
fn desired_state_over_the_memory_budget_is_refused_and_falls_back() -> Result<()> {
    if skip_chroot_tests("desired_state_over_the_memory_budget_is_refused_and_falls_back") {
        return Ok(());
    }
    const LIMIT: u64 = 1536 << 20;
    let bed = Bed::new()?;
    let limited = || -> Result<tend_tests::Outcome> {
        let mut cmd = bed
            .dev
            .command(&[tend_tests::device::TEND_PATH, "run", "--device", "dev1"]);
        // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: LIMIT,
                    rlim_max: LIMIT,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
        bed.dev.run_command(cmd, "tend run (1.5 GiB address space)")
    };
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    let good = bed.signed("main", "site one")?;
    limited()?.expect_code(2)?;
    ensure!(bed.site() == "one\n");

    // Five distinct 60 MB sources: 300 MB of content, above the 256 MiB default. The one shared
    // by forty files counts once.
    let mut blob = String::with_capacity(60_000_000);
    let mut n = 0u64;
    while blob.len() < 60_000_000 {
        blob.push_str(&format!("line {n} of a large payload\n"));
        n += 1;
    }
    for i in 1..=5 {
        bed.publisher.write(
            &format!("roles/big/files/blob{i}.txt"),
            &format!("{i}\n{blob}"),
        )?;
    }
    bed.publisher.write(
        "roles/big/role.yaml",
        "resources:\n  - file: \"/srv/big/{{ item }}.txt\"\n    source: blob1.txt\n    loop: \"{{ range(40) | list }}\"\n  - file: \"/srv/big/d{{ item }}.txt\"\n    source: \"blob{{ item }}.txt\"\n    loop: [2, 3, 4, 5]\n",
    )?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: two}\nroles: [big]\n")?;
    let big = bed.signed("main", "forty copies of a large source")?;
    let out = limited()?;
    out.expect_code(4)?;
    ensure!(
        out.stdout
            .contains("roles/big/role.yaml:6: file: the desired state needs")
            && out.stdout.contains("apply.max_desired_bytes"),
        "the refusal names the resource and the key\n{out}"
    );
    ensure!(
        bed.site() == "one\n",
        "the last good commit stays applied\n{out}"
    );
    ensure!(
        !bed.dev.exists("/srv/big"),
        "nothing of the refused commit is applied"
    );
    let r = bed.report()?;
    ensure!(
        r["git"]["fell_back"] == true
            && r["git"]["commit"] == good.as_str()
            && r["git"]["head"] == big.as_str(),
        "{r:#}"
    );
    let errors = r["errors"].to_string();
    ensure!(
        errors.contains("roles/big/role.yaml:6") && errors.contains("apply.max_desired_bytes"),
        "{r:#}"
    );
    Ok(())
}

/// Issue #17: SD cards die of writes. A `tend run` that finds no new commit and nothing drifted
/// writes nothing to the state dir (report, history, state, the git repo) or the managed files:
/// every file and directory keeps its inode, mtime, size and content.
#[test]
fn no_op_run_writes_nothing_to_the_state_dir_or_managed_files() -> Result<()> {
    if skip_chroot_tests("no_op_run_writes_nothing_to_the_state_dir_or_managed_files") {
        return Ok(());
    }
    let bed = Bed::new()?;
    // node_exporter's textfile directory exists, so the metrics are written too.
    let metrics = "/var/lib/prometheus/node-exporter";
    std::fs::create_dir_all(bed.dev.path(metrics)?)?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    bed.signed("main", "site one")?;
    bed.run()?.expect_code(2)?;
    bed.run()?.expect_code(0)?;
    let watched = ["/var/lib/tend", metrics, "/etc/site"];
    let before = stamps(&bed, &watched)?;
    // Past the one-second resolution of the report's times: a rewrite would show in them.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let third_started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    bed.run()?.expect_code(0)?;
    let after = stamps(&bed, &watched)?;
    let changed: Vec<String> = after
        .iter()
        .filter(|(p, s)| before.get(*p) != Some(*s))
        .map(|(p, s)| format!("{p}: {:?} -> {s}", before.get(p)))
        .chain(
            before
                .keys()
                .filter(|p| !after.contains_key(*p))
                .map(|p| format!("{p}: removed")),
        )
        .collect();
    ensure!(
        changed.is_empty(),
        "a no-op run wrote to the device:\n{}",
        changed.join("\n")
    );
    // When the run happened is still observable, from the volatile record on /run.
    let status = bed.dev.tend(&["status", "--json"])?.ok()?.stdout;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    let finished = status["last_run"]["finished"].as_u64().unwrap_or(0);
    ensure!(
        status["last_run"]["result"] == "ok" && finished >= third_started,
        "{status:#}"
    );
    let prom = bed.dev.read_string(&format!("{metrics}/tend.prom"))?;
    ensure!(
        prom.contains(&format!("tend_last_run_timestamp_seconds {finished}\n")),
        "{prom}"
    );
    let inventory = bed.dev.tend(&["inventory"])?.ok()?.stdout;
    ensure!(inventory.contains("tend_status=ok"), "{inventory}");
    Ok(())
}

/// Device path → inode, mtime (ns), size and sha256 of every file and directory under `paths`.
fn stamps(bed: &Bed, paths: &[&str]) -> Result<std::collections::BTreeMap<String, String>> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    fn walk(
        host: &std::path::Path,
        shown: String,
        out: &mut std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let m = std::fs::symlink_metadata(host).with_context(|| shown.clone())?;
        let sha = if m.is_file() {
            format!("{:x}", Sha256::digest(std::fs::read(host)?))
        } else {
            String::new()
        };
        let mtime = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
        let line = format!("ino {} mtime {mtime} size {} {sha}", m.ino(), m.len());
        out.insert(shown.clone(), line);
        if m.is_dir() {
            for e in std::fs::read_dir(host)? {
                let name = e?.file_name().to_string_lossy().into_owned();
                walk(&host.join(&name), format!("{shown}/{name}"), out)?;
            }
        }
        Ok(())
    }
    let mut out = std::collections::BTreeMap::new();
    for p in paths {
        walk(&bed.dev.path(p)?, p.to_string(), &mut out)?;
    }
    Ok(out)
}

/// Issue 16's drift acceptance: a file edited on the device is repaired and reported corrective
/// on the next run of the same commit; what a new commit changes is intentional, while a
/// drift repaired in the same run stays corrective; an `enforce: false` file is reported drifted
/// with its diff and keeps the device's content.
#[test]
fn drift_is_corrective_a_new_commit_intentional_and_an_audited_file_kept() -> Result<()> {
    if skip_chroot_tests("drift_is_corrective_a_new_commit_intentional_and_an_audited_file_kept") {
        return Ok(());
    }
    let bed = Bed::new()?;
    let metrics = "/var/lib/prometheus/node-exporter";
    std::fs::create_dir_all(bed.dev.path(metrics)?)?;
    bed.dev.write("/etc/watched", "the device's own\n")?;
    bed.publisher.write(
        "roles/site/role.yaml",
        "resources:\n  - file: /etc/site\n    content: \"{{ site }}\\n\"\n  - file: /etc/other\n    content: \"other\\n\"\n  - file: /etc/watched\n    content: \"from the repo\\n\"\n    enforce: false\n",
    )?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    bed.signed("main", "site one, /etc/watched audited")?;
    let cause = |r: &serde_json::Value, id: &str| {
        r["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["id"] == id)
            .map(|x| format!("{} {}", x["outcome"], x["cause"]))
            .unwrap_or_default()
    };

    // The first run: every change is intentional; the audited file is left as it is.
    bed.run()?.expect_code(2)?;
    let r = bed.report()?;
    ensure!(
        cause(&r, "/etc/site") == "\"changed\" \"intentional\""
            && cause(&r, "/etc/other") == "\"changed\" \"intentional\"",
        "{r:#}"
    );
    let watched = r["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["id"] == "/etc/watched")
        .cloned()
        .unwrap_or_default();
    let diff = watched["diff"].as_str().unwrap_or("");
    ensure!(
        watched["outcome"] == "drifted"
            && watched.get("cause").is_none()
            && diff.contains("-the device's own")
            && diff.contains("+from the repo"),
        "{watched:#}"
    );
    ensure!(
        r["counts"]["drifted"] == 1 && r["counts"]["corrective"] == 0,
        "{r:#}"
    );
    ensure!(bed.dev.read_string("/etc/watched")? == "the device's own\n");

    // Drift only: no change, exit 0, still drifted.
    bed.run()?.expect_code(0)?;
    ensure!(bed.report()?["counts"]["drifted"] == 1);

    // A hand edit under the same commit is repaired, and reported as corrective everywhere.
    bed.dev.write("/etc/site", "tampered\n")?;
    let out = bed.run()?;
    out.expect_code(2)?;
    ensure!(bed.site() == "one\n");
    let r = bed.report()?;
    ensure!(
        cause(&r, "/etc/site") == "\"changed\" \"corrective\"" && r["counts"]["corrective"] == 1,
        "{r:#}"
    );
    ensure!(
        out.stdout.contains("1 changed (1 corrective), 0 failed")
            && out.stdout.contains("1 drifted")
            && out.stdout.contains("/etc/site: content changed")
            && out.stdout.contains("(corrective)"),
        "{out}"
    );
    let prom = bed.dev.read_string(&format!("{metrics}/tend.prom"))?;
    ensure!(
        prom.contains("tend_corrective_changes 1\n") && prom.contains("tend_resources_drifted 1\n"),
        "{prom}"
    );
    let inventory = bed.dev.tend(&["inventory"])?.ok()?.stdout;
    ensure!(
        inventory.contains("tend_corrective=1\n") && inventory.contains("tend_drifted=1\n"),
        "{inventory}"
    );
    let status = bed.dev.tend(&["status"])?.ok()?.stdout;
    ensure!(
        status.contains("(1 changed, 1 corrective, 0 failed, 1 drifted)"),
        "{status}"
    );

    // A new commit: its change is intentional; a drift repaired beside it is still corrective.
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: two}\n")?;
    bed.signed("main", "site two")?;
    bed.dev.write("/etc/other", "edited\n")?;
    bed.run()?.expect_code(2)?;
    let r = bed.report()?;
    ensure!(
        cause(&r, "/etc/site") == "\"changed\" \"intentional\""
            && cause(&r, "/etc/other") == "\"changed\" \"corrective\""
            && r["counts"]["corrective"] == 1,
        "{r:#}"
    );
    ensure!(bed.site() == "two\n" && bed.dev.read_string("/etc/other")? == "other\n");
    ensure!(bed.dev.read_string("/etc/watched")? == "the device's own\n");
    Ok(())
}
