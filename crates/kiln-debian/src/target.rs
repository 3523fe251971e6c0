//! Giving the target root's apt the view the build had.
//!
//! After a bootstrap, the root's apt should find what kiln found: the same
//! sources (written as `/etc/apt/sources.list.d/debian.sources`) and the same
//! verified indexes (copied into `/var/lib/apt/lists` under apt's names), so
//! `apt-get install` in the image works without an `apt-get update` and
//! resolves against exactly the archive state the image was built from.
//! The image's cleanup step may remove the lists again.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::repository::PackageIndex;
use crate::source::AptSource;

/// apt's file name for a URI path: scheme dropped, `/` as `_`.
fn apt_name(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    rest.trim_end_matches('/')
        .replace('_', "%5f")
        .replace('/', "_")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Cache {
        path: path.to_owned(),
        source,
    }
}

/// Writes the sources and the verified lists into `root`.
///
/// A source's keyring is referenced where the root has it (the
/// `debian-archive-keyring` package puts Debian's at the default path);
/// otherwise it is copied to `/etc/apt/keyrings/`.
pub fn configure_apt(
    root: &Path,
    sources: &[AptSource],
    indexes: &[PackageIndex],
) -> Result<(), Error> {
    let mut text = String::from("# Written by kiln: the sources this image was built from.\n");
    for s in sources {
        let keyring = in_root_keyring(root, &s.keyring)?;
        let _ = write!(
            text,
            "\nTypes: deb\nURIs: {}\nSuites: {}\nComponents: {}\nSigned-By: {}\n",
            s.uris.join(" "),
            s.suites.join(" "),
            s.components.join(" "),
            keyring.display()
        );
    }
    let dir = root.join("etc/apt/sources.list.d");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join("debian.sources");
    crate::store::write_atomic(&path, text.as_bytes())?;

    let lists = root.join("var/lib/apt/lists");
    std::fs::create_dir_all(&lists).map_err(io(&lists))?;
    for index in indexes {
        let Some(files) = &index.files else { continue };
        let prefix = format!(
            "{}_dists_{}",
            apt_name(&index.uri),
            index.suite.replace('/', "_")
        );
        let release = lists.join(format!("{prefix}_{}", files.release_name));
        std::fs::copy(&files.release, &release).map_err(io(&release))?;
        let target = lists.join(format!("{prefix}_{}", files.index_path.replace('/', "_")));
        std::fs::copy(&files.index, &target).map_err(io(&target))?;
    }
    Ok(())
}

fn in_root_keyring(root: &Path, keyring: &Path) -> Result<PathBuf, Error> {
    let relative = keyring.strip_prefix("/").unwrap_or(keyring);
    if root.join(relative).is_file() {
        return Ok(keyring.to_path_buf());
    }
    let name = keyring
        .file_name()
        .map_or_else(|| "kiln.gpg".into(), |n| n.to_string_lossy().into_owned());
    let inside = Path::new("/etc/apt/keyrings").join(name);
    let dest = root.join(inside.strip_prefix("/").unwrap_or(&inside));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::copy(keyring, &dest).map_err(io(keyring))?;
    Ok(inside)
}

#[cfg(test)]
mod tests {
    use super::apt_name;

    #[test]
    fn apt_names_uris_as_apt_does() {
        assert_eq!(apt_name("http://deb.example/debian/"), "deb.example_debian");
        assert_eq!(
            apt_name("http://m.example/debian-security"),
            "m.example_debian-security"
        );
    }
}
