//! `rootfs`, `files` and `hostname`: content from the image folder or the
//! configuration, written into the root.

use std::path::Path;

use kiln_config::settings::{ConfigPath, FileContent, FileSpec};
use kiln_config::{FileKind, TreeInputs};

use super::Log;
use crate::error::Error;
use crate::provision::accounts::Accounts;
use crate::root::RootDir;

/// Copies the folder `source` into the root, as the loader listed it:
/// files (read beneath the tree root, checked against their recorded
/// digests) and symbolic links (their recorded targets, never followed)
/// replace what is there (a directory in the way is an error), directories
/// are created with their mode or, if they exist, kept as they are;
/// everything is owned by root:root.
pub(super) fn copy_tree(
    root: &RootDir,
    inputs: &TreeInputs,
    source: &ConfigPath,
    log: &Log<'_>,
) -> Result<(), Error> {
    let entries = inputs.folder(source)?;
    let mut count = 0;
    for entry in &entries {
        match &entry.kind {
            FileKind::Dir { mode } => {
                root.create_dirs(&entry.path, *mode)?;
            }
            FileKind::File { mode, .. } => {
                let bytes = inputs.read_in(source, entry)?;
                root.write(&entry.path, *mode, (0, 0), &bytes)?;
            }
            FileKind::Symlink { target, .. } => root.symlink(&entry.path, Path::new(target))?,
        }
        count += 1;
    }
    log(&format!("copied {count} entries"));
    Ok(())
}

/// Writes each of `files`, its owner and group looked up in the root's
/// own `/etc/passwd` and `/etc/group`.
pub(super) fn write_files(
    root: &RootDir,
    files: &[FileSpec],
    inputs: &TreeInputs,
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
                let bytes = inputs.read(source)?;
                root.write(&spec.path, spec.mode, (uid, gid), &bytes)?;
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
