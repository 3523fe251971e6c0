//! The one error type of this crate.
//!
//! Every message but [`Error::Changed`]'s starts with "Failed to …", names the path, step or account
//! in backticks and keeps the underlying cause as its `source`. No message
//! ever holds a password hash.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `kiln-layers`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of a layer, a root or an image folder could not be read or
    /// written.
    #[error("Failed to {action} `{}`", path.display())]
    Io {
        /// What was being done: `read`, `create`, ….
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A path looked up in a [`crate::MergedView`] does not exist there.
    #[error("Failed to find `{path}` in the merged layers")]
    NotFound {
        /// The path, relative to the merged root.
        path: String,
    },
    /// A path given to the merged view or to provisioning is not a plain
    /// relative (or, in the image, absolute) path, or resolves through too
    /// many symbolic links.
    #[error("Failed to resolve `{path}`: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The process could not get a private mount namespace.
    #[error(
        "Failed to make a private mount namespace (kiln needs root privileges to mount layers)"
    )]
    Namespace {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An overlayfs could not be mounted.
    #[error("Failed to mount the layers on `{}`: {options}", target.display())]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The mount options (the layers' paths, no secrets).
        options: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An overlayfs could not be unmounted (`EBUSY`: a process still uses
    /// it).
    #[error("Failed to unmount the layers on `{}`", target.display())]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `rootfs` holds something that is not a file, folder or symbolic
    /// link, or something else is in the way of an entry in the root.
    #[error("Failed to copy `{}` into the root: {reason}", path.display())]
    Unsupported {
        /// The source entry.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The owner or group of a file is not an account of the root.
    #[error(
        "Failed to set the {kind} of `{path}`: the root's `/etc/{}` has no {} `{name}`",
        if *kind == "owner" { "passwd" } else { "group" },
        if *kind == "owner" { "user" } else { "group" }
    )]
    UnknownAccount {
        /// The file in the image.
        path: String,
        /// `owner` or `group`.
        kind: &'static str,
        /// The name looked up.
        name: String,
    },
    /// A user's password hash cannot go into `/etc/shadow`.
    #[error(
        "Failed to set the password of `{user}`: the hash holds `:` or a line break, which `/etc/shadow` cannot hold"
    )]
    InvalidPasswordHash {
        /// The account.
        user: String,
    },
    /// A user has no line in the root's `/etc/shadow` (or there is none).
    #[error("Failed to set the password of `{user}`: the root's `/etc/shadow` has no entry for it")]
    NoShadowEntry {
        /// The account.
        user: String,
    },
    /// `services` was set but the root has no `systemctl`.
    #[error(
        "Failed to {action} unit `{unit}`: the image has no `systemctl`; `services` needs systemd in the image (add `systemd` to `packages`)"
    )]
    NoSystemd {
        /// `enable` or `disable`.
        action: &'static str,
        /// The unit.
        unit: String,
    },
    /// A command could not be started in the root.
    #[error("Failed to run `{step}` in `{}`", root.display())]
    Spawn {
        /// What was run: `run:setup.sh`, `useradd alice`, ….
        step: String,
        /// The root.
        root: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file of the tree an image uses (a `files` source, a `run`
    /// script, an entry of `rootfs`) is not what the loader recorded, and
    /// the plan's digests were made of: edited, removed, or now a link out
    /// of the tree. Nothing is built from it under the old digest.
    #[error("`{}` changed since the build started; run the build again", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// A command in the root (a `run` script, `useradd`, `systemctl`)
    /// ended with a non-zero exit code.
    #[error("Failed to run `{step}`: exit code {code}\n{}", last_lines.join("\n"))]
    Script {
        /// What was run: `run:setup.sh`, `useradd alice`, ….
        step: String,
        /// The exit code (128 + the signal number when killed).
        code: i32,
        /// The last lines of its output (at most 20).
        last_lines: Vec<String>,
    },
    /// The build was cancelled (or ran out of time): the step was not
    /// started, or its command was killed with its PID namespace.
    #[error("`{step}` was stopped: the build was cancelled")]
    Cancelled {
        /// The step.
        step: String,
    },
}

impl From<kiln_config::InputError> for Error {
    fn from(e: kiln_config::InputError) -> Self {
        match e {
            kiln_config::InputError::Changed { path } => Self::Changed { path },
            kiln_config::InputError::Io { path, source } => Self::Io {
                action: "read",
                path,
                source,
            },
        }
    }
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
