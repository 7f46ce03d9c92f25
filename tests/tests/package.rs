//! Issue #5's acceptance, on each architecture's own Debian userland: the .deb that
//! `scripts/build-debs` made installs with dpkg in a bookworm chroot of its architecture (arm64 and
//! armhf through qemu-user), runs, converges examples/fleet (the second run changes nothing) and
//! enables its timer. An upgrade keeps the admin's /etc/tend/tend.yaml, also when tend upgrades
//! itself from inside a running tend.service, which the package must then neither stop nor
//! restart. Purge removes the state. Beside that: the static armhf binary resolves names with a
//! Raspberry Pi's nsswitch.conf, the state can live on a Mender-style /data partition across a
//! root filesystem update, and the conffile, the man page and Cross.toml keep up with the binary
//! and cross-targets.toml.
//!
//! The packages are not built here (three release cross builds take minutes): like the tend
//! binary (`tend_binary`), they must exist, and be built from the current sources, before the
//! suite runs; `scripts/build-debs` makes them and says whether they are current.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tend_tests::cache::log_timing;
use tend_tests::gitserver::{FleetRepo, HttpsGitServer, TestCa};
use tend_tests::run::{run, run_ok};
use tend_tests::{copy_tree, mounts, skip_chroot_tests, tend_binary, Arch, Device, Outcome, Suite};

const FLEET: &str = "/srv/fleet";
const DEVICE_ID: &str = "demo-device";
const CONFFILE: &str = "/etc/tend/tend.yaml";
const TIMER_LINK: &str = "/etc/systemd/system/timers.target.wants/tend.timer";
/// The version a rebuilt package is given for the upgrade.
const UPGRADE_VERSION: &str = "0.1.0+up1";
const SYSTEMCTL_LOG: &str = "/var/log/systemctl-calls.log";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn built_deb(arch: Arch) -> Result<PathBuf> {
    tend_tests::built_deb(arch.name())
}

fn host(argv: &[&str]) -> Result<Outcome> {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    run_ok(cmd, &argv.join(" "), Duration::from_secs(300))
}

fn dpkg_version(dev: &Device, pkg: &str) -> Result<Option<String>> {
    let out = dev.run(&["dpkg-query", "-W", "-f=${Status} ${Version}", pkg])?;
    Ok(out
        .stdout
        .trim()
        .strip_prefix("install ok installed ")
        .map(str::to_string))
}

/// A bookworm device of `arch` with the package installed by `dpkg -i`.
fn device_with_tend(arch: Arch, deb: &Path) -> Result<Device> {
    let dev = Device::new(Suite::Bookworm, arch)?;
    dev.install_tend_deb(deb)?;
    Ok(dev)
}

fn apply(dev: &Device) -> Result<Outcome> {
    dev.tend(&["apply", "--path", FLEET, "--device", DEVICE_ID])
}

#[test]
fn amd64_package_installs_converges_upgrades_itself_and_purges() -> Result<()> {
    if skip_chroot_tests("amd64_package_installs_converges_upgrades_itself_and_purges") {
        return Ok(());
    }
    package_lifecycle(Arch::Amd64)
}

#[test]
fn arm64_package_installs_converges_upgrades_itself_and_purges() -> Result<()> {
    if skip_chroot_tests("arm64_package_installs_converges_upgrades_itself_and_purges") {
        return Ok(());
    }
    package_lifecycle(Arch::Arm64)
}

#[test]
fn armhf_package_installs_converges_upgrades_itself_and_purges() -> Result<()> {
    if skip_chroot_tests("armhf_package_installs_converges_upgrades_itself_and_purges") {
        return Ok(());
    }
    package_lifecycle(Arch::Armhf)
}

fn package_lifecycle(arch: Arch) -> Result<()> {
    let started = Instant::now();
    let deb = built_deb(arch)?;
    let dev = device_with_tend(arch, &deb)?;
    installed_as_packaged(&dev)?;

    copy_tree(&workspace().join("examples/fleet"), &dev.path(FLEET)?)?;
    let first = apply(&dev)?;
    first.expect_code(2)?;
    ensure!(dev.read_string("/etc/fleet/site")? == "lab-1\n", "{first}");
    let second = apply(&dev)?;
    second.expect_code(0)?;
    let report = dev.report()?;
    ensure!(report["counts"]["changed"] == 0, "{report:#}");
    let inventory = dev.run_ok(&["/usr/share/mender/inventory/mender-inventory-tend"])?;
    ensure!(
        inventory.stdout.lines().any(|l| l == "tend_status=ok"),
        "{inventory}"
    );

    // The admin's edit survives reinstalling the same version (dpkg's upgrade path).
    let mut edited = dev.read_string(CONFFILE)?;
    edited.push_str("report:\n  history: 5\n");
    dev.write(CONFFILE, &edited)?;
    dev.run_ok(&["dpkg", "-i", "/tmp/tend.deb"])?;
    ensure!(
        dev.read_string(CONFFILE)? == edited,
        "reinstall replaced the edited conffile"
    );
    ensure!(dev
        .root()
        .join(TIMER_LINK.trim_start_matches('/'))
        .is_symlink());

    upgrades_itself(&dev, arch, &deb, &edited)?;
    purge_removes_everything(&dev)?;
    log_timing(
        &format!("package lifecycle ({})", arch.name()),
        started.elapsed(),
    );
    Ok(())
}

/// What `dpkg -i` must have left: the binary runs, the timer is enabled (and the service is not:
/// it is static, started by the timer), the conffile is one, tend accepts it as shipped, and the
/// units pass `systemd-analyze verify`.
fn installed_as_packaged(dev: &Device) -> Result<()> {
    let version = dev.tend(&["--version"])?.ok()?;
    ensure!(
        version.stdout.starts_with("tend 0.1.0"),
        "{}",
        version.stdout
    );
    let link = dev.root().join(TIMER_LINK.trim_start_matches('/'));
    ensure!(link.is_symlink(), "tend.timer is not enabled");
    ensure!(fs::read_link(&link)? == Path::new("/lib/systemd/system/tend.timer"));
    let service = dev.run(&["systemctl", "is-enabled", "tend.service"])?;
    ensure!(service.stdout.trim() == "static", "{service}");
    let conffiles = dev.run_ok(&["dpkg-query", "-W", "-f=${Conffiles}", "tend"])?;
    ensure!(conffiles.stdout.contains(CONFFILE), "{conffiles}");
    let status = dev.tend(&["status"])?;
    status.expect_code(0)?;
    for path in [
        "/usr/share/man/man8/tend.8.gz",
        "/usr/lib/tmpfiles.d/tend.conf",
        "/usr/share/mender/inventory/mender-inventory-tend",
        "/usr/share/doc/tend/copyright",
    ] {
        ensure!(dev.exists(path), "{path} is not installed");
    }
    ensure!(dev.path("/usr/lib/tend")?.is_dir());
    // The chroots have no man(1): the manual page is checked by lintian when it is built.
    let verify = dev.run(&[
        "systemd-analyze",
        "verify",
        "--man=no",
        "/lib/systemd/system/tend.service",
        "/lib/systemd/system/tend.timer",
    ])?;
    ensure!(
        verify.success() && !verify.stderr.contains("tend"),
        "{verify}"
    );
    Ok(())
}

/// A copy of `deb` at [`UPGRADE_VERSION`], whose default conffile also changed.
fn rebuilt_at_upgrade_version(deb: &Path, out: &Path) -> Result<PathBuf> {
    let tree = out.join("tree");
    let tree_s = tree.to_string_lossy().into_owned();
    host(&["dpkg-deb", "-R", &deb.to_string_lossy(), &tree_s])?;
    let control = tree.join("DEBIAN/control");
    let text = fs::read_to_string(&control)?;
    let version_line = text
        .lines()
        .find(|l| l.starts_with("Version: "))
        .context("no Version in control")?;
    fs::write(
        &control,
        text.replace(version_line, &format!("Version: {UPGRADE_VERSION}")),
    )?;
    let conffile = tree.join(CONFFILE.trim_start_matches('/'));
    let mut shipped = fs::read_to_string(&conffile)?;
    shipped.push_str(&format!("# shipped by {UPGRADE_VERSION}\n"));
    fs::write(&conffile, shipped)?;
    let rebuilt = out.join(format!("tend_{UPGRADE_VERSION}.deb"));
    host(&[
        "dpkg-deb",
        "--root-owner-group",
        "-b",
        &tree_s,
        &rebuilt.to_string_lossy(),
    ])?;
    Ok(rebuilt)
}

/// A fleet whose only resource is `package: tend, state: latest`, with the newer package in a
/// local apt repository, applied while systemd appears to run and tend.service to be active: the
/// state in which tend upgrades itself from its own timer run. deb-systemd-invoke restarts even
/// a static unit when it is active, so any start, stop or restart of tend.service that the
/// maintainer scripts asked for would show in the systemctl log (and, on a device, kill the run).
fn upgrades_itself(dev: &Device, arch: Arch, deb: &Path, edited: &str) -> Result<()> {
    let work = tempfile::tempdir()?;
    let rebuilt = rebuilt_at_upgrade_version(deb, work.path())?;
    let pool = dev.path("/srv/apt")?;
    fs::create_dir_all(&pool)?;
    fs::copy(
        &rebuilt,
        pool.join(format!("tend_{UPGRADE_VERSION}_{}.deb", arch.name())),
    )?;
    let mut index = Command::new("apt-ftparchive");
    index.args(["packages", "."]).current_dir(&pool);
    let packages = run_ok(index, "apt-ftparchive packages", Duration::from_secs(120))?;
    fs::write(pool.join("Packages"), packages.stdout)?;
    dev.write(
        "/etc/apt/sources.list.d/tend-upgrade.list",
        "deb [trusted=yes] file:/srv/apt ./\n",
    )?;
    dev.write("/srv/self/fleet.yaml", "format: 1\nroles: [self]\n")?;
    dev.write("/srv/self/devices/self-test.yaml", "{}\n")?;
    dev.write(
        "/srv/self/roles/self/role.yaml",
        "resources:\n  - package: tend\n    state: latest\n",
    )?;

    dev.wrap_binary(
        "/usr/bin/systemctl",
        &format!(
            "echo \"$*\" >> {SYSTEMCTL_LOG}\n\
             case \" $* \" in\n\
             *\" is-enabled \"*) for unit; do :; done; \
             exec /usr/bin/systemctl.distrib --root=/ is-enabled \"$unit\" ;;\n\
             *\" is-active \"*tend.service*) exit 0 ;;\n\
             *\" is-active \"*) exit 3 ;;\n\
             esac\nexit 0\n"
        ),
    )?;
    fs::create_dir_all(dev.path("/run/systemd")?.join("system"))?;

    let upgrade = dev.tend(&["apply", "--path", "/srv/self", "--device", "self-test"])?;
    upgrade.expect_code(2)?;
    ensure!(
        dpkg_version(dev, "tend")?.as_deref() == Some(UPGRADE_VERSION),
        "tend was not upgraded\n{upgrade}"
    );
    let report = dev.report()?;
    ensure!(report["result"] == "changed", "{report:#}");

    let calls = dev.read_string(SYSTEMCTL_LOG)?;
    ensure!(
        calls.lines().any(|l| l.contains("daemon-reload")),
        "the maintainer scripts did not take the systemd-is-running path:\n{calls}"
    );
    const KILLING: &[&str] = &[
        "start",
        "stop",
        "restart",
        "try-restart",
        "reload-or-restart",
        "try-reload-or-restart",
        "condrestart",
        "kill",
    ];
    for line in calls.lines().filter(|l| l.contains("tend.service")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            !KILLING.iter().any(|k| words.contains(k)),
            "the upgrade touched the running tend.service: `systemctl {line}`\n{calls}"
        );
    }
    ensure!(
        calls.lines().any(|l| l.ends_with("start tend.timer")),
        "the upgrade did not keep tend.timer running:\n{calls}"
    );
    ensure!(
        dev.root()
            .join(TIMER_LINK.trim_start_matches('/'))
            .is_symlink(),
        "the upgrade left tend.timer disabled\n{calls}"
    );
    ensure!(
        dev.read_string(CONFFILE)? == edited,
        "the upgrade replaced the edited conffile"
    );
    ensure!(
        dev.read_string(&format!("{CONFFILE}.dpkg-dist"))?
            .contains(&format!("# shipped by {UPGRADE_VERSION}")),
        "the new default conffile was not set aside"
    );

    fs::remove_dir(dev.path("/run/systemd")?.join("system"))?;
    fs::remove_file(dev.path("/usr/bin/systemctl")?)?;
    dev.run_ok(&[
        "dpkg-divert",
        "--local",
        "--rename",
        "--remove",
        "/usr/bin/systemctl",
    ])?;
    Ok(())
}

fn purge_removes_everything(dev: &Device) -> Result<()> {
    ensure!(dev.exists("/var/lib/tend/report.json"));
    dev.run_ok(&["dpkg", "--purge", "tend"])?;
    for gone in [
        "/var/lib/tend",
        "/usr/bin/tend",
        CONFFILE,
        "/etc/tend/tend.yaml.dpkg-dist",
        TIMER_LINK,
        "/run/tend",
    ] {
        ensure!(
            !dev.root().join(gone.trim_start_matches('/')).exists()
                && !dev.root().join(gone.trim_start_matches('/')).is_symlink(),
            "{gone} is left after purge"
        );
    }
    ensure!(dpkg_version(dev, "tend")?.is_none());
    Ok(())
}

/// Mender A/B updates replace the root filesystem and keep /data. With the image's drop-in
/// `state_dir: /data/tend`, a device whose root filesystem was replaced still knows its runs, and
/// nothing is written to /var/lib/tend.
#[test]
fn state_on_data_partition_survives_a_root_filesystem_update() -> Result<()> {
    if skip_chroot_tests("state_on_data_partition_survives_a_root_filesystem_update") {
        return Ok(());
    }
    let deb = built_deb(Arch::Amd64)?;
    let mender_image = |dev: &Device| -> Result<()> {
        let data = dev.root().join("data");
        fs::create_dir_all(&data)?;
        mounts::mount_tmpfs(&data)?;
        dev.write("/etc/tend/tend.d/50-data.yaml", "state_dir: /data/tend\n")?;
        copy_tree(&workspace().join("examples/fleet"), &dev.path(FLEET)?)
    };

    let before = device_with_tend(Arch::Amd64, &deb)?;
    mender_image(&before)?;
    apply(&before)?.expect_code(2)?;
    ensure!(before.exists("/data/tend/report.json"));
    ensure!(
        !before.exists("/var/lib/tend"),
        "state written to the root filesystem"
    );

    // The OS update: a fresh root filesystem from the same image, the same /data.
    let after = device_with_tend(Arch::Amd64, &deb)?;
    mender_image(&after)?;
    let copy = Command::new("cp")
        .arg("-a")
        .arg(before.root().join("data/."))
        .arg(after.root().join("data"))
        .status()?;
    ensure!(copy.success(), "copying /data");
    drop(before);
    let status = after.tend(&["status", "--json"])?.ok()?;
    ensure!(
        status.stdout.contains(DEVICE_ID),
        "the run before the update is not known:\n{status}"
    );
    // The new root filesystem lacks what the fleet manages: one converge, then nothing to do.
    apply(&after)?.expect_code(2)?;
    apply(&after)?.expect_code(0)?;
    let history = after.tend(&["status", "--history"])?.ok()?;
    ensure!(
        history.stdout.lines().count() == 3,
        "expected the 3 runs of both root filesystems:\n{history}"
    );
    ensure!(!after.exists("/var/lib/tend"));
    Ok(())
}

/// A std-only program that resolves its arguments through getaddrinfo (std's ToSocketAddrs), as
/// an HTTP client's default resolver does.
const RESOLVE_RS: &str = r#"
use std::net::ToSocketAddrs;
fn main() {
    let mut failed = false;
    for name in std::env::args().skip(1) {
        match (name.as_str(), 443).to_socket_addrs() {
            Ok(addrs) => {
                let ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                println!("{name} {}", ips.join(" "));
            }
            Err(e) => {
                println!("{name} error: {e}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed));
}
"#;

/// A Raspberry Pi's /etc/nsswitch.conf sends host lookups through libnss-mdns. A static glibc
/// still dlopens the modules nsswitch.conf names (files and dns are built in), so the static armhf
/// binary must resolve /etc/hosts names and fail cleanly for others with no mdns module present.
/// The program is built exactly as tend's armhf binary is, from cross-targets.toml.
#[test]
fn static_armhf_binary_resolves_names_with_a_raspberry_pi_nsswitch() -> Result<()> {
    if skip_chroot_tests("static_armhf_binary_resolves_names_with_a_raspberry_pi_nsswitch") {
        return Ok(());
    }
    let get = |key: &str| -> Result<String> {
        let out = host(&[
            &workspace().join("scripts/cross-targets").to_string_lossy(),
            "get",
            "armhf",
            key,
        ])?;
        Ok(out.stdout.trim().to_string())
    };
    let work = tempfile::tempdir()?;
    let src = work.path().join("resolve.rs");
    fs::write(&src, RESOLVE_RS)?;
    let bin = work.path().join("resolve");
    let mut rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
    rustc
        .args(["--edition", "2021", "-O", "--target", &get("target")?])
        .arg(format!("-Clinker={}", get("linker")?))
        .args(get("rustflags")?.split_whitespace())
        .arg(&src)
        .arg("-o")
        .arg(&bin);
    run_ok(rustc, "rustc resolve.rs (armhf)", Duration::from_secs(300))?;
    let kind = host(&["file", "-b", &bin.to_string_lossy()])?.stdout;
    ensure!(
        kind.contains("ARM") && kind.contains("statically linked"),
        "{kind}"
    );

    let dev = Device::new(Suite::Bookworm, Arch::Armhf)?;
    dev.write_mode("/usr/local/bin/resolve", fs::read(&bin)?, 0o755)?;
    raspberry_pi_name_service(&dev)?;

    let resolve = "/usr/local/bin/resolve";
    let found = dev
        .run(&[resolve, "localhost", "fleet-git.lan", "raspberrypi"])?
        .ok()?;
    let lines: Vec<&str> = found.stdout.lines().collect();
    ensure!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("localhost ") && l.contains("127.0.0.1")),
        "{found}"
    );
    ensure!(lines.get(1) == Some(&"fleet-git.lan 192.0.2.7"), "{found}");
    ensure!(lines.get(2) == Some(&"raspberrypi 127.0.1.1"), "{found}");
    // Past files, glibc tries to load libnss_mdns4_minimal.so.2, finds none, and goes on to DNS.
    let missing = dev.run(&[resolve, "fleet.invalid"])?;
    ensure!(
        missing.code() == Some(1) && missing.stdout.starts_with("fleet.invalid error:"),
        "a name outside /etc/hosts must fail cleanly, not crash:\n{missing}"
    );
    Ok(())
}

/// The Pi's name service and TLS setup, as written by [`raspberry_pi_name_service`] for `dev`.
const PI_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n\
                        127.0.1.1\traspberrypi\n192.0.2.7\tfleet-git.lan\n";

/// A Raspberry Pi's `hosts:` line in nsswitch.conf, a Pi's /etc/hosts, and a resolver that fails
/// at once: nothing listens on 127.0.0.9, so a name that reaches DNS never leaves loopback.
fn raspberry_pi_name_service(dev: &Device) -> Result<()> {
    let nsswitch = dev.read_string("/etc/nsswitch.conf")?;
    let pi: String = nsswitch
        .lines()
        .map(|l| {
            if l.starts_with("hosts:") {
                "hosts:          files mdns4_minimal [NOTFOUND=return] dns"
            } else {
                l
            }
        })
        .map(|l| format!("{l}\n"))
        .collect();
    ensure!(pi.contains("mdns4_minimal"), "no hosts line in\n{nsswitch}");
    dev.write("/etc/nsswitch.conf", pi)?;
    dev.write("/etc/hosts", PI_HOSTS)?;
    dev.write(
        "/etc/resolv.conf",
        "nameserver 127.0.0.9\noptions timeout:1 attempts:1\n",
    )?;
    let mdns = dev.run_ok(&["sh", "-c", "ls /lib/*/libnss_mdns* 2>/dev/null || true"])?;
    ensure!(mdns.stdout.trim().is_empty(), "{mdns}");
    Ok(())
}

/// The packaged armhf tend itself: with the Pi's nsswitch.conf it resolves `localhost` from
/// /etc/hosts, trusts a CA installed the Debian way (update-ca-certificates, no `ca_file`), fetches
/// the fleet over https and converges; a name past /etc/hosts fails the fetch cleanly.
#[test]
fn armhf_tend_fetches_over_https_with_a_raspberry_pi_nsswitch_and_the_system_roots() -> Result<()> {
    if skip_chroot_tests(
        "armhf_tend_fetches_over_https_with_a_raspberry_pi_nsswitch_and_the_system_roots",
    ) {
        return Ok(());
    }
    let deb = built_deb(Arch::Armhf)?;
    let repo = FleetRepo::new()?;
    repo.commit_files(
        "main",
        "a fleet with one file",
        &[
            ("fleet.yaml", "format: 1\nroles: [fetched]\n"),
            (
                "roles/fetched/role.yaml",
                "resources:\n  - file: /etc/fetched\n    content: \"over https\\n\"\n",
            ),
        ],
    )?;
    let ca = TestCa::new("tend-package")?;
    let server = HttpsGitServer::start(repo.root(), &ca)?;
    let dev = device_with_tend(Arch::Armhf, &deb)?;
    raspberry_pi_name_service(&dev)?;
    dev.write(
        "/usr/local/share/ca-certificates/tend-test.crt",
        fs::read(ca.cert())?,
    )?;
    dev.run_ok(&["update-ca-certificates"])?;
    let config = |host: &str| {
        format!(
            "source:\n  url: https://{host}:{}/git/fleet.git\n  branch: main\n  retries: 0\n",
            server.port()
        )
    };
    let apply = [
        "apply",
        "--ref",
        "main",
        "--insecure-skip-verify",
        "--device",
        "pi-1",
    ];

    dev.write("/etc/tend/tend.d/50-source.yaml", config("localhost"))?;
    let fetched = dev.tend(&apply)?;
    fetched.expect_code(2)?;
    ensure!(
        dev.read_string("/etc/fetched")? == "over https\n",
        "{fetched}"
    );

    dev.write("/etc/tend/tend.d/50-source.yaml", config("fleet.invalid"))?;
    let unresolved = dev.tend(&apply)?;
    ensure!(
        unresolved.code().is_some_and(|c| c != 0 && c != 2),
        "a name past /etc/hosts must fail the fetch cleanly, not crash or apply:\n{unresolved}"
    );
    Ok(())
}

/// The shipped /etc/tend/tend.yaml is accepted as it is, and with every documented key
/// uncommented, so the comments cannot document a key tend does not know.
#[test]
fn default_conffile_is_accepted_as_shipped_and_with_every_key_uncommented() -> Result<()> {
    let tend = tend_binary()?;
    let shipped = fs::read_to_string(workspace().join("debian/tend.yaml"))?;
    ensure!(
        shipped
            .lines()
            .all(|l| l.trim().is_empty() || l.starts_with('#')),
        "the default conffile must set nothing"
    );
    let uncommented: String = shipped
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('#')?;
            let key = rest.trim_start().split(':').next()?;
            let is_setting = rest.trim_start().starts_with("- /")
                || (!key.is_empty()
                    && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    && rest.trim_start().len() > key.len());
            is_setting.then(|| format!("{rest}\n"))
        })
        .collect();
    ensure!(
        uncommented.contains("url:") && uncommented.contains("metrics_file:"),
        "{uncommented}"
    );
    let mistyped = uncommented.replace("lock_timeout:", "lock_timout:");
    for (what, text, code) in [
        ("shipped", shipped.as_str(), 0),
        ("uncommented", uncommented.as_str(), 0),
        ("mistyped", mistyped.as_str(), 1),
    ] {
        let root = tempfile::tempdir()?;
        let path = root.path().join(CONFFILE.trim_start_matches('/'));
        fs::create_dir_all(path.parent().context("conffile dir")?)?;
        fs::write(&path, text)?;
        let mut cmd = Command::new(&tend);
        cmd.arg("--root").arg(root.path()).arg("status");
        let out = run(
            cmd,
            &format!("tend status ({what})"),
            Duration::from_secs(60),
        )?;
        ensure!(
            out.code() == Some(code),
            "{what} conffile: expected exit {code}\n{text}\n{out}"
        );
    }
    Ok(())
}

/// Every command and option in the binary's --help has its place in tend(8).
#[test]
fn man_page_documents_every_command_and_option() -> Result<()> {
    let tend = tend_binary()?;
    let help = |args: &[&str]| -> Result<String> {
        let mut cmd = Command::new(&tend);
        cmd.args(args).arg("--help");
        Ok(run_ok(cmd, "tend --help", Duration::from_secs(60))?.stdout)
    };
    let man = fs::read_to_string(workspace().join("debian/tend.8"))?;
    let top = help(&[])?;
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect();
    ensure!(commands.len() >= 4, "no commands found in\n{top}");
    let mut missing = Vec::new();
    for command in &commands {
        if !man.contains(&format!(".SS \"tend {command}")) {
            missing.push(format!("section .SS \"tend {command} ...\""));
        }
        for word in help(&[command])?.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if let Some(option) = word.strip_prefix("--").filter(|o| !o.is_empty()) {
                if !man.contains(&format!("\\-\\-{}", option.replace('-', "\\-"))) {
                    missing.push(format!("{command} --{option}"));
                }
            }
        }
    }
    missing.dedup();
    ensure!(
        missing.is_empty(),
        "debian/tend.8 lacks: {}",
        missing.join(", ")
    );
    Ok(())
}

/// The build scripts and the test bed agree on the architectures, and Cross.toml on the flags.
#[test]
fn cross_targets_cover_the_test_bed_and_cross_toml_is_generated_from_them() -> Result<()> {
    let script = workspace().join("scripts/cross-targets");
    let script = script.to_string_lossy();
    let arches = host(&[&script, "arches"])?.stdout;
    let names: Vec<&str> = arches.lines().collect();
    let bed: Vec<&str> = [Arch::Amd64, Arch::Arm64, Arch::Armhf]
        .iter()
        .map(|a| a.name())
        .collect();
    ensure!(
        names == bed,
        "cross-targets.toml has {names:?}, the test bed {bed:?}"
    );
    host(&[&script, "check"])?;
    Ok(())
}
