//! Where packages come from: apt sources, the target architecture and the
//! [`DistributionSource`] interface that every distribution implements.
//!
//! Owns vocabulary only; no I/O. [`crate::debian::DebianSource`] is the one
//! implementation today; other distributions plug in behind the same trait.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::keyring::DEBIAN_ARCHIVE_KEYRING;
use crate::lock::LockFile;
use crate::package_cache::{CachedPackage, PackageCache};
use crate::progress::Progress;
use crate::resolve::{InstallSet, ResolveRequest};

/// One apt source (a deb822 `.sources` stanza of type `deb`): every
/// combination of URI and suite, each with all components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// Archive roots, such as `http://deb.debian.org/debian` (no trailing `/` needed).
    pub uris: Vec<String>,
    /// Suites, such as `bookworm`, `bookworm-updates`.
    pub suites: Vec<String>,
    /// Components, such as `main`.
    pub components: Vec<String>,
    /// `OpenPGP` keyring that must have signed the suites' `InRelease`.
    pub keyring: PathBuf,
}

impl AptSource {
    /// A source signed by the Debian archive keyring.
    #[must_use]
    pub fn debian(uri: &str, suites: &[&str], components: &[&str]) -> Self {
        Self {
            uris: vec![uri.to_owned()],
            suites: suites.iter().map(|s| (*s).to_owned()).collect(),
            components: components.iter().map(|c| (*c).to_owned()).collect(),
            keyring: Path::new(DEBIAN_ARCHIVE_KEYRING).to_owned(),
        }
    }

    /// Checks that nothing is empty.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason| Error::InvalidSource {
            source_name: self
                .uris
                .first()
                .cloned()
                .unwrap_or_else(|| "<no URI>".to_owned()),
            reason,
        };
        if self.uris.is_empty() {
            return Err(invalid("it has no URIs"));
        }
        if self.suites.is_empty() {
            return Err(invalid("it has no suites"));
        }
        if self.components.is_empty() {
            return Err(invalid("it has no components"));
        }
        if self.suites.iter().any(|s| s.ends_with('/')) {
            return Err(invalid(
                "flat repositories (a suite ending in `/`) are not supported",
            ));
        }
        Ok(())
    }
}

/// A Debian architecture name such as `amd64` or `arm64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Architecture(String);

impl Architecture {
    /// The pseudo-architecture of architecture-independent packages.
    pub const ALL: &'static str = "all";

    /// Checks and wraps an architecture name.
    pub fn new(name: &str) -> Result<Self, Error> {
        let ok = !name.is_empty()
            && name != Self::ALL
            && name != "any"
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(Error::InvalidArchitecture {
                name: name.to_owned(),
            })
        }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a package built for `package_arch` can be installed on this
    /// architecture (only native and `all` for now: no foreign architectures).
    #[must_use]
    pub fn installs(&self, package_arch: &str) -> bool {
        package_arch == self.0 || package_arch == Self::ALL
    }
}

impl Default for Architecture {
    fn default() -> Self {
        Self("amd64".to_owned())
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Architecture {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

/// A distribution's package source: the extension point for other
/// distributions. An implementation fetches and verifies its indexes,
/// resolves requests to an [`InstallSet`] and downloads the packages.
pub trait DistributionSource {
    /// Fetches (or, offline, loads from the cache) and verifies all indexes.
    fn fetch_indexes(&mut self, progress: &dyn Progress) -> Result<(), Error>;

    /// Resolves a request against the fetched indexes.
    fn resolve(&self, request: &ResolveRequest) -> Result<InstallSet, Error>;

    /// Resolves a request to exactly the packages in `lock`; fails if the
    /// lock names something missing or no longer matches the request.
    fn resolve_locked(
        &self,
        request: &ResolveRequest,
        lock: &LockFile,
    ) -> Result<InstallSet, Error>;

    /// Downloads (or finds in `cache`) every package of `set`, verified.
    fn download(
        &self,
        set: &InstallSet,
        cache: &PackageCache,
        progress: &dyn Progress,
    ) -> Result<Vec<CachedPackage>, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_accepts_native_and_all() {
        let arch = Architecture::default();
        assert_eq!(arch.as_str(), "amd64");
        assert!(arch.installs("amd64") && arch.installs("all"));
        assert!(!arch.installs("i386"));
        assert!(Architecture::new("all").is_err());
        assert!(Architecture::new("AMD64").is_err());
        assert_eq!(
            "arm64".parse::<Architecture>().unwrap().to_string(),
            "arm64"
        );
    }

    #[test]
    fn validate_names_the_source() {
        let mut source = AptSource::debian("http://m/debian", &["bookworm"], &[]);
        insta::assert_snapshot!(source.validate().unwrap_err(), @"Failed to use apt source `http://m/debian`: it has no components");
        source.components.push("main".into());
        assert!(source.validate().is_ok());
    }
}
