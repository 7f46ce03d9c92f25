//! `tend plan BASE..HEAD` on a fleet repo's git history (issue 16), without a device or a chroot:
//! - the example fleet, a commit that sets one template var for one group: exactly the devices of
//!   that group change, in one line with the file's real line counts;
//! - a commit that breaks one device file: exactly one invalid device, at the file and line, in
//!   text, GitHub annotations and JSON;
//! - the Markdown is checked with a CommonMark parser (with GitHub's tables), not by eye;
//! - a generated fleet of 10,000 devices: every device in the right group.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use serde_json::Value;
use tend_tests::publisher::git;
use tend_tests::{copy_tree, run, tend_binary, Outcome};

const INVALID_REPO: i32 = 10;
/// The two Raspberry Pi 3 devices of the example (groups/pi3-arm64.yaml is their type's group).
const PI3: [&str; 2] = [
    "50a28c2e-3ee8-4559-a5b9-3ce47c881c5d",
    "f4580afc-7195-4c8b-b35a-e0248e6bd894",
];
const BROKEN: &str = "ed531b64-5108-4f1d-9879-f39f56054078";

fn tend(args: &[&str]) -> Result<Outcome> {
    let mut cmd = Command::new(tend_binary()?);
    cmd.args(args).env_clear().env("LC_ALL", "C.UTF-8");
    run::run(
        cmd,
        &format!("tend {}", args.join(" ")),
        Duration::from_secs(600),
    )
}

fn commit(dir: &Path, message: &str) -> Result<String> {
    git(dir, &["add", "-A"])?;
    git(
        dir,
        &["-c", "commit.gpgsign=false", "commit", "-q", "-m", message],
    )?;
    git(dir, &["rev-parse", "HEAD"])
}

/// The example fleet in a new repo, committed once: (dir, base commit).
fn example_repo(work: &Path) -> Result<(PathBuf, String)> {
    let dir = work.join("fleet");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet"),
        &dir,
    )?;
    git(&dir, &["init", "-q", "-b", "main"])?;
    let base = commit(&dir, "the example fleet")?;
    Ok((dir, base))
}

fn plan(dir: &Path, range: &str, format: &str) -> Result<Outcome> {
    tend(&[
        "plan",
        range,
        "--path",
        &dir.display().to_string(),
        "--format",
        format,
    ])
}

/// Sets `monitoring_host` in the pi3-arm64 group: the fluent-bit template of both Pi 3 changes.
fn set_group_var(dir: &Path) -> Result<()> {
    let path = dir.join("groups/pi3-arm64.yaml");
    let mut text = fs::read_to_string(&path)?;
    text.push_str("vars:\n  monitoring_host: logs2.example.org\n");
    Ok(fs::write(path, text)?)
}

/// Adds an unknown key to one device file; returns `devices/<id>.yaml:<line>`.
fn break_device(dir: &Path) -> Result<String> {
    let path = dir.join(format!("devices/{BROKEN}.yaml"));
    let mut text = fs::read_to_string(&path)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let line = text.lines().count() + 1;
    text.push_str("colour: red\n");
    fs::write(path, text)?;
    Ok(format!("devices/{BROKEN}.yaml:{line}"))
}

fn short(id: &str) -> &str {
    &id[..12]
}

#[test]
fn one_group_var_changes_exactly_that_groups_devices_in_one_line() -> Result<()> {
    let work = tempfile::tempdir()?;
    let (dir, base) = example_repo(work.path())?;
    set_group_var(&dir)?;
    let head = commit(&dir, "pi3: logs2")?;
    let out = plan(&dir, &format!("{base}..{head}"), "text")?;
    ensure!(out.code() == Some(0), "{out}");
    let want = format!(
        "tend plan {}..{}: 8 devices: 2 changed, 6 unchanged\n\
         2 devices: file /etc/fluent-bit/fluent-bit.conf +1 -1\n\
         6 devices: no change\n",
        short(&base),
        short(&head)
    );
    ensure!(out.stdout == want, "want:\n{want}\ngot:\n{out}");

    // A ref name works as well as an id, and JSON names the devices of each group.
    let out = plan(&dir, "main~0..main", "text")?;
    ensure!(
        out.code() == Some(1) && out.stderr.contains("`main~0` is not a commit of"),
        "{out}"
    );
    let out = plan(&dir, &format!("{base}..main"), "json")?;
    ensure!(out.code() == Some(0), "{out}");
    let doc: Value = serde_json::from_str(&out.stdout).context("plan --format json")?;
    ensure!(doc["schema"] == 1 && doc["head"] == head.as_str(), "{doc}");
    ensure!(
        doc["summary"]["changed"] == 2 && doc["summary"]["unchanged"] == 6,
        "{doc}"
    );
    let g = &doc["groups"][0];
    ensure!(
        g["outcome"] == "changed" && g["devices"] == serde_json::json!(PI3),
        "{g}"
    );
    let c = &g["changes"][0];
    ensure!(
        c["kind"] == "file"
            && c["id"] == "/etc/fluent-bit/fluent-bit.conf"
            && c["action"] == "modified"
            && c["lines"] == serde_json::json!([1, 1]),
        "{c}"
    );
    Ok(())
}

#[test]
fn a_broken_device_file_is_exactly_one_invalid_device_at_its_file_and_line() -> Result<()> {
    let work = tempfile::tempdir()?;
    let (dir, base) = example_repo(work.path())?;
    let location = break_device(&dir)?;
    let head = commit(&dir, "a typo")?;
    let range = format!("{base}..{head}");
    let out = plan(&dir, &range, "text")?;
    ensure!(out.code() == Some(INVALID_REPO), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        lines[0].ends_with(": 8 devices: 1 invalid, 7 unchanged"),
        "{out}"
    );
    let invalid: Vec<&&str> = lines.iter().filter(|l| l.contains("invalid (")).collect();
    ensure!(
        invalid.len() == 1
            && invalid[0].starts_with(&format!(
                "1 device: invalid ({location}: unknown field `colour`"
            )),
        "{out}"
    );
    ensure!(
        out.stdout.contains(&format!(
            "could not render at HEAD:\n  {BROKEN}: {location}: unknown field `colour`"
        )),
        "{out}"
    );
    ensure!(out.stdout.contains("7 devices: no change\n"), "{out}");

    let out = plan(&dir, &range, "github")?;
    ensure!(out.code() == Some(INVALID_REPO), "{out}");
    let (file, line) = location.rsplit_once(':').unwrap_or_default();
    let wanted = format!(
        "::error file={}/{file},line={line},title=tend plan::unknown field `colour`",
        dir.display()
    );
    let annotations: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("::error"))
        .collect();
    ensure!(
        annotations.len() == 1 && annotations[0].starts_with(&wanted),
        "want {wanted}\n{out}"
    );

    let out = plan(&dir, &range, "json")?;
    let doc: Value = serde_json::from_str(&out.stdout)?;
    ensure!(doc["summary"]["invalid"] == 1, "{doc}");
    let g = doc["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["outcome"] == "invalid"))
        .context("an invalid group")?;
    ensure!(
        g["devices"] == serde_json::json!([BROKEN])
            && g["errors"][0]["file"] == format!("devices/{BROKEN}.yaml")
            && g["errors"][0]["line"].as_u64().map(|l| l.to_string()) == Some(line.to_string()),
        "{g}"
    );
    Ok(())
}

/// The text of every table cell, row by row, and of every list item.
fn markdown_structure(text: &str) -> (Vec<Vec<String>>, Vec<String>) {
    let (mut rows, mut items) = (Vec::new(), Vec::new());
    let (mut row, mut buf): (Vec<String>, String) = (Vec::new(), String::new());
    let (mut in_cell, mut in_item) = (false, false);
    for e in Parser::new_ext(text, Options::ENABLE_TABLES) {
        match e {
            Event::Start(Tag::TableCell) => {
                in_cell = true;
                buf.clear();
            }
            Event::End(TagEnd::TableCell) => {
                in_cell = false;
                row.push(buf.clone());
            }
            Event::End(TagEnd::TableHead) | Event::End(TagEnd::TableRow) => {
                rows.push(std::mem::take(&mut row));
            }
            Event::Start(Tag::Item) => {
                in_item = true;
                buf.clear();
            }
            Event::End(TagEnd::Item) => {
                in_item = false;
                items.push(buf.clone());
            }
            Event::Text(t) | Event::Code(t) if in_cell || in_item => buf.push_str(&t),
            Event::InlineHtml(h) if in_cell && &*h == "<br>" => buf.push('\n'),
            _ => {}
        }
    }
    (rows, items)
}

#[test]
fn the_markdown_comment_parses_to_a_table_of_groups_and_a_list_of_invalid_devices() -> Result<()> {
    let work = tempfile::tempdir()?;
    let (dir, base) = example_repo(work.path())?;
    set_group_var(&dir)?;
    let location = break_device(&dir)?;
    let head = commit(&dir, "logs2, and a typo")?;
    let out = plan(&dir, &format!("{base}..{head}"), "markdown")?;
    ensure!(out.code() == Some(INVALID_REPO), "{out}");
    let (rows, items) = markdown_structure(&out.stdout);
    ensure!(rows.len() == 4, "{rows:?}\n{out}");
    ensure!(rows[0] == ["devices", "what changes"], "{rows:?}");
    ensure!(
        rows[1] == ["2", "file /etc/fluent-bit/fluent-bit.conf +1 -1"],
        "{rows:?}"
    );
    ensure!(
        rows[2][0] == "1"
            && rows[2][1].starts_with(&format!("invalid ({location}: unknown field `colour`")),
        "{rows:?}"
    );
    ensure!(rows[3] == ["5", "no change"], "{rows:?}");
    ensure!(
        items.len() == 1 && items[0].starts_with(&format!("{BROKEN}: {location}: ")),
        "{items:?}\n{out}"
    );
    Ok(())
}

/// A fleet of `n` devices: one role writing /etc/app.conf from a template; devices below `split`
/// in group a, the others in group b. The role has a default for the group's var, so that a device
/// file that does not load (and so names no group) fails for that reason only.
fn generated_fleet(dir: &Path, n: usize, split: usize) -> Result<()> {
    fs::create_dir_all(dir.join("roles/app/templates"))?;
    fs::create_dir_all(dir.join("groups"))?;
    fs::create_dir_all(dir.join("devices"))?;
    fs::write(dir.join("fleet.yaml"), "format: 1\nroles: [app]\n")?;
    fs::write(
        dir.join("roles/app/role.yaml"),
        "defaults:\n  greeting: hey\nresources:\n  - file: /etc/app.conf\n    template: app.conf.j2\n",
    )?;
    fs::write(
        dir.join("roles/app/templates/app.conf.j2"),
        "# app\ngreeting={{ greeting }}\ndevice={{ facts.device_id }}\n",
    )?;
    fs::write(dir.join("groups/a.yaml"), "vars:\n  greeting: hello\n")?;
    fs::write(dir.join("groups/b.yaml"), "vars:\n  greeting: hi\n")?;
    for i in 0..n {
        device(dir, i, if i < split { "a" } else { "b" })?;
    }
    Ok(())
}

fn device(dir: &Path, i: usize, group: &str) -> Result<()> {
    Ok(fs::write(
        dir.join(format!("devices/dev-{i:05}.yaml")),
        format!("groups: [{group}]\n"),
    )?)
}

#[test]
fn a_10000_device_fleet_puts_every_device_in_its_group() -> Result<()> {
    let work = tempfile::tempdir()?;
    let dir = work.path().join("fleet");
    generated_fleet(&dir, 10_000, 6_000)?;
    git(&dir, &["init", "-q", "-b", "main"])?;
    let base = commit(&dir, "10,000 devices")?;
    fs::write(
        dir.join("groups/a.yaml"),
        "vars:\n  greeting: good morning\n",
    )?;
    fs::write(
        dir.join("devices/dev-09999.yaml"),
        "groups: [b]\ncolour: red\n",
    )?;
    fs::remove_file(dir.join("devices/dev-00000.yaml"))?;
    fs::remove_file(dir.join("devices/dev-00001.yaml"))?;
    for i in 10_000..10_003 {
        device(&dir, i, "b")?;
    }
    let head = commit(&dir, "group a says good morning")?;
    let out = plan(&dir, &format!("{base}..{head}"), "text")?;
    ensure!(out.code() == Some(INVALID_REPO), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let want_head = [
        format!(
            "tend plan {}..{}: 10003 devices: 5998 changed, 1 invalid, 3 new, 2 removed, 3999 unchanged",
            short(&base),
            short(&head)
        ),
        "5998 devices: file /etc/app.conf +1 -1".to_string(),
        "3 devices: new".to_string(),
        "2 devices: removed".to_string(),
    ];
    ensure!(lines.len() == 8, "{out}");
    ensure!(lines[..4] == want_head, "{:?}\n{out}", &lines[..4]);
    ensure!(
        lines[4].starts_with("1 device: invalid (devices/dev-09999.yaml:2: unknown field `colour`"),
        "{out}"
    );
    ensure!(lines[5] == "3999 devices: no change", "{out}");
    ensure!(lines[6] == "could not render at HEAD:", "{out}");
    ensure!(
        lines[7].starts_with("  dev-09999: devices/dev-09999.yaml:2: "),
        "{out}"
    );

    let out = plan(&dir, &format!("{base}..{head}"), "json")?;
    let doc: Value = serde_json::from_str(&out.stdout)?;
    let changed = &doc["groups"][0]["devices"];
    ensure!(
        changed.as_array().map(Vec::len) == Some(5998)
            && changed[0] == "dev-00002"
            && changed[5997] == "dev-05999",
        "{}",
        doc["groups"][0]["count"]
    );
    ensure!(
        doc["groups"][1]["devices"] == serde_json::json!(["dev-10000", "dev-10001", "dev-10002"]),
        "{}",
        doc["groups"][1]
    );
    Ok(())
}
