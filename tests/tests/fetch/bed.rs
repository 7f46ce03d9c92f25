//! The fetch suite's fixtures: a fleet repo with two commits, a state dir, the source config
//! for each transport, the https bed, and the damages a device's storage can do to a fetched
//! repo. Kept apart so the suite reads as its cases.

use super::*;

pub(crate) fn oid(hex: &str) -> ObjectId {
    ObjectId::from_hex(hex.as_bytes()).expect("a commit id")
}

pub(crate) fn source(url: &str) -> SourceConfig {
    let mut s = SourceConfig::new(url);
    s.retries = 0;
    s.connect_timeout = Duration::from_secs(5);
    s.timeout = Duration::from_secs(30);
    s
}

/// A fleet with two commits on main, so a depth-1 clone visibly leaves history out.
pub(crate) fn fleet() -> Result<(FleetRepo, String, String)> {
    let f = FleetRepo::new()?;
    let c1 = f.commit(
        "main",
        "first",
        &[
            Change::file("fleet.yaml", "version: 1\nroles: [base]\n"),
            Change::file(
                "roles/base/role.yaml",
                "resources:\n  - file: /etc/motd\n    source: motd\n",
            ),
            Change::file("roles/base/files/motd", "hello\n"),
            Change::Link("roles/base/files/motd-link".into(), "motd".into()),
            Change::file("devices/dev-1.yaml", "groups: [kiosk]\n"),
            Change::file("groups/kiosk.yaml", "vars: {}\n"),
        ],
    )?;
    let c2 = f.commit_files(
        "main",
        "second",
        &[("roles/base/files/motd", "hello again\n")],
    )?;
    Ok((f, c1, c2))
}

pub(crate) fn state() -> Result<(tempfile::TempDir, LocalRepo)> {
    let d = tempfile::tempdir()?;
    let repo = LocalRepo::open(&d.path().join("repo.git"))?;
    assert!(repo.recovered().is_none());
    Ok((d, repo))
}

/// The GitTree of `commit` reads and lists exactly what a DirTree of its checkout does.
pub(crate) fn assert_same_as_checkout(
    repo: &LocalRepo,
    fleet: &FleetRepo,
    commit: &str,
) -> Result<()> {
    let checkout = tempfile::tempdir()?;
    fleet.checkout(commit, checkout.path())?;
    let dir = DirTree::new(checkout.path())?;
    let git = repo.tree(&oid(commit))?;
    assert_eq!(git.describe(), format!("commit {}", &commit[..12]));
    assert_eq!(git.read("fleet.yaml")?, dir.read("fleet.yaml")?);
    let mut todo = vec!["roles".to_string(), "groups".into(), "devices".into()];
    let mut files = 0;
    while let Some(d) = todo.pop() {
        let listed = git.list(&d)?;
        assert_eq!(listed, dir.list(&d)?, "listing {d}");
        for (name, kind) in listed {
            let path = format!("{d}/{name}");
            match kind {
                EntryKind::Dir => todo.push(path),
                EntryKind::File => {
                    assert_eq!(git.read(&path)?, dir.read(&path)?, "{path}");
                    files += 1;
                }
            }
        }
    }
    assert!(files >= 4, "only {files} files compared");
    Ok(())
}

pub(crate) fn upload_pack_posts(entries: &[AccessEntry]) -> usize {
    entries.iter().filter(|e| e.is_upload_pack_post()).count()
}

pub(crate) fn measure(what: &str, value: impl std::fmt::Display) {
    // Straight to the stream so the figure shows with or without --nocapture.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "measure: {what}: {value}");
}

pub(crate) struct Https {
    pub(crate) fleet: FleetRepo,
    pub(crate) ca: TestCa,
    pub(crate) server: HttpsGitServer,
    pub(crate) c2: String,
}

pub(crate) fn https() -> Result<Https> {
    let (fleet, _c1, c2) = fleet()?;
    let ca = TestCa::new("tend test CA")?;
    let server = HttpsGitServer::start(fleet.root(), &ca)?;
    Ok(Https {
        fleet,
        ca,
        server,
        c2,
    })
}

impl Https {
    pub(crate) fn source(&self) -> SourceConfig {
        let mut s = source(&self.server.url("fleet.git"));
        s.ca_file = Some(self.ca.cert().to_path_buf());
        s
    }
}

pub(crate) fn ssh_source(server: &SshGitServer, fleet: &FleetRepo) -> SourceConfig {
    let mut s = source(&server.url(fleet.path()));
    s.ssh_key = Some(server.client_key());
    s.known_hosts = Some(server.known_hosts());
    s
}

/// Damage done to a fetched local repo.
pub(crate) type Damage = fn(&Path) -> Result<()>;

/// The damages a device's storage can do, by name.
pub(crate) fn damages() -> Vec<(&'static str, Damage)> {
    fn pack(repo: &Path) -> Result<std::path::PathBuf> {
        std::fs::read_dir(repo.join("objects/pack"))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "pack"))
            .ok_or_else(|| anyhow::anyhow!("no pack in {}", repo.display()))
    }
    vec![
        ("truncated pack", |repo| {
            let p = pack(repo)?;
            let len = std::fs::metadata(&p)?.len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)?
                .set_len(len / 2)?;
            Ok(())
        }),
        ("flipped byte in pack", |repo| {
            let p = pack(repo)?;
            let mut bytes = std::fs::read(&p)?;
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&p, bytes)?;
            Ok(())
        }),
        ("ref to a missing object", |repo| {
            std::fs::write(
                repo.join("refs/remotes/origin/main"),
                "0123456789abcdef0123456789abcdef01234567\n",
            )?;
            let _ = std::fs::remove_file(repo.join("packed-refs"));
            Ok(())
        }),
        ("not a repository", |repo| {
            std::fs::remove_file(repo.join("HEAD"))?;
            std::fs::remove_dir_all(repo.join("objects"))?;
            Ok(())
        }),
    ]
}
