//! The lock file `kiln.lock`: the exact packages each variant's resolution
//! produced.
//!
//! Owns the TOML format (one `[[variant]]` per variant, with its request
//! and one `[[variant.package]]` per package, sorted by name) and reading
//! and writing it: [`TreeLock`]. The only place in this crate that knows
//! the format; the resolver works on one variant's [`LockFile`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::resolve::InstallSet;
use crate::store;

/// The current lock format version.
pub const LOCK_VERSION: u32 = 1;

/// One locked package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// `amd64`, `all`, ….
    pub architecture: String,
    /// SHA256 of the `.deb`.
    pub sha256: String,
    /// Size of the `.deb`.
    pub size: u64,
    /// Path relative to the archive root.
    pub filename: String,
    /// Suite it was resolved from (informational; matching uses the digest).
    pub suite: String,
}

/// The contents of `kiln.lock`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockFile {
    /// Entries sorted by name.
    pub packages: Vec<LockedPackage>,
}

impl LockFile {
    /// The lock for a resolved set.
    #[must_use]
    pub fn from_install_set(set: &InstallSet) -> Self {
        let mut packages: Vec<LockedPackage> = set
            .packages
            .iter()
            .map(|p| LockedPackage {
                name: p.name.clone(),
                version: p.version.to_string(),
                architecture: p.architecture.clone(),
                sha256: p.sha256.clone(),
                size: p.size,
                filename: p.filename.clone(),
                suite: p.suite.clone(),
            })
            .collect();
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        Self { packages }
    }
}

/// The locks of every variant of a tree: the file `kiln.lock`.
///
/// Each variant that resolves packages has its own entry, keyed by variant
/// name, holding a [`LockFile`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeLock {
    /// Locks by variant name.
    pub variants: std::collections::BTreeMap<String, LockFile>,
    /// For each variant, an identifier of the request (base set, suite,
    /// architecture, packages) its lock was resolved for: a lock whose
    /// request differs no longer describes the configuration.
    pub requests: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TreeLockToml {
    version: u32,
    #[serde(default, rename = "variant")]
    variants: Vec<VariantToml>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantToml {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request: Option<String>,
    #[serde(default, rename = "package")]
    packages: Vec<LockedPackage>,
}

impl TreeLock {
    /// Parses `kiln.lock` text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let raw: TreeLockToml = toml::from_str(text).map_err(|source| Error::ParseLock {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        if raw.version != LOCK_VERSION {
            return Err(Error::LockVersion {
                path: path.to_owned(),
                version: raw.version,
            });
        }
        let mut requests = std::collections::BTreeMap::new();
        let variants = raw
            .variants
            .into_iter()
            .map(|v| {
                let mut packages = v.packages;
                packages.sort_by(|a, b| a.name.cmp(&b.name));
                if let Some(r) = v.request {
                    requests.insert(v.name.clone(), r);
                }
                (v.name, LockFile { packages })
            })
            .collect();
        Ok(Self { variants, requests })
    }

    /// Reads `path`; a missing file is an empty lock.
    pub fn read_or_default(path: &Path) -> Result<Self, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(Error::LockIo {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The TOML text, deterministic for equal locks (variants by name).
    pub fn to_toml(&self) -> Result<String, Error> {
        let raw = TreeLockToml {
            version: LOCK_VERSION,
            variants: self
                .variants
                .iter()
                .map(|(name, lock)| VariantToml {
                    name: name.clone(),
                    request: self.requests.get(name).cloned(),
                    packages: lock.packages.clone(),
                })
                .collect(),
        };
        let body = toml::to_string(&raw).map_err(|source| Error::SerializeLock { source })?;
        Ok(format!(
            "# kiln.lock: the exact packages of each variant; written by kiln, do not edit.\n{body}"
        ))
    }

    /// Writes `path` atomically.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        store::write_atomic(path, self.to_toml()?.as_bytes()).map_err(|e| match e {
            Error::Cache { path, source } => Error::LockIo { path, source },
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LockFile {
        LockFile {
            packages: vec![LockedPackage {
                name: "libc6".into(),
                version: "2.36-9+deb12u4".into(),
                architecture: "amd64".into(),
                sha256: "ab".repeat(32),
                size: 2_757_936,
                filename: "pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb".into(),
                suite: "bookworm".into(),
            }],
        }
    }

    #[test]
    fn format_is_stable() {
        let mut lock = TreeLock::default();
        lock.variants.insert("base-bookworm".into(), sample());
        lock.requests.insert("base-bookworm".into(), "0123".into());
        insta::assert_snapshot!(lock.to_toml().unwrap(), @r#"
        # kiln.lock: the exact packages of each variant; written by kiln, do not edit.
        version = 1

        [[variant]]
        name = "base-bookworm"
        request = "0123"

        [[variant.package]]
        name = "libc6"
        version = "2.36-9+deb12u4"
        architecture = "amd64"
        sha256 = "abababababababababababababababababababababababababababababababab"
        size = 2757936
        filename = "pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb"
        suite = "bookworm"
        "#);
    }

    #[test]
    fn tree_lock_round_trips_by_variant() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln.lock");
        assert_eq!(
            TreeLock::read_or_default(&path).unwrap(),
            TreeLock::default()
        );
        let mut lock = TreeLock::default();
        lock.variants.insert("base-trixie".into(), sample());
        lock.variants.insert("base-bookworm".into(), sample());
        lock.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.find("base-bookworm").unwrap() < text.find("base-trixie").unwrap());
        assert_eq!(TreeLock::read_or_default(&path).unwrap(), lock);
    }

    #[test]
    fn rejects_unknown_versions_and_fields() {
        let path = Path::new("kiln.lock");
        let err = TreeLock::parse("version = 2\n", path).unwrap_err();
        insta::assert_snapshot!(err, @"Failed to read lock file `kiln.lock`: format version 2 is not supported (expected 1)");
        let err = TreeLock::parse(
            "version = 1\n[[variant]]\nname = \"v\"\n[[variant.package]]\nname = \"x\"\n",
            path,
        )
        .unwrap_err();
        assert!(matches!(err, Error::ParseLock { .. }));
    }
}
