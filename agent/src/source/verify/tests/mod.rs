//! End-to-end checks against the real tools: keys made with ssh-keygen and gpg, commits and tags
//! signed by git itself, raw objects read back with `git cat-file`, and for SSH every verdict
//! cross-checked with `git verify-commit` / `git verify-tag` (gpg.ssh.allowedSignersFile).
//!
//! This file holds the test bed; the cases are in `ssh`, `openpgp` and `load`.

mod load;
mod openpgp;
mod policy;
mod ssh;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::TrustRoots;

/// A scratch area: a device root, a git repo, SSH keys and a GNUPGHOME.
struct Bed {
    dir: tempfile::TempDir,
}

impl Drop for Bed {
    fn drop(&mut self) {
        if self.gnupg().exists() {
            let _ = Command::new("gpgconf")
                .args(["--kill", "gpg-agent"])
                .env("GNUPGHOME", self.gnupg())
                .status();
        }
    }
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Bed {
    fn new() -> Self {
        let bed = Bed {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(bed.root().join("etc/tend")).unwrap();
        fs::create_dir_all(bed.repo()).unwrap();
        ok(bed.git(&["init", "-q", "-b", "main"]), "git init");
        bed
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    fn gnupg(&self) -> PathBuf {
        self.dir.path().join("gnupg")
    }

    fn git_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.current_dir(self.repo())
            .args(args)
            .env("HOME", self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GNUPGHOME", self.gnupg())
            .env("GIT_AUTHOR_NAME", "A U Thor")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_COMMITTER_NAME", "C O Mitter")
            .env("GIT_COMMITTER_EMAIL", "committer@example.com")
            .env("TZ", "UTC");
        c
    }

    fn git(&self, args: &[&str]) -> Output {
        self.git_cmd(args).output().unwrap()
    }

    /// `ssh-keygen -t <kind>`; returns the private key path (`.pub` next to it).
    fn ssh_key(&self, name: &str, args: &[&str]) -> PathBuf {
        let path = self.dir.path().join(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        ok(out, "ssh-keygen");
        path
    }

    fn pub_key(key: &Path) -> String {
        let text = fs::read_to_string(key.with_extension("pub")).unwrap();
        let mut parts = text.split_whitespace();
        format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
    }

    fn write_root(&self, device_path: &str, text: &str) {
        let p = self.root().join(device_path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn allowed_signers(&self, text: &str) -> TrustRoots {
        self.write_root("/etc/tend/allowed_signers", text);
        TrustRoots::load(&self.root(), Some("/etc/tend/allowed_signers"), None).unwrap()
    }

    /// An SSH-signed commit (committer time `date`), returning (id, raw object).
    fn ssh_commit(&self, key: &Path, msg: &str, date: &str) -> (String, Vec<u8>) {
        let out = self
            .git_cmd(&[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key.display()),
                "commit",
                "-q",
                "--allow-empty",
                "-S",
                "-m",
                msg,
            ])
            .env("GIT_COMMITTER_DATE", date)
            .output()
            .unwrap();
        ok(out, "git commit -S");
        self.head()
    }

    fn plain_commit(&self, msg: &str) -> (String, Vec<u8>) {
        ok(
            self.git(&["commit", "-q", "--allow-empty", "-m", msg]),
            "git commit",
        );
        self.head()
    }

    fn head(&self) -> (String, Vec<u8>) {
        let id = ok(self.git(&["rev-parse", "HEAD"]), "rev-parse")
            .trim()
            .to_string();
        (id.clone(), self.cat("commit", &id))
    }

    fn cat(&self, kind: &str, id: &str) -> Vec<u8> {
        let out = self.git(&["cat-file", kind, id]);
        assert!(out.status.success());
        out.stdout
    }

    /// Stores arbitrary bytes as a commit or tag object, so git can judge a crafted object too.
    fn store(&self, kind: &str, raw: &[u8]) -> String {
        let mut child = self
            .git_cmd(&["hash-object", "--literally", "-w", "-t", kind, "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(raw).unwrap();
        ok(child.wait_with_output().unwrap(), "hash-object")
            .trim()
            .to_string()
    }

    /// git's own verdict with the allowed_signers file under the root.
    fn git_verifies(&self, verb: &str, id: &str) -> bool {
        let file = self.root().join("etc/tend/allowed_signers");
        self.git(&[
            "-c",
            &format!("gpg.ssh.allowedSignersFile={}", file.display()),
            verb,
            id,
        ])
        .status
        .success()
    }

    fn gpg(&self, args: &[&str]) -> String {
        fs::create_dir_all(self.gnupg()).unwrap();
        let mut perms = fs::metadata(self.gnupg()).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
        fs::set_permissions(self.gnupg(), perms).unwrap();
        let out = Command::new("gpg")
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .env("GNUPGHOME", self.gnupg())
            .output()
            .unwrap();
        ok(out, &format!("gpg {args:?}"))
    }

    /// Makes a key; returns the fingerprints (primary first, then subkeys).
    fn gpg_key(&self, uid: &str, algo: &str, usage: &str, expire: &str) -> Vec<String> {
        self.gpg(&["--quick-gen-key", uid, algo, usage, expire]);
        self.fingerprints(uid)
    }

    fn fingerprints(&self, uid: &str) -> Vec<String> {
        self.gpg(&["--with-colons", "--list-keys", uid])
            .lines()
            .filter(|l| l.starts_with("fpr:"))
            .map(|l| l.split(':').nth(9).unwrap().to_string())
            .collect()
    }

    fn gpg_commit(&self, key: &str, msg: &str, extra: &[&str]) -> (String, Vec<u8>) {
        let signing = format!("user.signingkey={key}");
        let mut args = vec!["-c", signing.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["commit", "-q", "--allow-empty", "-S", "-m", msg]);
        ok(self.git(&args), "git commit -S (gpg)");
        self.head()
    }

    fn keyring(&self, fingerprints: &[&str]) -> TrustRoots {
        let mut args = vec!["--armor", "--export"];
        args.extend_from_slice(fingerprints);
        let armored = self.gpg(&args);
        self.write_root("/etc/tend/trusted.asc", &armored);
        TrustRoots::load(&self.root(), None, Some("/etc/tend/trusted.asc")).unwrap()
    }
}

/// Replaces the first occurrence of `from` in `raw` (which must be there).
fn tamper(raw: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(raw.to_vec()).unwrap();
    assert!(text.contains(from), "{from:?} not in object");
    text.replacen(from, to, 1).into_bytes()
}

/// Puts `armor` into `raw_unsigned` as a gpgsig header after the committer line, as git does.
fn splice_gpgsig(raw_unsigned: &[u8], armor: &str) -> Vec<u8> {
    let text = String::from_utf8(raw_unsigned.to_vec()).unwrap();
    let (headers, message) = text.split_once("\n\n").unwrap();
    let mut sig = String::from("gpgsig");
    for (i, line) in armor.trim_end().lines().enumerate() {
        sig.push_str(if i == 0 { " " } else { "\n " });
        sig.push_str(line);
    }
    format!("{headers}\n{sig}\n\n{message}").into_bytes()
}
