use super::*;

#[test]
fn a_throttled_fetch_stops_at_once_when_the_wait_is_past_the_budget_or_absurd() {
    let s = Duration::from_secs;
    assert_eq!(stop_throttled(s(2), Some(s(60)), 0, 3), None);
    assert_eq!(stop_throttled(s(2), None, 2, 3), None);
    let past = stop_throttled(s(3600), Some(s(60)), 0, 3).unwrap();
    assert!(
        past.contains("past what is left of source.timeout (60 s)"),
        "{past}"
    );
    let absurd = stop_throttled(s(86_400), None, 0, 3).unwrap();
    assert!(absurd.contains("longer than 600 s"), "{absurd}");
    assert_eq!(
        stop_throttled(s(1), Some(s(60)), 3, 3).as_deref(),
        Some(" after 4 attempts")
    );
    let e = FetchError::Throttled {
        url: "https://git.example.com/fleet.git".into(),
        host: "git.example.com".into(),
        status: 429,
        retry_after: Some(RetryAfter::Wait(s(30))),
        stopped: String::new(),
    };
    assert_eq!(throttle_pause(&e, s(1)), s(30));
    assert_eq!(
        e.summary(),
        "throttled by git.example.com (429, Retry-After 30 s)"
    );
    let e = e.stopped(" after 4 attempts".into());
    assert!(e.to_string().starts_with(
        "throttled by git.example.com (429, Retry-After 30 s) after 4 attempts. Fix:"
    ));
}

#[test]
fn every_url_form_of_the_config_is_recognised() {
    assert_eq!(
        scheme_of("https://git.example.com/fleet.git"),
        Scheme::Https
    );
    assert_eq!(scheme_of("http://git.example.com/fleet.git"), Scheme::Http);
    assert_eq!(
        scheme_of("ssh://git@git.example.com:2222/srv/fleet.git"),
        Scheme::Ssh
    );
    assert_eq!(scheme_of("git@git.example.com:fleet.git"), Scheme::Ssh);
    assert_eq!(scheme_of("file:///srv/fleet.git"), Scheme::File);
    assert_eq!(scheme_of("/srv/fleet.git"), Scheme::File);
}

#[test]
fn scp_like_urls_become_an_ssh_invocation_without_a_port() {
    let url = gix::url::parse(gix::bstr::BStr::new("git@git.example.com:fleet.git")).unwrap();
    assert_eq!(url.user(), Some("git"));
    assert_eq!(url.host(), Some("git.example.com"));
    assert_eq!(url.port, None);
    assert_eq!(url.path, "fleet.git");
    let url = gix::url::parse(gix::bstr::BStr::new(
        "ssh://git@git.example.com:2222/srv/fleet.git",
    ))
    .unwrap();
    assert_eq!(
        (url.port, url.path.to_string()),
        (Some(2222), "/srv/fleet.git".to_string())
    );
}

/// A repo at `dir` on branch main whose one commit holds `files`.
fn server_repo(dir: &std::path::Path, files: &[(String, Vec<u8>)]) {
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    std::fs::create_dir_all(dir).unwrap();
    git(&["init", "-q", "-b", "main"]);
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    git(&["add", "."]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-qm",
        "c",
    ]);
}

fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn pack_bounds_hold_over_file_urls_too() {
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big");
    server_repo(&big, &[("noise.bin".into(), noise(2 << 20))]);
    let repo = LocalRepo::open(&d.path().join("local.git")).unwrap();
    let mut src = crate::source::fetch::SourceConfig::new(format!("file://{}", big.display()));
    src.max_fetch_bytes = 1 << 20;
    let e = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Bound {
                limit: super::super::Limit::Pack,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("raise source.max_fetch_bytes"),
        "{e}"
    );
    src.max_fetch_bytes = 8 << 20;
    assert!(repo.fetch_branch(&src, "main").unwrap().received_pack);

    let many = d.path().join("many");
    let files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("f{i}"), format!("{i}").into_bytes()))
        .collect();
    server_repo(&many, &files);
    let repo = LocalRepo::open(&d.path().join("local2.git")).unwrap();
    let mut src = crate::source::fetch::SourceConfig::new(format!("file://{}", many.display()));
    src.max_fetch_bytes = 100 * 256;
    let e = repo.fetch_branch(&src, "main").unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Bound {
                limit: super::super::Limit::PackObjects,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn ref_names_are_validated_before_anything_is_sent() {
    assert!(valid_ref("refs/heads/production", "branch", "production").is_ok());
    assert!(valid_ref("refs/heads/prod*", "branch", "prod*").is_err());
    assert!(valid_ref("refs/heads/a b", "branch", "a b").is_err());
    assert!(valid_ref("refs/tags/production/x", "tag prefix", "production/").is_ok());
}
