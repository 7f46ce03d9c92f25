use super::*;

const STATUS_TEXT: &str = "\
Package: dpkg
Status: install ok installed
Priority: required
Architecture: arm64
Version: 1.21.22
Description: Debian package management system
 This package provides the low-level infrastructure.
 Package: fake-in-description
 .
 Status: install ok installed

Package: curl
Status: install ok installed
Architecture: arm64
Version: 7.88.1-10+deb12u5
Conffiles:
 /etc/curlrc 0123456789abcdef

Package: libc6
Status: install ok installed
Architecture: arm64
Multi-Arch: same
Version: 2.36-9

Package: libc6
Status: install ok installed
Architecture: armhf
Multi-Arch: same
Version: 2.36-8

Package: tzdata
Status: hold ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: oldthing
Status: deinstall ok config-files
Architecture: arm64
Version: 1.0-1

Package: gone
Status: purge ok not-installed
Architecture: arm64

Package: halfway
Status: install ok half-configured
Architecture: arm64
Version: 3.0-1

Package: trig
Status: install ok triggers-pending
Architecture: arm64
Version: 1-1
";

#[test]
fn parses_installed_packages_keyed_as_apt_names_them() {
    let s = DpkgStatus::parse(STATUS_TEXT, &[]);
    assert_eq!(s.native_arch.as_deref(), Some("arm64"));
    assert_eq!(
        s.get("curl").map(|p| p.version.as_str()),
        Some("7.88.1-10+deb12u5")
    );
    assert_eq!(s.get("libc6").map(|p| p.version.as_str()), Some("2.36-9"));
    assert_eq!(
        s.get("libc6:arm64").map(|p| p.version.as_str()),
        Some("2.36-9")
    );
    assert_eq!(
        s.get("libc6:armhf").map(|p| p.version.as_str()),
        Some("2.36-8")
    );
    assert_eq!(
        s.get("tzdata").map(|p| p.arch.as_str()),
        Some("all"),
        "held packages are installed"
    );
    assert_eq!(s.get("tzdata:all").map(|p| p.arch.as_str()), Some("all"));
    assert!(
        s.get("trig").is_some(),
        "pending triggers leave the package configured"
    );
    assert!(s.get("oldthing").is_none());
    assert!(s.has_config_files("oldthing"));
    assert!(s.get("gone").is_none() && !s.has_config_files("gone"));
    assert!(
        s.get("fake-in-description").is_none(),
        "continuation lines are not fields"
    );
    assert!(s.get("halfway").is_none());
    assert_eq!(s.installed.len(), 6);
}

#[test]
fn reports_unfinished_packages_with_the_fix() {
    let s = DpkgStatus::parse(STATUS_TEXT, &[]);
    assert_eq!(
        s.unfinished,
        vec![Unfinished {
            name: "halfway".into(),
            arch: "arm64".into(),
            state: "half-configured".into()
        }]
    );
    let msg = s.interrupted(false).unwrap();
    assert!(
        msg.contains("halfway is half-configured") && msg.contains("dpkg --configure -a"),
        "{msg}"
    );
    let busy = s.interrupted(true).unwrap();
    assert!(
        busy.contains("retry on its next run") && !busy.contains("--configure"),
        "{busy}"
    );
    let clean = DpkgStatus::parse(
        "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n",
        &[],
    );
    assert_eq!(clean.interrupted(false), None);
}

#[test]
fn journal_entries_override_the_status_file() {
    let journal =
        "Package: curl\nStatus: install ok unpacked\nArchitecture: arm64\nVersion: 8.0-1\n";
    let s = DpkgStatus::parse(STATUS_TEXT, &[journal]);
    assert!(s.get("curl").is_none());
    assert!(s.journal_pending);
    assert!(s
        .unfinished
        .iter()
        .any(|u| u.name == "curl" && u.state == "unpacked"));
}

#[test]
fn reinstreq_is_unfinished_even_when_installed() {
    let s = DpkgStatus::parse(
        "Package: x\nStatus: install reinstreq installed\nArchitecture: all\nVersion: 1\n",
        &[],
    );
    assert!(s.get("x").is_none());
    assert_eq!(s.unfinished[0].state, "reinstreq");
}

#[test]
fn tolerates_crlf_whitespace_separators_and_missing_final_newline() {
    let text = "Package: a\r\nStatus: install ok installed\r\nVersion: 1.0\r\nArchitecture: all\r\n \t\nPackage: b\nStatus: install ok installed\nVersion: 2.0\nArchitecture: all";
    let s = DpkgStatus::parse(text, &[]);
    assert_eq!(s.get("a").map(|p| p.version.as_str()), Some("1.0"));
    assert_eq!(s.get("b").map(|p| p.version.as_str()), Some("2.0"));
}

#[test]
fn reads_status_journal_and_architecture_from_the_root() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("var/lib/dpkg/updates")).unwrap();
    fs::write(d.path().join("var/lib/dpkg/status"), STATUS_TEXT).unwrap();
    let host = Host::new(d.path());
    assert_eq!(native_architecture(&host).unwrap(), "arm64");
    let s = read(&host).unwrap();
    assert!(
        !s.journal_pending,
        "an empty updates directory is no interruption"
    );
    assert_eq!(installed(&host).unwrap().len(), 6);
    fs::write(d.path().join("var/lib/dpkg/updates/tmp.i"), "garbage").unwrap();
    fs::write(
        d.path().join("var/lib/dpkg/updates/0002"),
        "Package: curl\nStatus: install ok half-installed\nArchitecture: arm64\nVersion: 9-1\n",
    )
    .unwrap();
    fs::write(
        d.path().join("var/lib/dpkg/updates/0001"),
        "Package: curl\nStatus: install ok installed\nArchitecture: arm64\nVersion: 8-1\n",
    )
    .unwrap();
    let s = read(&host).unwrap();
    assert!(s.journal_pending);
    assert!(s.get("curl").is_none(), "the newest journal entry wins");
    assert!(!lock_held(&host));
}

#[test]
fn missing_status_file_says_what_is_wrong() {
    let d = tempfile::tempdir().unwrap();
    let err = read(&Host::new(d.path())).unwrap_err().to_string();
    assert!(
        err.contains("/var/lib/dpkg/status") && err.contains("not a Debian system"),
        "{err}"
    );
    assert!(native_architecture(&Host::new(d.path())).is_err());
}

#[test]
fn foreign_instance_alone_does_not_satisfy_the_bare_name() {
    let text = "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\nPackage: wine32\nStatus: install ok installed\nArchitecture: i386\nVersion: 8.0\n";
    let s = DpkgStatus::parse(text, &[]);
    assert!(s.get("wine32").is_none());
    assert!(s.get("wine32:i386").is_some());
}

#[test]
fn sees_a_record_lock_held_by_another_program() {
    let d = tempfile::tempdir().unwrap();
    let lock = d.path().join("var/lib/dpkg/lock-frontend");
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let held = crate::platform::held_lock::HeldLock::take(&lock);
    assert!(lock_held(&Host::new(d.path())));
    drop(held);
    assert!(!lock_held(&Host::new(d.path())));
}
