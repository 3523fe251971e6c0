//! Artifacts kept with their layer.

use std::fs;

use kiln_store::{Problem, Store};

use crate::{build, key};

#[test]
fn an_artifact_is_stored_found_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    build(&store, key(1), "base", None, &[("etc/a", 10)]);
    assert!(store.artifact(&key(1), "tar v1").unwrap().is_none());
    let scratch = store.artifact_scratch().unwrap();
    fs::write(scratch.join("base.tar"), b"archive bytes").unwrap();
    let stored = store
        .put_artifact(&key(1), "tar v1", "base.tar", &scratch.join("base.tar"))
        .unwrap();
    assert_eq!(stored.meta.size, 13);
    // sha256sum of "archive bytes".
    let expected = std::process::Command::new("sh")
        .args(["-c", "printf 'archive bytes' | sha256sum"])
        .output()
        .unwrap();
    assert_eq!(
        stored.meta.sha256,
        String::from_utf8_lossy(&expected.stdout)[..64]
    );
    assert_eq!(fs::read(&stored.path).unwrap(), b"archive bytes");
    // Found again by the same identity only.
    assert_eq!(
        store.artifact(&key(1), "tar v1").unwrap(),
        Some(stored.clone())
    );
    assert!(store.artifact(&key(1), "tar v2").unwrap().is_none());
    assert!(store.artifact_intact(&stored));
    assert!(store.verify().unwrap().is_empty());
    // Same size, other bytes: found by size, but not intact, and verify
    // says so.
    fs::write(&stored.path, b"ARCHIVE BYTES").unwrap();
    assert!(!store.artifact_intact(&stored));
    let problems = store.verify().unwrap();
    assert!(
        matches!(problems.as_slice(), [Problem::ArtifactChanged { variant, .. }] if variant == "base"),
        "{problems:?}"
    );
    // A shorter file is not found at all; storing again replaces it.
    fs::write(&stored.path, b"short").unwrap();
    assert!(store.artifact(&key(1), "tar v1").unwrap().is_none());
    let scratch = store.artifact_scratch().unwrap();
    fs::write(scratch.join("base.tar"), b"archive bytes").unwrap();
    let again = store
        .put_artifact(&key(1), "tar v1", "base.tar", &scratch.join("base.tar"))
        .unwrap();
    assert_eq!(again.meta.sha256, stored.meta.sha256);
    assert!(store.verify().unwrap().is_empty());
    // It goes with its layer.
    assert_eq!(store.artifacts(&key(1)).unwrap().len(), 1);
    let lock = store.lock(&key(1)).unwrap();
    store.remove(&lock).unwrap();
    assert!(store.artifacts(&key(1)).unwrap().is_empty());
}

#[test]
fn a_folder_artifact_is_stored_by_its_listing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    build(&store, key(1), "base", None, &[("etc/a", 10)]);
    let layout = |at: &std::path::Path| {
        fs::create_dir_all(at.join("blobs/sha256")).unwrap();
        fs::write(at.join("oci-layout"), b"{}").unwrap();
        fs::write(at.join("blobs/sha256/aa"), b"blob").unwrap();
        fs::create_dir(at.join("empty")).unwrap();
    };
    let scratch = store.artifact_scratch().unwrap();
    layout(&scratch.join("base.oci"));
    let stored = store
        .put_artifact(&key(1), "oci v1", "base.oci", &scratch.join("base.oci"))
        .unwrap();
    assert!(stored.path.is_dir());
    assert_eq!(stored.meta.size, 6);
    // The same content elsewhere has the same digest.
    let other = tempfile::tempdir().unwrap();
    layout(&other.path().join("x"));
    let (size, sha) = kiln_store::sha256_of(&other.path().join("x")).unwrap();
    assert_eq!((size, sha.as_str()), (6, stored.meta.sha256.as_str()));
    assert!(store.artifact_intact(&stored));
    assert!(store.verify().unwrap().is_empty());
    // One changed byte, one added file: not intact, not found.
    fs::write(stored.path.join("blobs/sha256/aa"), b"BLOB").unwrap();
    assert!(!store.artifact_intact(&stored));
    fs::write(stored.path.join("extra"), b"x").unwrap();
    assert!(store.artifact(&key(1), "oci v1").unwrap().is_none());
    // A symbolic link makes no artifact.
    std::os::unix::fs::symlink("/etc", other.path().join("x/link")).unwrap();
    assert!(kiln_store::sha256_of(&other.path().join("x")).is_err());
}
