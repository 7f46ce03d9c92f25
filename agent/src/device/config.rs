//! The device's own configuration: vendor defaults, then /etc, then drop-ins, later wins key by key.
//!
//! Like systemd and Zincati: `/usr/lib/tend/tend.yaml` ships with the package, `/etc/tend/tend.yaml`
//! is the admin's, and `/etc/tend/tend.d/*.yaml` (in name order) lets an image or a provisioning
//! step add one setting without owning the whole file. Each fragment is checked on its own, so an
//! error names the fragment and line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::diag::Diagnostic;
use crate::yaml;

/// `source.max_fetch_bytes` unless configured: a device's fleet repo is a few MiB.
pub const DEFAULT_MAX_FETCH_BYTES: u64 = 256 << 20;
pub const DEFAULT_MIN_TRANSFER_RATE: u64 = 1024;
pub const DEFAULT_TRANSFER_RATE_WINDOW: Duration = Duration::from_secs(60);

/// The default budget: far above any configuration, far below a device's memory.
pub const DEFAULT_MAX_DESIRED_BYTES: u64 = 256 << 20;

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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Follow {
    #[default]
    Branch,
    Tags,
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
            let frag: fragment::Fragment = yaml::parse(&path.display().to_string(), &bytes)?;
            cfg.merge(frag, &path)?;
            cfg.fragments.push(path);
        }
        Ok(cfg)
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

mod fragment;
mod inhibit;
mod mirrors;

pub use inhibit::Inhibit;

#[cfg(test)]
mod tests;
