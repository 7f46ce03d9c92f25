//! `tend gate` (issue 8), the real binary against the Mender double's management API on
//! 127.0.0.1 over TLS: Mender's inventory search (`POST /api/management/v2/inventory/filters/search`,
//! a personal access token, filters, paging with `X-Total-Count`).
//!
//! The fleet is a git repo made here (branch `canary` with an old and a head commit, and a
//! `production` merge of canary whose tree equals canary's head); the devices are inventories
//! set on the double, as their Mender clients would have sent them. No root or chroot needed.
//!
//! `--rollout` (issue 16): devices report their wave (`tend_wave` = `W/N`) and the gate answers
//! halt (exit 14) or continue per wave from the failures and reverts among those on the head.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use tend_tests::mender::{rfc3339, MenderServer};
use tend_tests::publisher::git;
use tend_tests::{run, tend_binary, Outcome};

const FAILED: i32 = 4;
const COULD_NOT_RUN: i32 = 1;
const USAGE: i32 = 64;
/// `tend gate --rollout`: a wave passed the failure threshold.
const HALT: i32 = 14;

struct Bed {
    server: MenderServer,
    dir: tempfile::TempDir,
    token: String,
    /// canary's head, an older canary commit, and production's merge (canary's tree).
    head: String,
    old: String,
    merge: String,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Bed {
    fn new() -> Result<Bed> {
        let server = MenderServer::start()?;
        let dir = tempfile::tempdir()?;
        let repo = dir.path().join("fleet");
        std::fs::create_dir(&repo)?;
        git(&repo, &["init", "-q", "-b", "main"])?;
        std::fs::write(repo.join("fleet.yaml"), "format: 1\n")?;
        git(&repo, &["add", "-A"])?;
        git(&repo, &["commit", "-q", "-m", "first"])?;
        git(&repo, &["checkout", "-q", "-b", "canary"])?;
        let old = git(&repo, &["rev-parse", "HEAD"])?;
        std::fs::write(repo.join("fleet.yaml"), "format: 1\nroles: []\n")?;
        git(&repo, &["commit", "-q", "-am", "second"])?;
        let head = git(&repo, &["rev-parse", "HEAD"])?;
        git(&repo, &["checkout", "-q", "-b", "production", "main"])?;
        git(
            &repo,
            &["merge", "-q", "--no-ff", "-m", "promote canary", "canary"],
        )?;
        let merge = git(&repo, &["rev-parse", "HEAD"])?;
        std::fs::write(dir.path().join("ca.pem"), server.ca_pem())?;
        let token = server.personal_access_token("ci");
        Ok(Bed {
            server,
            dir,
            token,
            head,
            old,
            merge,
        })
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("fleet")
    }

    /// A device that follows `branch` and reports `overrides` over a fresh, ok run of the head.
    fn device(&self, id: &str, branch: &str, overrides: &[(&str, &str)]) {
        let mut a: BTreeMap<String, Value> = [
            ("tend_branch", branch.to_string()),
            ("tend_commit", self.head.clone()),
            ("tend_status", "ok".to_string()),
            ("tend_last_run", rfc3339(now() - 60)),
            ("tend_suspended", "false".to_string()),
            ("tend_version", "0.1.0".to_string()),
            ("device_type", "raspberrypi3".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
        for (k, v) in overrides {
            a.insert(k.to_string(), Value::String(v.to_string()));
        }
        self.server.set_inventory(id, a);
    }

    /// `tend gate --branch canary …` with the token in the environment, and nothing else of it.
    fn gate(&self, args: &[&str]) -> Result<Outcome> {
        self.gate_with_token(Some(&self.token), args)
    }

    fn gate_with_token(&self, token: Option<&str>, args: &[&str]) -> Result<Outcome> {
        let mut cmd = Command::new(tend_binary()?);
        cmd.args(["gate", "--branch", "canary", "--server"])
            .arg(self.server.url())
            .arg("--repo")
            .arg(self.repo())
            .arg("--ca-file")
            .arg(self.dir.path().join("ca.pem"))
            .args(args)
            .env_clear()
            .env("HOME", self.dir.path())
            .env("LC_ALL", "C.UTF-8");
        if let Some(t) = token {
            cmd.env("TEND_MENDER_TOKEN", t);
        }
        run::run(
            cmd,
            &format!("tend gate {}", args.join(" ")),
            Duration::from_secs(120),
        )
    }
}

fn expect(out: &Outcome, code: i32, stdout_has: &[&str]) -> Result<()> {
    ensure!(out.code() == Some(code), "expected exit {code}:\n{out}");
    for s in stdout_has {
        ensure!(out.stdout.contains(s), "stdout lacks `{s}`:\n{out}");
    }
    Ok(())
}

/// The table line of one device.
fn row<'a>(out: &'a Outcome, device: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.starts_with(device))
        .unwrap_or("")
}

#[test]
fn all_devices_good_pass_and_only_the_branch_is_asked_for() -> Result<()> {
    let bed = Bed::new()?;
    bed.device("pi3-canary-a", "canary", &[]);
    bed.device("pi3-canary-b", "canary", &[]);
    // Promotion by merge: another commit, the same tree. It counts as the head.
    bed.device("pi4-canary", "canary", &[("tend_commit", &bed.merge)]);
    // Devices of other branches are not the gate's business, however broken.
    bed.device("pi2-prod", "production", &[("tend_status", "failed")]);
    bed.device("pi4-main", "main", &[("tend_commit", &bed.old)]);

    let out = bed.gate(&["--min-devices", "3"])?;
    expect(
        &out,
        0,
        &[
            "tend gate PASSED",
            "3 devices: 3 passed, 0 failed, 0 not yet",
        ],
    )?;
    ensure!(
        !out.stdout.contains("DEVICE"),
        "no table when nothing lags:\n{out}"
    );
    ensure!(out.stdout.contains(&bed.head[..12]), "{out}");

    let searches = bed.server.searches();
    ensure!(searches.len() == 1, "{searches:?}");
    ensure!(
        searches[0]["filters"]
            == json!([{"scope": "inventory", "attribute": "tend_branch", "type": "$eq", "value": "canary"}]),
        "{searches:?}"
    );

    let json_out = bed.gate(&["--min-devices", "3", "--json"])?;
    expect(&json_out, 0, &[])?;
    let doc: Value = serde_json::from_str(&json_out.stdout)?;
    ensure!(
        doc["passed"] == true && doc["head"] == bed.head.as_str(),
        "{doc:#}"
    );
    ensure!(
        doc["devices"].as_array().map(Vec::len) == Some(3),
        "{doc:#}"
    );
    Ok(())
}

#[test]
fn one_lagging_device_blocks_only_when_it_is_needed() -> Result<()> {
    let bed = Bed::new()?;
    bed.device("pi3-a", "canary", &[]);
    bed.device("pi3-b", "canary", &[]);
    bed.device("pi3-late", "canary", &[("tend_commit", &bed.old)]);

    let out = bed.gate(&["--min-devices", "3"])?;
    expect(
        &out,
        FAILED,
        &["tend gate FAILED", "2 passed, 0 failed, 1 not yet"],
    )?;
    let line = row(&out, "pi3-late");
    ensure!(
        line.contains("lagging") && line.contains(&bed.old[..12]) && line.contains("not the head"),
        "{out}"
    );
    ensure!(
        row(&out, "pi3-a").is_empty(),
        "passing devices are not listed:\n{out}"
    );
    // Two passes are enough when two are asked for; the laggard is still shown.
    let out = bed.gate(&["--min-devices", "2"])?;
    expect(&out, 0, &["tend gate PASSED"])?;
    ensure!(row(&out, "pi3-late").contains("lagging"), "{out}");
    Ok(())
}

#[test]
fn one_failed_device_fails_the_gate_whatever_the_others_do() -> Result<()> {
    let bed = Bed::new()?;
    bed.device("pi3-a", "canary", &[]);
    bed.device("pi3-b", "canary", &[]);
    bed.device(
        "pi3-broken",
        "canary",
        &[
            ("tend_status", "failed"),
            ("tend_error", "package chromium: no installation candidate"),
        ],
    );
    let out = bed.gate(&["--min-devices", "1"])?;
    expect(&out, FAILED, &["tend gate FAILED", "2 passed, 1 failed"])?;
    let line = row(&out, "pi3-broken");
    ensure!(
        line.contains("failed") && line.contains("package chromium: no installation candidate"),
        "{out}"
    );
    Ok(())
}

#[test]
fn a_stale_device_does_not_count_until_max_age_allows_it() -> Result<()> {
    let bed = Bed::new()?;
    bed.device("pi3-a", "canary", &[]);
    let three_hours_ago = rfc3339(now() - 3 * 3600);
    bed.device(
        "pi3-quiet",
        "canary",
        &[("tend_last_run", &three_hours_ago)],
    );

    // Default max age: heartbeat (1 h) + timer interval (30 min).
    let out = bed.gate(&["--min-devices", "2"])?;
    expect(&out, FAILED, &["max age 90 min"])?;
    let line = row(&out, "pi3-quiet");
    ensure!(line.contains("stale") && line.contains("3 h ago"), "{out}");
    let out = bed.gate(&["--min-devices", "2", "--max-age", "4h"])?;
    expect(&out, 0, &["tend gate PASSED", "max age 4 h"])?;
    Ok(())
}

#[test]
fn too_few_devices_fail_the_gate() -> Result<()> {
    let bed = Bed::new()?;
    bed.device("pi3-only", "canary", &[]);
    let out = bed.gate(&["--min-devices", "2"])?;
    expect(
        &out,
        FAILED,
        &[
            "tend gate FAILED",
            "1 devices: 1 passed",
            "needed at least 2 passed",
        ],
    )?;
    // Nobody follows the branch: nothing proves it.
    bed.server.set_inventory("pi3-only", BTreeMap::new());
    let out = bed.gate(&[])?;
    expect(
        &out,
        FAILED,
        &["no device reports tend_branch=canary in Mender"],
    )?;
    Ok(())
}

#[test]
fn paging_reads_every_page_of_a_large_branch() -> Result<()> {
    let bed = Bed::new()?;
    for i in 0..250 {
        bed.device(&format!("pi3-{i:03}"), "canary", &[]);
    }
    for i in 0..30 {
        bed.device(&format!("pi2-{i:03}"), "production", &[]);
    }
    let out = bed.gate(&["--min-devices", "250"])?;
    expect(&out, 0, &["250 devices: 250 passed"])?;
    let pages: Vec<Value> = bed
        .server
        .searches()
        .iter()
        .map(|s| s["page"].clone())
        .collect();
    ensure!(
        pages == vec![json!(1), json!(2), json!(3)],
        "pages asked: {pages:?}"
    );

    // A failure on the last page is found.
    bed.device(
        "pi3-249",
        "canary",
        &[("tend_status", "error"), ("tend_error", "fetch: 503")],
    );
    let out = bed.gate(&["--min-devices", "1"])?;
    expect(&out, FAILED, &["249 passed, 1 failed"])?;
    ensure!(row(&out, "pi3-249").contains("fetch: 503"), "{out}");
    Ok(())
}

#[test]
fn a_bad_token_is_refused_with_the_fix() -> Result<()> {
    let bed = Bed::new()?;
    bed.device("pi3-a", "canary", &[]);

    let forged = MenderServer::start()?.personal_access_token("ci");
    for token in [forged.as_str(), "not-a-token"] {
        let out = bed.gate_with_token(Some(token), &[])?;
        ensure!(out.code() == Some(COULD_NOT_RUN), "{out}");
        ensure!(
            out.stderr.contains("HTTP 401") && out.stderr.contains("TEND_MENDER_TOKEN"),
            "{out}"
        );
    }
    // A revoked token stops working at once.
    bed.server.revoke("ci");
    let out = bed.gate(&[])?;
    ensure!(
        out.code() == Some(COULD_NOT_RUN) && out.stderr.contains("HTTP 401"),
        "{out}"
    );
    ensure!(
        bed.server.searches().is_empty(),
        "a refused token got answers"
    );

    let out = bed.gate_with_token(None, &[])?;
    ensure!(out.code() == Some(USAGE), "{out}");
    ensure!(out.stderr.contains("no Mender access token"), "{out}");
    Ok(())
}

#[test]
fn wait_polls_until_the_laggard_catches_up_and_stops_at_a_failure_on_the_head() -> Result<()> {
    let bed = Bed::new()?;
    bed.device("pi3-a", "canary", &[]);
    bed.device("pi3-late", "canary", &[("tend_commit", &bed.old)]);
    let started = Instant::now();
    let out = std::thread::scope(|s| {
        let gate =
            s.spawn(|| bed.gate(&["--min-devices", "2", "--wait", "60s", "--interval", "1s"]));
        std::thread::sleep(Duration::from_secs(3));
        bed.device("pi3-late", "canary", &[]);
        gate.join().expect("gate thread")
    })?;
    expect(&out, 0, &["tend gate PASSED", "2 devices: 2 passed"])?;
    ensure!(bed.server.searches().len() >= 2, "it did not poll:\n{out}");
    ensure!(out.stderr.contains("asking again in 1 s"), "{out}");
    ensure!(started.elapsed() < Duration::from_secs(30), "{out}");

    // A device that failed on the head's content: waiting cannot help.
    bed.device("pi3-a", "canary", &[("tend_status", "failed")]);
    let started = Instant::now();
    let out = bed.gate(&["--min-devices", "2", "--wait", "10m", "--interval", "1s"])?;
    expect(&out, FAILED, &["1 failed"])?;
    ensure!(
        started.elapsed() < Duration::from_secs(20),
        "it kept waiting:\n{out}"
    );
    Ok(())
}

/// `n` devices of wave `wave` on canary's head, the first `failed` of them failed there.
fn wave(bed: &Bed, wave: &str, n: usize, failed: usize) {
    for i in 0..n {
        let id = format!("pi-{}-{i:02}", wave.replace('/', "of"));
        if i < failed {
            bed.device(
                &id,
                "canary",
                &[
                    ("tend_wave", wave),
                    ("tend_status", "failed"),
                    ("tend_error", "service kiosk: failed to start"),
                ],
            );
        } else {
            bed.device(&id, "canary", &[("tend_wave", wave)]);
        }
    }
}

#[test]
fn wave_one_failures_above_the_threshold_halt_the_rollout() -> Result<()> {
    let bed = Bed::new()?;
    wave(&bed, "1/3", 20, 2);
    // Wave 2 has not applied the head yet: it still runs the old commit.
    let later = rfc3339(now() + 3600);
    for i in 0..5 {
        bed.device(
            &format!("pi-2of3-{i:02}"),
            "canary",
            &[
                ("tend_wave", "2/3"),
                ("tend_commit", &bed.old),
                ("tend_wave_applies_at", &later),
            ],
        );
    }
    let out = bed.gate(&["--rollout", "--max-failure-rate", "5%"])?;
    expect(
        &out,
        HALT,
        &[
            "wave 1 of 3: 20 took the head, 2 failed (10 %) > 5 %: halt (of 20 devices)",
            &format!(
                "wave 2 of 3: none took the head yet: continue (of 5 devices; next applies at {later})"
            ),
            &format!("overall: 20 took the head, 2 failed (10 %) > 5 %: halt (of 25 devices; next applies at {later})"),
            "tend gate --rollout HALT: branch canary at",
            "wave 1 of 3 passed --max-failure-rate 5 %",
            "git revert -m 1",
        ],
    )?;
    let line = row(&out, "pi-1of3-00");
    ensure!(
        line.contains("1/3") && line.contains("failed") && line.contains("kiosk: failed to start"),
        "{out}"
    );
    ensure!(
        row(&out, "pi-1of3-05").is_empty(),
        "good devices are not listed:\n{out}"
    );

    // The default threshold is 5 % too; the answer as JSON.
    let out = bed.gate(&["--rollout", "--json"])?;
    expect(&out, HALT, &[])?;
    let doc: Value = serde_json::from_str(&out.stdout)?;
    ensure!(
        doc["verdict"] == "halt" && doc["head"] == bed.head.as_str(),
        "{doc:#}"
    );
    ensure!(doc["max_failure_rate_percent"] == 5.0, "{doc:#}");
    let w1 = &doc["waves"][0];
    ensure!(
        w1["wave"] == "1/3"
            && w1["took_head"] == 20
            && w1["failed"] == 2
            && w1["failure_rate_percent"] == 10.0
            && w1["decision"] == "halt",
        "{doc:#}"
    );
    ensure!(
        doc["waves"][1]["decision"] == "not_judged"
            && doc["waves"][1]["applies_at"] == later.as_str(),
        "{doc:#}"
    );
    ensure!(
        doc["failures"].as_array().map(Vec::len) == Some(2),
        "{doc:#}"
    );

    // A wider threshold lets the same wave continue.
    let out = bed.gate(&["--rollout", "--max-failure-rate", "10%"])?;
    expect(
        &out,
        0,
        &[
            "wave 1 of 3: 20 took the head, 2 failed (10 %) <= 10 %: continue",
            "tend gate --rollout CONTINUE",
        ],
    )?;
    Ok(())
}

#[test]
fn failures_below_the_threshold_continue_the_rollout() -> Result<()> {
    let bed = Bed::new()?;
    wave(&bed, "1/10", 40, 1);
    wave(&bed, "2/10", 10, 0);
    let out = bed.gate(&["--rollout", "--max-failure-rate", "5%"])?;
    expect(
        &out,
        0,
        &[
            "wave 1 of 10: 40 took the head, 1 failed (2.5 %) <= 5 %: continue",
            "wave 2 of 10: 10 took the head, 0 failed (0 %) <= 5 %: continue",
            "overall: 50 took the head, 1 failed (2 %) <= 5 %: continue",
            "tend gate --rollout CONTINUE",
        ],
    )?;
    // 1 of 10 devices on the head is too few to judge with --min-devices 20: wave 2 continues,
    // and wave 1's 40 are still judged.
    wave(&bed, "2/10", 10, 1);
    let out = bed.gate(&["--rollout", "--min-devices", "20"])?;
    expect(
        &out,
        0,
        &["wave 2 of 10: 10 took the head, 1 failed (10 %); fewer than --min-devices 20, not judged: continue"],
    )?;
    let out = bed.gate(&["--rollout"])?;
    expect(
        &out,
        HALT,
        &["wave 2 of 10: 10 took the head, 1 failed (10 %) > 5 %: halt"],
    )?;
    Ok(())
}

#[test]
fn a_device_that_reverted_the_head_counts_as_a_failure() -> Result<()> {
    let bed = Bed::new()?;
    wave(&bed, "1/2", 10, 0);
    // After a revert the device reports the last good commit, and names the head it left.
    bed.device(
        "pi-reverted",
        "canary",
        &[
            ("tend_wave", "1/2"),
            ("tend_status", "reverted"),
            ("tend_commit", &bed.old),
            ("tend_reverted_commit", &bed.head),
            (
                "tend_revert_cause",
                "role web: health check 'web answers' failed",
            ),
        ],
    );
    let out = bed.gate(&["--rollout", "--max-failure-rate", "5%"])?;
    expect(
        &out,
        HALT,
        &["wave 1 of 2: 11 took the head, 1 failed (9.09 %) > 5 %: halt (of 11 devices; 1 reverted)"],
    )?;
    let line = row(&out, "pi-reverted");
    ensure!(
        line.contains("reverted") && line.contains("reverted the head: role web: health check"),
        "{out}"
    );
    // The search asked for the attributes a revert is read from.
    let asked = &bed.server.searches()[0]["attributes"];
    for a in ["tend_wave", "tend_wave_applies_at", "tend_reverted_commit"] {
        ensure!(
            asked
                .as_array()
                .is_some_and(|l| l.contains(&json!({"scope": "inventory", "attribute": a}))),
            "{a} not asked for: {asked}"
        );
    }
    // Without --rollout the promotion gate sees a device that is not on the head.
    let out = bed.gate(&["--min-devices", "1"])?;
    expect(&out, 0, &["10 passed, 0 failed, 1 not yet"])?;
    Ok(())
}

#[test]
fn devices_without_tend_wave_are_wave_1_of_1() -> Result<()> {
    let bed = Bed::new()?;
    bed.device("pi3-a", "canary", &[]);
    bed.device("pi3-b", "canary", &[("tend_commit", &bed.merge)]);
    bed.device("pi3-c", "canary", &[]);
    let out = bed.gate(&["--rollout"])?;
    expect(
        &out,
        0,
        &["wave 1 of 1: 3 took the head, 0 failed (0 %) <= 5 %: continue (of 3 devices)"],
    )?;
    ensure!(!out.stdout.contains("DEVICE"), "nothing to list:\n{out}");
    bed.device(
        "pi3-c",
        "canary",
        &[("tend_status", "error"), ("tend_error", "fetch: 503")],
    );
    let out = bed.gate(&["--rollout"])?;
    expect(
        &out,
        HALT,
        &["wave 1 of 1: 3 took the head, 1 failed (33.33 %) > 5 %: halt"],
    )?;
    ensure!(row(&out, "pi3-c").contains("1/1"), "{out}");
    Ok(())
}

#[test]
fn rollout_options_are_checked_before_asking() -> Result<()> {
    let bed = Bed::new()?;
    bed.device("pi3-a", "canary", &[]);
    for args in [
        &["--max-failure-rate", "5%"][..],
        &["--rollout", "--wait", "10m"][..],
        &["--rollout", "--max-failure-rate", "150%"][..],
        &["--rollout", "--max-failure-rate", "some"][..],
    ] {
        let out = bed.gate(args)?;
        ensure!(out.code() == Some(USAGE), "{args:?}: {out}");
    }
    ensure!(
        bed.server.searches().is_empty(),
        "a usage error asked Mender"
    );
    Ok(())
}
