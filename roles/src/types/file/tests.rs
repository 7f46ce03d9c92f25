use super::*;
use crate::redact::Redactor;
use serde_json::json;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

mod kinds;
mod paths;

/// Role files and templates served from memory, as the agent serves them from the repo.
#[derive(Default)]
struct MapSources {
    files: HashMap<String, Vec<u8>>,
    templates: HashMap<String, String>,
}

impl Sources for MapSources {
    fn file(&self, name: &str) -> Result<Content, String> {
        self.files
            .get(name)
            .map(|b| b.as_slice().into())
            .ok_or_else(|| "not found in the role's files/".to_string())
    }
    fn template(&self, name: &str) -> Result<Content, String> {
        self.templates
            .get(name)
            .map(|t| t.as_bytes().into())
            .ok_or_else(|| "not found in the role's templates/".to_string())
    }
}

fn build_with(spec: Value, sources: &MapSources) -> Result<Box<dyn DynResource>, SpecError> {
    (TYPE.build)(spec, sources)
}

fn make(spec: Value) -> Box<dyn DynResource> {
    build_with(spec, &MapSources::default()).unwrap()
}

fn spec_error(spec: Value) -> SpecError {
    match build_with(spec, &MapSources::default()) {
        Ok(_) => panic!("spec was accepted"),
        Err(e) => e,
    }
}

struct Root {
    dir: tempfile::TempDir,
    host: Host,
}

impl Root {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        Self { dir, host }
    }
    fn with_accounts() -> Self {
        let r = Self::new();
        r.write(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1001:Pi:/home/pi:/bin/bash\n",
        );
        r.write("/etc/group", "root:x:0:\npi:x:1001:\nvideo:x:44:pi\n");
        r
    }
    fn p(&self, device: &str) -> PathBuf {
        self.dir.path().join(device.trim_start_matches('/'))
    }
    fn write(&self, device: &str, text: &str) {
        let p = self.p(device);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    fn chmod(&self, device: &str, mode: u32) {
        fs::set_permissions(self.p(device), fs::Permissions::from_mode(mode)).unwrap();
    }
    fn lstat(&self, device: &str) -> fs::Metadata {
        fs::symlink_metadata(self.p(device)).unwrap()
    }
    fn mode(&self, device: &str) -> u32 {
        self.lstat(device).mode() & 0o7777
    }
    fn change(&self, r: &dyn DynResource) -> Option<Change> {
        r.plan(&self.host).unwrap().change
    }
    /// Plans, applies, and checks that a second plan finds nothing to do (idempotence).
    fn converge(&self, r: &dyn DynResource) -> Change {
        let plan = r.plan(&self.host).unwrap();
        let change = plan.change.clone().expect("a change was planned");
        assert_eq!(plan.apply(&self.host).unwrap(), Applied::Done);
        assert_eq!(
            self.change(r),
            None,
            "not idempotent after: {}",
            change.summary
        );
        change
    }
}

#[test]
fn new_file_gets_parents_content_and_defaults() {
    let root = Root::new();
    let r = make(json!({"path": "/etc/app/conf.d/motd", "content": "hello\n"}));
    let c = root.converge(r.as_ref());
    assert_eq!(c.summary, "created");
    assert!(c
        .diff
        .as_deref()
        .unwrap()
        .ends_with("+++ /etc/app/conf.d/motd (desired)\n@@ -0,0 +1 @@\n+hello\n"));
    assert_eq!(
        fs::read(root.p("/etc/app/conf.d/motd")).unwrap(),
        b"hello\n"
    );
    assert_eq!(root.mode("/etc/app/conf.d/motd"), 0o644);
    for dir in ["/etc", "/etc/app", "/etc/app/conf.d"] {
        assert_eq!(root.mode(dir), 0o755, "{dir}");
        assert_eq!(
            (root.lstat(dir).uid(), root.lstat(dir).gid()),
            (0, 0),
            "{dir}"
        );
    }
    let m = root.lstat("/etc/app/conf.d/motd");
    assert_eq!((m.uid(), m.gid()), (0, 0));
}

#[test]
fn changed_content_keeps_unset_mode_and_owner() {
    let root = Root::new();
    root.write("/etc/motd", "old\n");
    root.chmod("/etc/motd", 0o600);
    std::os::unix::fs::chown(root.p("/etc/motd"), Some(1000), Some(1001)).unwrap();
    let c = root.converge(make(json!({"path": "/etc/motd", "content": "new\n"})).as_ref());
    assert_eq!(c.summary, "content changed");
    assert!(
        c.diff.as_deref().unwrap().contains("\n-old\n+new\n"),
        "{:?}",
        c.diff
    );
    assert_eq!(fs::read(root.p("/etc/motd")).unwrap(), b"new\n");
    assert_eq!(root.mode("/etc/motd"), 0o600);
    assert_eq!(
        (root.lstat("/etc/motd").uid(), root.lstat("/etc/motd").gid()),
        (1000, 1001)
    );
}

#[test]
fn same_content_is_unchanged() {
    let root = Root::new();
    root.write("/etc/motd", "same\n");
    root.chmod("/etc/motd", 0o640);
    assert_eq!(
        root.change(make(json!({"path": "/etc/motd", "content": "same\n"})).as_ref()),
        None
    );
}

#[test]
fn mode_only_change_has_no_content_diff() {
    let root = Root::new();
    root.write("/usr/local/bin/run", "#!/bin/sh\n");
    root.chmod("/usr/local/bin/run", 0o644);
    let r = make(json!({"path": "/usr/local/bin/run", "content": "#!/bin/sh\n", "mode": "0755"}));
    let c = root.converge(r.as_ref());
    assert_eq!(c, Change::new("mode 0644 -> 0755"));
    assert_eq!(root.mode("/usr/local/bin/run"), 0o755);
}

#[test]
fn owner_and_group_by_name_resolve_in_the_root() {
    let root = Root::with_accounts();
    root.write("/home/pi/kiosk.sh", "x\n");
    std::os::unix::fs::chown(root.p("/home/pi/kiosk.sh"), Some(0), Some(0)).unwrap();
    let r = make(
        json!({"path": "/home/pi/kiosk.sh", "content": "x\n", "owner": "pi", "group": "video"}),
    );
    assert_eq!(
        root.converge(r.as_ref()).summary,
        "owner root -> pi, group root -> video"
    );
    let m = root.lstat("/home/pi/kiosk.sh");
    assert_eq!((m.uid(), m.gid()), (1000, 44));
    // Numbers work too, also as YAML integers.
    let r = make(json!({"path": "/home/pi/kiosk.sh", "content": "x\n", "owner": 0, "group": "0"}));
    assert_eq!(
        root.converge(r.as_ref()).summary,
        "owner pi -> 0, group video -> 0"
    );
}

#[test]
fn chown_keeps_setuid_bit_when_mode_is_unset() {
    let root = Root::with_accounts();
    root.write("/usr/local/bin/helper", "bin");
    root.chmod("/usr/local/bin/helper", 0o4755);
    let r = make(json!({"path": "/usr/local/bin/helper", "content": "bin", "owner": "pi"}));
    root.converge(r.as_ref());
    assert_eq!(root.lstat("/usr/local/bin/helper").uid(), 1000);
    assert_eq!(
        root.mode("/usr/local/bin/helper"),
        0o4755,
        "chown cleared setuid and it was not restored"
    );
}

#[test]
fn unknown_owner_is_reported_in_check_mode_and_fails_apply() {
    let root = Root::with_accounts();
    root.write("/etc/motd", "x\n");
    let r = make(json!({"path": "/etc/motd", "content": "y\n", "owner": "ghost"}));
    let plan = r.plan(&root.host).unwrap();
    assert_eq!(
        plan.change.as_ref().unwrap().summary,
        "content changed, owner root -> ghost"
    );
    let err = plan.apply(&root.host).unwrap_err().to_string();
    assert!(
        err.contains("user 'ghost' does not exist on the device"),
        "{err}"
    );
    assert_eq!(
        fs::read(root.p("/etc/motd")).unwrap(),
        b"x\n",
        "nothing changes when the owner is unknown"
    );
    let missing = make(json!({"path": "/etc/new", "content": "y\n", "group": "nogroup"}));
    assert_eq!(
        root.change(missing.as_ref()).unwrap().summary,
        "created, group nogroup"
    );
    assert!(missing.plan(&root.host).unwrap().apply(&root.host).is_err());
    assert!(!root.p("/etc/new").exists());
}

#[test]
fn source_and_template_come_from_the_role() {
    let root = Root::new();
    let mut sources = MapSources::default();
    sources
        .files
        .insert("logo.bin".into(), vec![0x89, b'P', b'N', b'G', 0, 1, 2]);
    sources
        .templates
        .insert("app.conf.j2".into(), "url=https://example.org\n".into());
    let bin = build_with(
        json!({"path": "/usr/share/logo.png", "source": "logo.bin"}),
        &sources,
    )
    .unwrap();
    let c = root.converge(bin.as_ref());
    let d = c.diff.unwrap();
    assert!(d.starts_with("binary content differs (sha256 none→"), "{d}");
    assert_eq!(d.lines().count(), 1);
    assert_eq!(
        fs::read(root.p("/usr/share/logo.png")).unwrap(),
        sources.files["logo.bin"]
    );
    let tpl = build_with(
        json!({"path": "/etc/app.conf", "template": "app.conf.j2"}),
        &sources,
    )
    .unwrap();
    root.converge(tpl.as_ref());
    assert_eq!(
        fs::read_to_string(root.p("/etc/app.conf")).unwrap(),
        "url=https://example.org\n"
    );
}

#[test]
fn binary_content_change_is_one_line() {
    let root = Root::new();
    fs::create_dir_all(root.p("/opt")).unwrap();
    fs::write(root.p("/opt/blob"), [0u8, 1, 2, 3]).unwrap();
    let mut sources = MapSources::default();
    sources.files.insert("blob".into(), vec![0, 1, 2, 4]);
    let r = build_with(json!({"path": "/opt/blob", "source": "blob"}), &sources).unwrap();
    let c = root.converge(r.as_ref());
    assert_eq!(c.summary, "content changed");
    let d = c.diff.unwrap();
    assert!(
        d.starts_with("binary content differs (sha256 ") && !d.contains("none"),
        "{d}"
    );
    assert_eq!(d.lines().count(), 1);
}

#[test]
fn missing_source_or_template_is_a_spec_error() {
    let e = spec_error(json!({"path": "/etc/x", "source": "nope.txt"}));
    assert_eq!(e.key.as_deref(), Some("source"));
    assert!(
        e.message.contains("nope.txt") && e.message.contains("not found"),
        "{}",
        e.message
    );
    let e = spec_error(json!({"path": "/etc/x", "template": "nope.j2"}));
    assert_eq!(e.key.as_deref(), Some("template"));
}

#[test]
fn secret_content_diff_is_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(dir.path()).with_redactor(Redactor::new(["hunter22".to_string()]));
    fs::create_dir_all(dir.path().join("etc")).unwrap();
    fs::write(dir.path().join("etc/wpa.conf"), "psk=old-value\n").unwrap();
    let r = make(json!({"path": "/etc/wpa.conf", "content": "psk=hunter22\n", "mode": "0600"}));
    let c = r.plan(&host).unwrap().change.unwrap();
    assert_eq!(
        c.diff.as_deref(),
        Some("content hidden: it contains a secret value")
    );
    assert!(!c.summary.contains("hunter22"));
    // The old content is protected too when the secret is being removed.
    fs::write(dir.path().join("etc/wpa.conf"), "psk=hunter22\n").unwrap();
    let r = make(json!({"path": "/etc/wpa.conf", "content": "psk=other\n"}));
    let c = r.plan(&host).unwrap().change.unwrap();
    assert_eq!(c.diff.as_deref(), Some(diff::HIDDEN));
}

#[test]
fn unit_file_changes_set_the_units_flag() {
    let root = Root::new();
    let other = make(json!({"path": "/etc/default/app", "content": "X=1\n"}));
    root.converge(other.as_ref());
    assert!(!root.host.flags().units_changed);
    let unit = make(json!({"path": "/etc/systemd/system/app.service", "content": "[Service]\n"}));
    let mut check = Host::new(root.dir.path());
    check.check = true;
    assert!(unit.plan(&check).unwrap().change.is_some());
    assert!(
        !check.flags().units_changed,
        "planning alone changes nothing"
    );
    root.converge(unit.as_ref());
    assert!(root.host.flags().units_changed);
    let removed = Root::new();
    removed.write("/lib/systemd/system/old.service", "[Unit]\n");
    removed.converge(
        make(json!({"path": "/lib/systemd/system/old.service", "state": "absent"})).as_ref(),
    );
    assert!(removed.host.flags().units_changed);
}

#[test]
fn bad_specs_name_their_key() {
    let cases = [
        (
            json!({"path": "etc/motd", "content": ""}),
            "path",
            "must be absolute",
        ),
        (
            json!({"path": "/etc/../root/x", "content": ""}),
            "path",
            "`..`",
        ),
        (
            json!({"path": "/", "state": "directory"}),
            "path",
            "root directory",
        ),
        (
            json!({"path": "/x", "content": "a", "source": "b"}),
            "source",
            "keep exactly one",
        ),
        (
            json!({"path": "/x", "source": "a", "template": "b"}),
            "template",
            "keep exactly one",
        ),
        (
            json!({"path": "/x", "content": "a", "target": "/y"}),
            "target",
            "only applies to `state: link`",
        ),
        (
            json!({"path": "/x", "state": "link"}),
            "target",
            "needs `target:`",
        ),
        (
            json!({"path": "/x", "state": "link", "target": "/y", "mode": "0644"}),
            "mode",
            "no mode",
        ),
        (
            json!({"path": "/x", "state": "directory", "content": "a"}),
            "content",
            "only applies to `state: file`",
        ),
        (
            json!({"path": "/x", "state": "absent", "owner": "pi"}),
            "owner",
            "state: absent",
        ),
        (
            json!({"path": "/x", "state": "gone"}),
            "state",
            "unknown state",
        ),
        (
            json!({"path": "/x", "content": "a", "mode": "0888"}),
            "mode",
            "8 or 9",
        ),
        (
            json!({"path": "/x", "content": "a", "mode": 689}),
            "mode",
            "8 or 9",
        ),
        (
            json!({"path": "/x", "content": "a", "mode": "u=rw,g=r"}),
            "mode",
            "symbolic",
        ),
        (
            json!({"path": "/x", "content": "a", "mode": "12345"}),
            "mode",
            "more than four",
        ),
        (
            json!({"path": "/x", "content": "a", "mode": -1}),
            "mode",
            "not an octal mode",
        ),
        (
            json!({"path": "/x", "content": "a", "mode": 6.44}),
            "mode",
            "not an octal mode",
        ),
        (
            json!({"path": "/x", "content": 42}),
            "content",
            "must be text",
        ),
        (
            json!({"path": "/x", "content": "a", "owner": "a b"}),
            "owner",
            "not a valid name",
        ),
        (
            json!({"path": "/x", "content": "a", "group": true}),
            "group",
            "name or a numeric id",
        ),
        (
            json!({"path": "/x", "content": "a", "recurse": true}),
            "recurse",
            "unknown field",
        ),
    ];
    for (spec, key, text) in cases {
        let e = spec_error(spec.clone());
        assert_eq!(e.key.as_deref(), Some(key), "{spec}: {}", e.message);
        assert!(e.message.contains(text), "{spec}: {}", e.message);
    }
    let e = spec_error(json!({"path": "/x"}));
    assert!(
        e.message.contains("content") && e.message.contains("source"),
        "{}",
        e.message
    );
}

#[test]
fn modes_read_as_octal_from_strings_and_integers() {
    for (v, want) in [
        (json!("0644"), 0o644),
        (json!("644"), 0o644),
        (json!("0o750"), 0o750),
        (json!("4755"), 0o4755),
        (json!("00644"), 0o644),
        (json!(644), 0o644),
        (json!(755), 0o755),
        (json!(0), 0),
    ] {
        assert_eq!(parse_mode(&v).unwrap(), want, "{v}");
    }
}

#[test]
fn path_is_normalised_for_its_id() {
    let r = make(json!({"path": "/etc//motd/", "content": ""}));
    assert_eq!(r.id(), "/etc/motd");
    assert_eq!(r.kind(), "file");
}
