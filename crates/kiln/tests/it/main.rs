//! Integration tests of the `kiln` binary: one module per command.

// Test helpers are called for their values; no need to mark them.
#![allow(clippy::must_use_candidate)]

mod build;
mod errors;
mod init;
mod layers;
mod plan;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tree written into a temporary folder.
#[derive(Debug)]
pub struct TestTree {
    pub dir: tempfile::TempDir,
}

impl TestTree {
    /// Writes `files` (path, content) below a new temporary root.
    pub fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, content) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write");
        }
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A `[[sources]]` table so tests do not depend on the host's apt sources.
pub const SOURCES: &str = r#"
[[sources]]
uris = ["http://mirror.invalid/debian"]
suites = ["bookworm"]
components = ["main"]
"#;

/// Output of one kiln run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs kiln with `args` in `cwd`.
pub fn kiln(cwd: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        // Nothing from the user's own cache (layers would show as cached).
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("kiln-test-no-cache"),
        )
        .env_remove("COLUMNS")
        .output()
        .expect("kiln runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The repository's `examples/` folder.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Snapshot settings that blank out digests.
pub fn filters() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"\b[0-9a-f]{64}\b", "[DIGEST]");
    s.add_filter(r"\b[0-9a-f]{12}\b", "[SHORT]");
    s.set_prepend_module_to_snapshot(false);
    s
}
