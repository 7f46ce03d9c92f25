//! Download, then apply: what a desired state needs from the network, fetched before its first
//! change.
//!
//! A link that drops half-way through a commit must leave the device on its old state, not on a
//! mix of both. So before the engine applies anything, every resource may name what it will fetch
//! (a package's .debs, the source they come from) into a [`Prefetch`]; the engine then runs each
//! [`Fetch`] and applies only if all of them succeeded. The engine knows no fetcher: a resource
//! type asks for its platform's fetcher by type ([`Prefetch::get`]), so several resources of
//! several types share one (all `package` resources, and the `apt_source` resources they
//! download from, share one apt download). A fetcher nobody asked for costs nothing, and one that
//! was asked but has nothing to fetch (every package installed) must return at once: a no-op run
//! stays as cheap as it was.

use std::any::{Any, TypeId};

use crate::error::ResourceError;
use crate::host::Host;

/// What one fetcher brought onto the device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes newly written to the device's caches.
    pub bytes: u64,
}

/// One kind of download, filled by resources and run once before the first change.
pub trait Fetch: Any + Send {
    /// What it will fetch, for messages: "3 packages". Empty when there is nothing to fetch.
    fn describe(&self) -> String;
    /// Fetches everything, or fails without having changed the device's configuration or its
    /// installed state (a cache may keep what was complete).
    fn fetch(&mut self, host: &Host) -> Result<Fetched, ResourceError>;
}

/// A fetcher that failed: what it was fetching, and why it failed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FetchFailure {
    /// "3 packages".
    pub what: String,
    pub error: String,
}

/// The fetchers of one run, in the order resources first asked for them.
#[derive(Default)]
pub struct Prefetch {
    fetchers: Vec<(TypeId, Box<dyn AnyFetch>)>,
}

/// A [`Fetch`] that can be found again by its type.
trait AnyFetch: Fetch {
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Fetch> AnyFetch for T {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Prefetch {
    /// The run's fetcher of type `T`, made on first use.
    pub fn get<T: Fetch + Default>(&mut self) -> &mut T {
        let id = TypeId::of::<T>();
        let at = match self.fetchers.iter().position(|(t, _)| *t == id) {
            Some(i) => i,
            None => {
                self.fetchers.push((id, Box::new(T::default())));
                self.fetchers.len() - 1
            }
        };
        self.fetchers[at]
            .1
            .as_any_mut()
            .downcast_mut::<T>()
            .expect("a fetcher is stored under its own type")
    }

    /// Runs every fetcher with something to fetch, in order, stopping at the first failure.
    /// Returns the bytes fetched.
    pub fn run(&mut self, host: &Host) -> Result<u64, FetchFailure> {
        let mut bytes = 0;
        for (_, f) in &mut self.fetchers {
            let what = f.describe();
            if what.is_empty() {
                continue;
            }
            match f.fetch(host) {
                Ok(done) => bytes += done.bytes,
                Err(e) => {
                    return Err(FetchFailure {
                        what,
                        error: host.redact(&e.to_string()),
                    })
                }
            }
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Counting {
        asked: Vec<String>,
        fail: bool,
        runs: usize,
    }

    impl Fetch for Counting {
        fn describe(&self) -> String {
            if self.asked.is_empty() {
                String::new()
            } else {
                format!("{} things", self.asked.len())
            }
        }
        fn fetch(&mut self, _: &Host) -> Result<Fetched, ResourceError> {
            self.runs += 1;
            if self.fail {
                return Err(ResourceError::other("the link dropped at token=hunter22"));
            }
            Ok(Fetched {
                bytes: 10 * self.asked.len() as u64,
            })
        }
    }

    #[derive(Default)]
    struct Other(u64);

    impl Fetch for Other {
        fn describe(&self) -> String {
            "other".into()
        }
        fn fetch(&mut self, _: &Host) -> Result<Fetched, ResourceError> {
            Ok(Fetched { bytes: self.0 })
        }
    }

    #[test]
    fn resources_of_one_kind_share_one_fetcher_and_bytes_add_up() {
        let host = Host::new("/nonexistent");
        let mut p = Prefetch::default();
        p.get::<Counting>().asked.push("a".into());
        p.get::<Other>().0 = 5;
        p.get::<Counting>().asked.push("b".into());
        assert_eq!(p.run(&host), Ok(25));
        assert_eq!(p.get::<Counting>().runs, 1);
    }

    #[test]
    fn a_fetcher_with_nothing_to_fetch_is_not_run() {
        let host = Host::new("/nonexistent");
        let mut p = Prefetch::default();
        p.get::<Counting>().fail = true;
        assert_eq!(p.run(&host), Ok(0));
        assert_eq!(p.get::<Counting>().runs, 0);
        assert_eq!(Prefetch::default().run(&host), Ok(0));
    }

    #[test]
    fn a_failed_fetch_says_what_it_fetched_and_is_redacted() {
        let host = Host::new("/nonexistent")
            .with_redactor(crate::redact::Redactor::new(["hunter22".to_string()]));
        let mut p = Prefetch::default();
        let c = p.get::<Counting>();
        c.asked = vec!["a".into(), "b".into(), "c".into()];
        c.fail = true;
        let e = p.run(&host).unwrap_err();
        assert_eq!(e.what, "3 things");
        assert_eq!(e.error, "the link dropped at token=<redacted>");
    }
}
