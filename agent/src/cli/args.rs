//! What the command line accepts: the commands, their flags and their help text, as clap reads
//! them. Kept apart from `cli.rs`, which only dispatches a parsed command and prints its result,
//! so the interface can be read (and reviewed) on its own.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tend",
    version,
    about = "On-device GitOps pull agent for Debian-based IoT fleets"
)]
#[command(
    after_help = "Exit codes: 0 converged, 2 changed, 4 failures, 6 changed and failures, \
1 could not run, 10 invalid fleet repo (nothing applied), 11 suspended, 12 lock held, 64 usage."
)]
pub struct Cli {
    /// Manage this root instead of / (a chroot or an image being built). Config, state and the
    /// local vars files are read under it too.
    #[arg(long, global = true, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// More log output on stderr (-v info, -vv debug). TEND_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// What the timer runs: pull the subscribed branch, verify it, converge, report.
    Run {
        /// The device id; default: config, then Mender, then /etc/machine-id.
        #[arg(long, value_name = "ID")]
        device: Option<String>,
        /// Wait a random 0..SECONDS first, so a fleet does not pull at once.
        #[arg(long, value_name = "SECONDS")]
        splay: Option<u64>,
        /// Plan only: change nothing, write nothing.
        #[arg(long)]
        check: bool,
        /// Show unified diffs of file content.
        #[arg(long)]
        diff: bool,
    },
    /// Converge this device once: to a fleet repo in a directory, or to a branch or tag pulled
    /// from the configured source (signature still required).
    #[command(group(clap::ArgGroup::new("from").required(true).args(["path", "reference"])))]
    Apply {
        /// The fleet repo (a directory holding fleet.yaml).
        #[arg(long, value_name = "DIR")]
        path: Option<PathBuf>,
        /// A branch or tag of the configured source.
        #[arg(long = "ref", value_name = "REF")]
        reference: Option<String>,
        /// With --ref: apply without checking the signature (logged and reported).
        #[arg(long, requires = "reference")]
        insecure_skip_verify: bool,
        /// The device id; default: config, then Mender, then /etc/machine-id.
        #[arg(long, value_name = "ID")]
        device: Option<String>,
        /// Plan only: change nothing, write nothing. Exit 2 means "would change".
        #[arg(long)]
        check: bool,
        /// Show unified diffs of file content.
        #[arg(long)]
        diff: bool,
    },
    /// What `apply` would change, with diffs, and no side effect (apply --check --diff).
    Check {
        #[arg(long, value_name = "DIR")]
        path: PathBuf,
        #[arg(long, value_name = "ID")]
        device: Option<String>,
    },
    /// Check a fleet repo offline: load it and render every device (or the named ones).
    Validate {
        /// The fleet repo; default: the current directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Only these devices (repeatable).
        #[arg(long = "device", value_name = "ID")]
        devices: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// For a pull request: what BASE..HEAD changes on every device, grouped by identical change
    /// set, offline (exit 10 when a device does not render at HEAD).
    Plan {
        /// BASE..HEAD: full commit ids or ref names, e.g. origin/main..HEAD.
        #[arg(value_name = "BASE..HEAD")]
        range: String,
        /// The fleet repo's checkout.
        #[arg(long, default_value = ".", value_name = "DIR")]
        path: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: PlanFormat,
        /// An inventory export: the facts of each device in DIR/<device-id>.json or .yaml.
        #[arg(long, value_name = "DIR")]
        facts: Option<PathBuf>,
    },
    /// The last run: what is applied and since when, result and age, pending handlers,
    /// suspension, and whether the applied commit lags the branch head.
    Status {
        #[arg(long)]
        json: bool,
        /// List the kept reports of past runs, newest first.
        #[arg(long)]
        history: bool,
    },
    /// Stop applying (runs still fetch and report) until `tend resume`; the reason is shown in
    /// status, the report and Mender.
    Suspend {
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Apply again after `tend suspend`.
    Resume,
    /// Mender inventory attributes (tend_*) of the last run, as `name=value` lines.
    Inventory,
    /// For a promotion pull request: do the devices following a branch (in Mender's inventory)
    /// run its head, converged, recently?
    Gate(crate::gate::args::GateArgs),
    /// For the fleet's CI: make and sign what devices poll.
    Publish {
        #[command(subcommand)]
        what: PublishWhat,
    },
    /// Print the fully resolved roles, resources and vars of one device, as JSON.
    Render {
        #[arg(long, value_name = "ID")]
        device: String,
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum PublishWhat {
    /// The signed stage pointer for the head of `--stage` in the repo at DIR (docs/security.md).
    Pointer {
        /// The stage: the branch whose head the pointer names.
        #[arg(long)]
        stage: String,
        /// Default: the issue time in Unix seconds (grows with every publication).
        #[arg(long)]
        sequence: Option<u64>,
        /// A duration from now (24h, 7d, 90m, 3600s) or an RFC 3339 time.
        #[arg(long, value_name = "D")]
        expires: String,
        /// The private SSH key to sign with; default: the repo's user.signingkey.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Write the pointer here (atomically); default: standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Also write git bundles of the head beside --out and list them in the pointer.
        #[arg(long, requires = "out")]
        bundles: bool,
        /// With --bundles: incremental bundles from this many of the last pointers' commits.
        #[arg(long, value_name = "N", default_value_t = 5, requires = "bundles")]
        incremental: usize,
        /// The fleet repo.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    Text,
    Json,
    /// GitHub Actions workflow commands: each error annotates its file and line in the PR.
    Github,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PlanFormat {
    Text,
    /// A stable schema, documented in docs/fleet-workflow.md.
    Json,
    /// For a pull request comment.
    Markdown,
    /// GitHub Actions workflow commands: each device that does not render annotates its file.
    Github,
}
