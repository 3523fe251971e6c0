//! The Debian side of a build, and `kiln lock`: the apt sources of a
//! variant's suite, verified indexes, a resolution (or the lock's) and the
//! settings every build step shares. `engine.rs` drives the build itself.

use std::path::{Path, PathBuf};

use kiln_config::settings::{Base, BootstrapVariant};
use kiln_debian::{
    Architecture, BaseSet, DebianSource, DistributionSource, InstallSet, PackageRequest,
    RepositoryOptions, ResolveRequest, RetryPolicy, TreeLock,
};
use kiln_plan::{Plan, Variant};

use crate::error::{Error, chain};
use crate::events::{Event, EventSink};
use crate::{BuildOptions, LockedVariant, Workspace};

/// How a step failed inside the library: the text, and whether the
/// configuration caused it.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Not the configuration's fault.
    Build(String),
    /// The configuration's fault.
    Config(String),
}

/// The name of the lock file at the tree root.
pub const LOCK_FILE: &str = "kiln.lock";

/// Settings of a build, resolved once from flags, kiln.toml and environment.
#[derive(Debug)]
pub struct BuildSettings {
    pub cache_dir: PathBuf,
    pub out_dir: PathBuf,
    pub lock_path: PathBuf,
    pub offline: bool,
    pub locked: bool,
    pub jobs: usize,
    /// `SOURCE_DATE_EPOCH` when the build is given one (see
    /// [`epoch_override`]); `None`: each variant's newest package's date.
    pub epoch: Option<i64>,
}

impl BuildSettings {
    pub fn new(ws: &Workspace, options: &BuildOptions) -> Result<Self, Error> {
        Ok(Self {
            cache_dir: ws.require_cache_dir()?.to_path_buf(),
            out_dir: ws.out_dir(),
            lock_path: ws.tree().root.join(LOCK_FILE),
            offline: options.offline,
            locked: options.locked,
            jobs: options.jobs.max(1),
            epoch: ws.epoch(),
        })
    }
}

/// The build's `SOURCE_DATE_EPOCH` when one is given: the environment's
/// (an empty value counts as unset), else the tree's `[output] epoch`.
/// A value that is not a whole number of seconds since 1970 is an error,
/// as the reproducible-builds specification asks, not a fallback.
pub fn epoch_override(tree: &kiln_config::Tree) -> Result<Option<i64>, Error> {
    match std::env::var_os("SOURCE_DATE_EPOCH") {
        Some(value) if !value.is_empty() => {
            let text = value.to_string_lossy();
            match text.parse::<i64>() {
                Ok(secs) if secs >= 0 => Ok(Some(secs)),
                _ => Err(Error::Config {
                    message: format!(
                        "`SOURCE_DATE_EPOCH` is `{text}`, not a number of seconds since 1970-01-01 00:00:00 UTC\n  help: set it to a whole number such as `$(git log -1 --format=%ct)`, or unset it to date each image by its newest package"
                    ),
                }),
            }
        }
        _ => Ok(tree.output.epoch),
    }
}

/// A failure of the resolver that the user's configuration caused.
fn is_request_error(e: &kiln_debian::Error) -> bool {
    use kiln_debian::Error as E;
    matches!(
        e,
        E::UnknownPackage { .. }
            | E::PinNotAvailable { .. }
            | E::Unsatisfiable { .. }
            | E::Conflict(_)
            | E::GaveUp { .. }
            | E::InvalidRequest { .. }
            | E::InvalidArchitecture { .. }
            | E::InvalidSource { .. }
    )
}

fn debian_failure(variant: &str, e: &kiln_debian::Error) -> Failure {
    let text = format!("{variant}: {}", chain(e));
    if is_request_error(e) {
        Failure::Config(text)
    } else {
        Failure::Build(text)
    }
}

/// Everything needed to resolve one variant's packages.
pub struct PackageJob<'a> {
    pub variant: &'a Variant,
    pub suite: &'a str,
    pub request: ResolveRequest,
}

/// The packages a variant resolves: for a bootstrap, its base set and
/// packages; over a parent, its own packages (against the suite of the
/// bootstrap it descends from); none when it adds no packages.
pub fn package_job(plan: &Plan, id: usize) -> Option<PackageJob<'_>> {
    let v = &plan.variants[id];
    let root = &plan.variants[*plan
        .ancestry(id)
        .last()
        .expect("a chain ends in a bootstrap")];
    let Base::Bootstrap { suite, variant, .. } = &root.settings.base else {
        return None;
    };
    let bootstrap = std::ptr::eq(root, v);
    let mut packages: Vec<PackageRequest> = v
        .settings
        .packages
        .iter()
        .map(|p| PackageRequest {
            name: p.name.clone(),
            version: p.version.clone(),
        })
        .collect();
    for name in implied_packages(&v.settings) {
        if !packages.iter().any(|p| p.name == name) {
            packages.push(PackageRequest {
                name,
                version: None,
            });
        }
    }
    if !bootstrap && packages.is_empty() {
        return None;
    }
    let base = match (bootstrap, variant) {
        (false, _) => BaseSet::None,
        (true, BootstrapVariant::Minbase | BootstrapVariant::Required) => BaseSet::Required,
        (true, BootstrapVariant::Essential) => BaseSet::Essential,
    };
    Some(PackageJob {
        variant: v,
        suite,
        request: ResolveRequest {
            base,
            base_suite: Some(suite.clone()),
            packages,
        },
    })
}

/// The Debian kernel package of an architecture (its `linux-image-*`
/// metapackage, which follows the suite's current kernel).
fn kernel_package(arch: &str) -> String {
    let flavour = match arch {
        "i386" => "686-pae",
        "armhf" => "armmp",
        "ppc64el" => "powerpc64le",
        other => other,
    };
    format!("linux-image-{flavour}")
}

/// What a variant's settings install beyond its `packages`: with `kernel`,
/// the kernel and initramfs-tools (which makes the initrd when the kernel
/// is configured); for a disk output, the boot loader its firmware needs
/// (`grub-pc-bin` for BIOS, `systemd-boot-efi` for UEFI; both for a
/// hybrid disk, the default).
pub fn implied_packages(settings: &kiln_config::ImageSettings) -> Vec<String> {
    use kiln_config::output::{Firmware, OutputOptions};
    let mut out = Vec::new();
    if settings.kernel {
        out.push(kernel_package(&settings.arch));
        out.push("initramfs-tools".to_owned());
    }
    if settings.netboot {
        out.push(kiln_config::netboot::PACKAGE.to_owned());
    }
    for output in &settings.outputs {
        let OutputOptions::Disk(disk) = &output.options else {
            continue;
        };
        let bios = output.boots_bios(&settings.arch);
        let uefi = disk.firmware != Firmware::Bios;
        for (wanted, name) in [(bios, "grub-pc-bin"), (uefi, "systemd-boot-efi")] {
            if wanted && !out.iter().any(|p| p == name) {
                out.push(name.to_owned());
            }
        }
    }
    out
}

/// kiln-debian's progress as build events: retries as notices, each
/// package ready as a download event with the bytes so far.
pub struct FetchProgress<'a> {
    events: &'a dyn EventSink,
    variant: &'a str,
    cancel: Option<&'a std::sync::atomic::AtomicBool>,
    /// Bytes of the packages being downloaded, and bytes ready so far
    /// (locked while an event is sent, so the counts only grow).
    total: std::sync::atomic::AtomicU64,
    done: std::sync::Mutex<u64>,
}

impl<'a> FetchProgress<'a> {
    pub fn new(
        events: &'a dyn EventSink,
        variant: &'a str,
        cancel: Option<&'a std::sync::atomic::AtomicBool>,
    ) -> Self {
        Self {
            events,
            variant,
            cancel,
            total: 0.into(),
            done: std::sync::Mutex::new(0),
        }
    }

    /// Starts a batch of `total` bytes.
    pub fn expect(&self, total: u64) {
        use std::sync::atomic::Ordering;
        self.total.store(total, Ordering::SeqCst);
        *self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = 0;
    }
}

impl kiln_debian::Progress for FetchProgress<'_> {
    fn event(&self, event: &kiln_debian::Event<'_>) {
        use std::sync::atomic::Ordering;
        match event {
            kiln_debian::Event::Retrying {
                url,
                attempt,
                delay,
                error,
            } => self.events.event(&Event::Notice {
                variant: self.variant.to_owned(),
                text: format!(
                    "retrying {url} in {:.1}s (attempt {attempt} failed: {error})",
                    delay.as_secs_f64()
                ),
            }),
            kiln_debian::Event::PackageReady {
                name, size, cached, ..
            } => {
                let mut done = self
                    .done
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *done += size;
                let done = *done;
                self.events.event(&Event::Download {
                    variant: self.variant.to_owned(),
                    package: (*name).to_owned(),
                    bytes: *size,
                    cached: *cached,
                    done_bytes: done,
                    total_bytes: self.total.load(Ordering::SeqCst).max(done),
                });
            }
            _ => {}
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Identifies what a variant's packages were resolved for (suite, base
/// set, architecture, requested packages), recorded beside its lock entry.
pub fn request_id(job: &PackageJob<'_>) -> String {
    let mut text = format!(
        "{}\n{:?}\n{}\n",
        job.suite, job.request.base, job.variant.settings.arch
    );
    for p in &job.request.packages {
        text.push_str(&format!(
            "{}={}\n",
            p.name,
            p.version.as_deref().unwrap_or("")
        ));
    }
    blake3::hash(text.as_bytes()).to_hex()[..32].to_string()
}

/// Opens the Debian source of a variant and fetches its verified indexes.
pub fn open_source(
    b: &PackageJob<'_>,
    tree: &kiln_config::Tree,
    settings: &BuildSettings,
    progress: &FetchProgress<'_>,
) -> Result<(DebianSource, Vec<kiln_debian::AptSource>), Failure> {
    let name = &b.variant.name;
    let sources = crate::sources::for_suite(
        &tree.sources,
        b.suite,
        &settings.cache_dir.join("keys"),
        &tree.root,
    )
    .map_err(|e| {
        Failure::Build(format!(
            "{name}: failed to copy a keyring to the cache: {e}"
        ))
    })?;
    if sources.is_empty() {
        return Err(Failure::Config(format!(
            "{name}: no package source for suite `{}`",
            b.suite
        )));
    }
    let arch = Architecture::new(&b.variant.settings.arch).map_err(|e| debian_failure(name, &e))?;
    let options = RepositoryOptions {
        cache_dir: settings.cache_dir.clone(),
        offline: settings.offline,
        retry: RetryPolicy::default(),
        now: None,
    };
    let mut source =
        DebianSource::new(sources.clone(), arch, options).map_err(|e| debian_failure(name, &e))?;
    source
        .fetch_indexes(progress)
        .map_err(|e| debian_failure(name, &e))?;
    Ok((source, sources))
}

/// Resolves a variant: the lock's set while it still fits, else afresh.
pub fn resolve(
    b: &PackageJob<'_>,
    source: &DebianSource,
    lock: &mut TreeLock,
    settings: &BuildSettings,
    events: &dyn EventSink,
) -> Result<InstallSet, Failure> {
    let name = &b.variant.name;
    let request = request_id(b);
    let current = lock.requests.get(name) == Some(&request);
    if let Some(locked) = lock.variants.get(name).filter(|_| current) {
        match source.resolve_locked(&b.request, locked) {
            Ok(set) => return Ok(set),
            Err(e) if settings.locked => {
                return Err(Failure::Build(format!(
                    "{name}: `{}` does not fit the configuration: {}\n  help: run `kiln lock` to update it",
                    LOCK_FILE,
                    chain(&e)
                )));
            }
            Err(e) => events.event(&Event::Notice {
                variant: name.clone(),
                text: format!("lock no longer fits ({e}); resolving again"),
            }),
        }
    } else if settings.locked {
        return Err(Failure::Build(format!(
            "{name}: `{LOCK_FILE}` has no entry for this variant's present configuration\n  help: run `kiln lock` to update it"
        )));
    }
    let set = source
        .resolve(&b.request)
        .map_err(|e| debian_failure(name, &e))?;
    lock.variants
        .insert(name.clone(), kiln_debian::LockFile::from_install_set(&set));
    lock.requests.insert(name.clone(), request);
    Ok(set)
}

/// The tree's `kiln.lock` (empty when there is none), read beneath the tree
/// root like every file of the tree: a `kiln.lock` that is a symbolic link
/// out of the tree is an error, never read.
pub fn read_lock(lock_path: &Path) -> Result<TreeLock, kiln_debian::Error> {
    let io_error = |source| kiln_debian::Error::LockIo {
        path: lock_path.to_owned(),
        source,
    };
    let (Some(dir), Some(name)) = (lock_path.parent(), lock_path.file_name()) else {
        return TreeLock::read_or_default(lock_path);
    };
    let root = kiln_config::TreeRoot::open_root(dir).map_err(io_error)?;
    match root.read(Path::new(name)) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| {
                io_error(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not valid UTF-8",
                ))
            })?;
            TreeLock::parse(&text, lock_path)
        }
        Err(kiln_config::tree_fs::OpenError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(TreeLock::default())
        }
        Err(kiln_config::tree_fs::OpenError::Outside) => Err(io_error(std::io::Error::other(
            "it is a symbolic link leading out of the tree",
        ))),
        Err(kiln_config::tree_fs::OpenError::Io(e)) => Err(io_error(e)),
    }
}

/// `kiln lock`: every variant's packages resolved afresh, `kiln.lock`
/// written.
pub fn lock(
    ws: &Workspace,
    plan: &Plan,
    offline: bool,
    events: &dyn EventSink,
) -> Result<Vec<LockedVariant>, Error> {
    let options = BuildOptions {
        offline,
        ..BuildOptions::default()
    };
    let settings = BuildSettings::new(ws, &options)?;
    let tree = ws.tree();
    let mut lock = read_lock(&settings.lock_path).map_err(|source| Error::Lock {
        source,
        write: false,
    })?;
    let mut out = Vec::new();
    let variant_error = |name: &str, f: Failure| {
        let (text, config) = match f {
            Failure::Build(t) => (t, false),
            Failure::Config(t) => (t, true),
        };
        Error::Variant {
            variant: name.to_owned(),
            message: text,
            config,
        }
    };
    for b in (0..plan.variants.len()).filter_map(|i| package_job(plan, i)) {
        let name = &b.variant.name;
        let progress = FetchProgress::new(events, name, None);
        let (source, _) =
            open_source(&b, tree, &settings, &progress).map_err(|f| variant_error(name, f))?;
        let set = source
            .resolve(&b.request)
            .map_err(|e| variant_error(name, debian_failure(name, &e)))?;
        out.push(LockedVariant {
            name: name.clone(),
            packages: set.packages.len(),
        });
        lock.variants
            .insert(name.clone(), kiln_debian::LockFile::from_install_set(&set));
        lock.requests.insert(name.clone(), request_id(&b));
    }
    lock.write(&settings.lock_path)
        .map_err(|source| Error::Lock {
            source,
            write: true,
        })?;
    Ok(out)
}
