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
use crate::resolve::InstallSet;
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

/// The files of a freshly bootstrapped root that no package ships, as
/// mmdebstrap leaves them, each written only where the root has none:
/// `/etc/fstab` as debootstrap and mmdebstrap write it, `/etc/hostname` as
/// `localhost` (a `hostname` setting replaces it later) and an empty
/// `/etc/resolv.conf` (the resolver then asks 127.0.0.1). mmdebstrap copies
/// the last two from the build host; kiln does not, so that an image
/// neither depends on nor reveals the machine that built it (its name, its
/// DNS servers) and builds bit for bit alike everywhere.
pub fn write_base_files(root: &Path) -> Result<(), Error> {
    const FILES: [(&str, &str); 3] = [
        ("etc/fstab", "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"),
        ("etc/hostname", "localhost\n"),
        ("etc/resolv.conf", ""),
    ];
    for (rel, content) in FILES {
        let path = root.join(rel);
        if std::fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        crate::store::write_atomic(&path, content.as_bytes())?;
    }
    Ok(())
}

/// apt's record of which packages were installed only as dependencies.
const EXTENDED_STATES: &str = "var/lib/apt/extended_states";

/// Records in the root's `/var/lib/apt/extended_states` which packages of
/// `set` apt should treat as automatically installed, as apt itself does
/// when it installs them: a package installed now (not in
/// `installed_before`) that was not asked for is marked, one that was asked
/// for is manual (its mark removed, as `apt-mark manual` does), and one the
/// root had already keeps the mark it had. `apt autoremove` then removes
/// dependencies nothing needs any more. `native_arch` is what apt writes
/// for `Architecture: all` packages. Stanzas of packages outside `set`
/// (installed by a script's apt, say) are kept as they were.
pub fn record_auto_installed(
    root: &Path,
    set: &InstallSet,
    installed_before: &std::collections::BTreeSet<String>,
    native_arch: &str,
) -> Result<(), Error> {
    let path = root.join(EXTENDED_STATES);
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(&path)(e)),
    };
    // (package, architecture) -> the stanza's text.
    let mut stanzas = std::collections::BTreeMap::new();
    for stanza in old.split("\n\n").map(str::trim).filter(|s| !s.is_empty()) {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let Some(package) = field("Package") else {
            continue;
        };
        let arch = field("Architecture").unwrap_or_else(|| native_arch.to_string());
        stanzas.insert((package, arch), format!("{stanza}\n"));
    }
    for p in &set.packages {
        let arch = if p.architecture == "all" {
            native_arch
        } else {
            p.architecture.as_str()
        };
        let key = (p.name.clone(), arch.to_string());
        if p.manual {
            stanzas.remove(&key);
        } else if !installed_before.contains(&p.name) {
            let text = format!(
                "Package: {}\nArchitecture: {arch}\nAuto-Installed: 1\n",
                p.name
            );
            stanzas.insert(key, text);
        }
    }
    if stanzas.is_empty() && old.is_empty() {
        return Ok(());
    }
    let text: Vec<&str> = stanzas.values().map(String::as_str).collect();
    let mut text = text.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    crate::store::write_atomic(&path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::apt_name;
    use crate::resolve::{InstallSet, ResolvedPackage};
    use std::collections::BTreeSet;

    fn package(name: &str, arch: &str, manual: bool) -> ResolvedPackage {
        ResolvedPackage {
            name: name.to_owned(),
            version: "1".parse().unwrap(),
            architecture: arch.to_owned(),
            sha256: String::new(),
            size: 0,
            filename: String::new(),
            uri: String::new(),
            suite: String::new(),
            essential: false,
            manual,
        }
    }

    #[test]
    fn auto_installed_marks_follow_apt() {
        let dir = tempfile::tempdir().unwrap();
        let states = dir.path().join(super::EXTENDED_STATES);
        // A bootstrap: dependencies marked (arch `all` as the native one).
        let base = InstallSet {
            packages: vec![
                package("apt", "amd64", true),
                package("libc6", "amd64", false),
                package("tzdata", "all", false),
            ],
        };
        super::record_auto_installed(dir.path(), &base, &BTreeSet::new(), "amd64").unwrap();
        assert_eq!(
            std::fs::read_to_string(&states).unwrap(),
            "Package: libc6\nArchitecture: amd64\nAuto-Installed: 1\n\n\
             Package: tzdata\nArchitecture: amd64\nAuto-Installed: 1\n\n",
            "apt's own layout: every stanza ends in a blank line"
        );
        // A child asks for tzdata (now manual), pulls in libfoo (auto) and
        // finds libc6 installed (its mark kept); a script's stanza stays.
        let mut text = std::fs::read_to_string(&states).unwrap();
        text.push_str("\nPackage: extra\nArchitecture: amd64\nAuto-Installed: 1\n");
        std::fs::write(&states, text).unwrap();
        let child = InstallSet {
            packages: vec![
                package("libc6", "amd64", false),
                package("libfoo", "amd64", false),
                package("tzdata", "all", true),
            ],
        };
        let before: BTreeSet<String> = ["apt", "libc6", "tzdata", "extra"].map(String::from).into();
        super::record_auto_installed(dir.path(), &child, &before, "amd64").unwrap();
        assert_eq!(
            std::fs::read_to_string(&states).unwrap(),
            "Package: extra\nArchitecture: amd64\nAuto-Installed: 1\n\n\
             Package: libc6\nArchitecture: amd64\nAuto-Installed: 1\n\n\
             Package: libfoo\nArchitecture: amd64\nAuto-Installed: 1\n\n"
        );
    }

    #[test]
    fn apt_names_uris_as_apt_does() {
        assert_eq!(apt_name("http://deb.example/debian/"), "deb.example_debian");
        assert_eq!(
            apt_name("http://m.example/debian-security"),
            "m.example_debian-security"
        );
    }
}
