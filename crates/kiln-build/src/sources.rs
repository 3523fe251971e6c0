//! From the tree's package sources to the apt sources of one bootstrap.
//!
//! A variant `from = "debian:trixie"` uses the sources whose suites are
//! `trixie` or `trixie-*` (updates, security). When no source lists the
//! suite — the common case with the host's sources, which name only the
//! host's own release — the sources of the first suite are used with that
//! suite's name swapped for the variant's: `bookworm`, `bookworm-updates`
//! and `bookworm-security` become `trixie`, `trixie-updates` and
//! `trixie-security` on the same mirrors. Backports suites (`*-backports`)
//! are not carried over: apt would not choose from them by default anyway.

use std::path::{Path, PathBuf};

use kiln_config::{Keyring, PackageSource};
use kiln_debian::AptSource;

/// The suite family of a suite name: `bookworm` for `bookworm-updates`.
fn family(suite: &str) -> &str {
    suite.split('-').next().unwrap_or(suite)
}

/// The apt sources for `suite`; inline keys, and keyrings of the tree
/// (relative paths, read beneath `tree_root`), are written below `key_dir`.
pub fn for_suite(
    sources: &[PackageSource],
    suite: &str,
    key_dir: &Path,
    tree_root: &Path,
) -> std::io::Result<Vec<AptSource>> {
    let direct: Vec<AptSource> = sources
        .iter()
        .filter_map(|s| {
            let suites: Vec<String> = s
                .suites
                .iter()
                .filter(|x| family(x) == suite)
                .cloned()
                .collect();
            (!suites.is_empty()).then(|| to_apt(s, suites, key_dir, tree_root))
        })
        .collect::<std::io::Result<_>>()?;
    if !direct.is_empty() {
        return Ok(direct);
    }
    let Some(base) = sources
        .iter()
        .find_map(|s| s.suites.first())
        .map(|s| family(s).to_string())
    else {
        return Ok(Vec::new());
    };
    sources
        .iter()
        .filter_map(|s| {
            let suites: Vec<String> = s
                .suites
                .iter()
                .filter(|x| family(x) == base && !x.ends_with("-backports"))
                .map(|x| format!("{suite}{}", &x[base.len()..]))
                .collect();
            (!suites.is_empty()).then(|| to_apt(s, suites, key_dir, tree_root))
        })
        .collect()
}

fn to_apt(
    s: &PackageSource,
    suites: Vec<String>,
    key_dir: &Path,
    tree_root: &Path,
) -> std::io::Result<AptSource> {
    let keyring = match &s.keyring {
        Keyring::File(p) if p.is_relative() => tree_key(tree_root, p, key_dir)?,
        Keyring::File(p) => p.clone(),
        Keyring::Inline(armored) => inline_key(armored, key_dir)?,
    };
    Ok(AptSource {
        uris: s.uris.clone(),
        suites,
        components: if s.components.is_empty() {
            vec!["main".to_string()]
        } else {
            s.components.clone()
        },
        keyring,
    })
}

/// Reads a keyring file of the tree beneath its root (a link out of the
/// tree is refused) and writes it to a file named by its digest (once), so
/// what is verified against is what was read.
fn tree_key(tree_root: &Path, rel: &Path, key_dir: &Path) -> std::io::Result<PathBuf> {
    let bytes = kiln_config::TreeRoot::open_root(tree_root)?
        .read(rel)
        .map_err(|e| std::io::Error::other(format!("`{}`: {e}", tree_root.join(rel).display())))?;
    let path = key_dir.join(format!("{}.key", blake3::hash(&bytes).to_hex()));
    if !path.exists() {
        kiln_store::write_atomic(&path, &bytes, 0o644)?;
    }
    Ok(path)
}

/// Writes an inline key to a file named by its digest (once) and returns it.
fn inline_key(armored: &str, key_dir: &Path) -> std::io::Result<PathBuf> {
    let path = key_dir.join(format!("{}.asc", blake3::hash(armored.as_bytes()).to_hex()));
    if !path.exists() {
        kiln_store::write_atomic(&path, armored.as_bytes(), 0o644)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_config::Distribution;

    fn src(uri: &str, suites: &[&str]) -> PackageSource {
        PackageSource {
            distribution: Distribution::Debian,
            uris: vec![uri.into()],
            suites: suites.iter().map(|s| (*s).to_string()).collect(),
            components: vec!["main".into()],
            keyring: Keyring::File("/k.gpg".into()),
            architectures: vec![],
            origin: None,
        }
    }

    #[test]
    fn same_suite_is_used_directly_and_others_are_derived() {
        let host = [
            src(
                "http://m/debian",
                &["bookworm", "bookworm-updates", "bookworm-backports"],
            ),
            src("http://m/security", &["bookworm-security"]),
        ];
        let dir = tempfile::tempdir().expect("tmp");
        let b = for_suite(&host, "bookworm", dir.path(), dir.path()).expect("ok");
        assert_eq!(
            b[0].suites,
            ["bookworm", "bookworm-updates", "bookworm-backports"]
        );
        assert_eq!(b[1].suites, ["bookworm-security"]);
        let t = for_suite(&host, "trixie", dir.path(), dir.path()).expect("ok");
        assert_eq!(t[0].suites, ["trixie", "trixie-updates"]);
        assert_eq!(t[0].uris, ["http://m/debian"]);
        assert_eq!(t[1].suites, ["trixie-security"]);
    }
}
