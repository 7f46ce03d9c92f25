use super::*;
use crate::redact::Redactor;
use serde_json::json;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

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
fn directory_created_changed_unchanged() {
    let root = Root::with_accounts();
    let r = make(json!({"path": "/srv/data/cache", "state": "directory"}));
    assert_eq!(root.converge(r.as_ref()).summary, "created directory");
    assert!(root.lstat("/srv/data/cache").is_dir());
    assert_eq!(root.mode("/srv/data/cache"), 0o755);
    let r =
        make(json!({"path": "/srv/data/cache", "state": "directory", "mode": 2770, "group": "pi"}));
    assert_eq!(
        root.converge(r.as_ref()).summary,
        "mode 0755 -> 2770, group root -> pi"
    );
    assert_eq!(root.mode("/srv/data/cache"), 0o2770);
    assert_eq!(root.lstat("/srv/data/cache").gid(), 1001);
    fs::write(root.p("/srv/data/cache/x"), "").unwrap();
    assert_eq!(
        root.change(make(json!({"path": "/srv/data/cache", "state": "directory"})).as_ref()),
        None
    );
}

#[test]
fn directory_replaces_a_file_and_says_so() {
    let root = Root::new();
    root.write("/var/lib/app", "i am a file");
    let r = make(json!({"path": "/var/lib/app", "state": "directory", "mode": "0700"}));
    assert_eq!(
        root.converge(r.as_ref()).summary,
        "replaced a file with a directory, mode 0700"
    );
    assert!(root.lstat("/var/lib/app").is_dir());
    assert_eq!(root.mode("/var/lib/app"), 0o700);
}

#[test]
fn file_replaces_a_directory_and_says_so() {
    let root = Root::new();
    root.write("/etc/app.conf/a", "1");
    root.write("/etc/app.conf/b", "2");
    let r = make(json!({"path": "/etc/app.conf", "content": "k=v\n"}));
    let c = root.converge(r.as_ref());
    assert_eq!(
        c.summary,
        "replaced a directory (and the 2 entries in it) with a file"
    );
    assert!(c.diff.unwrap().contains("+k=v"));
    assert!(root.lstat("/etc/app.conf").is_file());
    assert_eq!(root.mode("/etc/app.conf"), 0o644);
}

#[test]
fn file_replaces_a_fifo() {
    let root = Root::new();
    fs::create_dir_all(root.p("/run")).unwrap();
    let c_path =
        std::ffi::CString::new(root.p("/run/pipe").into_os_string().into_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let r = make(json!({"path": "/run/pipe", "content": "x"}));
    assert_eq!(
        root.converge(r.as_ref()).summary,
        "replaced a fifo with a file"
    );
}

#[test]
fn link_created_retargeted_unchanged() {
    let root = Root::new();
    let r = make(json!({"path": "/usr/bin/editor", "state": "link", "target": "/usr/bin/nano"}));
    assert_eq!(
        root.converge(r.as_ref()).summary,
        "created link -> /usr/bin/nano"
    );
    assert_eq!(
        fs::read_link(root.p("/usr/bin/editor")).unwrap(),
        Path::new("/usr/bin/nano")
    );
    let r = make(json!({"path": "/usr/bin/editor", "state": "link", "target": "vim.basic"}));
    assert_eq!(
        root.converge(r.as_ref()).summary,
        "link -> vim.basic (was /usr/bin/nano)"
    );
    assert_eq!(
        fs::read_link(root.p("/usr/bin/editor")).unwrap(),
        Path::new("vim.basic")
    );
    let leftovers: Vec<_> = fs::read_dir(root.p("/usr/bin")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temp link remains");
}

#[test]
fn link_owner_is_the_links_own() {
    let root = Root::with_accounts();
    root.write("/home/pi/real", "x");
    let r = make(json!({"path": "/home/pi/l", "state": "link", "target": "real", "owner": "pi"}));
    assert_eq!(
        root.converge(r.as_ref()).summary,
        "created link -> real, owner pi"
    );
    assert_eq!(root.lstat("/home/pi/l").uid(), 1000);
    assert_eq!(
        root.lstat("/home/pi/real").uid(),
        0,
        "the target's owner is untouched"
    );
}

#[test]
fn link_replaces_a_file_and_a_directory() {
    let root = Root::new();
    root.write("/etc/resolv.conf", "nameserver 1.1.1.1\n");
    let r = make(
        json!({"path": "/etc/resolv.conf", "state": "link", "target": "/run/systemd/resolve/stub-resolv.conf"}),
    );
    assert_eq!(
        root.converge(r.as_ref()).summary,
        "replaced a file with a link -> /run/systemd/resolve/stub-resolv.conf"
    );
    root.write("/opt/current/bin", "");
    let r = make(json!({"path": "/opt/current", "state": "link", "target": "/opt/v2"}));
    assert_eq!(
        root.converge(r.as_ref()).summary,
        "replaced a directory (and the 1 entries in it) with a link -> /opt/v2"
    );
    assert!(root.lstat("/opt/current").file_type().is_symlink());
}

#[test]
fn absent_removes_file_link_and_directory() {
    let root = Root::new();
    root.write("/etc/old.conf", "x");
    root.write("/etc/keep", "kept");
    symlink("/etc/keep", root.p("/etc/alias")).unwrap();
    root.write("/var/cache/app/a/b", "x");
    root.write("/var/cache/app/c", "x");
    fs::create_dir_all(root.p("/var/empty-dir")).unwrap();

    let cases = [
        ("/etc/old.conf", "removed"),
        ("/etc/alias", "removed a link -> /etc/keep"),
        (
            "/var/cache/app",
            "removed directory and everything in it (2 entries)",
        ),
        ("/var/empty-dir", "removed directory"),
    ];
    for (path, summary) in cases {
        let r = make(json!({"path": path, "state": "absent"}));
        assert_eq!(root.converge(r.as_ref()).summary, summary);
        assert!(
            fs::symlink_metadata(root.p(path)).is_err(),
            "{path} still exists"
        );
    }
    assert_eq!(
        fs::read(root.p("/etc/keep")).unwrap(),
        b"kept",
        "removing a link leaves its target"
    );
    assert_eq!(
        root.change(make(json!({"path": "/nothing/here", "state": "absent"})).as_ref()),
        None
    );
}

#[test]
fn mounted_filesystem_is_never_removed() {
    let root = Root::new();
    fs::create_dir_all(root.p("/data")).unwrap();
    let target =
        std::ffi::CString::new(root.p("/data").into_os_string().into_encoded_bytes()).unwrap();
    let fstype = c"tmpfs";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        eprintln!(
            "skipped: cannot mount a tmpfs here ({})",
            io::Error::last_os_error()
        );
        return;
    }
    root.write("/data/precious", "keep");
    let outcomes: Vec<String> = [
        json!({"path": "/data", "state": "absent"}),
        json!({"path": "/data", "content": "x"}),
    ]
    .into_iter()
    .map(|spec| {
        let r = make(spec);
        r.plan(&root.host)
            .unwrap()
            .apply(&root.host)
            .unwrap_err()
            .to_string()
    })
    .collect();
    let kept = fs::read(root.p("/data/precious"));
    // SAFETY: unmounts what this test mounted.
    unsafe { libc::umount(target.as_ptr()) };
    for err in outcomes {
        assert!(err.contains("is a mount point"), "{err}");
    }
    assert_eq!(kept.unwrap(), b"keep");
}

#[test]
fn symlink_at_final_path_is_replaced_not_followed() {
    let root = Root::new();
    root.write("/etc/shadow", "root:secret-hash:19000::::::\n");
    root.chmod("/etc/shadow", 0o640);
    symlink("/etc/shadow", root.p("/etc/motd")).unwrap();
    let r = make(json!({"path": "/etc/motd", "content": "welcome\n", "mode": "0644"}));
    let c = root.converge(r.as_ref());
    assert_eq!(
        c.summary,
        "replaced a link -> /etc/shadow with a file, mode 0644"
    );
    assert!(
        !c.diff.unwrap().contains("secret-hash"),
        "the link's target was read"
    );
    assert!(root.lstat("/etc/motd").is_file());
    assert_eq!(fs::read(root.p("/etc/motd")).unwrap(), b"welcome\n");
    assert_eq!(
        fs::read(root.p("/etc/shadow")).unwrap(),
        b"root:secret-hash:19000::::::\n"
    );
    assert_eq!(root.mode("/etc/shadow"), 0o640);
    // The same holds for mode-only and directory states.
    symlink("/etc/shadow", root.p("/etc/dir")).unwrap();
    root.converge(make(json!({"path": "/etc/dir", "state": "directory"})).as_ref());
    assert!(root.lstat("/etc/dir").is_dir());
    assert_eq!(root.mode("/etc/shadow"), 0o640);
}

#[test]
fn parent_symlinks_resolve_inside_the_root() {
    let root = Root::new();
    fs::create_dir_all(root.p("/data/etc")).unwrap();
    symlink("/data/etc", root.p("/etc")).unwrap();
    root.converge(make(json!({"path": "/etc/hostname", "content": "dev1\n"})).as_ref());
    assert_eq!(fs::read(root.p("/data/etc/hostname")).unwrap(), b"dev1\n");
}

/// A link owned by uid 1000 at `/home/kiosk/bin` (in a home that uid owns), aimed at
/// `/etc/profile.d`, which holds `kiosk.sh` already. Needs root (lchown); None otherwise.
fn kiosk_with_swapped_bin() -> Option<Root> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: planting a link owned by another user needs root");
        return None;
    }
    let root = Root::with_accounts();
    root.write("/etc/profile.d/kiosk.sh", "root's own\n");
    fs::create_dir_all(root.p("/home/kiosk")).unwrap();
    std::os::unix::fs::lchown(root.p("/home/kiosk"), Some(1000), Some(1001)).unwrap();
    symlink("/etc/profile.d", root.p("/home/kiosk/bin")).unwrap();
    std::os::unix::fs::lchown(root.p("/home/kiosk/bin"), Some(1000), Some(1001)).unwrap();
    Some(root)
}

#[test]
fn user_symlink_swapped_in_for_a_parent_is_refused() {
    let Some(root) = kiosk_with_swapped_bin() else {
        return;
    };
    let r = make(json!({"path": "/home/kiosk/bin/kiosk.sh", "content": "evil\n", "owner": "pi"}));
    let err = r.plan(&root.host).err().expect("refused").to_string();
    assert!(
        err.contains("/home/kiosk/bin/kiosk.sh: its parent /home/kiosk/bin is a symlink (-> /etc/profile.d) owned by pi (uid 1000)"),
        "{err}"
    );
    assert!(err.contains("chown -h root:root /home/kiosk/bin"), "{err}");
    assert_eq!(
        fs::read(root.p("/etc/profile.d/kiosk.sh")).unwrap(),
        b"root's own\n"
    );
    let gone = make(json!({"path": "/home/kiosk/bin/kiosk.sh", "state": "absent"}));
    assert!(
        gone.plan(&root.host).is_err(),
        "absent must not look through the link"
    );
    assert!(root.p("/etc/profile.d/kiosk.sh").exists());
}

#[test]
fn a_parent_swapped_after_the_check_does_not_redirect_the_write() {
    let Some(root) = kiosk_with_swapped_bin() else {
        return;
    };
    // The check saw a real directory; the user swaps in the link before the write.
    fs::remove_file(root.p("/home/kiosk/bin")).unwrap();
    fs::create_dir(root.p("/home/kiosk/bin")).unwrap();
    let r = make(json!({"path": "/home/kiosk/bin/kiosk.sh", "content": "new\n"}));
    let plan = r.plan(&root.host).unwrap();
    fs::remove_dir(root.p("/home/kiosk/bin")).unwrap();
    symlink("/etc/profile.d", root.p("/home/kiosk/bin")).unwrap();
    std::os::unix::fs::lchown(root.p("/home/kiosk/bin"), Some(1000), Some(1001)).unwrap();
    assert!(plan.apply(&root.host).is_err());
    assert_eq!(
        fs::read(root.p("/etc/profile.d/kiosk.sh")).unwrap(),
        b"root's own\n"
    );
}

#[test]
fn root_owned_relative_link_in_a_parent_is_followed_as_merged_usr_needs() {
    let root = Root::new();
    fs::create_dir_all(root.p("/usr/lib")).unwrap();
    symlink("usr/lib", root.p("/lib")).unwrap();
    root.converge(make(json!({"path": "/lib/tend/x.conf", "content": "x\n"})).as_ref());
    assert_eq!(fs::read(root.p("/usr/lib/tend/x.conf")).unwrap(), b"x\n");
    root.converge(make(json!({"path": "/lib/tend/x.conf", "state": "absent"})).as_ref());
    assert!(!root.p("/usr/lib/tend/x.conf").exists());
}

#[test]
fn parent_that_is_a_file_is_a_clear_error() {
    let root = Root::new();
    root.write("/etc/app", "file");
    let r = make(json!({"path": "/etc/app/conf", "content": "x"}));
    let err = r.plan(&root.host).err().unwrap().to_string();
    assert!(
        err.contains("its parent /etc/app is not a directory"),
        "{err}"
    );
    // Nothing can be there, so `absent` is already true.
    let gone = make(json!({"path": "/etc/app/conf", "state": "absent"}));
    assert_eq!(root.change(gone.as_ref()), None);
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
