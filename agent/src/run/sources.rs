//! The git servers a run may fetch from: `source.url`, then each of `source.mirrors` in order,
//! so a site relay or a second CDN takes over when the origin is down.
//!
//! Only a source that cannot be reached or fails as a server ([`FetchError::falls_through`])
//! hands over to the next; the first that answers serves the whole run (the head, the history
//! that proves descent, the policy's tags, the connectivity guard), because history has to come
//! from the server that served the head. Trust does not depend on which source answered: what a
//! mirror serves goes through every check the origin's head would. A head a source serves that
//! fails a check is refused and the run stops there, without asking the next source: a refusal
//! is a sign of tampering or a broken publish that must reach the report as the run's failure,
//! and a further source quietly serving an acceptable head would hide it (docs/security.md).

use crate::converge::apply::{RunError, Session};
use crate::device::config::Source;
use crate::device::credentials::Credentials;
use crate::diag::Diagnostic;
use crate::source::fetch::{FetchError, SourceConfig};

pub(super) struct Sources {
    list: Vec<SourceConfig>,
    at: usize,
    /// One line per source that failed this run and was passed over, and why.
    pub(super) failed: Vec<String>,
}

impl Sources {
    /// The sources `s`'s config lists, in the order they are tried.
    pub(super) fn of(s: &Session, src: &Source) -> Result<Sources, RunError> {
        let first = source_config(s, src)?;
        let mut list = vec![first.clone()];
        list.extend(src.mirrors.iter().map(|m| SourceConfig {
            url: m.url.clone(),
            credentials: m.credentials.clone(),
            ..first.clone()
        }));
        Ok(Sources::new(list))
    }

    fn new(list: Vec<SourceConfig>) -> Sources {
        assert!(!list.is_empty(), "a run has at least source.url");
        Sources {
            list,
            at: 0,
            failed: Vec::new(),
        }
    }

    /// The source that answered last (the first one before any fetch).
    pub(super) fn current(&self) -> &SourceConfig {
        &self.list[self.at]
    }

    /// Runs `op` against the current source, and against each further one while the one before
    /// falls through; the error is the last source's. `what` names the step ("fetching main").
    pub(super) fn fetch<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(&SourceConfig) -> Result<T, FetchError>,
    ) -> Result<T, FetchError> {
        loop {
            let src = &self.list[self.at];
            match op(src) {
                Ok(t) => return Ok(t),
                Err(e) if e.falls_through() && self.at + 1 < self.list.len() => {
                    let next = &self.list[self.at + 1].url;
                    let line = format!(
                        "source {} failed ({what}): {}; trying {next}",
                        src.url,
                        e.summary()
                    );
                    tracing::warn!("{line}");
                    self.failed.push(line);
                    self.at += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn source_config(s: &Session, src: &Source) -> Result<SourceConfig, RunError> {
    let url = src.url.clone().ok_or_else(|| {
        RunError::Config(
            Diagnostic::new(
                "/etc/tend/tend.yaml",
                0,
                "`source.url` is not set: tend run has nothing to pull",
            )
            .fix("set source: {url: https://git.example.com/fleet.git, branch: production}"),
        )
    })?;
    let under_root =
        |p: &Option<String>| p.as_ref().map(|p| s.root.join(p.trim_start_matches('/')));
    let credentials = match &src.password_file {
        Some(file) => {
            let password = crate::device::credentials::read_password_file(&s.root, file)
                .map_err(RunError::Config)?;
            let username = src.username.clone().or_else(|| {
                src.url_credentials
                    .as_ref()
                    .and_then(|c| c.username.clone())
            });
            Some(Credentials { username, password })
        }
        None => src.url_credentials.clone(),
    };
    Ok(SourceConfig {
        url,
        credentials,
        ca_file: under_root(&src.ca_file),
        proxy: src.proxy.clone(),
        no_proxy: src.no_proxy.clone(),
        ssh_key: under_root(&src.ssh_key),
        known_hosts: under_root(&src.known_hosts),
        connect_timeout: src.connect_timeout,
        timeout: src.timeout,
        retries: src.retries,
        max_fetch_bytes: src.max_fetch_bytes,
        min_transfer_rate: src.min_transfer_rate,
        transfer_rate_window: src.transfer_rate_window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::fetch::Limit;
    use std::time::Duration;

    fn three() -> Sources {
        Sources::new(
            [
                "https://origin/f.git",
                "https://relay/f.git",
                "https://cdn/f.git",
            ]
            .map(SourceConfig::new)
            .to_vec(),
        )
    }

    fn unreachable(url: &str) -> FetchError {
        FetchError::Unreachable {
            url: url.into(),
            cause: "Connection refused".into(),
        }
    }

    #[test]
    fn a_source_that_is_down_hands_over_to_the_next_which_then_serves_the_run() {
        let mut s = three();
        let mut asked = Vec::new();
        let got = s.fetch("fetching main", |src| {
            asked.push(src.url.clone());
            match src.url.as_str() {
                "https://origin/f.git" => Err(unreachable(&src.url)),
                _ => Ok(src.url.clone()),
            }
        });
        assert_eq!(got.unwrap(), "https://relay/f.git");
        assert_eq!(asked, ["https://origin/f.git", "https://relay/f.git"]);
        assert_eq!(s.current().url, "https://relay/f.git");
        assert_eq!(s.failed.len(), 1);
        assert!(
            s.failed[0].contains("origin") && s.failed[0].contains("Connection refused"),
            "{:?}",
            s.failed
        );
        // The next step of the run (deepen, another branch) starts at the source that answered.
        let mut next = Vec::new();
        s.fetch("fetching canary", |src| {
            next.push(src.url.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(next, ["https://relay/f.git"]);
    }

    #[test]
    fn when_every_source_fails_the_error_is_the_last_ones_and_each_earlier_is_listed() {
        let mut s = three();
        let e = s
            .fetch("fetching main", |src| -> Result<(), _> {
                Err(unreachable(&src.url))
            })
            .unwrap_err();
        assert!(e.to_string().contains("https://cdn/f.git"), "{e}");
        assert_eq!(s.failed.len(), 2);
    }

    #[test]
    fn errors_that_would_repeat_elsewhere_do_not_fall_through() {
        for e in [
            FetchError::BranchMissing {
                url: "https://origin/f.git".into(),
                branch: "main".into(),
            },
            FetchError::Auth {
                url: "https://origin/f.git".into(),
                cause: "401".into(),
                fix: String::new(),
            },
            FetchError::Bound {
                url: "https://origin/f.git".into(),
                limit: Limit::Pack,
                detail: String::new(),
            },
            FetchError::Other {
                context: "x".into(),
                cause: "y".into(),
            },
        ] {
            assert!(!e.falls_through(), "{e}");
            let mut s = three();
            let mut asked = 0;
            let mut once = Some(e);
            let got = s.fetch("fetching main", |_| -> Result<(), _> {
                asked += 1;
                Err(once.take().expect("asked only once"))
            });
            assert!(got.is_err() && asked == 1 && s.failed.is_empty());
            assert_eq!(s.current().url, "https://origin/f.git");
        }
    }

    #[test]
    fn down_cut_tls_timeout_server_errors_and_throttling_fall_through() {
        let url = || "https://origin/f.git".to_string();
        for e in [
            unreachable("https://origin/f.git"),
            FetchError::Cut {
                url: url(),
                cause: "Connection reset by peer".into(),
            },
            FetchError::Tls {
                url: url(),
                cause: "UnknownIssuer".into(),
                fix: String::new(),
            },
            FetchError::Timeout {
                url: url(),
                what: "connecting",
                after: Duration::from_secs(20),
                key: "connect_timeout",
            },
            FetchError::Server {
                url: url(),
                status: 502,
                cause: "Bad Gateway".into(),
            },
            FetchError::Throttled {
                url: url(),
                host: "origin".into(),
                status: 429,
                retry_after: None,
                stopped: "after 4 attempts".into(),
            },
            FetchError::Bound {
                url: url(),
                limit: Limit::Rate,
                detail: String::new(),
            },
        ] {
            assert!(e.falls_through(), "{e}");
        }
    }
}
