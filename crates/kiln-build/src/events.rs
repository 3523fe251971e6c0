//! What a build tells its front end while it runs: a closed set of
//! [`Event`]s, delivered to an [`EventSink`] from the build's threads.
//!
//! The CLI's progress bars, its plain lines, `--progress=json` and the
//! build service's live view are all consumers of these events; the
//! library itself prints nothing.

use serde::Serialize;

/// The version of the event schema `--progress=json` writes (`"v"`).
pub const SCHEMA_VERSION: u32 = 1;

/// How many variants ended in each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Built.
    pub built: usize,
    /// Their layer was in the store.
    pub cached: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped because a parent did not build.
    pub skipped: usize,
    /// Stopped by cancellation or a time limit.
    pub cancelled: usize,
}

impl Counts {
    /// Counts `statuses`.
    pub fn of<'a>(statuses: impl IntoIterator<Item = &'a VariantStatus>) -> Self {
        let mut c = Counts::default();
        for s in statuses {
            *match s {
                VariantStatus::Built { .. } => &mut c.built,
                VariantStatus::Cached => &mut c.cached,
                VariantStatus::Failed { .. } => &mut c.failed,
                VariantStatus::Skipped { .. } => &mut c.skipped,
                VariantStatus::Cancelled { .. } => &mut c.cancelled,
            } += 1;
        }
        c
    }
}

/// One thing that happened in a build.
///
/// Serialized (for `--progress=json`) with its name in `"event"`, fields
/// beside it. For a variant, every `variant_started` is followed by
/// exactly one `variant_finished`; between them its `step_started` and
/// `step_finished` come in pairs, one step at a time.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The plan is known: every variant the build considers, parents first.
    PlanResolved {
        /// The variants, in plan order.
        variants: Vec<PlannedVariant>,
    },
    /// A variant waits for a worker (or for its parent).
    VariantQueued {
        /// The variant.
        variant: String,
    },
    /// A worker took the variant.
    VariantStarted {
        /// The variant.
        variant: String,
    },
    /// A step of a variant began: `resolve`, `download`, `unpack`,
    /// `database`, `preinst`, `configure`, `remove`, `provision:<step>`,
    /// `initramfs`, `bootloader`, `commit`, `export`, `output:<format>`.
    StepStarted {
        /// The variant.
        variant: String,
        /// The step's name.
        step: String,
    },
    /// The step ended.
    StepFinished {
        /// The variant.
        variant: String,
        /// The step's name.
        step: String,
        /// How long it took.
        seconds: f64,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A package file is ready (downloaded and verified, or found in the
    /// cache).
    Download {
        /// The variant.
        variant: String,
        /// The package.
        package: String,
        /// Its size in bytes.
        bytes: u64,
        /// Whether it came from the cache.
        cached: bool,
        /// Bytes of the variant's packages ready so far.
        done_bytes: u64,
        /// Bytes of all the packages the variant downloads.
        total_bytes: u64,
    },
    /// A line a step wrote (a script's output, dpkg's, kiln's own notes).
    Log {
        /// The variant.
        variant: String,
        /// The step that wrote it (`packages:configure`, `run:setup`, …).
        stream: String,
        /// The line, without its newline.
        text: String,
    },
    /// Something a user should see that is not a step: a retried
    /// download, a lock entry that no longer fits.
    Notice {
        /// The variant.
        variant: String,
        /// What happened.
        text: String,
    },
    /// A variant is done, one way or the other.
    VariantFinished {
        /// The variant.
        variant: String,
        /// How it ended.
        #[serde(flatten)]
        status: VariantStatus,
    },
    /// The build is done.
    BuildFinished {
        /// Variants built.
        built: usize,
        /// Variants whose layer was in the store.
        cached: usize,
        /// Variants that failed.
        failed: usize,
        /// Variants skipped because a parent did not build.
        skipped: usize,
        /// Variants stopped by cancellation or a time limit.
        cancelled: usize,
        /// How long the build took.
        seconds: f64,
    },
}

impl Event {
    /// The event's name, as `"event"` writes it.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Event::PlanResolved { .. } => "plan_resolved",
            Event::VariantQueued { .. } => "variant_queued",
            Event::VariantStarted { .. } => "variant_started",
            Event::StepStarted { .. } => "step_started",
            Event::StepFinished { .. } => "step_finished",
            Event::Download { .. } => "download",
            Event::Log { .. } => "log",
            Event::Notice { .. } => "notice",
            Event::VariantFinished { .. } => "variant_finished",
            Event::BuildFinished { .. } => "build_finished",
        }
    }
}

/// A variant of the plan, as [`Event::PlanResolved`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedVariant {
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// The variant it builds on.
    pub parent: Option<String>,
}

/// How a variant's build ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum VariantStatus {
    /// Its layer was built and committed, its outputs written.
    Built {
        /// How long it took.
        seconds: f64,
    },
    /// Its layer was in the store; its outputs were written.
    Cached,
    /// A step failed.
    Failed {
        /// The step (see [`Event::StepStarted`]).
        step: String,
        /// What went wrong, with its causes.
        message: String,
        /// The last lines the step wrote.
        last_lines: Vec<String>,
        /// Whether the configuration caused it (the CLI exits 2, not 1).
        config: bool,
    },
    /// A parent did not build.
    Skipped {
        /// Which, and why.
        reason: String,
    },
    /// Cancelled, or out of time.
    Cancelled {
        /// The step it was in.
        step: String,
        /// `cancelled` or `timed out after 3s`.
        reason: String,
    },
}

impl VariantStatus {
    /// The status word: `built`, `cached`, `failed`, `skipped`, `cancelled`.
    #[must_use]
    pub fn word(&self) -> &'static str {
        match self {
            VariantStatus::Built { .. } => "built",
            VariantStatus::Cached => "cached",
            VariantStatus::Failed { .. } => "failed",
            VariantStatus::Skipped { .. } => "skipped",
            VariantStatus::Cancelled { .. } => "cancelled",
        }
    }
}

/// Receives a build's events, from several threads at once.
pub trait EventSink: Sync {
    /// Handles one event. It must not block for long: the build waits.
    fn event(&self, event: &Event);
}

impl<F: Fn(&Event) + Sync> EventSink for F {
    fn event(&self, event: &Event) {
        self(event);
    }
}

/// A sink that drops every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl EventSink for Discard {
    fn event(&self, _: &Event) {}
}
