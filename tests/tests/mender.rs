//! Issue #4's Mender acceptance, with the real client: Debian's `mender-client` 3.4 in a bookworm
//! device, talking TLS to the Mender device-API double (`tend_tests::mender`) on 127.0.0.1.
//!
//! - The client runs tend's inventory script and the server receives the `tend_*` attributes tend
//!   prints, byte for byte, both on the client's own schedule (startup) and when tend asks it to
//!   send after a run.
//! - tend's send trigger: a run that changes what Mender shows (the status, the suspension) makes
//!   the client send; a run that changes none of it (nothing changed, or only files changed
//!   under `apply --path`, which has no commit or branch) sends nothing.
//! - Without a configured id, tend takes the device id from the `sub` of the JWT the daemon hands
//!   out over its D-Bus auth API (a system bus runs in the device), and caches it.
//!
//! What the chroot lacks, and how the test stands in for it:
//! - Debian's package ships no mender.conf, identity script, device_type or artifact name: the
//!   test writes them (as an image builder does), plus tend's inventory script as the tend
//!   package will install it.
//! - No Debian mirror in devices: mender-client and the libraries the chroot lacks are fetched
//!   once with the host's apt into the cache and installed with dpkg.
//! - No systemd as PID 1: the daemon is started directly, and `systemctl show -p MainPID
//!   mender-client`, which `mender send-inventory` runs to find the daemon before signalling it
//!   (SIGUSR2), is answered by a shim in /usr/local/bin with the daemon's pid, as systemd would.
//!   Everything else goes to the real systemctl. The signal, the daemon and the send are real.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tend_tests::mender::MenderServer;
use tend_tests::{cache, copy_tree, run, skip_chroot_tests, tend_binary, Device, Outcome};

const FLEET: &str = "/srv/fleet";
const TEST_RUN: &str = "/run/tend-test";
const DAEMON_PID: &str = "/run/tend-test/mender.pid";
const SHIM_LOG: &str = "/run/tend-test/systemctl-calls";
const DAEMON_LOG: &str = "/var/log/mender-daemon.log";
const IDENTITY: &str = "mac=02:00:00:7e:4d:01";
const DEVICE_TYPE: &str = "tend-test-amd64";

/// Answers systemd's part of `mender send-inventory` (see the module comment).
const SYSTEMCTL_SHIM: &str = r#"#!/bin/sh
# tend test bed: this chroot has no systemd as PID 1, so answer the one question the Mender
# client asks it (the daemon's MainPID, before sending it SIGUSR2) and pass the rest through.
case "$*" in
  "show -p MainPID mender-client"|"show -p MainPID mender")
    echo "$*" >> /run/tend-test/systemctl-calls
    echo "MainPID=$(cat /run/tend-test/mender.pid 2>/dev/null || echo 0)"
    exit 0 ;;
esac
exec /usr/bin/systemctl "$@"
"#;

/// A resource that always fails, with an error that needs Mender's encoding (newline, `%`, `=`).
const BROKEN_ROLE: &str = r#"resources:
  - command: >-
      printf 'flash worn out\nreplace the card (100%% used, ratio=1)\n' >&2; exit 3
    creates: /etc/fleet/never-created
"#;

struct Bed {
    dev: Device,
    server: MenderServer,
    /// How long to wait before concluding that no send is coming: several times the delay of
    /// the first send tend asked for.
    quiet: Duration,
}

impl Bed {
    fn new() -> Result<Bed> {
        let server = MenderServer::start()?;
        let dev = Device::bookworm()?;
        let debs = mender_client_debs(&dev)?;
        install_debs(&dev, &debs)?;
        dev.install_tend(&tend_binary()?)?;
        copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet"),
            &dev.path(FLEET)?,
        )?;
        let bed = Bed {
            dev,
            server,
            quiet: Duration::from_secs(2),
        };
        bed.configure_mender()?;
        bed.start_system_bus()?;
        Ok(bed)
    }

    /// What an image builder provides and Debian's package does not.
    fn configure_mender(&self) -> Result<()> {
        let d = &self.dev;
        let conf = serde_json::json!({
            "ServerURL": self.server.url(),
            "ServerCertificate": "/etc/mender/server.crt",
            // Hours: only tend's trigger and the daemon's startup may cause a send.
            "InventoryPollIntervalSeconds": 6 * 3600,
            "UpdatePollIntervalSeconds": 6 * 3600,
            "RetryPollIntervalSeconds": 1,
        });
        d.write("/etc/mender/mender.conf", serde_json::to_vec_pretty(&conf)?)?;
        d.write("/etc/mender/server.crt", self.server.ca_pem())?;
        d.write(
            "/etc/mender/artifact_info",
            "artifact_name=tend-test-image\n",
        )?;
        // /var/lib/mender is the package's link to /data/mender.
        d.sh("mkdir -p -m 0700 /data/mender")?;
        d.write(
            "/var/lib/mender/device_type",
            format!("device_type={DEVICE_TYPE}\n"),
        )?;
        d.write_mode(
            "/usr/share/mender/identity/mender-device-identity",
            format!("#!/bin/sh\necho {IDENTITY}\n"),
            0o755,
        )?;
        // As the tend package installs it.
        d.write_mode(
            "/usr/share/mender/inventory/mender-inventory-tend",
            "#!/bin/sh\nexec /usr/bin/tend inventory\n",
            0o755,
        )?;
        d.write_mode("/usr/local/bin/systemctl", SYSTEMCTL_SHIM, 0o755)?;
        d.sh(&format!("mkdir -p {TEST_RUN}"))?;
        Ok(())
    }

    /// The daemon exposes its auth API on the system bus; tend asks it there for the JWT.
    fn start_system_bus(&self) -> Result<()> {
        // The system bus config (with the policy mender-client installs) from the dbus package.
        self.dev
            .sh("mkdir -p /run/dbus && dbus-daemon --system --fork")?;
        Ok(())
    }

    fn start_daemon(&self) -> Result<()> {
        // Output to a file: the daemon must not hold the pipes of the command that starts it.
        self.dev.sh(&format!(
            "mender --no-syslog --log-level debug daemon >>{DAEMON_LOG} 2>&1 </dev/null & \
             echo $! >{DAEMON_PID}"
        ))?;
        Ok(())
    }

    fn stop_daemon(&self) -> Result<()> {
        self.dev.sh(&format!(
            "pid=$(cat {DAEMON_PID}); kill $pid; \
             for i in $(seq 100); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1"
        ))?;
        Ok(())
    }

    /// `tend apply --path FLEET [--device ID]`, with its exit code checked.
    fn apply(&self, device: Option<&str>, expect: i32) -> Result<Outcome> {
        let mut args = vec!["apply", "--path", FLEET];
        if let Some(id) = device {
            args.extend(["--device", id]);
        }
        let out = self.dev.tend(&args)?;
        ensure!(
            out.code() == Some(expect),
            "expected exit {expect}\n{out}\n{}",
            self.context()
        );
        Ok(out)
    }

    /// Runs `tend apply` and says whether it made the client send: tend ran `mender
    /// send-inventory` (the systemctl shim saw it) and the server then received inventory.
    /// Inventory without the ask (a periodic send would mask the trigger) or an ask that the
    /// client did not deliver fails at once: those are not tend's behaviour under test.
    fn apply_and_watch(&self, device: Option<&str>, expect: i32) -> Result<bool> {
        let (asks, updates) = (self.send_requests(), self.updates());
        self.apply(device, expect)?;
        let asked = self.send_requests() - asks;
        ensure!(asked <= 1, "one run asked for {asked} sends");
        if asked == 1 {
            self.wait_for_update(updates, "inventory after tend asked for a send")?;
            return Ok(true);
        }
        std::thread::sleep(self.quiet);
        ensure!(
            self.updates() == updates,
            "inventory arrived although tend did not ask for it\n{}",
            self.context()
        );
        Ok(false)
    }

    /// What tend's inventory script prints now, as name → value.
    fn printed_inventory(&self) -> Result<BTreeMap<String, String>> {
        let out = self
            .dev
            .run_ok(&["/usr/share/mender/inventory/mender-inventory-tend"])?;
        let mut attrs = BTreeMap::new();
        for line in out.stdout.lines() {
            let (k, v) = line
                .split_once('=')
                .with_context(|| format!("inventory line without '=': {line:?}"))?;
            attrs.insert(k.to_string(), v.to_string());
        }
        Ok(attrs)
    }

    /// How many times `mender send-inventory` asked "systemd" for the daemon.
    fn send_requests(&self) -> usize {
        self.dev
            .read_string(SHIM_LOG)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn updates(&self) -> usize {
        self.server.inventory_updates().len()
    }

    /// Waits for the inventory update after the first `before`.
    fn wait_for_update(&self, before: usize, what: &str) -> Result<Duration> {
        self.server
            .wait_until(Duration::from_secs(30), what, |s| {
                s.inventory_updates().len() > before
            })
            .map_err(|e| e.context(self.daemon_log_tail()))
    }

    /// Asserts that the server's inventory holds exactly what tend printed for every `tend_*`.
    fn assert_server_has_printed(&self, when: &str) -> Result<BTreeMap<String, Value>> {
        let printed = self.printed_inventory()?;
        let server = self.server.attributes();
        for (name, value) in &printed {
            ensure!(
                server.get(name) == Some(&Value::String(value.clone())),
                "{when}: {name}: tend printed {value:?}, the server has {:?}\nserver: {server:#?}",
                server.get(name)
            );
        }
        let extra: Vec<&String> = server
            .keys()
            .filter(|k| k.starts_with("tend_") && !printed.contains_key(*k))
            .collect();
        ensure!(extra.is_empty(), "{when}: stale tend attributes {extra:?}");
        Ok(server)
    }

    fn daemon_log_tail(&self) -> String {
        let log = self.dev.read_string(DAEMON_LOG).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        format!("--- mender daemon log (tail)\n{tail}")
    }

    fn context(&self) -> String {
        format!("{}\n{}", self.server.describe(), self.daemon_log_tail())
    }

    fn report(&self) -> Result<Value> {
        Ok(serde_json::from_slice(
            &self.dev.read("/var/lib/tend/report.json")?,
        )?)
    }

    fn edit(&self, path: &str, from: &str, to: &str) -> Result<()> {
        let full = format!("{FLEET}/{path}");
        let text = self.dev.read_string(&full)?;
        ensure!(text.contains(from), "{full} does not contain {from:?}");
        self.dev.write(&full, text.replace(from, to))
    }
}

/// An attribute's string value, "<missing>" when absent (so assertions print, not panic).
fn get<'a>(attrs: &'a BTreeMap<String, Value>, name: &str) -> &'a str {
    attrs
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or("<missing>")
}

/// Expectations on tend that the test keeps checking past a failure, so that one run reports
/// every defect; setup and the client's own behaviour fail at once instead.
#[derive(Default)]
struct Defects(Vec<String>);

impl Defects {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn finish(self) -> Result<()> {
        ensure!(
            self.0.is_empty(),
            "{} defect(s):\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
        Ok(())
    }
}

#[test]
fn the_real_mender_client_carries_tend_inventory_and_identity() -> Result<()> {
    if skip_chroot_tests("mender::the_real_mender_client_carries_tend_inventory_and_identity") {
        return Ok(());
    }
    let t0 = Instant::now();
    let mut bed = Bed::new()?;
    let setup = t0.elapsed();
    let mut defects = Defects::default();

    // The daemon authenticates with its own (generated) key and sends inventory at startup,
    // which already runs tend's script: tend has never run.
    bed.start_daemon()?;
    let t = Instant::now();
    bed.wait_for_update(0, "inventory after the daemon started")?;
    let startup = t.elapsed();
    let auths = bed.server.auth_requests();
    let accepted: Vec<_> = auths.iter().filter(|a| a.device_id.is_some()).collect();
    ensure!(accepted.len() == 1, "one accepted auth request: {auths:#?}");
    ensure!(
        accepted[0].id_data.contains("02:00:00:7e:4d:01"),
        "the identity script's data is the identity: {:?}",
        accepted[0].id_data
    );
    let key = accepted[0].key;
    let device_id = bed.server.device_ids().pop().context("no device id")?;
    let first = bed.assert_server_has_printed("startup")?;
    ensure!(get(&first, "tend_status") == "never-run", "{first:#?}");
    ensure!(get(&first, "device_type") == DEVICE_TYPE, "{first:#?}");
    ensure!(first.contains_key("mender_client_version"), "{first:#?}");

    // (a) A first run changes the device and asks the client to send: the server gets the
    // values tend prints.
    let t = Instant::now();
    let sent = bed.apply_and_watch(Some("demo-device"), 2)?;
    ensure!(sent, "the first run must ask the client to send");
    bed.quiet = (t.elapsed() * 3).max(Duration::from_secs(2));
    let after_first = bed.assert_server_has_printed("after the first run")?;
    ensure!(get(&after_first, "tend_status") == "ok", "{after_first:#?}");
    ensure!(get(&after_first, "tend_failed") == "0", "{after_first:#?}");
    ensure!(
        get(&after_first, "tend_changed")
            .parse::<u32>()
            .is_ok_and(|n| n > 0),
        "{after_first:#?}"
    );
    for name in ["tend_version", "tend_last_run", "tend_suspended"] {
        ensure!(after_first.contains_key(name), "{name}: {after_first:#?}");
    }

    // (c) No change: no send.
    let sent = bed.apply_and_watch(Some("demo-device"), 0)?;
    defects.check(!sent, || {
        "an unchanged second run made the client send".into()
    });

    // (b) No --device and no configured id: the id is the `sub` of the daemon's JWT, over D-Bus.
    bed.dev.run_ok(&[
        "cp",
        &format!("{FLEET}/devices/demo-device.yaml"),
        &format!("{FLEET}/devices/{device_id}.yaml"),
    ])?;
    let sent = bed.apply_and_watch(None, 2)?;
    let report = bed.report()?;
    ensure!(
        report["device"]["id"] == device_id.as_str(),
        "the report's device id is Mender's {device_id}: {}",
        report["device"]
    );
    ensure!(
        bed.dev.read_string("/etc/fleet/device-id")?.trim() == device_id,
        "facts.device_id is Mender's id"
    );
    let state: Value = serde_json::from_slice(&bed.dev.read("/var/lib/tend/state.json")?)?;
    ensure!(
        state["mender_device_id"] == device_id.as_str(),
        "state.json caches the Mender id: {state:#}"
    );
    // The run changed a file (the device-id fact), but nothing Mender shows.
    defects.check(!sent, || {
        "a run that changed only files made the client send".into()
    });

    // A var edit under `apply --path` changes files, not the status, branch or commit: per
    // issue #4 the trigger stays quiet (the heartbeat carries it later).
    let devfile = format!("devices/{device_id}.yaml");
    bed.edit(&devfile, "site: lab-1", "site: lab-2")?;
    let sent = bed.apply_and_watch(None, 2)?;
    ensure!(bed.dev.read_string("/etc/fleet/site")? == "lab-2\n");
    defects.check(!sent, || {
        "a var edit under apply --path made the client send".into()
    });

    // (c) The status changes to failed: a send; the error reaches Mender encoded as tend prints
    // it (newline as %0A, % as %25, = kept).
    bed.dev
        .write(&format!("{FLEET}/roles/broken/role.yaml"), BROKEN_ROLE)?;
    bed.edit(
        &devfile,
        "groups: [kiosk]",
        "groups: [kiosk]\nroles: [broken]",
    )?;
    let sent = bed.apply_and_watch(None, 4)?;
    defects.check(sent, || {
        "a run whose status became failed did not send".into()
    });
    let failed = bed.assert_server_has_printed("after a failed run")?;
    ensure!(get(&failed, "tend_status") == "failed", "{failed:#?}");
    ensure!(get(&failed, "tend_failed") == "1", "{failed:#?}");
    let expected = "flash worn out%0Areplace the card (100%25 used, ratio=1)";
    defects.check(get(&failed, "tend_error").contains(expected), || {
        format!(
            "after a failed resource, tend_error is {:?}, not the resource's error \
             (expected it to contain {expected:?})",
            failed.get("tend_error")
        )
    });

    // Back to ok: a send.
    bed.edit(&devfile, "\nroles: [broken]", "")?;
    let sent = bed.apply_and_watch(None, 0)?;
    defects.check(sent, || {
        "a run whose status went back to ok did not send".into()
    });

    // (c) Suspension: a send, with the reason; a second suspended run changes nothing.
    bed.dev
        .run_ok(&["/usr/bin/tend", "suspend", "--reason", "field maintenance"])?;
    let sent = bed.apply_and_watch(None, 11)?;
    defects.check(sent, || {
        "a run that found the device suspended did not send".into()
    });
    let suspended = bed.assert_server_has_printed("suspended")?;
    ensure!(
        get(&suspended, "tend_suspended") == "field maintenance"
            && get(&suspended, "tend_status") == "suspended",
        "{suspended:#?}"
    );
    let sent = bed.apply_and_watch(None, 11)?;
    defects.check(!sent, || {
        "a second suspended run (nothing changed) made the client send again".into()
    });

    // Resumed: back to ok and not suspended, a send.
    bed.dev.run_ok(&["/usr/bin/tend", "resume"])?;
    let sent = bed.apply_and_watch(None, 0)?;
    defects.check(sent, || {
        "the first run after `tend resume` did not send: Mender still shows the device \
         suspended"
            .into()
    });

    // The issue's order: the daemon (re)starts after tend ran; its startup send carries the
    // last run, and the same identity keeps its device id.
    bed.stop_daemon()?;
    let updates = bed.updates();
    bed.start_daemon()?;
    bed.wait_for_update(updates, "inventory after the daemon restarted")?;
    ensure!(bed.server.auth_count() == 2, "{}", bed.context());
    ensure!(
        bed.server.device_ids() == [device_id.clone()],
        "same device id"
    );
    let restarted = bed.assert_server_has_printed("after a daemon restart")?;
    ensure!(
        get(&restarted, "tend_status") == "ok" && get(&restarted, "tend_suspended") == "false",
        "{restarted:#?}"
    );

    // Client 3.x replaces the whole inventory on every send (PUT), which is why tend feeds it
    // through the script rather than patching the server.
    ensure!(
        bed.server
            .inventory_updates()
            .iter()
            .all(|u| u.method == "PUT"),
        "{}",
        bed.context()
    );
    // Every request the client made was one the device API answers, with a valid token.
    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for r in bed.server.requests() {
        *calls
            .entry(format!("{} {} {}", r.method, r.path, r.status))
            .or_default() += 1;
    }
    ensure!(
        calls
            .keys()
            .all(|c| c.ends_with(" 200") || c.ends_with(" 204")),
        "unexpected answers: {calls:#?}\n{}",
        bed.context()
    );
    eprintln!(
        "mender: setup {:.1}s, daemon start to first inventory {:.1}s, quiet window {:.1}s, \
         total {:.1}s; client key {key:?}; device {device_id}; systemctl asked: {:?}; \
         calls: {calls:?}",
        setup.as_secs_f64(),
        startup.as_secs_f64(),
        bed.quiet.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        bed.dev
            .read_string(SHIM_LOG)
            .unwrap_or_default()
            .lines()
            .next(),
    );
    defects.finish()
}

/// mender-client and what the test chroot lacks of its dependency closure (no recommends),
/// downloaded once with the host's apt into `<cache>/debs/` (devices have no Debian mirror).
fn mender_client_debs(dev: &Device) -> Result<Vec<PathBuf>> {
    let mut cmd = Command::new("apt-cache");
    cmd.args([
        "depends",
        "--recurse",
        "--no-recommends",
        "--no-suggests",
        "--no-conflicts",
        "--no-breaks",
        "--no-replaces",
        "--no-enhances",
        "mender-client",
    ]);
    let closure = run::run(
        cmd,
        "apt-cache depends mender-client",
        Duration::from_secs(60),
    )?;
    if !closure.success() {
        bail!(
            "the host's apt does not know mender-client (bookworm main): run `apt-get update`\n{closure}"
        );
    }
    let closure: BTreeSet<&str> = closure
        .stdout
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.is_empty())
        .collect();
    let installed = dev.run_ok(&["dpkg-query", "-W", "-f", "${Package}\\n"])?;
    let installed: BTreeSet<&str> = installed.stdout.lines().collect();
    let missing: Vec<&str> = closure.difference(&installed).copied().collect();
    ensure!(
        missing.contains(&"mender-client"),
        "mender-client is already installed?"
    );
    let recipe = format!("apt-get download {}", missing.join(" "));
    let digest = Sha256::digest(recipe.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let dest = cache::cache_dir()
        .join("debs")
        .join(format!("mender-client-{hex}"));
    let built = cache::get_or_build(&dest, &recipe, |tmp| {
        fs::create_dir_all(tmp)?;
        let mut cmd = Command::new("apt-get");
        cmd.args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .args(&missing)
            .current_dir(tmp);
        run::run_ok(cmd, &recipe, Duration::from_secs(600))?;
        Ok(())
    })?;
    if let Some(took) = built {
        cache::log_timing(
            &format!("mender-client debs downloaded to {}", dest.display()),
            took,
        );
    }
    let mut debs: Vec<PathBuf> = fs::read_dir(&dest)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    ensure!(
        debs.len() == missing.len(),
        "expected {} debs in {}",
        missing.len(),
        dest.display()
    );
    Ok(debs)
}

fn install_debs(dev: &Device, debs: &[PathBuf]) -> Result<()> {
    const DIR: &str = "/var/cache/tend-test-debs";
    for deb in debs {
        let name = deb
            .file_name()
            .context("deb without a name")?
            .to_string_lossy();
        dev.write(&format!("{DIR}/{name}"), fs::read(deb)?)?;
    }
    dev.sh(&format!("dpkg -i {DIR}/*.deb >/dev/null && rm -r {DIR}"))?;
    Ok(())
}
