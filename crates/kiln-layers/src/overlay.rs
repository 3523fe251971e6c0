//! Mounting a [`LayerStack`] with overlayfs, and reading what overlayfs
//! wrote into an upper directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::LayerStack;
use crate::error::Error;
use crate::merged::{is_opaque, is_whiteout};

/// The mount options that make an upper directory a plain layer.
const OPTIONS: &str = "index=off,redirect_dir=off,metacopy=off,xino=off";
/// The same in a user namespace: `user.overlay.*` xattrs.
const USERNS_OPTIONS: &str = "index=off,redirect_dir=nofollow,metacopy=off,xino=off,userxattr";

/// Whether this process runs in a user namespace (kiln's unprivileged
/// builds): there, overlayfs may only write `user.overlay.*` xattrs, so
/// mounts add `userxattr`. The initial namespace maps all 2^32 ids.
#[must_use]
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| {
        let fields: Vec<&str> = m.split_whitespace().collect();
        fields != ["0", "0", "4294967295"]
    })
}

/// An overlayfs mount of a [`LayerStack`] (with an upper directory, or
/// read-only); unmounted on drop.
///
/// kiln mounts with `index=off,redirect_dir=off,metacopy=off,xino=off`, so
/// that the upper directory is a plain, portable layer: changed files are
/// copied up whole, renamed directories are copied up whole instead of
/// being recorded as redirects, and no inode index ties the upper directory
/// to these particular lower directories. Deletions are whiteouts
/// (character devices 0:0) and a directory that replaces a lower one
/// wholesale is marked opaque (`trusted.overlay.opaque=y`; as root,
/// overlayfs uses `trusted.` xattrs, not `user.` ones).
///
/// # Preconditions
///
/// The process is root and has made its mount namespace private with
/// [`private_mount_namespace`] (`unshare(CLONE_NEWNS)` and `mount
/// --make-rprivate /`): the mount is then invisible to the host and dies
/// with the process, even on `SIGKILL`, and no unmount can ever be missed.
#[derive(Debug)]
pub struct Overlay {
    target: PathBuf,
    mounted: bool,
}

impl Overlay {
    /// Mounts `lowers` (read-only; the top layer is the first `lowerdir`,
    /// as overlayfs wants) with the writable `upper` on `target`; `work` is
    /// overlayfs's work directory, an empty directory on the same file
    /// system as `upper`. `upper`, `work` and `target` must exist.
    pub fn mount(
        lowers: &LayerStack,
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<Self, Error> {
        let options = format!(
            "lowerdir={},upperdir={},workdir={},{}",
            lowerdir(lowers)?,
            escape(upper)?,
            escape(work)?,
            // `userxattr` allows only `redirect_dir=nofollow` (no redirects
            // made or followed), which for kiln's layers means the same.
            if in_user_namespace() {
                USERNS_OPTIONS
            } else {
                OPTIONS
            }
        );
        mount(lowers, target, &options, MountFlags::empty())
    }

    /// Mounts `lowers` read-only on `target` (no upper directory): the
    /// merged tree as the kernel sees it, for tools that need a path. A
    /// single layer (overlayfs wants two) is bind-mounted read-only.
    pub fn mount_read_only(lowers: &LayerStack, target: &Path) -> Result<Self, Error> {
        if let [layer] = &lowers.layers[..] {
            let fail = |e: rustix::io::Errno| Error::Mount {
                target: target.to_owned(),
                options: format!("bind,ro of `{}`", layer.display()),
                source: e.into(),
            };
            rustix::mount::mount_bind(layer, target).map_err(fail)?;
            let overlay = Self {
                target: target.to_owned(),
                mounted: true,
            };
            rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
                .map_err(fail)?;
            return Ok(overlay);
        }
        let options = format!(
            "lowerdir={},{}",
            lowerdir(lowers)?,
            if in_user_namespace() {
                USERNS_OPTIONS
            } else {
                OPTIONS
            }
        );
        mount(lowers, target, &options, MountFlags::RDONLY)
    }

    /// The mount point.
    #[must_use]
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmounts now. A mount can be busy for a moment without anyone
    /// using it: a process forked by another thread (to run a command in
    /// another root) holds copies of this process's descriptors until it
    /// closes them or execs. So `EBUSY` is retried for up to a second;
    /// then this fails, and the mount is detached lazily: it goes when its
    /// last user does. Use [`Overlay::try_unmount`] to keep it and retry.
    pub fn unmount(mut self) -> Result<(), Error> {
        let mut attempts = 0;
        loop {
            match self.try_unmount() {
                Err(Error::Unmount { source, .. })
                    if attempts < 50 && source.raw_os_error() == Some(libc::EBUSY) =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Unmounts now; fails, and stays mounted, if a process still uses the
    /// mount. Unmounting twice does nothing.
    pub fn try_unmount(&mut self) -> Result<(), Error> {
        if self.mounted {
            rustix::mount::unmount(&self.target, UnmountFlags::empty()).map_err(|e| {
                Error::Unmount {
                    target: self.target.clone(),
                    source: e.into(),
                }
            })?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            // Nothing to report to: detach, the kernel finishes when the
            // last user is gone. The namespace's end removes it anyway.
            let _ = rustix::mount::unmount(&self.target, UnmountFlags::DETACH);
        }
    }
}

/// Gives the calling process a private mount namespace: `unshare
/// (CLONE_NEWNS)`, then `mount --make-rprivate /`. Every mount made
/// afterwards (each [`Overlay`]) is invisible to the host and disappears
/// with the process, even when it is killed.
///
/// Must be called while the process is single-threaded (the CLI calls it
/// first thing in `kiln build`): `unshare` moves only the calling thread,
/// and threads started before it keep the host's namespace. Needs root.
pub fn private_mount_namespace() -> Result<(), Error> {
    crate::namespace::private_mount_namespace().map_err(|source| Error::Namespace { source })
}

/// The whiteouts and opaque directories of the layer `upper`, as paths
/// relative to it in [`crate::MergedView::walk`] order: a whiteout as its
/// path (`etc/motd`), an opaque directory with a trailing `/`
/// (`usr/share/doc/`).
pub fn whiteouts(upper: &Path) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    collect_whiteouts(upper, "", &mut out)?;
    Ok(out)
}

fn collect_whiteouts(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), Error> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        entries.push((name, entry.path()));
    }
    entries.sort();
    for (name, path) in entries {
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io("read", &path, e))?;
        if is_whiteout(&meta) {
            out.push(child);
        } else if meta.is_dir() {
            if is_opaque(&path)? {
                out.push(format!("{child}/"));
            }
            collect_whiteouts(&path, &child, out)?;
        }
    }
    Ok(())
}

/// `lowerdir`'s value: the layers top first, `:`-separated.
fn lowerdir(lowers: &LayerStack) -> Result<String, Error> {
    let mut out = String::new();
    for layer in lowers.layers.iter().rev() {
        if !out.is_empty() {
            out.push(':');
        }
        out.push_str(&escape(layer)?);
    }
    Ok(out)
}

/// Mounts overlayfs with `options` on `target`.
fn mount(
    lowers: &LayerStack,
    target: &Path,
    options: &str,
    flags: MountFlags,
) -> Result<Overlay, Error> {
    let fail = |source| Error::Mount {
        target: target.to_owned(),
        options: options.to_owned(),
        source,
    };
    if lowers.layers.is_empty() {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the layer stack is empty",
        )));
    }
    // mount(2) takes at most a page of options.
    if options.len() >= 4096 {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the layers' paths are longer than the 4095 bytes mount(2) accepts",
        )));
    }
    let data = std::ffi::CString::new(options)
        .map_err(|_| fail(io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path")))?;
    rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str())
        .map_err(|e| fail(e.into()))?;
    Ok(Overlay {
        target: target.to_owned(),
        mounted: true,
    })
}

/// A path as an overlayfs option value: `\`, `,` and `:` escaped with `\`.
fn escape(path: &Path) -> Result<String, Error> {
    let text = path.to_str().ok_or_else(|| Error::InvalidPath {
        path: path.display().to_string(),
        reason: "a layer's path must be UTF-8 to be mounted",
    })?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | ',' | ':') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}
