//! Hostile and tricky packages: nothing may be written outside the root,
//! and refusals name the package and the entry.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_dpkg::{AssembleOptions, Error, Report};

use crate::archive::{Entry, deb, write_deb};

/// A directory on the host that a naive unpacker would write into.
struct HostTarget(PathBuf);

impl HostTarget {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("kiln-dpkg-{}-{tag}", std::process::id()));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn assert_untouched(&self) {
        let entries: Vec<_> = fs::read_dir(&self.0).unwrap().collect();
        assert!(entries.is_empty(), "{} was written to", self.0.display());
    }
}

impl Drop for HostTarget {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Bootstraps the packages into `<tmp>/root`; returns the temporary
/// directory, the root and the result.
fn assemble(
    packages: &[(&str, Vec<u8>)],
    merged_usr: bool,
) -> (tempfile::TempDir, PathBuf, Result<Report, Error>) {
    let dir = tempfile::tempdir().unwrap();
    let debs: Vec<_> = packages
        .iter()
        .map(|(name, bytes)| write_deb(dir.path(), name, bytes))
        .collect();
    let root = dir.path().join("root");
    let opts = AssembleOptions {
        merged_usr,
        ..AssembleOptions::default()
    };
    let result = kiln_dpkg::bootstrap(&root, &debs, &opts, &|_| {});
    (dir, root, result)
}

fn error_text(result: Result<Report, Error>) -> String {
    let error = result.expect_err("the package must be refused");
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[test]
fn refuses_parent_components() {
    if kiln_testkit::require::lacks_root("assembling a root") {
        return;
    }
    let name = format!("evil-{}", std::process::id());
    let entry = format!("../{name}");
    let data = deb(
        "evil",
        &[],
        &[Entry::Dir("./"), Entry::File(&entry, b"owned")],
    );
    let (dir, _root, result) = assemble(&[("evil", data)], false);
    assert_eq!(
        error_text(result),
        format!("Failed to unpack `../{name}` of package `evil`: `..` components are not allowed")
    );
    assert!(!dir.path().join(&name).exists());

    let data = deb(
        "evil",
        &[],
        &[
            Entry::Dir("./"),
            Entry::Dir("./etc/"),
            Entry::File("./etc/../../x", b"owned"),
        ],
    );
    let (dir, _root, result) = assemble(&[("evil", data)], false);
    assert_eq!(
        error_text(result),
        "Failed to unpack `./etc/../../x` of package `evil`: `..` components are not allowed"
    );
    assert!(!dir.path().join("x").exists());
}

#[test]
fn refuses_absolute_paths() {
    if kiln_testkit::require::lacks_root("assembling a root") {
        return;
    }
    let target = HostTarget::new("absolute");
    let entry = format!("{}/evil", target.0.display());
    let data = deb(
        "evil",
        &[],
        &[Entry::Dir("./"), Entry::File(&entry, b"owned")],
    );
    let (_dir, _root, result) = assemble(&[("evil", data)], false);
    assert_eq!(
        error_text(result),
        format!("Failed to unpack `{entry}` of package `evil`: absolute paths are not allowed")
    );
    target.assert_untouched();
}

/// `link` is a symlink to the host directory (absolute or with `..`s);
/// writing through it must stay in the root. The root has no such
/// directory, so the entry fails, naming the package and the entry.
#[test]
fn symlinks_in_the_root_cannot_lead_out() {
    if kiln_testkit::require::lacks_root("assembling a root") {
        return;
    }
    let target = HostTarget::new("symlink");
    let absolute = target.0.display().to_string();
    let relative = format!("../../../../../../..{absolute}");
    for link in [absolute.as_str(), relative.as_str(), "/", "../../../../.."] {
        let evil = if link.ends_with('/') || link.ends_with("..") {
            format!("./etc/link/{}/evil", &absolute[1..])
        } else {
            "./etc/link/evil".to_owned()
        };
        let data = deb(
            "evil",
            &[],
            &[
                Entry::Dir("./"),
                Entry::Dir("./etc/"),
                Entry::Symlink("./etc/link", link),
                Entry::File(&evil, b"owned"),
            ],
        );
        let (_dir, _root, result) = assemble(&[("evil", data)], false);
        assert_eq!(
            error_text(result),
            format!(
                "Failed to unpack `{evil}` of package `evil`: No such file or directory (os error 2)"
            ),
            "link to {link}"
        );
        target.assert_untouched();
    }
}

/// When the symlink's target exists inside the root, the entry lands
/// there, as it would inside a chroot: still nothing on the host.
#[test]
fn symlinks_resolve_inside_the_root() {
    if kiln_testkit::require::lacks_root("assembling a root") {
        return;
    }
    let target = HostTarget::new("confined");
    let inside = format!(".{}/", target.0.display());
    let relative = format!("../../../..{}", target.0.display());
    let mut entries = vec![Entry::Dir("./"), Entry::Dir("./etc/")];
    // The target's parents, then the target itself, inside the root.
    let mut partial = String::from(".");
    for component in target.0.iter().skip(1) {
        partial.push('/');
        partial.push_str(component.to_str().unwrap());
        entries.push(Entry::Dir(Box::leak(
            format!("{partial}/").into_boxed_str(),
        )));
    }
    let absolute = target.0.display().to_string();
    entries.extend([
        Entry::Symlink("./etc/abs", &absolute),
        Entry::File("./etc/abs/one", b"1"),
        Entry::Symlink("./etc/up", &relative),
        Entry::File("./etc/up/two", b"2"),
    ]);
    let data = deb("confined", &[], &entries);
    let (_dir, root, result) = assemble(&[("confined", data)], false);
    // It unpacks; the set has no dpkg to configure it with.
    assert!(matches!(result, Err(Error::NoDpkg { .. })), "{result:?}");
    let inside = root.join(&inside[2..]);
    assert_eq!(fs::read(inside.join("one")).unwrap(), b"1");
    assert_eq!(fs::read(inside.join("two")).unwrap(), b"2");
    target.assert_untouched();
}

#[test]
fn final_symlinks_are_replaced_not_followed() {
    if kiln_testkit::require::lacks_root("assembling a root") {
        return;
    }
    let target = HostTarget::new("final");
    let victim = target.0.join("victim");
    let victim_text = victim.display().to_string();
    let first = deb(
        "first",
        &[],
        &[
            Entry::Dir("./"),
            Entry::Dir("./etc/"),
            Entry::Symlink("./etc/target", &victim_text),
            Entry::Symlink("./etc/hostdir", "/etc"),
        ],
    );
    let second = deb(
        "second",
        &[],
        &[
            Entry::Dir("./"),
            Entry::Dir("./etc/"),
            Entry::File("./etc/target", b"replaced"),
        ],
    );
    let (_dir, root, result) = assemble(&[("first", first), ("second", second)], false);
    // Unpacked in parallel, the order of the two is not fixed: either the
    // file replaced the symlink or the symlink the file; never through it.
    assert!(matches!(result, Err(Error::NoDpkg { .. })), "{result:?}");
    let meta = fs::symlink_metadata(root.join("etc/target")).unwrap();
    assert!(meta.is_file() || meta.file_type().is_symlink());
    target.assert_untouched();

    // A hard link to a host file through a symlink in the root.
    let link = deb(
        "link",
        &[],
        &[
            Entry::Dir("./"),
            Entry::Dir("./etc/"),
            Entry::Symlink("./etc/hostdir", "/etc"),
            Entry::HardLink("./etc/passwd-link", "./etc/hostdir/passwd"),
        ],
    );
    let (_dir, root, result) = assemble(&[("link", link)], false);
    assert_eq!(
        error_text(result),
        "Failed to unpack `./etc/passwd-link` of package `link`: No such file or directory (os error 2)"
    );
    assert!(!root.join("etc/passwd-link").exists());

    let link = deb(
        "link",
        &[],
        &[
            Entry::Dir("./"),
            Entry::HardLink("./passwd", "../../../../etc/passwd"),
        ],
    );
    let (_dir, _root, result) = assemble(&[("link", link)], false);
    assert_eq!(
        error_text(result),
        "Failed to unpack `./passwd` of package `link`: `..` components are not allowed"
    );
}

/// With merged `/usr`, `./bin/...` lands in `usr/bin` and is listed as
/// `/bin/...`; conffiles are installed in place with their MD5 recorded.
#[test]
fn merged_usr_lists_and_conffiles() {
    if kiln_testkit::require::lacks_root("assembling a root") {
        return;
    }
    let data = deb(
        "hello",
        &[
            ("conffiles", "/etc/hello.conf\n"),
            ("md5sums", "x  bin/hello\n"),
        ],
        &[
            Entry::Dir("./"),
            Entry::Dir("./bin/"),
            Entry::File("./bin/hello", b"#!/bin/sh\n"),
            Entry::HardLink("./bin/hi", "./bin/hello"),
            Entry::Dir("./etc/"),
            Entry::File("./etc/hello.conf", b"greeting=hi\n"),
            Entry::Dir("./usr/"),
            Entry::Dir("./usr/share/"),
        ],
    );
    let (_dir, root, result) = assemble(&[("hello", data)], true);
    assert!(matches!(result, Err(Error::NoDpkg { .. })), "{result:?}");
    assert!(
        fs::symlink_metadata(root.join("bin"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read(root.join("usr/bin/hello")).unwrap(),
        b"#!/bin/sh\n"
    );
    assert!(fs::metadata(root.join("usr/bin/hi")).unwrap().is_file());
    assert_eq!(
        fs::read(root.join("etc/hello.conf")).unwrap(),
        b"greeting=hi\n"
    );
    assert!(!root.join("etc/hello.conf.dpkg-new").exists());
    let info = root.join("var/lib/dpkg/info");
    assert_eq!(
        fs::read_to_string(info.join("hello.list")).unwrap(),
        "/.\n/bin\n/bin/hello\n/bin/hi\n/etc\n/etc/hello.conf\n/usr\n/usr/share\n"
    );
    assert_eq!(
        fs::read_to_string(info.join("hello.md5sums")).unwrap(),
        "x  bin/hello\n"
    );
    assert!(info.join("hello.conffiles").is_file());
    assert!(!info.join("hello.control").exists());
    let status = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert_eq!(
        status,
        "Package: hello\nStatus: install ok unpacked\nMaintainer: Test <test@example.invalid>\n\
         Architecture: all\nVersion: 1.0\nConffiles:\n /etc/hello.conf 196bdbd60cbe13cc013f592941f52f52\n\
         Description: test package\n\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("var/lib/dpkg/info/format")).unwrap(),
        "1\n"
    );
    assert_mode(&root, "", 0o755);
}

fn assert_mode(root: &Path, rel: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(root.join(rel)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, mode, "{rel}");
}
