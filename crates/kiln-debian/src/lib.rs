//! The Debian package source of kiln.
//!
//! From apt sources to verified `.deb` files, in four steps:
//!
//! 1. [`repository`]: fetch each suite's `InRelease`, check its `OpenPGP`
//!    signature ([`keyring`]) and freshness ([`release`]), then fetch the
//!    `Packages` indexes it lists, verified by SHA256 and cached by digest.
//! 2. [`index`]: parse the indexes into [`index::Package`] records.
//! 3. [`resolve`]: pick candidates and compute the install closure, as apt
//!    and mmdebstrap do; [`lock`] pins the result in `kiln.lock`.
//! 4. [`package_cache`]: download the `.deb`s in parallel into a
//!    content-addressed cache.
//!
//! [`source::DistributionSource`] is the interface a distribution
//! implements; [`debian::DebianSource`] implements it for Debian.
//!
//! Versions compare as dpkg compares them:
//!
//! ```
//! use kiln_debian::version::Version;
//! let old = Version::parse("1.0~rc1").unwrap();
//! let new = Version::parse("1.0").unwrap();
//! assert!(old < new);
//! ```
//!
//! The library never prints; progress goes to a [`progress::Progress`].
#![deny(missing_docs)]

mod control;
mod date;
pub mod debian;
pub mod error;
pub mod index;
pub mod keyring;
pub mod lock;
pub mod package_cache;
pub mod progress;
pub mod relation;
pub mod release;
pub mod repository;
pub mod resolve;
pub mod source;
mod store;
pub mod target;
mod transport;
pub mod version;

pub use debian::DebianSource;
pub use error::{Chain, Conflict, Error};
pub use lock::{LockFile, LockedPackage, TreeLock};
pub use package_cache::{CachedPackage, PackageCache};
pub use progress::{Event, NoProgress, Progress};
pub use repository::{IndexFiles, PackageIndex, Repository, RepositoryOptions};
pub use resolve::{BaseSet, InstallSet, PackageRequest, ResolveRequest, ResolvedPackage, Resolver};
pub use source::{AptSource, Architecture, DistributionSource};
pub use transport::RetryPolicy;
