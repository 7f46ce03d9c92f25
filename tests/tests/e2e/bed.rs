//! The booted-device bed: the VM, the git server, the apt repositories per stage, the Mender
//! double and the caching proxy, started together, with the steps' ways to wait on the device
//! and read its report. Kept apart so the suite reads as its story.

use super::*;

pub(crate) struct Bed {
    pub(crate) vm: Vm,
    pub(crate) mender: MenderServer,
    pub(crate) publisher: Publisher,
    pub(crate) stranger: std::path::PathBuf,
    pub(crate) git: HttpsGitServer,
    pub(crate) cdn: Cdn,
    pub(crate) _repo: FleetRepo,
    pub(crate) _apt: Vec<AptRepo>,
    pub(crate) _keys: tempfile::TempDir,
}

impl Bed {
    pub(crate) fn new() -> Result<Bed> {
        let image = vm::image(&vm::tend_deb()?)?;
        let keys = tempfile::tempdir()?;
        let key = keygen(keys.path(), "ops")?;
        let stranger = keygen(keys.path(), "stranger")?;
        let repo = FleetRepo::new()?;
        let ca = TestCa::new("tend-e2e")?;
        let git_server = HttpsGitServer::start(repo.root(), &ca)?;
        let cdn = Cdn::start(git_server.port(), &ca, Duration::from_secs(300))?;
        let mender = MenderServer::start()?;
        let apt = vec![
            AptRepo::with_packages(&[rollout::hello("3.0-1"), rollout::tool()])?,
            AptRepo::with_packages(&[rollout::hello("2.0-1"), rollout::tool()])?,
            AptRepo::with_packages(&[rollout::hello("1.0-1"), rollout::tool()])?,
        ];
        let publisher = Publisher::new(repo.path(), key, "e2e-fleet")?;

        let mut forwards = vec![
            Forward {
                guest_port: GIT_PORT,
                host_port: git_server.port(),
            },
            Forward {
                guest_port: MENDER_PORT,
                host_port: rollout::port_of(&mender.url())?,
            },
            Forward {
                guest_port: CDN_PORT,
                host_port: cdn.port(),
            },
        ];
        for ((_, guest_port), repo) in STAGES.iter().zip(&apt) {
            forwards.push(Forward {
                guest_port: *guest_port,
                host_port: rollout::port_of(&repo.url())?,
            });
        }
        let seed = tempfile::tempdir()?;
        write_seed(seed.path(), &ca, &publisher, &mender)?;
        let vm = Vm::create("e2e", &image, seed.path(), &forwards)?;
        for ((stage, _), repo) in STAGES.iter().zip(&apt) {
            publisher.write(
                &format!("roles/app/files/{stage}.asc"),
                &repo.key_armored()?,
            )?;
        }
        Ok(Bed {
            vm,
            mender,
            publisher,
            stranger,
            git: git_server,
            cdn,
            _repo: repo,
            _apt: apt,
            _keys: keys,
        })
    }

    /// The report of the last run that finished, if any: report.json with the times of
    /// /run/tend/last-run.json laid over it (a run that changed nothing rewrites only those).
    pub(crate) fn report(&mut self) -> Result<Option<Value>> {
        let out = self
            .vm
            .sh("cat /var/lib/tend/report.json 2>/dev/null || true", CMD)?;
        if out.stdout.trim().is_empty() {
            return Ok(None);
        }
        let mut report: Value = serde_json::from_str(&out.stdout).context("report.json")?;
        let times = self
            .vm
            .sh("cat /run/tend/last-run.json 2>/dev/null || true", CMD)?;
        if let Ok(times) = serde_json::from_str::<Value>(&times.stdout) {
            if times["started"].as_u64() >= report["started"].as_u64() {
                for k in ["started", "finished", "duration_ms"] {
                    report[k] = times[k].clone();
                }
            }
        }
        Ok(Some(report))
    }

    /// Waits for a report that satisfies `done` (written by a timer run), calling `watch` between
    /// polls; returns it.
    pub(crate) fn wait_report(
        &mut self,
        what: &str,
        mut done: impl FnMut(&Value) -> bool,
        mut watch: impl FnMut(&mut Vm) -> Result<()>,
    ) -> Result<Value> {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < STEP_TIMEOUT {
            if let Some(r) = self.report()? {
                if done(&r) {
                    eprintln!("e2e: {what} after {:.0?}", started.elapsed());
                    return Ok(r);
                }
                last = Some(r);
            }
            watch(&mut self.vm)?;
            std::thread::sleep(POLL);
        }
        bail!(
            "no report with {what} within {STEP_TIMEOUT:?}; last report:\n{}\n{}",
            last.map(|r| format!("{r:#}")).unwrap_or_default(),
            self.vm.failure_context()
        )
    }

    /// Waits until the Mender double has `attrs` for the device.
    pub(crate) fn wait_mender(&self, attrs: &[(&str, &str)]) -> Result<BTreeMap<String, Value>> {
        let want = |a: &BTreeMap<String, Value>| {
            attrs
                .iter()
                .all(|(k, v)| a.get(*k).and_then(Value::as_str) == Some(*v))
        };
        self.mender
            .wait_until(
                Duration::from_secs(120),
                "tend's inventory in Mender",
                |s| want(&s.attributes()),
            )
            .with_context(|| {
                format!(
                    "Mender has {:#?}\n{}",
                    self.mender.attributes(),
                    self.vm.failure_context()
                )
            })?;
        Ok(self.mender.attributes())
    }

    pub(crate) fn sh(&mut self, script: &str) -> Result<String> {
        Ok(self.vm.sh_ok(script, CMD)?.stdout)
    }

    /// How often systemd has started e2e-app since boot.
    pub(crate) fn app_starts(&mut self) -> Result<usize> {
        Ok(self
            .sh("journalctl -b -u e2e-app -o cat | grep -c '^Started e2e-app.service' || true")?
            .trim()
            .parse()?)
    }

    pub(crate) fn merge_main_into_canary(&self, message: &str) -> Result<String> {
        rollout::merge_main_into_canary(&self.publisher, message)
    }
}

/// The per-test provisioning an image builder would do: tend's config as a drop-in, the CA and
/// signers, Mender's server and identity.
pub(crate) fn write_seed(
    root: &Path,
    ca: &TestCa,
    publisher: &Publisher,
    mender: &MenderServer,
) -> Result<()> {
    let put = |path: &str, content: &[u8], mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().context("parent")?)?;
        std::fs::write(&p, content)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    put(
        "/etc/tend/tend.d/50-e2e.yaml",
        format!(
            "source:\n  url: https://localhost:{GIT_PORT}/git/fleet.git\n  branch: canary\n  \
             ca_file: /etc/tend/ca.pem\n  retries: 1\n  connect_timeout: 10\n\
             verify:\n  allowed_signers: /etc/tend/allowed_signers\n\
             device:\n  id: vm1\n\
             guard:\n  timeout: 5\n  retries: 1\n  interval: 2\n"
        )
        .as_bytes(),
        0o644,
    )?;
    put("/etc/tend/ca.pem", &std::fs::read(ca.cert())?, 0o644)?;
    put(
        "/etc/tend/allowed_signers",
        publisher.allowed_signers()?.as_bytes(),
        0o644,
    )?;
    let conf = serde_json::json!({
        "ServerURL": format!("https://localhost:{MENDER_PORT}"),
        "ServerCertificate": "/etc/mender/server.crt",
        "InventoryPollIntervalSeconds": 6 * 3600,
        "UpdatePollIntervalSeconds": 6 * 3600,
        "RetryPollIntervalSeconds": 5,
    });
    put(
        "/etc/mender/mender.conf",
        &serde_json::to_vec_pretty(&conf)?,
        0o600,
    )?;
    put("/etc/mender/server.crt", mender.ca_pem().as_bytes(), 0o644)?;
    put(
        "/etc/mender/artifact_info",
        b"artifact_name=tend-e2e\n",
        0o644,
    )?;
    put(
        "/data/mender/device_type",
        b"device_type=tend-e2e-vm\n",
        0o644,
    )?;
    put(
        "/usr/share/mender/identity/mender-device-identity",
        b"#!/bin/sh\necho mac=02:00:00:e2:e2:01\n",
        0o755,
    )?;
    Ok(())
}

pub(crate) fn git_field<'a>(r: &'a Value, key: &str) -> &'a str {
    r["git"][key].as_str().unwrap_or("")
}
