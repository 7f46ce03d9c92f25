//! The fleet model end to end through the library: precedence of vars and groups, role order,
//! loops and conditions, local and secret vars, `prune` and `reboot`, and the bundled example
//! fleet.

use std::path::Path;
use std::sync::Arc;

use tend_agent::fleet::facts::Facts;
use tend_agent::fleet::validate::{validate, Inputs, Validated};
use tend_agent::fleet::vars::Mode;
use tend_agent::inspect::{offline_facts, validate_repo};
use tend_agent::source::tree::{DirTree, Tree};

fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let p = d.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    d
}

fn facts(device_type: Option<&str>) -> Facts {
    Facts {
        device_type: device_type.map(str::to_string),
        ..offline_facts("dev1")
    }
}

fn run(dir: &Path, facts: Facts, root: &Path, vars_files: &[&str]) -> Result<Validated, String> {
    let tree: Arc<dyn Tree> = Arc::new(DirTree::new(dir).unwrap());
    validate(Inputs {
        tree,
        device_id: "dev1".into(),
        facts,
        root,
        vars_files: vars_files.iter().map(|s| s.to_string()).collect(),
        mode: Mode::Device,
        parsed: None,
        max_desired_bytes: tend_agent::device::config::DEFAULT_MAX_DESIRED_BYTES,
        // These tests read the rendered specs, as `tend render` prints them.
        keep_specs: true,
    })
    .map_err(|d| d.to_string())
}

fn content_of(v: &Validated, path: &str) -> String {
    v.specs
        .iter()
        .find(|s| s.spec["path"] == path)
        .map(|s| s.spec["content"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("no file {path}"))
}

const PRECEDENCE: &[(&str, &str)] = &[
    ("fleet.yaml", "format: 1\nvars: {from_fleet: fleet, x: fleet}\nlocal: [x]\nroles: [r]\n"),
    ("groups/pi4.yaml", "vars: {x: type-group, t: type}\n"),
    ("groups/a.yaml", "vars: {x: group-a, a: a}\n"),
    ("groups/b.yaml", "vars: {x: group-b}\n"),
    ("devices/dev1.yaml", "groups: [a, b]\n"),
    ("roles/r/role.yaml", "defaults: {x: default, d: default}\nresources:\n  - file: /x\n    content: \"{{ x }} {{ d }} {{ from_fleet }}\"\n"),
];

#[test]
fn vars_precedence_is_defaults_fleet_type_group_groups_in_order_device_local() {
    let none = Path::new("/nonexistent");
    let d = repo(PRECEDENCE);
    assert_eq!(
        content_of(&run(d.path(), facts(None), none, &[]).unwrap(), "/x"),
        "group-b default fleet"
    );

    let d = repo(&[PRECEDENCE, &[("devices/dev1.yaml", "groups: [b, a]\n")]].concat());
    assert_eq!(
        content_of(&run(d.path(), facts(None), none, &[]).unwrap(), "/x"),
        "group-a default fleet",
        "the later group wins"
    );

    let d = repo(&[PRECEDENCE, &[("devices/dev1.yaml", "groups: []\n")]].concat());
    let v = run(d.path(), facts(Some("pi4")), none, &[]).unwrap();
    assert_eq!(
        content_of(&v, "/x"),
        "type-group default fleet",
        "the device type is a group"
    );
    assert_eq!(v.groups, ["pi4"]);

    let d = repo(
        &[
            PRECEDENCE,
            &[("devices/dev1.yaml", "groups: [a]\nvars: {x: device}\n")],
        ]
        .concat(),
    );
    let v = run(d.path(), facts(Some("pi4")), none, &[]).unwrap();
    assert_eq!(content_of(&v, "/x"), "device default fleet");
    assert_eq!(
        v.groups,
        ["pi4", "a"],
        "type group first, lowest precedence"
    );

    let root = repo(&[("etc/tend/vars.d/l.yaml", "x: local\n")]);
    let v = run(
        d.path(),
        facts(None),
        root.path(),
        &["/etc/tend/vars.d/l.yaml"],
    )
    .unwrap();
    assert_eq!(
        content_of(&v, "/x"),
        "local default fleet",
        "a declared local var wins over everything"
    );
}

#[test]
fn roles_come_once_with_dependencies_first() {
    let d = repo(&[
        ("fleet.yaml", "format: 1\nroles: [app, base]\n"),
        ("devices/dev1.yaml", "roles: [app]\n"),
        ("roles/base/role.yaml", "resources: []\n"),
        ("roles/lib/role.yaml", "depends: [base]\n"),
        ("roles/app/role.yaml", "depends: [lib]\n"),
    ]);
    let v = run(d.path(), facts(None), Path::new("/x"), &[]).unwrap();
    let names: Vec<&str> = v.desired.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["base", "lib", "app"]);
}

#[test]
fn loop_and_when_expand_entries() {
    let d = repo(&[
        ("fleet.yaml", "format: 1\nvars: {users: [ann, bob, cy]}\nroles: [r]\n"),
        (
            "roles/r/role.yaml",
            "resources:\n  - file: \"/home/{{ item }}.txt\"\n    content: \"{{ item }}\"\n    loop: \"{{ users }}\"\n    when: item != 'bob'\n  - file: /arm-only\n    content: x\n    when: facts.architecture == 'armhf'\n",
        ),
    ]);
    let v = run(d.path(), facts(None), Path::new("/x"), &[]).unwrap();
    let paths: Vec<&str> = v
        .specs
        .iter()
        .map(|s| s.spec["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/home/ann.txt", "/home/cy.txt"]);
}

#[test]
fn secrets_are_redacted_in_rendered_specs_and_vars() {
    let d = repo(&[
        (
            "fleet.yaml",
            "format: 1\nlocal: [token]\nsecret: [token]\nroles: [r]\n",
        ),
        (
            "roles/r/role.yaml",
            "resources:\n  - file: /t\n    content: \"token={{ token }}\"\n",
        ),
    ]);
    let root = repo(&[("etc/tend/vars.d/s.yaml", "token: hunter2-long\n")]);
    let v = run(
        d.path(),
        facts(None),
        root.path(),
        &["/etc/tend/vars.d/s.yaml"],
    )
    .unwrap();
    let shown = serde_json::to_string(&v.specs).unwrap()
        + &serde_json::to_string(&v.vars.redacted()).unwrap();
    assert!(!shown.contains("hunter2-long"), "{shown}");
    assert!(shown.contains("token=<redacted>"), "{shown}");
    assert!(v.redactor.touches(b"token=hunter2-long"));
}

#[test]
fn a_local_var_without_a_value_is_an_undefined_var_error() {
    let d = repo(&[
        ("fleet.yaml", "format: 1\nlocal: [token]\nroles: [r]\n"),
        (
            "roles/r/role.yaml",
            "resources:\n  - file: /t\n    content: \"{{ token }}\"\n",
        ),
    ]);
    let e = run(d.path(), facts(None), Path::new("/x"), &[])
        .err()
        .expect("an error");
    assert!(
        e.contains("roles/r/role.yaml:3") && e.contains("`token` is undefined"),
        "{e}"
    );
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let d = repo(&[
        ("fleet.yaml", "format: 1\nroles: [r, missing]\n"),
        (
            "roles/r/role.yaml",
            "resources:\n  - file: relative\n    content: x\n  - command: reboot\n",
        ),
    ]);
    let e = run(d.path(), facts(None), Path::new("/x"), &[])
        .err()
        .expect("an error");
    assert!(
        e.contains("fleet.yaml:2: role 'missing' does not exist"),
        "{e}"
    );
    assert!(e.contains("roles/r/role.yaml:2"), "{e}");
    assert!(e.contains("roles/r/role.yaml:4"), "{e}");
}

#[test]
fn the_example_fleet_validates() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet");
    let (devices, diags) = validate_repo(&example, &[]).unwrap();
    assert!(diags.is_empty(), "{diags}");
    assert!(devices >= 2);
}

#[test]
fn validate_renders_a_device_with_the_facts_of_its_type() {
    let d = repo(&[
        ("fleet.yaml", "format: 1\nroles: [r]\n"),
        ("devices/pi2.yaml", "device_type: raspberrypi2\n"),
        ("facts/raspberrypi2.yaml", "architecture: armhf\nos_codename: bookworm\ninterfaces:\n  - {name: eth0, ipv4: [10.0.0.2]}\n"),
        (
            "roles/r/role.yaml",
            "resources:\n  - file: /arch\n    content: \"{{ facts.architecture }} {{ facts.device_type }} {{ facts.interfaces[0].name }}\"\n",
        ),
    ]);
    let (_, diags) = validate_repo(d.path(), &["pi2".into()]).unwrap();
    assert!(diags.is_empty(), "{diags}");
    let mut out = Vec::new();
    tend_agent::inspect::render(d.path(), "pi2", &mut out).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        doc["resources"][0]["spec"]["content"],
        "armhf raspberrypi2 eth0"
    );

    let bad = repo(&[
        ("fleet.yaml", "format: 1\n"),
        ("devices/pi2.yaml", "device_type: raspberrypi2\n"),
        ("facts/raspberrypi2.yaml", "architecure: armhf\n"),
    ]);
    let (_, diags) = validate_repo(bad.path(), &["pi2".into()]).unwrap();
    assert!(
        diags
            .to_string()
            .contains("facts/raspberrypi2.yaml:1: unknown field `architecure`"),
        "{diags}"
    );
}

#[test]
fn github_annotations_carry_file_line_and_fix() {
    let d = tend_agent::diag::Diagnostic::new("roles/web/role.yaml", 7, "bad: 100%\nsecond")
        .fix("do x, then y");
    let a = tend_agent::diag::github_annotation(Path::new("fleet"), &d, "tend validate");
    assert_eq!(
        a,
        "::error file=fleet/roles/web/role.yaml,line=7,title=tend validate::bad: 100%25%0Asecond%0Afix: do x, then y"
    );
}

const WEB_FLEET: &str = "format: 1\nroles: [web]\n";

/// fleet.yaml and roles/web/role.yaml, validated for dev1.
fn web(fleet_yaml: &str, role_yaml: &str) -> Result<Validated, String> {
    let d = repo(&[
        ("fleet.yaml", fleet_yaml),
        ("roles/web/role.yaml", role_yaml),
    ]);
    run(d.path(), facts(None), Path::new("/nonexistent"), &[])
}

/// The loader's error text; panics if the repo validated.
fn web_error(fleet_yaml: &str, role_yaml: &str) -> String {
    match web(fleet_yaml, role_yaml) {
        Ok(_) => panic!("expected a validation error for:\n{role_yaml}"),
        Err(e) => e,
    }
}

#[test]
fn prune_settings_reach_the_desired_state() {
    let v = web(
        "format: 1\nroles: [web]\nprune: true\n",
        "prune: false\nresources:\n  - file: /etc/motd\n    content: hi\n",
    )
    .unwrap();
    assert_eq!(v.prune.fleet, Some(true));
    assert_eq!(v.prune.roles.get("web"), Some(&Some(false)));
    let v = web(WEB_FLEET, "resources: []\n").unwrap();
    assert_eq!(
        (v.prune.fleet, v.prune.roles.get("web")),
        (None, Some(&None))
    );
}

#[test]
fn a_prune_that_is_not_a_boolean_is_an_error_at_its_line() {
    let e = web_error(WEB_FLEET, "resources: []\nprune: \"yes please\"\n");
    assert!(
        e.contains("roles/web/role.yaml:2") && e.contains("`prune` must be true or false"),
        "{e}"
    );
    let e = web_error("format: 1\nroles: [web]\nprune: 1\n", "resources: []\n");
    assert!(
        e.contains("fleet.yaml:3") && e.contains("prune: true"),
        "{e}"
    );
}

#[test]
fn reboot_marks_resources_and_handlers_and_must_be_a_boolean() {
    let v = web(
        WEB_FLEET,
        "resources:\n  - file: /boot/config.txt\n    content: \"dtoverlay=vc4\\n\"\n    reboot: true\n    notify: fw\n  - file: /etc/motd\n    content: hi\nhandlers:\n  fw:\n    command: /usr/bin/true\n    reboot: true\n",
    )
    .unwrap();
    let items = &v.desired.roles[0].items;
    assert!(items[0].reboot && !items[1].reboot);
    assert!(v.desired.handlers[0].reboot);
    let rendered = v.specs[0].spec.to_string();
    assert!(
        !rendered.contains("reboot"),
        "tend's key, not the type's: {rendered}"
    );
    let e = web_error(
        WEB_FLEET,
        "resources:\n  - file: /boot/config.txt\n    content: x\n    reboot: maybe\n",
    );
    assert!(
        e.contains("roles/web/role.yaml:4") && e.contains("`reboot` must be true or false"),
        "{e}"
    );
}

#[test]
fn enforce_false_marks_a_resource_audit_only_and_must_be_a_boolean() {
    let v = web(
        WEB_FLEET,
        "resources:\n  - file: /etc/watched\n    content: x\n    enforce: false\n  - file: /etc/motd\n    content: hi\n",
    )
    .unwrap();
    let items = &v.desired.roles[0].items;
    assert!(!items[0].enforce && items[1].enforce);
    assert!(!v.specs[0].spec.to_string().contains("enforce"));
    let e = web_error(
        WEB_FLEET,
        "resources:\n  - file: /etc/watched\n    content: x\n    enforce: \"no\"\n",
    );
    assert!(
        e.contains("roles/web/role.yaml:4") && e.contains("`enforce` must be true or false"),
        "{e}"
    );
    let e = web_error(
        WEB_FLEET,
        "resources: []\nhandlers:\n  h:\n    command: /usr/bin/true\n    enforce: false\n",
    );
    assert!(
        e.contains("roles/web/role.yaml:5") && e.contains("`enforce` is not allowed on a handler"),
        "{e}"
    );
}

/// The fingerprint tells "this commit changed the resource" from "it did not": a source file's
/// content is part of it, not only the spec that names the file.
#[test]
fn a_fingerprint_changes_with_the_content_a_resource_reads_not_with_other_resources() {
    let role =
        "resources:\n  - file: /etc/a\n    source: a.conf\n  - file: /etc/b\n    content: b\n";
    let fingerprints = |a_conf: &str| {
        let d = repo(&[
            ("fleet.yaml", WEB_FLEET),
            ("roles/web/role.yaml", role),
            ("roles/web/files/a.conf", a_conf),
        ]);
        run(d.path(), facts(None), Path::new("/nonexistent"), &[])
            .unwrap()
            .fingerprints
    };
    let (one, again, two) = (fingerprints("1"), fingerprints("1"), fingerprints("2"));
    assert_eq!(one.len(), 2);
    assert_eq!(one, again, "the same repo, the same fingerprints");
    assert_ne!(one[0], two[0], "a.conf changed");
    assert_eq!(one[1], two[1], "/etc/b did not");
}

#[test]
fn a_control_character_in_a_package_name_list_is_refused() {
    let e = web_error(
        WEB_FLEET,
        "resources:\n  - package: [curl, \"evil\\x1b[2J\"]\n",
    );
    assert!(
        e.contains("roles/web/role.yaml:2: package: `package`"),
        "{e}"
    );
    assert!(e.contains("control character (\\x1b)"), "{e}");
    assert!(
        e.contains("fix: remove the control character from `package`"),
        "{e}"
    );
    assert!(
        !e.contains('\u{1b}'),
        "the diagnostic shows the ESC escaped: {e:?}"
    );
}
