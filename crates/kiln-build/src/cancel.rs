//! Stopping a build: a [`CancelToken`] any thread may trigger (Ctrl-C, a
//! service's cancel button, a watchdog's time limit).
//!
//! The token is checked between steps, and handed (as its flag) to what
//! runs long: the sandbox kills a running script's whole PID namespace,
//! dpkg's unpacking, the package downloads and the squashfs writer stop at
//! their next file. Whatever is stopped leaves nothing in the store: the
//! layer's stage is removed, outputs already written stay.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A shared "stop now" with the reason it was given. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
    reason: Arc<Mutex<Option<String>>>,
}

impl CancelToken {
    /// A token nobody has triggered.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the build: "cancelled".
    pub fn cancel(&self) {
        self.cancel_with("cancelled");
    }

    /// Stops the build, giving why (`timed out after 3s`). The first
    /// reason given stays.
    pub fn cancel_with(&self, reason: impl Into<String>) {
        let mut r = self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if r.is_none() {
            *r = Some(reason.into());
        }
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether the build must stop.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Why it stops, once it does.
    #[must_use]
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The flag lower crates poll.
    pub(crate) fn flag(&self) -> &AtomicBool {
        &self.flag
    }

    /// The flag, shared, for options that own it.
    pub(crate) fn shared_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }
}
