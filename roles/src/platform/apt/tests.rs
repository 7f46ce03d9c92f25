use super::*;

fn tmp_host() -> (tempfile::TempDir, Host) {
    let d = tempfile::tempdir().unwrap();
    let host = Host::new(d.path());
    (d, host)
}

#[test]
fn parses_candidates_from_apt_cache_policy() {
    let text = "\
curl:
  Installed: 7.88.1-10+deb12u5
  Candidate: 7.88.1-10+deb12u15
  Version table:
     7.88.1-10+deb12u15 500
        500 http://deb.debian.org/debian bookworm/main arm64 Packages
 *** 7.88.1-10+deb12u5 100
        100 /var/lib/dpkg/status
libc6:armhf:
  Installed: (none)
  Candidate: 2.36-9
  Version table:
mail-transport-agent:
  Installed: (none)
  Candidate: (none)
  Version table:
";
    let c = parse_policy(text);
    assert_eq!(c.get("curl"), Some(&Some("7.88.1-10+deb12u15".to_string())));
    assert_eq!(c.get("libc6:armhf"), Some(&Some("2.36-9".to_string())));
    assert_eq!(c.get("mail-transport-agent"), Some(&None));
    assert_eq!(c.get("doesnotexist"), None);
}

#[test]
fn common_options_carry_the_lock_timeout_and_recommends() {
    let (_d, mut host) = tmp_host();
    host.dpkg_lock_timeout = Duration::from_secs(42);
    let o = common_options(&host, true).join(" ");
    assert_eq!(o, "-y -q -o DPkg::Lock::Timeout=42 -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef -o APT::Install-Recommends=true");
    assert!(common_options(&host, false)
        .join(" ")
        .ends_with("APT::Install-Recommends=false"));
}

#[test]
fn lock_failures_say_retry_with_apts_line() {
    let (_d, mut host) = tmp_host();
    host.dpkg_lock_timeout = Duration::from_secs(120);
    let text = "Waiting for cache lock: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 77 (unattended-upgr)...\n\
E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 77 (unattended-upgr)\n\
E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?\n";
    let e = classify(&host, "apt-get install curl", "exit status: 100", text).to_string();
    assert_eq!(
            e,
            "dpkg is locked by another process (held longer than 120 s): E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 77 (unattended-upgr); tend will retry on its next run"
        );
    let lists = classify(&host, "apt-get update", "exit status: 100", "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 9 (apt-get)\nE: Unable to lock directory /var/lib/apt/lists/\n");
    assert!(
        lists
            .to_string()
            .starts_with("apt's package lists are locked"),
        "{lists}"
    );
}

#[test]
fn interrupted_dpkg_says_configure_a() {
    let (_d, host) = tmp_host();
    let e = classify(&host, "apt-get install curl", "exit status: 100", "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem. \n").to_string();
    assert!(
        e.starts_with("dpkg was interrupted: tend finishes it with `dpkg --configure -a`"),
        "{e}"
    );
}

#[test]
fn other_failures_keep_apts_and_dpkgs_own_lines() {
    let (_d, host) = tmp_host();
    let text = "Reading package lists...\nBuilding dependency tree...\nE: Version '9.9' for 'hello' was not found\n";
    let e = classify(&host, "apt-get install hello=9.9", "exit status: 100", text).to_string();
    assert_eq!(e, "`apt-get install hello=9.9` failed (exit status: 100): E: Version '9.9' for 'hello' was not found");
    let text = "Setting up x (1.0) ...\ndpkg: error processing package x (--configure):\n installed x package post-installation script subprocess returned error exit status 1\nErrors were encountered while processing:\n x\nE: Sub-process /usr/bin/dpkg returned an error code (1)\n";
    let e = classify(&host, "apt-get install x", "exit status: 100", text).to_string();
    assert!(
        e.contains("dpkg: error processing package x") && e.contains("E: Sub-process"),
        "{e}"
    );
}

#[test]
fn no_lists_are_stale_and_old_lists_are_stale() {
    let (d, host) = tmp_host();
    assert_eq!(lists_refreshed_at(&host).unwrap(), None);
    let day = Duration::from_secs(86400);
    assert!(lists_stale(None, day, SystemTime::now()));
    let lists = d.path().join("var/lib/apt/lists");
    fs::create_dir_all(&lists).unwrap();
    fs::write(
        lists.join("deb.debian.org_debian_dists_bookworm_main_binary-arm64_Packages"),
        "",
    )
    .unwrap();
    assert_eq!(
        lists_refreshed_at(&host).unwrap(),
        None,
        "Packages files alone do not date a refresh"
    );
    let old = SystemTime::now() - 3 * day;
    let f = fs::File::create(lists.join("deb.debian.org_debian_dists_bookworm_InRelease")).unwrap();
    f.set_modified(old).unwrap();
    let at = lists_refreshed_at(&host).unwrap();
    assert_eq!(at, Some(old));
    assert!(lists_stale(at, day, SystemTime::now()));
    assert!(!lists_stale(at, 4 * day, SystemTime::now()));
    assert!(
        !lists_stale(Some(SystemTime::now() + day), day, SystemTime::now()),
        "a clock set back is no reason to update"
    );
}

#[test]
fn a_success_stamp_makes_old_server_dated_lists_fresh() {
    let (d, host) = tmp_host();
    let lists = d.path().join("var/lib/apt/lists");
    fs::create_dir_all(&lists).unwrap();
    let f = fs::File::create(lists.join("127.0.0.1:8080_debian_dists_bookworm_Release")).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(400 * 86400))
        .unwrap();
    touch_stamp(&host).unwrap();
    assert!(d
        .path()
        .join("var/lib/apt/periodic/update-success-stamp")
        .is_file());
    let at = lists_refreshed_at(&host).unwrap();
    assert!(!lists_stale(
        at,
        Duration::from_secs(3600),
        SystemTime::now()
    ));
}

/// Bug: the newest InRelease dated every list, so a third-party source that `apt_source`
/// had just fetched alone made week-old (or missing) Debian lists look fresh, and Debian
/// packages then failed with "Unable to locate package".
#[test]
fn one_freshly_fetched_source_does_not_make_old_or_missing_lists_fresh() {
    let (d, host) = tmp_host();
    let lists = d.path().join("var/lib/apt/lists");
    fs::create_dir_all(&lists).unwrap();
    let week = Duration::from_secs(7 * 86400);
    let set = |name: &str, t: SystemTime| {
        fs::File::create(lists.join(name))
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    set(
        "deb.debian.org_debian_dists_bookworm_InRelease",
        SystemTime::now() - week,
    );
    set(
        "127.0.0.1:8080_debian_dists_bookworm_InRelease",
        SystemTime::now(),
    );
    let day = Duration::from_secs(86400);
    assert!(
        lists_stale(lists_refreshed_at(&host).unwrap(), day, SystemTime::now()),
        "the old Debian lists must be refreshed"
    );

    // Debian's lists missing altogether: only the source fetched alone is there.
    fs::remove_file(lists.join("deb.debian.org_debian_dists_bookworm_InRelease")).unwrap();
    touch(&host, PARTIAL_STAMP).unwrap();
    assert_eq!(
        lists_refreshed_at(&host).unwrap(),
        None,
        "a partial update without a complete one since proves nothing"
    );
    std::thread::sleep(Duration::from_millis(20));
    touch_stamp(&host).unwrap();
    assert!(
        !lists_stale(lists_refreshed_at(&host).unwrap(), day, SystemTime::now()),
        "a complete update after it makes the lists fresh again"
    );
}

#[test]
fn fresh_lists_need_no_update_and_no_apt_call() {
    let (d, host) = tmp_host();
    let lists = d.path().join("var/lib/apt/lists");
    fs::create_dir_all(&lists).unwrap();
    fs::write(
        lists.join("deb.debian.org_debian_dists_bookworm_InRelease"),
        "",
    )
    .unwrap();
    // apt cannot run inside this tempdir root: a call would fail, so Ok(false) proves none was made.
    assert!(!ensure_fresh_lists(&host).unwrap());
    host.flags().apt_updated = true;
    fs::File::options()
        .write(true)
        .open(lists.join("deb.debian.org_debian_dists_bookworm_InRelease"))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(90 * 86400))
        .unwrap();
    assert!(
        !ensure_fresh_lists(&host).unwrap(),
        "lists are refreshed at most once per run"
    );
    host.flags().apt_sources_changed = true;
    assert!(
        ensure_fresh_lists(&host).is_err(),
        "a changed source forces an update (which cannot run here)"
    );
}

#[test]
fn update_waits_a_bounded_time_for_the_lists_lock() {
    let (d, mut host) = tmp_host();
    let lock = d.path().join("var/lib/apt/lists/lock");
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let held = crate::platform::held_lock::HeldLock::take(&lock);
    host.dpkg_lock_timeout = Duration::from_secs(1);
    let start = Instant::now();
    wait_for_lists_lock(&host);
    let waited = start.elapsed();
    drop(held);
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let start = Instant::now();
    wait_for_lists_lock(&host);
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "no wait once the lock is free"
    );
}
