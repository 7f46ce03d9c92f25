//! `tend gate --branch canary`: may this branch be promoted? Asked of Mender, not of the devices.
//!
//! The seeds' rule is "if something fails on the canary level, there is no merge to production".
//! Every device reports `tend_branch`, `tend_commit`, `tend_status` and `tend_last_run` to Mender
//! (see `inventory`), so a promotion pull request can check, from CI, that the devices following
//! the branch run its head (or a commit with the same tree), converged, and did so recently. The
//! gate passes when at least `--min-devices` devices pass and none failed; `--wait` polls until
//! that holds, a device fails on the head, or the time is up.
//!
//! `tend gate --rollout` (`rollout`, `wave`) asks the other question, of a stage rolling out in
//! waves: has a wave that took the head failed too often, so the rollout must halt?

pub mod args;
pub mod head;
pub mod mender;
pub mod rollout;
pub mod verdict;
pub mod wave;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::exit;
use head::Head;
use mender::{Client, MenderError};
use verdict::{classify, hopeless, span, Row, State, Verdict};

/// How often the device timer runs `tend run` (systemd/tend.timer: `OnCalendar=*:0/30`).
pub const TIMER_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Bound on one search request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Mender shows a `tend_last_run` at most one heartbeat plus one timer interval old (a device
/// re-sends its inventory at least once per heartbeat, checked at each run), so an older one
/// means the device stopped running or reporting.
pub fn default_max_age() -> Duration {
    crate::device::config::Config::default().heartbeat + TIMER_INTERVAL
}

pub struct GateOptions {
    pub branch: String,
    /// The Mender server's base URL.
    pub server: String,
    /// A Mender personal access token.
    pub token: String,
    /// A checkout of the fleet repo (the branch head is read there).
    pub repo: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub max_age: Duration,
    pub min_devices: usize,
    /// Poll until the gate passes, for at most this long.
    pub wait: Option<Duration>,
    pub interval: Duration,
    pub json: bool,
}

/// The branch head and a client for the server; the error is printed as it is.
pub fn connect(opts: &GateOptions) -> Result<(Head, Client), String> {
    let head = Head::resolve(&opts.repo, &opts.branch)?;
    let client = Client::new(
        &opts.server,
        opts.token.clone(),
        opts.ca_file.as_deref(),
        REQUEST_TIMEOUT,
    )
    .map_err(|e| e.to_string())?;
    Ok((head, client))
}

pub fn run(opts: &GateOptions, out: &mut dyn Write) -> u8 {
    let (head, client) = match connect(opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tend gate: {e}");
            return exit::COULD_NOT_RUN;
        }
    };
    let deadline = opts.wait.map(|w| Instant::now() + w);
    loop {
        let more_time = deadline.is_some_and(|d| Instant::now() + opts.interval <= d);
        let rows = match client.devices_following(&opts.branch) {
            Ok(devices) => {
                let now = unix_now();
                let matches = |c: &str| head.classify(c);
                devices
                    .iter()
                    .map(|d| classify(d, &matches, now, opts.max_age))
                    .collect::<Vec<Row>>()
            }
            // A server hiccup while waiting is worth another poll; a wrong token or URL is not.
            Err(e) if more_time && transient(&e) => {
                eprintln!("tend gate: {e}; asking again in {}", span(opts.interval));
                std::thread::sleep(opts.interval);
                continue;
            }
            Err(e) => {
                eprintln!("tend gate: {e}");
                return exit::COULD_NOT_RUN;
            }
        };
        let verdict = Verdict::of(&rows, opts.min_devices);
        if verdict.passes() || hopeless(&rows) || !more_time {
            let result = GateResult {
                opts,
                head: &head,
                verdict: &verdict,
                rows: &rows,
            };
            let printed = if opts.json {
                result.print_json(out)
            } else {
                result.print_table(out)
            };
            if let Err(e) = printed {
                eprintln!("tend gate: {e}");
                return exit::COULD_NOT_RUN;
            }
            return if verdict.passes() {
                exit::OK
            } else {
                exit::FAILED
            };
        }
        eprintln!(
            "tend gate: {} passed, {} failed, {} not yet (need {}); asking again in {}",
            verdict.passed,
            verdict.failed,
            verdict.waiting,
            verdict.min_devices,
            span(opts.interval)
        );
        std::thread::sleep(opts.interval);
    }
}

fn transient(e: &MenderError) -> bool {
    match e {
        MenderError::Transport { .. } => true,
        MenderError::Status { status, .. } => *status >= 500,
        _ => false,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// One answer of the gate, for printing.
struct GateResult<'a> {
    opts: &'a GateOptions,
    head: &'a Head,
    verdict: &'a Verdict,
    rows: &'a [Row],
}

impl GateResult<'_> {
    fn summary(&self) -> String {
        let (opts, v, devices) = (self.opts, self.verdict, self.rows.len());
        let result = if v.passes() { "PASSED" } else { "FAILED" };
        let found = if devices == 0 {
            format!("no device reports tend_branch={} in Mender", opts.branch)
        } else {
            format!(
                "{devices} devices: {} passed, {} failed, {} not yet",
                v.passed, v.failed, v.waiting
            )
        };
        format!(
            "tend gate {result}: branch {} at {} ({}); {found}; needed at least {} passed and \
             none failed (max age {})",
            opts.branch,
            &self.head.commit.to_string()[..12],
            self.head.reference,
            v.min_devices,
            span(opts.max_age)
        )
    }

    /// The laggards and failures, one line each, then the verdict.
    fn print_table(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut shown: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.state != State::Passed)
            .collect();
        // Failures first: they are what blocks the promotion.
        shown.sort_by_key(|r| (r.state != State::Failed, r.device.clone()));
        if !shown.is_empty() {
            let id_width = shown
                .iter()
                .map(|r| r.device.len())
                .max()
                .unwrap_or(6)
                .max(6);
            writeln!(
                out,
                "{:<id_width$}  {:<9}  {:<12}  {:<9}  {:<12}  REASON",
                "DEVICE", "STATE", "COMMIT", "STATUS", "LAST RUN"
            )?;
            for r in shown {
                let state = serde_json::to_value(r.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let last = r
                    .age
                    .map(crate::report::status::age)
                    .unwrap_or_else(|| "-".into());
                let commit = if r.commit.is_empty() { "-" } else { &r.commit };
                writeln!(
                    out,
                    "{:<id_width$}  {:<9}  {:<12}  {:<9}  {:<12}  {}",
                    r.device,
                    state,
                    commit,
                    r.status,
                    last,
                    crate::report::inventory::encode_value(&r.reason)
                )?;
            }
        }
        writeln!(out, "{}", self.summary())
    }

    fn print_json(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let doc = serde_json::json!({
            "branch": self.opts.branch,
            "head": self.head.commit.to_string(),
            "reference": self.head.reference,
            "passed": self.verdict.passes(),
            "counts": self.verdict,
            "max_age_seconds": self.opts.max_age.as_secs(),
            "devices": self.rows,
        });
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        )
    }
}
