//! Progress: the build library's events rendered on stderr, as a redrawn
//! line per running variant on a terminal (`tty`), one line per step
//! (`plain`, for CI logs and pipes), or one JSON object per event
//! (`json`, for machines: see the README's schema).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_build::{Event, EventSink, VariantStatus};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Tty,
    Plain,
    Json,
}

/// Renders a build's events on stderr.
#[derive(Debug)]
pub struct Reporter {
    mode: Mode,
    bars: Option<(MultiProgress, Mutex<BTreeMap<String, ProgressBar>>)>,
    started: Instant,
}

impl Reporter {
    pub fn new(mode: Mode) -> Self {
        let bars = (mode == Mode::Tty).then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(BTreeMap::new()),
            )
        });
        Self {
            mode,
            bars,
            started: Instant::now(),
        }
    }

    /// A variant's line says `text` now.
    fn step(&self, variant: &str, text: &str) {
        match &self.bars {
            Some((multi, bars)) => {
                let mut bars = bars
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let bar = bars.entry(variant.to_string()).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} {prefix:.bold} {msg} {elapsed:.dim}",
                        )
                        .expect("valid template"),
                    );
                    bar.set_prefix(variant.to_string());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                bar.set_message(text.to_string());
            }
            None => {
                let line = format!(
                    "[{:>6.1}s] {variant}: {text}",
                    self.started.elapsed().as_secs_f64()
                );
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }

    /// A variant is done: its line stays with `text`.
    fn done(&self, variant: &str, text: &str) {
        match &self.bars {
            Some((_, bars)) => {
                let bar = bars
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(variant);
                if let Some(bar) = bar {
                    bar.finish_with_message(text.to_string());
                }
            }
            None => self.step(variant, text),
        }
    }

    fn json(&self, event: &Event) {
        let mut value = serde_json::to_value(event).expect("events serialize");
        if let serde_json::Value::Object(map) = &mut value {
            let mut out = serde_json::Map::new();
            out.insert("v".into(), kiln_build::SCHEMA_VERSION.into());
            out.insert(
                "time".into(),
                serde_json::json!((self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
            );
            out.append(map);
            value = serde_json::Value::Object(out);
        }
        let line = serde_json::to_string(&value).expect("serializable");
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

impl EventSink for Reporter {
    fn event(&self, event: &Event) {
        if self.mode == Mode::Json {
            self.json(event);
            return;
        }
        match event {
            Event::StepStarted { variant, step } => self.step(variant, step),
            Event::Notice { variant, text } => self.step(variant, text),
            Event::Download {
                variant,
                done_bytes,
                total_bytes,
                ..
            } if self.bars.is_some() => self.step(
                variant,
                &format!(
                    "download {} of {}",
                    crate::store_cmd::mb(*done_bytes),
                    crate::store_cmd::mb(*total_bytes)
                ),
            ),
            Event::VariantFinished { variant, status } => {
                let text = match status {
                    VariantStatus::Built { seconds } => format!("built in {seconds:.1}s"),
                    VariantStatus::Failed { step, .. } => format!("failed in {step}"),
                    VariantStatus::Cancelled { step, reason } => format!("{reason} in {step}"),
                    other => other.word().to_owned(),
                };
                // A skipped variant never had a line of its own on a terminal.
                if !matches!(status, VariantStatus::Skipped { .. }) || self.bars.is_none() {
                    self.done(variant, &text);
                }
            }
            _ => {}
        }
    }
}
