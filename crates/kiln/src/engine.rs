//! `kiln build`: the plan's variants, built as layers in the store.
//!
//! Every variant is one layer stored under its input digest. A variant
//! whose layer is in the store is `cached`; otherwise it is built:
//!
//! - a bootstrap variant's layer is a whole root: packages resolved and
//!   downloaded by `kiln-debian`, assembled by `kiln-dpkg`, then provisioned;
//! - any other variant's parent layers are mounted read-only as the lower
//!   directories of an overlayfs over a fresh upper directory; its packages
//!   are installed and it is provisioned in the merged view; the upper
//!   directory is its layer.
//!
//! Independent variants build in parallel (`--parallel N`); a failure stops
//! the variant's descendants only. Each variant's full log is kept in
//! `OUT/<variant>/build.log`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use kiln_config::settings::Base;
use kiln_debian::TreeLock;
use kiln_plan::{Plan, Variant};
use kiln_store::{InputKey, Store};

use crate::build::{BuildSettings, FetchProgress, chain, open_source, package_job, resolve};
use crate::cli::BuildArgs;
use crate::manifest::{Manifest, VariantEntry};
use crate::plan::load_plan;
use crate::progress::Reporter;
use crate::report::Style;
use crate::{Failure, Outcome};

/// How a variant's build ended.
#[derive(Clone, Debug)]
enum Status {
    Pending,
    Running,
    Cached,
    Built(f64),
    /// The text, and whether the configuration caused it (exit 2).
    Failed(String, bool),
    Skipped(String),
}

impl Status {
    fn usable(&self) -> bool {
        matches!(self, Status::Cached | Status::Built(_))
    }
}

/// A variant's build log: every line of every step, with the step's name.
struct VariantLog {
    file: Mutex<fs::File>,
}

impl VariantLog {
    fn create(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join("build.log");
        let file = fs::File::create(&path)?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    fn line(&self, step: &str, text: &str) {
        if let Ok(mut f) = self.file.lock() {
            let _ = writeln!(f, "[{step}] {text}");
        }
    }
}

/// Everything the workers share.
struct Ctx<'a> {
    tree: &'a kiln_config::Tree,
    plan: &'a Plan,
    settings: &'a BuildSettings,
    store: &'a Store,
    reporter: &'a Reporter,
    lock: &'a Mutex<TreeLock>,
    revise: &'a BTreeSet<usize>,
    /// Each variant's layer key, once its lock entry is known.
    keys: &'a Mutex<Vec<Option<InputKey>>>,
    /// Each variant's `SOURCE_DATE_EPOCH`, once known: the build's when
    /// given, else the newest build date of the packages in its root.
    epochs: &'a Mutex<Vec<Option<i64>>>,
    /// Verified indexes by (suite, architecture), fetched once per build.
    sources: &'a Mutex<std::collections::BTreeMap<(String, String), Arc<OpenSource>>>,
    /// `OUT/manifest.json` as the build found it (for revisions).
    previous: &'a Manifest,
    /// The manifest entries of the variants this build finished.
    entries: &'a Mutex<Vec<VariantEntry>>,
    /// Threads a writer may compress on.
    threads: usize,
}

/// A Debian source with its indexes fetched, and the apt sources behind it.
struct OpenSource {
    source: kiln_debian::DebianSource,
    apt: Vec<kiln_debian::AptSource>,
}

pub fn run_build(args: &BuildArgs, style: Style) -> Outcome {
    let (tree, plan) = load_plan(&args.dir, &crate::build::selection(&args.select), style)?;
    let settings = BuildSettings::resolve(&tree, &args.fetch, args.locked, args.jobs)?;
    let store = Store::open(&settings.cache_dir.join("store"))
        .map_err(|e| Failure::Build(format!("error: {}\n", chain(&e))))?;
    let reporter = Reporter::new();
    fs::create_dir_all(&settings.out_dir).map_err(|e| {
        Failure::Build(format!(
            "error: failed to create `{}`: {e}\n",
            settings.out_dir.display()
        ))
    })?;
    crate::staging::clean_stale(&settings.out_dir);
    let lock = crate::build::read_lock(&settings.lock_path)
        .map_err(|e| Failure::Config(format!("error: {}\n", chain(&e))))?;
    let lock_before = lock.clone();
    let lock = Mutex::new(lock);
    // `--revise` rebuilds the selected variants (the plan holds their
    // ancestors too; those are only rebuilt when selected by name or key).
    let revise: BTreeSet<usize> = if args.revise {
        plan.variants
            .iter()
            .enumerate()
            .filter(|(_, v)| crate::build::selected(v, &args.select))
            .map(|(i, _)| i)
            .collect()
    } else {
        BTreeSet::new()
    };
    let sources = Mutex::new(std::collections::BTreeMap::new());
    let keys = Mutex::new(vec![None; plan.variants.len()]);
    let epochs = Mutex::new(vec![None; plan.variants.len()]);
    let previous = Manifest::read(&settings.out_dir);
    let entries = Mutex::new(Vec::new());
    let ctx = Ctx {
        previous: &previous,
        entries: &entries,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        tree: &tree,
        plan: &plan,
        settings: &settings,
        store: &store,
        reporter: &reporter,
        lock: &lock,
        revise: &revise,
        sources: &sources,
        keys: &keys,
        epochs: &epochs,
    };

    let n = plan.variants.len();
    let state = Mutex::new(vec![Status::Pending; n]);
    let wake = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..args.parallel.max(1) {
            scope.spawn(|| worker(&ctx, &state, &wake));
        }
    });
    let statuses = state.into_inner().expect("workers finished");

    let lock = lock.into_inner().expect("not poisoned");
    if lock != lock_before && !settings.locked {
        lock.write(&settings.lock_path)
            .map_err(|e| Failure::Build(format!("error: {}\n", chain(&e))))?;
    }
    let mut manifest = previous.clone();
    let entries = entries.into_inner().expect("not poisoned");
    let finished = entries.clone();
    manifest.update(entries);
    manifest.write(&settings.out_dir).map_err(|e| {
        Failure::Build(format!(
            "error: failed to write `{}`: {e}\n",
            settings
                .out_dir
                .join(crate::manifest::MANIFEST_FILE)
                .display()
        ))
    })?;
    let summary = summarize(&plan, &settings, &statuses, &finished);
    if args.json {
        let json = serde_json::to_string_pretty(&manifest).expect("serializable") + "\n";
        return match summary {
            Ok(_) => Ok(json),
            Err(Failure::Build(text)) => Err(Failure::Build(json + &text)),
            Err(Failure::Config(text)) => Err(Failure::Config(json + &text)),
        };
    }
    summary
}

/// Takes ready variants until none is left.
fn worker(ctx: &Ctx<'_>, state: &Mutex<Vec<Status>>, wake: &Condvar) {
    loop {
        let next = {
            let mut s = state.lock().expect("not poisoned");
            loop {
                // Skip what cannot be built any more, then pick a ready one.
                for i in 0..s.len() {
                    if let (Status::Pending, Some(p)) = (&s[i], ctx.plan.variants[i].parent) {
                        match &s[p] {
                            Status::Failed(..) | Status::Skipped(_) => {
                                s[i] = Status::Skipped(format!(
                                    "`{}` did not build",
                                    ctx.plan.variants[p].name
                                ));
                            }
                            _ => {}
                        }
                    }
                }
                let ready = (0..s.len()).find(|&i| {
                    matches!(s[i], Status::Pending)
                        && ctx.plan.variants[i].parent.is_none_or(|p| s[p].usable())
                });
                if let Some(i) = ready {
                    s[i] = Status::Running;
                    break Some(i);
                }
                if !s
                    .iter()
                    .any(|x| matches!(x, Status::Pending | Status::Running))
                {
                    break None;
                }
                s = wake.wait(s).expect("not poisoned");
            }
        };
        let Some(i) = next else {
            wake.notify_all();
            return;
        };
        let result = build_variant(ctx, i);
        let mut s = state.lock().expect("not poisoned");
        s[i] = result;
        drop(s);
        wake.notify_all();
    }
}

fn summarize(
    plan: &Plan,
    settings: &BuildSettings,
    statuses: &[Status],
    finished: &[VariantEntry],
) -> Outcome {
    let mut out = String::new();
    let mut failed = None;
    let mut counts = [0usize; 4];
    for (v, s) in plan.variants.iter().zip(statuses) {
        let log = settings.out_dir.join(&v.name).join("build.log");
        let (word, detail) = match s {
            Status::Cached => {
                counts[1] += 1;
                ("cached", String::new())
            }
            Status::Built(secs) => {
                counts[0] += 1;
                ("built", format!("in {secs:.1}s"))
            }
            Status::Failed(msg, config) => {
                counts[2] += 1;
                failed = Some(failed.unwrap_or(true) && *config);
                ("failed", msg.clone())
            }
            Status::Skipped(why) => {
                counts[3] += 1;
                ("skipped", why.clone())
            }
            Status::Pending | Status::Running => ("skipped", "not reached".to_string()),
        };
        let log_note = if matches!(s, Status::Built(_) | Status::Failed(..)) {
            format!("  (log: {})", log.display())
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:<8} {:<28} {}{log_note}\n",
            word,
            v.name,
            detail.trim_end()
        ));
        if let Some(entry) = finished.iter().find(|e| e.variant == v.name) {
            for a in &entry.artifacts {
                out.push_str(&format!(
                    "           {}  {}\n",
                    settings.out_dir.join(&a.path).display(),
                    crate::store_cmd::mb(a.size)
                ));
            }
        }
    }
    out.push_str(&format!(
        "\n{} built, {} cached, {} failed, {} skipped\n",
        counts[0], counts[1], counts[2], counts[3]
    ));
    match failed {
        None => Ok(out),
        Some(true) => Err(Failure::Config(out)),
        Some(false) => Err(Failure::Build(out)),
    }
}

/// The stored layers of `ids` (bottom first) as a stack, held in use (gc
/// leaves them alone) while the guard lives.
fn stack_of(
    ctx: &Ctx<'_>,
    ids: &[usize],
) -> Result<(kiln_store::UseGuard, kiln_layers::LayerStack), String> {
    let keys: Vec<InputKey> = ids
        .iter()
        .map(|&a| ctx.keys.lock().expect("not poisoned")[a].expect("ancestors are built first"))
        .collect();
    let guard = ctx.store.use_layers(&keys).map_err(|e| chain(&e))?;
    // The guard lists the layers in its own (locking) order: put them back
    // in the stack's, bottom first.
    let layers = keys
        .iter()
        .map(|k| {
            guard
                .layers()
                .iter()
                .find(|l| l.input == *k)
                .map(|l| l.tree.clone())
                .ok_or_else(|| format!("the layer `{k}` is missing from the store"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((guard, kiln_layers::LayerStack { layers }))
}

/// The ancestors of a variant whose layers it builds on, bottom first.
fn lower_chain(plan: &Plan, id: usize) -> Vec<usize> {
    let mut chain = plan.ancestry(id);
    chain.remove(0);
    chain.reverse();
    chain
}

fn build_variant(ctx: &Ctx<'_>, id: usize) -> Status {
    let v = &ctx.plan.variants[id];
    let started = Instant::now();
    let out_dir = ctx.settings.out_dir.join(&v.name);
    let key = match layer_key_of(ctx, id) {
        Ok(k) => k,
        Err(e) => return Status::Failed(e.text, e.config),
    };
    let lock = match ctx.store.lock(&key) {
        Ok(l) => l,
        Err(e) => return Status::Failed(chain(&e), false),
    };
    if !ctx.revise.contains(&id) {
        match ctx.store.get(&key) {
            Ok(Some(layer)) => {
                drop(lock);
                ctx.epochs.lock().expect("not poisoned")[id] =
                    layer.meta.epoch.or(ctx.settings.epoch);
                ctx.reporter.done(&v.name, "cached");
                return match export(ctx, id)
                    .map_err(StepError::build)
                    .and_then(|()| outputs(ctx, id))
                {
                    Ok(()) => Status::Cached,
                    Err(e) => Status::Failed(e.text, e.config),
                };
            }
            Ok(None) => {}
            Err(e) => return Status::Failed(chain(&e), false),
        }
    }
    // `--revise`: the old layer stays until the new one replaces it (one
    // atomic exchange), so its children never lose their parent.
    let log = match VariantLog::create(&out_dir) {
        Ok(l) => l,
        Err(e) => {
            return Status::Failed(
                format!("failed to create `{}`: {e}", out_dir.display()),
                false,
            );
        }
    };
    ctx.reporter.step(&v.name, "building");
    let result = build_layer(ctx, id, &log).and_then(|stage| {
        let parent = v
            .parent
            .map(|p| ctx.keys.lock().expect("not poisoned")[p].expect("parents are built first"));
        let epoch = epoch_of(ctx, id);
        let clamped = kiln_layers::clamp_times(stage.tree(), epoch).map_err(|e| chain(&e))?;
        log.line(
            "kiln",
            &format!(
                "SOURCE_DATE_EPOCH {epoch} ({}): {clamped} later times clamped",
                crate::manifest::rfc3339(epoch)
            ),
        );
        let commit = if ctx.revise.contains(&id) {
            Store::replace
        } else {
            Store::commit
        };
        commit(
            ctx.store,
            &lock,
            stage,
            kiln_store::NewLayer {
                variant: v.name.clone(),
                parent,
                epoch: Some(epoch),
            },
        )
        .map_err(|e| StepError::build(chain(&e)))
    });
    drop(lock);
    match result
        .and_then(|_| export(ctx, id).map_err(StepError::build))
        .and_then(|()| outputs(ctx, id))
    {
        Ok(()) => {
            log.line(
                "kiln",
                &format!("built in {:.1}s", started.elapsed().as_secs_f64()),
            );
            ctx.reporter.done(
                &v.name,
                &format!("built in {:.1}s", started.elapsed().as_secs_f64()),
            );
            Status::Built(started.elapsed().as_secs_f64())
        }
        Err(e) => {
            for line in e.text.lines() {
                log.line("kiln", line);
            }
            ctx.reporter.done(&v.name, "failed");
            Status::Failed(e.text, e.config)
        }
    }
}

/// Why a step failed; `config` when the configuration caused it.
struct StepError {
    text: String,
    config: bool,
}

impl StepError {
    fn build(text: String) -> Self {
        Self {
            text,
            config: false,
        }
    }
}

impl From<String> for StepError {
    fn from(text: String) -> Self {
        Self::build(text)
    }
}

/// Builds a variant's layer into a stage of the store.
fn build_layer(ctx: &Ctx<'_>, id: usize, log: &VariantLog) -> Result<kiln_store::Stage, StepError> {
    let v = &ctx.plan.variants[id];
    let key = ctx.keys.lock().expect("not poisoned")[id].expect("set before building");
    let stage = ctx.store.stage(&key).map_err(|e| chain(&e))?;
    // The image's files, opened beneath the tree root and checked against
    // the digests the plan was made of.
    let inputs = kiln_config::TreeInputs::of_image(ctx.tree, &v.image)
        .map_err(|e| format!("failed to open the tree `{}`: {e}", ctx.tree.root.display()))?;
    // Until its packages say otherwise, a variant has its parent's epoch.
    let inherited = v
        .parent
        .and_then(|p| ctx.epochs.lock().expect("not poisoned")[p]);
    ctx.epochs.lock().expect("not poisoned")[id] = ctx.settings.epoch.or(inherited);
    if matches!(v.settings.base, Base::Bootstrap { .. }) {
        let root = stage.tree().to_path_buf();
        install_packages(ctx, id, &root, true, log)?;
        provision_root(ctx, id, &root, &inputs, log)?;
        return Ok(stage);
    }
    // Over the parent's layers.
    let (_in_use, stack) = stack_of(ctx, &lower_chain(ctx.plan, id))?;
    let scratch =
        ctx.store
            .dir()
            .join("scratch")
            .join(format!("{}-{}", std::process::id(), v.name));
    let _ = fs::remove_dir_all(&scratch);
    let (work, mnt) = (scratch.join("work"), scratch.join("merged"));
    for d in [&work, &mnt] {
        fs::create_dir_all(d).map_err(|e| format!("failed to create `{}`: {e}", d.display()))?;
    }
    let result = (|| -> Result<(), StepError> {
        let overlay = kiln_layers::Overlay::mount(&stack, stage.tree(), &work, &mnt)
            .map_err(|e| chain(&e))?;
        install_packages(ctx, id, &mnt, false, log)?;
        provision_root(ctx, id, &mnt, &inputs, log)?;
        overlay.unmount().map_err(|e| StepError::build(chain(&e)))
    })();
    let _ = fs::remove_dir_all(&scratch);
    result.map(|()| stage)
}

/// What follows the packages, the same over a parent as for a bootstrap
/// root: `remove`, provisioning, then `initramfs` (when provisioning
/// changed its configuration) and `bootloader`.
fn provision_root(
    ctx: &Ctx<'_>,
    id: usize,
    root: &Path,
    inputs: &kiln_config::TreeInputs,
    log: &VariantLog,
) -> Result<(), StepError> {
    let v = &ctx.plan.variants[id];
    remove_packages(&v.settings.remove, root, epoch_of(ctx, id), log)?;
    let initramfs = initramfs_inputs(root);
    let pctx = kiln_layers::ProvisionContext {
        image: v.image.clone(),
        variant: v.name.clone(),
        keys: v.keys.clone(),
        packages: v.settings.packages.iter().map(|p| p.name.clone()).collect(),
        source_date_epoch: Some(epoch_of(ctx, id)),
    };
    kiln_layers::provision(
        root,
        inputs,
        &v.settings,
        &pctx,
        &|step: &str, line: &str| log.line(step, line),
    )
    .map_err(|e| chain(&e))?;
    refresh_initramfs(ctx, id, root, initramfs, log)?;
    boot_loader(ctx, id, root, log)
}

/// A variant's verified source and resolved packages (from `kiln.lock`
/// while its entry is current, else resolved and recorded there).
fn resolved(
    ctx: &Ctx<'_>,
    id: usize,
    progress: &FetchProgress<'_>,
) -> Result<(Arc<OpenSource>, kiln_debian::InstallSet), StepError> {
    let v = &ctx.plan.variants[id];
    let job = package_job(ctx.plan, id).expect("only variants with packages resolve");
    let opened = {
        // Held while fetching: variants of one suite wait for one fetch.
        let mut cache = ctx.sources.lock().expect("not poisoned");
        let key = (job.suite.to_string(), v.settings.arch.clone());
        if let Some(o) = cache.get(&key) {
            Arc::clone(o)
        } else {
            let (source, apt) =
                open_source(&job, ctx.tree, ctx.settings, progress).map_err(failure_text)?;
            let o = Arc::new(OpenSource { source, apt });
            cache.insert(key, Arc::clone(&o));
            o
        }
    };
    let set = {
        let mut lock = ctx.lock.lock().expect("not poisoned");
        resolve(&job, &opened.source, &mut lock, ctx.settings, ctx.reporter)
            .map_err(failure_text)?
    };
    Ok((opened, set))
}

/// The key a variant's layer is stored under (see `keys.rs`); resolves the
/// variant's packages first when `kiln.lock` has no current entry for it.
fn layer_key_of(ctx: &Ctx<'_>, id: usize) -> Result<InputKey, StepError> {
    let v = &ctx.plan.variants[id];
    let parent = v
        .parent
        .map(|p| ctx.keys.lock().expect("not poisoned")[p].expect("parents are built first"));
    let current = {
        let lock = ctx.lock.lock().expect("not poisoned");
        crate::keys::current_entry(ctx.plan, id, &lock)
            .map(|e: Option<&kiln_debian::LockFile>| e.cloned())
    };
    let entry = match current {
        Ok(entry) => entry,
        Err(()) => {
            ctx.reporter.step(&v.name, "resolving packages");
            resolved(ctx, id, &FetchProgress::new(ctx.reporter, &v.name))?;
            ctx.lock
                .lock()
                .expect("not poisoned")
                .variants
                .get(&v.name)
                .cloned()
        }
    };
    let key = crate::keys::layer_key(
        &v.digest,
        entry.as_ref(),
        parent.as_ref(),
        ctx.settings.epoch,
    );
    ctx.keys.lock().expect("not poisoned")[id] = Some(key);
    Ok(key)
}

/// The `packages` step: resolve, download and install what the root lacks.
fn install_packages(
    ctx: &Ctx<'_>,
    id: usize,
    root: &Path,
    bootstrap: bool,
    log: &VariantLog,
) -> Result<(), StepError> {
    let v = &ctx.plan.variants[id];
    let Some(job) = package_job(ctx.plan, id) else {
        return Ok(());
    };
    let name = &v.name;
    log.line("packages", &format!("resolving against `{}`", job.suite));
    let progress = FetchProgress::new(ctx.reporter, name);
    let (opened, set) = resolved(ctx, id, &progress)?;
    let (source, apt_sources) = (&opened.source, &opened.apt);
    // Over a parent, only what is not installed yet.
    let installed = if bootstrap {
        BTreeSet::new()
    } else {
        installed_packages(root)?
    };
    let wanted: Vec<kiln_debian::ResolvedPackage> = set
        .packages
        .iter()
        .filter(|p| !installed.contains(&p.name))
        .cloned()
        .collect();
    log.line(
        "packages",
        &format!(
            "{} packages to install ({} already in the parent)",
            wanted.len(),
            set.packages.len() - wanted.len()
        ),
    );
    ctx.reporter
        .step(name, &format!("packages: downloading {}", wanted.len()));
    let subset = kiln_debian::InstallSet { packages: wanted };
    let cache = kiln_debian::PackageCache::new(
        &ctx.settings.cache_dir,
        kiln_debian::RetryPolicy::default(),
    )
    .offline(ctx.settings.offline);
    let fetched = kiln_debian::DistributionSource::download(source, &subset, &cache, &progress)
        .map_err(|e| chain(&e))?;
    let debs: Vec<kiln_dpkg::DebFile> = fetched
        .iter()
        .map(|c| {
            let package = subset.get(&c.name);
            kiln_dpkg::DebFile {
                name: c.name.clone(),
                path: c.path.clone(),
                essential: package.is_some_and(|p| p.essential),
                // Beside the verified .debs, under the same SHA256.
                data_cache: package.map(|p| {
                    ctx.settings
                        .cache_dir
                        .join("unpacked")
                        .join(format!("{}.tar.zst", p.sha256))
                }),
            }
        })
        .collect();
    if ctx.settings.epoch.is_none() {
        // The newest package decides: what is installed now, what the
        // parent has.
        let mut newest = ctx.epochs.lock().expect("not poisoned")[id];
        for deb in &debs {
            let date = kiln_dpkg::build_date(&deb.path).map_err(|e| chain(&e))?;
            newest = Some(newest.map_or(date, |n| n.max(date)));
        }
        ctx.epochs.lock().expect("not poisoned")[id] = newest;
    }
    let options = kiln_dpkg::AssembleOptions {
        arch: v.settings.arch.clone(),
        jobs: ctx.settings.jobs,
        merged_usr: true,
        source_date_epoch: Some(epoch_of(ctx, id)),
    };
    let on_event = |e: &kiln_dpkg::Event| match e {
        kiln_dpkg::Event::Step { name: step } => {
            log.line("packages", step);
            ctx.reporter.step(name, &format!("packages: {step}"));
        }
        kiln_dpkg::Event::ScriptOutput { step, line } => {
            log.line(&format!("packages:{step}"), line);
        }
        kiln_dpkg::Event::Unpacked { .. } => {}
    };
    let report = if bootstrap {
        Some(kiln_dpkg::bootstrap(root, &debs, &options, &on_event))
    } else if debs.is_empty() {
        None
    } else {
        Some(kiln_dpkg::install(root, &debs, &options, &on_event))
    };
    if let Some(report) = report {
        let report = report.map_err(|e| chain(&e))?;
        for (phase, took) in &report.timings {
            log.line("packages", &format!("{phase}: {:.2}s", took.as_secs_f64()));
        }
    }
    // apt's auto-installed marks, as `apt-get install` would leave them.
    kiln_debian::target::record_auto_installed(root, &set, &installed, &v.settings.arch)
        .map_err(|e| chain(&e))?;
    if bootstrap {
        kiln_debian::target::configure_apt(root, apt_sources, source.indexes())
            .map_err(|e| chain(&e))?;
        kiln_debian::target::write_base_files(root).map_err(|e| chain(&e))?;
    }
    Ok(())
}

/// Where an image configures its initramfs: what `initramfs-tools` reads
/// when it builds one.
const INITRAMFS_CONFIG: [&str; 3] = ["etc/initramfs-tools", "etc/modprobe.d", "etc/crypttab"];

/// A digest of the root's initramfs configuration ([`INITRAMFS_CONFIG`]):
/// names, types, modes and contents; `None` if the root has no
/// `update-initramfs` or no initrd in `/boot`. Packages that change it
/// rebuild the initrd themselves (dpkg triggers); provisioning does not.
fn initramfs_inputs(root: &Path) -> Option<blake3::Hash> {
    let has_tool = fs::symlink_metadata(root.join("usr/sbin/update-initramfs")).is_ok();
    let has_initrd = fs::read_dir(root.join("boot")).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("initrd.img-")))
    });
    if !has_tool || !has_initrd || !fs::symlink_metadata(root.join("etc")).is_ok_and(|m| m.is_dir())
    {
        return None;
    }
    let mut hasher = blake3::Hasher::new();
    for rel in INITRAMFS_CONFIG {
        hash_tree(root, &root.join(rel), &mut hasher);
    }
    Some(hasher.finalize())
}

/// Adds `path` and, for a folder, everything in it (sorted by name) to
/// `hasher`: name, mode, content or link target. Never follows a symbolic
/// link: only the root's own files count.
fn hash_tree(root: &Path, path: &Path, hasher: &mut blake3::Hasher) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    let rel = path.strip_prefix(root).unwrap_or(path);
    hasher.update(rel.as_os_str().as_encoded_bytes());
    hasher.update(&[0]);
    hasher.update(&meta.mode().to_le_bytes());
    if meta.is_file() {
        hasher.update(&fs::read(path).unwrap_or_default());
    } else if meta.is_symlink() {
        hasher.update(
            fs::read_link(path)
                .unwrap_or_default()
                .as_os_str()
                .as_encoded_bytes(),
        );
    } else if meta.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default();
        names.sort();
        for name in names {
            hash_tree(root, &path.join(name), hasher);
        }
    }
    hasher.update(&[0xff]);
}

/// The `initramfs` step: when provisioning (files, rootfs, run scripts)
/// changed the initramfs configuration, the image's own
/// `update-initramfs -u -k all` rebuilds every initrd in `/boot`, as it
/// would on a running system, so `initrd.img` and the disks boot with it.
fn refresh_initramfs(
    ctx: &Ctx<'_>,
    id: usize,
    root: &Path,
    before: Option<blake3::Hash>,
    log: &VariantLog,
) -> Result<(), StepError> {
    let Some(before) = before else {
        return Ok(());
    };
    if initramfs_inputs(root) == Some(before) {
        return Ok(());
    }
    let v = &ctx.plan.variants[id];
    log.line(
        "initramfs",
        "the initramfs configuration changed: update-initramfs -u -k all",
    );
    ctx.reporter.step(&v.name, "initramfs");
    run_in_image(
        root,
        "initramfs",
        &["/usr/sbin/update-initramfs", "-u", "-k", "all"],
        epoch_of(ctx, id),
        log,
    )
}

/// The `bootloader` step, for a variant with a disk that a PC BIOS boots:
/// GRUB's core image made by the image's own `grub-mkimage`, where the
/// disk writer takes it from (`kiln_formats::GRUB_MKIMAGE`).
fn boot_loader(ctx: &Ctx<'_>, id: usize, root: &Path, log: &VariantLog) -> Result<(), StepError> {
    let v = &ctx.plan.variants[id];
    if !crate::artifacts::needs_grub_core(&v.settings) {
        return Ok(());
    }
    log.line("bootloader", kiln_formats::GRUB_MKIMAGE);
    ctx.reporter.step(&v.name, "bootloader");
    let script = format!(
        "mkdir -p /boot/grub/i386-pc && {}",
        kiln_formats::GRUB_MKIMAGE
    );
    run_in_image(
        root,
        "bootloader",
        &["/bin/sh", "-c", &script],
        epoch_of(ctx, id),
        log,
    )
}

/// Runs `argv` in the image's root (its own tools, `SOURCE_DATE_EPOCH`
/// set), each output line logged under `step`.
fn run_in_image(
    root: &Path,
    step: &str,
    argv: &[&str],
    epoch: i64,
    log: &VariantLog,
) -> Result<(), StepError> {
    let epoch = epoch.to_string();
    let env = [("SOURCE_DATE_EPOCH", epoch.as_str())];
    kiln_dpkg::sandbox::run(
        root,
        argv,
        &kiln_dpkg::sandbox::RunOptions::new(step).env(&env),
        &mut |line| log.line(step, line),
    )
    .map_err(|e| StepError::build(chain(&e)))
}

/// The `remove` step: the root's own `dpkg --purge`, which refuses to
/// remove what other installed packages still need.
fn remove_packages(
    names: &[String],
    root: &Path,
    epoch: i64,
    log: &VariantLog,
) -> Result<(), StepError> {
    if names.is_empty() {
        return Ok(());
    }
    let mut argv = vec!["/usr/bin/dpkg", "--purge"];
    argv.extend(names.iter().map(String::as_str));
    log.line("remove", &format!("purging {}", names.join(" ")));
    run_in_image(root, "remove", &argv, epoch, log)
}

fn failure_text(f: Failure) -> StepError {
    let (text, config) = match f {
        Failure::Build(t) => (t, false),
        Failure::Config(t) => (t, true),
    };
    StepError {
        text: text.trim_end().trim_start_matches("error: ").to_string(),
        config,
    }
}

/// Names of the packages a root's dpkg database lists as installed (none
/// if it has no database).
fn installed_packages(root: &Path) -> Result<BTreeSet<String>, StepError> {
    let path = root.join("var/lib/dpkg/status");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(format!("failed to read `{}`: {e}", path.display()).into()),
    };
    let packages = kiln_dpkg::installed_packages(&text)
        .map_err(|reason| format!("`{}` is not a dpkg status file: {reason}", path.display()))?;
    Ok(packages.into_iter().map(|p| p.name).collect())
}

/// Writes the variant's `dir` output (`OUT/<variant>/rootfs`) when asked
/// for, unless the one there is already of this layer.
fn export(ctx: &Ctx<'_>, id: usize) -> Result<(), String> {
    let v: &Variant = &ctx.plan.variants[id];
    if !v
        .settings
        .outputs
        .iter()
        .any(|o| o.format == kiln_config::OutputFormat::Dir)
    {
        return Ok(());
    }
    let dest = ctx.settings.out_dir.join(&v.name).join("rootfs");
    let marker = ctx.settings.out_dir.join(&v.name).join(".rootfs-digest");
    if dest.is_dir() && fs::read_to_string(&marker).is_ok_and(|m| m.trim() == v.digest.to_hex()) {
        return Ok(());
    }
    let mut ids = lower_chain(ctx.plan, id);
    ids.push(id);
    let (_in_use, stack) = stack_of(ctx, &ids)?;
    let stage = crate::staging::Stage::new(&ctx.settings.out_dir, &format!("{}-rootfs", v.name))
        .map_err(|e| e.to_string())?;
    let staged = stage.path().join("rootfs");
    if let [only] = stack.layers.as_slice() {
        copy_tree(only, &staged)?;
    } else {
        let scratch = ctx.store.dir().join("scratch").join(format!(
            "{}-{}-export",
            std::process::id(),
            v.name
        ));
        let _ = fs::remove_dir_all(&scratch);
        let mnt = scratch.join("merged");
        fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
        let result = kiln_layers::Overlay::mount_read_only(&stack, &mnt)
            .map_err(|e| chain(&e))
            .and_then(|overlay| {
                copy_tree(&mnt, &staged)?;
                overlay.unmount().map_err(|e| chain(&e))
            });
        let _ = fs::remove_dir_all(&scratch);
        result?;
    }
    fs::create_dir_all(ctx.settings.out_dir.join(&v.name)).map_err(|e| e.to_string())?;
    let previous = ctx.settings.out_dir.join(&v.name).join(".rootfs-old");
    if dest.exists() {
        fs::rename(&dest, &previous).map_err(|e| e.to_string())?;
    }
    fs::rename(&staged, &dest).map_err(|e| e.to_string())?;
    let _ = fs::remove_dir_all(&previous);
    fs::write(&marker, v.digest.to_hex()).map_err(|e| e.to_string())?;
    Ok(())
}

/// `cp -a` with xattrs: owners, modes, times, hard links, devices, links.
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let status = std::process::Command::new("cp")
        .args(["-a", "--preserve=all", "--no-target-directory"])
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| format!("failed to run `cp`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "failed to copy `{}` to `{}`: cp exited with {status}",
            from.display(),
            to.display()
        ))
    }
}

/// A variant's `SOURCE_DATE_EPOCH` (see `Ctx::epochs`). Before anything
/// dated is installed (never, in practice: a bootstrap installs packages
/// first) and for layers of a kiln that did not record one: now.
fn epoch_of(ctx: &Ctx<'_>, id: usize) -> i64 {
    ctx.epochs.lock().expect("not poisoned")[id].unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    })
}

/// Writes the variant's artifacts and SBOM and records its manifest entry.
fn outputs(ctx: &Ctx<'_>, id: usize) -> Result<(), StepError> {
    let v: &Variant = &ctx.plan.variants[id];
    let key = ctx.keys.lock().expect("not poisoned")[id].expect("set before building");
    let mut ids = lower_chain(ctx.plan, id);
    ids.push(id);
    let (_in_use, stack) = stack_of(ctx, &ids)?;
    let epoch = epoch_of(ctx, id);
    let previous = ctx.previous.variant(&v.name);
    let layer_keys = ids
        .iter()
        .map(|&a| ctx.keys.lock().expect("not poisoned")[a].expect("built").0)
        .collect();
    let job = crate::artifacts::Job {
        variant: v,
        stack: &stack,
        layer_keys,
        tree_root: &ctx.tree.root,
        key,
        epoch,
        threads: ctx.threads,
        store: ctx.store,
        out_dir: &ctx.settings.out_dir,
        blocks_dir: &ctx.settings.cache_dir.join("blocks"),
        previous,
    };
    let step = |what: &str| ctx.reporter.step(&v.name, what);
    let artifacts = crate::artifacts::write_all(&job, &step).map_err(|e| StepError {
        text: e.text,
        config: e.config,
    })?;
    let view = kiln_layers::MergedView::new(&stack);
    let packages = view
        .open("var/lib/dpkg/status")
        .ok()
        .and_then(|mut f| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut f, &mut text)
                .ok()
                .map(|_| text)
        })
        .map(|t| crate::manifest::installed_packages(&t))
        .transpose()
        .map_err(|reason| format!("{}: the dpkg status file: {reason}", v.name))?
        .unwrap_or_default();
    let parent = v.parent.map(|p| ctx.plan.variants[p].name.clone());
    let parent_key = v
        .parent
        .and_then(|p| ctx.keys.lock().expect("not poisoned")[p])
        .map(|k| k.to_hex());
    let layer = ctx.store.get(&key).map_err(|e| chain(&e))?;
    let mut entry = VariantEntry {
        variant: v.name.clone(),
        image: v.image.clone(),
        keys: v.keys.iter().cloned().collect(),
        input_digest: v.digest.to_hex(),
        layer_key: key.to_hex(),
        parent,
        parent_key,
        epoch,
        sbom: None,
        build_time: crate::manifest::rfc3339(layer.map_or(0, |l| l.meta.created)),
        artifacts,
        packages,
    };
    let distro = match &v.settings.base {
        Base::Bootstrap { suite, .. } => Some(format!("debian-{suite}")),
        Base::Image { .. } => None,
    };
    let sbom_rel = format!("{}/{}.spdx.json", v.name, v.name);
    let sbom = crate::manifest::spdx(&entry, distro.as_deref());
    let text = serde_json::to_string_pretty(&sbom).expect("serializable") + "\n";
    crate::manifest::write_atomic(&ctx.settings.out_dir.join(&sbom_rel), text.as_bytes())
        .map_err(|e| format!("failed to write the SBOM `{sbom_rel}`: {e}"))?;
    entry.sbom = Some(sbom_rel);
    ctx.entries.lock().expect("not poisoned").push(entry);
    Ok(())
}
