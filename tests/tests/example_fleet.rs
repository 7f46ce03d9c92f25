//! The sample fleet of the seeds, `examples/fleet/` (issue 8):
//! - `tend validate` accepts it, and every device follows the stage the seeds give it;
//! - broken variants of it (the mistakes a fleet engineer makes in it) fail `tend validate` at the
//!   right file and line, each on its own and all at once;
//! - it converges a Pi 3 kiosk in an arm64 chroot and the Pi 2 in an armhf chroot (root, qemu).
//!
//! The devices have no Debian mirror and no internet, so local apt repositories stand in for
//! Debian (the kiosk's browser stack) and for Fluent Bit's repository, with packages of the same
//! names (see `stand_ins` and docs/fleet-workflow.md). The test adds a group `test-bed` that
//! points the monitoring role at the stand-in repository; nothing else of the example changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tend_tests::deb::DebSpec;
use tend_tests::{
    copy_tree, run, skip_chroot_tests, tend_binary, AptRepo, Arch, Device, Outcome, Suite,
};

const INVALID_REPO: i32 = 10;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet")
}

fn tend(args: &[&str]) -> Result<Outcome> {
    let mut cmd = Command::new(tend_binary()?);
    cmd.args(args).env_clear().env("LC_ALL", "C.UTF-8");
    run::run(
        cmd,
        &format!("tend {}", args.join(" ")),
        Duration::from_secs(60),
    )
}

/// The seeds' devices: id, stage (branch), groups besides the device-type group.
const SEEDS: &[(&str, &str, &str, &[&str])] = &[
    (
        "①",
        "048312b5-0456-47a7-9e83-b636f4c0a689",
        "production",
        &[],
    ),
    (
        "②",
        "5ef8c955-4f87-4243-adcd-160f70c3c45e",
        "production",
        &["hotspot"],
    ),
    (
        "③",
        "50a28c2e-3ee8-4559-a5b9-3ce47c881c5d",
        "production",
        &["kiosk"],
    ),
    (
        "④",
        "f4580afc-7195-4c8b-b35a-e0248e6bd894",
        "canary",
        &["kiosk"],
    ),
    ("⑤", "ed531b64-5108-4f1d-9879-f39f56054078", "main", &[]),
    (
        "⑥",
        "b8b311de-000e-4914-9a13-1d7e2e23bc5d",
        "production",
        &["ci-runner"],
    ),
    (
        "⑦",
        "3fb4632b-96b9-475d-ac89-02255bd15b6f",
        "main",
        &["kiosk"],
    ),
];
const PI2: &str = "048312b5-0456-47a7-9e83-b636f4c0a689";
const PI3_CANARY: &str = "f4580afc-7195-4c8b-b35a-e0248e6bd894";

#[test]
fn the_example_fleet_validates_and_follows_the_seeds_stages() -> Result<()> {
    let dir = example();
    let dir_s = dir.display().to_string();
    let out = tend(&["validate", &dir_s, "--format", "json"])?;
    ensure!(out.code() == Some(0), "{out}");
    let doc: Value = serde_json::from_str(&out.stdout)?;
    // Seven devices, the demo device, and a device without a file.
    ensure!(doc["ok"] == true && doc["devices"] == 9, "{doc:#}");

    for (n, id, branch, groups) in SEEDS {
        let out = tend(&["render", "--device", id, &dir_s])?;
        ensure!(out.code() == Some(0), "{n}: {out}");
        let r: Value = serde_json::from_str(&out.stdout)?;
        ensure!(
            r["subscribed_branch"] == *branch,
            "{n} {id}: {}",
            r["subscribed_branch"]
        );
        let got: Vec<&str> = r["groups"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // The device-type group comes first; every real device has one (and so monitoring).
        ensure!(
            got.len() == groups.len() + 1 && got[1..] == **groups,
            "{n}: {got:?}"
        );
        let roles: Vec<&str> = r["roles"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
            .unwrap_or_default();
        ensure!(
            roles.contains(&"base") && roles.contains(&"monitoring"),
            "{n}: {roles:?}"
        );
    }
    // The runner's token is a secret: validate renders a placeholder, never a value.
    let out = tend(&["render", "--device", SEEDS[5].1, &dir_s])?;
    ensure!(out.stdout.contains("--token <redacted>"), "{out}");
    Ok(())
}

/// One mistake in the example, and where `tend validate` must point.
struct Variant {
    name: &'static str,
    file: &'static str,
    find: &'static str,
    replace: &'static str,
    /// The file the error is in (default: `file`), and text whose first line is the error's line.
    at_file: Option<&'static str>,
    anchor: &'static str,
    message: &'static str,
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "registration command without its guard",
        file: "roles/github-runner/role.yaml",
        find: "    creates: \"{{ runner_dir }}/.runner\"\n",
        replace: "",
        at_file: None,
        anchor: "  - command: >-\n      runuser -u {{ runner_user }} -- ./config.sh",
        message: "an unguarded command is not idempotent",
    },
    Variant {
        name: "Fluent Bit keyring that is not in the role",
        file: "roles/monitoring/role.yaml",
        find: "  fluentbit_apt_key: fluentbit.asc",
        replace: "  fluentbit_apt_key: fluentbit.gpg",
        at_file: None,
        anchor: "    key: \"{{ fluentbit_apt_key }}\"",
        message: "roles/monitoring/files/fluentbit.gpg does not exist",
    },
    Variant {
        name: "kiosk device in a group that does not exist",
        file: "devices/50a28c2e-3ee8-4559-a5b9-3ce47c881c5d.yaml",
        find: "groups: [kiosk]",
        replace: "groups: [kisok]",
        at_file: None,
        anchor: "groups: [kisok]",
        message: "group 'kisok' does not exist",
    },
    Variant {
        name: "kiosk template with a misspelt var",
        file: "roles/kiosk/templates/kiosk.sh.j2",
        find: "'{{ kiosk_url }}'",
        replace: "'{{ kiosk_ur }}'",
        at_file: None,
        anchor: "{{ kiosk_ur }}",
        message: "`kiosk_ur` is undefined",
    },
    Variant {
        name: "hostapd with a state that does not exist",
        file: "roles/hotspot/role.yaml",
        find: "    enabled: true\n    state: started\n    when: hotspot_psk is defined",
        replace: "    enabled: true\n    state: running\n    when: hotspot_psk is defined",
        at_file: None,
        anchor: "    state: running",
        message: "unknown variant `running`",
    },
    Variant {
        name: "misspelt user key",
        file: "roles/kiosk/role.yaml",
        find: "    create_home: true",
        replace: "    create_hom: true",
        at_file: None,
        anchor: "    create_hom: true",
        message: "unknown field `create_hom`",
    },
    Variant {
        name: "dev board moved to two branches at once",
        file: "devices/ed531b64-5108-4f1d-9879-f39f56054078.yaml",
        find: "subscribed_branch: main\n",
        replace: "subscribed_branch: main\nsubscribed_branch: canary\n",
        at_file: None,
        anchor: "subscribed_branch: canary",
        message: "duplicate mapping key: subscribed_branch",
    },
    Variant {
        name: "notify of a handler that is misspelt",
        file: "roles/monitoring/role.yaml",
        find: "  - package: [fluent-bit]\n",
        replace: "  - package: [fluent-bit]\n    notify: restart fluentbit\n",
        at_file: None,
        anchor: "    notify: restart fluentbit",
        message: "notifies handler 'restart fluentbit', which no role declares",
    },
    Variant {
        name: "a mis-indented line in the Pi 2's facts",
        file: "facts/pi2-armhf.yaml",
        find: "os_codename: bookworm\n",
        replace: "os_codename: bookworm\n  os_version_id: \"12\"\n",
        at_file: None,
        anchor: "  os_version_id",
        message: "mapping values are not allowed",
    },
];

/// Applies `v` to the fleet in `dir`; returns the expected `path:line`.
fn apply_variant(dir: &Path, v: &Variant) -> Result<String> {
    let path = dir.join(v.file);
    let text = fs::read_to_string(&path)?;
    ensure!(
        text.matches(v.find).count() == 1,
        "{}: `{}` is not in {} exactly once; update the variant with the example",
        v.name,
        v.find,
        v.file
    );
    fs::write(&path, text.replacen(v.find, v.replace, 1))?;
    let at = v.at_file.unwrap_or(v.file);
    let edited = fs::read_to_string(dir.join(at))?;
    let offset = edited
        .find(v.anchor)
        .with_context(|| format!("{}: anchor not in {at}", v.name))?;
    let line = edited[..offset].matches('\n').count() + 1;
    Ok(format!("{at}:{line}"))
}

fn copy_example(into: &Path) -> Result<PathBuf> {
    let dir = into.join("fleet");
    copy_tree(&example(), &dir)?;
    Ok(dir)
}

#[test]
fn broken_variants_of_the_example_fail_validate_at_file_and_line() -> Result<()> {
    let mut failures = Vec::new();
    for v in VARIANTS {
        let work = tempfile::tempdir()?;
        let dir = copy_example(work.path())?;
        let location = apply_variant(&dir, v)?;
        let out = tend(&["validate", &dir.display().to_string()])?;
        let hit = out.stdout.lines().any(|l| {
            l.strip_prefix(&location)
                .is_some_and(|rest| rest.starts_with(": ") && rest.contains(v.message))
        });
        if out.code() != Some(INVALID_REPO) || !hit {
            failures.push(format!(
                "{}: expected `{location}: …{}…`\n{out}",
                v.name, v.message
            ));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

#[test]
fn all_mistakes_at_once_are_all_reported_and_annotated_for_github() -> Result<()> {
    let work = tempfile::tempdir()?;
    let dir = copy_example(work.path())?;
    let locations: Vec<String> = VARIANTS
        .iter()
        .map(|v| apply_variant(&dir, v))
        .collect::<Result<_>>()?;
    let dir_s = dir.display().to_string();
    let out = tend(&["validate", &dir_s])?;
    ensure!(out.code() == Some(INVALID_REPO), "{out}");
    for l in &locations {
        ensure!(
            out.stdout.contains(&format!("{l}: ")),
            "`{l}` missing:\n{out}"
        );
    }
    let out = tend(&["validate", &dir_s, "--format", "github"])?;
    ensure!(out.code() == Some(INVALID_REPO), "{out}");
    for l in &locations {
        let (file, line) = l.rsplit_once(':').unwrap_or((l, ""));
        let wanted = format!("::error file={dir_s}/{file},line={line},");
        ensure!(out.stdout.contains(&wanted), "`{wanted}` missing:\n{out}");
    }
    Ok(())
}

// --- Converging real devices (root, chroots, qemu for arm) ---------------------------------------

/// Stand-ins, with the real packages' names and the files the roles rely on: a binary (a shell
/// script that says it is a stand-in) and, for fluent-bit, its systemd unit.
fn stand_ins() -> (Vec<DebSpec>, Vec<DebSpec>) {
    let tool = |name: &str, bin: &str| {
        DebSpec::new(name, "1.0-1").file(
            bin,
            &format!("#!/bin/sh\necho '{name}: tend test stand-in'\n"),
            0o755,
        )
    };
    let debian = vec![
        tool("xserver-xorg-core", "/usr/lib/xorg/Xorg"),
        tool(
            "xserver-xorg-input-libinput",
            "/usr/share/doc/xserver-xorg-input-libinput/stand-in",
        ),
        tool("xinit", "/usr/bin/xinit"),
        tool("openbox", "/usr/bin/openbox"),
        tool("chromium", "/usr/bin/chromium"),
        tool("unclutter", "/usr/bin/unclutter"),
    ];
    let fluent_bit = vec![tool("fluent-bit", "/opt/fluent-bit/bin/fluent-bit").file(
        "/usr/lib/systemd/system/fluent-bit.service",
        "[Unit]\nDescription=Fluent Bit (tend test stand-in)\n\n[Service]\n\
         ExecStart=/opt/fluent-bit/bin/fluent-bit -c /etc/fluent-bit/fluent-bit.conf\n\n\
         [Install]\nWantedBy=multi-user.target\n",
        0o644,
    )];
    (debian, fluent_bit)
}

struct Converge<'a> {
    arch: Arch,
    id: &'a str,
    device_type: &'a str,
}

/// The device file of `id`, in the test-bed group too (highest precedence of its groups).
fn join_test_bed(fleet: &Path, id: &str) -> Result<()> {
    let path = fleet.join(format!("devices/{id}.yaml"));
    let text = fs::read_to_string(&path)?;
    let text = if text.contains("groups: [") {
        text.replacen("groups: [", "groups: [test-bed, ", 1)
            .replace(", ]", "]")
    } else {
        format!("{text}groups: [test-bed]\n")
    };
    Ok(fs::write(path, text)?)
}

fn converge(c: Converge) -> Result<Device> {
    let started = Instant::now();
    let (debian, fluent_bit) = stand_ins();
    let debian = AptRepo::with_packages(&debian)?;
    let fluent = AptRepo::with_packages(&fluent_bit)?;
    let dev = Device::new(Suite::Bookworm, c.arch)?;
    // The image's Debian mirror, played by the first repository, with its lists fetched, as an
    // image builder leaves them.
    dev.use_apt_repo(&debian)?;
    dev.run_ok(&["apt-get", "update", "-qq"])?;
    dev.write(
        "/etc/tend/tend.yaml",
        format!("device:\n  id: {}\n  type: {}\n", c.id, c.device_type),
    )?;
    let fleet = dev.path("/srv/fleet")?;
    copy_tree(&example(), &fleet)?;
    fs::write(
        fleet.join("roles/monitoring/files/test-bed.asc"),
        fluent.key_armored()?,
    )?;
    fs::write(
        fleet.join("groups/test-bed.yaml"),
        format!(
            "# Added by tests/tests/example_fleet.rs: Fluent Bit's repository is a local stand-in.\n\
             vars:\n  fluentbit_apt_uri: {}\n  fluentbit_apt_suite: {}\n  fluentbit_apt_key: test-bed.asc\n",
            fluent.url(),
            tend_tests::aptrepo::SUITE
        ),
    )?;
    join_test_bed(&fleet, c.id)?;

    let bin = tend_binary()?;
    let fleet_s = fleet.display().to_string();
    let first = dev.tend_outside(&bin, &["apply", "--path", &fleet_s])?;
    ensure!(first.code() == Some(2), "first converge:\n{first}");
    let second = dev.tend_outside(&bin, &["apply", "--path", &fleet_s])?;
    ensure!(
        second.code() == Some(0),
        "second converge changed something:\n{second}"
    );
    let report = dev.report()?;
    ensure!(
        report["counts"]["changed"] == 0 && report["counts"]["failed"] == 0,
        "{report:#}"
    );

    // What every device of the fleet gets: base, and monitoring from its own repository.
    ensure!(dev.read_string("/etc/fleet/device-id")?.trim() == c.id);
    let sources = dev.read_string("/etc/apt/sources.list.d/fluent-bit.sources")?;
    ensure!(
        sources.contains(&fluent.url()) && sources.contains("/etc/apt/keyrings/fluent-bit.asc"),
        "{sources}"
    );
    let conf = dev.read_string("/etc/fluent-bit/fluent-bit.conf")?;
    ensure!(
        conf.contains(&format!("record       device_id {}", c.id)),
        "{conf}"
    );
    installed(&dev, "fluent-bit")?;
    ensure!(dev.exists("/etc/systemd/system/multi-user.target.wants/fluent-bit.service"));
    let arch = dev.run_ok(&["dpkg", "--print-architecture"])?;
    ensure!(arch.stdout.trim() == c.arch.name(), "{arch}");
    eprintln!(
        "example fleet converged {} ({}) in {:.0?}",
        c.id,
        c.arch.name(),
        started.elapsed()
    );
    Ok(dev)
}

fn installed(dev: &Device, package: &str) -> Result<()> {
    let s = dev.run_ok(&["dpkg-query", "-W", "-f=${Status}", package])?;
    ensure!(s.stdout == "install ok installed", "{package}: {s}");
    Ok(())
}

#[test]
fn the_example_converges_the_canary_pi3_kiosk_on_arm64() -> Result<()> {
    if skip_chroot_tests("the_example_converges_the_canary_pi3_kiosk_on_arm64") {
        return Ok(());
    }
    let dev = converge(Converge {
        arch: Arch::Arm64,
        id: PI3_CANARY,
        device_type: "pi3-arm64",
    })?;
    for p in [
        "xserver-xorg-core",
        "xinit",
        "openbox",
        "chromium",
        "unclutter",
    ] {
        installed(&dev, p)?;
    }
    let passwd = dev.read_string("/etc/passwd")?;
    ensure!(
        passwd.lines().any(|l| l.starts_with("kiosk:")),
        "no kiosk user"
    );
    let script = dev.read_string("/home/kiosk/kiosk.sh")?;
    ensure!(script.contains("'https://example.org/campus'"), "{script}");
    ensure!(dev.exists("/etc/systemd/system/multi-user.target.wants/kiosk.service"));
    ensure!(dev.read_string("/etc/fleet/site")? == "campus\n");
    Ok(())
}

#[test]
fn the_example_converges_the_legacy_pi2_on_armhf() -> Result<()> {
    if skip_chroot_tests("the_example_converges_the_legacy_pi2_on_armhf") {
        return Ok(());
    }
    let dev = converge(Converge {
        arch: Arch::Armhf,
        id: PI2,
        device_type: "pi2-armhf",
    })?;
    ensure!(dev.read_string("/etc/fleet/site")? == "hq-server-room\n");
    // A monitoring-only device: no kiosk.
    ensure!(!dev.exists("/etc/systemd/system/kiosk.service"));
    Ok(())
}

/// scripts/demo and the package suite converge the demo device of the example on a device with no
/// mirror at all: the example must keep that working.
#[test]
fn the_demo_device_converges_without_any_mirror() -> Result<()> {
    if skip_chroot_tests("the_demo_device_converges_without_any_mirror") {
        return Ok(());
    }
    let dev = Device::bookworm()?;
    let fleet = dev.path("/srv/fleet")?;
    copy_tree(&example(), &fleet)?;
    let bin = tend_binary()?;
    let fleet_s = fleet.display().to_string();
    let args = ["apply", "--path", &fleet_s, "--device", "demo-device"];
    let first = dev.tend_outside(&bin, &args)?;
    ensure!(first.code() == Some(2), "{first}");
    let second = dev.tend_outside(&bin, &args)?;
    ensure!(second.code() == Some(0), "{second}");
    ensure!(dev.read_string("/etc/fleet/site")? == "lab-1\n");
    ensure!(dev.exists("/etc/systemd/system/multi-user.target.wants/kiosk.service"));
    Ok(())
}
