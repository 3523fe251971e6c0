//! The dpkg database (`/var/lib/dpkg`) as dpkg itself writes it after
//! `dpkg --unpack`: `status` with every package `install ok unpacked`,
//! `info/<pkg>.{list,md5sums,conffiles,preinst,…}`, `triggers/File` and
//! `triggers/<name>` for the packages' interests, and the small files a
//! database needs (`info/format`, `available`, `diversions`,
//! `statoverride`, `updates/`).
//!
//! Conffiles are recorded with the MD5 of the file unpacked in place, the
//! hash a configured system has for them; `dpkg --configure` keeps a
//! conffile that has no `<path>.dpkg-new` as it is, so the configured
//! database is the one dpkg would have written. A conffile that found a
//! file in its way (in a parent image) was unpacked as `.dpkg-new` and is
//! recorded as `newconffile`, as `dpkg --unpack` leaves it, for dpkg's
//! usual conffile logic (see [`crate::unpack`]). Unpacking every conffile
//! as `.dpkg-new` would leave them missing while the first maintainer
//! scripts run: `passwd`'s postinst then ran `pwconv` without `login`'s
//! `/etc/login.defs` and wrote `/etc/shadow` without password ageing.
//!
//! This module does not run anything in the root.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::control::{self, Stanza};
use crate::deb::Deb;
use crate::error::Error;

/// Where the database lives, relative to the root.
pub(crate) const ADMIN_DIR: &str = "var/lib/dpkg";

/// A package about to be recorded: its `.deb` and the paths it installed.
#[derive(Debug)]
pub(crate) struct NewPackage<'a> {
    pub deb: &'a Deb,
    pub files: &'a [String],
    /// Each conffile with its MD5 or `newconffile`.
    pub conffiles: &'a [(String, String)],
}

/// Reads and parses `status`.
pub(crate) fn read_status(path: &Path) -> Result<Vec<Stanza>, Error> {
    let text = fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    control::parse_all(&text).map_err(|reason| Error::InvalidDatabase {
        path: path.to_owned(),
        reason,
    })
}

/// A package a dpkg `status` file lists as installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: String,
    /// `Architecture` (empty if the stanza has none).
    pub architecture: String,
    /// The source package's name, when it differs from the package's.
    pub source: Option<String>,
    /// `Installed-Size`, in KiB (0 if absent).
    pub installed_size_kib: u64,
}

/// The installed packages of a `status` file's text, sorted by name and
/// architecture: those whose `Status` ends in `installed` (whatever the
/// selection: `install`, `hold`, `deinstall`), as `dpkg-query` reports
/// them; removed (`config-files`), half-installed or unpacked packages are
/// left out. Errs with the reason if the text is not a control file.
pub fn installed_packages(status: &str) -> Result<Vec<InstalledPackage>, String> {
    let mut out = Vec::new();
    for stanza in control::parse_all(status)? {
        let installed = stanza
            .get("Status")
            .and_then(|s| s.split_whitespace().nth(2))
            == Some("installed");
        let (true, Some(name), Some(version)) =
            (installed, stanza.get("Package"), stanza.get("Version"))
        else {
            continue;
        };
        let source = stanza
            .get("Source")
            .and_then(|s| s.split_whitespace().next())
            .filter(|s| *s != name)
            .map(str::to_owned);
        out.push(InstalledPackage {
            name: name.to_owned(),
            version: version.to_owned(),
            architecture: stanza.get("Architecture").unwrap_or_default().to_owned(),
            source,
            installed_size_kib: stanza
                .get("Installed-Size")
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
        });
    }
    out.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    Ok(out)
}

/// The status stanza of a package just unpacked.
pub(crate) fn unpacked_stanza(deb: &Deb, conffiles: &[(String, String)]) -> Stanza {
    let mut stanza = deb.control.clone();
    stanza.set("Status", "install ok unpacked");
    if conffiles.is_empty() {
        stanza.remove("Conffiles");
    } else {
        let mut value = String::new();
        for (path, hash) in conffiles {
            let _ = write!(value, "\n {path} {hash}");
        }
        stanza.set("Conffiles", value);
    }
    stanza
}

/// The status file's text: stanzas sorted by package and architecture,
/// separated by blank lines.
pub(crate) fn status_text(stanzas: &[Stanza]) -> String {
    let mut sorted: Vec<&Stanza> = stanzas.iter().collect();
    sorted.sort_by(|a, b| {
        (a.get("Package"), a.get("Architecture")).cmp(&(b.get("Package"), b.get("Architecture")))
    });
    let mut out = String::new();
    for stanza in sorted {
        out.push_str(&stanza.to_status_text());
        out.push('\n');
    }
    out
}

/// The text of `info/<pkg>.list`.
pub(crate) fn list_text(files: &[String]) -> String {
    let mut out = String::with_capacity(files.iter().map(|f| f.len() + 1).sum());
    for file in files {
        out.push_str(file);
        out.push('\n');
    }
    out
}

/// A package's trigger interests from its `triggers` control file:
/// (trigger name or path, awaits).
pub(crate) fn interests(deb: &Deb) -> Vec<(String, bool)> {
    let Some(data) = deb.control_file("triggers") else {
        return Vec::new();
    };
    String::from_utf8_lossy(data)
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            let directive = words.next()?;
            let name = words.next()?.to_owned();
            match directive {
                "interest" | "interest-await" => Some((name, true)),
                "interest-noawait" => Some((name, false)),
                _ => None,
            }
        })
        .collect()
}

/// Writes the database entries of `new` into `root`'s database, keeping
/// the stanzas of `existing` (a parent image's packages).
pub(crate) fn write(
    root: &Path,
    arch: &str,
    existing: Vec<Stanza>,
    new: &[NewPackage<'_>],
) -> Result<(), Error> {
    let admin = root.join(ADMIN_DIR);
    let info = admin.join("info");
    for dir in [
        &admin,
        &info,
        &admin.join("updates"),
        &admin.join("triggers"),
    ] {
        fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    let arch_line = format!("{arch}\n");
    for (name, content, mode) in [
        ("info/format", "1\n", 0o644),
        // The native architecture, as mmdebstrap leaves it.
        ("arch", arch_line.as_str(), 0o644),
        ("available", "", 0o644),
        ("diversions", "", 0o644),
        ("statoverride", "", 0o644),
        ("triggers/Lock", "", 0o600),
    ] {
        let path = admin.join(name);
        if !path.exists() {
            write_file(&path, content.as_bytes(), mode)?;
        }
    }

    // info/<pkg>.*: every control member but `control`.
    for package in new {
        let base = package.deb.info_name();
        write_file(
            &info.join(format!("{base}.list")),
            list_text(package.files).as_bytes(),
            0o644,
        )?;
        for file in &package.deb.control_files {
            if file.name == "control" {
                continue;
            }
            let mode = if file.mode & 0o111 == 0 { 0o644 } else { 0o755 };
            write_file(
                &info.join(format!("{base}.{}", file.name)),
                &file.data,
                mode,
            )?;
        }
    }

    write_triggers(&admin, new)?;

    // status: existing stanzas, then the new ones.
    let status = admin.join("status");
    let mut stanzas = existing;
    stanzas.extend(new.iter().map(|p| unpacked_stanza(p.deb, p.conffiles)));
    if status.exists() {
        let old = admin.join("status-old");
        fs::copy(&status, &old).map_err(|e| Error::io("write", &old, e))?;
    }
    let tmp = admin.join("status-new");
    write_file(&tmp, status_text(&stanzas).as_bytes(), 0o644)?;
    fs::rename(&tmp, &status).map_err(|e| Error::io("write", &status, e))?;
    Ok(())
}

/// `triggers/File` (path interests), `triggers/<name>` (named interests)
/// and `triggers/Unincorp`: the file triggers that the new packages' files
/// activate, which `dpkg --unpack` would have activated; dpkg incorporates
/// them on its next run.
fn write_triggers(admin: &Path, new: &[NewPackage<'_>]) -> Result<(), Error> {
    let triggers = admin.join("triggers");
    let file_path = triggers.join("File");
    let mut file_lines = match fs::read_to_string(&file_path) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("read", &file_path, e)),
    };
    let mut named: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in new {
        for (name, awaits) in interests(package.deb) {
            let who = if awaits {
                package.deb.info_name()
            } else {
                format!("{}/noawait", package.deb.info_name())
            };
            if name.starts_with('/') {
                file_lines.push(format!("{name} {who}"));
            } else {
                named.entry(name).or_default().push(who);
            }
        }
    }
    if !file_lines.is_empty() {
        write_file(&file_path, list_text(&file_lines).as_bytes(), 0o644)?;
    }
    for (name, who) in named {
        let path = triggers.join(&name);
        if name.contains('/') || name == "File" || name == "Unincorp" || name == "Lock" {
            continue;
        }
        let mut lines: Vec<String> = match fs::read_to_string(&path) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        lines.extend(who);
        write_file(&path, list_text(&lines).as_bytes(), 0o644)?;
    }

    // Activate the path interests the new files fall under.
    let interest_paths: BTreeSet<&str> = file_lines
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut active = BTreeSet::new();
    for package in new {
        for file in package.files {
            for interest in &interest_paths {
                if file == interest
                    || file
                        .strip_prefix(interest)
                        .is_some_and(|rest| rest.starts_with('/'))
                {
                    active.insert(*interest);
                }
            }
        }
    }
    let unincorp = triggers.join("Unincorp");
    let mut lines: Vec<String> = match fs::read_to_string(&unincorp) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("read", &unincorp, e)),
    };
    lines.extend(active.into_iter().map(|path| format!("{path} -")));
    write_file(&unincorp, list_text(&lines).as_bytes(), 0o644)?;
    Ok(())
}

fn write_file(path: &PathBuf, data: &[u8], mode: u32) -> Result<(), Error> {
    fs::write(path, data).map_err(|e| Error::io("write", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_format() {
        let files = ["/.", "/usr", "/usr/bin", "/usr/bin/hello"].map(str::to_owned);
        assert_eq!(list_text(&files), "/.\n/usr\n/usr/bin\n/usr/bin/hello\n");
    }

    #[test]
    fn status_sorted_and_parsable() {
        let b = Stanza::parse("Package: b\nVersion: 1\nStatus: install ok installed\n").unwrap();
        let a = Stanza::parse(
            "Version: 2\nPackage: a\nStatus: install ok unpacked\nArchitecture: all\n",
        )
        .unwrap();
        let text = status_text(&[b, a]);
        assert_eq!(
            text,
            "Package: a\nStatus: install ok unpacked\nArchitecture: all\nVersion: 2\n\n\
             Package: b\nStatus: install ok installed\nVersion: 1\n\n"
        );
        let parsed = control::parse_all(&text).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].get("Status"), Some("install ok installed"));
    }

    #[test]
    fn installed_packages_are_those_dpkg_query_reports() {
        let status = "Package: a\nStatus: install ok installed\nVersion: 1:2.0-1\nArchitecture: amd64\nInstalled-Size: 12\nSource: asrc (1)\nDescription: x\n more\n\n\
                      Package: b\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: all\n\n\
                      Package: c\nStatus: hold ok installed\nVersion: 3\nArchitecture: all\nSource: c\n\n\
                      Package: d\nStatus: install ok unpacked\nVersion: 1\n";
        let p = super::installed_packages(status).unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(p[0].source.as_deref(), Some("asrc"));
        assert_eq!(p[0].installed_size_kib, 12);
        assert_eq!(
            p[1].source, None,
            "a source named as the package is no other source"
        );
        assert!(super::installed_packages("Package a\n").is_err());
    }
}
