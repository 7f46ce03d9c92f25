//! Fetching one branch or one stage's tags, with bounded retries.
//!
//! Depth: a ref tend has never fetched comes shallow (depth 1), so a device's first fetch costs
//! one snapshot, not the fleet's whole history. After that a fetch is incremental (no depth), so
//! the history from the last fetched head to the new one is complete and ancestry can be proven.
//! A poll with no new commit lists the refs and stops there: no pack is asked for.
//!
//! Each attempt is bounded by `timeout` as a whole: a watchdog raises gix's interrupt flag when
//! it passes (pack reception stops), the http client bounds each request, and ssh runs under
//! `timeout`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use gix::protocol::transport::client::blocking_io::{ssh as gix_ssh, Transport};
use gix::remote::fetch::Shallow;
use gix::remote::Direction;

use super::error::{classify, Attempt, Scheme};
use super::throttle::{full_jitter, RetryAfter, MAX_WAIT};
use super::{http, ssh, watch, FetchError, Fetched, LocalRepo, ObjectId, TagRef};

/// The local namespace of fetched branches (what `git clone` would call origin's).
const TRACKING: &str = "refs/remotes/origin/";
/// First wait before a retry; doubled each time, capped.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What one successful attempt saw and got.
struct Received {
    /// Remote refs that matched the refspec: full name, object the ref points to, and the
    /// commit it leads to (differs for annotated tags).
    refs: Vec<(String, ObjectId, ObjectId)>,
    pack_bytes: Option<u64>,
}

fn scheme_of(url: &str) -> Scheme {
    match gix::url::parse(gix::bstr::BStr::new(url)).map(|u| u.scheme) {
        Ok(gix::url::Scheme::Https) => Scheme::Https,
        Ok(gix::url::Scheme::Http) => Scheme::Http,
        Ok(gix::url::Scheme::Ssh) => Scheme::Ssh,
        _ => Scheme::File,
    }
}

impl LocalRepo {
    /// Fetches one branch: shallow (depth 1) the first time, incremental after; stores it as
    /// `refs/remotes/origin/<branch>`; retries transient failures with backoff.
    pub fn fetch_branch(
        &self,
        src: &super::SourceConfig,
        branch: &str,
    ) -> Result<Fetched, FetchError> {
        let full = format!("refs/heads/{branch}");
        valid_ref(&full, "branch", branch)?;
        let spec = format!("+{full}:{TRACKING}{branch}");
        let got = self.with_retries(src, |s| self.fetch_once(s, &spec, None))?;
        let Some((_, head, _)) = got.refs.iter().find(|(name, _, _)| *name == full) else {
            return Err(FetchError::BranchMissing {
                url: src.url.clone(),
                branch: branch.to_string(),
            });
        };
        Ok(Fetched {
            head: *head,
            received_pack: got.pack_bytes.is_some(),
            bytes: got.pack_bytes.unwrap_or(0),
        })
    }

    /// Fetches the tags named `<prefix>*` (stored under `refs/tags/`) and returns those the
    /// server has now, sorted by name. No matching tag is not an error: the list is empty.
    pub fn fetch_tags(
        &self,
        src: &super::SourceConfig,
        prefix: &str,
    ) -> Result<Vec<TagRef>, FetchError> {
        valid_ref(&format!("refs/tags/{prefix}x"), "tag prefix", prefix)?;
        let spec = format!("+refs/tags/{prefix}*:refs/tags/{prefix}*");
        let got = self.with_retries(src, |s| self.fetch_once(s, &spec, None))?;
        let mut tags: Vec<TagRef> = got
            .refs
            .into_iter()
            .filter_map(|(name, tag, target)| {
                name.strip_prefix("refs/tags/").map(|n| TagRef {
                    name: n.to_string(),
                    tag,
                    target,
                })
            })
            .collect();
        tags.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tags)
    }

    /// Fetches `commits` more generations of `branch` below the shallow boundary, for when
    /// [`Self::ancestry`] says `Unknown` (e.g. after a corrupt repo was re-created). Returns
    /// false when the repo holds the branch's complete history (nothing left to deepen).
    pub fn deepen(
        &self,
        src: &super::SourceConfig,
        branch: &str,
        commits: u32,
    ) -> Result<bool, FetchError> {
        let full = format!("refs/heads/{branch}");
        valid_ref(&full, "branch", branch)?;
        if self.local().shallow_commits().ok().flatten().is_none() {
            return Ok(false);
        }
        let spec = format!("+{full}:{TRACKING}{branch}");
        let got = self.with_retries(src, |s| {
            self.fetch_once(s, &spec, Some(Shallow::Deepen(commits.max(1))))
        })?;
        if !got.refs.iter().any(|(name, _, _)| *name == full) {
            return Err(FetchError::BranchMissing {
                url: src.url.clone(),
                branch: branch.to_string(),
            });
        }
        Ok(true)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries or the one overall
    /// `timeout` run out: each attempt gets what is left of it, and a backoff that would end
    /// past it is not waited for. So retries cannot hold the run lock beyond `timeout`.
    fn with_retries<T>(
        &self,
        src: &super::SourceConfig,
        mut attempt: impl FnMut(&super::SourceConfig) -> Result<T, FetchError>,
    ) -> Result<T, FetchError> {
        let budget = (!src.timeout.is_zero()).then(|| Instant::now() + src.timeout);
        let left = || budget.map(|b| b.saturating_duration_since(Instant::now()));
        let mut wait = BACKOFF_START;
        let mut tries = 0;
        loop {
            let this = super::SourceConfig {
                timeout: left().map_or(Duration::ZERO, |l| l.max(Duration::from_millis(1))),
                ..src.clone()
            };
            let e = match attempt(&this) {
                Err(e) if e.is_transient() => e,
                Err(e @ FetchError::Throttled { .. }) => {
                    let pause = throttle_pause(&e, wait);
                    if let Some(stop) = stop_throttled(pause, left(), tries, src.retries) {
                        return Err(e.stopped(stop));
                    }
                    tracing::warn!(url = %src.url, "{}; asking again in {:.1} s", e.summary(), pause.as_secs_f64());
                    std::thread::sleep(pause);
                    wait = (wait * 2).min(BACKOFF_MAX);
                    tries += 1;
                    continue;
                }
                other => return other,
            };
            let out_of_time = left().is_some_and(|l| l <= wait);
            if tries >= src.retries || out_of_time {
                return Err(overall(e, src.timeout));
            }
            tracing::warn!(url = %src.url, error = %e, "fetch failed; retrying in {}s", wait.as_secs());
            std::thread::sleep(wait);
            wait = (wait * 2).min(BACKOFF_MAX);
            tries += 1;
        }
    }

    /// One connection: list the refs matching `spec`, then fetch what is missing.
    fn fetch_once(
        &self,
        src: &super::SourceConfig,
        spec: &str,
        shallow: Option<Shallow>,
    ) -> Result<Received, FetchError> {
        let scheme = scheme_of(&src.url);
        let ssh_log = self.path.join("tend-ssh.log");
        if scheme == Scheme::Ssh {
            // ssh -E appends; one attempt's messages are what classify the failure.
            let _ = std::fs::write(&ssh_log, b"");
        }
        let started = Instant::now();
        let interrupt = Arc::new(AtomicBool::new(false));
        let watch = watch::Shared::new(src.max_fetch_bytes, interrupt.clone());
        let result = std::thread::scope(|scope| {
            let (done, finished) = mpsc::channel::<()>();
            let shared = &watch;
            scope.spawn(move || watchdog(src, started, shared, &finished));
            let r = self.transfer(src, scheme, spec, shallow, &ssh_log, &watch);
            drop(done);
            r
        });
        if let Some(hit) = watch.take_hit() {
            return Err(FetchError::Bound {
                url: src.url.clone(),
                limit: hit.limit,
                detail: hit.detail,
            });
        }
        result.map_err(|e| match e {
            Failure::Fetch(e) => e,
            Failure::Gix(err) => classify(
                &err,
                &Attempt {
                    url: &src.url,
                    scheme,
                    ca_file: src.ca_file.as_deref(),
                    known_hosts: src.known_hosts.as_deref(),
                    ssh_key: src.ssh_key.as_deref(),
                    connect_timeout: src.connect_timeout,
                    timeout: if src.timeout.is_zero() {
                        Duration::MAX
                    } else {
                        src.timeout
                    },
                    elapsed: started.elapsed(),
                    ssh_log: std::fs::read_to_string(&ssh_log)
                        .ok()
                        .filter(|_| scheme == Scheme::Ssh)
                        .unwrap_or_default(),
                },
            ),
        })
    }

    fn transfer(
        &self,
        src: &super::SourceConfig,
        scheme: Scheme,
        spec: &str,
        shallow: Option<Shallow>,
        ssh_log: &std::path::Path,
        watch: &Arc<watch::Shared>,
    ) -> Result<Received, Failure> {
        let repo = self.local();
        let remote = repo
            .remote_at(src.url.as_str())
            .map_err(|e| {
                FetchError::other(format!("source.url `{}` is not a git URL", src.url), e)
            })?
            .with_fetch_tags(gix::remote::fetch::Tags::None)
            .with_refspecs([spec], Direction::Fetch)
            .map_err(|e| FetchError::other(format!("refspec {spec}"), e))?;
        let connection = match scheme {
            Scheme::Ssh => {
                let url = remote
                    .url(Direction::Fetch)
                    .cloned()
                    .ok_or_else(|| FetchError::other("source.url", "no URL"))?;
                let options = gix_ssh::connect::Options {
                    command: Some(ssh::command(src, ssh_log).into()),
                    disallow_shell: false,
                    kind: Some(gix_ssh::ProgramKind::Ssh),
                };
                let transport =
                    gix_ssh::connect(url, gix::protocol::transport::Protocol::V2, options, false)
                        .map_err(|e| FetchError::other(format!("source.url `{}`", src.url), e))?;
                let transport: Box<dyn Transport + Send> = Box::new(transport);
                remote.to_connection_with_transport(transport)
            }
            Scheme::Https | Scheme::Http => {
                let url = remote
                    .url(Direction::Fetch)
                    .cloned()
                    .ok_or_else(|| FetchError::other("source.url", "no URL"))?;
                let transport: Box<dyn Transport + Send> = Box::new(http::transport(src, url)?);
                remote.to_connection_with_transport(transport)
            }
            Scheme::File => remote.connect(Direction::Fetch).map_err(Failure::Gix)?,
        };
        // No credential helpers and never a prompt: a timer run has nobody to answer it.
        let connection = connection.with_credentials(|_| Ok(None));
        let prepare = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(Failure::Gix)?;
        let refs: Vec<(String, ObjectId, ObjectId)> = prepare
            .ref_map()
            .mappings
            .iter()
            .filter_map(|m| match &m.remote {
                gix::remote::fetch::refmap::Source::Ref(r) => {
                    let (name, target, peeled) = r.unpack();
                    let target = target?.to_owned();
                    let peeled = peeled.map(ToOwned::to_owned).unwrap_or(target);
                    Some((name.to_string(), target, peeled))
                }
                gix::remote::fetch::refmap::Source::ObjectId(_) => None,
            })
            .collect();
        // A poll with no new commit stops at the ref listing: gix would not ask for a pack
        // either, but would still rewrite every ref (and work out a committer identity for the
        // ref log, reading the whole time zone database to do so).
        if refs.is_empty() || (shallow.is_none() && up_to_date(&repo, &prepare)) {
            return Ok(Received {
                refs,
                pack_bytes: None,
            });
        }
        let shallow = shallow.unwrap_or_else(|| first_fetch_depth(&repo, &prepare));
        let outcome = prepare
            .with_shallow(shallow)
            .receive(watch::Watch::root(watch.clone()), watch.interrupt())
            .map_err(Failure::Gix)?;
        let pack_bytes = match &outcome.status {
            gix::remote::fetch::Status::Change {
                write_pack_bundle, ..
            } => Some(
                write_pack_bundle
                    .data_path
                    .as_ref()
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .unwrap_or(0),
            ),
            gix::remote::fetch::Status::NoPackReceived { .. } => None,
        };
        Ok(Received { refs, pack_bytes })
    }
}

/// Stops the attempt (through its interrupt flag) when `timeout` has passed, and when the pack
/// arrives slower than `min_transfer_rate` over a `transfer_rate_window` (ssh and file:// have
/// no socket of tend's to bound; over http the client bounds every answer itself as well).
fn watchdog(
    src: &super::SourceConfig,
    started: Instant,
    watch: &watch::Shared,
    finished: &mpsc::Receiver<()>,
) {
    let deadline = (!src.timeout.is_zero()).then(|| started + src.timeout);
    let window = src.transfer_rate_window;
    let rate = (src.min_transfer_rate > 0 && !window.is_zero()).then_some(src.min_transfer_rate);
    let need = rate.map(|r| (u128::from(r) * window.as_millis() / 1000) as u64);
    // The current window: when it began and how many pack bytes had come by then.
    let mut window_start: Option<(Instant, u64)> = None;
    loop {
        let now = Instant::now();
        let to_deadline = deadline.map(|d| d.saturating_duration_since(now));
        let tick = match (to_deadline, rate) {
            (Some(d), Some(_)) => d.min(window),
            (Some(d), None) => d,
            (None, Some(_)) => window,
            (None, None) => {
                let _ = finished.recv();
                return;
            }
        };
        match finished.recv_timeout(tick.min(Duration::from_secs(1))) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            watch.interrupt().store(true, Ordering::SeqCst);
            return;
        }
        let (Some(need), Some(bytes)) = (need, watch.pack_bytes()) else {
            continue;
        };
        match window_start {
            None => window_start = Some((now, bytes)),
            Some((since, at)) if now.duration_since(since) >= window => {
                let got = bytes - at;
                if got < need {
                    let detail = crate::net::HttpError::TooSlow {
                        got,
                        window,
                        rate: src.min_transfer_rate,
                    }
                    .to_string();
                    watch.trip(super::bounds::BoundHit {
                        limit: super::bounds::Limit::Rate,
                        detail,
                    });
                    return;
                }
                window_start = Some((now, bytes));
            }
            Some(_) => {}
        }
    }
}

/// Depth 1 when none of the wanted refs was fetched before and their objects are not here
/// (a first fetch); otherwise incremental, so history stays connected.
fn first_fetch_depth<T: Transport>(
    repo: &gix::Repository,
    prepare: &gix::remote::fetch::Prepare<'_, '_, T>,
) -> Shallow {
    let map = prepare.ref_map();
    let all_known = map
        .mappings
        .iter()
        .filter_map(|m| m.remote.as_id())
        .all(|id| repo.has_object(id));
    let fetched_before = map.mappings.iter().any(|m| {
        m.local.as_ref().is_some_and(|name| {
            repo.try_find_reference(name.to_string().as_str())
                .ok()
                .flatten()
                .is_some()
        })
    });
    if all_known || fetched_before {
        Shallow::NoChange
    } else {
        Shallow::DepthAtRemote(std::num::NonZeroU32::MIN)
    }
}

/// Whether every wanted ref is already stored locally, pointing where the server's does.
fn up_to_date<T: Transport>(
    repo: &gix::Repository,
    prepare: &gix::remote::fetch::Prepare<'_, '_, T>,
) -> bool {
    prepare.ref_map().mappings.iter().all(|m| {
        let (Some(remote), Some(local)) = (m.remote.as_id(), m.local.as_ref()) else {
            return false;
        };
        repo.try_find_reference(local.to_string().as_str())
            .ok()
            .flatten()
            .and_then(|r| r.target().try_id().map(ToOwned::to_owned))
            .is_some_and(|id| id == remote)
    })
}

/// How long to wait after a throttling answer: the server's `Retry-After`, else a random
/// share of the current backoff ceiling (full jitter: throttled devices do not return together).
fn throttle_pause(e: &FetchError, ceiling: Duration) -> Duration {
    match e {
        FetchError::Throttled {
            retry_after: Some(RetryAfter::Wait(d)),
            ..
        } => *d,
        _ => full_jitter(ceiling),
    }
}

/// Why a throttled fetch is not asked again, if it is not: the attempts are used up, or the
/// wait is absurd or would end past the one budget (then tend stops at once, not at the budget).
fn stop_throttled(
    pause: Duration,
    left: Option<Duration>,
    tries: u32,
    retries: u32,
) -> Option<String> {
    if tries >= retries {
        return Some(format!(" after {} attempts", tries + 1));
    }
    match left {
        Some(l) if l <= pause => Some(format!(
            "; that is past what is left of source.timeout ({} s), so tend stopped at once",
            l.as_secs()
        )),
        _ if pause > MAX_WAIT => Some(format!(
            "; tend does not wait longer than {} s, so it stopped at once",
            MAX_WAIT.as_secs()
        )),
        _ => None,
    }
}

/// A timeout names the configured overall bound, not the part of it the last attempt had.
fn overall(e: FetchError, timeout: Duration) -> FetchError {
    match e {
        FetchError::Timeout {
            url,
            what,
            key: "timeout",
            ..
        } => FetchError::Timeout {
            url,
            what,
            after: timeout,
            key: "timeout",
        },
        other => other,
    }
}

/// Errors before classification: ours are final, gix's still need to be read.
enum Failure {
    Fetch(FetchError),
    Gix(gix::Error),
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Self {
        Failure::Fetch(e)
    }
}

fn valid_ref(full: &str, what: &str, name: &str) -> Result<(), FetchError> {
    gix::refs::FullName::try_from(full)
        .map(|_| ())
        .map_err(|e| FetchError::other(format!("{what} `{name}` is not a valid git ref name"), e))
}

#[cfg(test)]
mod tests;
