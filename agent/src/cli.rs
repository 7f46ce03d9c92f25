//! The command line. A thin edge over the library: parse, call, print, pick the exit code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::apply::{apply, ApplyOptions};
use crate::exit;
use crate::inspect;

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
    /// Converge this device to a fleet repo in a directory.
    Apply {
        /// The fleet repo (a directory holding fleet.yaml).
        #[arg(long, value_name = "DIR")]
        path: PathBuf,
        /// The device id; default: config, then /etc/machine-id.
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
    /// Print the fully resolved roles, resources and vars of one device, as JSON.
    Render {
        #[arg(long, value_name = "ID")]
        device: String,
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    Text,
    Json,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            return ExitCode::from(code);
        }
    };
    crate::logging::init(cli.verbose);
    ExitCode::from(run(cli))
}

pub fn run(cli: Cli) -> u8 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Apply {
            path,
            device,
            check,
            diff,
        } => run_apply(
            ApplyOptions {
                root: cli.root,
                path,
                device,
                check,
                diff,
            },
            &mut out,
        ),
        Command::Check { path, device } => run_apply(
            ApplyOptions {
                root: cli.root,
                path,
                device,
                check: true,
                diff: true,
            },
            &mut out,
        ),
        Command::Validate {
            dir,
            devices,
            format,
        } => run_validate(&dir, &devices, format, &mut out),
        Command::Render { device, dir } => match inspect::render(&dir, &device, &mut out) {
            Ok(()) => exit::OK,
            Err(diags) => {
                eprintln!("{diags}");
                exit::INVALID_REPO
            }
        },
    }
}

fn run_apply(opts: ApplyOptions, out: &mut dyn Write) -> u8 {
    match apply(&opts, out) {
        Ok(applied) => applied.exit,
        Err(e) => {
            let code = e.exit_code();
            let err = anyhow::Error::new(e).context("tend could not run; nothing was applied");
            eprintln!("tend: {err:#}");
            code
        }
    }
}

fn run_validate(
    dir: &std::path::Path,
    devices: &[String],
    format: Format,
    out: &mut dyn Write,
) -> u8 {
    let (count, diags) = match inspect::validate_repo(dir, devices) {
        Ok(r) => r,
        Err(d) => {
            eprintln!("tend: {d}");
            return exit::COULD_NOT_RUN;
        }
    };
    match format {
        Format::Json => {
            let doc =
                serde_json::json!({ "devices": count, "ok": diags.is_empty(), "errors": diags.0 });
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            );
        }
        Format::Text => {
            for d in &diags.0 {
                let _ = writeln!(out, "{d}");
            }
            if diags.is_empty() {
                let _ = writeln!(
                    out,
                    "tend: {} valid ({count} devices rendered)",
                    dir.display()
                );
            } else {
                let _ = writeln!(out, "tend: {} error(s) in {}", diags.0.len(), dir.display());
            }
        }
    }
    if diags.is_empty() {
        exit::OK
    } else {
        exit::INVALID_REPO
    }
}
