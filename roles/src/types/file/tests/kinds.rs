//! What a path becomes: a directory, a link or nothing, replacing whatever kind stood there,
//! and what is never removed (a mount point).

use super::*;

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
