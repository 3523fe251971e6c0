//! The content-addressed `.deb` cache: `<cache>/debs/<sha256>.deb`.
//!
//! Owns parallel, verified downloads. A `.deb` is streamed into a temporary
//! file next to its final place, hashed on the way, and renamed only when its
//! SHA256 and size match; a cache entry is re-hashed before use and fetched
//! again if it is corrupt. Knows nothing about resolution.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::progress::{Event, Progress};
use crate::resolve::ResolvedPackage;
use crate::store;
use crate::transport::{AttemptError, RetryPolicy, Transport};

/// Default number of parallel downloads.
pub const DEFAULT_JOBS: usize = 6;

/// A verified `.deb` in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPackage {
    /// Package name.
    pub name: String,
    /// Path of the verified file.
    pub path: PathBuf,
    /// Its SHA256.
    pub sha256: String,
    /// Its size.
    pub size: u64,
}

/// The `.deb` cache.
#[derive(Debug, Clone)]
pub struct PackageCache {
    dir: PathBuf,
    transport: Transport,
    jobs: usize,
    offline: bool,
}

impl PackageCache {
    /// A cache under `<cache_dir>/debs`, with [`DEFAULT_JOBS`] parallel downloads.
    #[must_use]
    pub fn new(cache_dir: &Path, retry: RetryPolicy) -> Self {
        Self {
            dir: cache_dir.join("debs"),
            transport: Transport::new(retry),
            jobs: DEFAULT_JOBS,
            offline: false,
        }
    }

    /// Sets the number of parallel downloads (at least 1).
    #[must_use]
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Makes no requests: every package must already be cached.
    #[must_use]
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Where a `.deb` with this digest lives.
    #[must_use]
    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.deb"))
    }

    /// Makes every package available in the cache, downloading in parallel.
    /// Returns them in input order. On failure the first error (in input
    /// order) is returned and no unverified file is left behind.
    pub fn fetch(
        &self,
        packages: &[ResolvedPackage],
        progress: &dyn Progress,
    ) -> Result<Vec<CachedPackage>, Error> {
        std::fs::create_dir_all(&self.dir).map_err(|source| Error::Cache {
            path: self.dir.clone(),
            source,
        })?;
        remove_stale_partials(&self.dir);
        let done = AtomicUsize::new(0);
        let fetch = |package: &ResolvedPackage| {
            if progress.cancelled() {
                return Err(Error::Cancelled);
            }
            let (cached, from_cache) = self.fetch_one(package, progress)?;
            let done = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress.event(&Event::PackageReady {
                name: &cached.name,
                size: cached.size,
                cached: from_cache,
                done,
                total: packages.len(),
            });
            Ok(cached)
        };
        // Downloads wait on the network, not the CPU: `jobs` threads of
        // their own. rayon stops starting downloads at the first error.
        let run = || {
            packages
                .par_iter()
                .with_max_len(1)
                .map(fetch)
                .collect::<Result<Vec<_>, Error>>()
        };
        match rayon::ThreadPoolBuilder::new()
            .num_threads(self.jobs.min(packages.len()).max(1))
            .build()
        {
            Ok(pool) => pool.install(run),
            Err(_) => run(),
        }
    }

    fn fetch_one(
        &self,
        package: &ResolvedPackage,
        progress: &dyn Progress,
    ) -> Result<(CachedPackage, bool), Error> {
        let sha256 = package.sha256.to_ascii_lowercase();
        if !store::is_sha256_hex(&sha256) {
            return Err(Error::ParseIndex {
                origin: package.name.clone(),
                line: 0,
                message: format!("`{}` is not a SHA256 digest", package.sha256),
            });
        }
        let path = self.path_for(&sha256);
        let cached = CachedPackage {
            name: package.name.clone(),
            path: path.clone(),
            sha256: sha256.clone(),
            size: package.size,
        };
        if store::file_matches(&path, &sha256, package.size)? {
            return Ok((cached, true));
        }
        if self.offline {
            return Err(Error::OfflinePackageMissing {
                name: package.name.clone(),
            });
        }
        let url = package.url();
        let cache_err = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Cache { path, source }
        };
        let prefix = format!("{PARTIAL}{}-", std::process::id());
        let mut tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".deb")
            .tempfile_in(&self.dir)
            .map_err(cache_err(&self.dir))?;
        let tmp_path = tmp.path().to_owned();
        let outcome = self
            .transport
            .fetch_with(&url, progress, &mut |reader: &mut dyn Read| {
                // Each attempt starts over.
                let file = tmp.as_file_mut();
                file.set_len(0)
                    .map_err(|e| AttemptError::Fatal(cache_err(&tmp_path)(e)))?;
                std::io::Seek::rewind(file)
                    .map_err(|e| AttemptError::Fatal(cache_err(&tmp_path)(e)))?;
                let mut hasher = Sha256::new();
                let mut total = 0u64;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    if progress.cancelled() {
                        return Err(AttemptError::Fatal(Error::Cancelled));
                    }
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                    if total > package.size {
                        // Stop early: it cannot match any more.
                        break;
                    }
                    hasher.update(&buf[..n]);
                    file.write_all(&buf[..n])
                        .map_err(|e| AttemptError::Fatal(cache_err(&tmp_path)(e)))?;
                }
                Ok((store::hex(&hasher.finalize()), total))
            })?;
        let Some((actual, actual_size)) = outcome else {
            return Err(Error::NotFound { url });
        };
        if actual != sha256 || actual_size != package.size {
            // Dropping `tmp` deletes the partial file.
            return Err(Error::Checksum {
                url,
                expected: sha256,
                expected_size: package.size,
                actual,
                actual_size,
            });
        }
        // Every build on the machine shares the cache: readable by all. No
        // fsync: an entry is re-verified on every use, so one torn by a crash
        // is found and fetched again.
        set_readable(tmp.as_file()).map_err(cache_err(&tmp_path))?;
        tmp.persist(&path).map_err(|e| Error::Cache {
            path: path.clone(),
            source: e.error,
        })?;
        Ok((cached, false))
    }
}

/// Prefix of downloads in progress: `.partial-<pid>-<random>.deb`.
const PARTIAL: &str = ".partial-";

/// Removes partial downloads left by processes that are gone (a build killed
/// mid-download); they are never trusted, but they take space.
fn remove_stale_partials(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PARTIAL)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn set_readable(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
}
