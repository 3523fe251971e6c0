//! The archive client: signed `InRelease` files and the `Packages` indexes
//! they vouch for.
//!
//! Owns the trust chain keyring → `InRelease` → `SHA256` of each index, the
//! index cache (`<cache>/indexes/<sha256>`, written atomically and
//! re-verified before use) and offline mode (the last verified `InRelease`
//! under `<cache>/releases/`, no requests at all). Does not resolve or
//! download packages.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::index::{self, Package};
use crate::keyring::Keyring;
use crate::progress::{Event, Progress};
use crate::release::Release;
use crate::source::{AptSource, Architecture};
use crate::store;
use crate::transport::{RetryPolicy, Transport};

/// The extension of an index's decompressed text beside it in the cache.
const TEXT_EXTENSION: &str = "text";

/// Largest `InRelease`/`Release`/index accepted, to bound memory.
const MAX_INDEX_BYTES: u64 = 1 << 30;

/// How the archive client behaves.
#[derive(Debug, Clone)]
pub struct RepositoryOptions {
    /// Cache root; indexes go to `<cache>/indexes`, releases to `<cache>/releases`.
    pub cache_dir: PathBuf,
    /// Make no network requests: use only what an earlier run verified and cached.
    pub offline: bool,
    /// Retries for network errors.
    pub retry: RetryPolicy,
    /// The current time in seconds since the epoch for `Valid-Until`/`Date`
    /// checks; `None` reads the system clock.
    pub now: Option<i64>,
}

impl RepositoryOptions {
    /// Online, default retries, system clock.
    #[must_use]
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            cache_dir: cache_dir.to_owned(),
            offline: false,
            retry: RetryPolicy::default(),
            now: None,
        }
    }
}

/// One suite's verified `Release` and where it came from.
#[derive(Debug, Clone)]
pub struct VerifiedRelease {
    /// Archive root.
    pub uri: String,
    /// Suite as configured (`bookworm`).
    pub suite: String,
    /// The parsed, signature-checked, fresh `Release`.
    pub release: Release,
}

/// The packages of one `Packages` index.
#[derive(Debug, Clone)]
pub struct PackageIndex {
    /// Archive root the `.deb` filenames are relative to.
    pub uri: String,
    /// Suite as configured.
    pub suite: String,
    /// `Codename` of the suite's `Release`, if it has one.
    pub codename: Option<String>,
    /// Component (`main`).
    pub component: String,
    /// apt's pin priority of the suite (500; 1 or 100 for `NotAutomatic`
    /// suites): the candidate is the highest version among the highest priority.
    pub pin_priority: i32,
    /// The stanzas, in file order.
    pub packages: Vec<Package>,
    /// Where the verified index and its verified `InRelease`/`Release` are
    /// kept, for giving the target's apt the same view (`None` for indexes
    /// not read from a repository, as in tests).
    pub files: Option<IndexFiles>,
}

/// The verified files behind a [`PackageIndex`], in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFiles {
    /// The index as downloaded (compressed), verified by SHA256.
    pub index: PathBuf,
    /// Its path below `dists/<suite>/` (`main/binary-amd64/Packages.xz`).
    pub index_path: String,
    /// The verified `InRelease` (or `Release`) that lists it.
    pub release: PathBuf,
    /// The release file's name: `InRelease` or `Release`.
    pub release_name: &'static str,
}

/// Fetches and verifies archive metadata.
#[derive(Debug)]
pub struct Repository {
    options: RepositoryOptions,
    transport: Transport,
}

fn trim_uri(uri: &str) -> &str {
    uri.trim_end_matches('/')
}

impl Repository {
    /// Creates a client.
    #[must_use]
    pub fn new(options: RepositoryOptions) -> Self {
        let transport = Transport::new(options.retry);
        Self { options, transport }
    }

    fn now(&self) -> i64 {
        self.options.now.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        })
    }

    fn release_dir(&self, uri: &str, suite: &str) -> PathBuf {
        let key = store::sha256_hex(format!("{}\n{suite}", trim_uri(uri)).as_bytes());
        self.options.cache_dir.join("releases").join(&key[..32])
    }

    fn index_path(&self, sha256: &str) -> PathBuf {
        self.options.cache_dir.join("indexes").join(sha256)
    }

    /// Fetches `dists/<suite>/InRelease` (or `Release` + `Release.gpg`),
    /// verifies it against `keyring`, checks `Valid-Until` and `Date`, and
    /// remembers it for offline mode.
    pub fn fetch_release(
        &self,
        uri: &str,
        suite: &str,
        keyring: &Keyring,
        progress: &dyn Progress,
    ) -> Result<VerifiedRelease, Error> {
        let base = format!("{}/dists/{suite}", trim_uri(uri));
        let dir = self.release_dir(uri, suite);
        let (text, origin) = if self.options.offline {
            Self::load_cached_release(&dir, &base, keyring, self.now())?
        } else {
            self.download_release(&dir, &base, keyring, progress)?
        };
        let release = Release::parse(&text, &origin)?;
        release.check_freshness(self.now(), &origin)?;
        Ok(VerifiedRelease {
            uri: trim_uri(uri).to_owned(),
            suite: suite.to_owned(),
            release,
        })
    }

    fn download_release(
        &self,
        dir: &Path,
        base: &str,
        keyring: &Keyring,
        progress: &dyn Progress,
    ) -> Result<(String, String), Error> {
        let in_release = format!("{base}/InRelease");
        if let Some(bytes) = self.transport.get(&in_release, MAX_INDEX_BYTES, progress)? {
            let text = keyring.verify_cleartext(&bytes, &in_release, self.now())?;
            store::write_atomic(&dir.join("InRelease"), &bytes)?;
            remove_if_exists(&dir.join("Release"))?;
            remove_if_exists(&dir.join("Release.gpg"))?;
            return Ok((text, in_release));
        }
        let release_url = format!("{base}/Release");
        let signature_url = format!("{base}/Release.gpg");
        let release = self
            .transport
            .get(&release_url, MAX_INDEX_BYTES, progress)?
            .ok_or_else(|| Error::NotFound {
                url: release_url.clone(),
            })?;
        let signature = self
            .transport
            .get(&signature_url, MAX_INDEX_BYTES, progress)?
            .ok_or_else(|| Error::NotFound {
                url: signature_url.clone(),
            })?;
        keyring.verify_detached(&release, &signature, &release_url, self.now())?;
        let text = String::from_utf8(release.clone()).map_err(|_| Error::ParseRelease {
            origin: release_url.clone(),
            line: 1,
            message: "the file is not UTF-8".to_owned(),
        })?;
        store::write_atomic(&dir.join("Release.gpg"), &signature)?;
        store::write_atomic(&dir.join("Release"), &release)?;
        remove_if_exists(&dir.join("InRelease"))?;
        Ok((text, release_url))
    }

    /// Offline: re-verify the last stored copy; trust nothing unverified.
    fn load_cached_release(
        dir: &Path,
        base: &str,
        keyring: &Keyring,
        now: i64,
    ) -> Result<(String, String), Error> {
        let read = |name: &str| -> Result<Option<Vec<u8>>, Error> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(Error::Cache { path, source }),
            }
        };
        if let Some(bytes) = read("InRelease")? {
            let origin = format!("{base}/InRelease");
            return Ok((keyring.verify_cleartext(&bytes, &origin, now)?, origin));
        }
        if let (Some(release), Some(signature)) = (read("Release")?, read("Release.gpg")?) {
            let origin = format!("{base}/Release");
            keyring.verify_detached(&release, &signature, &origin, now)?;
            let text = String::from_utf8(release).map_err(|_| Error::ParseRelease {
                origin: origin.clone(),
                line: 1,
                message: "the file is not UTF-8".to_owned(),
            })?;
            return Ok((text, origin));
        }
        Err(Error::OfflineMissing {
            origin: base.to_owned(),
        })
    }

    /// Fetches `<component>/binary-<arch>/Packages` in the best compression
    /// the `Release` lists (`.xz`, then `.gz`, then none), through
    /// `by-hash/SHA256/<hex>` when offered, verified against the `Release`.
    /// A cached copy with the right digest is used without a request.
    pub fn fetch_packages(
        &self,
        verified: &VerifiedRelease,
        component: &str,
        arch: &Architecture,
        progress: &dyn Progress,
    ) -> Result<PackageIndex, Error> {
        let dir = format!("{component}/binary-{arch}");
        let base = format!("{}/dists/{}", verified.uri, verified.suite);
        let candidates: Vec<(String, Compression)> = [
            ("Packages.xz", Compression::Xz),
            ("Packages.gz", Compression::Gz),
            ("Packages", Compression::None),
        ]
        .into_iter()
        .map(|(name, c)| (format!("{dir}/{name}"), c))
        .filter(|(path, _)| verified.release.digest(path).is_some())
        .collect();
        if candidates.is_empty() {
            return Err(Error::MissingIndexEntry {
                origin: format!("{base}/InRelease"),
                path: format!("{dir}/Packages"),
            });
        }
        // A verified cached copy of any listed compression needs no request.
        let mut found = None;
        for (path, compression) in &candidates {
            let digest = verified.release.digest(path).expect("filtered above");
            if let Some(bytes) = store::read_verified(
                &self.index_path(&digest.sha256),
                &digest.sha256,
                digest.size,
            )? {
                progress.event(&Event::IndexCached { path });
                found = Some((bytes, path.clone(), *compression));
                break;
            }
        }
        if found.is_none() && self.options.offline {
            return Err(Error::OfflineIndexMissing {
                origin: base,
                path: candidates[0].0.clone(),
            });
        }
        if found.is_none() {
            let mut last_url = String::new();
            for (path, compression) in &candidates {
                let digest = verified.release.digest(path).expect("filtered above");
                let plain = format!("{base}/{path}");
                let mut urls = Vec::new();
                if verified.release.acquire_by_hash {
                    urls.push(format!("{base}/{dir}/by-hash/SHA256/{}", digest.sha256));
                }
                urls.push(plain);
                for url in urls {
                    last_url.clone_from(&url);
                    let Some(bytes) = self.transport.get(&url, MAX_INDEX_BYTES, progress)? else {
                        continue;
                    };
                    let actual = store::sha256_hex(&bytes);
                    if actual != digest.sha256 || bytes.len() as u64 != digest.size {
                        return Err(Error::Checksum {
                            url,
                            expected: digest.sha256.clone(),
                            expected_size: digest.size,
                            actual,
                            actual_size: bytes.len() as u64,
                        });
                    }
                    store::write_atomic(&self.index_path(&digest.sha256), &bytes)?;
                    found = Some((bytes, path.clone(), *compression));
                    break;
                }
                if found.is_some() {
                    break;
                }
            }
            if found.is_none() {
                return Err(Error::NotFound { url: last_url });
            }
        }
        let (bytes, path, compression) = found.expect("checked above");
        let origin = format!("{base}/{path}");
        // Decompressing (xz) is most of the time of a cached index: keep
        // the text beside the verified file it was made from.
        let digest = verified
            .release
            .digest(&path)
            .expect("chosen from the Release");
        let text_path = self
            .index_path(&digest.sha256)
            .with_extension(TEXT_EXTENSION);
        let text = match store::read_derived(&text_path)? {
            Some(text) => text,
            None => {
                let text = compression.decompress(&bytes, &origin)?;
                store::write_derived(&text_path, &text)?;
                text
            }
        };
        let text = String::from_utf8(text).map_err(|e| Error::ParseIndex {
            origin: origin.clone(),
            line: 1 + bytecount_newlines(&e.as_bytes()[..e.utf8_error().valid_up_to()]),
            message: "the file is not UTF-8".to_owned(),
        })?;
        let packages = index::parse_packages(&text, &origin)?;
        let release_dir = self.release_dir(&verified.uri, &verified.suite);
        let release_name = if release_dir.join("InRelease").exists() {
            "InRelease"
        } else {
            "Release"
        };
        Ok(PackageIndex {
            uri: verified.uri.clone(),
            suite: verified.suite.clone(),
            codename: verified.release.codename.clone(),
            component: component.to_owned(),
            pin_priority: verified.release.default_pin_priority(),
            packages,
            files: Some(IndexFiles {
                index: self.index_path(&digest.sha256),
                index_path: path,
                release: release_dir.join(release_name),
                release_name,
            }),
        })
    }

    /// Fetches every suite and component of `sources` for `arch`, in order:
    /// sources as listed, then URIs, suites, components. Index downloads and
    /// parsing run in parallel; the result order does not depend on timing.
    pub fn fetch_sources(
        &self,
        sources: &[AptSource],
        arch: &Architecture,
        progress: &dyn Progress,
    ) -> Result<Vec<PackageIndex>, Error> {
        let mut jobs = Vec::new();
        for source in sources {
            source.validate()?;
            let keyring = Keyring::load(&source.keyring)?;
            for uri in &source.uris {
                for suite in &source.suites {
                    let verified = self.fetch_release(uri, suite, &keyring, progress)?;
                    for component in &source.components {
                        jobs.push((verified.clone(), component.clone()));
                    }
                }
            }
        }
        let results: Vec<Result<PackageIndex, Error>> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(verified, component)| {
                    scope.spawn(move || self.fetch_packages(verified, component, arch, progress))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("index thread panicked"))
                .collect()
        });
        results.into_iter().collect()
    }
}

fn bytecount_newlines(bytes: &[u8]) -> usize {
    // Only on the error path; not worth a dependency.
    bytes.split(|&b| b == b'\n').count() - 1
}

fn remove_if_exists(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Cache {
            path: path.to_owned(),
            source,
        }),
    }
}

#[derive(Debug, Clone, Copy)]
enum Compression {
    Xz,
    Gz,
    None,
}

impl Compression {
    fn decompress(self, bytes: &[u8], origin: &str) -> Result<Vec<u8>, Error> {
        let err = |source| Error::Decompress {
            origin: origin.to_owned(),
            source,
        };
        let mut out = Vec::with_capacity(bytes.len() * 6);
        match self {
            Compression::Xz => {
                liblzma::read::XzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .map_err(err)?;
            }
            Compression::Gz => {
                flate2::read::MultiGzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .map_err(err)?;
            }
            Compression::None => out.extend_from_slice(bytes),
        }
        Ok(out)
    }
}
