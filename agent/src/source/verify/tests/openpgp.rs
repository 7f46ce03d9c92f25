//! OpenPGP signatures: primary keys, signing subkeys, tags, and each refusal.

use std::fs;
use std::process::Command;

use super::{ok, tamper, Bed};
use crate::source::verify::*;

#[test]
fn openpgp_commits_by_primary_keys_and_subkeys_are_accepted() {
    let bed = Bed::new();
    let alice = bed.gpg_key("Alice <alice@example.com>", "ed25519", "sign", "never");
    let bob = bed.gpg_key("Bob <bob@example.com>", "rsa2048", "sign", "never");
    let carol = bed.gpg_key("Carol <carol@example.com>", "ed25519", "cert", "never");
    bed.gpg(&["--quick-add-key", &carol[0], "ed25519", "sign", "never"]);
    let carol = bed.fingerprints("carol@example.com");
    assert_eq!(carol.len(), 2, "carol has a signing subkey");
    let trust = bed.keyring(&[&alice[0], &bob[0], &carol[0]]);

    for (key, uid, signing_fpr) in [
        (&alice[0], "Alice <alice@example.com>", &alice[0]),
        (&bob[0], "Bob <bob@example.com>", &bob[0]),
        (&carol[0], "Carol <carol@example.com>", &carol[1]),
    ] {
        let (id, raw) = bed.gpg_commit(key, &format!("by {uid}"), &[]);
        assert!(String::from_utf8_lossy(&raw).contains("BEGIN PGP SIGNATURE"));
        let signer = verify_commit(&raw, &trust).unwrap_or_else(|e| panic!("{uid}: {e}"));
        assert_eq!(
            signer,
            Signer {
                method: "openpgp",
                principal: uid.to_string(),
                fingerprint: signing_fpr.clone(),
            }
        );
        assert!(
            bed.git(&["verify-commit", &id]).status.success(),
            "git refused {uid}"
        );

        let tampered = tamper(&raw, &format!("by {uid}"), &format!("by {uid}!"));
        let err = verify_commit(&tampered, &trust).unwrap_err();
        assert_eq!(err.kind(), "bad_signature", "{uid}: {err}");
        let tid = bed.store("commit", &tampered);
        assert!(!bed.git(&["verify-commit", &tid]).status.success());
    }

    // An OpenPGP-signed annotated tag.
    ok(
        bed.git(&[
            "-c",
            &format!("user.signingkey={}", alice[0]),
            "tag",
            "-s",
            "v1",
            "-m",
            "v1",
        ]),
        "git tag -s",
    );
    let tag = bed.cat("tag", "v1");
    assert_eq!(verify_tag(&tag, &trust).unwrap().fingerprint, alice[0]);
    let tampered = tamper(&tag, "tag v1", "tag v2");
    assert_eq!(
        verify_tag(&tampered, &trust).unwrap_err().kind(),
        "bad_signature"
    );
}

#[test]
fn openpgp_refusals() {
    let bed = Bed::new();
    let alice = bed.gpg_key("Alice <alice@example.com>", "ed25519", "sign", "never");
    let mallory = bed.gpg_key("Mallory <mallory@example.com>", "ed25519", "sign", "never");
    let dave = bed.gpg_key("Dave <dave@example.com>", "ed25519", "sign", "1d");
    let erin = bed.gpg_key("Erin <erin@example.com>", "ed25519", "sign", "never");

    let (_, by_mallory) = bed.gpg_commit(&mallory[0], "mallory", &[]);
    let (_, by_dave) = bed.gpg_commit(&dave[0], "dave", &[]);
    let (_, by_erin) = bed.gpg_commit(&erin[0], "erin", &[]);
    let (_, unsigned) = bed.plain_commit("unsigned");

    // SHA-1 signatures are forgeable: refused even from a trusted key.
    let wrapper = bed.dir.path().join("gpg-sha1");
    fs::write(&wrapper, "#!/bin/sh\nexec gpg --digest-algo SHA1 \"$@\"\n").unwrap();
    let mut mode = fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    fs::set_permissions(&wrapper, mode).unwrap();
    let program = format!("gpg.program={}", wrapper.display());
    let (_, sha1) = bed.gpg_commit(&alice[0], "sha1", &["-c", &program]);

    // Revoke Erin's key after she signed, with the revocation certificate gpg made for it.
    let rev = bed
        .gnupg()
        .join(format!("openpgp-revocs.d/{}.rev", erin[0]));
    let cert = fs::read_to_string(&rev)
        .unwrap()
        .replace(":-----BEGIN", "-----BEGIN");
    fs::write(&rev, cert).unwrap();
    bed.gpg(&["--import", &rev.display().to_string()]);

    let trust = bed.keyring(&[&alice[0], &dave[0], &erin[0]]);

    let err = verify_commit(&by_mallory, &trust).unwrap_err();
    assert_eq!(err.kind(), "unknown_signer", "{err}");
    assert!(
        err.to_string().contains(&mallory[0]),
        "names the key: {err}"
    );
    assert!(
        err.to_string().contains("/etc/tend/trusted.asc"),
        "says where to add it: {err}"
    );

    let err = verify_commit(&by_erin, &trust).unwrap_err();
    assert_eq!(err.kind(), "revoked", "{err}");

    let err = verify_commit(&sha1, &trust).unwrap_err();
    assert_eq!(err.kind(), "malformed", "{err}");
    assert!(err.to_string().contains("SHA1"), "{err}");

    assert_eq!(
        verify_commit(&unsigned, &trust).unwrap_err().kind(),
        "unsigned"
    );

    // Dave's key is good today and expired the day after tomorrow.
    let obj = || object::split_commit(&by_dave).unwrap();
    assert!(check(obj(), &trust, now()).is_ok());
    let err = check(obj(), &trust, now() + 2 * 86_400).unwrap_err();
    assert_eq!(err.kind(), "outside_validity", "{err}");

    // OpenPGP signature with no keyring configured, and broken armor.
    let ssh_only = TrustRoots::default();
    assert_eq!(
        verify_commit(&by_dave, &ssh_only).unwrap_err().kind(),
        "unknown_signer"
    );
    let text = String::from_utf8(by_dave.clone()).unwrap();
    let body_line = text
        .lines()
        .find(|l| l.len() > 40 && l.starts_with(' '))
        .unwrap();
    let broken = text.replacen(body_line, " !!!!not*base64!!!!", 1);
    let err = verify_commit(broken.as_bytes(), &trust).unwrap_err();
    assert_eq!(err.kind(), "malformed", "{err}");
}

#[test]
fn keyring_of_several_blocks_and_a_binary_export_load() {
    let bed = Bed::new();
    let a = bed.gpg_key("A <a@example.com>", "ed25519", "sign", "never");
    let b = bed.gpg_key("B <b@example.com>", "ed25519", "sign", "never");
    let blocks =
        bed.gpg(&["--armor", "--export", &a[0]]) + &bed.gpg(&["--armor", "--export", &b[0]]);
    bed.write_root("/etc/tend/trusted.asc", &format!("# fleet keys\n{blocks}"));
    let trust = TrustRoots::load(&bed.root(), None, Some("/etc/tend/trusted.asc")).unwrap();
    assert!(
        trust.summary().contains("2 OpenPGP key(s)"),
        "{}",
        trust.summary()
    );
    let (_, raw) = bed.gpg_commit(&b[0], "by b", &[]);
    assert_eq!(verify_commit(&raw, &trust).unwrap().fingerprint, b[0]);

    let out = Command::new("gpg")
        .args(["--batch", "--export", &a[0], &b[0]])
        .env("GNUPGHOME", bed.gnupg())
        .output()
        .unwrap();
    assert!(out.status.success());
    fs::write(bed.root().join("etc/tend/trusted.gpg"), &out.stdout).unwrap();
    let trust = TrustRoots::load(&bed.root(), None, Some("/etc/tend/trusted.gpg")).unwrap();
    assert_eq!(
        verify_commit(&raw, &trust).unwrap().principal,
        "B <b@example.com>"
    );
}

#[test]
fn a_revoked_user_id_does_not_erase_the_key_expiry() {
    let bed = Bed::new();
    let dave = bed.gpg_key("Dave <dave@example.com>", "ed25519", "sign", "1d");
    bed.gpg(&["--quick-add-uid", &dave[0], "Old Dave <old@example.com>"]);
    bed.gpg(&["--quick-revoke-uid", &dave[0], "Old Dave <old@example.com>"]);
    let (_, raw) = bed.gpg_commit(&dave[0], "dave", &[]);
    let trust = bed.keyring(&[&dave[0]]);
    let obj = || object::split_commit(&raw).unwrap();
    assert_eq!(
        check(obj(), &trust, now()).unwrap().principal,
        "Dave <dave@example.com>"
    );
    let err = check(obj(), &trust, now() + 2 * 86_400).unwrap_err();
    assert_eq!(err.kind(), "outside_validity", "{err}");
}
