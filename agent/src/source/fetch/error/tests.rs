use super::*;

fn attempt(scheme: Scheme, log: &str) -> Attempt<'static> {
    Attempt {
        url: "ssh://git@127.0.0.1:2222/srv/fleet.git",
        scheme,
        ca_file: None,
        known_hosts: Some(Path::new("/etc/tend/known_hosts")),
        ssh_key: Some(Path::new("/etc/tend/id_ed25519")),
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(60),
        elapsed: Duration::from_secs(1),
        ssh_log: log.to_string(),
    }
}

#[test]
fn http_statuses_are_read_from_gix_transport_messages() {
    let cause = "An IO error occurred: Received HTTP status 403: HTTP status client error";
    assert_eq!(http_status(cause), Some(403));
    assert_eq!(http_status("Received HTTP status"), None);
    assert_eq!(http_status("connection refused"), None);
}

#[test]
fn unknown_host_key_says_how_to_pin_it() {
    let a = attempt(
        Scheme::Ssh,
        "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict \
         checking.\r\nHost key verification failed.\r\n",
    );
    let e = classify_ssh(&a, "early eof").unwrap();
    let text = e.to_string();
    assert!(matches!(e, FetchError::HostKey { .. }), "{text}");
    assert!(text.contains("[127.0.0.1]:2222"), "{text}");
    assert!(text.contains("ssh-keyscan -p 2222 127.0.0.1 >> /etc/tend/known_hosts"));
}

#[test]
fn refused_key_names_the_public_key_to_install() {
    let a = attempt(
        Scheme::Ssh,
        "git@127.0.0.1: Permission denied (publickey).\n",
    );
    let e = classify_ssh(&a, "early eof").unwrap();
    assert!(matches!(e, FetchError::Auth { .. }));
    assert!(e.to_string().contains("/etc/tend/id_ed25519.pub"));
}

#[test]
fn refused_connection_is_unreachable_and_transient() {
    let a = attempt(
        Scheme::Ssh,
        "ssh: connect to host 127.0.0.1 port 2222: Connection refused\n",
    );
    let e = classify_ssh(&a, "early eof").unwrap();
    assert!(matches!(e, FetchError::Unreachable { .. }) && e.is_transient());
}

#[test]
fn banner_timeout_is_a_connect_timeout() {
    let a = attempt(
        Scheme::Ssh,
        "Connection timed out during banner exchange\nConnection to 127.0.0.1 port 2222 \
         timed out\n",
    );
    let e = classify_ssh(&a, "early eof").unwrap();
    assert!(
        matches!(
            e,
            FetchError::Timeout {
                key: "connect_timeout",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn silent_ssh_death_after_the_deadline_is_a_timeout() {
    let mut a = attempt(Scheme::Ssh, "");
    a.elapsed = Duration::from_secs(61);
    let e = classify_ssh(&a, "early eof").unwrap();
    assert!(
        matches!(e, FetchError::Timeout { key: "timeout", .. }),
        "{e}"
    );
    a.elapsed = Duration::from_secs(1);
    assert!(classify_ssh(&a, "early eof").is_none());
}

#[test]
fn a_reset_connection_is_cut_which_hands_over_to_a_mirror_but_is_not_retried() {
    for kind in [
        std::io::ErrorKind::ConnectionReset,
        std::io::ErrorKind::ConnectionAborted,
        std::io::ErrorKind::BrokenPipe,
    ] {
        let e = crate::net::HttpError::io(std::io::Error::from(kind));
        assert!(
            matches!(e, crate::net::HttpError::Cut(_)),
            "{kind:?}: {e:?}"
        );
    }
    let other = crate::net::HttpError::io(std::io::Error::other("bad"));
    assert!(matches!(other, crate::net::HttpError::Io(_)));
    let cut = FetchError::Cut {
        url: "https://origin/f.git".into(),
        cause: "Connection reset by peer".into(),
    };
    assert!(cut.falls_through() && !cut.is_transient());
}
