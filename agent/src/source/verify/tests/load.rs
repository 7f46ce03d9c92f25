//! Trust-root files that cannot be used fail loudly at load, naming the file and the fix.

use super::Bed;
use crate::source::verify::*;

#[test]
fn trust_root_files_that_cannot_be_used_are_config_errors() {
    let bed = Bed::new();
    let load = |a: Option<&str>, k: Option<&str>| TrustRoots::load(&bed.root(), a, k).unwrap_err();

    let err = load(Some("/etc/tend/missing"), None);
    assert!(matches!(err, VerifyError::Config { line: 0, .. }), "{err}");
    assert!(
        err.to_string().contains("remove verify.allowed_signers"),
        "{err}"
    );

    assert!(load(Some("etc/tend/relative"), None)
        .to_string()
        .contains("absolute"));

    bed.write_root("/etc/tend/big", &"#\n".repeat(600_000));
    assert!(load(Some("/etc/tend/big"), None)
        .to_string()
        .contains("larger than"));

    // A symlink to an absolute path resolves inside the root, not on the host.
    std::os::unix::fs::symlink("/etc/passwd", bed.root().join("etc/tend/link")).unwrap();
    let err = load(Some("/etc/tend/link"), None);
    assert!(err.to_string().contains("cannot read"), "{err}");

    let weak = bed.ssh_key("weak", &["-t", "rsa", "-b", "1024"]);
    bed.write_root("/etc/tend/weak", &format!("w {}\n", Bed::pub_key(&weak)));
    let err = load(Some("/etc/tend/weak"), None);
    assert!(matches!(err, VerifyError::Config { line: 1, .. }), "{err}");
    assert!(err.to_string().contains("1024-bit"), "{err}");

    let k = bed.gpg_key("S <s@example.com>", "ed25519", "sign", "never");
    let secret = bed.gpg(&["--armor", "--export-secret-keys", &k[0]]);
    bed.write_root("/etc/tend/secret.asc", &secret);
    let err = load(None, Some("/etc/tend/secret.asc"));
    assert!(err.to_string().contains("PRIVATE"), "{err}");

    bed.write_root("/etc/tend/notakey.asc", "hello\n");
    assert!(load(None, Some("/etc/tend/notakey.asc"))
        .to_string()
        .contains("no public key"));

    let armored = bed.gpg(&["--armor", "--export", &k[0]]);
    let body = armored.lines().nth(3).unwrap();
    bed.write_root("/etc/tend/broken.asc", &armored.replacen(body, "AAAA", 1));
    let err = load(None, Some("/etc/tend/broken.asc"));
    assert!(matches!(err, VerifyError::Config { line: 1, .. }), "{err}");
}
