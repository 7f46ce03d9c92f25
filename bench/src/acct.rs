//! Splits a first apply into the agent's own time and apt/dpkg's, with BSD process accounting
//! (`accton`): the kernel writes one record per exited process, with its parent, command name
//! and elapsed time, whatever tool started it and however deep.
//!
//! apt/dpkg's time is the elapsed time of every apt* or dpkg* process that has no apt* or dpkg*
//! ancestor (apt-get runs dpkg, which runs maintainer scripts and hooks: counted once, at the
//! top).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

/// Ticks per second of acct's times (AHZ).
const AHZ: f64 = 100.0;
const RECORD: usize = 64;

pub struct Accounting {
    file: PathBuf,
    on: bool,
}

impl Accounting {
    /// Starts accounting into a new file in `dir`.
    pub fn start(dir: &Path) -> Result<Accounting> {
        let file = dir.join("pacct");
        std::fs::write(&file, b"")?;
        let st = Command::new("accton")
            .arg(&file)
            .output()
            .context("accton (apt-get install acct)")?;
        ensure!(
            st.status.success(),
            "accton: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        Ok(Accounting { file, on: true })
    }

    /// Stops accounting; returns apt/dpkg's elapsed seconds among `root_pid`'s descendants.
    pub fn stop(mut self, root_pid: u32) -> Result<f64> {
        self.off();
        let bytes = std::fs::read(&self.file)?;
        Ok(package_manager_time(&parse(&bytes), root_pid))
    }
}

impl Accounting {
    fn off(&mut self) {
        if std::mem::take(&mut self.on) {
            let _ = Command::new("accton").arg("off").output();
        }
    }
}

/// Accounting stops with the harness too (an error between start and stop).
impl Drop for Accounting {
    fn drop(&mut self) {
        self.off();
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub elapsed: f64,
}

/// Parses version-3 records (struct acct_v3, 64 bytes); skips other versions.
pub fn parse(bytes: &[u8]) -> Vec<Record> {
    let u32_at = |r: &[u8], o: usize| u32::from_ne_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
    bytes
        .chunks_exact(RECORD)
        .filter(|r| r[1] == 3)
        .map(|r| Record {
            pid: u32_at(r, 16),
            ppid: u32_at(r, 20),
            elapsed: f32::from_bits(u32_at(r, 28)) as f64 / AHZ,
            comm: String::from_utf8_lossy(&r[48..64])
                .trim_end_matches('\0')
                .to_string(),
        })
        .collect()
}

fn is_package_manager(comm: &str) -> bool {
    comm.starts_with("apt") || comm.starts_with("dpkg")
}

pub fn package_manager_time(records: &[Record], root_pid: u32) -> f64 {
    let by_pid: HashMap<u32, &Record> = records.iter().map(|r| (r.pid, r)).collect();
    // Some(true): below root_pid with no package manager in between; Some(false): below a
    // package manager; None: not below root_pid.
    let top_level = |mut pid: u32| {
        for _ in 0..64 {
            if pid == root_pid {
                return Some(true);
            }
            match by_pid.get(&pid) {
                Some(r) if is_package_manager(&r.comm) => return Some(false),
                Some(r) if r.ppid != pid => pid = r.ppid,
                _ => return None,
            }
        }
        None
    };
    records
        .iter()
        .filter(|r| is_package_manager(&r.comm))
        .filter(|r| top_level(r.ppid) == Some(true))
        .map(|r| r.elapsed)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pid: u32, ppid: u32, comm: &str, elapsed: f64) -> Record {
        Record {
            pid,
            ppid,
            comm: comm.into(),
            elapsed,
        }
    }

    #[test]
    fn nested_package_managers_count_once_and_strangers_not_at_all() {
        let records = [
            rec(10, 1, "time", 9.0),
            rec(11, 10, "tend", 8.0),
            rec(12, 11, "apt-get", 5.0),
            rec(13, 12, "dpkg", 4.0),
            rec(14, 11, "dpkg-query", 0.5),
            rec(15, 12, "sh", 1.0),
            rec(16, 15, "apt-config", 0.2),
            rec(20, 1, "apt-get", 7.0),
        ];
        assert_eq!(package_manager_time(&records, 10), 5.5);
    }

    #[test]
    fn parses_a_version_3_record() {
        let mut r = [0u8; RECORD];
        r[1] = 3;
        r[16..20].copy_from_slice(&42u32.to_ne_bytes());
        r[20..24].copy_from_slice(&7u32.to_ne_bytes());
        r[28..32].copy_from_slice(&250f32.to_bits().to_ne_bytes());
        r[48..55].copy_from_slice(b"apt-get");
        assert_eq!(parse(&r), vec![rec(42, 7, "apt-get", 2.5)]);
    }
}
