use std::os::fd::AsRawFd;

use super::*;

/// A root with the lock dir; `hold` takes an exclusive flock, as an application does.
fn root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("run/tend/inhibit.d")).unwrap();
    d
}

fn hold(path: &Path) -> File {
    let f = File::open(path).unwrap();
    // SAFETY: flock on a file we own.
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    f
}

#[test]
fn a_held_lock_file_defers_restarts_and_reboots_under_its_name_and_first_line() {
    let d = root();
    let dir = d.path().join("run/tend/inhibit.d");
    std::fs::write(dir.join("app-update.lock"), "flashing the modem\nmore\n").unwrap();
    std::fs::write(dir.join("idle.lock"), "").unwrap();
    std::fs::write(dir.join("notes.txt"), "").unwrap();
    assert_eq!(
        probe(d.path()),
        Inhibitors::default(),
        "nothing is held yet"
    );

    let held = hold(&dir.join("app-update.lock"));
    let _also = hold(&dir.join("notes.txt"));
    let found = probe(d.path());
    let app = Holder {
        name: "app-update".into(),
        why: Some("flashing the modem".into()),
    };
    assert_eq!(found.restarts, std::slice::from_ref(&app));
    assert_eq!(found.reboots, [app]);
    assert_eq!(
        found.restart_holder().as_deref(),
        Some("app-update (flashing the modem)")
    );
    assert!(found.warnings.is_empty(), "{:?}", found.warnings);
    assert_eq!(
        std::fs::read_to_string(dir.join("app-update.lock")).unwrap(),
        "flashing the modem\nmore\n",
        "the probe never writes the holder's file"
    );

    drop(held);
    assert_eq!(probe(d.path()).restart_holder(), None, "released");
}

#[test]
fn no_lock_dir_and_no_run_dir_hold_nothing() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(probe(d.path()), Inhibitors::default());
    std::fs::create_dir_all(d.path().join("run")).unwrap();
    assert_eq!(probe(d.path()), Inhibitors::default());
}

/// A local user may plant a symlink to a file someone holds, or a FIFO that blocks an open: the
/// probe follows neither, never waits, and says what it ignored.
#[test]
fn a_planted_symlink_fifo_or_directory_is_ignored_never_followed_or_waited_on() {
    let d = root();
    let dir = d.path().join("run/tend/inhibit.d");
    let elsewhere = d.path().join("held-elsewhere");
    std::fs::write(&elsewhere, "").unwrap();
    let _held = hold(&elsewhere);
    std::os::unix::fs::symlink(&elsewhere, dir.join("link.lock")).unwrap();
    let fifo = std::ffi::CString::new(dir.join("pipe.lock").to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(dir.join("dir.lock")).unwrap();

    let started = std::time::Instant::now();
    let found = probe(d.path());
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(
        found.restarts.is_empty() && found.reboots.is_empty(),
        "{found:?}"
    );
    let w = found.warnings.join("\n");
    assert!(w.contains("link.lock ignored: a symlink"), "{w}");
    assert!(w.contains("pipe.lock ignored: a FIFO"), "{w}");
    assert!(w.contains("dir.lock ignored: a directory"), "{w}");
    assert!(
        std::fs::symlink_metadata(dir.join("link.lock"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "left as it is"
    );
}

/// The record systemd-logind writes (logind-inhibit.c, inhibitor_save): WHO and WHY are C-escaped,
/// then quoted as an env file; the FIFO beside it is never opened.
#[test]
fn a_logind_shutdown_block_defers_reboots_only_and_delay_or_sleep_does_not() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("run/systemd/inhibit");
    std::fs::create_dir_all(&dir).unwrap();
    let record = |what: &str, mode: &str, who: &str| {
        format!(
            "# This is private data. Do not parse.\nWHAT={what}\nMODE={mode}\nUID=0\nPID=42\n\
             WHO={who}\nWHY=\"Flashing\\\\x20firmware\"\nFIFO=/run/systemd/inhibit/1.ref\n"
        )
    };
    std::fs::write(
        dir.join("1"),
        record("shutdown:sleep", "block", "\"Modem Updater\""),
    )
    .unwrap();
    std::fs::write(dir.join("2"), record("shutdown", "delay", "delayer")).unwrap();
    std::fs::write(dir.join("3"), record("sleep:idle", "block", "sleeper")).unwrap();
    let fifo = std::ffi::CString::new(dir.join("1.ref").to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

    let found = probe(d.path());
    assert!(found.restarts.is_empty(), "logind holds no restart");
    assert_eq!(
        found.reboots,
        [Holder {
            name: "Modem Updater".into(),
            why: Some("Flashing firmware".into())
        }]
    );
    assert!(found.warnings.is_empty(), "{:?}", found.warnings);
}

#[test]
fn deferral_lengths_read_as_hours_minutes_or_seconds() {
    assert_eq!(human(86400), "24h");
    assert_eq!(human(90_007), "25h", "seconds past the hour are not shown");
    assert_eq!(human(5400), "1h30m");
    assert_eq!(human(120), "2m");
    assert_eq!(human(7), "7s");
}
