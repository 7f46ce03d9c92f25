//! The command line. A thin edge over the library: parse, call, print, pick the exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::converge::apply::{apply, ApplyOptions};
use crate::exit;
use crate::inspect;
use crate::run::RunOptions;

mod args;

pub use args::{Cli, Command, Format, PlanFormat, PublishWhat};

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
    let mut out = crate::logging::Scrubbed::new(stdout.lock());
    match cli.command {
        Command::Run {
            device,
            splay,
            check,
            diff,
        } => run_pull(
            RunOptions {
                root: cli.root,
                device,
                splay,
                reference: None,
                insecure_skip_verify: false,
                check,
                diff,
            },
            &mut out,
        ),
        Command::Apply {
            path: Some(path),
            device,
            check,
            diff,
            ..
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
        Command::Apply {
            path: None,
            reference,
            insecure_skip_verify,
            device,
            check,
            diff,
        } => run_pull(
            RunOptions {
                root: cli.root,
                device,
                splay: None,
                reference,
                insecure_skip_verify,
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
        Command::Plan {
            range,
            path,
            format,
            facts,
        } => run_plan(
            &crate::plan::PlanOptions { path, range, facts },
            format,
            &mut out,
        ),
        Command::Status { json, history } => run_status(&cli.root, json, history, &mut out),
        Command::Suspend { reason } => run_suspend(&cli.root, Some(&reason), &mut out),
        Command::Resume => run_suspend(&cli.root, None, &mut out),
        Command::Inventory => match device_state(&cli.root) {
            Ok((state, run_state)) => {
                match crate::report::inventory::print(
                    &mut out,
                    &state.root,
                    &state.path,
                    &run_state,
                ) {
                    Ok(()) => exit::OK,
                    Err(e) => {
                        errln(format_args!("tend: {e}"));
                        exit::COULD_NOT_RUN
                    }
                }
            }
            Err(code) => code,
        },
        Command::Gate(args) => crate::gate::args::run(args, &mut out),
        Command::Publish { what } => run_publish(what),
        Command::Render { device, dir } => match inspect::render(&dir, &device, &mut out) {
            Ok(()) => exit::OK,
            Err(diags) => {
                errln(format_args!("{diags}"));
                exit::INVALID_REPO
            }
        },
    }
}

/// Writes the pointer raw (not through the scrubbing writer: a signature must stay byte-exact).
fn run_publish(what: PublishWhat) -> u8 {
    use std::io::Write as _;
    let PublishWhat::Pointer {
        stage,
        sequence,
        expires,
        key,
        out: file,
        bundles,
        incremental,
        dir,
    } = what;
    let bundles = match file.as_deref().filter(|_| bundles) {
        Some(out) => {
            match crate::source::pointer::publish_bundles::BundleOut::beside(out, incremental) {
                Ok(b) => Some(b),
                Err(e) => {
                    errln(format_args!("tend publish pointer: {e}"));
                    return exit::COULD_NOT_RUN;
                }
            }
        }
        None => None,
    };
    let p = crate::source::pointer::publish::Publish {
        repo: dir,
        stage,
        sequence,
        expires,
        key,
        bundles,
    };
    let now = jiff::Timestamp::now().as_second();
    let bytes = match crate::source::pointer::publish::pointer(&p, now) {
        Ok(b) => b,
        Err(e) => {
            errln(format_args!("tend publish pointer: {e}"));
            return exit::COULD_NOT_RUN;
        }
    };
    let written = match &file {
        Some(path) => tend_roles::fsutil::atomic_write(
            path,
            &bytes,
            tend_roles::fsutil::Meta {
                mode: Some(0o644),
                ..Default::default()
            },
        ),
        None => std::io::stdout().lock().write_all(&bytes),
    };
    if let Err(e) = written {
        let to = file.map_or("standard output".into(), |f| f.display().to_string());
        errln(format_args!("tend publish pointer: writing {to}: {e}"));
        return exit::COULD_NOT_RUN;
    }
    // Bundles no pointer lists any more go once the new pointer is in place.
    if let Some(b) = &p.bundles {
        let listed = crate::source::pointer::split(&bytes)
            .and_then(|(payload, _)| crate::source::pointer::parse(payload))
            .map(|(doc, _, _)| doc.bundles);
        if let Err(e) = listed.map(|l| b.prune(&l)).unwrap_or(Ok(())) {
            errln(format_args!("tend publish pointer: {e}"));
            return exit::COULD_NOT_RUN;
        }
    }
    exit::OK
}

/// The state dir and run state from the device config, for the commands that only read them.
fn device_state(
    root: &std::path::Path,
) -> Result<
    (
        crate::device::state::StateDir,
        crate::report::runstate::RunState,
    ),
    u8,
> {
    let config = crate::device::config::Config::load(root).map_err(|d| {
        errln(format_args!("tend: device config: {d}"));
        exit::COULD_NOT_RUN
    })?;
    let state = crate::device::state::StateDir::new(root, &config.state_dir);
    let run_state =
        crate::report::runstate::RunState::load(&state.file(crate::report::runstate::STATE_FILE))
            .unwrap_or_default();
    Ok((state, run_state))
}

fn run_status(root: &std::path::Path, json: bool, history: bool, out: &mut dyn Write) -> u8 {
    let (state, run_state) = match device_state(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let now = std::time::SystemTime::now();
    let result = if history {
        let reports = crate::report::status::history(&state.path);
        if json {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&reports).unwrap_or_default()
            )
        } else {
            reports.iter().try_for_each(|r| {
                writeln!(
                    out,
                    "{}  {:<9} {:>3} changed {:>3} failed  {}",
                    crate::clock::rfc3339(r.finished),
                    crate::report::inventory::status_word(r),
                    r.counts.changed,
                    r.counts.failed,
                    r.source.location
                )
            })
        }
    } else {
        let s = crate::report::status::status(&state.root, &state.path, &run_state, now);
        if json {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&s).unwrap_or_default()
            )
        } else {
            crate::report::status::print(out, &s, now)
        }
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            errln(format_args!("tend: {e}"));
            exit::COULD_NOT_RUN
        }
    }
}

fn run_suspend(root: &std::path::Path, reason: Option<&str>, out: &mut dyn Write) -> u8 {
    let (state, _) = match device_state(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = match reason {
        Some(r) => crate::report::status::suspend(&state.path, r).map(|_| format!("tend: suspended ({r}); runs fetch and report but apply nothing until `tend resume`")),
        None => crate::report::status::resume(&state.path).map(|was| if was { "tend: resumed".to_string() } else { "tend: was not suspended".to_string() }),
    };
    match result {
        Ok(msg) => {
            tracing::info!(
                suspended = reason.is_some(),
                reason = reason.unwrap_or(""),
                "{msg}"
            );
            let _ = writeln!(out, "{msg}");
            exit::OK
        }
        Err(e) => {
            errln(format_args!("tend: {}: {e}", state.path.display()));
            exit::COULD_NOT_RUN
        }
    }
}

fn run_pull(opts: RunOptions, out: &mut dyn Write) -> u8 {
    exit_code(crate::run::run(&opts, out))
}

fn run_apply(opts: ApplyOptions, out: &mut dyn Write) -> u8 {
    exit_code(apply(&opts, out))
}

/// The exit code of a converging command; an error that stopped it is printed with its causes.
fn exit_code(
    result: Result<crate::converge::apply::Converged, crate::converge::apply::RunError>,
) -> u8 {
    match result {
        Ok(converged) => converged.exit,
        Err(e) => {
            let code = e.exit_code();
            let err = anyhow::Error::new(e).context("tend could not run; nothing was applied");
            errln(format_args!("tend: {err:#}"));
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
            errln(format_args!("tend: {d}"));
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
        Format::Github => {
            for d in &diags.0 {
                let _ = writeln!(
                    out,
                    "{}",
                    crate::diag::github_annotation(dir, d, "tend validate")
                );
            }
            let _ = writeln!(
                out,
                "tend: {} error(s), {count} devices rendered",
                diags.0.len()
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

fn run_plan(opts: &crate::plan::PlanOptions, format: PlanFormat, out: &mut dyn Write) -> u8 {
    let plan = match crate::plan::plan(opts) {
        Ok(p) => p,
        Err(e) => {
            errln(format_args!("tend plan: {e}"));
            return exit::COULD_NOT_RUN;
        }
    };
    use crate::plan::output;
    let text = match format {
        PlanFormat::Text => output::text(&plan),
        PlanFormat::Json => output::json(&plan),
        PlanFormat::Markdown => output::markdown(&plan),
        PlanFormat::Github => output::github(&plan, &opts.path),
    };
    let _ = out.write_all(text.as_bytes());
    if plan.invalid() > 0 || !plan.repo_errors.is_empty() {
        exit::INVALID_REPO
    } else {
        exit::OK
    }
}

/// One line on stderr, scrubbed of credentials like everything else tend prints.
fn errln(line: std::fmt::Arguments) {
    let mut err = crate::logging::Scrubbed::new(std::io::stderr().lock());
    let _ = writeln!(err, "{line}");
}
