//! The one error type of this crate.
//!
//! Every message starts with "Failed to …", names the thing in backticks and
//! keeps the underlying cause as its `source`.

use std::fmt;
use std::path::PathBuf;

/// A dependency chain from a requested package to a failing relation,
/// shown as `openssh-server -> libfoo (>= 2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain(pub Vec<String>);

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" -> "))
    }
}

/// The details of [`Error::Conflict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The package declaring the relation.
    pub package: String,
    /// The package it rejects.
    pub other: String,
    /// `conflicts with` or `breaks`.
    pub kind: &'static str,
    /// The relation text.
    pub relation: String,
    /// The package being added and why it is needed.
    pub added: Chain,
    /// The package already in the set and why it is there.
    pub present: Chain,
}

/// Everything that can go wrong in `kiln-debian`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A version string is malformed.
    #[error("Failed to parse version `{version}`: {reason}")]
    InvalidVersion {
        /// The text.
        version: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A relation field is malformed.
    #[error("Failed to parse relation `{relation}`: {reason}")]
    InvalidRelation {
        /// The field text.
        relation: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An architecture name is malformed.
    #[error("Failed to parse architecture `{name}`: expected a name such as `amd64`")]
    InvalidArchitecture {
        /// The text.
        name: String,
    },
    /// A package request (`name` or `name=version`) is malformed.
    #[error("Failed to parse package request `{request}`: expected `name` or `name=version`")]
    InvalidRequest {
        /// The text.
        request: String,
    },
    /// A base set name is unknown.
    #[error(
        "Failed to parse base set `{name}`: expected one of `essential`, `required`, `minbase`"
    )]
    InvalidBaseSet {
        /// The text.
        name: String,
    },
    /// An apt source is incomplete.
    #[error("Failed to use apt source `{source_name}`: {reason}")]
    InvalidSource {
        /// The first URI of the source, or a placeholder.
        source_name: String,
        /// What is missing.
        reason: &'static str,
    },
    /// A URL scheme other than `http://`, `https://` or `file://`.
    #[error("Failed to fetch `{url}`: only `http://`, `https://` and `file://` URIs are supported")]
    UnsupportedUri {
        /// The URL.
        url: String,
    },
    /// The keyring file could not be read.
    #[error("Failed to read keyring `{path}`")]
    ReadKeyring {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The keyring file is not `OpenPGP`.
    #[error("Failed to parse keyring `{path}`")]
    ParseKeyring {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<pgp::errors::Error>,
    },
    /// The keyring file holds no keys.
    #[error("Failed to find any key in keyring `{path}`")]
    EmptyKeyring {
        /// The file.
        path: PathBuf,
    },
    /// A signed file is not valid `OpenPGP`.
    #[error("Failed to parse the OpenPGP signature of `{origin}`")]
    ParseSignature {
        /// The URL or path.
        origin: String,
        /// The cause.
        #[source]
        source: Box<pgp::errors::Error>,
    },
    /// No key in the keyring made a valid signature.
    #[error("Failed to verify `{origin}`: no valid signature by a key in `{}`", keyring.display())]
    BadSignature {
        /// The URL or path.
        origin: String,
        /// The keyring used.
        keyring: PathBuf,
    },
    /// Only a key that has expired signed it.
    #[error("Failed to verify `{origin}`: the key {key} of `{}` that signed it expired on {at}", keyring.display())]
    KeyExpired {
        /// The URL or path.
        origin: String,
        /// The keyring used.
        keyring: PathBuf,
        /// The key's fingerprint.
        key: String,
        /// When it expired.
        at: String,
    },
    /// Only a revoked key signed it.
    #[error("Failed to verify `{origin}`: the key {key} of `{}` that signed it is revoked", keyring.display())]
    KeyRevoked {
        /// The URL or path.
        origin: String,
        /// The keyring used.
        keyring: PathBuf,
        /// The key's fingerprint.
        key: String,
    },
    /// A request failed after all retries.
    #[error("Failed to fetch `{url}` after {attempts} attempt(s)")]
    Fetch {
        /// The URL.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with a status that is neither success nor retryable.
    #[error("Failed to fetch `{url}`: the server answered HTTP {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A required file does not exist on the mirror.
    #[error("Failed to fetch `{url}`: not found")]
    NotFound {
        /// The URL (the last one tried).
        url: String,
    },
    /// A body exceeded the size limit.
    #[error("Failed to fetch `{url}`: larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// Offline mode found no verified `InRelease` in the cache.
    #[error(
        "Failed to find a verified `InRelease` for `{origin}` in the cache (offline mode makes no requests)"
    )]
    OfflineMissing {
        /// `<uri> <suite>`.
        origin: String,
    },
    /// Offline mode found no cached index.
    #[error("Failed to find `{path}` of `{origin}` in the cache (offline mode makes no requests)")]
    OfflineIndexMissing {
        /// `<uri> <suite>`.
        origin: String,
        /// The index path.
        path: String,
    },
    /// The caller stopped the work (see [`crate::Progress::cancelled`]).
    #[error("The download was stopped: the build was cancelled")]
    Cancelled,
    /// Offline mode found no cached `.deb`.
    #[error(
        "Failed to find package `{name}` in the package cache (offline mode makes no requests)"
    )]
    OfflinePackageMissing {
        /// The package name.
        name: String,
    },
    /// A `Release` file is malformed.
    #[error("Failed to parse `{origin}` at line {line}: {message}")]
    ParseRelease {
        /// The URL or path.
        origin: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A `Release` is past its `Valid-Until`.
    #[error("Failed to accept `{origin}`: it expired at {valid_until} (Valid-Until)")]
    ReleaseExpired {
        /// The URL or path.
        origin: String,
        /// The expiry date.
        valid_until: String,
    },
    /// A `Release` is dated in the future.
    #[error("Failed to accept `{origin}`: its Date {date} is in the future")]
    ReleaseNotYetValid {
        /// The URL or path.
        origin: String,
        /// The date.
        date: String,
    },
    /// The `Release` lists no index for a component/architecture.
    #[error("Failed to find `{path}` in the SHA256 section of `{origin}`")]
    MissingIndexEntry {
        /// The `Release` URL.
        origin: String,
        /// `main/binary-amd64/Packages` (any compression).
        path: String,
    },
    /// Content does not match the digest it was promised to have.
    #[error(
        "Failed to verify `{url}`: expected SHA256 {expected} ({expected_size} bytes), got {actual} ({actual_size} bytes)"
    )]
    Checksum {
        /// The URL or path.
        url: String,
        /// Expected SHA256.
        expected: String,
        /// Expected size.
        expected_size: u64,
        /// Actual SHA256.
        actual: String,
        /// Actual size.
        actual_size: u64,
    },
    /// A compressed index could not be decompressed.
    #[error("Failed to decompress `{origin}`")]
    Decompress {
        /// The URL or path.
        origin: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `Packages` file is malformed.
    #[error("Failed to parse `{origin}` at line {line}: {message}")]
    ParseIndex {
        /// The URL or path.
        origin: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing the cache failed.
    #[error("Failed to access cache path `{}`", path.display())]
    Cache {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A requested package exists in no source.
    #[error("Failed to find package `{name}` in any configured source")]
    UnknownPackage {
        /// The package name.
        name: String,
    },
    /// A pinned version is not available.
    #[error("Failed to find version `{version}` of package `{name}`; available: {available}")]
    PinNotAvailable {
        /// The package name.
        name: String,
        /// The pinned version.
        version: String,
        /// Versions that are available, highest first.
        available: String,
    },
    /// No installable package satisfies a dependency.
    #[error("Failed to resolve `{chain}`: no version satisfies; available: {available}")]
    Unsatisfiable {
        /// From the requested package to the failing relation.
        chain: Chain,
        /// What is available under the names in the relation.
        available: String,
    },
    /// Two selected packages conflict.
    #[error(
        "Failed to install `{}` together with `{}`: `{}` {} `{}` (adding `{}` to a set holding `{}`)",
        .0.package, .0.other, .0.package, .0.kind, .0.relation, .0.added, .0.present
    )]
    Conflict(Box<Conflict>),
    /// The resolver went back to earlier choices [`MAX_BACKTRACKS`] times
    /// without finding a conflict-free set; `first` is the failure on
    /// apt's own (greedy) path.
    ///
    /// [`MAX_BACKTRACKS`]: crate::resolve::MAX_BACKTRACKS
    #[error(
        "Failed to resolve the packages after trying {backtracks} other alternatives; the first failure was: {first}"
    )]
    GaveUp {
        /// How many times it went back.
        backtracks: usize,
        /// The first failure met.
        first: Box<Error>,
    },
    /// A lock file could not be read or written.
    #[error("Failed to access lock file `{}`", path.display())]
    LockIo {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A lock file is not valid.
    #[error("Failed to parse lock file `{}`", path.display())]
    ParseLock {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A lock file has an unsupported format version.
    #[error("Failed to read lock file `{}`: format version {version} is not supported (expected 1)", path.display())]
    LockVersion {
        /// The path.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// A lock file could not be serialized.
    #[error("Failed to serialize the lock file")]
    SerializeLock {
        /// The cause.
        #[source]
        source: toml::ser::Error,
    },
    /// The lock names a package the indexes no longer have.
    #[error(
        "Failed to find locked package `{name}={version}` ({architecture}, sha256 {sha256}) in any configured source"
    )]
    LockedPackageMissing {
        /// The package name.
        name: String,
        /// The locked version.
        version: String,
        /// The locked architecture.
        architecture: String,
        /// The locked digest.
        sha256: String,
    },
    /// Resolution in locked mode needs a package the lock does not list.
    #[error(
        "Failed to resolve in locked mode: `{chain}` needs `{name}`, which is not in the lock file; resolve without `--locked` to update it"
    )]
    NotInLock {
        /// The package name.
        name: String,
        /// Why it is needed.
        chain: Chain,
    },
    /// The lock lists a package the request no longer needs.
    #[error(
        "Failed to resolve in locked mode: `{name}` is in the lock file but no longer needed; resolve without `--locked` to update it"
    )]
    StaleLockEntry {
        /// The package name.
        name: String,
    },
}
