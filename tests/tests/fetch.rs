//! Issue #3's transport acceptance, through the fetch library against real servers on
//! 127.0.0.1: git http-backend behind lighttpd (with a CA made at test time), sshd, and file://.
//!
//! First clone, a poll that transfers no pack (counted in the web server's access log), a new
//! commit with provable ancestry, a deleted branch, a server that is down or stalled, the wrong
//! CA, `ca_file`, a proxy (and `no_proxy`), an unknown ssh host key, and a corrupted local repo.
//! Timing is only bounded from above, generously, to prove nothing hangs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use tend_agent::source::fetch::{Ancestry, FetchError, LocalRepo, ObjectId, SourceConfig};
use tend_agent::source::tree::{DirTree, EntryKind, Tree};
use tend_tests::gitserver::{AccessEntry, Change, FleetRepo, HttpsGitServer, SshGitServer, TestCa};
use tend_tests::proxy::{ConnectProxy, StallServer, SynDropServer};

#[path = "fetch/bed.rs"]
mod bed;
use bed::*;

/// No failure case may take longer than this (the configured timeouts are a few seconds).
const HANG: Duration = Duration::from_secs(60);

#[test]
fn file_clone_is_shallow_then_polls_and_updates_incrementally() -> Result<()> {
    let (fleet, c1, c2) = fleet()?;
    let (_d, repo) = state()?;
    let src = source(&fleet.file_url());

    let t = Instant::now();
    let first = repo.fetch_branch(&src, "main")?;
    measure(
        "file:// first clone (depth 1, 6 files)",
        format!("{} ms, pack {} bytes", t.elapsed().as_millis(), first.bytes),
    );
    assert_eq!(first.head, oid(&c2));
    assert!(first.received_pack && first.bytes > 0, "{first:?}");
    // Depth 1: the first commit was not fetched, so its ancestry is unknown, not refuted.
    assert_eq!(repo.ancestry(&oid(&c1), &oid(&c2))?, Ancestry::Unknown);
    assert!(!repo.is_ancestor(&oid(&c1), &oid(&c2))?);

    let poll = repo.fetch_branch(&src, "main")?;
    assert_eq!(poll.head, oid(&c2));
    assert!(!poll.received_pack && poll.bytes == 0, "{poll:?}");

    let c3 = fleet.commit_files(
        "main",
        "third",
        &[("groups/kiosk.yaml", "vars: {url: x}\n")],
    )?;
    let next = repo.fetch_branch(&src, "main")?;
    assert_eq!(next.head, oid(&c3));
    assert!(next.received_pack);
    assert!(repo.is_ancestor(&oid(&c2), &oid(&c3))?);
    assert_eq!(repo.ancestry(&oid(&c3), &oid(&c2))?, Ancestry::Unknown);

    assert_eq!(repo.raw_commit(&oid(&c3))?, fleet.cat_file("commit", &c3)?);
    let ct = fleet.git(&["show", "-s", "--format=%ct", &c3])?;
    assert_eq!(repo.commit_time(&oid(&c3))?.to_string(), ct);
    assert_same_as_checkout(&repo, &fleet, &c3)
}

#[test]
fn deepen_fetches_history_below_the_shallow_boundary() -> Result<()> {
    let (fleet, c1, c2) = fleet()?;
    let (_d, repo) = state()?;
    let src = source(&fleet.file_url());
    repo.fetch_branch(&src, "main")?;
    assert_eq!(repo.ancestry(&oid(&c1), &oid(&c2))?, Ancestry::Unknown);
    assert!(repo.deepen(&src, "main", 1)?);
    assert_eq!(repo.ancestry(&oid(&c1), &oid(&c2))?, Ancestry::Ancestor);
    Ok(())
}

#[test]
fn a_rewritten_branch_is_fetched_and_is_not_a_descendant() -> Result<()> {
    let (fleet, c1, c2) = fleet()?;
    let (_d, repo) = state()?;
    let src = source(&fleet.file_url());
    repo.fetch_branch(&src, "main")?;
    // Force-push: main goes back to c1 plus a different commit.
    fleet.set_branch("main", &c1)?;
    let other = fleet.commit_files("main", "rewrite", &[("fleet.yaml", "version: 1\n")])?;
    let f = repo.fetch_branch(&src, "main")?;
    assert_eq!(f.head, oid(&other));
    assert_eq!(
        repo.ancestry(&oid(&c2), &oid(&other))?,
        Ancestry::NotAncestor
    );
    Ok(())
}

#[test]
fn branch_deleted_on_the_server_is_branch_missing() -> Result<()> {
    let (fleet, _c1, c2) = fleet()?;
    fleet.set_branch("production", &c2)?;
    let (_d, repo) = state()?;
    let src = source(&fleet.file_url());
    assert_eq!(repo.fetch_branch(&src, "production")?.head, oid(&c2));
    fleet.delete_branch("production")?;
    let err = repo.fetch_branch(&src, "production").unwrap_err();
    assert!(matches!(err, FetchError::BranchMissing { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("`production`") && text.contains(&fleet.file_url()),
        "{text}"
    );
    // Names that are not git refs never reach the server.
    let err = repo.fetch_branch(&src, "a..b").unwrap_err();
    assert!(
        err.to_string().contains("not a valid git ref name"),
        "{err}"
    );
    Ok(())
}

#[test]
fn tags_of_one_stage_are_fetched_with_their_targets() -> Result<()> {
    let (fleet, c1, c2) = fleet()?;
    let t1 = fleet.tag("production/1", &c1, "release 1")?;
    let t2 = fleet.tag("production/2", &c2, "release 2")?;
    fleet.tag("canary/7", &c2, "canary")?;
    let (_d, repo) = state()?;
    let src = source(&fleet.file_url());
    let tags = repo.fetch_tags(&src, "production/")?;
    let got: Vec<(&str, ObjectId, ObjectId)> = tags
        .iter()
        .map(|t| (t.name.as_str(), t.tag, t.target))
        .collect();
    assert_eq!(
        got,
        vec![
            ("production/1", oid(&t1), oid(&c1)),
            ("production/2", oid(&t2), oid(&c2))
        ]
    );
    assert_eq!(repo.raw_tag(&oid(&t2))?, fleet.cat_file("tag", &t2)?);
    assert!(repo.raw_tag(&oid(&c2)).is_err(), "a commit is not a tag");
    assert!(repo.fetch_tags(&src, "staging/")?.is_empty());
    // A new tag arrives incrementally.
    let c3 = fleet.commit_files("main", "third", &[("fleet.yaml", "version: 1\n")])?;
    let t3 = fleet.tag("production/3", &c3, "release 3")?;
    let tags = repo.fetch_tags(&src, "production/")?;
    assert_eq!(
        tags.last().map(|t| (t.tag, t.target)),
        Some((oid(&t3), oid(&c3)))
    );
    assert!(repo.is_ancestor(&oid(&c2), &oid(&c3))?);
    Ok(())
}

#[test]
fn https_clone_poll_and_update_as_the_access_log_counts_them() -> Result<()> {
    let h = https()?;
    let (_d, repo) = state()?;
    let src = h.source();

    let t = Instant::now();
    let first = repo.fetch_branch(&src, "main")?;
    let took = t.elapsed();
    assert_eq!(first.head, oid(&h.c2));
    let log = h.server.requests()?;
    let lines: Vec<String> = log.iter().map(ToString::to_string).collect();
    // Protocol v2 over http: GET info/refs, POST ls-refs, POST fetch (with the pack).
    assert_eq!(upload_pack_posts(&log), 2, "{lines:#?}");
    assert!(log.iter().all(|e| e.status == 200), "{lines:#?}");
    let clone_bytes: u64 = log.iter().map(|e| e.bytes_out).sum();
    measure(
        "https first clone (depth 1, 6 files)",
        format!(
            "{} ms, {clone_bytes} bytes from the server, pack {} bytes",
            took.as_millis(),
            first.bytes
        ),
    );

    let t = Instant::now();
    let poll = repo.fetch_branch(&src, "main")?;
    let took = t.elapsed();
    assert!(!poll.received_pack, "{poll:?}");
    let after = h.server.requests()?;
    let new = &after[log.len()..];
    let lines: Vec<String> = new.iter().map(ToString::to_string).collect();
    // Only the ref listing: no `fetch` command, so no pack.
    assert_eq!(upload_pack_posts(new), 1, "{lines:#?}");
    let poll_bytes: u64 = new.iter().map(|e| e.bytes_out).sum();
    assert!(poll_bytes < clone_bytes, "{poll_bytes} >= {clone_bytes}");
    measure(
        "https poll with no new commit",
        format!(
            "{} ms, {poll_bytes} bytes from the server, {} requests",
            took.as_millis(),
            new.len()
        ),
    );

    let c3 = h
        .fleet
        .commit_files("main", "third", &[("roles/base/files/motd", "third\n")])?;
    let next = repo.fetch_branch(&src, "main")?;
    assert_eq!(next.head, oid(&c3));
    assert!(next.received_pack);
    let last = h.server.requests()?;
    assert_eq!(upload_pack_posts(&last[after.len()..]), 2);
    measure(
        "https incremental fetch of one commit",
        format!("pack {} bytes", next.bytes),
    );
    assert!(repo.is_ancestor(&oid(&h.c2), &oid(&c3))?);
    assert_same_as_checkout(&repo, &h.fleet, &c3)
}

#[test]
fn https_with_the_wrong_ca_is_a_tls_error_that_names_the_fix() -> Result<()> {
    let h = https()?;
    let (_d, repo) = state()?;
    let other = TestCa::new("some other CA")?;
    let mut src = h.source();
    src.ca_file = Some(other.cert().to_path_buf());
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FetchError::Tls { .. }), "{text}");
    assert!(
        text.contains(&other.cert().display().to_string()) && text.contains("source.ca_file"),
        "{text}"
    );
    // Without ca_file only the system roots are trusted, and they do not know the test CA.
    src.ca_file = None;
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(matches!(err, FetchError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("set source.ca_file"), "{err}");
    // And with it, the same server is fine (on top of the system roots).
    assert_eq!(repo.fetch_branch(&h.source(), "main")?.head, oid(&h.c2));
    Ok(())
}

#[test]
fn https_through_a_connect_proxy_and_around_it_with_no_proxy() -> Result<()> {
    let h = https()?;
    let proxy = ConnectProxy::start()?;
    let (_d, repo) = state()?;
    let mut src = h.source();
    src.proxy = Some(proxy.url());
    assert_eq!(repo.fetch_branch(&src, "main")?.head, oid(&h.c2));
    let target = format!("127.0.0.1:{}", h.server.port());
    let seen = proxy.targets();
    assert!(
        !seen.is_empty() && seen.iter().all(|t| *t == target),
        "{seen:?}"
    );

    src.no_proxy = Some("localhost,127.0.0.1".into());
    repo.fetch_branch(&src, "main")?;
    assert_eq!(
        proxy.targets().len(),
        seen.len(),
        "no_proxy was not honoured"
    );

    // A proxy that is down makes the fetch fail: it really is in the path.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    src.no_proxy = None;
    src.proxy = Some(format!("http://{dead}"));
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err}");
    Ok(())
}

#[test]
fn server_down_is_unreachable_after_bounded_retries() -> Result<()> {
    let (_d, repo) = state()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut src = source(&format!("https://127.0.0.1:{port}/git/fleet.git"));
    src.retries = 1;
    let t = Instant::now();
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err}");
    assert!(err.is_transient());
    // One retry after the first backoff (1 s), and no more.
    assert!(
        t.elapsed() >= Duration::from_secs(1) && t.elapsed() < HANG,
        "{:?}",
        t.elapsed()
    );
    Ok(())
}

#[test]
fn a_stalled_server_times_out_instead_of_hanging() -> Result<()> {
    let stall = StallServer::start()?;
    let (_d, repo) = state()?;
    // TLS: the handshake never completes.
    let mut src = source(&format!("https://127.0.0.1:{}/git/fleet.git", stall.port()));
    src.connect_timeout = Duration::from_secs(2);
    src.timeout = Duration::from_secs(3);
    let t = Instant::now();
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err}");
    assert!(t.elapsed() < HANG);
    // Plain http: connected, request sent, no answer; the overall timeout fires.
    let mut src = source(&format!("http://127.0.0.1:{}/fleet.git", stall.port()));
    src.connect_timeout = Duration::from_secs(20);
    src.timeout = Duration::from_secs(2);
    let t = Instant::now();
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(
        matches!(err, FetchError::Timeout { key: "timeout", .. }),
        "{err}"
    );
    assert!(t.elapsed() < HANG);
    Ok(())
}

#[test]
fn a_connect_that_never_completes_hits_the_connect_timeout() -> Result<()> {
    let blackhole = SynDropServer::start()?;
    let (_d, repo) = state()?;
    let mut src = source(&format!(
        "https://127.0.0.1:{}/git/fleet.git",
        blackhole.port()
    ));
    src.connect_timeout = Duration::from_secs(1);
    src.timeout = Duration::from_secs(30);
    let t = Instant::now();
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Timeout {
                key: "connect_timeout",
                ..
            }
        ),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    Ok(())
}

#[test]
fn ssh_clone_poll_and_update() -> Result<()> {
    let (fleet, _c1, c2) = fleet()?;
    let server = SshGitServer::start()?;
    let (_d, repo) = state()?;
    let src = ssh_source(&server, &fleet);
    let t = Instant::now();
    let first = repo
        .fetch_branch(&src, "main")
        .map_err(|e| anyhow::anyhow!("{e}\nsshd log:\n{}", server.log()))?;
    measure(
        "ssh first clone (depth 1, 6 files)",
        format!("{} ms, pack {} bytes", t.elapsed().as_millis(), first.bytes),
    );
    assert_eq!(first.head, oid(&c2));
    let poll = repo.fetch_branch(&src, "main")?;
    assert!(!poll.received_pack);
    let c3 = fleet.commit_files("main", "third", &[("devices/dev-1.yaml", "groups: []\n")])?;
    let next = repo.fetch_branch(&src, "main")?;
    assert_eq!(next.head, oid(&c3));
    assert!(next.received_pack && repo.is_ancestor(&oid(&c2), &oid(&c3))?);
    assert_same_as_checkout(&repo, &fleet, &c3)
}

#[test]
fn ssh_with_an_unknown_host_key_is_refused_with_how_to_pin_it() -> Result<()> {
    let (fleet, _c1, _c2) = fleet()?;
    let server = SshGitServer::start()?;
    let (d, repo) = state()?;
    let mut src = ssh_source(&server, &fleet);
    let empty = d.path().join("known_hosts");
    std::fs::write(&empty, "")?;
    src.known_hosts = Some(empty.clone());
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FetchError::HostKey { .. }), "{text}");
    assert!(
        text.contains(&format!(
            "ssh-keyscan -p {} 127.0.0.1 >> {}",
            server.port(),
            empty.display()
        )),
        "{text}"
    );
    // The key was not learnt: the next attempt is refused the same way.
    assert!(matches!(
        repo.fetch_branch(&src, "main"),
        Err(FetchError::HostKey { .. })
    ));
    assert_eq!(std::fs::read_to_string(&empty)?, "");
    Ok(())
}

#[test]
fn ssh_with_a_key_the_server_does_not_know_is_an_auth_error() -> Result<()> {
    let (fleet, _c1, _c2) = fleet()?;
    let server = SshGitServer::start()?;
    let (d, repo) = state()?;
    let key = d.path().join("stranger");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()?;
    assert!(out.status.success());
    let mut src = ssh_source(&server, &fleet);
    src.ssh_key = Some(key.clone());
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(matches!(err, FetchError::Auth { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("{}.pub", key.display())),
        "{err}"
    );
    Ok(())
}

#[test]
fn ssh_to_a_server_that_is_down_or_stalled_fails_in_time() -> Result<()> {
    let (fleet, _c1, _c2) = fleet()?;
    let server = SshGitServer::start()?;
    let (_d, repo) = state()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut src = ssh_source(&server, &fleet);
    src.url = format!("ssh://root@127.0.0.1:{port}{}", fleet.path().display());
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err}");

    let stall = StallServer::start()?;
    src.url = format!(
        "ssh://root@127.0.0.1:{}{}",
        stall.port(),
        fleet.path().display()
    );
    src.connect_timeout = Duration::from_secs(2);
    let t = Instant::now();
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err}");
    assert!(t.elapsed() < HANG);
    Ok(())
}

#[test]
fn ssh_to_a_server_that_stalls_after_login_is_cut_by_the_overall_timeout() -> Result<()> {
    let (fleet, _c1, _c2) = fleet()?;
    // Logged in, then nothing: git-upload-pack never starts (bounded, so nothing lingers).
    let server = SshGitServer::start_with("ForceCommand sleep 20\n")?;
    let (_d, repo) = state()?;
    let mut src = ssh_source(&server, &fleet);
    src.timeout = Duration::from_secs(3);
    let t = Instant::now();
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(
        matches!(err, FetchError::Timeout { key: "timeout", .. }),
        "{err}\nsshd log:\n{}",
        server.log()
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    Ok(())
}

#[test]
fn a_corrupt_local_repo_is_moved_aside_and_fetched_again() -> Result<()> {
    let (fleet, _c1, c2) = fleet()?;
    let src = source(&fleet.file_url());
    for (name, damage) in damages() {
        let d = tempfile::tempdir()?;
        let path = d.path().join("repo.git");
        {
            let repo = LocalRepo::open(&path)?;
            repo.fetch_branch(&src, "main")?;
        }
        // A healthy repo opens as it is.
        assert!(LocalRepo::open(&path)?.recovered().is_none(), "{name}");
        damage(&path)?;
        let repo = LocalRepo::open(&path)?;
        let note = repo
            .recovered()
            .unwrap_or_else(|| panic!("{name}: damage not detected"));
        assert!(
            note.contains("corrupt") && note.contains(".corrupt-"),
            "{name}: {note}"
        );
        let aside: Vec<_> = std::fs::read_dir(d.path())?
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("repo.git.corrupt-")
            })
            .collect();
        assert_eq!(aside.len(), 1, "{name}");
        let f = repo.fetch_branch(&src, "main")?;
        assert!(f.head == oid(&c2) && f.received_pack, "{name}");
        assert_same_as_checkout(&repo, &fleet, &c2)?;
    }
    Ok(())
}

#[test]
fn a_wrong_repository_path_is_reported_as_such_on_every_transport() -> Result<()> {
    let h = https()?;
    let (_d, repo) = state()?;
    let mut src = h.source();
    src.url = h.server.url("nope.git");
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(
        err.to_string()
            .contains("no git repository there (HTTP 404)"),
        "{err}"
    );
    let err = repo
        .fetch_branch(&source("file:///nonexistent/fleet.git"), "main")
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/fleet.git"), "{err}");
    let server = SshGitServer::start()?;
    let mut src = ssh_source(&server, &h.fleet);
    src.url = server.url(Path::new("/nonexistent/fleet.git"));
    let err = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(err.to_string().contains("the server says: fatal: '/nonexistent/fleet.git' does not appear to be a git repository"), "{err}");
    Ok(())
}

/// Ten thousand tags and a thousand branches on the server: a poll still asks for (and gets) the
/// one ref the device follows, so its cost does not grow with the fleet repo's ref count. Protocol
/// v2's `ls-refs` with `ref-prefix` is what keeps it flat; a v0 advertisement would list every ref.
#[test]
fn a_poll_lists_only_the_followed_ref_whatever_the_server_holds() -> Result<()> {
    let h = https()?;
    let (_d, repo) = state()?;
    let src = h.source();
    repo.fetch_branch(&src, "main")?;
    let poll_bytes = |repo: &LocalRepo| -> Result<u64> {
        let before = h.server.requests()?.len();
        let poll = repo.fetch_branch(&src, "main")?;
        assert!(!poll.received_pack, "{poll:?}");
        Ok(h.server.requests()?[before..]
            .iter()
            .map(|e| e.bytes_out)
            .sum())
    };
    let few = poll_bytes(&repo)?;

    let mut packed = String::new();
    for n in 0..10_000 {
        packed.push_str(&format!("{} refs/tags/release/{n}\n", h.c2));
    }
    for n in 0..1_000 {
        packed.push_str(&format!("{} refs/heads/feature/{n}\n", h.c2));
    }
    std::fs::write(h.fleet.path().join("packed-refs"), &packed)?;
    assert_eq!(
        h.fleet
            .git(&["for-each-ref", "--format=%(refname)"])?
            .lines()
            .count(),
        11_001,
        "the server holds every ref"
    );
    let many = poll_bytes(&repo)?;
    measure(
        "https poll, 1 ref vs 11,001 refs on the server",
        format!("{few} vs {many} bytes"),
    );
    // The same answer to the same question: byte counts may differ by a few header bytes only.
    assert!(
        many <= few + 64,
        "{many} bytes with 11,001 refs, {few} with one"
    );

    // A stage's tags: only `production/*` comes back, not the ten thousand `release/*`.
    h.fleet.tag("production/1", &h.c2, "release 1")?;
    let tags = repo.fetch_tags(&src, "production/")?;
    assert_eq!(
        tags.len(),
        1,
        "{:?}",
        tags.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    Ok(())
}
