//! The device's own configuration: vendor defaults, then /etc, then drop-ins, later wins key by key.
//!
//! Like systemd and Zincati: `/usr/lib/tend/tend.yaml` ships with the package, `/etc/tend/tend.yaml`
//! is the admin's, and `/etc/tend/tend.d/*.yaml` (in name order) lets an image or a provisioning
//! step add one setting without owning the whole file. Each fragment is checked on its own, so an
//! error names the fragment and line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::Diagnostic;
use crate::yaml;

/// `source.max_fetch_bytes` unless configured: a device's fleet repo is a few MiB.
pub const DEFAULT_MAX_FETCH_BYTES: u64 = 256 << 20;
pub const DEFAULT_MIN_TRANSFER_RATE: u64 = 1024;
pub const DEFAULT_TRANSFER_RATE_WINDOW: Duration = Duration::from_secs(60);

/// The default budget: far above any configuration, far below a device's memory.
pub const DEFAULT_MAX_DESIRED_BYTES: u64 = 256 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fragment {
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

/// When and how a change that needs a reboot gets one (docs/safety.md).
#[derive(Clone, Debug)]
pub struct Reboot {
    pub window: crate::device::window::Window,
    pub command: Vec<String>,
}

impl Default for Reboot {
    fn default() -> Self {
        Self {
            window: crate::device::window::Window::Never,
            command: vec!["systemctl".into(), "reboot".into()],
        }
    }
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

/// The connectivity guard (docs/safety.md).
#[derive(Clone, Debug)]
pub struct Guard {
    pub endpoints: Vec<crate::device::endpoint::Endpoint>,
    pub timeout: Duration,
    pub retries: u32,
    pub interval: Duration,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            timeout: Duration::from_secs(15),
            retries: 2,
            interval: Duration::from_secs(5),
        }
    }
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Follow {
    #[default]
    Branch,
    Tags,
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

/// Where the fleet repo comes from (`tend run`).
#[derive(Clone, Debug)]
pub struct Source {
    /// Without userinfo: a credential written into the URL is in `url_credentials`.
    pub url: Option<String>,
    /// What the URL carried as `user:token@`, split off at load.
    pub url_credentials: Option<crate::device::credentials::Credentials>,
    pub username: Option<String>,
    /// Device path of the token file; read when a run needs it.
    pub password_file: Option<String>,
    pub branch: String,
    pub ca_file: Option<String>,
    pub proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub ssh_key: Option<String>,
    pub known_hosts: Option<String>,
    /// Device path of the image's seed bundle; used only if it exists.
    pub seed_bundle: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub max_fetch_bytes: u64,
    pub min_transfer_rate: u64,
    pub transfer_rate_window: Duration,
    pub follow: Follow,
    /// `source.pointer`: the URL of the stage's signed pointer; None: behave as without one.
    pub pointer: Option<String>,
    /// `source.max_staleness`: a pointer issued longer ago than this is reported stale.
    pub max_staleness: Option<Duration>,
    /// `source.mirrors`: tried in order after `url` when the one before cannot be reached.
    pub mirrors: Vec<Mirror>,
    /// `source.pointer_mirrors`: tried in order after `pointer`.
    pub pointer_mirrors: Vec<String>,
}

/// A further git URL of the fleet repo. Its credential is only what its own URL carried:
/// `source.password_file` is the token of `source.url`'s server and is never sent to a mirror.
#[derive(Clone, Debug)]
pub struct Mirror {
    pub url: String,
    pub credentials: Option<crate::device::credentials::Credentials>,
}

/// Where an image build puts the fleet's seed bundle (see docs/packaging.md).
pub const DEFAULT_SEED_BUNDLE: &str = "/usr/lib/tend/seed.bundle";

impl Default for Source {
    fn default() -> Self {
        Self {
            url: None,
            url_credentials: None,
            username: None,
            password_file: None,
            branch: "production".into(),
            ca_file: None,
            proxy: None,
            no_proxy: None,
            ssh_key: None,
            known_hosts: None,
            seed_bundle: DEFAULT_SEED_BUNDLE.into(),
            connect_timeout: Duration::from_secs(20),
            timeout: Duration::from_secs(300),
            retries: 3,
            max_fetch_bytes: crate::device::config::DEFAULT_MAX_FETCH_BYTES,
            min_transfer_rate: crate::device::config::DEFAULT_MIN_TRANSFER_RATE,
            transfer_rate_window: crate::device::config::DEFAULT_TRANSFER_RATE_WINDOW,
            follow: Follow::Branch,
            pointer: None,
            max_staleness: None,
            mirrors: Vec::new(),
            pointer_mirrors: Vec::new(),
        }
    }
}

/// Which keys commits must be signed by.
#[derive(Clone, Debug)]
pub struct Verify {
    pub allowed_signers: Option<String>,
    pub openpgp_keyring: Option<String>,
    pub allow_rewinds: bool,
    pub max_tag_step: Option<u64>,
    pub policy_roots: Option<String>,
    pub policy_threshold: u32,
}

impl Default for Verify {
    fn default() -> Self {
        Self {
            allowed_signers: None,
            openpgp_keyring: None,
            allow_rewinds: false,
            max_tag_step: None,
            policy_roots: None,
            policy_threshold: 1,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub source: Source,
    pub verify: Verify,
    /// A fixed device id; None means auto-detect.
    pub device_id: Option<String>,
    pub device_type: Option<String>,
    /// Device paths or globs (`*` in the last component) of local vars files.
    pub vars_files: Vec<String>,
    /// Device path of the state directory.
    pub state_dir: String,
    pub apt_lock_timeout: Duration,
    pub apt_lists_max_age: Duration,
    /// At most this long between inventory sends to Mender.
    pub heartbeat: Duration,
    /// Device path of the Prometheus textfile, if any.
    pub metrics_file: Option<String>,
    pub history: usize,
    pub guard: Guard,
    pub reboot: Reboot,
    pub inhibit: Inhibit,
    /// A commit whose desired state needs more memory than this is invalid (docs/device.md).
    pub max_desired_bytes: u64,
    /// The fragments that were read, in order.
    pub fragments: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            source: Source::default(),
            verify: Verify::default(),
            device_id: None,
            device_type: None,
            vars_files: vec!["/etc/tend/vars.d/*.yaml".into()],
            state_dir: "/var/lib/tend".into(),
            apt_lock_timeout: Duration::from_secs(120),
            apt_lists_max_age: Duration::from_secs(24 * 3600),
            heartbeat: Duration::from_secs(3600),
            metrics_file: Some("/var/lib/prometheus/node-exporter/tend.prom".into()),
            history: 20,
            guard: Guard::default(),
            reboot: Reboot::default(),
            inhibit: Inhibit::default(),
            max_desired_bytes: crate::device::config::DEFAULT_MAX_DESIRED_BYTES,
            fragments: Vec::new(),
        }
    }
}

pub const VENDOR_CONFIG: &str = "usr/lib/tend/tend.yaml";
pub const ADMIN_CONFIG: &str = "etc/tend/tend.yaml";
pub const DROPIN_DIR: &str = "etc/tend/tend.d";

/// The fragments under `root`, in the order they apply.
pub fn fragment_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in [VENDOR_CONFIG, ADMIN_CONFIG] {
        let p = root.join(p);
        if p.is_file() {
            out.push(p);
        }
    }
    let mut dropins: Vec<PathBuf> = std::fs::read_dir(root.join(DROPIN_DIR))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml") && p.is_file())
                .collect()
        })
        .unwrap_or_default();
    dropins.sort();
    out.extend(dropins);
    out
}

impl Config {
    pub fn load(root: &Path) -> Result<Self, Diagnostic> {
        let mut cfg = Config::default();
        for path in fragment_paths(root) {
            let bytes = std::fs::read(&path)
                .map_err(|e| Diagnostic::new(path.display().to_string(), 0, e.to_string()))?;
            let frag: Fragment = yaml::parse(&path.display().to_string(), &bytes)?;
            cfg.merge(frag, &path)?;
            cfg.fragments.push(path);
        }
        Ok(cfg)
    }

    fn merge(&mut self, f: Fragment, path: &Path) -> Result<(), Diagnostic> {
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

/// Expands device paths with a `*` in their last component, under `root`, sorted.
pub fn expand_globs(root: &Path, patterns: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for pat in patterns {
        let (dir, name) = pat.rsplit_once('/').unwrap_or(("", pat.as_str()));
        if !name.contains('*') {
            if root.join(pat.trim_start_matches('/')).is_file() {
                out.push(pat.clone());
            }
            continue;
        }
        let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
        let mut found: Vec<String> = std::fs::read_dir(root.join(dir.trim_start_matches('/')))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix) && n.ends_with(suffix) && !n.starts_with('.'))
                    .map(|n| format!("{dir}/{n}"))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        out.extend(found);
    }
    out
}

mod inhibit;
mod mirrors;

pub use inhibit::Inhibit;

#[cfg(test)]
mod tests;
