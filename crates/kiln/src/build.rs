//! `kiln build` and `kiln lock`: from a plan to roots on disk.
//!
//! For each selected bootstrap variant: the apt sources of its suite,
//! verified indexes, a resolution (or the lock's), verified downloads into
//! the shared cache, then `kiln-dpkg` assembles the root in a temporary
//! folder beside the output, which replaces `OUT/<variant>` only when
//! complete.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use kiln_config::settings::{Base, BootstrapVariant};
use kiln_debian::{
    Architecture, BaseSet, DebianSource, DistributionSource, InstallSet, PackageCache,
    PackageRequest, RepositoryOptions, ResolveRequest, RetryPolicy, TreeLock,
};
use kiln_plan::{Plan, Selection, Variant};

use crate::cli::{BuildArgs, FetchArgs, LockArgs};
use crate::plan::load_plan;
use crate::progress::Reporter;
use crate::report::Style;
use crate::{Failure, Outcome};

/// The name of the lock file at the tree root.
pub const LOCK_FILE: &str = "kiln.lock";

/// Settings of a build, resolved once from flags, kiln.toml and environment.
#[derive(Debug)]
struct BuildSettings {
    cache_dir: PathBuf,
    out_dir: PathBuf,
    lock_path: PathBuf,
    offline: bool,
    locked: bool,
    jobs: usize,
}

fn cache_dir(fetch: &FetchArgs, tree: &kiln_config::Tree) -> Result<PathBuf, Failure> {
    if let Some(d) = &fetch.cache_dir {
        return Ok(d.clone());
    }
    if let Some(d) = &tree.cache_dir {
        return Ok(tree.root.join(d));
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

fn selection(args: &crate::cli::SelectArgs) -> Selection {
    Selection {
        only: args.only.clone(),
        skip: args.skip.clone(),
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
            | E::InvalidRequest { .. }
            | E::InvalidArchitecture { .. }
            | E::InvalidSource { .. }
    )
}

/// Text of an error and its causes.
fn chain(e: &dyn std::error::Error) -> String {
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

/// Everything needed to resolve one bootstrap variant.
struct Bootstrap<'a> {
    variant: &'a Variant,
    suite: &'a str,
    request: ResolveRequest,
}

fn bootstrap_of(v: &Variant) -> Option<Bootstrap<'_>> {
    let Base::Bootstrap { suite, variant, .. } = &v.settings.base else {
        return None;
    };
    let base = match variant {
        BootstrapVariant::Minbase | BootstrapVariant::Required => BaseSet::Required,
        BootstrapVariant::Essential => BaseSet::Essential,
    };
    let packages = v
        .settings
        .packages
        .iter()
        .map(|p| PackageRequest {
            name: p.name.clone(),
            version: p.version.clone(),
        })
        .collect();
    Some(Bootstrap {
        variant: v,
        suite,
        request: ResolveRequest {
            base,
            base_suite: Some(suite.clone()),
            packages,
        },
    })
}

/// Progress events from kiln-debian, forwarded to the reporter.
struct FetchProgress<'a> {
    reporter: &'a Reporter,
    variant: &'a str,
    downloaded: Mutex<(usize, u64)>,
}

impl kiln_debian::Progress for FetchProgress<'_> {
    fn event(&self, event: &kiln_debian::Event<'_>) {
        match event {
            kiln_debian::Event::Retrying {
                url,
                attempt,
                delay,
                error,
            } => self.reporter.step(
                self.variant,
                &format!(
                    "retrying {url} in {:.1}s (attempt {attempt} failed: {error})",
                    delay.as_secs_f64()
                ),
            ),
            kiln_debian::Event::PackageReady {
                size, cached, done, ..
            } => {
                if !cached {
                    let mut d = self.downloaded.lock().expect("not poisoned");
                    d.0 += 1;
                    d.1 += size;
                }
                self.reporter.set(*done as u64);
            }
            _ => {}
        }
    }
}

/// Opens the Debian source of a variant and fetches its verified indexes.
fn open_source(
    b: &Bootstrap<'_>,
    tree: &kiln_config::Tree,
    settings: &BuildSettings,
    progress: &FetchProgress<'_>,
) -> Result<(DebianSource, Vec<kiln_debian::AptSource>), Failure> {
    let name = &b.variant.name;
    let sources =
        crate::sources::for_suite(&tree.sources, b.suite, &settings.cache_dir.join("keys"))
            .map_err(|e| {
                Failure::Build(format!(
                    "error: {name}: failed to write a keyring to the cache: {e}\n"
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
fn resolve(
    b: &Bootstrap<'_>,
    source: &DebianSource,
    lock: &mut TreeLock,
    settings: &BuildSettings,
    reporter: &Reporter,
) -> Result<InstallSet, Failure> {
    let name = &b.variant.name;
    if let Some(locked) = lock.variants.get(name) {
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
            "error: {name}: `{LOCK_FILE}` has no entry for this variant\n  help: run `kiln lock` to create it\n"
        )));
    }
    let set = source
        .resolve(&b.request)
        .map_err(|e| debian_failure(name, &e))?;
    lock.variants
        .insert(name.clone(), kiln_debian::LockFile::from_install_set(&set));
    Ok(set)
}

pub fn run_lock(args: &LockArgs, style: Style) -> Outcome {
    let (tree, plan) = load_plan(&args.dir, &selection(&args.select), style)?;
    let settings = BuildSettings {
        cache_dir: cache_dir(&args.fetch, &tree)?,
        out_dir: tree.root.join(&tree.output.dir),
        lock_path: tree.root.join(LOCK_FILE),
        offline: args.fetch.offline,
        locked: false,
        jobs: 1,
    };
    let reporter = Reporter::new(false);
    let mut lock = TreeLock::read_or_default(&settings.lock_path)
        .map_err(|e| Failure::Config(format!("error: {}\n", chain(&e))))?;
    let mut out = String::new();
    for b in plan.variants.iter().filter_map(bootstrap_of) {
        let progress = FetchProgress {
            reporter: &reporter,
            variant: &b.variant.name,
            downloaded: Mutex::new((0, 0)),
        };
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
    }
    lock.write(&settings.lock_path)
        .map_err(|e| Failure::Build(format!("error: {}\n", chain(&e))))?;
    out.push_str(&format!("wrote {}\n", settings.lock_path.display()));
    Ok(out)
}

pub fn run_build(args: &BuildArgs, style: Style) -> Outcome {
    let (tree, plan) = load_plan(&args.dir, &selection(&args.select), style)?;
    let settings = BuildSettings {
        cache_dir: cache_dir(&args.fetch, &tree)?,
        out_dir: tree.root.join(&tree.output.dir),
        lock_path: tree.root.join(LOCK_FILE),
        offline: args.fetch.offline,
        locked: args.locked,
        jobs: args.jobs.max(1),
    };
    let reporter = Reporter::new(false);
    std::fs::create_dir_all(&settings.out_dir).map_err(|e| {
        Failure::Build(format!(
            "error: failed to create `{}`: {e}\n",
            settings.out_dir.display()
        ))
    })?;
    crate::staging::clean_stale(&settings.out_dir);
    let mut lock = TreeLock::read_or_default(&settings.lock_path)
        .map_err(|e| Failure::Config(format!("error: {}\n", chain(&e))))?;
    let lock_before = lock.clone();

    let mut summary = String::new();
    let mut failure = None;
    for v in &plan.variants {
        let Some(b) = bootstrap_of(v) else {
            summary.push_str(&format!(
                "{:<24} not built: layered builds over `{}` are not implemented yet\n",
                v.name,
                parent_name(&plan, v)
            ));
            continue;
        };
        if failure.is_some() {
            summary.push_str(&format!(
                "{:<24} skipped after an earlier failure\n",
                v.name
            ));
            continue;
        }
        match build_bootstrap(&b, &tree, &settings, &mut lock, &reporter) {
            Ok(line) => summary.push_str(&line),
            Err(f) => {
                summary.push_str(&format!("{:<24} failed\n", v.name));
                failure = Some(f);
            }
        }
    }
    if lock != lock_before && !settings.locked {
        lock.write(&settings.lock_path)
            .map_err(|e| Failure::Build(format!("error: {}\n", chain(&e))))?;
    }
    match failure {
        Some(Failure::Build(text)) => Err(Failure::Build(format!("{summary}{text}"))),
        Some(Failure::Config(text)) => Err(Failure::Config(format!("{summary}{text}"))),
        None => Ok(summary),
    }
}

fn parent_name<'p>(plan: &'p Plan, v: &Variant) -> &'p str {
    v.parent.map_or("?", |p| plan.variants[p].name.as_str())
}

fn build_bootstrap(
    b: &Bootstrap<'_>,
    tree: &kiln_config::Tree,
    settings: &BuildSettings,
    lock: &mut TreeLock,
    reporter: &Reporter,
) -> Result<String, Failure> {
    let name = &b.variant.name;
    let started = Instant::now();
    let progress = FetchProgress {
        reporter,
        variant: name,
        downloaded: Mutex::new((0, 0)),
    };
    reporter.step(
        name,
        &format!("fetching verified indexes for `{}`", b.suite),
    );
    let (source, apt_sources) = open_source(b, tree, settings, &progress)?;
    let set = resolve(b, &source, lock, settings, reporter)?;
    reporter.step(name, &format!("{} packages to install", set.packages.len()));

    let cache =
        PackageCache::new(&settings.cache_dir, RetryPolicy::default()).offline(settings.offline);
    reporter.start(name, "download", set.packages.len() as u64);
    let fetched = source.download(&set, &cache, &progress);
    reporter.finish();
    let fetched = fetched.map_err(|e| debian_failure(name, &e))?;
    let (count, bytes) = *progress.downloaded.lock().expect("not poisoned");
    reporter.step(
        name,
        &format!(
            "downloaded {count} packages ({:.1} MB), {} from the cache",
            bytes as f64 / 1e6,
            fetched.len() - count
        ),
    );

    let debs: Vec<kiln_dpkg::DebFile> = fetched
        .iter()
        .map(|c| kiln_dpkg::DebFile {
            name: c.name.clone(),
            path: c.path.clone(),
            essential: set.get(&c.name).is_some_and(|p| p.essential),
        })
        .collect();
    let stage = crate::staging::Stage::new(&settings.out_dir, name).map_err(|e| {
        Failure::Build(format!(
            "error: {name}: failed to create a staging folder: {e}\n"
        ))
    })?;
    let options = kiln_dpkg::AssembleOptions {
        arch: b.variant.settings.arch.clone(),
        jobs: settings.jobs,
        merged_usr: true,
    };
    reporter.start(name, "unpack", debs.len() as u64);
    let report = kiln_dpkg::bootstrap(
        &stage.path().join("rootfs"),
        &debs,
        &options,
        &|e: &kiln_dpkg::Event| match e {
            kiln_dpkg::Event::Unpacked { done, .. } => reporter.set(*done as u64),
            kiln_dpkg::Event::Step { name: step } => reporter.step(name, step),
            kiln_dpkg::Event::ScriptOutput { .. } => {}
        },
    );
    reporter.finish();
    let report = report.map_err(|e| Failure::Build(format!("error: {name}: {}\n", chain(&e))))?;
    // The image's apt sees what the build saw: same sources, same verified lists.
    kiln_debian::target::configure_apt(
        &stage.path().join("rootfs"),
        &apt_sources,
        source.indexes(),
    )
    .map_err(|e| Failure::Build(format!("error: {name}: {}\n", chain(&e))))?;
    let dest = settings.out_dir.join(name);
    stage.commit(&dest).map_err(|e| {
        Failure::Build(format!(
            "error: {name}: failed to move the new root into `{}`: {e}\n",
            dest.display()
        ))
    })?;
    Ok(format!(
        "{:<24} built {}/rootfs ({} packages, {} files) in {:.1}s\n",
        name,
        dest.display(),
        report.packages,
        report.files,
        started.elapsed().as_secs_f64()
    ))
}
