//! `cleanup`: what a finished image does not need (the list is in
//! [`crate::provision`]'s documentation).

use kiln_config::settings::Cleanup;
use rustix::fs::FileType;

use super::Log;
use crate::error::Error;
use crate::root::RootDir;

/// Logs removed entirely by `logs`.
const PACKAGE_LOGS: &[&str] = &["dpkg.log", "alternatives.log", "bootstrap.log"];

pub(super) fn cleanup(root: &RootDir, cleanup: &Cleanup, log: &Log<'_>) -> Result<(), Error> {
    let report = |what: &str, n: usize| {
        if n > 0 {
            log(&format!("{what}: removed {n} entries"));
        }
    };
    if cleanup.apt {
        let mut n = remove_children(root, "var/lib/apt/lists", &|name, _| {
            name == "lock" || name == "partial"
        })?;
        n += remove_children(root, "var/cache/apt", &|name, kind| {
            kind == FileType::Directory || !has_extension(name, "bin")
        })?;
        n += remove_children(root, "var/cache/apt/archives", &|name, kind| {
            kind == FileType::Directory || !has_extension(name, "deb")
        })?;
        report("apt", n);
    }
    if cleanup.docs {
        let mut n = 0;
        for (name, kind) in root.list("usr/share/doc")? {
            let rel = format!("usr/share/doc/{name}");
            if kind == FileType::Directory {
                n += remove_children(root, &rel, &|name, kind| {
                    name == "copyright" && kind != FileType::Directory
                })?;
            } else if kind != FileType::Symlink && root.remove_all(&rel)? {
                n += 1;
            }
        }
        report("docs", n);
    }
    if cleanup.man {
        let n = remove_children(root, "usr/share/man", &|_, _| false)?;
        report("man", n);
    }
    if cleanup.locales {
        let keep: Vec<String> = cleanup
            .keep_locales
            .iter()
            .flat_map(|l| locale_names(l))
            .collect();
        let n = remove_children(root, "usr/share/locale", &|name, kind| {
            kind != FileType::Directory || keep.iter().any(|k| k == name)
        })?;
        report("locales", n);
    }
    if cleanup.tmp {
        let mut n = remove_children(root, "tmp", &|_, _| false)?;
        n += remove_children(root, "var/tmp", &|_, _| false)?;
        report("tmp", n);
    }
    if cleanup.logs {
        let mut removed = remove_children(root, "var/log/apt", &|_, _| false)?;
        for name in PACKAGE_LOGS {
            if root.remove_all(&format!("var/log/{name}"))? {
                removed += 1;
            }
        }
        let truncated = truncate_logs(root, "var/log")?;
        report("logs", removed);
        if truncated > 0 {
            log(&format!("logs: truncated {truncated} files"));
        }
    }
    if cleanup.machine_id {
        if root.lstat("etc/machine-id")? != Some((FileType::RegularFile, 0)) {
            root.write("etc/machine-id", 0o444, (0, 0), b"")?;
            log("machine-id: emptied /etc/machine-id");
        }
        if root.remove_all("var/lib/dbus/machine-id")? {
            log("machine-id: removed /var/lib/dbus/machine-id");
        }
    }
    if root.remove_all("usr/sbin/policy-rc.d")? {
        log("removed /usr/sbin/policy-rc.d");
    }
    Ok(())
}

/// Removes every entry of the folder `rel` but those `keep` accepts;
/// returns how many were removed.
fn remove_children(
    root: &RootDir,
    rel: &str,
    keep: &dyn Fn(&str, FileType) -> bool,
) -> Result<usize, Error> {
    let mut n = 0;
    for (name, kind) in root.list(rel)? {
        if !keep(&name, kind) && root.remove_all(&format!("{rel}/{name}"))? {
            n += 1;
        }
    }
    Ok(n)
}

/// Truncates every non-empty regular file below `rel`; returns how many.
fn truncate_logs(root: &RootDir, rel: &str) -> Result<usize, Error> {
    let mut n = 0;
    for (name, kind) in root.list(rel)? {
        let child = format!("{rel}/{name}");
        match kind {
            FileType::Directory => n += truncate_logs(root, &child)?,
            FileType::RegularFile if root.lstat(&child)?.is_some_and(|(_, size)| size > 0) => {
                root.truncate(&child)?;
                n += 1;
            }
            _ => {}
        }
    }
    Ok(n)
}

/// The `/usr/share/locale` folders a kept locale keeps: `de_DE.UTF-8@euro`
/// keeps itself, `de_DE.UTF-8`, `de_DE@euro`, `de_DE` and `de`.
fn locale_names(locale: &str) -> Vec<String> {
    let (base, modifier) = match locale.split_once('@') {
        Some((b, m)) => (b, Some(m)),
        None => (locale, None),
    };
    let without_codeset = base.split_once('.').map_or(base, |(l, _)| l);
    let language = without_codeset
        .split_once('_')
        .map_or(without_codeset, |(l, _)| l);
    let mut out = vec![locale.to_owned(), base.to_owned()];
    if let Some(m) = modifier {
        out.push(format!("{without_codeset}@{m}"));
    }
    out.push(without_codeset.to_owned());
    out.push(language.to_owned());
    out.dedup();
    out
}

/// Whether `name` ends in `.<extension>` (as apt writes them, lower case).
fn has_extension(name: &str, extension: &str) -> bool {
    std::path::Path::new(name)
        .extension()
        .is_some_and(|e| e == extension)
}
