use super::*;
use crate::spec::NoSources;
use serde_json::json;

fn pkg(spec: serde_json::Value) -> Package {
    Package::from_spec(parse_spec(spec).unwrap()).unwrap()
}

fn spec_err(spec: serde_json::Value) -> SpecError {
    (TYPE.build)(spec, &NoSources)
        .err()
        .expect("the spec must be refused")
}

const STATUS: &str = "\
Package: dpkg
Status: install ok installed
Architecture: arm64
Version: 1.21.22

Package: curl
Status: install ok installed
Architecture: arm64
Version: 7.88.1-10+deb12u5
Description: command line tool for transferring data with URL syntax
 curl is a command line tool for transferring data with URL syntax.

Package: hello
Status: install ok installed
Architecture: arm64
Version: 1:2.0-1

Package: libfoo1
Status: install ok installed
Architecture: armhf
Multi-Arch: same
Version: 3.0-1

Package: oldconf
Status: deinstall ok config-files
Architecture: arm64
Version: 1.0-1
";

fn root(status: &str) -> (tempfile::TempDir, Host) {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("var/lib/dpkg/updates")).unwrap();
    std::fs::create_dir_all(d.path().join("var/lib/apt/lists")).unwrap();
    std::fs::write(d.path().join("var/lib/dpkg/status"), status).unwrap();
    std::fs::write(
        d.path()
            .join("var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease"),
        "",
    )
    .unwrap();
    let host = Host::new(d.path());
    (d, host)
}

#[test]
fn bad_names_are_refused_with_the_rule() {
    for bad in [
        "Curl",
        "a",
        "-x",
        "curl/bookworm",
        "foo_bar",
        "libfoo:",
        "libfoo:ARM",
    ] {
        let e = spec_err(json!({"names": [bad]}));
        assert_eq!(e.key.as_deref(), Some("package"), "{bad}");
        assert!(e.message.contains(bad), "{bad}: {}", e.message);
    }
    assert!(spec_err(json!({"names": []})).message.contains("empty"));
    assert!(spec_err(json!({"names": 3}))
        .message
        .contains("list of names"));
    assert!(spec_err(json!({"names": ["curl", "curl=1.0"]}))
        .message
        .contains("twice"));
    assert_eq!(
        spec_err(json!({"names": "curl", "version": "1"}))
            .key
            .as_deref(),
        Some("version")
    );
    assert!(spec_err(json!({"names": "curl", "state": "installed"}))
        .message
        .contains("unknown variant"));
}

#[test]
fn bad_pins_are_refused() {
    for bad in [
        "hello=",
        "hello=v1",
        "hello=1.0=2",
        "hello=1 .0",
        "hello=x:1.0",
    ] {
        let e = spec_err(json!({"names": [bad]}));
        assert_eq!(e.key.as_deref(), Some("package"), "{bad}");
    }
    let e = spec_err(json!({"names": ["hello=1.0-1"], "state": "latest"}));
    assert_eq!(e.key.as_deref(), Some("state"));
    assert!(e.message.contains("state: present"), "{}", e.message);
    assert!(
        spec_err(json!({"names": ["hello=1.0-1"], "state": "absent"}))
            .key
            .is_some()
    );
}

#[test]
fn accepts_strings_lists_arch_qualifiers_and_pins() {
    let p = pkg(json!({"names": "curl  wget"}));
    assert_eq!(Resource::id(&p), "curl, wget");
    let p = pkg(
        json!({"names": ["libc6:armhf", "hello=1:2.0-1", "g++-12"], "install_recommends": true}),
    );
    assert_eq!(Resource::id(&p), "libc6:armhf, hello=1:2.0-1, g++-12");
    assert_eq!(p.wanted[1].name, "hello");
    assert_eq!(p.wanted[1].version.as_deref(), Some("1:2.0-1"));
    assert!(p.recommends);
    assert!((TYPE.build)(json!({"names": "curl", "state": "purged"}), &NoSources).is_ok());
}

#[test]
fn converged_states_need_no_apt_at_all() {
    let (_d, host) = root(STATUS);
    // apt cannot run in this tempdir root: any call would make read fail.
    for spec in [
        json!({"names": ["curl", "hello"]}),
        json!({"names": ["hello=1:2.0-1", "curl=7.88.1-10+deb12u5"]}),
        json!({"names": ["libfoo1:armhf"]}),
        json!({"names": ["vim", "oldconf"], "state": "absent"}),
        json!({"names": ["vim", "libfoo1"], "state": "purged"}),
    ] {
        let p = pkg(spec.clone());
        let todo = p.read(&host).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(p.diff(&todo, &host), None, "{spec}");
    }
}

#[test]
fn pins_and_removals_are_decided_without_apt() {
    let (_d, host) = root(STATUS);
    let p = pkg(json!({"names": ["hello=1:1.0-1", "curl"]}));
    let todo = p.read(&host).unwrap();
    assert_eq!(
        p.diff(&todo, &host).unwrap().summary,
        "install hello 1:2.0-1 -> 1:1.0-1"
    );
    assert_eq!(todo.installs[0].arg, "hello=1:1.0-1");

    let p = pkg(json!({"names": ["curl", "vim", "libfoo1:armhf"], "state": "absent"}));
    let todo = p.read(&host).unwrap();
    assert_eq!(
        p.diff(&todo, &host).unwrap().summary,
        "remove curl, libfoo1:armhf"
    );

    let p = pkg(json!({"names": ["oldconf", "hello"], "state": "purged"}));
    let todo = p.read(&host).unwrap();
    assert_eq!(
        p.diff(&todo, &host).unwrap().summary,
        "purge oldconf, hello"
    );
}

#[test]
fn latest_upgrades_only_to_a_newer_candidate() {
    let status = dpkg::DpkgStatus::parse(STATUS, &[]);
    let p = pkg(
        json!({"names": ["curl", "hello", "vim", "localpkg", "libfoo1:arm64"], "state": "latest"}),
    );
    let mut todo = p.plan(&status);
    assert_eq!(todo.installs.len(), 5, "latest always asks apt");
    let policy = apt::parse_policy(
        "curl:\n  Installed: 7.88.1-10+deb12u5\n  Candidate: 7.88.1-10+deb12u15\n\
         hello:\n  Installed: 1:2.0-1\n  Candidate: 1:2.0-1\n\
         vim:\n  Installed: (none)\n  Candidate: 2:9.0.1378-2\n\
         libfoo1:\n  Installed: (none)\n  Candidate: 3.1-1\n",
    );
    p.resolve(&mut todo, &policy, status.native_arch.as_deref());
    assert_eq!(
        p.diff(&todo, &Host::new("/nonexistent")).unwrap().summary,
        "install curl 7.88.1-10+deb12u5 -> 7.88.1-10+deb12u15, vim 2:9.0.1378-2, localpkg, libfoo1:arm64 3.1-1 (localpkg not in the current package lists)"
    );
    assert_eq!(
        todo.installs
            .iter()
            .map(|o| o.arg.as_str())
            .collect::<Vec<_>>(),
        ["curl", "vim", "localpkg", "libfoo1:arm64"]
    );
}

#[test]
fn latest_keeps_an_installed_package_apt_does_not_know() {
    let status = dpkg::DpkgStatus::parse(STATUS, &[]);
    let p = pkg(json!({"names": ["hello"], "state": "latest"}));
    let mut todo = p.plan(&status);
    p.resolve(&mut todo, &HashMap::new(), Some("arm64"));
    assert!(todo.is_empty());
}

#[test]
fn present_shows_the_candidate_it_will_install() {
    let status = dpkg::DpkgStatus::parse(STATUS, &[]);
    let p = pkg(json!({"names": ["curl", "jq", "hello=1:2.1-1"]}));
    let mut todo = p.plan(&status);
    p.resolve(
        &mut todo,
        &apt::parse_policy("jq:\n  Candidate: 1.6-2.1\n"),
        Some("arm64"),
    );
    assert_eq!(
        p.diff(&todo, &Host::new("/nonexistent")).unwrap().summary,
        "install jq 1.6-2.1, hello 1:2.0-1 -> 1:2.1-1"
    );
}

#[test]
fn interrupted_dpkg_is_a_planned_repair_even_without_other_work() {
    let broken = format!("{STATUS}\nPackage: halfway\nStatus: install ok half-configured\nArchitecture: arm64\nVersion: 1-1\n");
    let (_d, host) = root(&broken);
    let converged = pkg(json!({"names": ["curl"]}));
    let change = converged
        .diff(&converged.read(&host).unwrap(), &host)
        .expect("a half-configured package is work for tend");
    assert!(
        change.summary.contains("dpkg --configure -a")
            && change.summary.contains("halfway is half-configured"),
        "{}",
        change.summary
    );
    let absent = pkg(json!({"names": ["curl"], "state": "absent"}));
    let summary = absent
        .diff(&absent.read(&host).unwrap(), &host)
        .unwrap()
        .summary;
    assert!(
        summary.starts_with("finish the interrupted dpkg") && summary.ends_with("remove curl"),
        "{summary}"
    );
}

#[test]
fn a_held_dpkg_lock_fails_only_when_there_is_work() {
    let broken = format!("{STATUS}\nPackage: halfway\nStatus: install ok half-configured\nArchitecture: arm64\nVersion: 1-1\n");
    let (d, host) = root(&broken);
    let lock = d.path().join("var/lib/dpkg/lock-frontend");
    let _held = crate::platform::held_lock::HeldLock::take(&lock);
    let converged = pkg(json!({"names": ["curl"]}));
    assert_eq!(converged.diff(&converged.read(&host).unwrap(), &host), None);
    let err = pkg(json!({"names": ["vim"], "state": "present"}))
        .read(&host)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("retry on its next run") && err.contains("halfway is half-configured"),
        "{err}"
    );
}

fn prefetched(p: &Package, host: &Host) -> String {
    let mut prefetch = Prefetch::default();
    Resource::prefetch(p, host, &mut prefetch);
    crate::prefetch::Fetch::describe(prefetch.get::<AptDownload>())
}

#[test]
fn what_will_be_installed_is_named_for_the_download_before_the_first_change() {
    let (_d, host) = root(STATUS);
    assert_eq!(
        prefetched(&pkg(json!({"names": ["curl", "hello"]})), &host),
        ""
    );
    assert_eq!(
        prefetched(
            &pkg(json!({"names": ["curl", "jq", "hello=1:2.1-1"]})),
            &host
        ),
        "2 packages"
    );
    assert_eq!(
        prefetched(
            &pkg(json!({"names": ["curl", "jq"], "state": "latest"})),
            &host
        ),
        "1 package",
        "an installed latest package's candidate is not known yet"
    );
    assert_eq!(
        prefetched(&pkg(json!({"names": "jq", "state": "absent"})), &host),
        ""
    );
}

/// Bug: after a power cut during an install, `apt-get install --download-only` refused ("dpkg
/// was interrupted") and failed the whole run, so dpkg's repair never ran.
#[test]
fn an_interrupted_dpkg_names_no_download_so_its_repair_runs() {
    let half = format!("{STATUS}\nPackage: jq\nStatus: install ok half-configured\nArchitecture: arm64\nVersion: 1.6-2\n");
    let (_d, host) = root(&half);
    assert_eq!(prefetched(&pkg(json!({"names": ["nano"]})), &host), "");
}
