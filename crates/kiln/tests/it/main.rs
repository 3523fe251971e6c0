//! Integration tests of the `kiln` binary: one module per command.

// Test helpers are called for their values; no need to mark them.
#![allow(clippy::must_use_candidate)]

mod build;
mod errors;
mod examples;
mod init;
mod layers;
mod monitor;
mod netboot;
mod outputs;
mod plan;
mod progress;
mod publish;
mod repository;
mod sandbox;
mod serve;
mod tree_files;

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
    kiln_with_env(cwd, args, &[])
}

/// Runs kiln with `args` in `cwd` and the variables `env` set.
pub fn kiln_with_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        // The caller's SOURCE_DATE_EPOCH would change what is built.
        .env_remove("SOURCE_DATE_EPOCH")
        .envs(env.iter().copied())
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

/// A copy of `examples/<name>` in a new temporary folder, without any
/// `out/` a local build left there.
pub fn example_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new("cp")
        .arg("-a")
        .arg(examples().join(name).join("."))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(status.success());
    let _ = std::fs::remove_dir_all(dir.path().join("out"));
    dir
}

/// `kiln flist cat FLIST PATH --store STORE` run in `dir`.
pub fn flist_cat(dir: &Path, flist: &Path, path: &str, store: &Path) -> Run {
    kiln(
        dir,
        &[
            "flist",
            "cat",
            flist.to_str().expect("utf-8"),
            path,
            "--store",
            store.to_str().expect("utf-8"),
        ],
    )
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

/// End-to-end builds need root (or a user namespace's) and the Debian
/// archive; `KILN_SKIP_NETWORK_TESTS=1` skips them, and so does a run as
/// another user unless `CI` or `KILN_REQUIRE_TOOLS=1` demands every test.
pub fn skip_end_to_end() -> bool {
    kiln_testkit::require::network_tests_skipped()
        || kiln_testkit::require::lacks_root("end-to-end builds")
}

/// Whether `tool` is installed (a missing one fails the test under `CI`
/// or `KILN_REQUIRE_TOOLS=1`).
pub fn have(tool: &str) -> bool {
    kiln_testkit::require::have(tool)
}

/// `kiln store verify` of the store in `cache` passes.
pub fn assert_store_verifies(tree: &Path, cache: &Path) {
    let run = kiln(
        tree,
        &[
            "store",
            "verify",
            ".",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

/// No mount of this process's namespace lies below `path`.
pub fn assert_no_mount_under(path: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(path.to_str().expect("utf-8")),
        "a mount is left under {}",
        path.display()
    );
}
