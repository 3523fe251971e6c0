//! Progress reporting for fetches and downloads.
//!
//! The library never prints: it describes what happens as [`Event`]s and
//! hands them to a [`Progress`] the caller supplies (the binary prints them).
//! Any `Fn(&Event) + Sync` closure is a [`Progress`].

use std::time::Duration;

/// Something that happened while fetching indexes or packages.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A request is about to be made.
    Fetching {
        /// The URL.
        url: &'a str,
    },
    /// A request failed with a network error and will be tried again.
    Retrying {
        /// The URL.
        url: &'a str,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// How long until the next attempt.
        delay: Duration,
        /// What went wrong, as text.
        error: &'a str,
    },
    /// A verified package index was found in the cache; no download needed.
    IndexCached {
        /// Path of the index relative to `dists/<suite>/`.
        path: &'a str,
    },
    /// A package download finished (or the cache already had it).
    PackageReady {
        /// Package name.
        name: &'a str,
        /// Size in bytes.
        size: u64,
        /// `true` if it came from the cache.
        cached: bool,
        /// Packages ready so far, this one included.
        done: usize,
        /// Packages in this batch.
        total: usize,
    },
}

/// Receives [`Event`]s. Called from several download threads at once.
pub trait Progress: Sync {
    /// Handles one event.
    fn event(&self, event: &Event<'_>);

    /// Whether the caller wants the work stopped: downloads check it
    /// before each package and each read, and end with
    /// [`crate::Error::Cancelled`].
    fn cancelled(&self) -> bool {
        false
    }
}

impl<F: Fn(&Event<'_>) + Sync> Progress for F {
    fn event(&self, event: &Event<'_>) {
        self(event);
    }
}

/// A [`Progress`] that ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: &Event<'_>) {}
}
