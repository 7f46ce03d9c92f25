use super::*;
use crate::spec::NoSources;
use serde_json::json;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        kiosk:x:1000:1000:Kiosk,,,:/home/kiosk:/bin/sh\n";
const GROUP: &str =
    "root:x:0:\naudio:x:29:kiosk\nvideo:x:44:\nplugdev:x:46:kiosk\nkiosk:x:1000:\nstaff:x:50:\n";

fn user(spec: serde_json::Value) -> User {
    User::from_spec(parse_spec(spec).unwrap()).unwrap()
}

fn root(passwd: &str, group: &str) -> (tempfile::TempDir, Host) {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc")).unwrap();
    std::fs::write(d.path().join("etc/passwd"), passwd).unwrap();
    std::fs::write(d.path().join("etc/group"), group).unwrap();
    let host = Host::new(d.path());
    (d, host)
}

fn summary(u: &User, host: &Host) -> Option<String> {
    u.diff(&u.read(host).unwrap(), host).map(|c| c.summary)
}

#[test]
fn only_keys_that_are_set_are_compared() {
    let (_d, host) = root(PASSWD, GROUP);
    assert_eq!(summary(&user(json!({"name": "kiosk"})), &host), None);
    assert_eq!(
        summary(
            &user(json!({"name": "kiosk", "uid": 1000, "group": "kiosk"})),
            &host
        ),
        None
    );
    assert_eq!(
        summary(&user(json!({"name": "kiosk", "group": "1000"})), &host),
        None,
        "a gid works too"
    );
    assert_eq!(
        summary(
            &user(json!({"name": "kiosk", "shell": "/bin/bash", "comment": "Kiosk user"})),
            &host
        )
        .unwrap(),
        "shell /bin/sh -> /bin/bash; comment 'Kiosk,,,' -> 'Kiosk user'"
    );
}

#[test]
fn supplementary_groups_are_the_exact_set() {
    let (_d, host) = root(PASSWD, GROUP);
    let u = user(json!({"name": "kiosk", "groups": ["video", "audio"]}));
    let actual = u.read(&host).unwrap();
    assert_eq!(
        u.diff(&actual, &host).unwrap().summary,
        "groups +video -plugdev"
    );
    let (args, _) = u.modifications(actual.entry.as_ref().unwrap(), &actual);
    assert_eq!(args, ["--groups", "audio,video"]);

    assert_eq!(
        summary(
            &user(json!({"name": "kiosk", "groups": ["plugdev", "audio"]})),
            &host
        ),
        None
    );
    assert_eq!(
        summary(&user(json!({"name": "kiosk", "groups": []})), &host).unwrap(),
        "groups -audio,plugdev"
    );
}

#[test]
fn primary_group_uid_and_home_changes_become_one_usermod() {
    let (d, host) = root(PASSWD, GROUP);
    std::fs::create_dir_all(d.path().join("home/kiosk")).unwrap();
    std::fs::create_dir_all(d.path().join("srv")).unwrap();
    let u = user(json!({"name": "kiosk", "uid": 1100, "group": "staff", "home": "/srv/kiosk"}));
    let actual = u.read(&host).unwrap();
    assert_eq!(
        u.diff(&actual, &host).unwrap().summary,
        "uid 1000 -> 1100; group kiosk -> staff; home /home/kiosk -> /srv/kiosk (moved)"
    );
    let (args, _) = u.modifications(actual.entry.as_ref().unwrap(), &actual);
    assert_eq!(
        args,
        [
            "--uid",
            "1100",
            "--gid",
            "staff",
            "--home",
            "/srv/kiosk",
            "--move-home"
        ]
    );
    u.check_home_move(actual.home).unwrap();
}

/// usermod rewrites /etc/passwd before it moves the directory: a move that cannot happen left
/// the account pointing at a home that does not exist, and the next run saw nothing to do.
#[test]
fn home_move_to_a_missing_parent_is_refused_before_usermod_runs() {
    let (d, host) = root(PASSWD, GROUP);
    std::fs::create_dir_all(d.path().join("home/kiosk")).unwrap();
    let u = user(json!({"name": "kiosk", "home": "/srv/kiosk"}));
    let actual = u.read(&host).unwrap();
    let err = u.apply(actual, &host).unwrap_err().to_string();
    assert!(
        err.contains("/srv does not exist") && err.contains("state: directory"),
        "{err}"
    );
    assert!(std::fs::read_to_string(d.path().join("etc/passwd"))
        .unwrap()
        .contains(":/home/kiosk:"));
}

#[test]
fn home_change_without_a_move_when_either_side_is_missing_or_taken() {
    let (d, host) = root(PASSWD, GROUP);
    let u = user(json!({"name": "kiosk", "home": "/srv/kiosk"}));
    let actual = u.read(&host).unwrap();
    assert_eq!(
        u.diff(&actual, &host).unwrap().summary,
        "home /home/kiosk -> /srv/kiosk",
        "no old home"
    );
    let (args, _) = u.modifications(actual.entry.as_ref().unwrap(), &actual);
    assert_eq!(args, ["--home", "/srv/kiosk"]);
    u.check_home_move(actual.home).unwrap();

    std::fs::create_dir_all(d.path().join("home/kiosk")).unwrap();
    std::fs::create_dir_all(d.path().join("srv/kiosk")).unwrap();
    let actual = u.read(&host).unwrap();
    assert!(u
        .diff(&actual, &host)
        .unwrap()
        .summary
        .contains("exists already"));
    let (args, _) = u.modifications(actual.entry.as_ref().unwrap(), &actual);
    assert_eq!(args, ["--home", "/srv/kiosk"]);
}

#[test]
fn creation_uses_the_existing_user_group_and_create_home_defaults() {
    let (_d, host) = root(PASSWD, GROUP);
    let u = user(json!({"name": "staff", "groups": ["video"], "shell": "/bin/bash"}));
    let actual = u.read(&host).unwrap();
    assert_eq!(u.diff(&actual, &host).unwrap().summary, "create user staff");
    assert_eq!(
        u.useradd(&actual.groups),
        [
            "useradd",
            "--gid",
            "staff",
            "--groups",
            "video",
            "--shell",
            "/bin/bash",
            "--create-home",
            "staff"
        ]
    );
    let sys = user(json!({"name": "svc", "system": true, "uid": 990}));
    assert_eq!(
        sys.useradd(&actual.groups),
        [
            "useradd",
            "--system",
            "--uid",
            "990",
            "--no-create-home",
            "svc"
        ]
    );
    let sys_home = user(json!({"name": "svc", "system": true, "create_home": true}));
    assert!(sys_home
        .useradd(&actual.groups)
        .contains(&"--create-home".to_string()));
}

#[test]
fn missing_groups_fail_with_a_fix_before_usermod_runs() {
    let (_d, host) = root(PASSWD, GROUP);
    let u = user(json!({"name": "kiosk", "groups": ["video", "gpio"], "group": "kiosk"}));
    let actual = u.read(&host).unwrap();
    let err = u.apply(actual, &host).unwrap_err().to_string();
    assert!(
        err.contains("gpio") && err.contains("`group` resources"),
        "{err}"
    );
    assert!(!err.contains("video"), "{err}");
}

#[test]
fn absent_user_is_removed_once() {
    let (_d, host) = root(PASSWD, GROUP);
    assert_eq!(
        summary(&user(json!({"name": "kiosk", "state": "absent"})), &host).unwrap(),
        "remove user kiosk (home kept)"
    );
    assert_eq!(
        summary(&user(json!({"name": "nobody2", "state": "absent"})), &host),
        None
    );
}

#[test]
fn invalid_names_and_fields_are_refused_at_build() {
    let build = |v| {
        (TYPE.build)(v, &NoSources)
            .err()
            .map(|e| (e.key.unwrap_or_default(), e.message))
    };
    assert_eq!(build(json!({"name": "Kiosk"})).unwrap().0, "user");
    assert_eq!(build(json!({"name": &"k".repeat(33)})).unwrap().0, "user");
    assert_eq!(
        build(json!({"name": "kiosk", "groups": ["Video"]}))
            .unwrap()
            .0,
        "groups"
    );
    assert_eq!(
        build(json!({"name": "kiosk", "group": "bad group"}))
            .unwrap()
            .0,
        "group"
    );
    assert_eq!(
        build(json!({"name": "kiosk", "shell": "bash"})).unwrap().0,
        "shell"
    );
    assert_eq!(
        build(json!({"name": "kiosk", "comment": "a:b"})).unwrap().0,
        "comment"
    );
    assert_eq!(
        build(json!({"name": "kiosk", "password": "$6$x"}))
            .unwrap()
            .0,
        "password"
    );
    assert!(build(
        json!({"name": "kiosk", "group": "1000", "groups": ["video"], "home": "/home/k"})
    )
    .is_none());
}
