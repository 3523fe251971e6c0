//! The trust chain through the binary, against a small repository signed
//! in the test (`kiln-testkit`): whatever fails verification stops the
//! build with exit 1 and an error naming the file, and nothing is
//! installed or cached. (The real archive's happy path is `build.rs`.)

use std::fs;
use std::path::Path;

use kiln_testkit::{Dates, FULL, LIBGREET_DEB, Repo, sha256};

use crate::{Run, TestTree, kiln};

fn tree_for(repo: &Repo) -> TestTree {
    let root = format!(
        "[output]\ndir = \"out\"\n\n[[sources]]\nuris = [\"{}\"]\nsuites = [\"test\"]\ncomponents = [\"main\"]\nkeyring = \"{}\"\n",
        repo.url(),
        repo.keyring().display()
    );
    TestTree::new(&[
        ("kiln.toml", &root),
        (
            "img/image.toml",
            "from = \"debian:test\"\nvariant = \"essential\"\npackages = [\"hello\"]\n",
        ),
    ])
}

fn build(t: &TestTree) -> Run {
    let cache = t.path().join("cache");
    kiln(
        t.path(),
        &["build", ".", "--cache-dir", cache.to_str().expect("utf-8")],
    )
}

/// The summary, without the progress lines (they carry times), the
/// server's address and the tree's path blanked out.
fn summary(repo: &Repo, t: &TestTree, run: &Run) -> String {
    let text = repo.redact(&run.stderr);
    let text = text.replace(&t.path().display().to_string(), "[tree]");
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.starts_with('[')) {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Files below `dir` (none if it is missing).
fn files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// No layer, no root, no package in the cache but some of `debs` (those
/// that finished downloading before the build stopped), nothing
/// unpacked.
fn assert_nothing_kept(t: &TestTree, debs: &[String]) {
    let cache = t.path().join("cache");
    assert_eq!(files(&cache.join("store/layers")), Vec::<String>::new());
    assert!(!t.path().join("out/img/rootfs").exists());
    let kept = files(&cache.join("debs"));
    assert!(
        kept.iter().all(|name| debs.contains(name)),
        "only verified packages are kept: {kept:?}"
    );
    assert!(
        files(&cache.join("unpacked")).is_empty(),
        "nothing was unpacked"
    );
}

#[test]
fn a_tampered_in_release_stops_the_build() {
    if kiln_testkit::require::lacks_root("building from a repository") {
        return;
    }
    let repo = Repo::new(FULL, Dates::Current);
    let t = tree_for(&repo);
    repo.tamper_in_release();
    let run = build(&t);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    insta::assert_snapshot!(summary(&repo, &t, &run));
    assert_nothing_kept(&t, &[]);
    assert_eq!(
        files(&t.path().join("cache/releases")),
        Vec::<String>::new(),
        "no unverified InRelease is kept"
    );
}

#[test]
fn an_index_that_does_not_match_its_release_stops_the_build() {
    if kiln_testkit::require::lacks_root("building from a repository") {
        return;
    }
    let repo = Repo::new(FULL, Dates::Current);
    let t = tree_for(&repo);
    repo.replace_index();
    let run = build(&t);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let text = summary(&repo, &t, &run);
    assert!(
        text.contains("Failed to verify `http://[server]/dists/test/main/binary-amd64/"),
        "{text}"
    );
    assert!(text.contains("expected SHA256"), "{text}");
    assert_nothing_kept(&t, &[]);
    assert_eq!(
        files(&t.path().join("cache/indexes")),
        Vec::<String>::new(),
        "no unverified index is kept"
    );
}

#[test]
fn a_package_that_does_not_match_its_digest_stops_the_build() {
    if kiln_testkit::require::lacks_root("building from a repository") {
        return;
    }
    let repo = Repo::new(FULL, Dates::Current);
    let t = tree_for(&repo);
    repo.replace_hello();
    let run = build(&t);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let text = summary(&repo, &t, &run);
    assert!(
        text.contains(
            "Failed to verify `http://[server]/pool/main/h/hello/hello_1.0_amd64.deb`: expected SHA256"
        ),
        "{text}"
    );
    // The package that verified may be kept for the next build (if its
    // download finished before the other's failed: they run in
    // parallel); the other never.
    assert_nothing_kept(&t, &[format!("{}.deb", sha256(LIBGREET_DEB))]);
}
