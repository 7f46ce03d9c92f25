use super::*;
use crate::spec::NoSources;
use serde_json::json;

fn service(spec: serde_json::Value) -> Service {
    Service::from_spec(parse_spec(spec).unwrap()).unwrap()
}

fn actual(unit: &str, enablement: Enablement, active: Option<&str>) -> Actual {
    Actual {
        unit: unit.into(),
        enablement,
        active: active.map(str::to_string),
    }
}

/// A root whose systemd is (`online`) or is not running; diff reads nothing else of it.
fn host(online: bool) -> (tempfile::TempDir, Host) {
    let d = tempfile::tempdir().unwrap();
    let mut host = Host::new(d.path());
    host.systemd_running = online;
    (d, host)
}

fn summary(s: &Service, a: &Actual, host: &Host) -> Option<String> {
    s.diff(a, host).map(|c| c.summary)
}

#[test]
fn unit_names_get_a_service_suffix_only_when_untyped() {
    assert_eq!(
        service(json!({"name": "nginx", "enabled": true})).unit,
        "nginx.service"
    );
    assert_eq!(
        service(json!({"name": "fstrim.timer", "enabled": true})).unit,
        "fstrim.timer"
    );
    assert_eq!(
        service(json!({"name": "getty@tty1", "enabled": true})).unit,
        "getty@tty1.service"
    );
    assert_eq!(
        service(json!({"name": "my.app", "enabled": true})).unit,
        "my.app.service"
    );
    assert_eq!(
        service(json!({"name": "ssh.service", "state": "started"})).unit,
        "ssh.service"
    );
}

#[test]
fn contradictory_or_empty_specs_are_refused_at_build() {
    let key = |v| {
        (TYPE.build)(v, &NoSources)
            .err()
            .map(|e| e.key.unwrap_or_default())
    };
    assert_eq!(
        key(json!({"name": "a b", "enabled": true})).as_deref(),
        Some("service")
    );
    assert_eq!(key(json!({"name": "nginx"})).as_deref(), Some("service"));
    assert_eq!(
        key(json!({"name": "x", "masked": true, "enabled": true})).as_deref(),
        Some("masked")
    );
    assert_eq!(
        key(json!({"name": "x", "masked": true, "state": "started"})).as_deref(),
        Some("state")
    );
    assert_eq!(
        key(json!({"name": "x", "state": "running"})).as_deref(),
        Some("state"),
        "a bad value names its key, so the error points at its line"
    );
    assert_eq!(
        key(json!({"name": "x", "enable": true})).as_deref(),
        Some("enable")
    );
    assert_eq!(
        key(json!({"name": "x", "masked": true, "state": "stopped", "enabled": false})),
        None
    );
}

#[test]
fn offline_start_is_skipped_on_every_run() {
    let (_d, host) = host(false);
    let s = service(json!({"name": "nginx", "enabled": true, "state": "started"}));
    let a = actual("nginx.service", Enablement::Enabled, None);
    assert_eq!(summary(&s, &a, &host).unwrap(), "start skipped (offline)");
    assert_eq!(
        s.apply(a, &host).unwrap(),
        Applied::Skipped("offline: systemd is not running; start skipped".into())
    );
    let restart = service(json!({"name": "lightdm", "state": "restarted"}));
    let a = actual("lightdm.service", Enablement::Enabled, None);
    assert_eq!(
        restart.apply(a, &host).unwrap(),
        Applied::Skipped("offline: systemd is not running; restart skipped".into())
    );
}

#[test]
fn offline_enable_is_done_and_the_start_reported_skipped() {
    let (_d, host) = host(false);
    let s = service(json!({"name": "nginx", "enabled": true, "state": "started"}));
    let a = actual("nginx.service", Enablement::Disabled, None);
    assert_eq!(
        summary(&s, &a, &host).unwrap(),
        "enabled; start skipped (offline)"
    );
    assert_eq!(s.ops(&a, false), [Op::Enable, Op::Start]);
}

#[test]
fn offline_stopped_is_already_true() {
    let (_d, host) = host(false);
    let s = service(json!({"name": "nginx", "enabled": false, "state": "stopped"}));
    assert_eq!(
        summary(
            &s,
            &actual("nginx.service", Enablement::Disabled, None),
            &host
        ),
        None
    );
}

#[test]
fn online_start_and_stop_follow_is_active() {
    let (_d, host) = host(true);
    let started = service(json!({"name": "nginx", "state": "started"}));
    assert_eq!(
        summary(
            &started,
            &actual("nginx.service", Enablement::Enabled, Some("active")),
            &host
        ),
        None
    );
    assert_eq!(
        summary(
            &started,
            &actual("nginx.service", Enablement::Enabled, Some("failed")),
            &host
        )
        .unwrap(),
        "started"
    );
    let stopped = service(json!({"name": "nginx", "state": "stopped"}));
    assert_eq!(
        summary(
            &stopped,
            &actual("nginx.service", Enablement::Enabled, Some("failed")),
            &host
        ),
        None
    );
    assert_eq!(
        summary(
            &stopped,
            &actual("nginx.service", Enablement::Enabled, Some("deactivating")),
            &host
        )
        .unwrap(),
        "stopped"
    );
}

#[test]
fn restarted_and_reloaded_always_change() {
    let (_d, host) = host(true);
    let a = actual("lightdm.service", Enablement::Enabled, Some("active"));
    let restart = service(json!({"name": "lightdm", "state": "restarted"}));
    assert_eq!(summary(&restart, &a, &host).unwrap(), "restarted");
    let reload = service(json!({"name": "lightdm", "state": "reloaded"}));
    assert_eq!(summary(&reload, &a, &host).unwrap(), "reloaded");
    let idle = actual("lightdm.service", Enablement::Enabled, Some("inactive"));
    assert_eq!(
        summary(&reload, &idle, &host).unwrap(),
        "started",
        "reloading a stopped unit starts it"
    );
}

#[test]
fn daemon_reload_is_announced_when_units_changed() {
    let (_d, host) = host(true);
    host.flags().units_changed = true;
    let s = service(json!({"name": "nginx", "enabled": true, "state": "started"}));
    let a = actual("nginx.service", Enablement::Disabled, Some("inactive"));
    assert_eq!(
        summary(&s, &a, &host).unwrap(),
        "daemon-reload; enabled; started"
    );
    let converged = actual("nginx.service", Enablement::Enabled, Some("active"));
    assert_eq!(summary(&s, &converged, &host), None, "no reload on its own");
}

#[test]
fn enablement_states_that_cannot_change_are_converged() {
    let (_d, host) = host(false);
    for e in [
        Enablement::Static,
        Enablement::Generated,
        Enablement::Transient,
    ] {
        for enabled in [true, false] {
            let s = service(json!({"name": "x", "enabled": enabled}));
            assert_eq!(
                summary(&s, &actual("x.service", e, None), &host),
                None,
                "{e:?} {enabled}"
            );
        }
    }
    let off = service(json!({"name": "x", "enabled": false}));
    assert_eq!(
        summary(&off, &actual("x.service", Enablement::Masked, None), &host),
        None
    );
    assert_eq!(
        off.ops(
            &actual("x.service", Enablement::EnabledRuntime, None),
            false
        ),
        [Op::Disable { runtime: true }]
    );
}

#[test]
fn masking_and_unmasking() {
    let (_d, host) = host(false);
    let unmask = service(json!({"name": "x", "masked": false, "enabled": true}));
    assert_eq!(
        summary(
            &unmask,
            &actual("x.service", Enablement::Masked, None),
            &host
        )
        .unwrap(),
        "unmasked; enabled"
    );
    let mask = service(json!({"name": "x", "masked": true, "enabled": false}));
    assert_eq!(
        summary(
            &mask,
            &actual("x.service", Enablement::Enabled, None),
            &host
        )
        .unwrap(),
        "disabled; masked"
    );
    assert_eq!(
        summary(&mask, &actual("x.service", Enablement::Masked, None), &host),
        None
    );
    assert_eq!(
        summary(
            &mask,
            &actual("x.service", Enablement::MaskedRuntime, None),
            &host
        )
        .unwrap(),
        "masked"
    );
    let unmask_rt = service(json!({"name": "x", "masked": false}));
    assert_eq!(
        summary(
            &unmask_rt,
            &actual("x.service", Enablement::MaskedRuntime, None),
            &host
        )
        .unwrap(),
        "unmasked (runtime)"
    );
}

#[test]
fn missing_unit_names_the_unit_and_a_package() {
    let s = service(json!({"name": "nginx", "enabled": true}));
    let a = actual("nginx.service", Enablement::NotFound, None);
    let err = s.check_usable(&a, false).unwrap_err().to_string();
    assert!(
        err.contains("nginx.service does not exist") && err.contains("`package: nginx`"),
        "{err}"
    );
    s.check_usable(&a, true)
        .expect("check mode: an earlier package resource would install it");
    let (_d, host) = host(false);
    assert_eq!(
        summary(&s, &a, &host).unwrap(),
        "enabled (nginx.service is not installed yet)"
    );
    let off = service(json!({"name": "nginx", "enabled": false, "state": "stopped"}));
    off.check_usable(&a, false).expect("nothing to disable");
    assert_eq!(summary(&off, &a, &host), None);
}

#[test]
fn masked_indirect_and_bad_units_are_refused_with_a_fix() {
    let enable = service(json!({"name": "pcscd", "enabled": true}));
    let err = enable
        .check_usable(&actual("pcscd.service", Enablement::Masked, None), false)
        .unwrap_err();
    assert!(err.to_string().contains("masked: false"), "{err}");
    let err = enable
        .check_usable(&actual("pcscd.service", Enablement::Indirect, None), false)
        .unwrap_err();
    assert!(err.to_string().contains(".socket"), "{err}");
    let err = enable
        .check_usable(&actual("pcscd.service", Enablement::Bad, None), false)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("systemd-analyze verify pcscd.service"),
        "{err}"
    );
    let stop = service(json!({"name": "pcscd", "state": "stopped"}));
    stop.check_usable(&actual("pcscd.service", Enablement::Masked, None), false)
        .unwrap();
}

#[test]
fn aliases_resolve_to_their_unit_in_the_root() {
    let d = tempfile::tempdir().unwrap();
    let etc = d.path().join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    std::os::unix::fs::symlink("/lib/systemd/system/ssh.service", etc.join("sshd.service"))
        .unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/serial-getty@.service",
        etc.join("console@ttyS0.service"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/null", etc.join("masked.service")).unwrap();
    let root = Host::new(d.path());
    assert_eq!(
        alias_target(&root, "sshd.service").unwrap().as_deref(),
        Some("ssh.service")
    );
    assert_eq!(
        alias_target(&root, "console@ttyS0.service")
            .unwrap()
            .as_deref(),
        Some("serial-getty@ttyS0.service")
    );
    assert_eq!(alias_target(&root, "masked.service").unwrap(), None);
    assert_eq!(alias_target(&root, "absent.service").unwrap(), None);

    let s = service(json!({"name": "sshd", "enabled": false}));
    assert_eq!(
        summary(&s, &actual("ssh.service", Enablement::Enabled, None), &root).unwrap(),
        "disabled (sshd.service is an alias of ssh.service)"
    );
}
