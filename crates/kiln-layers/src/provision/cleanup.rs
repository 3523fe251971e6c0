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
    if cleanup.ssh_host_keys {
        ssh_host_keys(root, log)?;
    }
    // apt's binary caches (`pkgcache.bin`, `srcpkgcache.bin`): made anew
    // by the next apt command, never the same bytes twice; mmdebstrap
    // removes them too.
    let n = remove_children(root, "var/cache/apt", &|name, kind| {
        kind == FileType::Directory || !has_extension(name, "bin")
    })?;
    report("apt caches", n);
    for rel in ALWAYS_REMOVED {
        if root.remove_all(rel)? {
            log(&format!("removed /{rel}"));
        }
    }
    Ok(())
}

/// Removed from every image: kiln's own `policy-rc.d`, and files that
/// hold what is true of one machine or one moment and make two builds
/// differ — random seeds, and ldconfig's auxiliary cache (inode numbers
/// and change times of the libraries it scanned; `ld.so.cache` itself is
/// a function of the libraries and stays).
const ALWAYS_REMOVED: &[&str] = &[
    "usr/sbin/policy-rc.d",
    "var/cache/ldconfig/aux-cache",
    "var/lib/systemd/random-seed",
    "var/lib/urandom/random-seed",
];

/// The unit that makes the SSH host keys an image does not ship.
const SSH_KEYGEN_UNIT: &str = "kiln-ssh-host-keys.service";

/// Its text: run before `ssh.service`, only while no host key exists.
const SSH_KEYGEN_UNIT_TEXT: &str = "\
# Written by kiln. The image ships no SSH host keys: every machine booted
# from one image would share them, and they would make two builds of the
# same tree differ. This makes them once, before sshd first starts.
[Unit]
Description=Generate the SSH host keys this image does not ship
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes
";

/// Removes `/etc/ssh/ssh_host_*_key{,.pub}`; where the image has sshd and
/// systemd, installs [`SSH_KEYGEN_UNIT`] as a requirement of
/// `ssh.service` so the keys are made at first boot.
fn ssh_host_keys(root: &RootDir, log: &Log<'_>) -> Result<(), Error> {
    let mut removed = 0;
    for (name, kind) in root.list("etc/ssh")? {
        let key =
            name.starts_with("ssh_host_") && (name.ends_with("_key") || name.ends_with("_key.pub"));
        if key && kind != FileType::Directory && root.remove_all(&format!("etc/ssh/{name}"))? {
            removed += 1;
        }
    }
    if removed > 0 {
        log(&format!("ssh_host_keys: removed {removed} host key files"));
    }
    if !root.exists("usr/sbin/sshd")? {
        return Ok(());
    }
    let systemd = root.exists("usr/lib/systemd/systemd")? || root.exists("lib/systemd/systemd")?;
    if !systemd {
        log("ssh_host_keys: the image has no systemd: run `ssh-keygen -A` before sshd starts");
        return Ok(());
    }
    let unit = format!("etc/systemd/system/{SSH_KEYGEN_UNIT}");
    root.create_dirs("etc/systemd/system/ssh.service.requires", 0o755)?;
    root.write(&unit, 0o644, (0, 0), SSH_KEYGEN_UNIT_TEXT.as_bytes())?;
    root.symlink(
        &format!("etc/systemd/system/ssh.service.requires/{SSH_KEYGEN_UNIT}"),
        std::path::Path::new(&format!("../{SSH_KEYGEN_UNIT}")),
    )?;
    log(&format!(
        "ssh_host_keys: /{unit} makes them at first boot, before ssh.service"
    ));
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
