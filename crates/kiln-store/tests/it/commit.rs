//! Staging and committing: atomic, and nothing half-done is trusted.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use kiln_store::{Error, NewLayer, Store};

use crate::{build, dead_pid, key, names};

/// Set in a child process re-running one test of this binary.
const CHILD: &str = "KILN_STORE_TEST_CRASH_CHILD";

#[test]
fn commit_moves_the_stage_into_place() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let input = key(1);
    assert_eq!(store.get(&input).unwrap(), None);
    let layer = build(&store, input, "base", None, &[("a", 10), ("b/c", 20)]);
    assert_eq!(
        layer.tree,
        store.dir().join("layers").join(input.to_hex()).join("tree")
    );
    assert_eq!(
        std::fs::read(layer.tree.join("b/c")).unwrap(),
        crate::pattern(20)
    );
    assert_eq!(layer.meta.variant, "base");
    assert_eq!(layer.meta.files, 3);
    assert_eq!(layer.meta.kiln_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(store.get(&input).unwrap(), Some(layer.clone()));
    assert_eq!(store.layers().unwrap(), vec![layer]);
    // Nothing left in stage/.
    assert_eq!(names(&store.dir().join("stage")), Vec::<String>::new());
}

#[test]
fn a_store_opened_to_read_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("store");
    let store = Store::open_read_only(&missing).unwrap();
    assert_eq!(store.get(&key(1)).unwrap(), None);
    assert!(!missing.exists());
}

#[test]
fn a_dropped_stage_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let stage = store.stage(&key(1)).unwrap();
    std::fs::write(stage.tree().join("file"), b"x").unwrap();
    let dir = stage.tree().parent().unwrap().to_owned();
    assert!(dir.exists());
    drop(stage);
    assert!(!dir.exists());
    assert_eq!(store.get(&key(1)).unwrap(), None);
}

#[test]
fn a_child_records_its_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    build(&store, key(1), "base", None, &[("a", 1)]);
    let child = build(&store, key(2), "child", Some(key(1)), &[("b", 1)]);
    assert_eq!(child.parent, Some(key(1)));
    assert_eq!(child.meta.parent, Some(key(1).to_hex()));
}

#[test]
fn commit_refuses_a_missing_parent_a_wrong_lock_and_an_existing_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let meta = |parent| NewLayer {
        variant: "v".into(),
        parent,
        epoch: None,
    };

    let lock = store.lock(&key(1)).unwrap();
    let stage = store.stage(&key(1)).unwrap();
    let err = store.commit(&lock, stage, meta(Some(key(9)))).unwrap_err();
    assert!(
        matches!(err, Error::LayerMissing { input } if input == key(9)),
        "{err}"
    );

    let other = store.lock(&key(2)).unwrap();
    let stage = store.stage(&key(1)).unwrap();
    let err = store.commit(&other, stage, meta(None)).unwrap_err();
    assert!(matches!(err, Error::LockMismatch { .. }), "{err}");

    store
        .commit(&lock, store.stage(&key(1)).unwrap(), meta(None))
        .unwrap();
    let err = store
        .commit(&lock, store.stage(&key(1)).unwrap(), meta(None))
        .unwrap_err();
    assert!(matches!(err, Error::LayerExists { .. }), "{err}");

    // Refused stages are removed, not left behind.
    assert_eq!(names(&store.dir().join("stage")), Vec::<String>::new());

    // A rebuild removes first.
    assert!(store.remove(&lock).unwrap().is_some());
    assert_eq!(store.get(&key(1)).unwrap(), None);
    store
        .commit(&lock, store.stage(&key(1)).unwrap(), meta(None))
        .unwrap();
}

#[test]
fn a_stage_of_another_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let one = Store::open(&tmp.path().join("one")).unwrap();
    let two = Store::open(&tmp.path().join("two")).unwrap();
    let lock = one.lock(&key(1)).unwrap();
    let stage = two.stage(&key(1)).unwrap();
    let err = one
        .commit(
            &lock,
            stage,
            NewLayer {
                variant: "v".into(),
                parent: None,
                epoch: None,
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::ForeignStage { .. }), "{err}");
}

/// A process killed while it builds leaves a stage dir and a lock file; the
/// next `open` removes the stage, nothing is trusted, the lock is free.
#[test]
fn a_killed_build_leaves_nothing_trusted() {
    if let Ok(dir) = std::env::var(CHILD) {
        // The child: stage a layer, say so, then wait to be killed.
        let store = Store::open(std::path::Path::new(&dir)).unwrap();
        let _lock = store.lock(&key(1)).unwrap();
        let stage = store.stage(&key(1)).unwrap();
        std::fs::write(stage.tree().join("half"), b"half a layer").unwrap();
        #[allow(clippy::print_stdout, reason = "a child talks to its parent on stdout")]
        {
            println!("child: staged");
        }
        // Killed here; should the parent die first, stdin closes.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "commit::a_killed_build_leaves_nothing_trusted",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // libtest may print the test's name on the same line first.
    assert!(lines.any(|l| l.unwrap().ends_with("child: staged")));
    child.kill().unwrap();
    child.wait().unwrap();

    let stage_dir = tmp.path().join("stage");
    let left = names(&stage_dir);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(&format!("{}-", child.id())));
    assert!(
        tmp.path()
            .join("locks")
            .join(format!("{}.lock", key(1).to_hex()))
            .exists()
    );

    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(names(&stage_dir), Vec::<String>::new());
    assert_eq!(store.get(&key(1)).unwrap(), None);
    assert_eq!(store.layers().unwrap(), vec![]);
    // The dead process's lock is gone with it: building works.
    build(&store, key(1), "base", None, &[("whole", 5)]);
}

/// A crash between writing `meta.json` and the rename leaves a complete
/// looking stage dir: still only a stage dir, swept and never trusted.
#[test]
fn a_stage_with_metadata_of_a_dead_process_is_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let layer = build(&store, key(1), "base", None, &[("a", 3)]);
    let fake = tmp.path().join("stage").join(format!("{}-7-0", dead_pid()));
    std::fs::create_dir_all(fake.join("tree")).unwrap();
    std::fs::copy(
        layer.tree.parent().unwrap().join("meta.json"),
        fake.join("meta.json"),
    )
    .unwrap();
    // A live process's stage (ours) is left alone.
    let live = store.stage(&key(2)).unwrap();

    // Opened to read, the store is left as it is, and reads the same.
    let before = names(&tmp.path().join("stage"));
    let reader = Store::open_read_only(tmp.path()).unwrap();
    assert!(fake.exists());
    assert_eq!(names(&tmp.path().join("stage")), before);
    assert_eq!(reader.get(&key(1)).unwrap(), Some(layer.clone()));
    assert_eq!(reader.get(&key(2)).unwrap(), None);

    let reopened = Store::open(tmp.path()).unwrap();
    assert!(!fake.exists());
    assert!(live.tree().exists());
    assert_eq!(reopened.get(&key(2)).unwrap(), None);
    assert_eq!(reopened.layers().unwrap(), vec![layer]);
}

/// A layer directory without `meta.json` (made by hand, or by a tool that
/// copied half a store) is ignored, then replaced by a commit.
#[test]
fn a_half_present_layer_is_not_trusted_and_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let dir = tmp.path().join("layers").join(key(1).to_hex());
    std::fs::create_dir_all(dir.join("tree/usr")).unwrap();
    std::fs::write(dir.join("tree/usr/partial"), b"x").unwrap();
    assert_eq!(store.get(&key(1)).unwrap(), None);
    assert_eq!(store.layers().unwrap(), vec![]);

    // Invalid metadata is no better.
    std::fs::write(dir.join("meta.json"), b"{\"variant\": ").unwrap();
    assert_eq!(store.get(&key(1)).unwrap(), None);

    let layer = build(&store, key(1), "base", None, &[("whole", 5)]);
    assert!(!layer.tree.join("usr/partial").exists());
    assert_eq!(store.get(&key(1)).unwrap(), Some(layer));
}

#[test]
fn use_layers_needs_the_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    build(&store, key(1), "base", None, &[("a", 1)]);
    let err = store.use_layers(&[key(1), key(2)]).unwrap_err();
    assert!(
        matches!(err, Error::LayerMissing { input } if input == key(2)),
        "{err}"
    );
    let guard = store.use_layers(&[key(1), key(1)]).unwrap();
    assert_eq!(guard.layers().len(), 1);
}
