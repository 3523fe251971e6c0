//! Progress: bars on a terminal, plain lines otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Reports what a build does, for one variant at a time.
#[derive(Debug)]
pub struct Reporter {
    fancy: bool,
    quiet: bool,
    bar: Mutex<Option<ProgressBar>>,
    started: Instant,
}

impl Reporter {
    /// Bars when stderr is a terminal.
    pub fn new(quiet: bool) -> Self {
        Self {
            fancy: std::io::stderr().is_terminal() && !quiet,
            quiet,
            bar: Mutex::new(None),
            started: Instant::now(),
        }
    }

    /// A step of a variant's build: one line.
    pub fn step(&self, variant: &str, text: &str) {
        if self.quiet {
            return;
        }
        let line = format!(
            "[{:>6.1}s] {variant}: {text}",
            self.started.elapsed().as_secs_f64()
        );
        let guard = self.bar.lock().expect("not poisoned");
        match guard.as_ref() {
            Some(bar) => bar.println(line),
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }

    /// Starts a counted phase (downloads, unpacking).
    pub fn start(&self, variant: &str, what: &str, total: u64) {
        if !self.fancy {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix} {msg} [{bar:30}] {pos}/{len} {elapsed}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(variant.to_string());
        bar.set_message(what.to_string());
        *self.bar.lock().expect("not poisoned") = Some(bar);
    }

    /// Advances the counted phase to `done`.
    pub fn set(&self, done: u64) {
        if let Some(bar) = self.bar.lock().expect("not poisoned").as_ref() {
            bar.set_position(done);
        }
    }

    /// Ends the counted phase.
    pub fn finish(&self) {
        if let Some(bar) = self.bar.lock().expect("not poisoned").take() {
            bar.finish_and_clear();
        }
    }
}
