//! The system calls that need `unsafe`: a private mount namespace for the
//! process. The only module of this crate allowed `unsafe`; each block has
//! a `SAFETY:` line.
//!
//! Commands run inside a root through kiln-dpkg's sandbox
//! (`crates/kiln-dpkg/src/sandbox/`): `pivot_root` into new namespaces,
//! private `/proc`, `/sys` and `/dev`, reduced capabilities and a seccomp
//! filter, every level killed with kiln.
#![allow(unsafe_code)]

use std::io;
use std::path::Path;

use crate::error::Error;

/// Moves the calling thread into a new mount namespace and makes every
/// mount in it private, so nothing mounted afterwards propagates to the
/// host and every mount dies with the namespace's last thread.
pub(crate) fn private_mount_namespace() -> io::Result<()> {
    // SAFETY: `unshare(CLONE_NEWNS)` only changes the calling thread's
    // mount namespace (and unshares its file system attributes, `CLONE_FS`
    // being implied); it touches no memory. Threads started earlier keep
    // the old namespace, which is why the caller must be single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )?;
    Ok(())
}

/// Runs `argv` (an absolute path inside the root, then arguments) in
/// `root` as `options` say, passing each output line to `on_line`. Fails
/// with the exit code and the last lines of output.
///
/// The sandbox is kiln-dpkg's: one implementation of the fork/exec dance
/// serves both crates; this maps its errors to this crate's.
pub(crate) fn run(
    root: &Path,
    argv: &[&str],
    options: &kiln_dpkg::sandbox::RunOptions<'_>,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let step = options.step;
    kiln_dpkg::sandbox::run(root, argv, options, on_line).map_err(|e| match e {
        kiln_dpkg::Error::Script {
            step, code, output, ..
        } => Error::Script {
            step,
            code,
            last_lines: output,
        },
        kiln_dpkg::Error::Spawn { step, root, source } => Error::Spawn { step, root, source },
        kiln_dpkg::Error::Cancelled { step } => Error::Cancelled { step },
        other => Error::Spawn {
            step: step.to_owned(),
            root: root.to_owned(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}
