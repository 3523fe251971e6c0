//! The Debian side of a build, and `kiln lock`: the apt sources of a
//! variant's suite, verified indexes, a resolution (or the lock's) and the
//! settings every build step shares. `engine.rs` drives the build itself.

use std::path::{Path, PathBuf};

use kiln_config::settings::{Base, BootstrapVariant};
use kiln_debian::{
    Architecture, BaseSet, DebianSource, DistributionSource, InstallSet, PackageRequest,
    RepositoryOptions, ResolveRequest, RetryPolicy, TreeLock,
};
use kiln_plan::{Plan, Selection, Variant};

use crate::cli::{FetchArgs, LockArgs};
use crate::plan::load_plan;
use crate::progress::Reporter;
use crate::report::Style;
use crate::{Failure, Outcome};

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
    pub fn resolve(
        tree: &kiln_config::Tree,
        fetch: &FetchArgs,
        locked: bool,
        jobs: usize,
    ) -> Result<Self, Failure> {
        Ok(Self {
            cache_dir: cache_dir(fetch.cache_dir.as_deref(), Some(tree))?,
            out_dir: tree.root.join(&tree.output.dir),
            lock_path: tree.root.join(LOCK_FILE),
            offline: fetch.offline,
            locked,
            jobs: jobs.max(1),
            epoch: epoch_override(tree)?,
        })
    }
}

/// The build's `SOURCE_DATE_EPOCH` when one is given: the environment's
/// (an empty value counts as unset), else the tree's `[output] epoch`.
/// A value that is not a whole number of seconds since 1970 is an error,
/// as the reproducible-builds specification asks, not a fallback.
pub fn epoch_override(tree: &kiln_config::Tree) -> Result<Option<i64>, Failure> {
    match std::env::var_os("SOURCE_DATE_EPOCH") {
        Some(value) if !value.is_empty() => {
            let text = value.to_string_lossy();
            match text.parse::<i64>() {
                Ok(secs) if secs >= 0 => Ok(Some(secs)),
                _ => Err(Failure::Config(format!(
                    "error: `SOURCE_DATE_EPOCH` is `{text}`, not a number of seconds since 1970-01-01 00:00:00 UTC\n  help: set it to a whole number such as `$(git log -1 --format=%ct)`, or unset it to date each image by its newest package\n"
                ))),
            }
        }
        _ => Ok(tree.output.epoch),
    }
}

pub fn cache_dir(
    flag: Option<&std::path::Path>,
    tree: Option<&kiln_config::Tree>,
) -> Result<PathBuf, Failure> {
    if let Some(d) = flag {
        return Ok(d.to_path_buf());
    }
    if let Some(d) = tree.and_then(|t| t.cache_dir.as_ref().map(|c| t.root.join(c))) {
        return Ok(d);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("kiln"));
    }
    match std::env::var_os("HOME").filter(|x| !x.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache/kiln")),
        None => Err(Failure::Config(
            "error: failed to choose a package cache: neither `--cache-dir`, `[cache] dir`, XDG_CACHE_HOME nor HOME is set\n".into(),
        )),
    }
}

pub fn selection(args: &crate::cli::SelectArgs) -> Selection {
    Selection {
        only: args.only.clone(),
        skip: args.skip.clone(),
    }
}

/// Whether `--only`/`--skip` name this variant itself (not only as an
/// ancestor of a selected one).
pub fn selected(v: &Variant, args: &crate::cli::SelectArgs) -> bool {
    let is = |w: &String| v.image == *w || v.holds(w);
    (args.only.is_empty() || args.only.iter().any(is)) && !args.skip.iter().any(is)
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

/// Text of an error and its causes.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!("\n  caused by: {c}"));
        cur = c.source();
    }
    s
}

fn debian_failure(variant: &str, e: &kiln_debian::Error) -> Failure {
    let text = format!("error: {variant}: {}\n", chain(e));
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

/// Progress events from kiln-debian that a user should see: retries.
pub struct FetchProgress<'a> {
    reporter: &'a Reporter,
    variant: &'a str,
}

impl<'a> FetchProgress<'a> {
    pub fn new(reporter: &'a Reporter, variant: &'a str) -> Self {
        Self { reporter, variant }
    }
}

impl kiln_debian::Progress for FetchProgress<'_> {
    fn event(&self, event: &kiln_debian::Event<'_>) {
        if let kiln_debian::Event::Retrying {
            url,
            attempt,
            delay,
            error,
        } = event
        {
            self.reporter.step(
                self.variant,
                &format!(
                    "retrying {url} in {:.1}s (attempt {attempt} failed: {error})",
                    delay.as_secs_f64()
                ),
            );
        }
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
            "error: {name}: failed to copy a keyring to the cache: {e}\n"
        ))
    })?;
    if sources.is_empty() {
        return Err(Failure::Config(format!(
            "error: {name}: no package source for suite `{}`\n",
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
    reporter: &Reporter,
) -> Result<InstallSet, Failure> {
    let name = &b.variant.name;
    let request = request_id(b);
    let current = lock.requests.get(name) == Some(&request);
    if let Some(locked) = lock.variants.get(name).filter(|_| current) {
        match source.resolve_locked(&b.request, locked) {
            Ok(set) => return Ok(set),
            Err(e) if settings.locked => {
                return Err(Failure::Build(format!(
                    "error: {name}: `{}` does not fit the configuration: {}\n  help: run `kiln lock` to update it\n",
                    LOCK_FILE,
                    chain(&e)
                )));
            }
            Err(e) => reporter.step(name, &format!("lock no longer fits ({e}); resolving again")),
        }
    } else if settings.locked {
        return Err(Failure::Build(format!(
            "error: {name}: `{LOCK_FILE}` has no entry for this variant's present configuration\n  help: run `kiln lock` to update it\n"
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

pub fn run_lock(args: &LockArgs, style: Style) -> Outcome {
    let (tree, plan) = load_plan(&args.dir, &selection(&args.select), style)?;
    let settings = BuildSettings::resolve(&tree, &args.fetch, false, 1)?;
    let reporter = Reporter::new();
    let mut lock = read_lock(&settings.lock_path)
        .map_err(|e| Failure::Config(format!("error: {}\n", chain(&e))))?;
    let mut out = String::new();
    for b in (0..plan.variants.len()).filter_map(|i| package_job(&plan, i)) {
        let progress = FetchProgress::new(&reporter, &b.variant.name);
        let (source, _) = open_source(&b, &tree, &settings, &progress)?;
        let set = source
            .resolve(&b.request)
            .map_err(|e| debian_failure(&b.variant.name, &e))?;
        out.push_str(&format!(
            "{}: {} packages\n",
            b.variant.name,
            set.packages.len()
        ));
        lock.variants.insert(
            b.variant.name.clone(),
            kiln_debian::LockFile::from_install_set(&set),
        );
        lock.requests.insert(b.variant.name.clone(), request_id(&b));
    }
    lock.write(&settings.lock_path)
        .map_err(|e| Failure::Build(format!("error: {}\n", chain(&e))))?;
    out.push_str(&format!("wrote {}\n", settings.lock_path.display()));
    Ok(out)
}
