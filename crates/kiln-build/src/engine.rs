//! The build: the plan's variants, built as layers in the store.
//!
//! Every variant is one layer stored under its layer key. A variant
//! whose layer is in the store is `cached`; otherwise it is built:
//!
//! - a bootstrap variant's layer is a whole root: packages resolved and
//!   downloaded by `kiln-debian`, assembled by `kiln-dpkg`, then provisioned;
//! - any other variant's parent layers are mounted read-only as the lower
//!   directories of an overlayfs over a fresh upper directory; its packages
//!   are installed and it is provisioned in the merged view; the upper
//!   directory is its layer.
//!
//! Independent variants build in parallel (`parallel`); a failure stops
//! the variant's descendants only. Each variant's full log is kept in
//! `OUT/<variant>/build.log`. A watchdog thread turns the build's cancel
//! token and time limits into each running variant's own token.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kiln_config::settings::Base;
use kiln_debian::TreeLock;
use kiln_dpkg::sandbox::CancelFlag;
use kiln_plan::{Plan, Variant};
use kiln_store::{InputKey, Store};

use crate::debian::{
    BuildSettings, Failure, FetchProgress, open_source, package_job, read_lock, resolve,
};
use crate::error::{Error, chain};
use crate::events::{Counts, Event, EventSink, PlannedVariant, VariantStatus};
use crate::manifest::{Manifest, VariantEntry};
use crate::{BuildOptions, BuildReport, CancelToken, StepTiming, VariantReport, Workspace};

/// How many of a variant's last log lines a failure carries.
const LAST_LINES: usize = 20;

/// Where a variant is in the build.
#[derive(Clone, Debug)]
enum State {
    Pending,
    Running,
    Done(VariantStatus),
}

impl State {
    fn usable(&self) -> bool {
        matches!(
            self,
            State::Done(VariantStatus::Cached | VariantStatus::Built { .. })
        )
    }
}

/// A variant's build log: every line of every step, with the step's name.
struct VariantLog {
    file: Mutex<fs::File>,
    path: PathBuf,
}

impl VariantLog {
    fn create(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join("build.log");
        let file = fs::File::create(&path)?;
        Ok(Self {
            file: Mutex::new(file),
            path,
        })
    }

    fn write(&self, step: &str, text: &str) {
        if let Ok(mut f) = self.file.lock() {
            let _ = writeln!(f, "[{step}] {text}");
        }
    }
}

/// What the build records of one variant while it runs.
#[derive(Default)]
struct Record {
    /// The step running now, and since when.
    current: Option<(String, Instant)>,
    /// The step that was running last (the failing one, after an error).
    last_step: String,
    steps: Vec<StepTiming>,
    tail: VecDeque<String>,
    log: Option<Arc<VariantLog>>,
    /// When a worker took it (for its time limit).
    started: Option<Instant>,
}

/// Everything the workers share.
struct Ctx<'a> {
    tree: &'a kiln_config::Tree,
    plan: &'a Plan,
    settings: &'a BuildSettings,
    store: &'a Store,
    events: &'a dyn EventSink,
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
    /// The build's token.
    cancel: &'a CancelToken,
    /// Each variant's own token: set by the watchdog from the build's
    /// token or the variant's time limit.
    variant_cancel: &'a [CancelToken],
    records: &'a [Mutex<Record>],
}

/// A Debian source with its indexes fetched, and the apt sources behind it.
struct OpenSource {
    source: kiln_debian::DebianSource,
    apt: Vec<kiln_debian::AptSource>,
}

impl Ctx<'_> {
    fn name(&self, id: usize) -> &str {
        &self.plan.variants[id].name
    }

    fn record(&self, id: usize) -> std::sync::MutexGuard<'_, Record> {
        self.records[id]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Begins step `step` of variant `id`, ending the one before (as
    /// succeeded): one step at a time per variant.
    fn begin(&self, id: usize, step: &str) {
        self.end(id, true);
        let mut r = self.record(id);
        r.current = Some((step.to_owned(), Instant::now()));
        step.clone_into(&mut r.last_step);
        drop(r);
        self.events.event(&Event::StepStarted {
            variant: self.name(id).to_owned(),
            step: step.to_owned(),
        });
    }

    /// Ends the running step of variant `id`, if any.
    fn end(&self, id: usize, ok: bool) {
        let mut r = self.record(id);
        let Some((step, since)) = r.current.take() else {
            return;
        };
        let seconds = since.elapsed().as_secs_f64();
        r.steps.push(StepTiming {
            step: step.clone(),
            seconds,
        });
        drop(r);
        self.events.event(&Event::StepFinished {
            variant: self.name(id).to_owned(),
            step,
            seconds,
            ok,
        });
    }

    /// A line of variant `id`'s log, under `stream`.
    fn line(&self, id: usize, stream: &str, text: &str) {
        let mut r = self.record(id);
        if let Some(log) = &r.log {
            log.write(stream, text);
        }
        if r.tail.len() == LAST_LINES {
            r.tail.pop_front();
        }
        r.tail.push_back(format!("[{stream}] {text}"));
        drop(r);
        self.events.event(&Event::Log {
            variant: self.name(id).to_owned(),
            stream: stream.to_owned(),
            text: text.to_owned(),
        });
    }

    fn flag(&self, id: usize) -> CancelFlag {
        CancelFlag::new(self.variant_cancel[id].shared_flag())
    }

    /// `Err` when variant `id` must stop, before a step begins.
    fn check(&self, id: usize) -> Result<(), StepError> {
        if self.variant_cancel[id].is_cancelled() {
            Err(StepError::cancelled())
        } else {
            Ok(())
        }
    }
}

pub(crate) fn build(
    ws: &Workspace,
    plan: &Plan,
    options: &BuildOptions,
    events: &dyn EventSink,
    cancel: &CancelToken,
) -> Result<BuildReport, Error> {
    let started = Instant::now();
    let tree = ws.tree();
    let settings = BuildSettings::new(ws, options)?;
    let store_dir = settings.cache_dir.join("store");
    let store = Store::open(&store_dir).map_err(|source| Error::Store {
        path: store_dir.clone(),
        source,
    })?;
    fs::create_dir_all(&settings.out_dir).map_err(|error| Error::Io {
        action: "create",
        path: settings.out_dir.clone(),
        error,
    })?;
    crate::staging::clean_stale(&settings.out_dir);
    let lock = read_lock(&settings.lock_path).map_err(|source| Error::Lock {
        source,
        write: false,
    })?;
    let lock_before = lock.clone();
    let lock = Mutex::new(lock);
    // `--revise` rebuilds the selected variants (the plan holds their
    // ancestors too; those are only rebuilt when selected by name or key).
    let revise: BTreeSet<usize> = options.revise.as_ref().map_or_else(BTreeSet::new, |s| {
        plan.variants
            .iter()
            .enumerate()
            .filter(|(_, v)| crate::selects(s, v))
            .map(|(i, _)| i)
            .collect()
    });
    let n = plan.variants.len();
    let sources = Mutex::new(std::collections::BTreeMap::new());
    let keys = Mutex::new(vec![None; n]);
    let epochs = Mutex::new(vec![None; n]);
    let previous = Manifest::read(&settings.out_dir);
    let entries = Mutex::new(Vec::new());
    let variant_cancel: Vec<CancelToken> = (0..n).map(|_| CancelToken::new()).collect();
    let records: Vec<Mutex<Record>> = (0..n).map(|_| Mutex::new(Record::default())).collect();
    let ctx = Ctx {
        previous: &previous,
        entries: &entries,
        threads: options.jobs.max(1),
        tree,
        plan,
        settings: &settings,
        store: &store,
        events,
        lock: &lock,
        revise: &revise,
        sources: &sources,
        keys: &keys,
        epochs: &epochs,
        cancel,
        variant_cancel: &variant_cancel,
        records: &records,
    };

    events.event(&Event::PlanResolved {
        variants: plan
            .variants
            .iter()
            .map(|v| PlannedVariant {
                name: v.name.clone(),
                image: v.image.clone(),
                parent: v.parent.map(|p| plan.variants[p].name.clone()),
            })
            .collect(),
    });
    for v in &plan.variants {
        events.event(&Event::VariantQueued {
            variant: v.name.clone(),
        });
    }
    let state = Mutex::new(vec![State::Pending; n]);
    let wake = Condvar::new();
    let finished = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| watchdog(&ctx, options.timeout, started, &state, &wake, &finished));
        let workers: Vec<_> = (0..options.parallel.max(1))
            .map(|_| scope.spawn(|| worker(&ctx, &state, &wake)))
            .collect();
        for w in workers {
            let _ = w.join();
        }
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let outcome = state
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);

    let lock = lock
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if lock != lock_before && !settings.locked {
        lock.write(&settings.lock_path)
            .map_err(|source| Error::Lock {
                source,
                write: true,
            })?;
    }
    let mut manifest = previous.clone();
    let entries = entries
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let finished_names: std::collections::BTreeSet<String> =
        entries.iter().map(|e| e.variant.clone()).collect();
    manifest.update(entries);
    manifest.link_netboot(&netboot_chains(plan));
    let finished_entries: Vec<VariantEntry> = manifest
        .variants
        .iter()
        .filter(|v| finished_names.contains(&v.variant))
        .cloned()
        .collect();
    manifest
        .write(&settings.out_dir)
        .map_err(|error| Error::Io {
            action: "write",
            path: settings.out_dir.join(crate::manifest::MANIFEST_FILE),
            error,
        })?;
    let keys = keys
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let variants: Vec<VariantReport> = plan
        .variants
        .iter()
        .zip(outcome)
        .enumerate()
        .map(|(i, (v, s))| {
            let status = match s {
                State::Done(status) => status,
                // Never reached: the build stopped first.
                State::Pending | State::Running => VariantStatus::Cancelled {
                    step: "queued".to_owned(),
                    reason: cancel.reason().unwrap_or_else(|| "cancelled".to_owned()),
                },
            };
            let record = records[i]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            VariantReport {
                name: v.name.clone(),
                status,
                layer_key: keys[i].map(|k| k.to_hex()),
                artifacts: finished_entries
                    .iter()
                    .find(|e| e.variant == v.name)
                    .map(|e| e.artifacts.clone())
                    .unwrap_or_default(),
                steps: record.steps.clone(),
                log: record.log.as_ref().map(|l| l.path.clone()),
            }
        })
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    let counts = Counts::of(variants.iter().map(|v| &v.status));
    events.event(&Event::BuildFinished {
        built: counts.built,
        cached: counts.cached,
        failed: counts.failed,
        skipped: counts.skipped,
        cancelled: counts.cancelled,
        seconds,
    });
    Ok(BuildReport {
        variants,
        manifest,
        out_dir: settings.out_dir.clone(),
        cancelled: cancel.reason(),
        seconds,
    })
}

/// How a duration reads in a message: `3s`, `45m`, `1h30m`, `2.5s`.
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 && secs < 60 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Turns the build's token and the time limits into each running
/// variant's token, until the workers are done.
fn watchdog(
    ctx: &Ctx<'_>,
    timeout: Option<Duration>,
    started: Instant,
    state: &Mutex<Vec<State>>,
    wake: &Condvar,
    finished: &std::sync::atomic::AtomicBool,
) {
    let mut woken = false;
    while !finished.load(std::sync::atomic::Ordering::SeqCst) {
        if let Some(limit) = timeout
            && started.elapsed() >= limit
        {
            ctx.cancel
                .cancel_with(format!("timed out after {}", human(limit)));
        }
        let build_reason = ctx.cancel.reason();
        for (i, token) in ctx.variant_cancel.iter().enumerate() {
            if token.is_cancelled() {
                continue;
            }
            if let Some(reason) = &build_reason {
                token.cancel_with(reason.clone());
                continue;
            }
            let since = ctx.record(i).started;
            if let (Some(limit), Some(since)) = (ctx.plan.variants[i].settings.timeout, since)
                && since.elapsed() >= limit
            {
                token.cancel_with(format!("timed out after {}", human(limit)));
            }
        }
        if build_reason.is_some() && !woken {
            // Idle workers look again: nothing new starts.
            let _guard = state.lock();
            wake.notify_all();
            woken = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Takes ready variants until none is left.
fn worker(ctx: &Ctx<'_>, state: &Mutex<Vec<State>>, wake: &Condvar) {
    // The overlays this worker mounts live in a mount namespace of its own
    // (`unshare` moves only the calling thread): never visible to the
    // host or another build of the process, gone when the worker and its
    // children end. Without the privilege, mounting fails later with its
    // own error.
    let _ = kiln_layers::private_mount_namespace();
    loop {
        let next = {
            let mut s = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                // Skip what cannot be built any more, then pick a ready one.
                for i in 0..s.len() {
                    if !matches!(s[i], State::Pending) {
                        continue;
                    }
                    let status = if let Some(reason) = ctx.cancel.reason() {
                        Some(VariantStatus::Cancelled {
                            step: "queued".to_owned(),
                            reason,
                        })
                    } else if let Some(p) = ctx.plan.variants[i].parent
                        && matches!(
                            s[p],
                            State::Done(
                                VariantStatus::Failed { .. }
                                    | VariantStatus::Skipped { .. }
                                    | VariantStatus::Cancelled { .. }
                            )
                        )
                    {
                        Some(VariantStatus::Skipped {
                            reason: format!("`{}` did not build", ctx.plan.variants[p].name),
                        })
                    } else {
                        None
                    };
                    if let Some(status) = status {
                        ctx.events.event(&Event::VariantFinished {
                            variant: ctx.name(i).to_owned(),
                            status: status.clone(),
                        });
                        s[i] = State::Done(status);
                    }
                }
                let ready = (0..s.len()).find(|&i| {
                    matches!(s[i], State::Pending)
                        && ctx.plan.variants[i].parent.is_none_or(|p| s[p].usable())
                });
                if let Some(i) = ready {
                    s[i] = State::Running;
                    break Some(i);
                }
                if !s
                    .iter()
                    .any(|x| matches!(x, State::Pending | State::Running))
                {
                    break None;
                }
                s = wake
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        let Some(i) = next else {
            wake.notify_all();
            return;
        };
        ctx.record(i).started = Some(Instant::now());
        ctx.events.event(&Event::VariantStarted {
            variant: ctx.name(i).to_owned(),
        });
        let status = build_variant(ctx, i);
        ctx.events.event(&Event::VariantFinished {
            variant: ctx.name(i).to_owned(),
            status: status.clone(),
        });
        let mut s = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s[i] = State::Done(status);
        drop(s);
        wake.notify_all();
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
/// Each variant's lineage from its netboot base (the nearest ancestor, or
/// itself, with `netboot` and `kernel`) down to it, by name.
fn netboot_chains(plan: &Plan) -> Vec<Vec<String>> {
    (0..plan.variants.len())
        .filter_map(|id| {
            let mut chain = plan.ancestry(id);
            let base = chain.iter().position(|&a| {
                let s = &plan.variants[a].settings;
                s.netboot && s.kernel
            })?;
            chain.truncate(base + 1);
            chain.reverse();
            Some(
                chain
                    .into_iter()
                    .map(|a| plan.variants[a].name.clone())
                    .collect(),
            )
        })
        .collect()
}

fn lower_chain(plan: &Plan, id: usize) -> Vec<usize> {
    let mut chain = plan.ancestry(id);
    chain.remove(0);
    chain.reverse();
    chain
}

fn build_variant(ctx: &Ctx<'_>, id: usize) -> VariantStatus {
    let v = &ctx.plan.variants[id];
    let started = Instant::now();
    let out_dir = ctx.settings.out_dir.join(&v.name);
    let result = (|| -> Result<bool, StepError> {
        ctx.check(id)?;
        let key = layer_key_of(ctx, id)?;
        ctx.end(id, true);
        let lock = ctx
            .store
            .lock(&key)
            .map_err(|e| StepError::build(chain(&e)))?;
        if !ctx.revise.contains(&id) {
            let found = ctx
                .store
                .get(&key)
                .map_err(|e| StepError::build(chain(&e)))?;
            if let Some(layer) = found {
                drop(lock);
                ctx.epochs.lock().expect("not poisoned")[id] =
                    layer.meta.epoch.or(ctx.settings.epoch);
                export(ctx, id).map_err(StepError::build)?;
                outputs(ctx, id)?;
                return Ok(false);
            }
        }
        // `--revise`: the old layer stays until the new one replaces it (one
        // atomic exchange), so its children never lose their parent.
        let log = VariantLog::create(&out_dir)
            .map_err(|e| format!("failed to create `{}`: {e}", out_dir.display()))?;
        ctx.record(id).log = Some(Arc::new(log));
        let stage = build_layer(ctx, id)?;
        ctx.check(id)?;
        ctx.begin(id, "commit");
        let parent = v
            .parent
            .map(|p| ctx.keys.lock().expect("not poisoned")[p].expect("parents are built first"));
        let epoch = epoch_of(ctx, id);
        let clamped = kiln_layers::clamp_times(stage.tree(), epoch).map_err(|e| chain(&e))?;
        ctx.line(
            id,
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
        .map_err(|e| StepError::build(chain(&e)))?;
        drop(lock);
        export(ctx, id).map_err(StepError::build)?;
        outputs(ctx, id)?;
        Ok(true)
    })();
    match result {
        Ok(built) => {
            ctx.end(id, true);
            if built {
                let seconds = started.elapsed().as_secs_f64();
                ctx.line(id, "kiln", &format!("built in {seconds:.1}s"));
                VariantStatus::Built { seconds }
            } else {
                VariantStatus::Cached
            }
        }
        Err(e) => {
            ctx.end(id, false);
            let step = ctx.record(id).last_step.clone();
            let step = if step.is_empty() {
                "start".to_owned()
            } else {
                step
            };
            if let Some(reason) = ctx.variant_cancel[id].reason() {
                ctx.line(id, "kiln", &format!("{reason} in step {step}"));
                return VariantStatus::Cancelled { step, reason };
            }
            for line in e.text.lines() {
                ctx.line(id, "kiln", line);
            }
            let last_lines = ctx.record(id).tail.iter().cloned().collect();
            VariantStatus::Failed {
                step,
                message: e.text,
                last_lines,
                config: e.config,
            }
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

    fn cancelled() -> Self {
        Self::build("cancelled".to_owned())
    }
}

impl From<String> for StepError {
    fn from(text: String) -> Self {
        Self::build(text)
    }
}

/// Builds a variant's layer into a stage of the store.
fn build_layer(ctx: &Ctx<'_>, id: usize) -> Result<kiln_store::Stage, StepError> {
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
        install_packages(ctx, id, &root, true)?;
        provision_root(ctx, id, &root, &inputs)?;
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
        install_packages(ctx, id, &mnt, false)?;
        provision_root(ctx, id, &mnt, &inputs)?;
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
) -> Result<(), StepError> {
    let v = &ctx.plan.variants[id];
    remove_packages(ctx, id, root)?;
    ctx.check(id)?;
    let initramfs = initramfs_inputs(root);
    let pctx = kiln_layers::ProvisionContext {
        image: v.image.clone(),
        variant: v.name.clone(),
        keys: v.keys.clone(),
        packages: v.settings.packages.iter().map(|p| p.name.clone()).collect(),
        source_date_epoch: Some(epoch_of(ctx, id)),
        cancel: ctx.flag(id),
    };
    let result = kiln_layers::provision(
        root,
        inputs,
        &v.settings,
        &pctx,
        &|step: &str, line: &str| match line {
            kiln_layers::STEP_STARTED => ctx.begin(id, &format!("provision:{step}")),
            kiln_layers::STEP_FINISHED => ctx.end(id, true),
            kiln_layers::STEP_FAILED => {}
            line => ctx.line(id, step, line),
        },
    );
    result.map_err(|e| chain(&e))?;
    ctx.check(id)?;
    refresh_initramfs(ctx, id, root, initramfs)?;
    ctx.check(id)?;
    boot_loader(ctx, id, root)
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
        resolve(
            &job,
            &opened.source,
            &mut lock,
            ctx.settings,
            &|e: &Event| {
                ctx.events.event(e);
            },
        )
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
            ctx.begin(id, "resolve");
            let flag = ctx.variant_cancel[id].flag();
            resolved(
                ctx,
                id,
                &FetchProgress::new(ctx.events, &v.name, Some(flag)),
            )?;
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

/// The `packages` steps: resolve, download and install what the root
/// lacks.
fn install_packages(
    ctx: &Ctx<'_>,
    id: usize,
    root: &Path,
    bootstrap: bool,
) -> Result<(), StepError> {
    let v = &ctx.plan.variants[id];
    let Some(job) = package_job(ctx.plan, id) else {
        return Ok(());
    };
    let name = &v.name;
    ctx.check(id)?;
    if !ctx.record(id).steps.iter().any(|s| s.step == "resolve") {
        ctx.begin(id, "resolve");
    }
    ctx.line(
        id,
        "packages",
        &format!("resolving against `{}`", job.suite),
    );
    let progress = FetchProgress::new(ctx.events, name, Some(ctx.variant_cancel[id].flag()));
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
    ctx.line(
        id,
        "packages",
        &format!(
            "{} packages to install ({} already in the parent)",
            wanted.len(),
            set.packages.len() - wanted.len()
        ),
    );
    ctx.check(id)?;
    ctx.begin(id, "download");
    progress.expect(wanted.iter().map(|p| p.size).sum());
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
    ctx.check(id)?;
    let options = kiln_dpkg::AssembleOptions {
        arch: v.settings.arch.clone(),
        jobs: ctx.settings.jobs,
        merged_usr: true,
        source_date_epoch: Some(epoch_of(ctx, id)),
        cancel: ctx.flag(id),
    };
    let on_event = |e: &kiln_dpkg::Event| match e {
        kiln_dpkg::Event::Step { name: step } => {
            ctx.line(id, "packages", step);
            ctx.begin(id, step);
        }
        kiln_dpkg::Event::ScriptOutput { step, line } => {
            ctx.line(id, &format!("packages:{step}"), line);
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
            ctx.line(
                id,
                "packages",
                &format!("{phase}: {:.2}s", took.as_secs_f64()),
            );
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
    ctx.end(id, true);
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
) -> Result<(), StepError> {
    let Some(before) = before else {
        return Ok(());
    };
    if initramfs_inputs(root) == Some(before) {
        return Ok(());
    }
    ctx.begin(id, "initramfs");
    ctx.line(
        id,
        "initramfs",
        "the initramfs configuration changed: update-initramfs -u -k all",
    );
    run_in_image(
        ctx,
        id,
        root,
        "initramfs",
        &["/usr/sbin/update-initramfs", "-u", "-k", "all"],
    )?;
    ctx.end(id, true);
    Ok(())
}

/// The `bootloader` step, for a variant with a disk that a PC BIOS boots:
/// GRUB's core image made by the image's own `grub-mkimage`, where the
/// disk writer takes it from (`kiln_formats::GRUB_MKIMAGE`).
fn boot_loader(ctx: &Ctx<'_>, id: usize, root: &Path) -> Result<(), StepError> {
    let v = &ctx.plan.variants[id];
    if !crate::artifacts::needs_grub_core(&v.settings) {
        return Ok(());
    }
    ctx.begin(id, "bootloader");
    ctx.line(id, "bootloader", kiln_formats::GRUB_MKIMAGE);
    let script = format!(
        "mkdir -p /boot/grub/i386-pc && {}",
        kiln_formats::GRUB_MKIMAGE
    );
    run_in_image(ctx, id, root, "bootloader", &["/bin/sh", "-c", &script])?;
    ctx.end(id, true);
    Ok(())
}

/// Runs `argv` in the image's root (its own tools, `SOURCE_DATE_EPOCH`
/// set), each output line logged under `step`; killed when the variant
/// is cancelled.
fn run_in_image(
    ctx: &Ctx<'_>,
    id: usize,
    root: &Path,
    step: &str,
    argv: &[&str],
) -> Result<(), StepError> {
    let epoch = epoch_of(ctx, id).to_string();
    let env = [("SOURCE_DATE_EPOCH", epoch.as_str())];
    let cancel = ctx.flag(id);
    kiln_dpkg::sandbox::run(
        root,
        argv,
        &kiln_dpkg::sandbox::RunOptions::new(step)
            .env(&env)
            .cancel(&cancel),
        &mut |line| ctx.line(id, step, line),
    )
    .map_err(|e| StepError::build(chain(&e)))
}

/// The `remove` step: the root's own `dpkg --purge`, which refuses to
/// remove what other installed packages still need.
fn remove_packages(ctx: &Ctx<'_>, id: usize, root: &Path) -> Result<(), StepError> {
    let names = &ctx.plan.variants[id].settings.remove;
    if names.is_empty() {
        return Ok(());
    }
    ctx.begin(id, "remove");
    let mut argv = vec!["/usr/bin/dpkg", "--purge"];
    argv.extend(names.iter().map(String::as_str));
    ctx.line(id, "remove", &format!("purging {}", names.join(" ")));
    run_in_image(ctx, id, root, "remove", &argv)?;
    ctx.end(id, true);
    Ok(())
}

fn failure_text(f: Failure) -> StepError {
    let (text, config) = match f {
        Failure::Build(t) => (t, false),
        Failure::Config(t) => (t, true),
    };
    StepError { text, config }
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
    if ctx.variant_cancel[id].is_cancelled() {
        return Err("cancelled".to_owned());
    }
    ctx.begin(id, "output:dir");
    let mut ids = lower_chain(ctx.plan, id);
    ids.push(id);
    let (_in_use, stack) = stack_of(ctx, &ids)?;
    let stage = crate::staging::Stage::new(&ctx.settings.out_dir, &format!("{}-rootfs", v.name))
        .map_err(|e| e.to_string())?;
    let staged = stage.path().join("rootfs");
    let cancel = &ctx.variant_cancel[id];
    if let [only] = stack.layers.as_slice() {
        copy_tree(only, &staged, cancel)?;
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
                let copied = copy_tree(&mnt, &staged, cancel);
                // Unmounted whether or not the copy finished.
                overlay.unmount().map_err(|e| chain(&e))?;
                copied
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
    ctx.end(id, true);
    Ok(())
}

/// `cp -a` with xattrs: owners, modes, times, hard links, devices, links.
/// Killed when `cancel` fires (checked every 50 ms); the half-made copy
/// is in the stage, which is dropped.
fn copy_tree(from: &Path, to: &Path, cancel: &CancelToken) -> Result<(), String> {
    let mut child = std::process::Command::new("cp")
        .args(["-a", "--preserve=all", "--no-target-directory"])
        .arg(from)
        .arg(to)
        .spawn()
        .map_err(|e| format!("failed to run `cp`: {e}"))?;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("failed to wait for `cp`: {e}"))?
        {
            break status;
        }
        if cancel.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("cancelled".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
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
        cancel: ctx.variant_cancel[id].flag(),
    };
    let step = |what: &str| ctx.begin(id, what);
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
        netboot: None,
        // A test of this very layer still holds.
        test: previous
            .filter(|p| p.layer_key == key.to_hex())
            .and_then(|p| p.test.clone()),
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
