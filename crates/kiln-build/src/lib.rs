//! kiln's build engine as a library.
//!
//! Every front end — the `kiln` CLI, `kiln serve`, workers — drives builds
//! through this crate, never through the binary:
//!
//! ```no_run
//! use kiln_build::{BuildOptions, CancelToken, Discard, OpenOptions, Workspace};
//! use kiln_plan::Selection;
//!
//! let ws = Workspace::open("examples/web".as_ref(), &OpenOptions::default())?;
//! let plan = ws.plan(&Selection::default())?;
//! let report = ws.build(&plan, &BuildOptions::default(), &Discard, &CancelToken::new())?;
//! for v in &report.variants {
//!     println!("{}: {}", v.name, v.status.word());
//! }
//! # Ok::<(), kiln_build::Error>(())
//! ```
//!
//! [`Workspace::build`] returns a [`BuildReport`] (data, never text) and
//! tells an [`EventSink`] what happens while it runs ([`Event`]). A
//! [`CancelToken`], `BuildOptions::timeout` and each variant's `timeout`
//! setting stop it cleanly.
//!
//! The library never prints, never exits, and reads the process
//! environment only for `SOURCE_DATE_EPOCH` (the build's date, see
//! [`Workspace::epoch`]) and, through `kiln-debian`'s HTTP client, the
//! proxy variables.

mod artifacts;
mod cancel;
mod debian;
mod engine;
mod error;
mod events;
mod keys;
pub mod manifest;
mod sources;
mod staging;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_config::{LoadOptions, Tree};
use kiln_plan::{Plan, Selection, Variant};

pub use cancel::CancelToken;
pub use debian::LOCK_FILE;
pub use error::{Error, chain};
pub use events::{
    Counts, Discard, Event, EventSink, PlannedVariant, SCHEMA_VERSION, VariantStatus,
};
pub use manifest::{ArtifactEntry, MANIFEST_FILE, Manifest, VariantEntry, rfc3339};
pub use staging::remove_live;

/// How a tree is opened.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// The cache folder asked for (`--cache-dir`); it wins over the tree's
    /// `[cache] dir`.
    pub cache_dir: Option<PathBuf>,
    /// The cache folder when neither the flag nor the tree names one (the
    /// CLI passes `$XDG_CACHE_HOME/kiln` or `~/.cache/kiln`).
    pub default_cache_dir: Option<PathBuf>,
    /// The selection whose plan problems are reported with the tree's own
    /// when the tree does not load, so a user sees every problem at once.
    pub selection: Selection,
}

/// A loaded tree with the settings every build of it shares.
#[derive(Debug)]
pub struct Workspace {
    tree: Tree,
    cache_dir: Option<PathBuf>,
    epoch: Option<i64>,
}

/// What a build would do with a variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Its layer is in the store under the key `kiln.lock` gives it.
    Cached,
    /// It must be built (or resolved first).
    Build,
}

/// How to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Variants built at once.
    pub parallel: usize,
    /// Threads for unpacking and compression within a variant.
    pub jobs: usize,
    /// Use only the package cache.
    pub offline: bool,
    /// Fail rather than change `kiln.lock`.
    pub locked: bool,
    /// Rebuild the variants `revise` selects even when their layer is
    /// stored (their ancestors only when selected too).
    pub revise: Option<Selection>,
    /// A time limit for the whole build.
    pub timeout: Option<Duration>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            parallel: 2,
            jobs: std::thread::available_parallelism().map_or(1, usize::from),
            offline: false,
            locked: false,
            revise: None,
            timeout: None,
        }
    }
}

/// How long one step of a variant took.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StepTiming {
    /// The step (see [`Event::StepStarted`]).
    pub step: String,
    /// Its duration.
    pub seconds: f64,
}

/// What became of one variant.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct VariantReport {
    /// The variant.
    pub name: String,
    /// How it ended.
    pub status: VariantStatus,
    /// The key its layer is stored under, once known.
    pub layer_key: Option<String>,
    /// What it wrote (with sizes and SHA-256), as in the manifest.
    pub artifacts: Vec<ArtifactEntry>,
    /// Its steps, in order.
    pub steps: Vec<StepTiming>,
    /// Its build log, when it ran steps.
    pub log: Option<PathBuf>,
}

/// What a build did: data for a front end to render.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BuildReport {
    /// Every variant of the plan, in plan order.
    pub variants: Vec<VariantReport>,
    /// `OUT/manifest.json` as the build left it.
    pub manifest: Manifest,
    /// Where the outputs are.
    pub out_dir: PathBuf,
    /// Why the build stopped early, if it did (`cancelled`, `timed out
    /// after 3s`).
    pub cancelled: Option<String>,
    /// How long it took.
    pub seconds: f64,
}

impl BuildReport {
    /// How many variants ended in each status.
    #[must_use]
    pub fn counts(&self) -> Counts {
        Counts::of(self.variants.iter().map(|v| &v.status))
    }

    /// Whether every variant was built or cached.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.variants.iter().all(|v| {
            matches!(
                v.status,
                VariantStatus::Built { .. } | VariantStatus::Cached
            )
        })
    }
}

/// What `kiln lock` resolved for one variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockedVariant {
    /// The variant.
    pub name: String,
    /// How many packages its root holds.
    pub packages: usize,
}

impl Workspace {
    /// Loads the tree in `dir` and checks the build's date
    /// (`SOURCE_DATE_EPOCH` or `[output] epoch`).
    pub fn open(dir: &Path, options: &OpenOptions) -> Result<Self, Error> {
        let tree = match kiln_config::load(dir, &LoadOptions::default()) {
            Ok(tree) => tree,
            Err(failure) => {
                // The plan's problems too, so the user sees all at once.
                let mut diagnostics = failure.diagnostics;
                if let Some(partial) = &failure.partial
                    && let Err(more) = kiln_plan::plan(partial, &options.selection)
                {
                    for d in more {
                        if !diagnostics.contains(&d) {
                            diagnostics.push(d);
                        }
                    }
                }
                return Err(Error::Tree {
                    files: failure.files,
                    diagnostics,
                });
            }
        };
        let epoch = debian::epoch_override(&tree)?;
        let cache_dir = options
            .cache_dir
            .clone()
            .or_else(|| tree.cache_dir.as_ref().map(|c| tree.root.join(c)))
            .or_else(|| options.default_cache_dir.clone());
        Ok(Self {
            tree,
            cache_dir,
            epoch,
        })
    }

    /// The loaded tree.
    #[must_use]
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The cache folder (packages, the store), if one could be chosen.
    #[must_use]
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// The cache folder, or the error a build gives without one.
    pub fn require_cache_dir(&self) -> Result<&Path, Error> {
        self.cache_dir.as_deref().ok_or_else(|| Error::Config {
            message: "failed to choose a package cache: neither `--cache-dir`, `[cache] dir`, XDG_CACHE_HOME nor HOME is set".into(),
        })
    }

    /// The output folder (`[output] dir`).
    #[must_use]
    pub fn out_dir(&self) -> PathBuf {
        self.tree.root.join(&self.tree.output.dir)
    }

    /// The build's `SOURCE_DATE_EPOCH` when one is given; `None`: each
    /// variant is dated by its newest package.
    #[must_use]
    pub fn epoch(&self) -> Option<i64> {
        self.epoch
    }

    /// Plans the selected variants (with their ancestors).
    pub fn plan(&self, selection: &Selection) -> Result<Plan, Error> {
        kiln_plan::plan(&self.tree, selection).map_err(|diagnostics| Error::Tree {
            files: self.tree.files.clone(),
            diagnostics,
        })
    }

    /// The layer key of each variant that `kiln.lock` gives one (a variant
    /// without a current entry must be resolved first: `None`).
    #[must_use]
    pub fn known_keys(&self, plan: &Plan) -> Vec<Option<kiln_store::InputKey>> {
        let lock = debian::read_lock(&self.tree.root.join(LOCK_FILE)).unwrap_or_default();
        keys::known_keys(plan, &lock, self.epoch)
    }

    /// What a build would do with each variant (the store is only read:
    /// an absent one holds nothing and is not created).
    #[must_use]
    pub fn actions(&self, plan: &Plan) -> Vec<Action> {
        let store = self
            .cache_dir
            .as_ref()
            .and_then(|d| kiln_store::Store::open_read_only(&d.join("store")).ok());
        self.known_keys(plan)
            .iter()
            .map(|key| match (&store, key) {
                (Some(s), Some(k)) if matches!(s.get(k), Ok(Some(_))) => Action::Cached,
                _ => Action::Build,
            })
            .collect()
    }

    /// Builds the plan's variants; see the crate's documentation.
    pub fn build(
        &self,
        plan: &Plan,
        options: &BuildOptions,
        events: &dyn EventSink,
        cancel: &CancelToken,
    ) -> Result<BuildReport, Error> {
        engine::build(self, plan, options, events, cancel)
    }

    /// Resolves every variant's packages afresh (`offline`: from the
    /// indexes an earlier run cached) and writes `kiln.lock`.
    pub fn lock(
        &self,
        plan: &Plan,
        offline: bool,
        events: &dyn EventSink,
    ) -> Result<Vec<LockedVariant>, Error> {
        debian::lock(self, plan, offline, events)
    }
}

/// Whether `--only`/`--skip` name this variant itself (not only as an
/// ancestor of a selected one).
#[must_use]
pub fn selects(selection: &Selection, v: &Variant) -> bool {
    let is = |w: &String| v.image == *w || v.holds(w);
    (selection.only.is_empty() || selection.only.iter().any(is)) && !selection.skip.iter().any(is)
}
