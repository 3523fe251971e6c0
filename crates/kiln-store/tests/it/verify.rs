//! `verify` finds layers whose trees changed after commit.

use std::os::unix::fs::PermissionsExt;

use kiln_store::{Problem, Store};

use crate::{build, key};

#[test]
fn an_untouched_store_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    build(&store, key(1), "base", None, &[("a", 100), ("etc/b", 10)]);
    build(&store, key(2), "child", Some(key(1)), &[("c", 5)]);
    assert_eq!(store.verify().unwrap(), vec![]);
}

#[test]
fn verify_detects_a_changed_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let base = build(&store, key(1), "base", None, &[("a", 100), ("etc/b", 10)]);
    let child = build(&store, key(2), "child", Some(key(1)), &[("c", 5)]);
    std::fs::write(base.tree.join("etc/b"), b"tampered").unwrap();
    std::fs::set_permissions(
        child.tree.join("c"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let problems = store.verify().unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    for (problem, layer) in problems.iter().zip([&base, &child]) {
        match problem {
            Problem::Changed {
                input,
                variant,
                recorded,
                actual,
            } => {
                assert_eq!(*input, layer.input);
                assert_eq!(variant, &layer.meta.variant);
                assert_eq!(*recorded, layer.content);
                assert_ne!(actual, recorded);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn verify_reports_incomplete_layers_and_missing_parents() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    build(&store, key(1), "base", None, &[("a", 1)]);
    build(&store, key(2), "child", Some(key(1)), &[("b", 1)]);
    // Someone removed the parent by hand, and left a half layer.
    std::fs::remove_dir_all(tmp.path().join("layers").join(key(1).to_hex())).unwrap();
    let half = tmp.path().join("layers").join(key(3).to_hex());
    std::fs::create_dir_all(half.join("tree")).unwrap();
    let problems = store.verify().unwrap();
    assert_eq!(
        problems,
        vec![
            Problem::MissingParent {
                input: key(2),
                variant: "child".into(),
                parent: key(1),
            },
            Problem::Incomplete {
                path: half,
                reason: "it has no `meta.json`".into(),
            },
        ]
    );
}
