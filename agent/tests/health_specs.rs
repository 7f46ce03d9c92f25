//! Health checks in role.yaml through the loader: rendered with the device's vars, skipped by
//! `when`, and every mistake reported at its file and line with what to write instead.

use std::path::Path;
use std::sync::Arc;

use tend_agent::fleet::validate::{validate, Inputs, Validated};
use tend_agent::fleet::vars::Mode;
use tend_agent::inspect::offline_facts;
use tend_agent::safety::health::Probe;
use tend_agent::source::tree::{DirTree, Tree};

/// The loader's error text; panics if the repo validated.
fn error_of(role_yaml: &str) -> String {
    match validate_repo(role_yaml) {
        Ok(_) => panic!("expected a validation error for:\n{role_yaml}"),
        Err(e) => e,
    }
}

fn validate_repo(role_yaml: &str) -> Result<Validated, String> {
    let d = tempfile::tempdir().unwrap();
    for (p, c) in [
        (
            "fleet.yaml",
            "format: 1\nvars: {port: 8080}\nroles: [web]\n",
        ),
        ("roles/web/role.yaml", role_yaml),
    ] {
        let p = d.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    let tree: Arc<dyn Tree> = Arc::new(DirTree::new(d.path()).unwrap());
    validate(Inputs {
        tree,
        device_id: "dev1".into(),
        facts: offline_facts("dev1"),
        root: Path::new("/nonexistent"),
        vars_files: Vec::new(),
        mode: Mode::Device,
        parsed: None,
        max_desired_bytes: tend_agent::device::config::DEFAULT_MAX_DESIRED_BYTES,
        keep_specs: false,
    })
    .map_err(|d| d.to_string())
}

#[test]
fn checks_render_with_vars_and_when_skips_them() {
    let v = validate_repo(
        "checks:\n  - http: \"http://127.0.0.1:{{ port }}/health\"\n    revert: true\n    retries: 1\n  - unit: never.service\n    when: \"port == 1\"\n  - name: db\n    tcp: 5432\n",
    )
    .unwrap();
    assert_eq!(v.checks.len(), 2, "the `when: false` check is gone");
    let web = &v.checks[0];
    assert_eq!(web.origin, "roles/web/role.yaml:2");
    assert!(web.revert && web.retries == 1);
    assert!(
        matches!(&web.probe, Probe::Http { port: 8080, path, .. } if path == "/health"),
        "{:?}",
        web.probe
    );
    assert_eq!(v.checks[1].name, "db");
    assert_eq!(v.checks[1].role, "web");
}

#[test]
fn check_mistakes_name_file_line_and_fix() {
    let e = error_of("checks:\n  - unit: a.service\n    revrt: true\n");
    assert!(e.contains("roles/web/role.yaml:3"), "{e}");
    assert!(
        e.contains("revrt") && e.contains("a check takes the keys"),
        "{e}"
    );

    let e = error_of("checks:\n  - name: x\n    unit: a\n    tcp: 1\n");
    assert!(
        e.contains("roles/web/role.yaml:4") && e.contains("one probe"),
        "{e}"
    );

    let e = error_of("checks:\n  - http: \"https://127.0.0.1/\"\n");
    assert!(
        e.contains("roles/web/role.yaml:2") && e.contains("only http://"),
        "{e}"
    );

    let e = error_of("checks:\n  - tcp: \"{{ nope }}\"\n");
    assert!(
        e.contains("roles/web/role.yaml:2") && e.contains("nope"),
        "{e}"
    );

    let e = error_of("checks:\n  - unit: a\n    timeout: 0\n");
    assert!(
        e.contains("roles/web/role.yaml:3") && e.contains("timeout"),
        "{e}"
    );
}
