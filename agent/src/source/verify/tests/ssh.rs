//! SSH signatures: each key type accepted, each refusal, and git's verdict on every case.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::{ok, splice_gpgsig, tamper, Bed};
use crate::source::verify::*;

const DATE_2023: &str = "1700000000 +0000"; // 2023-11-14

#[test]
fn ssh_commits_of_each_key_type_are_accepted_and_git_agrees() {
    let bed = Bed::new();
    let ed = bed.ssh_key("ed25519", &["-t", "ed25519"]);
    let ec = bed.ssh_key("ecdsa", &["-t", "ecdsa"]);
    let ec384 = bed.ssh_key("ecdsa384", &["-t", "ecdsa", "-b", "384"]);
    let ec521 = bed.ssh_key("ecdsa521", &["-t", "ecdsa", "-b", "521"]);
    let rsa = bed.ssh_key("rsa", &["-t", "rsa", "-b", "3072"]);
    let trust = bed.allowed_signers(&format!(
        "ed@example.com namespaces=\"git\" {}\n\
         ec@example.com {}\n\
         ec384@example.com {}\n\
         ec521@example.com {}\n\
         rsa@example.com,ops@example.com namespaces=\"file,git\" {}\n",
        Bed::pub_key(&ed),
        Bed::pub_key(&ec),
        Bed::pub_key(&ec384),
        Bed::pub_key(&ec521),
        Bed::pub_key(&rsa)
    ));
    assert!(!trust.is_empty());
    for (key, principal) in [
        (&ed, "ed@example.com"),
        (&ec, "ec@example.com"),
        (&ec384, "ec384@example.com"),
        (&ec521, "ec521@example.com"),
        (&rsa, "rsa@example.com,ops@example.com"),
    ] {
        let (id, raw) = bed.ssh_commit(key, &format!("signed by {principal}"), DATE_2023);
        let signer = verify_commit(&raw, &trust).unwrap_or_else(|e| panic!("{principal}: {e}"));
        assert_eq!(signer.method, "ssh");
        assert_eq!(signer.principal, principal);
        let fp = ok(
            Command::new("ssh-keygen")
                .args(["-l", "-E", "sha256", "-f"])
                .arg(key.with_extension("pub"))
                .output()
                .unwrap(),
            "ssh-keygen -l",
        );
        assert!(
            fp.contains(&signer.fingerprint),
            "{fp} vs {}",
            signer.fingerprint
        );
        assert!(
            bed.git_verifies("verify-commit", &id),
            "git refused {principal}"
        );
    }
}

#[test]
fn ssh_refusals_agree_with_git_verify_commit() {
    let bed = Bed::new();
    let good = bed.ssh_key("good", &["-t", "ed25519"]);
    let stranger = bed.ssh_key("stranger", &["-t", "ed25519"]);
    let file_only = bed.ssh_key("fileonly", &["-t", "ed25519"]);
    let expired = bed.ssh_key("expired", &["-t", "ecdsa"]);
    let future = bed.ssh_key("future", &["-t", "ed25519"]);
    let was_valid = bed.ssh_key("wasvalid", &["-t", "ed25519"]);
    let trust = bed.allowed_signers(&format!(
        "# the fleet's signers\n\
         good@example.com namespaces=\"git\" {}\n\
         files@example.com namespaces=\"file\" {}\n\
         old@example.com valid-before=\"20200101Z\" {}\n\
         new@example.com valid-after=\"20990101Z\" {}\n\
         was@example.com valid-after=\"20230101\",valid-before=\"20240101Z\" {}\n",
        Bed::pub_key(&good),
        Bed::pub_key(&file_only),
        Bed::pub_key(&expired),
        Bed::pub_key(&future),
        Bed::pub_key(&was_valid),
    ));

    let (good_id, good_raw) = bed.ssh_commit(&good, "deploy kiosk", DATE_2023);
    assert!(verify_commit(&good_raw, &trust).is_ok());
    assert!(bed.git_verifies("verify-commit", &good_id));

    // Validity is judged at the committer time, as git does: valid in 2023, long expired now.
    let (id, raw) = bed.ssh_commit(&was_valid, "old but valid", DATE_2023);
    assert_eq!(
        verify_commit(&raw, &trust).unwrap().principal,
        "was@example.com"
    );
    assert!(bed.git_verifies("verify-commit", &id));

    let mut cases: Vec<(&str, String, Vec<u8>, &str)> = Vec::new();
    let (id, raw) = bed.plain_commit("unsigned");
    cases.push(("unsigned", id, raw, "unsigned"));
    let (id, raw) = bed.ssh_commit(&stranger, "by a stranger", DATE_2023);
    cases.push(("unknown signer", id, raw, "unknown_signer"));
    let raw = tamper(&good_raw, "deploy kiosk", "deploy kiosl");
    cases.push((
        "tampered message",
        bed.store("commit", &raw),
        raw,
        "bad_signature",
    ));
    let tree = String::from_utf8_lossy(&good_raw[5..45]).into_owned();
    let raw = tamper(&good_raw, &tree, &format!("{}0", &tree[..39]));
    cases.push((
        "tampered tree line",
        bed.store("commit", &raw),
        raw,
        "bad_signature",
    ));
    let raw = tamper(&good_raw, "1700000000 +0000", "1700000001 +0000");
    cases.push((
        "tampered committer time",
        bed.store("commit", &raw),
        raw,
        "bad_signature",
    ));
    let (id, raw) = bed.ssh_commit(&file_only, "file-only key", DATE_2023);
    cases.push(("key allowed only for file", id, raw, "wrong_namespace"));
    let (id, raw) = bed.ssh_commit(&expired, "expired key", DATE_2023);
    cases.push(("valid-before passed", id, raw, "outside_validity"));
    let (id, raw) = bed.ssh_commit(&future, "not yet valid", DATE_2023);
    cases.push(("valid-after ahead", id, raw, "outside_validity"));

    // A signature over the same payload in the `file` namespace, spliced into the commit.
    let (_, unsigned) = bed.plain_commit("spliced");
    let payload = bed.dir.path().join("payload");
    fs::write(&payload, &unsigned).unwrap();
    ok(
        Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", "file", "-f"])
            .arg(&good)
            .arg(&payload)
            .output()
            .unwrap(),
        "ssh-keygen -Y sign",
    );
    let armor = fs::read_to_string(payload.with_extension("sig")).unwrap();
    let raw = splice_gpgsig(&unsigned, &armor);
    cases.push((
        "namespace file",
        bed.store("commit", &raw),
        raw,
        "wrong_namespace",
    ));

    // Garbage inside the armor.
    let body = armor.lines().nth(2).unwrap();
    let raw = splice_gpgsig(&unsigned, &armor.replace(body, "!!!not base64!!!"));
    cases.push((
        "malformed armor",
        bed.store("commit", &raw),
        raw,
        "malformed",
    ));

    for (what, id, raw, kind) in &cases {
        let err = verify_commit(raw, &trust).expect_err(what);
        assert_eq!(err.kind(), *kind, "{what}: {err}");
        assert!(
            !bed.git_verifies("verify-commit", id),
            "git accepted {what}"
        );
    }
    // The messages say how to fix it.
    let unknown = verify_commit(&cases[1].2, &trust).unwrap_err().to_string();
    assert!(
        unknown.contains("/etc/tend/allowed_signers") && unknown.contains("ssh-ed25519 AAAA"),
        "{unknown}"
    );
    let unsigned = verify_commit(&cases[0].2, &trust).unwrap_err().to_string();
    assert!(unsigned.contains("git commit -S"), "{unsigned}");
}

#[test]
fn ssh_signed_commit_without_trust_roots_is_an_unknown_signer() {
    let bed = Bed::new();
    let key = bed.ssh_key("k", &["-t", "ed25519"]);
    let (_, raw) = bed.ssh_commit(&key, "m", DATE_2023);
    let empty = TrustRoots::load(&bed.root(), None, None).unwrap();
    assert!(empty.is_empty());
    let err = verify_commit(&raw, &empty).unwrap_err();
    assert_eq!(err.kind(), "unknown_signer", "{err}");
    assert!(err.to_string().contains("verify.allowed_signers"), "{err}");
}

#[test]
fn ssh_signed_tags_are_verified_and_git_agrees() {
    let bed = Bed::new();
    let key = bed.ssh_key("tagger", &["-t", "ed25519"]);
    let stranger = bed.ssh_key("stranger", &["-t", "ed25519"]);
    let trust = bed.allowed_signers(&format!("release@example.com {}\n", Bed::pub_key(&key)));
    bed.plain_commit("base");
    let sign_tag = |name: &str, key: &Path| {
        ok(
            bed.git(&[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key.display()),
                "tag",
                "-s",
                name,
                "-m",
                &format!("release {name}"),
            ]),
            "git tag -s",
        );
        bed.cat("tag", name)
    };
    let raw = sign_tag("production/1", &key);
    assert_eq!(
        verify_tag(&raw, &trust).unwrap().principal,
        "release@example.com"
    );
    assert!(bed.git_verifies("verify-tag", "production/1"));

    let tampered = tamper(&raw, "tag production/1", "tag production/2");
    let id = bed.store("tag", &tampered);
    assert_eq!(
        verify_tag(&tampered, &trust).unwrap_err().kind(),
        "bad_signature"
    );
    assert!(!bed.git_verifies("verify-tag", &id));

    let raw = sign_tag("production/3", &stranger);
    assert_eq!(
        verify_tag(&raw, &trust).unwrap_err().kind(),
        "unknown_signer"
    );
    assert!(!bed.git_verifies("verify-tag", "production/3"));

    ok(
        bed.git(&["tag", "-a", "unsigned", "-m", "not signed"]),
        "git tag -a",
    );
    let raw = bed.cat("tag", "unsigned");
    assert_eq!(verify_tag(&raw, &trust).unwrap_err().kind(), "unsigned");
    assert!(!bed.git_verifies("verify-tag", "unsigned"));

    // A commit is not a tag, and the other way round.
    let (_, commit) = bed.head();
    assert_eq!(verify_tag(&commit, &trust).unwrap_err().kind(), "malformed");
    assert_eq!(verify_commit(&raw, &trust).unwrap_err().kind(), "malformed");
}
