//! The build library driven directly, as `kiln serve` and workers drive
//! it: no binary, real Debian packages from the host's apt sources.

// Test helpers are called for their values; no need to mark them.
#![allow(clippy::must_use_candidate)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_build::{
    BuildOptions, BuildReport, CancelToken, Event, EventSink, OpenOptions, VariantStatus, Workspace,
};
use kiln_plan::Selection;

fn skip() -> bool {
    kiln_testkit::require::network_tests_skipped()
        || kiln_testkit::require::lacks_root("library builds")
}

/// A tree in a temporary folder.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), files);
    dir
}

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
    }
}

fn open(dir: &Path, cache: &Path) -> Workspace {
    let options = OpenOptions {
        cache_dir: Some(cache.to_path_buf()),
        ..OpenOptions::default()
    };
    Workspace::open(dir, &options).expect("the tree loads")
}

/// Every event, in the order the build sent them.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl EventSink for Recorder {
    fn event(&self, event: &Event) {
        self.0.lock().expect("not poisoned").push(event.clone());
    }
}

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

fn build(ws: &Workspace, sink: &dyn EventSink, cancel: &CancelToken) -> BuildReport {
    let plan = ws.plan(&Selection::default()).expect("plans");
    ws.build(&plan, &BuildOptions::default(), sink, cancel)
        .expect("the build runs")
}

fn status_of<'a>(report: &'a BuildReport, name: &str) -> &'a VariantStatus {
    &report
        .variants
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no variant {name}"))
        .status
}

/// The store in `cache` holds only sound layers.
fn assert_store_sound(cache: &Path) {
    let store = kiln_store::Store::open(&cache.join("store")).expect("store opens");
    let problems = store.verify().expect("verify runs");
    assert!(problems.is_empty(), "store problems: {problems:?}");
}

/// What [`check_sequence`] tracks of one variant.
#[derive(Default)]
struct Seen {
    started: usize,
    finished: usize,
    open: Option<String>,
    done_bytes: u64,
    total_bytes: u64,
    bytes: u64,
}

/// The event stream follows its rules: plan first, build last; every
/// started variant finishes exactly once, after it started; a variant's
/// steps come in start/finish pairs, one at a time, inside its start and
/// finish; download counts only grow and end at their total.
fn check_sequence(events: &[Event]) {
    assert!(
        matches!(events.first(), Some(Event::PlanResolved { .. })),
        "plan_resolved comes first"
    );
    assert!(
        matches!(events.last(), Some(Event::BuildFinished { .. })),
        "build_finished comes last"
    );
    let mut vs: BTreeMap<String, Seen> = BTreeMap::new();
    for e in events {
        match e {
            Event::VariantStarted { variant } => {
                let v = vs.entry(variant.clone()).or_default();
                assert_eq!(v.started, 0, "{variant} starts once");
                v.started += 1;
            }
            Event::VariantFinished { variant, .. } => {
                let v = vs.entry(variant.clone()).or_default();
                assert_eq!(v.finished, 0, "{variant} finishes once");
                assert!(v.open.is_none(), "{variant} finished inside a step");
                v.finished += 1;
            }
            Event::StepStarted { variant, step } => {
                let v = vs.get_mut(variant).expect("a step of a started variant");
                assert_eq!((v.started, v.finished), (1, 0), "{variant}: {step} outside");
                assert!(
                    v.open.is_none(),
                    "{variant}: {step} starts inside {:?}",
                    v.open
                );
                v.open = Some(step.clone());
            }
            Event::StepFinished { variant, step, .. } => {
                let v = vs.get_mut(variant).expect("a step of a started variant");
                assert_eq!(v.open.as_deref(), Some(step.as_str()), "{variant}: {step}");
                v.open = None;
            }
            Event::Download {
                variant,
                bytes,
                done_bytes,
                total_bytes,
                ..
            } => {
                let v = vs
                    .get_mut(variant)
                    .expect("a download of a started variant");
                assert!(
                    *done_bytes >= v.done_bytes,
                    "{variant}: done bytes only grow"
                );
                v.done_bytes = *done_bytes;
                v.total_bytes = *total_bytes;
                v.bytes += bytes;
            }
            _ => {}
        }
    }
    for (name, v) in &vs {
        if v.started == 1 {
            assert_eq!(v.finished, 1, "{name} started and never finished");
        }
        assert_eq!(v.bytes, v.done_bytes, "{name}: the bytes add up");
        assert_eq!(v.done_bytes, v.total_bytes, "{name}: every byte arrived");
    }
}

fn steps(report: &BuildReport, name: &str) -> Vec<String> {
    report
        .variants
        .iter()
        .find(|v| v.name == name)
        .expect("variant")
        .steps
        .iter()
        .map(|s| s.step.clone())
        .collect()
}

#[test]
fn a_build_through_the_library_reports_its_events_and_data() {
    if skip() {
        return;
    }
    let t = tree(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\noutputs = [\"tar\"]\n",
        ),
        (
            "app/image.toml",
            "from = \"base\"\nrun = [{ name = \"hello\", inline = \"echo hello from app\" }]\noutputs = [\"squashfs\"]\n",
        ),
    ]);
    let cache = t.path().join("cache");
    let ws = open(t.path(), &cache);
    let sink = Recorder::default();
    let report = build(&ws, &sink, &CancelToken::new());
    let events = sink.take();
    assert!(report.succeeded(), "{report:#?}");
    assert!(report.cancelled.is_none());
    check_sequence(&events);
    assert!(matches!(
        status_of(&report, "base"),
        VariantStatus::Built { .. }
    ));
    assert!(matches!(
        status_of(&report, "app"),
        VariantStatus::Built { .. }
    ));

    // The steps, in order, as the report and the events name them.
    let base = steps(&report, "base");
    for step in [
        "resolve",
        "download",
        "unpack",
        "configure",
        "commit",
        "output:tar",
    ] {
        assert!(base.contains(&step.to_owned()), "base has {step}: {base:?}");
    }
    let app = steps(&report, "app");
    assert_eq!(
        app.iter()
            .filter(|s| s.starts_with("provision:"))
            .collect::<Vec<_>>(),
        ["provision:run:hello", "provision:cleanup"]
    );
    assert_eq!(app.last().map(String::as_str), Some("output:squashfs"));
    assert!(events.iter().any(|e| matches!(e,
        Event::Log { variant, stream, text } if variant == "app" && stream == "run:hello" && text == "hello from app")));

    // What the downloads reported is what landed in the package cache.
    let on_disk: u64 = std::fs::read_dir(cache.join("debs"))
        .expect("debs")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "deb"))
        .map(|e| e.metadata().expect("metadata").len())
        .sum();
    let reported: u64 = events
        .iter()
        .filter_map(|e| match e {
            Event::Download { bytes, .. } => Some(*bytes),
            _ => None,
        })
        .sum();
    assert_eq!(reported, on_disk, "download bytes are the files' sizes");

    // Artifacts are data with their digests.
    for v in &report.variants {
        let log = v.log.as_ref().expect("a built variant has a log");
        assert!(log.is_file(), "{}", log.display());
        assert!(v.layer_key.as_ref().is_some_and(|k| k.len() == 64));
        assert_eq!(v.artifacts.len(), 1, "{}: {:?}", v.name, v.artifacts);
        for a in &v.artifacts {
            let path = report.out_dir.join(&a.path);
            let bytes = std::fs::read(&path).expect("artifact");
            assert_eq!(bytes.len() as u64, a.size);
            assert_eq!(kiln_testkit::sha256(&bytes), a.sha256);
        }
    }

    // Again: everything is cached, and the events say so.
    let report = build(&ws, &sink, &CancelToken::new());
    let events = sink.take();
    check_sequence(&events);
    for name in ["base", "app"] {
        assert_eq!(status_of(&report, name), &VariantStatus::Cached, "{name}");
        assert!(
            steps(&report, name)
                .iter()
                .all(|s| s.starts_with("output:")),
            "a cached variant only writes outputs: {:?}",
            steps(&report, name)
        );
    }
    assert_store_sound(&cache);
}

#[test]
fn two_threads_share_one_store_and_build_each_layer_once() {
    if skip() {
        return;
    }
    let files = [
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        (
            "img/image.toml",
            "from = \"debian:bookworm\"\noutputs = [\"tar\"]\n",
        ),
    ];
    let cache = tempfile::tempdir().expect("cache");
    let trees = [tree(&files), tree(&files)];
    let reports: Vec<BuildReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = trees
            .iter()
            .map(|t| {
                let cache = cache.path();
                scope.spawn(move || {
                    build(
                        &open(t.path(), cache),
                        &kiln_build::Discard,
                        &CancelToken::new(),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    let statuses: Vec<&VariantStatus> = reports.iter().map(|r| status_of(r, "img")).collect();
    let built = statuses
        .iter()
        .filter(|s| matches!(s, VariantStatus::Built { .. }))
        .count();
    assert_eq!(
        built, 1,
        "one thread builds, the other finds it: {statuses:?}"
    );
    assert!(statuses.contains(&&VariantStatus::Cached), "{statuses:?}");
    let keys: Vec<_> = reports
        .iter()
        .map(|r| r.variants[0].layer_key.clone())
        .collect();
    assert_eq!(keys[0], keys[1], "one layer");
    assert_store_sound(cache.path());
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

/// Cancels `token` a moment after the step `step` starts, and remembers
/// when.
struct CancelAt {
    step: &'static str,
    token: CancelToken,
    at: Mutex<Option<Instant>>,
}

impl EventSink for CancelAt {
    fn event(&self, event: &Event) {
        if let Event::StepStarted { step, .. } = event
            && step == self.step
        {
            let token = self.token.clone();
            *self.at.lock().expect("not poisoned") =
                Some(Instant::now() + Duration::from_millis(300));
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                token.cancel();
            });
        }
    }
}

#[test]
fn cancelling_kills_a_running_script_and_a_time_limit_stops_a_variant() {
    if skip() {
        return;
    }
    let t = tree(&[
        ("kiln.toml", "[output]\ndir = \"out\"\n"),
        (
            "base/image.toml",
            "from = \"debian:bookworm\"\noutputs = [\"tar\"]\n",
        ),
        (
            "app/image.toml",
            "from = \"base\"\nrun = [{ name = \"nap\", inline = \"sleep 4711\" }]\noutputs = [\"tar\"]\n",
        ),
    ]);
    let cache = t.path().join("cache");
    let ws = open(t.path(), &cache);
    let token = CancelToken::new();
    let sink = CancelAt {
        step: "provision:run:nap",
        token: token.clone(),
        at: Mutex::new(None),
    };
    let report = build(&ws, &sink, &token);
    let returned = Instant::now();
    let cancelled_at = sink
        .at
        .lock()
        .expect("not poisoned")
        .expect("the script started");
    assert!(
        returned.duration_since(cancelled_at) < Duration::from_secs(5),
        "returned {:?} after the cancel",
        returned.duration_since(cancelled_at)
    );
    assert!(matches!(
        status_of(&report, "base"),
        VariantStatus::Built { .. }
    ));
    assert_eq!(
        status_of(&report, "app"),
        &VariantStatus::Cancelled {
            step: "provision:run:nap".to_owned(),
            reason: "cancelled".to_owned()
        }
    );
    assert_eq!(report.cancelled.as_deref(), Some("cancelled"));
    assert!(
        processes_with("sleep 4711").is_empty(),
        "{:?}",
        processes_with("sleep 4711")
    );
    assert_store_sound(&cache);
    // Outputs written before the cancel stay.
    assert!(report.out_dir.join("base/base-r0.tar").is_file());

    // A variant's own `timeout` stops it alone, with the reason.
    write(
        t.path(),
        &[(
            "app/image.toml",
            "from = \"base\"\ntimeout = \"2s\"\nrun = [{ name = \"nap\", inline = \"sleep 4711\" }]\noutputs = [\"tar\"]\n",
        )],
    );
    let ws = open(t.path(), &cache);
    let started = Instant::now();
    let report = build(&ws, &kiln_build::Discard, &CancelToken::new());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status_of(&report, "base"), &VariantStatus::Cached);
    assert_eq!(
        status_of(&report, "app"),
        &VariantStatus::Cancelled {
            step: "provision:run:nap".to_owned(),
            reason: "timed out after 2s".to_owned()
        }
    );
    assert!(
        report.cancelled.is_none(),
        "the build itself was not cancelled"
    );
    assert!(processes_with("sleep 4711").is_empty());

    // The next build succeeds.
    write(
        t.path(),
        &[(
            "app/image.toml",
            "from = \"base\"\nrun = [{ name = \"nap\", inline = \"true\" }]\noutputs = [\"tar\"]\n",
        )],
    );
    let report = build(
        &open(t.path(), &cache),
        &kiln_build::Discard,
        &CancelToken::new(),
    );
    assert!(report.succeeded(), "{report:#?}");
    assert_store_sound(&cache);
}
