//! `du` on a base layer and children.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_store::Store;

use crate::{build, key};

/// Allocated bytes under `root`, as `du` counts them (each inode once).
fn allocated(root: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if seen.insert(meta.ino()) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    total
}

#[test]
fn du_counts_each_layer_once_and_full_copies_per_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    // base ← web ← web-debug; base ← db
    let base = build(
        &store,
        key(1),
        "base",
        None,
        &[("usr/lib/big", 400_000), ("etc/a", 100)],
    );
    let web = build(&store, key(2), "web", Some(key(1)), &[("srv/www", 100_000)]);
    let debug = build(
        &store,
        key(3),
        "web-debug",
        Some(key(2)),
        &[("usr/bin/gdb", 50_000)],
    );
    let db = build(
        &store,
        key(4),
        "db",
        Some(key(1)),
        &[("var/lib/db", 30_000)],
    );
    for (i, layer) in [&base, &web, &debug, &db].into_iter().enumerate() {
        crate::set_created(&store, layer.input, i64::try_from(i).unwrap() + 1);
    }
    for layer in [&base, &web, &debug, &db] {
        assert_eq!(
            layer.meta.size,
            allocated(&layer.tree),
            "{}",
            layer.meta.variant
        );
    }
    assert!(base.meta.size >= 400_100);
    assert!(web.meta.size >= 100_000);

    let usage = store.du(&[key(3), key(2), key(1)]).unwrap();
    let by_variant = |v: &str| {
        usage
            .layers
            .iter()
            .find(|l| l.variant == v)
            .unwrap()
            .clone()
    };
    assert_eq!(
        usage
            .layers
            .iter()
            .map(|l| l.variant.as_str())
            .collect::<Vec<_>>(),
        ["base", "web", "web-debug", "db"]
    );
    let (b, w, d, x) = (base.meta.size, web.meta.size, debug.meta.size, db.meta.size);
    assert_eq!(by_variant("base").size, b);
    assert_eq!(by_variant("base").shared, 0);
    assert_eq!(by_variant("web").shared, b);
    assert_eq!(by_variant("web-debug").shared, b + w);
    assert_eq!(by_variant("db").shared, b);
    assert_eq!(by_variant("db").parent, Some(key(1)));
    assert_eq!(usage.total, b + w + d + x);
    assert_eq!(usage.full_copies, b + (w + b) + (d + w + b) + (x + b));
    assert_eq!(usage.saved(), usage.full_copies - usage.total);
    assert!(by_variant("web-debug").referenced);
    assert!(!by_variant("db").referenced);
    assert_eq!(usage.referenced, b + w + d);
    assert_eq!(usage.unreferenced, x);

    // Referencing only the leaf keeps its chain.
    let usage = store.du(&[key(3)]).unwrap();
    assert_eq!(usage.referenced, b + w + d);
    assert!(!usage.layers[0].referenced);
}

#[test]
fn hard_links_are_counted_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let one = build(&store, key(1), "one", None, &[("dir/file", 200_000)]);

    let lock = store.lock(&key(2)).unwrap();
    let stage = store.stage(&key(2)).unwrap();
    std::fs::create_dir(stage.tree().join("dir")).unwrap();
    std::fs::write(stage.tree().join("dir/file"), crate::pattern(200_000)).unwrap();
    std::fs::hard_link(stage.tree().join("dir/file"), stage.tree().join("dir/link")).unwrap();
    let two = store
        .commit(
            &lock,
            stage,
            kiln_store::NewLayer {
                variant: "two".into(),
                parent: None,
                epoch: None,
            },
        )
        .unwrap();
    assert_eq!(two.meta.files, 3);
    assert_eq!(two.meta.size, one.meta.size);
    assert_ne!(two.content, one.content);
}
