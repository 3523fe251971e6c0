//! `gc` policies: what goes, what always stays.

use kiln_store::{GcPolicy, InputKey, Layer, Store};

use crate::{build, key, set_created};

/// base(1) ← a(2), base(1) ← b(3), c(4), d(5); created 1..=5 in that order.
fn store() -> (tempfile::TempDir, Store, Vec<Layer>) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let layers = vec![
        build(&store, key(1), "base", None, &[("big", 100_000)]),
        build(&store, key(2), "a", Some(key(1)), &[("a", 20_000)]),
        build(&store, key(3), "b", Some(key(1)), &[("b", 30_000)]),
        build(&store, key(4), "c", None, &[("c", 40_000)]),
        build(&store, key(5), "d", None, &[("d", 50_000)]),
    ];
    for (i, layer) in layers.iter().enumerate() {
        set_created(&store, layer.input, i64::try_from(i).unwrap() + 1);
    }
    (tmp, store, layers)
}

fn removed(report: &kiln_store::GcReport) -> Vec<InputKey> {
    report.removed.iter().map(|l| l.input).collect()
}

fn present(store: &Store) -> Vec<InputKey> {
    store.layers().unwrap().iter().map(|l| l.input).collect()
}

fn size(layers: &[Layer], n: u8) -> u64 {
    layers.iter().find(|l| l.input == key(n)).unwrap().meta.size
}

#[test]
fn without_limits_every_unreferenced_layer_goes_oldest_first() {
    let (_tmp, store, layers) = store();
    let report = store.gc(&[key(2)], &GcPolicy::default()).unwrap();
    // base stays: it is the parent of a referenced layer.
    assert_eq!(removed(&report), [key(3), key(4), key(5)]);
    assert_eq!(present(&store), [key(1), key(2)]);
    let freed = size(&layers, 3) + size(&layers, 4) + size(&layers, 5);
    assert_eq!(report.freed, freed);
    assert_eq!(report.size_after, report.size_before - freed);
    assert_eq!(report.in_use, []);
    assert!(!store.dir().join("layers").join(key(3).to_hex()).exists());
    // The removed layers pass through stage/ and are gone from there too.
    assert_eq!(
        crate::names(&store.dir().join("stage")),
        Vec::<String>::new()
    );
}

#[test]
fn keep_last_keeps_the_most_recent_unreferenced() {
    let (_tmp, store, _) = store();
    let policy = GcPolicy {
        keep_last: Some(1),
        max_size: None,
    };
    let report = store.gc(&[key(2)], &policy).unwrap();
    assert_eq!(removed(&report), [key(3), key(4)]);
    assert_eq!(present(&store), [key(1), key(2), key(5)]);
}

#[test]
fn max_size_removes_oldest_first_until_the_store_fits() {
    let (_tmp, store, layers) = store();
    let total: u64 = layers.iter().map(|l| l.meta.size).sum();
    let policy = GcPolicy {
        keep_last: None,
        max_size: Some(total - size(&layers, 2) - size(&layers, 3)),
    };
    let report = store.gc(&[], &policy).unwrap();
    // base is the oldest, but its children are still there: skipped.
    assert_eq!(removed(&report), [key(2), key(3)]);
    assert_eq!(present(&store), [key(1), key(4), key(5)]);
    assert_eq!(report.size_after, policy.max_size.unwrap());

    // A store that fits already loses nothing.
    let report = store.gc(&[], &policy).unwrap();
    assert_eq!(removed(&report), []);
}

#[test]
fn referenced_layers_stay_whatever_the_limit() {
    let (_tmp, store, _) = store();
    let policy = GcPolicy {
        keep_last: None,
        max_size: Some(0),
    };
    let report = store.gc(&[key(3), key(5)], &policy).unwrap();
    assert_eq!(removed(&report), [key(2), key(4)]);
    assert_eq!(present(&store), [key(1), key(3), key(5)]);
    assert!(report.size_after > 0);
}

#[test]
fn parents_of_kept_layers_stay() {
    let (_tmp, store, _) = store();
    // A recent child of base, kept by keep_last.
    build(&store, key(6), "e", Some(key(1)), &[("e", 1000)]);
    set_created(&store, key(6), 6);
    let policy = GcPolicy {
        keep_last: Some(1),
        max_size: None,
    };
    let report = store.gc(&[], &policy).unwrap();
    assert_eq!(removed(&report), [key(2), key(3), key(4), key(5)]);
    assert_eq!(present(&store), [key(1), key(6)]);

    // Once the child may go, so may the parent (in a later pass).
    let report = store.gc(&[], &GcPolicy::default()).unwrap();
    assert_eq!(removed(&report), [key(6), key(1)]);
    assert_eq!(present(&store), []);
}

#[test]
fn layers_in_use_are_skipped() {
    let (_tmp, store, _) = store();
    let guard = store.use_layers(&[key(3)]).unwrap();
    let building = store.lock(&key(4)).unwrap();
    let report = store.gc(&[], &GcPolicy::default()).unwrap();
    assert_eq!(removed(&report), [key(2), key(5)]);
    assert_eq!(report.in_use, [key(3), key(4)]);
    // base stays as the parent of a layer in use.
    assert_eq!(present(&store), [key(1), key(3), key(4)]);
    assert!(guard.layers()[0].tree.join("b").exists());

    drop(guard);
    drop(building);
    let report = store.gc(&[], &GcPolicy::default()).unwrap();
    assert_eq!(removed(&report), [key(3), key(4), key(1)]);
    assert_eq!(present(&store), []);
}

#[test]
fn incomplete_layer_directories_are_removed() {
    let (tmp, store, _) = store();
    let half = tmp.path().join("layers").join(key(9).to_hex());
    std::fs::create_dir_all(half.join("tree")).unwrap();
    std::fs::write(half.join("tree/file"), crate::pattern(10_000)).unwrap();
    let report = store
        .gc(
            &[key(1), key(2), key(3), key(4), key(5)],
            &GcPolicy::default(),
        )
        .unwrap();
    assert_eq!(removed(&report), []);
    assert_eq!(report.removed_incomplete, std::slice::from_ref(&half));
    assert!(report.freed >= 10_000);
    assert!(!half.exists());
}
