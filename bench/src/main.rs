//! tend-bench: tend side by side with ansible-pull and rash on one desired state, in identical
//! fresh chroots of the test bed, pulling from the same local git server (docs/benchmarks.md).
//! It writes results.csv (every run's numbers), results.md (the table with tend's ratios) and
//! scaling.png to --out. Not part of the test suite: figures are measured, never asserted.

mod acct;
mod bed;
mod floor;
mod insn;
mod measure;
mod refstate;
mod results;
mod rounds;
mod scale;
mod scenarios;
mod writes;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use bed::{Bed, Tool};
use results::Results;
use scenarios::Opts;

#[derive(Parser)]
#[command(name = "tend-bench", about = "tend against ansible-pull and rash")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure every figure and write results.csv, results.md and scaling.png.
    Run(RunArgs),
    /// The floor of a no-op (used by `run`; see floor.rs).
    Floor { root: PathBuf, url: String },
    /// Writes results.md and scaling.png again from a results.csv, in its directory.
    Plot { csv: PathBuf },
    /// The fleet-scale load test: git-only polling against a signed pointer behind a caching
    /// proxy (docs/scale.md); writes scale.md and scale.csv to --out.
    Scale(ScaleArgs),
}

#[derive(clap::Args)]
struct ScaleArgs {
    /// The tend binary the simulated devices run.
    #[arg(long)]
    tend: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Devices polling at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Seconds the edge serves a cached pointer before it revalidates it with the origin.
    #[arg(long, default_value_t = 10)]
    max_age: u64,
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The static tend binary to measure (the one the amd64 .deb ships).
    #[arg(long)]
    tend: PathBuf,
    /// rash's binary (`cargo install rash_core`).
    #[arg(long)]
    rash: PathBuf,
    /// Where cross-built binaries are (for their sizes).
    #[arg(long, default_value = "target")]
    target_dir: PathBuf,
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    /// Runs per no-op figure.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Runs per first-apply figure (each on a fresh device).
    #[arg(long, default_value_t = 3)]
    first_runs: usize,
    #[arg(long, default_value_t = 5)]
    template_runs: usize,
    /// Runs per no-op and changed-template figure of ansible-pull (each takes it ~25 s).
    #[arg(long, default_value_t = 5)]
    ansible_runs: usize,
    /// ansible-pull's no-op scaling stops here (a 1,000-file no-op takes it minutes).
    #[arg(long, default_value_t = 100)]
    ansible_max_files: usize,
    #[arg(long, value_delimiter = ',', default_value = "20,100,1000,10000")]
    scaling: Vec<usize>,
    #[arg(long, default_value_t = 100_000)]
    fleet_devices: usize,
    #[arg(long, default_value_t = 10_000)]
    validate_devices: usize,
    /// Runs per architecture of the instruction counts (each on a fresh device).
    #[arg(long, default_value_t = 1)]
    insn_runs: usize,
    /// Only these figures: reference, scaling, fleet, validate, sizes, instructions.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// After each of tend's no-op figures, run this shell command with $ROOT set to the device's
    /// root and $FIGURE, $PARAM naming the figure (e.g.
    /// `valgrind --tool=callgrind --callgrind-out-file=cg.$FIGURE.$PARAM ./tend --root "$ROOT" run`).
    #[arg(long)]
    profile: Option<String>,
    /// Only these tools: tend, rash, ansible-pull, ansible-pull-o-nofacts.
    #[arg(long, value_delimiter = ',')]
    tools: Vec<String>,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Floor { root, url } => floor::run(&root, &url),
        Cmd::Run(args) => run(args),
        Cmd::Scale(a) => scale::run(
            &a.tend.canonicalize().context("--tend")?,
            &scale::ScaleOpts {
                devices: a.devices,
                workers: a.workers,
                max_age: std::time::Duration::from_secs(a.max_age),
                timeout: std::time::Duration::from_secs(120),
            },
            &a.out,
        ),
        Cmd::Plot { csv } => {
            let res = Results::read_csv(&csv)?;
            let dir = csv.parent().unwrap_or(std::path::Path::new("."));
            let tools: Vec<&str> = Tool::ALL
                .iter()
                .map(|t| t.name())
                .chain(["floor"])
                .filter(|t| res.rows.iter().any(|r| r.tool == *t))
                .collect();
            std::fs::write(dir.join("results.md"), res.markdown(&tools))?;
            res.plot_scaling(dir, &tools)
        }
    }
}

fn run(a: RunArgs) -> Result<()> {
    let tools: Vec<Tool> = Tool::ALL
        .into_iter()
        .filter(|t| a.tools.is_empty() || a.tools.iter().any(|n| n == t.name()))
        .collect();
    let wants = |f: &str| a.only.is_empty() || a.only.iter().any(|o| o == f);
    let opts = Opts {
        runs: a.runs,
        first_runs: a.first_runs,
        template_runs: a.template_runs,
        ansible_runs: a.ansible_runs,
        ansible_max_files: a.ansible_max_files,
        scaling: a.scaling.clone(),
        fleet_devices: a.fleet_devices,
        validate_devices: a.validate_devices,
        profile: a.profile.clone(),
    };
    std::fs::create_dir_all(&a.out)?;
    let tend = a.tend.canonicalize().context("--tend")?;
    let rash = a.rash.canonicalize().context("--rash")?;
    let bed = Bed::new(&tend, &rash)?;
    let mut res = Results::default();
    if wants("reference") {
        scenarios::reference(&bed, &opts, &tools, &mut res)?;
    }
    if wants("scaling") {
        scenarios::scaling(&bed, &opts, &tools, &mut res)?;
    }
    if wants("fleet") {
        scenarios::fleet_size(&bed, &opts, &mut res)?;
    }
    if wants("validate") {
        scenarios::validate(&tend, &bed, &opts, &mut res)?;
    }
    if wants("sizes") {
        scenarios::sizes(&a.target_dir, &rash, &mut res)?;
    }
    if wants("instructions") {
        insn::instructions(&bed, &a.target_dir, a.insn_runs, &mut res)?;
    }
    let names: Vec<&str> = tools
        .iter()
        .map(|t| t.name())
        .chain(wants("reference").then_some("floor"))
        .collect();
    res.write_csv(&a.out.join("results.csv"))?;
    std::fs::write(a.out.join("results.md"), res.markdown(&names))?;
    if wants("scaling") {
        res.plot_scaling(&a.out, &names)?;
    }
    println!("{}", res.markdown(&names));
    Ok(())
}
