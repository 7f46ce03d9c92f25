use super::*;

#[test]
fn policy_roots_and_threshold_are_read_with_a_threshold_of_one_by_default() {
    let d = tempfile::tempdir().unwrap();
    let admin = d.path().join(ADMIN_CONFIG);
    std::fs::create_dir_all(admin.parent().unwrap()).unwrap();
    std::fs::write(&admin, "verify: {policy_roots: /etc/tend/policy_roots}\n").unwrap();
    let c = Config::load(d.path()).unwrap();
    assert_eq!(
        c.verify.policy_roots.as_deref(),
        Some("/etc/tend/policy_roots")
    );
    assert_eq!(c.verify.policy_threshold, 1);
    std::fs::write(&admin, "verify: {policy_threshold: 2}\n").unwrap();
    assert_eq!(Config::load(d.path()).unwrap().verify.policy_threshold, 2);
}

#[test]
fn dropins_override_key_by_key() {
    let d = tempfile::tempdir().unwrap();
    let w = |p: &str, s: &str| {
        let p = d.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w(
        VENDOR_CONFIG,
        "state_dir: /var/lib/tend\napt: {lock_timeout: 60}\n",
    );
    w(
        ADMIN_CONFIG,
        "device: {id: pi-1}\nsource: {url: 'https://git.example.com/fleet.git', branch: canary}\n",
    );
    w(
        "etc/tend/tend.d/20-tags.yaml",
        "source: {follow: tags}\nverify: {allowed_signers: /etc/tend/allowed_signers}\n",
    );
    w("etc/tend/tend.d/10-data.yaml", "state_dir: /data/tend\n");
    let c = Config::load(d.path()).unwrap();
    assert_eq!(c.state_dir, "/data/tend");
    assert_eq!(c.device_id.as_deref(), Some("pi-1"));
    assert_eq!(c.apt_lock_timeout, Duration::from_secs(60));
    assert_eq!(c.fragments.len(), 4);
    assert_eq!(c.source.branch, "canary");
    assert_eq!(
        c.source.url.as_deref(),
        Some("https://git.example.com/fleet.git")
    );
    assert_eq!(c.source.follow, Follow::Tags);
    assert!(c.source.url_credentials.is_none());
    assert_eq!(
        c.verify.allowed_signers.as_deref(),
        Some("/etc/tend/allowed_signers")
    );
}

#[test]
fn fetch_bounds_default_for_a_device_and_can_be_set() {
    let d = tempfile::tempdir().unwrap();
    let c = Config::load(d.path()).unwrap();
    assert_eq!(c.source.max_fetch_bytes, 256 << 20);
    assert_eq!(c.source.min_transfer_rate, 1024);
    assert_eq!(c.source.transfer_rate_window, Duration::from_secs(60));
    let p = d.path().join(ADMIN_CONFIG);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(
        p,
        "source: {max_fetch_bytes: 1048576, min_transfer_rate: 0, transfer_rate_window: 0}
",
    )
    .unwrap();
    let c = Config::load(d.path()).unwrap();
    assert_eq!(c.source.max_fetch_bytes, 1 << 20);
    assert_eq!(c.source.min_transfer_rate, 0);
    assert_eq!(c.source.transfer_rate_window, Duration::from_secs(1));
}

#[test]
fn the_pointer_is_off_by_default_and_max_staleness_is_seconds() {
    let d = tempfile::tempdir().unwrap();
    let c = Config::load(d.path()).unwrap();
    assert_eq!(c.source.pointer, None);
    assert_eq!(c.source.max_staleness, None);
    let p = d.path().join(ADMIN_CONFIG);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(
        p,
        "source: {pointer: 'https://cdn.example.com/production.pointer', max_staleness: 86400}\n",
    )
    .unwrap();
    let c = Config::load(d.path()).unwrap();
    assert_eq!(
        c.source.pointer.as_deref(),
        Some("https://cdn.example.com/production.pointer")
    );
    assert_eq!(c.source.max_staleness, Some(Duration::from_secs(86_400)));
}

#[test]
fn reboot_window_and_command_are_parsed_and_never_is_the_default() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/tend")).unwrap();
    let c = Config::load(d.path()).unwrap();
    assert_eq!(c.reboot.window, crate::device::window::Window::Never);
    assert_eq!(c.reboot.command, ["systemctl", "reboot"]);
    std::fs::write(
        d.path().join(ADMIN_CONFIG),
        "reboot:\n  window: \"02:00-04:00\"\n  command: [/sbin/reboot, -f]\n",
    )
    .unwrap();
    let c = Config::load(d.path()).unwrap();
    assert_eq!(c.reboot.window.describe(), "02:00-04:00");
    assert_eq!(c.reboot.command, ["/sbin/reboot", "-f"]);
    std::fs::write(d.path().join(ADMIN_CONFIG), "reboot:\n  window: nightly\n").unwrap();
    let e = Config::load(d.path()).unwrap_err();
    assert!(
        e.message.contains("nightly") && e.to_string().contains("02:00-04:00"),
        "{e}"
    );
    std::fs::write(d.path().join(ADMIN_CONFIG), "reboot:\n  command: []\n").unwrap();
    assert!(Config::load(d.path()).is_err(), "an empty command");
}

#[test]
fn guard_endpoints_are_parsed_when_loaded() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/tend")).unwrap();
    std::fs::write(
        d.path().join(ADMIN_CONFIG),
        "guard:\n  endpoints: [\"https://mender.example.com\", \"broker.lan:8883\"]\n  retries: 0\n",
    )
    .unwrap();
    let c = Config::load(d.path()).unwrap();
    assert_eq!(c.guard.endpoints.len(), 2);
    assert_eq!(c.guard.endpoints[0].port, 443);
    assert_eq!(c.guard.retries, 0);
    std::fs::write(
        d.path().join(ADMIN_CONFIG),
        "guard:\n  endpoints: [\"ftp://x\"]\n",
    )
    .unwrap();
    let e = Config::load(d.path()).unwrap_err();
    assert!(
        e.message.contains("guard.endpoints") && e.message.contains("ftp://x"),
        "{e}"
    );
}

#[test]
fn a_token_in_source_url_is_kept_apart_from_the_url() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/tend")).unwrap();
    std::fs::write(
        d.path().join(ADMIN_CONFIG),
        "source: {url: 'https://deploy:tok-in-url@git.lan/fleet.git'}\n",
    )
    .unwrap();
    let c = Config::load(d.path()).unwrap();
    assert_eq!(c.source.url.as_deref(), Some("https://git.lan/fleet.git"));
    let creds = c.source.url_credentials.as_ref().unwrap();
    assert_eq!(creds.password.expose(), "tok-in-url");
    assert!(!format!("{c:?}").contains("tok-in-url"));
}

#[test]
fn mirrors_keep_their_order_and_only_their_own_credentials() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/tend")).unwrap();
    std::fs::write(
        d.path().join(ADMIN_CONFIG),
        "source:\n  url: https://git.lan/fleet.git\n  password_file: /etc/tend/token\n  mirrors:\n    - 'https://m:tok-of-mirror@relay.site/fleet.git'\n    - ssh://git@cdn2/fleet.git\n  pointer_mirrors: [https://cdn2/pointer]\n",
    )
    .unwrap();
    let c = Config::load(d.path()).unwrap();
    let urls: Vec<&str> = c.source.mirrors.iter().map(|m| m.url.as_str()).collect();
    assert_eq!(
        urls,
        ["https://relay.site/fleet.git", "ssh://git@cdn2/fleet.git"]
    );
    let creds = c.source.mirrors[0].credentials.as_ref().unwrap();
    assert_eq!(creds.password.expose(), "tok-of-mirror");
    assert!(c.source.mirrors[1].credentials.is_none());
    assert_eq!(c.source.pointer_mirrors, ["https://cdn2/pointer"]);
    assert!(!format!("{c:?}").contains("tok-of-mirror"));
}

#[test]
fn a_bad_or_repeated_mirror_names_its_line() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/tend")).unwrap();
    for (text, word) in [
        ("source:\n  mirrors: [fleet.git]\n", "not a URL"),
        (
            "source:\n  pointer_mirrors: [https://a/p, https://a/p]\n",
            "listed twice",
        ),
    ] {
        std::fs::write(d.path().join(ADMIN_CONFIG), text).unwrap();
        let e = Config::load(d.path()).unwrap_err();
        assert_eq!(e.line, 2, "{text:?}: {e}");
        assert!(e.to_string().contains(word), "{e}");
    }
}

#[test]
fn unknown_key_names_fragment_and_line() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/tend")).unwrap();
    std::fs::write(d.path().join(ADMIN_CONFIG), "device:\n  idd: x\n").unwrap();
    let e = Config::load(d.path()).unwrap_err();
    assert!(e.file.ends_with("etc/tend/tend.yaml") && e.line == 2, "{e}");
    assert!(e.message.contains("idd"), "{e}");
}

/// Values that parse as YAML but are wrong (a bad window, a relative state dir, an endpoint
/// without a host, an empty reboot command) were reported at line 0.
#[test]
fn bad_values_name_the_line_they_are_on() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/tend")).unwrap();
    for (text, line, word) in [
        ("# c\nreboot:\n  window: \"25:00-26:00\"\n", 3, "window"),
        (
            "report: {history: 3}\nstate_dir: var/lib/tend\n",
            2,
            "absolute",
        ),
        (
            "guard:\n  timeout: 5\n  endpoints: [\"https://\"]\n",
            3,
            "guard.endpoints",
        ),
        ("reboot:\n  command: []\n", 2, "empty"),
    ] {
        std::fs::write(d.path().join(ADMIN_CONFIG), text).unwrap();
        let e = Config::load(d.path()).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.to_string().contains(word), "{e}");
    }
}

#[test]
fn globs_expand_in_the_root() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/tend/vars.d")).unwrap();
    std::fs::write(d.path().join("etc/tend/vars.d/b.yaml"), "").unwrap();
    std::fs::write(d.path().join("etc/tend/vars.d/a.yaml"), "").unwrap();
    std::fs::write(d.path().join("etc/tend/vars.d/c.txt"), "").unwrap();
    let v = expand_globs(
        d.path(),
        &["/etc/tend/vars.d/*.yaml".into(), "/missing.json".into()],
    );
    assert_eq!(v, ["/etc/tend/vars.d/a.yaml", "/etc/tend/vars.d/b.yaml"]);
}

#[test]
fn inhibit_max_deferral_is_a_day_unless_configured() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/tend")).unwrap();
    let c = Config::load(d.path()).unwrap();
    assert_eq!(c.inhibit.max_deferral, Duration::from_secs(86_400));
    std::fs::write(
        d.path().join(ADMIN_CONFIG),
        "inhibit:\n  max_deferral: 3600\n",
    )
    .unwrap();
    let c = Config::load(d.path()).unwrap();
    assert_eq!(c.inhibit.max_deferral, Duration::from_secs(3600));
    std::fs::write(
        d.path().join(ADMIN_CONFIG),
        "inhibit:\n  max_deferal: 3600\n",
    )
    .unwrap();
    assert!(Config::load(d.path()).is_err(), "a misspelt key");
}
