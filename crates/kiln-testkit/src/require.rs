//! What a test needs from the machine, and what happens when it is not
//! there.
//!
//! One rule for every crate: a test that cannot run here (a tool not
//! installed, not root, a file system that cannot do it) calls [`skip`],
//! which prints `SKIPPED: <reason>` and lets the test return, unless the
//! environment asks for everything to run — `CI` set (to anything but
//! `0`/`false`) or `KILN_REQUIRE_TOOLS=1`, as `scripts/test` sets — when it
//! fails the test instead. So the README's test command, which installs
//! the tools, tests everything or fails; a quick `cargo test` on a laptop
//! still passes with what it has.
//!
//! The one switch that turns tests off on purpose is
//! `KILN_SKIP_NETWORK_TESTS=1`: the tests that need the Debian archive
//! (the host's apt sources) are skipped, in every crate alike.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether a missing tool or privilege fails the test (`CI` or
/// `KILN_REQUIRE_TOOLS=1`) rather than skipping it.
#[must_use]
pub fn tools_required() -> bool {
    flag("CI") || flag("KILN_REQUIRE_TOOLS")
}

/// Reports that the calling test cannot run here, for `reason`; returns
/// `true` so the caller can `return`.
///
/// # Panics
///
/// When [`tools_required`]: the test fails with the reason.
// Called as a statement where a test goes on with less, hence no must_use.
#[allow(clippy::print_stderr, clippy::must_use_candidate)]
pub fn skip(reason: &str) -> bool {
    assert!(
        !tools_required(),
        "this test needs what is missing here: {reason} (CI or KILN_REQUIRE_TOOLS=1 is set, so it may not be skipped; scripts/test installs what the tests need)"
    );
    eprintln!("SKIPPED: {reason}");
    true
}

/// Whether `tool` is on `PATH` (or, given with a `/`, exists); if not,
/// [`skip`]s.
#[must_use]
pub fn have(tool: &str) -> bool {
    let found = if tool.contains('/') {
        Path::new(tool).exists()
    } else {
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| {
                std::fs::metadata(dir.join(tool))
                    .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
            })
        })
    };
    found || !skip(&format!("`{tool}` is not installed"))
}

/// Whether the test runs as root.
#[must_use]
pub fn is_root() -> bool {
    // /proc/self belongs to this process's (effective) user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `true` (after [`skip`]) when not root: `if lacks_root("loop devices") { return; }`.
#[must_use]
pub fn lacks_root(why: &str) -> bool {
    !is_root() && skip(&format!("needs root: {why}"))
}

/// Whether the tests that need the Debian archive are turned off
/// (`KILN_SKIP_NETWORK_TESTS=1`); says so when they are.
#[must_use]
#[allow(clippy::print_stderr)]
pub fn network_tests_skipped() -> bool {
    let off = std::env::var_os("KILN_SKIP_NETWORK_TESTS").is_some_and(|v| v == "1");
    if off {
        eprintln!("SKIPPED: KILN_SKIP_NETWORK_TESTS=1 (needs the Debian archive)");
    }
    off
}
