//! Issue #17's peak-memory guard, as a limit rather than a timing: a no-op over 10,000 managed
//! files must fit in a data-segment limit (`RLIMIT_DATA`: the heap and every private writable
//! mapping, not the binary or the shared libraries) that the run before the fix did not fit in.
//!
//! The figure it guards (docs/benchmarks.md, "where the 10,000-file no-op goes"): the no-op held
//! every resource's report as a `serde_json::Value`, parsed the old and the new report.json into
//! values to compare them, kept every rendered spec, and held three copies of the managed list;
//! it needed 56–64 MiB of data segment (debug build) and aborted below that. With the managed
//! list's undo specs as JSON objects it still needed 28 MiB; typed, 22 MiB. With role entries
//! parsed into a compact form and each dropped once built (the spanned YAML of the whole role was
//! held beside the desired state), and lists sized to their items, 14 MiB. With fingerprints as
//! 16 raw bytes, the last apply's record kept as one sorted string of keys, and the previous
//! managed list's buffer given back once compared, 10 MiB. The limit (13 MiB) leaves room for
//! allocator slack and a different libc, not for a copy of the parsed role, the managed list or
//! the fingerprints as text: the code before the last step needed 14 MiB and fails it.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use tend_tests::tend_binary;

const FILES: usize = 10_000;
const LIMIT: u64 = 13 << 20;

fn content(i: usize) -> String {
    format!("# file {i}\nkey = value {i} of a small configuration file\n")
}

/// A fleet of one device and one role declaring `FILES` small files under `/etc/big`, and a root
/// that already holds them (so the first apply only records them: 10,000 atomic writes with
/// their fsyncs would make the test slow, not stricter).
fn write_fleet(dir: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir_all(root.join("etc/big"))?;
    for i in 1..=FILES {
        std::fs::write(root.join(format!("etc/big/f-{i}.conf")), content(i))?;
    }
    std::fs::create_dir_all(dir.join("devices"))?;
    std::fs::create_dir_all(dir.join("roles/big"))?;
    std::fs::write(dir.join("fleet.yaml"), "format: 1\nroles: [big]\n")?;
    std::fs::write(dir.join("devices/dev1.yaml"), "vars: {}\n")?;
    let mut role = String::from("resources:\n");
    for i in 1..=FILES {
        let _ = write!(
            role,
            "  - file: /etc/big/f-{i}.conf\n    content: {}\n",
            serde_json::to_string(&content(i))?
        );
    }
    std::fs::write(dir.join("roles/big/role.yaml"), role)?;
    Ok(())
}

fn apply(root: &Path, fleet: &Path, limit: Option<u64>) -> Result<std::process::Output> {
    let mut cmd = Command::new(tend_binary()?);
    cmd.arg("apply")
        .arg("--root")
        .arg(root)
        .arg("--path")
        .arg(fleet)
        .args(["--device", "dev1"]);
    if let Some(limit) = limit {
        // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_DATA, &lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
    }
    cmd.output().context("running tend apply")
}

#[test]
fn a_no_op_over_ten_thousand_files_fits_in_a_13_mib_data_segment() -> Result<()> {
    let d = tempfile::tempdir()?;
    let (root, fleet) = (d.path().join("root"), d.path().join("fleet"));
    std::fs::create_dir_all(&root)?;
    write_fleet(&fleet, &root)?;
    let first = apply(&root, &fleet, None)?;
    ensure!(
        first.status.code() == Some(0),
        "the first apply finds the files as declared: {}\n{}",
        first.status,
        String::from_utf8_lossy(&first.stderr)
    );
    let noop = apply(&root, &fleet, Some(LIMIT))?;
    let out = String::from_utf8_lossy(&noop.stdout);
    ensure!(
        noop.status.code() == Some(0),
        "the no-op ran out of a {} MiB data segment ({}):\n{out}\n{}",
        LIMIT >> 20,
        noop.status,
        String::from_utf8_lossy(&noop.stderr)
    );
    ensure!(
        out.contains(&format!("0 changed, 0 failed, {FILES} unchanged")),
        "{out}"
    );
    Ok(())
}
