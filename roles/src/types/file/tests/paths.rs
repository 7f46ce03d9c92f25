//! How a path is walked inside the root: a symlink at the path or among its parents, swapped in
//! by a user or after the check, never redirects a write outside.

use super::*;

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
