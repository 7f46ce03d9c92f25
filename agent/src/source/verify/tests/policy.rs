//! The in-repo policy: root signatures counted by distinct valid root key, approvals by distinct
//! signer key, and only approval tags whose signed payload names the commit.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::{ok, Bed};
use crate::source::verify::*;

const NOW: i64 = 1_800_000_000;
const DATE_2023: &str = "1700000000 +0000";

/// `ssh-keygen -Y sign -n <namespace>` of `data` by `key`: the armored signature.
fn detached(bed: &Bed, key: &Path, namespace: &str, data: &[u8]) -> Vec<u8> {
    let file = bed.root().join("to-sign");
    fs::write(&file, data).unwrap();
    let _ = fs::remove_file(file.with_extension("sig"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", namespace, "-f"])
        .arg(key)
        .arg(&file)
        .output()
        .unwrap();
    ok(out, "ssh-keygen -Y sign");
    fs::read(bed.root().join("to-sign.sig")).unwrap()
}

fn roots(bed: &Bed, keys: &[&Path], threshold: u32) -> TrustRoots {
    let text: String = keys
        .iter()
        .map(|k| format!("root namespaces=\"tend-policy\" {}\n", Bed::pub_key(k)))
        .collect();
    bed.write_root("/etc/tend/policy_roots", &text);
    let mut t = TrustRoots::default();
    t.load_policy(&bed.root(), "/etc/tend/policy_roots", threshold)
        .unwrap();
    t
}

fn policy_yaml(signers: &[&Path], threshold: usize) -> Vec<u8> {
    let mut y = format!("version: 7\nstages:\n  main:\n    threshold: {threshold}\n    signers:\n");
    for s in signers {
        y += &format!(
            "      - 's@example.org namespaces=\"git\" {}'\n",
            Bed::pub_key(s)
        );
    }
    y.into_bytes()
}

#[test]
fn root_signatures_count_once_per_valid_root_key() {
    let bed = Bed::new();
    let (r1, r2, x) = (
        bed.ssh_key("r1", &[]),
        bed.ssh_key("r2", &[]),
        bed.ssh_key("x", &[]),
    );
    let t = roots(&bed, &[&r1, &r2], 2);
    let roots = t.policy().unwrap();
    let yaml = policy_yaml(&[&x], 1);
    let s1 = (
        "a.sig".to_string(),
        detached(&bed, &r1, "tend-policy", &yaml),
    );
    let again = (
        "b.sig".to_string(),
        detached(&bed, &r1, "tend-policy", &yaml),
    );
    let e = roots
        .verify(&yaml, &[s1.clone(), again], NOW)
        .unwrap_err()
        .to_string();
    assert!(e.contains("signed by 1 of the 2"), "{e}");

    let wrong_ns = ("c.sig".to_string(), detached(&bed, &r2, "git", &yaml));
    let e = roots
        .verify(&yaml, &[s1.clone(), wrong_ns], NOW)
        .unwrap_err()
        .to_string();
    assert!(e.contains("namespace \"git\""), "{e}");

    let stranger = (
        "d.sig".to_string(),
        detached(&bed, &x, "tend-policy", &yaml),
    );
    let e = roots
        .verify(&yaml, &[s1.clone(), stranger], NOW)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a policy root"), "{e}");

    let s2 = (
        "e.sig".to_string(),
        detached(&bed, &r2, "tend-policy", &yaml),
    );
    let sigs = [s1, s2];
    assert_eq!(roots.verify(&yaml, &sigs, NOW).unwrap().version, 7);
    let mut tampered = yaml.clone();
    tampered[9] = b'9';
    let e = roots.verify(&tampered, &sigs, NOW).unwrap_err().to_string();
    assert!(e.contains("bad signature"), "{e}");
}

#[test]
fn approvals_count_distinct_signer_keys_and_only_tags_of_the_commit() {
    let bed = Bed::new();
    let (root, a, b) = (
        bed.ssh_key("rootkey", &[]),
        bed.ssh_key("a", &[]),
        bed.ssh_key("b", &[]),
    );
    let t = roots(&bed, &[&root], 1);
    let yaml = policy_yaml(&[&a, &b], 2);
    let sig = (
        "s.sig".to_string(),
        detached(&bed, &root, "tend-policy", &yaml),
    );
    let policy = t.policy().unwrap().verify(&yaml, &[sig], NOW).unwrap();

    let (other, _) = bed.ssh_commit(&a, "other", DATE_2023);
    let (id, raw) = bed.ssh_commit(&a, "head", DATE_2023);
    let tag = |key: &Path, name: &str, target: &str| {
        let signing = format!("user.signingkey={}", key.display());
        let out = bed
            .git_cmd(&[
                "-c",
                "gpg.format=ssh",
                "-c",
                &signing,
                "tag",
                "-s",
                "-m",
                "ok",
                name,
                target,
            ])
            .env("GIT_COMMITTER_DATE", DATE_2023)
            .output()
            .unwrap();
        ok(out, "git tag -s");
        let tag_id = String::from_utf8(bed.git(&["rev-parse", name]).stdout).unwrap();
        (name.to_string(), bed.cat("tag", tag_id.trim()))
    };
    let by_a_again = tag(&a, "approve/x/a", &id);
    let b_elsewhere = tag(&b, "approve/x/b-other", &other);
    let e = policy
        .approve("main", &id, &raw, &[by_a_again, b_elsewhere.clone()], NOW)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 of the 2 approvals"), "{e}");
    assert!(e.contains("is not commit"), "{e}");

    let by_b = tag(&b, "approve/x/b", &id);
    let ok = policy
        .approve("main", &id, &raw, &[b_elsewhere, by_b], NOW)
        .unwrap();
    assert_eq!(ok.fingerprints.len(), 2);
    assert_eq!(ok.signer.principal, "s@example.org");

    let e = policy
        .approve("canary", &id, &raw, &[], NOW)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no stage `canary`"), "{e}");
}
