//! The `tend gate` command line: flags, and the environment the token and server come from.
//!
//! The token is read from the environment only: a flag would show it in `ps` and in CI logs.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::wave::{parse_rate, Rate};
use super::{default_max_age, GateOptions};
use crate::clock::parse_duration;
use crate::exit;

/// Environment variables holding the Mender personal access token, in order of preference.
pub const TOKEN_VARS: &[&str] = &["TEND_MENDER_TOKEN", "MENDER_TOKEN"];
/// `--max-failure-rate` when not given: 5 %.
pub const DEFAULT_MAX_FAILURE_RATE: Rate = Rate(500);

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The Mender personal access token is read from TEND_MENDER_TOKEN (or \
MENDER_TOKEN). Exit codes: 0 the gate passed (with --rollout: continue), 4 it did not \
(failures, laggards, or too few devices), 14 with --rollout: halt, 1 could not ask (bad token, \
server, repo), 64 usage."
)]
pub struct GateArgs {
    /// The branch whose devices must pass, e.g. canary.
    #[arg(long, value_name = "BRANCH")]
    pub branch: String,
    /// The Mender server's base URL, e.g. https://hosted.mender.io.
    #[arg(long, env = "TEND_MENDER_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// A checkout of the fleet repo; the head is origin/BRANCH there, else BRANCH.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub repo: PathBuf,
    /// A PEM CA bundle to trust for the Mender server, besides the system roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// A device whose last run is older fails to count (90m, 2h, or seconds). Default: the
    /// report heartbeat (1 h) plus the timer interval (30 min).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_age: Option<Duration>,
    /// At least this many devices must pass. With --rollout: a wave with fewer devices on the
    /// head is not judged.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub min_devices: usize,
    /// Judge a rollout in waves (the devices' tend_wave): halt (exit 14) when a wave's devices
    /// on the head failed or reverted more often than --max-failure-rate, else continue.
    #[arg(long, conflicts_with = "wait")]
    pub rollout: bool,
    /// With --rollout: the largest share of a wave's devices on the head that may fail or
    /// revert, in percent (5%, 0.5%).
    #[arg(long, value_parser = parse_rate, value_name = "PERCENT", requires = "rollout")]
    pub max_failure_rate: Option<Rate>,
    /// Ask again until the gate passes, a device fails on the head, or DURATION is up.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub wait: Option<Duration>,
    /// Time between two asks with --wait.
    #[arg(long, value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
    pub interval: Duration,
    /// Print the verdict and every device as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the gate with the token and server from the environment; returns the exit code.
pub fn run(args: GateArgs, out: &mut dyn Write) -> u8 {
    let token = TOKEN_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|t| !t.trim().is_empty()));
    let Some(token) = token else {
        eprintln!(
            "tend gate: no Mender access token. Fix: create a personal access token in the \
             Mender UI and export it as TEND_MENDER_TOKEN (in GitHub Actions: a secret in `env:`)"
        );
        return exit::USAGE;
    };
    let Some(server) = args.server.filter(|s| !s.trim().is_empty()) else {
        eprintln!(
            "tend gate: no Mender server. Fix: pass --server https://hosted.mender.io (or your \
             server's URL), or set TEND_MENDER_SERVER"
        );
        return exit::USAGE;
    };
    let opts = GateOptions {
        branch: args.branch,
        server,
        token: token.trim().to_string(),
        repo: args.repo,
        ca_file: args.ca_file,
        max_age: args.max_age.unwrap_or_else(default_max_age),
        min_devices: args.min_devices,
        wait: args.wait,
        interval: args.interval.max(Duration::from_secs(1)),
        json: args.json,
    };
    if args.rollout {
        let rate = args.max_failure_rate.unwrap_or(DEFAULT_MAX_FAILURE_RATE);
        return super::rollout::run(&opts, rate, out);
    }
    super::run(&opts, out)
}
