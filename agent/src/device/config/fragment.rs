//! One config fragment as it is written (every key optional, unknown keys refused), and how it
//! lays over the config built so far: a key a fragment sets replaces the value before it, and a
//! value that cannot be right (a relative state_dir, an empty reboot command) is refused with the
//! fragment's file and line. `config.rs` keeps the settings and their defaults.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{inhibit, mirrors, Config, Follow, Mirror};
use crate::diag::Diagnostic;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Fragment {
    source: Option<SourceFragment>,
    verify: Option<VerifyFragment>,
    device: Option<DeviceFragment>,
    vars_files: Option<Vec<String>>,
    state_dir: Option<Spanned<String>>,
    apt: Option<AptFragment>,
    report: Option<ReportFragment>,
    guard: Option<GuardFragment>,
    reboot: Option<RebootFragment>,
    apply: Option<ApplyFragment>,
    inhibit: Option<inhibit::InhibitFragment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyFragment {
    /// Bytes of content (each distinct content once) and rendered specs a desired state may hold.
    max_desired_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RebootFragment {
    /// `never` (default) or a daily local-time range `HH:MM-HH:MM`.
    window: Option<Spanned<String>>,
    /// The argv that reboots the device (default `systemctl reboot`).
    command: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardFragment {
    /// Further endpoints the device must still reach after a change (`https://host[:port]` or
    /// `host:port`).
    endpoints: Option<Spanned<Vec<String>>>,
    /// Seconds each step (resolve, connect, handshake, ref listing) may take.
    timeout: Option<u64>,
    /// Further attempts of the whole guard before it fails.
    retries: Option<u32>,
    /// Seconds between attempts.
    interval: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportFragment {
    /// Seconds between inventory sends when nothing changed.
    heartbeat: Option<u64>,
    /// The Prometheus textfile; empty string disables it.
    metrics_file: Option<String>,
    /// How many past reports `tend status --history` keeps.
    history: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFragment {
    url: Option<String>,
    /// The user for HTTP Basic authentication, with `password_file`.
    username: Option<String>,
    /// A root-only file holding the token (the recommended form: no secret in tend.yaml).
    password_file: Option<String>,
    branch: Option<String>,
    ca_file: Option<String>,
    proxy: Option<String>,
    no_proxy: Option<String>,
    ssh_key: Option<String>,
    known_hosts: Option<String>,
    /// A git bundle of the fleet repo, placed by the image build, applied when the first fetch
    /// fails (no network yet on first boot).
    seed_bundle: Option<String>,
    /// Seconds to establish a connection.
    connect_timeout: Option<u64>,
    /// Seconds a whole fetch may take, retries included.
    timeout: Option<u64>,
    retries: Option<u32>,
    /// Bytes a pack may take; its declared object count is bounded in proportion.
    max_fetch_bytes: Option<u64>,
    /// Bytes per second a server must keep up, averaged over `transfer_rate_window` seconds.
    min_transfer_rate: Option<u64>,
    transfer_rate_window: Option<u64>,
    /// `branch` (default): follow the branch head. `tags`: follow signed annotated tags named
    /// `<branch>/<number>`, the number growing (binds the stage and freshness to the signature).
    follow: Option<Follow>,
    /// The signed stage pointer's URL (https); without it, every run asks git.
    pointer: Option<String>,
    /// Seconds after its `issued` that the newest valid pointer is reported stale.
    max_staleness: Option<u64>,
    /// Further git URLs of the same fleet repo, tried in order when the one before is down.
    mirrors: Option<Spanned<Vec<String>>>,
    /// Further URLs of the signed stage pointer, tried in order like `mirrors`.
    pointer_mirrors: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyFragment {
    allowed_signers: Option<String>,
    openpgp_keyring: Option<String>,
    /// Accept a new head that does not descend from the last verified commit (a force-push).
    allow_rewinds: Option<bool>,
    /// Strict tag mode: how far one run may move the stage's tag number.
    max_tag_step: Option<u64>,
    /// allowed_signers file of the root keys that sign the repo's policy/policy.yaml.
    policy_roots: Option<String>,
    /// How many distinct root keys must sign the policy.
    policy_threshold: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFragment {
    /// `auto` (the default) or a fixed id.
    id: Option<String>,
    #[serde(rename = "type")]
    device_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AptFragment {
    /// Seconds apt waits for dpkg's lock.
    lock_timeout: Option<u64>,
    /// Seconds after which package lists are refreshed before an install.
    lists_max_age: Option<u64>,
}

impl Config {
    pub(super) fn merge(&mut self, f: Fragment, path: &Path) -> Result<(), Diagnostic> {
        if let Some(src) = f.source {
            let s = &mut self.source;
            macro_rules! set {
                ($field:ident) => {
                    if src.$field.is_some() {
                        s.$field = src.$field;
                    }
                };
            }
            if let Some(url) = src.url {
                let (url, creds) = crate::device::credentials::split_url(&url);
                s.url = Some(url);
                s.url_credentials = creds;
            }
            set!(username);
            set!(password_file);
            set!(ca_file);
            set!(proxy);
            set!(no_proxy);
            set!(ssh_key);
            set!(known_hosts);
            if let Some(b) = src.seed_bundle {
                s.seed_bundle = b;
            }
            if let Some(b) = src.branch {
                s.branch = b;
            }
            if let Some(t) = src.connect_timeout {
                s.connect_timeout = Duration::from_secs(t);
            }
            if let Some(t) = src.timeout {
                s.timeout = Duration::from_secs(t);
            }
            if let Some(r) = src.retries {
                s.retries = r;
            }
            if let Some(b) = src.max_fetch_bytes {
                s.max_fetch_bytes = b;
            }
            if let Some(r) = src.min_transfer_rate {
                s.min_transfer_rate = r;
            }
            if let Some(w) = src.transfer_rate_window {
                s.transfer_rate_window = Duration::from_secs(w.max(1));
            }
            if let Some(f) = src.follow {
                s.follow = f;
            }
            set!(pointer);
            if let Some(m) = src.max_staleness {
                s.max_staleness = Some(Duration::from_secs(m));
            }
            if let Some(list) = src.mirrors {
                let urls = mirrors::checked(path, "mirrors", list)?;
                s.mirrors = urls
                    .iter()
                    .map(|u| {
                        let (url, credentials) = crate::device::credentials::split_url(u);
                        Mirror { url, credentials }
                    })
                    .collect();
            }
            if let Some(list) = src.pointer_mirrors {
                s.pointer_mirrors = mirrors::checked(path, "pointer_mirrors", list)?;
            }
        }
        if let Some(v) = f.verify {
            if v.allowed_signers.is_some() {
                self.verify.allowed_signers = v.allowed_signers;
            }
            if v.openpgp_keyring.is_some() {
                self.verify.openpgp_keyring = v.openpgp_keyring;
            }
            if let Some(a) = v.allow_rewinds {
                self.verify.allow_rewinds = a;
            }
            if v.max_tag_step.is_some() {
                self.verify.max_tag_step = v.max_tag_step;
            }
            if v.policy_roots.is_some() {
                self.verify.policy_roots = v.policy_roots;
            }
            if let Some(t) = v.policy_threshold {
                self.verify.policy_threshold = t;
            }
        }
        if let Some(d) = f.device {
            if let Some(id) = d.id {
                self.device_id = (id != "auto").then_some(id);
            }
            if d.device_type.is_some() {
                self.device_type = d.device_type;
            }
        }
        if let Some(v) = f.vars_files {
            self.vars_files = v;
        }
        if let Some(Spanned {
            value: s,
            referenced,
            ..
        }) = f.state_dir
        {
            if !s.starts_with('/') {
                return Err(Diagnostic::new(
                    path.display().to_string(),
                    referenced.line(),
                    format!("state_dir '{s}' is not an absolute path"),
                )
                .fix("write an absolute path such as /var/lib/tend or /data/tend"));
            }
            self.state_dir = s;
        }
        if let Some(r) = f.report {
            if let Some(h) = r.heartbeat {
                self.heartbeat = Duration::from_secs(h);
            }
            if let Some(m) = r.metrics_file {
                self.metrics_file = (!m.is_empty()).then_some(m);
            }
            if let Some(n) = r.history {
                self.history = n;
            }
        }
        if let Some(g) = f.guard {
            if let Some(list) = g.endpoints {
                let line = list.referenced.line();
                self.guard.endpoints = list
                    .value
                    .iter()
                    .map(|e| crate::device::endpoint::Endpoint::parse(e))
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        Diagnostic::new(path.display().to_string(), line, format!("guard.endpoints: {e}"))
                            .fix("write `https://host[:port]` (resolve, connect, TLS) or `host:port` (resolve, connect)")
                    })?;
            }
            if let Some(t) = g.timeout {
                self.guard.timeout = Duration::from_secs(t.max(1));
            }
            if let Some(r) = g.retries {
                self.guard.retries = r;
            }
            if let Some(i) = g.interval {
                self.guard.interval = Duration::from_secs(i);
            }
        }
        if let Some(r) = f.reboot {
            let at = |line: u64, m: String| Diagnostic::new(path.display().to_string(), line, m);
            if let Some(w) = r.window {
                let line = w.referenced.line();
                self.reboot.window =
                    crate::device::window::Window::parse(&w.value).map_err(|e| {
                        at(line, e)
                            .fix("write `window: \"02:00-04:00\"` (local time) or `window: never`")
                    })?;
            }
            if let Some(Spanned {
                value: c,
                referenced,
                ..
            }) = r.command
            {
                if c.first().is_none_or(|p| p.trim().is_empty()) {
                    return Err(at(referenced.line(), "reboot.command is empty".into())
                        .fix("write the argv that reboots the device, e.g. `command: [systemctl, reboot]`"));
                }
                self.reboot.command = c;
            }
        }
        if let Some(i) = f.inhibit {
            self.inhibit.merge(i);
        }
        if let Some(m) = f.apply.and_then(|a| a.max_desired_bytes) {
            self.max_desired_bytes = m;
        }
        if let Some(a) = f.apt {
            if let Some(t) = a.lock_timeout {
                self.apt_lock_timeout = Duration::from_secs(t);
            }
            if let Some(t) = a.lists_max_age {
                self.apt_lists_max_age = Duration::from_secs(t);
            }
        }
        Ok(())
    }
}
