//! Progress: a spinner line per running variant on a terminal, plain lines
//! otherwise (CI logs, pipes).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Reports what a build does, variant by variant.
#[derive(Debug)]
pub struct Reporter {
    bars: Option<(MultiProgress, Mutex<BTreeMap<String, ProgressBar>>)>,
    started: Instant,
}

impl Reporter {
    /// Bars when stderr is a terminal.
    pub fn new() -> Self {
        let bars = std::io::stderr().is_terminal().then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(BTreeMap::new()),
            )
        });
        Self {
            bars,
            started: Instant::now(),
        }
    }

    /// A step of a variant's build begins (or a notable event happens).
    pub fn step(&self, variant: &str, text: &str) {
        match &self.bars {
            Some((multi, bars)) => {
                let mut bars = bars.lock().expect("not poisoned");
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
    pub fn done(&self, variant: &str, text: &str) {
        match &self.bars {
            Some((_, bars)) => {
                if let Some(bar) = bars.lock().expect("not poisoned").remove(variant) {
                    bar.finish_with_message(text.to_string());
                }
            }
            None => self.step(variant, text),
        }
    }
}
