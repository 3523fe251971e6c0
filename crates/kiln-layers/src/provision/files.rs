//! `rootfs`, `files` and `hostname`: content from the image folder or the
//! configuration, written into the root.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_config::settings::{FileContent, FileSpec};

use super::{ConfigPaths, Log};
use crate::error::Error;
use crate::provision::accounts::Accounts;
use crate::root::RootDir;

/// Copies the folder `source` into the root: files and symbolic links
/// replace what is there (a directory in the way is an error), directories
/// are created with their mode or, if they exist, kept as they are;
/// everything is owned by root:root.
pub(super) fn copy_tree(root: &RootDir, source: &Path, log: &Log<'_>) -> Result<(), Error> {
    let meta = fs::metadata(source).map_err(|e| Error::io("read", source, e))?;
    if !meta.is_dir() {
        return Err(Error::Unsupported {
            path: source.to_owned(),
            reason: "`rootfs` must be a folder".to_owned(),
        });
    }
    let mut count = 0;
    copy_dir(root, source, "", &mut count)?;
    log(&format!("copied {count} entries"));
    Ok(())
}

fn copy_dir(root: &RootDir, dir: &Path, rel: &str, count: &mut usize) -> Result<(), Error> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| Error::Unsupported {
                path: entry.path(),
                reason: "the file name is not UTF-8".to_owned(),
            })?;
        entries.push(name);
    }
    entries.sort();
    for name in entries {
        let path = dir.join(&name);
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io("read", &path, e))?;
        let mode = meta.permissions().mode() & 0o7777;
        let kind = meta.file_type();
        if kind.is_dir() {
            root.create_dirs(&child, mode)?;
            copy_dir(root, &path, &child, count)?;
        } else if kind.is_file() {
            let mut file = File::open(&path).map_err(|e| Error::io("read", &path, e))?;
            root.write_with(&child, mode, (0, 0), &mut file)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| Error::io("read", &path, e))?;
            root.symlink(&child, &target)?;
        } else {
            return Err(Error::Unsupported {
                path,
                reason: "only files, folders and symbolic links can be copied".to_owned(),
            });
        }
        *count += 1;
    }
    Ok(())
}

/// Writes each of `files`, its owner and group looked up in the root's
/// own `/etc/passwd` and `/etc/group`.
pub(super) fn write_files(
    root: &RootDir,
    files: &[FileSpec],
    paths: &ConfigPaths<'_>,
    log: &Log<'_>,
) -> Result<(), Error> {
    let accounts = Accounts::read(root)?;
    for spec in files {
        let uid = accounts
            .uid(&spec.owner)
            .ok_or_else(|| Error::UnknownAccount {
                path: spec.path.clone(),
                kind: "owner",
                name: spec.owner.clone(),
            })?;
        let gid = accounts
            .gid(&spec.group)
            .ok_or_else(|| Error::UnknownAccount {
                path: spec.path.clone(),
                kind: "group",
                name: spec.group.clone(),
            })?;
        match &spec.content {
            FileContent::Inline(text) => {
                root.write(&spec.path, spec.mode, (uid, gid), text.as_bytes())?;
            }
            FileContent::Source(source) => {
                let source = paths.resolve(source);
                let mut file = File::open(&source).map_err(|e| Error::io("read", &source, e))?;
                root.write_with(&spec.path, spec.mode, (uid, gid), &mut file)?;
            }
        }
        log(&format!(
            "{} ({:04o} {}:{})",
            spec.path, spec.mode, spec.owner, spec.group
        ));
    }
    Ok(())
}

/// Writes `/etc/hostname` and the `127.0.1.1` line of `/etc/hosts`.
pub(super) fn hostname(root: &RootDir, hostname: &str) -> Result<(), Error> {
    root.write(
        "etc/hostname",
        0o644,
        (0, 0),
        format!("{hostname}\n").as_bytes(),
    )?;
    let line = format!("127.0.1.1\t{hostname}");
    let hosts = match root.read("etc/hosts")? {
        Some(old) => {
            let old = String::from_utf8_lossy(&old);
            let mut out = Vec::new();
            let mut placed = false;
            for l in old.lines() {
                if l.split_whitespace().next() == Some("127.0.1.1") {
                    continue;
                }
                out.push(l.to_owned());
                if !placed && l.split_whitespace().next() == Some("127.0.0.1") {
                    out.push(line.clone());
                    placed = true;
                }
            }
            if !placed {
                out.insert(0, line);
            }
            out.join("\n") + "\n"
        }
        None => format!(
            "127.0.0.1\tlocalhost\n{line}\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        ),
    };
    root.write("etc/hosts", 0o644, (0, 0), hosts.as_bytes())
}
