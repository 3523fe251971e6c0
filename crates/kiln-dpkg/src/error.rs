//! The one error type of this crate.
//!
//! Every message starts with "Failed to …", names the package and the path
//! in backticks and keeps the underlying cause as its `source`.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `kiln-dpkg`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the host (a `.deb`, the root, the database) could not be
    /// read or written.
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
    /// A `.deb` file is not a Debian binary package as dpkg reads it.
    #[error("Failed to read `{}` as a Debian package: {reason}", path.display())]
    InvalidDeb {
        /// The `.deb` file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `.deb` member could not be decompressed or is not a valid tar.
    #[error("Failed to read member `{member}` of `{}`", path.display())]
    Member {
        /// The `.deb` file.
        path: PathBuf,
        /// The ar member, `control.tar.xz`, `data.tar.zst`, ….
        member: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A data.tar entry would land outside the root (`..`, an absolute
    /// path) or is otherwise not something dpkg would install.
    #[error("Failed to unpack `{entry}` of package `{package}`: {reason}")]
    UnsafeEntry {
        /// The package.
        package: String,
        /// The entry as written in the archive.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Writing a data.tar entry into the root failed.
    #[error("Failed to unpack `{entry}` of package `{package}`")]
    Unpack {
        /// The package.
        package: String,
        /// The entry as written in the archive.
        entry: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The target of [`crate::bootstrap`] exists and is not empty.
    #[error(
        "Failed to bootstrap into `{}`: the directory is not empty (use `install` to add packages to an existing root)",
        path.display()
    )]
    RootNotEmpty {
        /// The root.
        path: PathBuf,
    },
    /// The target of [`crate::install`] has no dpkg database.
    #[error(
        "Failed to install into `{}`: it has no dpkg database (`var/lib/dpkg/status`)",
        path.display()
    )]
    NoDatabase {
        /// The root.
        path: PathBuf,
    },
    /// A dpkg database file is malformed.
    #[error("Failed to parse the dpkg database file `{}`: {reason}", path.display())]
    InvalidDatabase {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// [`crate::install`] was asked for another version of an installed
    /// package; upgrades are not implemented.
    #[error(
        "Failed to install package `{package}` {version}: version {installed} is already installed and upgrades are not supported"
    )]
    Upgrade {
        /// The package.
        package: String,
        /// The version asked for.
        version: String,
        /// The version in the root.
        installed: String,
    },
    /// The package set has no `/usr/bin/dpkg` to configure it with.
    #[error(
        "Failed to configure `{}`: it has no `/usr/bin/dpkg` (the package set must include `dpkg`)",
        root.display()
    )]
    NoDpkg {
        /// The root.
        root: PathBuf,
    },
    /// Configuring needs root (mounts, chroot, file ownership).
    #[error(
        "Failed to assemble `{}`: building a root needs root privileges: run as root, or inside a user namespace where this process is root (the `kiln` CLI enters one for ordinary users)",
        root.display()
    )]
    NeedsRoot {
        /// The root.
        root: PathBuf,
    },
    /// A command in the root could not be started.
    #[error("Failed to run `{step}` in `{}`", root.display())]
    Spawn {
        /// What was run, `dpkg --configure -a`, `preinst of base-passwd`.
        step: String,
        /// The root.
        root: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A command in the root failed.
    #[error(
        "Failed to run `{step}` in `{}`: {status}\n{}",
        root.display(),
        output.join("\n")
    )]
    Script {
        /// What was run.
        step: String,
        /// The root.
        root: PathBuf,
        /// How it ended (`exit status: 1`, `signal: 9`).
        status: String,
        /// The exit code (128 + the signal number when killed).
        code: i32,
        /// The last lines of its output (at most 20).
        output: Vec<String>,
    },
    /// The caller stopped the work ([`crate::sandbox::CancelFlag`]): a
    /// running command was killed with its whole PID namespace.
    #[error("`{step}` was stopped: the build was cancelled")]
    Cancelled {
        /// What was running (or about to run).
        step: String,
    },
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
