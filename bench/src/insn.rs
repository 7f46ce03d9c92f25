//! Instruction counts of the arm64 and armhf static binaries, so that a Pi's time can be
//! estimated from a measured count rather than from an amd64 wall time (docs/benchmarks.md,
//! "Arm instruction counts"). Each binary runs under qemu-user with a small TCG plugin
//! (bench/qemu/insn.c, compiled here with gcc) that counts the guest instructions executed; the
//! amd64 binary runs under qemu-x86_64 the same way, so the three counts are comparable. The
//! binaries run on the host against the reference device's root (`--root`), so the commands they
//! start (dpkg, apt, systemctl) run natively in the chroot and are not counted: the counts are
//! tend's own instructions.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};

use crate::bed::{Bed, Tool};
use crate::refstate::RefState;
use crate::results::Results;
use crate::scenarios::{static_binary, CROSS};

const SOURCE: &str = include_str!("../qemu/insn.c");

/// The qemu-user that runs each Debian architecture's binary.
fn qemu(arch: &str) -> &'static str {
    match arch {
        "arm64" => "qemu-aarch64",
        "armhf" => "qemu-arm",
        "amd64" => "qemu-x86_64",
        other => unreachable!("CROSS has no architecture {other}"),
    }
}

/// The compiled plugin, in a directory of its own.
struct Plugin {
    dir: tempfile::TempDir,
    so: PathBuf,
}

impl Plugin {
    fn build() -> Result<Plugin> {
        let dir = tempfile::tempdir()?;
        let src = dir.path().join("insn.c");
        fs::write(&src, SOURCE)?;
        let so = dir.path().join("insn.so");
        let out = Command::new("gcc")
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
            .arg(&so)
            .arg(&src)
            .output()
            .context("gcc (apt-get install gcc)")?;
        ensure!(
            out.status.success(),
            "compiling insn.c: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Plugin { dir, so })
    }

    /// Runs `argv` under `qemu` with the plugin and checks its exit code; the instructions it
    /// executed.
    fn count(&self, qemu: &str, argv: &[&str], want: i32) -> Result<u64> {
        let out = self.dir.path().join("count");
        let _ = fs::remove_file(&out);
        let run = Command::new(qemu)
            .arg("-plugin")
            .arg(format!("{},out={}", self.so.display(), out.display()))
            .args(argv)
            .env_clear()
            .envs(tend_tests::device::ENV.iter().copied())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("{qemu} (apt-get install qemu-user)"))?;
        let Some(code) = run.status.code() else {
            bail!("{qemu} {argv:?} was killed: {}", run.status);
        };
        let text = fs::read_to_string(&out).with_context(|| {
            format!(
                "{qemu} wrote no count; stderr:\n{}",
                String::from_utf8_lossy(&run.stderr)
            )
        })?;
        ensure!(
            code == want,
            "{qemu} {argv:?} exited {code}, not {want}; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        parse(&text)
    }
}

/// The plugin's output: one line "insns N".
fn parse(text: &str) -> Result<u64> {
    let Some(n) = text.trim_end().strip_prefix("insns ") else {
        bail!("not an instruction count: {text:?}");
    };
    n.parse()
        .with_context(|| format!("not an instruction count: {text:?}"))
}

/// A first apply and a no-op of the reference device, per architecture, `runs` times each on a
/// fresh device.
pub fn instructions(bed: &Bed, target_dir: &Path, runs: usize, res: &mut Results) -> Result<()> {
    let mut bins = Vec::new();
    for (arch, triple) in CROSS {
        let bin = static_binary(target_dir, triple);
        ensure!(
            bin.is_file(),
            "{} missing (scripts/cross-build {arch})",
            bin.display()
        );
        bins.push((arch, qemu(arch), bin.display().to_string()));
    }
    let plugin = Plugin::build()?;
    let state = RefState::new(30)?;
    let tend_pub = bed.publisher("insn-fleet.git")?;
    let ansible_pub = bed.publisher("insn-ansible.git")?;
    bed.publish_state(&tend_pub, &ansible_pub, state, 0)?;
    for (arch, qemu, bin) in bins {
        eprintln!("instructions: {arch} under {qemu}");
        let (mut first, mut noop) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let dev = bed.device(Tool::Tend, "insn-fleet.git")?;
            let root = dev.root().display().to_string();
            let argv = [bin.as_str(), "--root", root.as_str(), "run"];
            // tend's exit codes: 2 changed (a first apply), 0 converged (a no-op).
            first.push(plugin.count(qemu, &argv, 2)? as f64);
            noop.push(plugin.count(qemu, &argv, 0)? as f64);
        }
        res.add("instructions", "tend", arch, "first apply", "insns", &first);
        res.add("instructions", "tend", arch, "no-op", "insns", &noop);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugins_count_parses_and_anything_else_is_an_error() {
        assert_eq!(parse("insns 29417306\n").unwrap(), 29_417_306);
        assert!(parse("").is_err());
        assert!(parse("insns \n").is_err());
        assert!(parse("insns -3\n").is_err());
        assert!(parse("instructions 12\n").is_err());
    }
}
