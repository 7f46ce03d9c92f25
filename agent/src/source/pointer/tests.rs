//! The pointer against real keys: made with ssh-keygen, signed by `publish` (which runs
//! `ssh-keygen -Y sign`), verified by the commits' own verifier.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::publish::{self, Publish};
use super::*;

const A: &str = "1111111111111111111111111111111111111111";
const B: &str = "2222222222222222222222222222222222222222";
/// 2026-12-07T11:00:00Z
const T0: i64 = 1_796_641_200;

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn key(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if !path.exists() {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
        path
    }

    /// Trust roots that pin `name`'s key (in the `git` namespace).
    fn trust(&self, name: &str) -> TrustRoots {
        let key = self.key(name);
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        std::fs::write(
            self.dir.path().join("allowed_signers"),
            format!("{name}@example.com namespaces=\"git\" {public}"),
        )
        .unwrap();
        TrustRoots::load(self.dir.path(), Some("/allowed_signers"), None).unwrap()
    }
}

fn doc(stage: &str, commit: &str, sequence: u64, issued: i64, expires: i64) -> Document {
    Document {
        stage: stage.into(),
        commit: commit.into(),
        sequence,
        issued: crate::clock::rfc3339(issued as u64),
        expires: crate::clock::rfc3339(expires as u64),
        bundles: Vec::new(),
    }
}

fn signed(keys: &Keys, key: &str, d: &Document) -> Vec<u8> {
    publish::sign(d, &keys.key(key)).unwrap()
}

fn state_with(stage: &str, commit: &str, sequence: u64) -> State {
    State {
        accepted: Some(Accepted {
            stage: stage.into(),
            commit: commit.into(),
            sequence,
            issued: T0,
            expires: T0 + 86_400,
            bundles: Vec::new(),
        }),
        ..Default::default()
    }
}

#[test]
fn a_signed_fresh_pointer_for_the_stage_is_accepted() {
    let keys = Keys::new();
    let trust = keys.trust("ci");
    let file = signed(&keys, "ci", &doc("production", A, 7, T0, T0 + 3600));
    let (ok, signer) = accept("u", &file, "production", &trust, &State::default(), T0).unwrap();
    assert_eq!(
        ok,
        Accepted {
            stage: "production".into(),
            commit: A.into(),
            sequence: 7,
            issued: T0,
            expires: T0 + 3600,
            bundles: Vec::new(),
        }
    );
    assert_eq!(signer.principal, "ci@example.com");
}

#[test]
fn a_tampered_pointer_is_a_bad_signature() {
    let keys = Keys::new();
    let trust = keys.trust("ci");
    let file = signed(&keys, "ci", &doc("production", A, 7, T0, T0 + 3600));
    let text = String::from_utf8(file).unwrap().replace(A, B);
    let e = accept(
        "u",
        text.as_bytes(),
        "production",
        &trust,
        &State::default(),
        T0,
    )
    .unwrap_err();
    assert!(
        matches!(
            &e,
            PointerError::Signature {
                source: VerifyError::BadSignature { .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_pointer_signed_by_an_unpinned_key_is_an_unknown_signer() {
    let keys = Keys::new();
    let trust = keys.trust("ci");
    let file = signed(&keys, "mallory", &doc("production", A, 7, T0, T0 + 3600));
    let e = accept("u", &file, "production", &trust, &State::default(), T0).unwrap_err();
    assert!(
        matches!(
            &e,
            PointerError::Signature {
                source: VerifyError::UnknownSigner { .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn another_stages_pointer_is_refused() {
    let keys = Keys::new();
    let trust = keys.trust("ci");
    let file = signed(&keys, "ci", &doc("staging", A, 7, T0, T0 + 3600));
    let e = accept("u", &file, "production", &trust, &State::default(), T0).unwrap_err();
    assert!(matches!(e, PointerError::WrongStage { .. }), "{e}");
    assert!(e.to_string().contains("`staging`, not `production`"), "{e}");
}

#[test]
fn a_lower_sequence_is_a_replay_and_refused() {
    let keys = Keys::new();
    let trust = keys.trust("ci");
    let file = signed(&keys, "ci", &doc("production", A, 6, T0, T0 + 3600));
    let e = accept(
        "u",
        &file,
        "production",
        &trust,
        &state_with("production", A, 7),
        T0,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            PointerError::Replayed {
                got: 6,
                last: 7,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn an_equal_sequence_passes_only_for_the_same_commit() {
    let keys = Keys::new();
    let trust = keys.trust("ci");
    let state = state_with("production", A, 7);
    let same = signed(&keys, "ci", &doc("production", A, 7, T0, T0 + 7200));
    assert!(accept("u", &same, "production", &trust, &state, T0).is_ok());
    let other = signed(&keys, "ci", &doc("production", B, 7, T0, T0 + 7200));
    let e = accept("u", &other, "production", &trust, &state, T0).unwrap_err();
    assert!(matches!(e, PointerError::Equivocal { .. }), "{e}");
}

#[test]
fn an_expired_pointer_is_refused_at_the_trusted_time() {
    let keys = Keys::new();
    let trust = keys.trust("ci");
    let file = signed(&keys, "ci", &doc("production", A, 7, T0, T0 + 3600));
    assert!(accept(
        "u",
        &file,
        "production",
        &trust,
        &State::default(),
        T0 + 3600
    )
    .is_ok());
    let e = accept(
        "u",
        &file,
        "production",
        &trust,
        &State::default(),
        T0 + 3601,
    )
    .unwrap_err();
    assert!(matches!(e, PointerError::Expired { .. }), "{e}");
    assert!(e.to_string().contains("2026-12-07 12:00:00 UTC"), "{e}");
}

#[test]
fn malformed_pointers_say_what_is_wrong() {
    let keys = Keys::new();
    let trust = keys.trust("ci");
    let check = |bytes: &[u8], want: &str| {
        let e = accept("u", bytes, "production", &trust, &State::default(), T0).unwrap_err();
        assert!(matches!(e, PointerError::Malformed { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e}");
    };
    check(b"{\"stage\":\"production\"}\n", "no signature block");
    check(
        b"-----BEGIN SSH SIGNATURE-----\n-----END SSH SIGNATURE-----\n",
        "no document",
    );
    let short = signed(&keys, "ci", &doc("production", "abc", 1, T0, T0 + 1));
    check(&short, "not a full 40-digit hex id");
    let backwards = signed(&keys, "ci", &doc("production", A, 1, T0, T0));
    check(&backwards, "is not after issued");
    let mut extra = b"{\"stage\":\"production\",\"commit\":\"".to_vec();
    extra.extend_from_slice(A.as_bytes());
    extra.extend_from_slice(b"\",\"sequence\":1,\"issued\":\"2026-12-07T11:00:00Z\",\"expires\":\"2026-12-08T11:00:00Z\",\"x\":1}\n-----BEGIN SSH SIGNATURE-----\n");
    check(&extra, "unknown field `x`");
}

#[test]
fn the_trusted_time_is_the_latest_witness_and_an_unsynchronized_clock_is_not_one() {
    let root = tempfile::tempdir().unwrap();
    let date = "Mon, 07 Dec 2026 11:00:00 GMT";
    let c = TrustedClock::read(root.path(), T0 - 10, Some(date));
    assert_eq!(
        c.system, None,
        "no timesyncd marker: the system clock is not a witness"
    );
    assert_eq!(c.date, Some(T0));
    assert_eq!(c.now(), T0);
    // A server's Date set back cannot move the time below what the device already saw.
    let back = TrustedClock::read(root.path(), T0 + 99, Some("Thu, 01 Jan 1970 00:00:00 GMT"));
    assert_eq!(back.now(), T0 + 99);
    let marker = root.path().join(TIMESYNC_SYNCHRONIZED);
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    std::fs::write(&marker, b"").unwrap();
    let synced = TrustedClock::read(root.path(), 0, None);
    assert!(synced.system.unwrap() >= T0 - 400 * 86_400, "{synced:?}");
}

#[test]
fn stale_is_expired_or_older_than_max_staleness() {
    let p = Accepted {
        stage: "production".into(),
        commit: A.into(),
        sequence: 1,
        issued: T0,
        expires: T0 + 7200,
        bundles: Vec::new(),
    };
    assert!(!is_stale(&p, T0 + 3600, None));
    assert!(!is_stale(&p, T0 + 3600, Some(3600)));
    assert!(is_stale(&p, T0 + 3601, Some(3600)));
    assert!(is_stale(&p, T0 + 7201, None));
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn publish_signs_the_head_of_the_stage_and_the_device_accepts_it() {
    let keys = Keys::new();
    let trust = keys.trust("ci");
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "production"]);
    git(
        repo.path(),
        &[
            "-c",
            "user.name=ci",
            "-c",
            "user.email=ci@example.com",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "one",
        ],
    );
    let head = git(repo.path(), &["rev-parse", "HEAD"]);
    let p = Publish {
        repo: repo.path().to_path_buf(),
        stage: "production".into(),
        sequence: None,
        expires: "24h".into(),
        key: Some(keys.key("ci")),
        bundles: None,
    };
    let file = publish::pointer(&p, T0).unwrap();
    let (ok, _) = accept("u", &file, "production", &trust, &State::default(), T0).unwrap();
    assert_eq!(ok.commit, head);
    assert_eq!(
        ok.sequence, T0 as u64,
        "the sequence defaults to the issue time"
    );
    assert_eq!(ok.expires, T0 + 86_400);
    // No key given and none in the repo's config: the message says what to pass.
    let e = publish::pointer(&Publish { key: None, ..p }, T0).unwrap_err();
    assert!(e.to_string().contains("pass --key"), "{e}");
    let missing = Publish {
        repo: repo.path().to_path_buf(),
        stage: "staging".into(),
        sequence: Some(1),
        expires: "1h".into(),
        key: Some(keys.key("ci")),
        bundles: None,
    };
    assert!(publish::pointer(&missing, T0)
        .unwrap_err()
        .to_string()
        .contains("no branch staging"));
}

#[test]
fn expires_takes_a_duration_or_a_time() {
    assert_eq!(publish::expiry("90m", 100).unwrap(), 100 + 5400);
    assert_eq!(publish::expiry("7d", 0).unwrap(), 7 * 86_400);
    assert_eq!(publish::expiry("2026-12-07T11:00:00Z", 0).unwrap(), T0);
    assert!(publish::expiry("7w", 0)
        .unwrap_err()
        .contains("unknown unit"));
    assert!(publish::expiry("soon", 0).is_err());
}

#[test]
fn only_an_unreachable_or_failing_pointer_server_hands_over_to_a_pointer_mirror() {
    let fetch = |unavailable| PointerError::Fetch {
        url: "https://cdn/p".into(),
        why: "x".into(),
        unavailable,
    };
    assert!(fetch(true).falls_through());
    assert!(!fetch(false).falls_through());
    let malformed = PointerError::Malformed {
        url: "https://cdn/p".into(),
        why: "x".into(),
    };
    assert!(!malformed.falls_through());
}

#[test]
fn publish_with_bundles_chains_the_last_pointers_commits_and_prunes_what_no_pointer_lists() {
    let keys = Keys::new();
    let trust = keys.trust("ci");
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let pointer = out.path().join("production.pointer");
    git(repo.path(), &["init", "-q", "-b", "production"]);
    let mut heads = Vec::new();
    let mut lists = Vec::new();
    for n in 0..4 {
        git(
            repo.path(),
            &[
                "-c",
                "user.name=ci",
                "-c",
                "user.email=ci@example.com",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                &format!("c{n}"),
            ],
        );
        heads.push(git(repo.path(), &["rev-parse", "HEAD"]));
        let b = super::publish_bundles::BundleOut::beside(&pointer, 2).unwrap();
        let p = Publish {
            repo: repo.path().to_path_buf(),
            stage: "production".into(),
            sequence: Some(n + 1),
            expires: "24h".into(),
            key: Some(keys.key("ci")),
            bundles: Some(b),
        };
        let file = publish::pointer(&p, T0).unwrap();
        std::fs::write(&pointer, &file).unwrap();
        let (ok, _) = accept("u", &file, "production", &trust, &State::default(), T0).unwrap();
        p.bundles.as_ref().unwrap().prune(&ok.bundles).unwrap();
        lists.push(ok.bundles);
    }
    let from = |l: &Vec<Bundle>| -> Vec<Option<String>> {
        l.iter().map(|b| b.prerequisite.clone()).collect()
    };
    assert_eq!(from(&lists[0]), vec![None]);
    assert_eq!(from(&lists[1]), vec![None, Some(heads[0].clone())]);
    // Two at most, newest first.
    assert_eq!(
        from(&lists[3]),
        vec![None, Some(heads[2].clone()), Some(heads[1].clone())]
    );
    for b in &lists[3] {
        let bytes = std::fs::read(out.path().join(&b.file)).unwrap();
        assert_eq!(bytes.len() as u64, b.size);
    }
    // The bundles of the last two pointers stay, the older ones are gone.
    let mut kept: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".bundle"))
        .collect();
    kept.sort();
    let mut want: Vec<String> = lists[2]
        .iter()
        .chain(&lists[3])
        .map(|b| b.file.clone())
        .collect();
    want.sort();
    want.dedup();
    assert_eq!(kept, want);
}
