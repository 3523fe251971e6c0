//! The dpkg side of kiln: from verified `.deb` files to a configured
//! Debian root.
//!
//! [`bootstrap`] builds a fresh root in four phases, timed in
//! [`Report::timings`]:
//!
//! 1. **unpack**: read each `.deb` ([`read_deb`]) and unpack its data
//!    archive into the root, `jobs` packages at a time, safely (see
//!    [`unpack`](crate#safety)); with `merged_usr` the `bin`, `sbin`, `lib`
//!    (and `lib64`) symlinks into `usr` are made first, as debootstrap and
//!    mmdebstrap do.
//! 2. **database**: write `/var/lib/dpkg` as `dpkg --unpack` would have
//!    left it: every package `install ok unpacked`, its file list, control
//!    files and trigger interests.
//! 3. **preinst**: run each package's `preinst install`, `Essential`
//!    packages first.
//! 4. **configure**: `dpkg --configure -a` in the root, with a
//!    `policy-rc.d` that keeps services from starting.
//!
//! [`install`] adds packages to a root that already has a dpkg database
//! (a parent image) the same way.
//!
//! # Safety
//!
//! Entries with `..` or absolute paths are refused. Every parent directory
//! is resolved inside the root (`openat2` with `RESOLVE_IN_ROOT`), so
//! symlinks in the root (`etc/x -> /`, `../../..`) resolve as inside a
//! chroot and nothing is written outside it; the final component of a path
//! is never followed. Commands run in the root through [`sandbox`]:
//! `pivot_root` into their own namespaces (mount, PID, network, UTS, IPC),
//! a fresh `/proc`, a read-only `/sys`, a private `/dev` without disks,
//! reduced capabilities and a seccomp filter; everything mounted for them
//! vanishes with them, even if kiln is killed.
//!
//! # Reading a package
//!
//! ```no_run
//! let deb = kiln_dpkg::read_deb(std::path::Path::new("hello_2.10-3_amd64.deb"))?;
//! assert_eq!(deb.name(), "hello");
//! assert!(deb.control_file("md5sums").is_some());
//! # Ok::<(), kiln_dpkg::Error>(())
//! ```
//!
//! The library prints nothing: progress goes to the `progress` callback.
#![deny(missing_docs)]

pub mod ar;
pub mod control;
mod data_cache;
mod database;
mod deb;
mod error;
pub mod sandbox;
mod unpack;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use database::{InstalledPackage, installed_packages};
pub use deb::{Compression, ControlFile, Deb, read_deb};
pub use error::Error;
pub use unpack::Root;

use control::Stanza;
use unpack::Unpacked;

/// A verified `.deb` to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebFile {
    /// The package name; must match the `.deb`'s `Package` field.
    pub name: String,
    /// The `.deb` file.
    pub path: PathBuf,
    /// Whether the package is `Essential: yes` (its `preinst` runs first).
    pub essential: bool,
    /// A file where the package's data archive is kept decompressed for
    /// later builds (zstd, with a BLAKE3 trailer checked before use);
    /// `None` to keep nothing. Unpacking from a sound entry skips the
    /// `.deb`'s (typically xz) decompression.
    pub data_cache: Option<PathBuf>,
}

/// How to assemble a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembleOptions {
    /// The root's dpkg architecture, `amd64`, `arm64`, ….
    pub arch: String,
    /// How many packages to unpack in parallel (at least 1).
    pub jobs: usize,
    /// Make `bin`, `sbin`, `lib` (and `lib64` where the architecture has
    /// it) symlinks into `usr` before unpacking, as Debian 12 and later
    /// expect.
    pub merged_usr: bool,
    /// `SOURCE_DATE_EPOCH` for the maintainer scripts, so what they write
    /// with a date (`/etc/shadow`'s last change, generated files that
    /// honour it) is the same in every build.
    pub source_date_epoch: Option<i64>,
    /// When set, unpacking stops at the next package and a running
    /// maintainer script is killed ([`Error::Cancelled`]).
    pub cancel: sandbox::CancelFlag,
}

impl Default for AssembleOptions {
    fn default() -> Self {
        Self {
            arch: "amd64".to_owned(),
            jobs: 2,
            merged_usr: true,
            source_date_epoch: None,
            cancel: sandbox::CancelFlag::none(),
        }
    }
}

impl AssembleOptions {
    /// The environment every command of the assembly gets beyond
    /// [`sandbox::ENVIRONMENT`].
    fn script_env(&self) -> Vec<(&'static str, String)> {
        self.source_date_epoch
            .map(|e| ("SOURCE_DATE_EPOCH", e.to_string()))
            .into_iter()
            .collect()
    }
}

/// The build date of the `.deb` at `path`, in seconds since the Unix
/// epoch: the date `dpkg-deb` stamps on its members, which Debian's
/// builds take from the package's changelog. The newest of a root's
/// packages is the root's default `SOURCE_DATE_EPOCH`.
pub fn build_date(path: &Path) -> Result<i64, Error> {
    let file = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    ar::build_date(std::io::BufReader::new(file)).map_err(|e| Error::io("read", path, e))
}

/// Progress of [`bootstrap`] and [`install`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A package was unpacked (`done` of `total`; from worker threads, in
    /// completion order).
    Unpacked {
        /// The package.
        package: String,
        /// Packages unpacked so far.
        done: usize,
        /// Packages to unpack.
        total: usize,
    },
    /// A phase starts: `unpack`, `database`, `preinst`, `configure`.
    Step {
        /// The phase.
        name: &'static str,
    },
    /// A line of output of a command run in the root.
    ScriptOutput {
        /// What runs: `preinst base-passwd`, `dpkg --configure -a`.
        step: String,
        /// The line, without its newline.
        line: String,
    },
}

/// What [`bootstrap`] or [`install`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Packages installed.
    pub packages: usize,
    /// Archive entries unpacked (files, directories, links).
    pub files: usize,
    /// Wall time of each phase, in order.
    pub timings: Vec<(String, Duration)>,
}

/// Builds a fresh root at `root` (missing or an empty directory) from
/// `debs`: unpacks them all, writes the dpkg database, runs the `preinst`
/// scripts (`Essential` packages first) and `dpkg --configure -a`.
pub fn bootstrap(
    root: &Path,
    debs: &[DebFile],
    opts: &AssembleOptions,
    progress: &(dyn Fn(&Event) + Sync),
) -> Result<Report, Error> {
    require_root(root)?;
    let started = Instant::now();
    match fs::read_dir(root) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::RootNotEmpty {
                    path: root.to_owned(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(root).map_err(|e| Error::io("create", root, e))?;
        }
        Err(e) => return Err(Error::io("read", root, e)),
    }
    if opts.merged_usr {
        merge_usr(root, &opts.arch)?;
    }
    make_dev(root)?;
    let root_dir = Root::open(root)?;

    opts.cancel.check("unpack")?;
    progress(&Event::Step { name: "unpack" });
    let packages = read_all(debs, opts.jobs)?;
    unpack_and_finish(
        root,
        &root_dir,
        opts,
        Vec::new(),
        debs,
        &packages,
        true,
        started,
        progress,
    )
}

/// Adds `debs` to the root at `root`, which must have a dpkg database (a
/// parent image): unpacks them, adds them to the existing database, runs
/// their `preinst` scripts and `dpkg --configure -a`. Packages already
/// installed in the same version are skipped.
pub fn install(
    root: &Path,
    debs: &[DebFile],
    opts: &AssembleOptions,
    progress: &(dyn Fn(&Event) + Sync),
) -> Result<Report, Error> {
    require_root(root)?;
    let started = Instant::now();
    let status_path = root.join(database::ADMIN_DIR).join("status");
    if !status_path.is_file() {
        return Err(Error::NoDatabase {
            path: root.to_owned(),
        });
    }
    let mut existing = database::read_status(&status_path)?;
    let root_dir = Root::open(root)?;

    opts.cancel.check("unpack")?;
    progress(&Event::Step { name: "unpack" });
    let all = read_all(debs, opts.jobs)?;
    let mut wanted = Vec::new();
    let mut packages = Vec::new();
    for (file, deb) in debs.iter().zip(all) {
        let same = |s: &Stanza| {
            s.get("Package") == Some(deb.name())
                && (!deb.multi_arch_same() || s.get("Architecture") == Some(deb.architecture()))
        };
        if let Some(old) = existing.iter().find(|s| same(s)) {
            let state = old.get("Status").unwrap_or_default();
            let gone = state.ends_with(" not-installed") || state.ends_with(" config-files");
            if !gone {
                let installed = old.get("Version").unwrap_or_default();
                if installed == deb.version() {
                    continue;
                }
                return Err(Error::Upgrade {
                    package: deb.name().to_owned(),
                    version: deb.version().to_owned(),
                    installed: installed.to_owned(),
                });
            }
            existing.retain(|s| !same(s));
        }
        wanted.push(file.clone());
        packages.push(deb);
    }
    unpack_and_finish(
        root, &root_dir, opts, existing, &wanted, &packages, false, started, progress,
    )
}

/// The part [`bootstrap`] and [`install`] share once they know what to
/// install: unpack, apply directory metadata (`fresh`: every directory is
/// the packages' own, not a parent's), then database, preinsts, configure.
#[allow(clippy::too_many_arguments)] // one call site each; a struct would only rename them
fn unpack_and_finish(
    root: &Path,
    root_dir: &Root,
    opts: &AssembleOptions,
    existing: Vec<Stanza>,
    files: &[DebFile],
    packages: &[Deb],
    fresh: bool,
    started: Instant,
    progress: &(dyn Fn(&Event) + Sync),
) -> Result<Report, Error> {
    let mut report = Report::default();
    let unpacked = unpack_all(root_dir, packages, opts.jobs, progress)?;
    let dirs: Vec<&[unpack::DirMeta]> = unpacked.iter().map(|u| u.dirs.as_slice()).collect();
    unpack::apply_dir_metadata(root_dir, &dirs, fresh)?;
    report
        .timings
        .push(("unpack".to_owned(), started.elapsed()));
    let batch = Batch {
        root,
        opts,
        existing,
        files,
        packages,
        unpacked: &unpacked,
    };
    finish(&batch, progress, report)
}

/// The packages of one [`bootstrap`] or [`install`], unpacked.
struct Batch<'a> {
    root: &'a Path,
    opts: &'a AssembleOptions,
    /// The status stanzas already in the root (none for a fresh root).
    existing: Vec<Stanza>,
    files: &'a [DebFile],
    packages: &'a [Deb],
    unpacked: &'a [Unpacked],
}

/// The phases after unpacking, shared by [`bootstrap`] and [`install`].
fn finish(
    batch: &Batch<'_>,
    progress: &(dyn Fn(&Event) + Sync),
    mut report: Report,
) -> Result<Report, Error> {
    let Batch {
        root,
        packages,
        unpacked,
        ..
    } = *batch;
    report.packages = packages.len();
    report.files = unpacked.iter().map(|u| u.entries).sum();

    batch.opts.cancel.check("database")?;
    progress(&Event::Step { name: "database" });
    let started = Instant::now();
    let new: Vec<database::NewPackage<'_>> = packages
        .iter()
        .zip(unpacked)
        .map(|(deb, u)| database::NewPackage {
            deb,
            files: &u.files,
            conffiles: &u.conffiles,
        })
        .collect();
    database::write(root, &batch.opts.arch, batch.existing.clone(), &new)?;
    report
        .timings
        .push(("database".to_owned(), started.elapsed()));

    if !root.join("usr/bin/dpkg").is_file() {
        return Err(Error::NoDpkg {
            root: root.to_owned(),
        });
    }
    let policy = PolicyRcD::install(root)?;
    let result = configure(batch, progress, &mut report);
    let restored = policy.remove();
    result?;
    restored?;
    Ok(report)
}

fn configure(
    batch: &Batch<'_>,
    progress: &(dyn Fn(&Event) + Sync),
    report: &mut Report,
) -> Result<(), Error> {
    let Batch {
        root,
        files,
        packages,
        ..
    } = *batch;
    batch.opts.cancel.check("preinst")?;
    progress(&Event::Step { name: "preinst" });
    let started = Instant::now();
    let extra_env = batch.opts.script_env();
    // Essential packages first, each group in the given order.
    let mut order: Vec<(&DebFile, &Deb)> = files.iter().zip(packages).collect();
    order.sort_by_key(|(file, deb)| !(file.essential || deb.essential()));
    let preinsts: Vec<&Deb> = order
        .into_iter()
        .map(|(_, deb)| deb)
        .filter(|deb| deb.control_file("preinst").is_some())
        .collect();
    run_preinsts(root, &preinsts, &extra_env, &batch.opts.cancel, progress)?;
    report
        .timings
        .push(("preinst".to_owned(), started.elapsed()));

    batch.opts.cancel.check("configure")?;
    progress(&Event::Step { name: "configure" });
    let started = Instant::now();
    let step = "dpkg --configure -a";
    let mut argv = vec!["/usr/bin/dpkg", "--configure", "-a"];
    if !batch.existing.is_empty() {
        // A conffile that found a file in its way in the parent image was
        // unpacked as `.dpkg-new`: keep the parent's file, without asking.
        argv.extend(["--force-confdef", "--force-confold"]);
    }
    let env: Vec<(&str, &str)> = extra_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let options = sandbox::RunOptions::new(step)
        .env(&env)
        .cancel(&batch.opts.cancel);
    sandbox::run(root, &argv, &options, &mut |line| {
        progress(&Event::ScriptOutput {
            step: step.to_owned(),
            line: line.to_owned(),
        });
    })?;
    report
        .timings
        .push(("configure".to_owned(), started.elapsed()));
    Ok(())
}

/// The line the preinst batch prints before each script.
const PREINST_MARKER: &str = "kiln-dpkg: preinst of ";

/// Runs the `preinst install` of each of `debs`, in order, as dpkg would
/// (its `DPKG_*` variables set), stopping at the first that fails.
///
/// They run from one shell in one isolated runner instead of one runner
/// each: entering the namespaces and mounting `/proc`, `/sys` and `/dev`
/// is most of the cost of a typical preinst. Output lines are reported
/// under the script that printed them; a failure names its package.
fn run_preinsts(
    root: &Path,
    debs: &[&Deb],
    extra_env: &[(&'static str, String)],
    cancel: &sandbox::CancelFlag,
    progress: &(dyn Fn(&Event) + Sync),
) -> Result<(), Error> {
    if debs.is_empty() {
        return Ok(());
    }
    // Package names, architectures and info names are [a-z0-9+.:-]: no
    // quoting is needed, single quotes are belt and braces.
    let mut script = String::from("set -e\n");
    for deb in debs {
        script.push_str(&format!(
            "echo '{PREINST_MARKER}{name}'\nDPKG_MAINTSCRIPT_PACKAGE='{name}' DPKG_MAINTSCRIPT_ARCH='{arch}' '/var/lib/dpkg/info/{info}.preinst' install\n",
            name = deb.name(),
            arch = deb.architecture(),
            info = deb.info_name(),
        ));
    }
    let mut env = vec![
        ("DPKG_MAINTSCRIPT_NAME", "preinst"),
        ("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1"),
        ("DPKG_ADMINDIR", "/var/lib/dpkg"),
        ("DPKG_ROOT", ""),
    ];
    env.extend(extra_env.iter().map(|(k, v)| (*k, v.as_str())));
    // Until the first marker: the root's own shell (it may not start).
    let mut current = String::from("/bin/sh of the root, before the first preinst");
    let mut own_lines: Vec<String> = Vec::new();
    let result = sandbox::run(
        root,
        &["/bin/sh", "-c", &script],
        &sandbox::RunOptions::new("preinst").env(&env).cancel(cancel),
        &mut |line| {
            if let Some(name) = line.strip_prefix(PREINST_MARKER) {
                current = format!("preinst of {name}");
                own_lines.clear();
            } else {
                own_lines.push(line.to_owned());
                progress(&Event::ScriptOutput {
                    step: current.clone(),
                    line: line.to_owned(),
                });
            }
        },
    );
    match result {
        Err(Error::Script {
            root, status, code, ..
        }) => {
            let skip = own_lines.len().saturating_sub(sandbox::TAIL);
            Err(Error::Script {
                step: current,
                root,
                status,
                code,
                output: own_lines.split_off(skip),
            })
        }
        other => other,
    }
}

fn require_root(root: &Path) -> Result<(), Error> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err(Error::NeedsRoot {
            root: root.to_owned(),
        })
    }
}

/// The directories merged-`/usr` links into `usr` for `arch`.
fn merged_dirs(arch: &str) -> &'static [&'static str] {
    match arch {
        "amd64" | "ppc64el" | "loong64" => &["bin", "sbin", "lib", "lib64"],
        _ => &["bin", "sbin", "lib"],
    }
}

fn merge_usr(root: &Path, arch: &str) -> Result<(), Error> {
    for dir in merged_dirs(arch) {
        let target = root.join("usr").join(dir);
        fs::create_dir_all(&target).map_err(|e| Error::io("create", &target, e))?;
        let link = root.join(dir);
        std::os::unix::fs::symlink(format!("usr/{dir}"), &link)
            .map_err(|e| Error::io("create", &link, e))?;
    }
    Ok(())
}

/// The device nodes and links a root needs before anything runs in it, as
/// debootstrap and mmdebstrap create them: `/dev/null` for every script
/// that redirects to it, `/dev/urandom` for key generation, `/dev/ptmx`
/// and `/dev/pts` for terminals. Mounting the host's `/dev` over it during
/// configuration hides them; in the image they are what a tar or a chroot
/// without devtmpfs sees.
fn make_dev(root: &Path) -> Result<(), Error> {
    use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
    use std::os::unix::fs::PermissionsExt;
    let dev = root.join("dev");
    for dir in ["", "pts", "shm"] {
        let d = dev.join(dir);
        fs::create_dir_all(&d).map_err(|e| Error::io("create", &d, e))?;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod", &d, e))?;
    }
    let nodes: [(&str, u32, u32); 8] = [
        ("console", 5, 1),
        ("full", 1, 7),
        ("null", 1, 3),
        ("ptmx", 5, 2),
        ("random", 1, 8),
        ("tty", 5, 0),
        ("urandom", 1, 9),
        ("zero", 1, 5),
    ];
    for (name, major, minor) in nodes {
        let path = dev.join(name);
        match mknodat(
            CWD,
            &path,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            makedev(major, minor),
        ) {
            Ok(()) => {}
            // In a user namespace (an unprivileged build) no device node can
            // be made; the host's /dev is bound over /dev whenever anything
            // runs in the root, and a booted image gets devtmpfs.
            Err(rustix::io::Errno::PERM) => continue,
            Err(e) => return Err(Error::io("create device", &path, e.into())),
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
            .map_err(|e| Error::io("chmod", &path, e))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(name);
        std::os::unix::fs::symlink(target, &path).map_err(|e| Error::io("create", &path, e))?;
    }
    Ok(())
}

/// `/usr/sbin/policy-rc.d` answering 101 ("action forbidden"), so no
/// maintainer script starts a service; a file already there is put back.
struct PolicyRcD {
    path: PathBuf,
    saved: Option<PathBuf>,
}

impl PolicyRcD {
    fn install(root: &Path) -> Result<Self, Error> {
        use std::os::unix::fs::PermissionsExt;
        let dir = root.join("usr/sbin");
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let path = dir.join("policy-rc.d");
        let saved = if fs::symlink_metadata(&path).is_ok() {
            let saved = dir.join("policy-rc.d.kiln-saved");
            fs::rename(&path, &saved).map_err(|e| Error::io("rename", &path, e))?;
            Some(saved)
        } else {
            None
        };
        fs::write(
            &path,
            "#!/bin/sh\n# Written by kiln while configuring packages.\nexit 101\n",
        )
        .map_err(|e| Error::io("write", &path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("write", &path, e))?;
        Ok(Self { path, saved })
    }

    fn remove(self) -> Result<(), Error> {
        match &self.saved {
            Some(saved) => fs::rename(saved, &self.path),
            None => fs::remove_file(&self.path),
        }
        .map_err(|e| Error::io("remove", &self.path, e))
    }
}

/// Reads every `.deb`'s control information, `jobs` at a time, and checks
/// that each is the package it claims to be.
fn read_all(debs: &[DebFile], jobs: usize) -> Result<Vec<Deb>, Error> {
    let order: Vec<usize> = (0..debs.len()).collect();
    parallel(&order, jobs, |i| {
        let file = &debs[i];
        let mut deb = read_deb(&file.path)?;
        deb.data_cache.clone_from(&file.data_cache);
        if deb.name() != file.name {
            return Err(Error::InvalidDeb {
                path: file.path.clone(),
                reason: format!("it holds package `{}`, not `{}`", deb.name(), file.name),
            });
        }
        Ok(deb)
    })
}

/// Unpacks every package, `jobs` at a time, the largest first so the
/// workers finish together.
fn unpack_all(
    root: &Root,
    packages: &[Deb],
    jobs: usize,
    progress: &(dyn Fn(&Event) + Sync),
) -> Result<Vec<Unpacked>, Error> {
    let mut order: Vec<usize> = (0..packages.len()).collect();
    let size = |i: usize| fs::metadata(&packages[i].path).map_or(0, |m| m.len());
    order.sort_by_cached_key(|&i| std::cmp::Reverse(size(i)));
    let done = AtomicUsize::new(0);
    let total = packages.len();
    parallel(&order, jobs, |i| {
        let unpacked = unpack::unpack(root, &packages[i])?;
        progress(&Event::Unpacked {
            package: packages[i].name().to_owned(),
            done: done.fetch_add(1, Ordering::Relaxed) + 1,
            total,
        });
        Ok(unpacked)
    })
}

/// Runs `work` on every index of `order` with `jobs` threads (rayon's
/// work stealing, one item per task, started in `order`); returns the
/// results by index. Stops starting work at the first error.
fn parallel<T: Send>(
    order: &[usize],
    jobs: usize,
    work: impl Fn(usize) -> Result<T, Error> + Sync,
) -> Result<Vec<T>, Error> {
    use rayon::prelude::*;
    let run = || {
        order
            .par_iter()
            .with_max_len(1)
            .map(|&i| work(i).map(|value| (i, value)))
            .collect::<Result<Vec<_>, Error>>()
    };
    // Without threads to spare, rayon's global pool does the work.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.clamp(1, order.len().max(1)))
        .build();
    let mut results = match pool {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    }?;
    results.sort_unstable_by_key(|&(i, _)| i);
    Ok(results.into_iter().map(|(_, value)| value).collect())
}
