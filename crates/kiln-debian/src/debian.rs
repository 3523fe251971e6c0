//! [`DebianSource`]: the [`DistributionSource`] for Debian and derivatives
//! that publish apt repositories.
//!
//! Wires the pieces together: [`Repository`] for indexes, [`Resolver`] for
//! the install set, [`PackageCache`] for the `.deb`s. Holds no logic of its
//! own beyond choosing the base suite.

use crate::error::Error;
use crate::lock::LockFile;
use crate::package_cache::{CachedPackage, PackageCache};
use crate::progress::Progress;
use crate::repository::{PackageIndex, Repository, RepositoryOptions};
use crate::resolve::{InstallSet, ResolveRequest, Resolver};
use crate::source::{AptSource, Architecture, DistributionSource};

/// Debian packages from one or more apt sources, for one architecture.
#[derive(Debug)]
pub struct DebianSource {
    sources: Vec<AptSource>,
    arch: Architecture,
    repository: Repository,
    indexes: Vec<PackageIndex>,
}

impl DebianSource {
    /// A source for `arch`; call [`DistributionSource::fetch_indexes`] before resolving.
    pub fn new(
        sources: Vec<AptSource>,
        arch: Architecture,
        options: RepositoryOptions,
    ) -> Result<Self, Error> {
        for source in &sources {
            source.validate()?;
        }
        Ok(Self {
            sources,
            arch,
            repository: Repository::new(options),
            indexes: Vec::new(),
        })
    }

    /// The target architecture.
    #[must_use]
    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// The fetched indexes, in source order.
    #[must_use]
    pub fn indexes(&self) -> &[PackageIndex] {
        &self.indexes
    }

    /// The request with its base suite filled in: the first suite of the
    /// first source, as mmdebstrap uses its SUITE argument.
    fn complete(&self, request: &ResolveRequest) -> ResolveRequest {
        let mut request = request.clone();
        if request.base_suite.is_none() {
            request.base_suite = self.sources.first().and_then(|s| s.suites.first()).cloned();
        }
        request
    }
}

impl DistributionSource for DebianSource {
    fn fetch_indexes(&mut self, progress: &dyn Progress) -> Result<(), Error> {
        self.indexes = self
            .repository
            .fetch_sources(&self.sources, &self.arch, progress)?;
        Ok(())
    }

    fn resolve(&self, request: &ResolveRequest) -> Result<InstallSet, Error> {
        Resolver::new(&self.indexes, &self.arch).resolve(&self.complete(request))
    }

    fn resolve_locked(
        &self,
        request: &ResolveRequest,
        lock: &LockFile,
    ) -> Result<InstallSet, Error> {
        Resolver::new(&self.indexes, &self.arch).resolve_locked(&self.complete(request), lock)
    }

    fn download(
        &self,
        set: &InstallSet,
        cache: &PackageCache,
        progress: &dyn Progress,
    ) -> Result<Vec<CachedPackage>, Error> {
        cache.fetch(&set.packages, progress)
    }
}
