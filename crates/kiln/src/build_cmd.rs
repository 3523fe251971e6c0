//! `kiln build` and `kiln lock`: arguments to the build library's calls,
//! its report to text.

use std::io::IsTerminal;

use kiln_build::{BuildOptions, BuildReport, CancelToken, VariantStatus, Workspace};
use kiln_plan::{Plan, Selection};

use crate::cli::{BuildArgs, LockArgs, Progress, SelectArgs};
use crate::progress::{Mode, Reporter};
use crate::report::Style;
use crate::{Failure, Outcome};

pub fn selection(args: &SelectArgs) -> Selection {
    Selection {
        only: args.only.clone(),
        skip: args.skip.clone(),
    }
}

/// The cache folder when neither `--cache-dir` nor `[cache] dir` names
/// one: `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
pub fn default_cache_dir() -> Option<std::path::PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(std::path::PathBuf::from(x).join("kiln"));
    }
    std::env::var_os("HOME")
        .filter(|x| !x.is_empty())
        .map(|home| std::path::PathBuf::from(home).join(".cache/kiln"))
}

/// A library error as the CLI reports it.
pub fn failure(e: &kiln_build::Error, style: Style) -> Failure {
    match e {
        kiln_build::Error::Tree { files, diagnostics } => {
            Failure::Config(crate::report::render(files, diagnostics, style))
        }
        other => {
            let text = format!("error: {}\n", kiln_build::chain(other));
            if other.is_config() {
                Failure::Config(text)
            } else {
                Failure::Build(text)
            }
        }
    }
}

/// Opens the tree in `dir` and plans `selection`, rendering every problem.
pub fn open(
    dir: &std::path::Path,
    cache_dir: Option<&std::path::Path>,
    selection: &Selection,
    style: Style,
) -> Result<(Workspace, Plan), Failure> {
    let options = kiln_build::OpenOptions {
        cache_dir: cache_dir.map(std::path::Path::to_path_buf),
        default_cache_dir: default_cache_dir(),
        selection: selection.clone(),
    };
    let ws = Workspace::open(dir, &options).map_err(|e| failure(&e, style))?;
    let plan = ws.plan(selection).map_err(|e| failure(&e, style))?;
    Ok((ws, plan))
}

/// The build event renderer `--progress` asks for.
pub fn reporter(progress: Progress) -> Reporter {
    Reporter::new(match progress {
        Progress::Json => Mode::Json,
        Progress::Tty => Mode::Tty,
        Progress::Auto if std::io::stderr().is_terminal() => Mode::Tty,
        Progress::Plain | Progress::Auto => Mode::Plain,
    })
}

/// Builds what `plan` is missing, as the commands that act on built
/// variants (`publish`, `test`) do first: progress as `--progress` says,
/// cached layers and artifacts reused, the summary's failure if a variant
/// failed.
pub fn build_first(
    ws: &Workspace,
    plan: &Plan,
    progress: Progress,
    offline: bool,
    style: Style,
    cancel: &CancelToken,
) -> Result<BuildReport, Failure> {
    let options = BuildOptions {
        offline,
        ..BuildOptions::default()
    };
    let report = ws
        .build(plan, &options, &reporter(progress), cancel)
        .map_err(|e| failure(&e, style))?;
    summarize(&report)?;
    Ok(report)
}

pub fn run_build(args: &BuildArgs, style: Style, cancel: &CancelToken) -> Outcome {
    let selection = selection(&args.select);
    let (ws, plan) = open(
        &args.dir,
        args.fetch.cache_dir.as_deref(),
        &selection,
        style,
    )?;
    let reporter = reporter(args.progress);
    let options = BuildOptions {
        parallel: args.parallel.max(1),
        jobs: args.jobs.max(1),
        offline: args.fetch.offline,
        locked: args.locked,
        revise: args.revise.then(|| selection.clone()),
        timeout: args.timeout,
    };
    let report = ws
        .build(&plan, &options, &reporter, cancel)
        .map_err(|e| failure(&e, style))?;
    let summary = summarize(&report);
    if args.json {
        let json = serde_json::to_string_pretty(&report.manifest).expect("serializable") + "\n";
        return match summary {
            Ok(_) => Ok(json),
            Err(Failure::Build(text)) => Err(Failure::Build(json + &text)),
            Err(Failure::Config(text)) => Err(Failure::Config(json + &text)),
            Err(Failure::Cancelled(text)) => Err(Failure::Cancelled(json + &text)),
        };
    }
    summary
}

/// The summary of a build: a line per variant (with its artifacts), the
/// counts, and why it stopped when it did not finish.
pub fn summarize(report: &BuildReport) -> Outcome {
    let mut out = String::new();
    let mut failed = None;
    let mut counts = [0usize; 5];
    let mut stopped = None;
    for v in &report.variants {
        let (word, detail) = match &v.status {
            VariantStatus::Cached => {
                counts[1] += 1;
                ("cached", String::new())
            }
            VariantStatus::Built { seconds } => {
                counts[0] += 1;
                ("built", format!("in {seconds:.1}s"))
            }
            VariantStatus::Failed {
                message, config, ..
            } => {
                counts[2] += 1;
                failed = Some(failed.unwrap_or(true) && *config);
                ("failed", message.clone())
            }
            VariantStatus::Skipped { reason } => {
                counts[3] += 1;
                ("skipped", reason.clone())
            }
            VariantStatus::Cancelled { step, reason } => {
                counts[4] += 1;
                if step != "queued" && stopped.is_none() {
                    stopped = Some(format!("{reason} in variant {}, step {step}", v.name));
                }
                if step == "queued" {
                    ("cancelled", "not started".to_owned())
                } else {
                    ("cancelled", format!("{reason} in step {step}"))
                }
            }
        };
        let log_note = match (&v.status, &v.log) {
            (
                VariantStatus::Built { .. }
                | VariantStatus::Failed { .. }
                | VariantStatus::Cancelled { .. },
                Some(log),
            ) => format!("  (log: {})", log.display()),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{:<8} {:<28} {}{log_note}\n",
            word,
            v.name,
            detail.trim_end()
        ));
        for a in &v.artifacts {
            out.push_str(&format!(
                "           {}  {}\n",
                report.out_dir.join(&a.path).display(),
                crate::store_cmd::mb(a.size)
            ));
        }
    }
    out.push_str(&format!(
        "\n{} built, {} cached, {} failed, {} skipped",
        counts[0], counts[1], counts[2], counts[3]
    ));
    if counts[4] > 0 {
        out.push_str(&format!(", {} cancelled", counts[4]));
    }
    out.push('\n');
    if let Some(reason) = &report.cancelled {
        let what = stopped.unwrap_or_else(|| reason.clone());
        out.push_str(&format!("error: {what}\n"));
        return Err(if reason.starts_with("timed out") {
            Failure::Build(out)
        } else {
            Failure::Cancelled(out)
        });
    }
    if counts[4] > 0 {
        // A variant's own time limit: the build went on without it.
        return Err(Failure::Build(out));
    }
    match failed {
        None => Ok(out),
        Some(true) => Err(Failure::Config(out)),
        Some(false) => Err(Failure::Build(out)),
    }
}

pub fn run_lock(args: &LockArgs, style: Style) -> Outcome {
    let (ws, plan) = open(
        &args.dir,
        args.fetch.cache_dir.as_deref(),
        &selection(&args.select),
        style,
    )?;
    let reporter = Reporter::new(Mode::Plain);
    let locked = ws
        .lock(&plan, args.fetch.offline, &reporter)
        .map_err(|e| failure(&e, style))?;
    let mut out = String::new();
    for v in &locked {
        out.push_str(&format!("{}: {} packages\n", v.name, v.packages));
    }
    out.push_str(&format!(
        "wrote {}\n",
        ws.tree().root.join(kiln_build::LOCK_FILE).display()
    ));
    Ok(out)
}
