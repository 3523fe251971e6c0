//! Build workers: each takes the oldest queued job, fetches its commit
//! into a bare mirror, exports the tree at that commit, builds it through
//! `kiln-build` against the service's shared store, keeps its artifacts
//! (hard links, never a second copy) and reports the commit status.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use kiln_build::{BuildOptions, CancelToken, Event, EventSink, VariantStatus};

use crate::config::Config;
use crate::db::{Db, Job};
use crate::forge;

/// A running job's events, for the SSE stream.
#[derive(Debug, Default)]
pub struct Live {
    /// Every event so far, as JSON; its index + 1 is its SSE id.
    pub events: Mutex<Vec<String>>,
    /// Set once the job ended.
    pub done: AtomicBool,
    /// Woken at each new event and at the end.
    pub notify: tokio::sync::Notify,
}

/// What the server and its workers share.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The database.
    pub db: Db,
    /// Running jobs' live events.
    pub live: Mutex<HashMap<i64, Arc<Live>>>,
    /// Running jobs' cancel tokens.
    pub running: Mutex<HashMap<i64, CancelToken>>,
    /// Set by SIGTERM: nothing new starts.
    pub draining: AtomicBool,
    /// Wakes idle workers when a job is queued.
    pub wake: (Mutex<()>, Condvar),
    /// Webhook deliveries by result, for `/metrics`.
    pub deliveries: Mutex<HashMap<&'static str, u64>>,
    /// Builds running now.
    pub busy: AtomicU64,
}

impl Shared {
    /// Wakes a worker.
    pub fn kick(&self) {
        let _g = self.wake.0.lock();
        self.wake.1.notify_all();
    }

    /// Counts a webhook delivery.
    pub fn count_delivery(&self, result: &'static str) {
        *self
            .deliveries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(result)
            .or_default() += 1;
    }

    /// The folder of job `id`'s log and events.
    #[must_use]
    pub fn job_dir(&self, id: i64) -> PathBuf {
        self.config.data_dir.join("jobs").join(id.to_string())
    }

    /// Where job `id`'s artifacts are kept.
    #[must_use]
    pub fn artifacts_dir(&self, repo: &str, id: i64) -> PathBuf {
        self.config
            .data_dir
            .join("artifacts")
            .join(repo)
            .join(id.to_string())
    }
}

/// Runs jobs until the server drains.
pub fn worker(shared: &Arc<Shared>) {
    loop {
        if shared.draining.load(Ordering::SeqCst) {
            return;
        }
        match shared.db.claim() {
            Ok(Some(job)) => {
                shared.busy.fetch_add(1, Ordering::SeqCst);
                run(shared, &job);
                shared.busy.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(None) | Err(_) => {
                let g = shared
                    .wake
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let _ = shared.wake.1.wait_timeout(g, Duration::from_millis(500));
            }
        }
    }
}

/// A job's events: appended to `events.jsonl` and, as lines, to
/// `log.txt`; handed to SSE clients.
struct JobSink {
    live: Arc<Live>,
    events: Mutex<std::fs::File>,
    log: Mutex<std::fs::File>,
}

impl JobSink {
    fn line(&self, text: &str) {
        if let Ok(mut f) = self.log.lock() {
            let _ = writeln!(f, "{text}");
        }
    }
}

impl EventSink for JobSink {
    fn event(&self, event: &Event) {
        let line = line_of(event);
        let mut value = serde_json::to_value(event).expect("events serialize");
        if let serde_json::Value::Object(map) = &mut value {
            let mut out = serde_json::Map::new();
            out.insert("v".into(), kiln_build::SCHEMA_VERSION.into());
            out.insert("at".into(), jiff::Timestamp::now().as_millisecond().into());
            out.append(map);
            if let Some(line) = &line {
                out.insert("line".into(), line.as_str().into());
            }
            value = serde_json::Value::Object(out);
        }
        let json = value.to_string();
        {
            let mut events = self
                .live
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Ok(mut f) = self.events.lock() {
                let _ = writeln!(f, "{json}");
            }
            events.push(json);
        }
        self.live.notify.notify_waiters();
        if let Some(line) = line {
            self.line(&line);
        }
    }
}

/// The log line of an event, as `log.txt`, the event's `"line"` and the
/// web monitor show it; `None` for events that are not lines.
fn line_of(event: &Event) -> Option<String> {
    Some(match event {
        Event::StepStarted { variant, step } => format!("{variant}: {step}"),
        Event::Log {
            variant,
            stream,
            text,
        } => format!("{variant} [{stream}] {text}"),
        Event::Notice { variant, text } => format!("{variant}: {text}"),
        Event::VariantFinished { variant, status } => match status {
            VariantStatus::Built { seconds } => format!("{variant}: built in {seconds:.1}s"),
            VariantStatus::Failed { step, message, .. } => {
                format!("{variant}: failed in {step}: {message}")
            }
            VariantStatus::Cancelled { step, reason } => {
                format!("{variant}: {reason} in {step}")
            }
            VariantStatus::Skipped { reason } => format!("{variant}: skipped: {reason}"),
            VariantStatus::Cached => format!("{variant}: cached"),
        },
        Event::BuildFinished {
            built,
            cached,
            failed,
            skipped,
            cancelled,
            seconds,
        } => format!(
            "{built} built, {cached} cached, {failed} failed, {skipped} skipped, {cancelled} cancelled in {seconds:.1}s"
        ),
        _ => return None,
    })
}

fn git(args: &[&str]) -> Result<(), String> {
    let out = Command::new("git")
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("failed to run git: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`git {}` failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The commit's files in `work`: fetched into the repository's bare
/// mirror, then exported (`git archive`, no `.git` in the tree).
fn checkout(mirror: &Path, url: &str, sha: &str, work: &Path) -> Result<(), String> {
    let m = mirror.to_str().ok_or("the data folder is not UTF-8")?;
    if !mirror.join("HEAD").exists() {
        std::fs::create_dir_all(mirror).map_err(|e| e.to_string())?;
        git(&["init", "--bare", "-q", m])?;
    }
    git(&[
        "-C",
        m,
        "fetch",
        "-q",
        "--prune",
        url,
        "+refs/heads/*:refs/heads/*",
    ])?;
    git(&["-C", m, "cat-file", "-e", &format!("{sha}^{{commit}}")])
        .map_err(|_| format!("commit {sha} is not in {url}"))?;
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
    let mut archive = Command::new("git")
        .args(["-C", m, "archive", "--format=tar", sha])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("failed to run git: {e}"))?;
    let stdout = archive.stdout.take().ok_or("no pipe")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(work)
        .stdin(stdout)
        .status()
        .map_err(|e| format!("failed to run tar: {e}"))?;
    let archived = archive.wait().map_err(|e| e.to_string())?;
    if tar.success() && archived.success() {
        Ok(())
    } else {
        Err(format!("failed to export commit {sha}"))
    }
}

/// The tree's problems as lines (`file:line:column: message`).
fn render(e: &kiln_build::Error) -> String {
    match e {
        kiln_build::Error::Tree { files, diagnostics } => diagnostics
            .iter()
            .map(|d| match &d.primary {
                Some(l) => {
                    let (line, col) = files.line_col(l.origin.file, l.origin.span.start);
                    format!(
                        "{}:{line}:{col}: {} ({})",
                        files.get(l.origin.file).display,
                        d.message,
                        l.text
                    )
                }
                None => d.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => kiln_build::chain(other),
    }
}

fn run(shared: &Arc<Shared>, job: &Job) {
    let config = &shared.config;
    let dir = shared.job_dir(job.id);
    let _ = std::fs::create_dir_all(&dir);
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
    };
    let (Ok(events), Ok(log)) = (open("events.jsonl"), open("log.txt")) else {
        let _ = shared
            .db
            .finish(job.id, "failed", "cannot write the job's log", None);
        return;
    };
    // A requeued job goes on with the events of its earlier attempts, so
    // SSE ids stay positions in `events.jsonl`.
    let earlier = std::fs::read_to_string(dir.join("events.jsonl")).unwrap_or_default();
    let live = Arc::new(Live {
        events: Mutex::new(earlier.lines().map(str::to_owned).collect()),
        ..Live::default()
    });
    shared
        .live
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(job.id, Arc::clone(&live));
    let cancel = CancelToken::new();
    shared
        .running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(job.id, cancel.clone());
    let sink = JobSink {
        live: Arc::clone(&live),
        events: Mutex::new(events),
        log: Mutex::new(log),
    };
    sink.line(&format!(
        "job {} (attempt {}): {} {} at {}",
        job.id, job.attempts, job.repo, job.branch, job.sha
    ));
    let report_status = |state: forge::State, description: String, context: &str| {
        config.forge.as_ref().and_then(|f| {
            forge::post(
                f,
                job,
                state,
                &format!("{}/jobs/{}", config.base_url, job.id),
                &description,
                context,
                dir.join("log.txt"),
            )
        })
    };
    let pending = report_status(forge::State::Pending, "building".into(), "kiln");

    let (state, reason, result) = build(shared, job, &sink, &cancel);
    sink.line(&format!(
        "job {}: {state}{}",
        job.id,
        if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        }
    ));
    let _ = shared.db.finish(job.id, state, &reason, result.as_ref());
    let counts = result
        .as_ref()
        .and_then(|r| r.get("counts"))
        .and_then(|c| c.as_str())
        .unwrap_or(&reason)
        .to_owned();
    let forge_state = match state {
        "succeeded" => forge::State::Success,
        "failed" => forge::State::Failure,
        _ => forge::State::Error,
    };
    if let Some(p) = pending {
        let _ = p.join();
    }
    if state != "interrupted" {
        let mut sent: Vec<_> = report_status(forge_state, counts, "kiln")
            .into_iter()
            .collect();
        if let Some(variants) = result
            .as_ref()
            .and_then(|r| r.get("variants"))
            .and_then(|v| v.as_array())
        {
            for v in variants
                .iter()
                .filter(|v| v["status"]["status"] == "failed")
            {
                let name = v["name"].as_str().unwrap_or_default();
                sent.extend(report_status(
                    forge::State::Failure,
                    format!(
                        "failed in {}",
                        v["status"]["step"].as_str().unwrap_or_default()
                    ),
                    &format!("kiln/{name}"),
                ));
            }
        }
        for s in sent {
            let _ = s.join();
        }
    }
    shared
        .running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&job.id);
    live.done.store(true, Ordering::SeqCst);
    live.notify.notify_waiters();
    shared
        .live
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&job.id);
}

/// The build of one job: its end state, why, and its per-variant results.
fn build(
    shared: &Arc<Shared>,
    job: &Job,
    sink: &JobSink,
    cancel: &CancelToken,
) -> (&'static str, String, Option<serde_json::Value>) {
    let config = &shared.config;
    let Some(repo) = config.repo(&job.repo) else {
        return (
            "failed",
            format!("repository `{}` is no longer configured", job.repo),
            None,
        );
    };
    let mirror = config
        .data_dir
        .join("git")
        .join(format!("{}.git", repo.name));
    let work = config.data_dir.join("work").join(job.id.to_string());
    if let Err(e) = checkout(&mirror, &repo.url, &job.sha, &work) {
        sink.line(&e);
        let _ = std::fs::remove_dir_all(&work);
        return ("failed", e, None);
    }
    let outcome = (|| {
        let options = kiln_build::OpenOptions {
            cache_dir: Some(config.data_dir.join("cache")),
            ..kiln_build::OpenOptions::default()
        };
        let ws = kiln_build::Workspace::open(&work.join(&repo.tree), &options)?;
        let selection = kiln_plan::Selection {
            only: Vec::new(),
            skip: job.skip.split_whitespace().map(str::to_owned).collect(),
        };
        let plan = ws.plan(&selection)?;
        let options = BuildOptions {
            timeout: Some(config.timeout),
            ..BuildOptions::default()
        };
        ws.build(&plan, &options, sink, cancel)
    })();
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            let text = render(&e);
            sink.line(&text);
            let _ = std::fs::remove_dir_all(&work);
            return ("failed", text, None);
        }
    };
    // Keep the artifacts: hard links into the job's folder.
    let keep = shared.artifacts_dir(&job.repo, job.id);
    let mut variants = Vec::new();
    for v in &report.variants {
        let mut artifacts = Vec::new();
        for a in &v.artifacts {
            let from = report.out_dir.join(&a.path);
            let to = keep.join(&v.name).join(&a.name);
            let linked = to
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    let _ = std::fs::remove_file(&to);
                    std::fs::hard_link(&from, &to)
                        .or_else(|_| std::fs::copy(&from, &to).map(|_| ()))
                });
            if let Err(e) = linked {
                sink.line(&format!("failed to keep `{}`: {e}", a.path));
                continue;
            }
            artifacts.push(serde_json::json!({
                "name": a.name,
                "format": a.format,
                "size": a.size,
                "sha256": a.sha256,
                "url": format!("/artifacts/{}/{}/{}/{}", job.repo, job.id, v.name, a.name),
            }));
        }
        let mut entry = serde_json::json!({
            "name": v.name,
            "status": v.status,
            "layer_key": v.layer_key,
            "steps": v.steps,
            "artifacts": artifacts,
        });
        // The variant's manifest entry and SBOM, to read on its job page.
        if let Some(m) = report
            .manifest
            .variants
            .iter()
            .find(|m| m.variant == v.name)
        {
            let url = |name: &str| format!("/artifacts/{}/{}/{}/{name}", job.repo, job.id, v.name);
            let dir = keep.join(&v.name);
            let text = serde_json::to_string_pretty(m).expect("serializable") + "\n";
            if std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join("manifest.json"), text))
                .is_ok()
            {
                entry["manifest_url"] = url("manifest.json").into();
            }
            if let Some(sbom) = &m.sbom {
                let to = dir.join(format!("{}.spdx.json", v.name));
                let _ = std::fs::remove_file(&to);
                if std::fs::hard_link(report.out_dir.join(sbom), &to)
                    .or_else(|_| std::fs::copy(report.out_dir.join(sbom), &to).map(|_| ()))
                    .is_ok()
                {
                    entry["sbom_url"] = url(&format!("{}.spdx.json", v.name)).into();
                }
            }
        }
        variants.push(entry);
    }
    // The whole manifest at the folder's root, whose paths (`VARIANT/FILE`)
    // are the kept files: the folder is an output folder, which `/boot/`
    // serves as a boot server.
    if let Err(e) = std::fs::create_dir_all(&keep).and_then(|()| report.manifest.write(&keep)) {
        sink.line(&format!("failed to keep the manifest: {e}"));
    }
    let counts_text = {
        let c = report.counts();
        format!(
            "{} built, {} cached, {} failed",
            c.built, c.cached, c.failed
        )
    };
    let result = serde_json::json!({
        "counts": counts_text,
        "seconds": report.seconds,
        "variants": variants,
    });
    let _ = std::fs::remove_dir_all(&work);
    let (state, reason) = match report.cancelled.as_deref() {
        Some(r) if r.starts_with("timed out") => ("timed-out", r.to_owned()),
        Some("interrupted") => ("interrupted", "the server shut down".to_owned()),
        Some(r) => ("cancelled", r.to_owned()),
        None if report.succeeded() => ("succeeded", String::new()),
        None => ("failed", counts_text),
    };
    if state == "succeeded" {
        point_latest(shared, job);
        prune(shared, job);
    }
    (state, reason, Some(result))
}

/// `artifacts/{repo}/branches/{branch}`: the link to the branch's newest
/// successful job.
fn latest_link(shared: &Shared, repo: &str, branch: &str) -> PathBuf {
    shared
        .config
        .data_dir
        .join("artifacts")
        .join(repo)
        .join("branches")
        .join(branch.replace('/', "%2F"))
}

/// The job the branch's `latest` link points at.
pub(crate) fn latest_of(shared: &Shared, repo: &str, branch: &str) -> Option<i64> {
    std::fs::read_link(latest_link(shared, repo, branch))
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// `artifacts/{repo}/branches/{branch}` → the job's folder, switched
/// atomically (a new link renamed over the old), unless it points at a
/// newer job already (with several workers, an older job can end last).
fn point_latest(shared: &Shared, job: &Job) {
    if latest_of(shared, &job.repo, &job.branch).is_some_and(|id| id > job.id) {
        return;
    }
    let link = latest_link(shared, &job.repo, &job.branch);
    let Some(dir) = link.parent() else { return };
    let tmp = dir.join(format!(".{}.{}", job.id, std::process::id()));
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::remove_file(&tmp);
    if std::os::unix::fs::symlink(format!("../{}", job.id), &tmp).is_ok() {
        let _ = std::fs::rename(&tmp, &link);
    }
}

/// Removes the artifacts of the branch's jobs beyond `keep_jobs` (their
/// history stays), never those `latest` points at.
fn prune(shared: &Shared, job: &Job) {
    let latest = latest_of(shared, &job.repo, &job.branch);
    if let Ok(old) = shared
        .db
        .beyond(&job.repo, &job.branch, shared.config.keep_jobs)
    {
        for id in old.into_iter().filter(|id| Some(*id) != latest) {
            let _ = std::fs::remove_dir_all(shared.artifacts_dir(&job.repo, id));
        }
    }
}
