//! tend's test bed: throwaway Debian devices (chroots), a signed local apt repository served on
//! loopback, and the helpers every integration test shares.
//!
//! Integration tests prove behaviour on a real Debian userland (dpkg, apt, systemctl, passwd)
//! rather than on mocks, because that is where a configuration agent breaks. Everything here is
//! hermetic: chroots come from a local cache, packages come from a repository built at test time
//! and served on 127.0.0.1, and nothing inside a device talks to the internet.
//!
//! The tend binary under test is built by the test command (`scripts/test`) before the suites run;
//! this crate never builds it (see [`tend_binary`]).

pub mod aptrepo;
pub mod cache;
pub mod cdn;
pub mod chroot;
pub mod deb;
pub mod device;
pub mod faultrelay;
pub mod files;
pub mod gate;
pub mod gitserver;
pub mod http;
pub mod layering;
pub mod mender;
pub mod mounts;
pub mod proxy;
pub mod publisher;
pub mod pullbed;
pub mod reports;
pub mod rollout;
pub mod rootpath;
pub mod run;
mod suites;
pub mod treehash;
pub mod vm;

pub use aptrepo::AptRepo;
pub use chroot::{Arch, Suite};
pub use device::Device;
pub use files::copy_tree;
pub use gate::skip_chroot_tests;
pub use http::StaticServer;
pub use run::Outcome;
pub use treehash::TreeSnapshot;

mod binary;
pub use binary::{built_deb, tend_binary};
