//! Input digests: independent of time, place and read order; sensitive to
//! every input, and to nothing else.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use proptest::prelude::*;

use crate::{SOURCES, plan, write};

/// A random forest of images: `parents[i]` is `None` (bootstrap) or an
/// earlier image.
#[derive(Clone, Debug)]
struct Forest {
    parents: Vec<Option<usize>>,
    scripts: Vec<Vec<u8>>,
    extra_files: Vec<Vec<(String, Vec<u8>)>>,
}

fn forest() -> impl Strategy<Value = Forest> {
    (2usize..7).prop_flat_map(|n| {
        let parents = (0..n)
            .map(|i| {
                if i == 0 {
                    Just(None).boxed()
                } else {
                    proptest::option::of(0..i).boxed()
                }
            })
            .collect::<Vec<_>>();
        let scripts = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), n);
        let extra = proptest::collection::vec(
            proptest::collection::vec(
                ("[a-z]{1,6}", proptest::collection::vec(any::<u8>(), 0..32)),
                0..3,
            ),
            n,
        );
        (parents, scripts, extra).prop_map(|(parents, scripts, extra_files)| Forest {
            parents,
            scripts,
            extra_files,
        })
    })
}

fn write_forest(root: &Path, f: &Forest) {
    let kiln = format!("{SOURCES}\n[dimensions.suite.bookworm]\n[dimensions.suite.trixie]\n");
    write(root, &[("kiln.toml", &kiln)]);
    for (i, parent) in f.parents.iter().enumerate() {
        let dir = root.join(format!("group{}/img{i}", i % 2));
        std::fs::create_dir_all(dir.join("rootfs/etc")).expect("mkdir");
        let from = parent.map_or("debian:{suite}".to_string(), |p| format!("img{p}"));
        std::fs::write(
            dir.join("image.toml"),
            format!("from = \"{from}\"\nrun = [\"setup.sh\"]\n"),
        )
        .expect("write");
        std::fs::write(dir.join("setup.sh"), &f.scripts[i]).expect("write");
        for (name, content) in &f.extra_files[i] {
            std::fs::write(dir.join("rootfs/etc").join(name), content).expect("write");
        }
    }
}

fn digests(root: &Path) -> BTreeMap<String, String> {
    plan(root)
        .variants
        .iter()
        .map(|v| (v.name.clone(), v.digest.to_hex()))
        .collect()
}

fn set_mtimes(root: &Path, secs: i64) {
    for entry in walk(root) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.unsigned_abs());
        let f = std::fs::File::options()
            .read(true)
            .open(&entry)
            .expect("open");
        f.set_modified(t).expect("set mtime");
    }
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read_dir") {
        let p = e.expect("entry").path();
        let dest = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

/// The images at or below `k` in the forest.
fn descendants(f: &Forest, k: usize) -> Vec<usize> {
    (0..f.parents.len())
        .filter(|&i| {
            let mut cur = Some(i);
            while let Some(c) = cur {
                if c == k {
                    return true;
                }
                cur = f.parents[c];
            }
            false
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn touching_and_moving_keep_digests(f in forest(), secs in 0i64..2_000_000_000) {
        let a = tempfile::tempdir().expect("tmp");
        write_forest(a.path(), &f);
        let before = digests(a.path());

        set_mtimes(a.path(), secs);
        prop_assert_eq!(&digests(a.path()), &before);

        let b = tempfile::tempdir().expect("tmp");
        let moved = b.path().join("some/where/else");
        std::fs::create_dir_all(&moved).expect("mkdir");
        copy_tree(a.path(), &moved);
        prop_assert_eq!(&digests(&moved), &before);
    }

    #[test]
    fn editing_a_script_changes_exactly_that_image_and_its_descendants(
        f in forest(), pick in any::<proptest::sample::Index>(), byte in any::<proptest::sample::Index>()
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        write_forest(dir.path(), &f);
        let before = digests(dir.path());

        let k = pick.index(f.parents.len());
        let mut script = f.scripts[k].clone();
        let at = byte.index(script.len());
        script[at] ^= 0x01;
        std::fs::write(dir.path().join(format!("group{}/img{k}/setup.sh", k % 2)), &script).expect("write");
        let after = digests(dir.path());

        let changed: Vec<usize> = descendants(&f, k);
        for (name, digest) in &before {
            let image: usize = name.trim_start_matches("img").split('-').next().expect("index").parse().expect("number");
            let should_change = changed.contains(&image);
            prop_assert_eq!(after[name] != *digest, should_change, "variant {} (edited img{})", name, k);
        }
    }
}

#[test]
fn digests_cover_config_mode_and_symlinks() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        &[
            ("kiln.toml", SOURCES),
            ("a/image.toml", "from = \"debian:bookworm\"\n"),
            ("a/rootfs/etc/x", "x"),
        ],
    );
    let d0 = digests(dir.path());
    // A comment in image.toml is not an input.
    std::fs::write(
        dir.path().join("a/image.toml"),
        "# hello\nfrom = \"debian:bookworm\"\n",
    )
    .expect("write");
    assert_eq!(digests(dir.path()), d0);
    // A mode is.
    std::fs::set_permissions(
        dir.path().join("a/rootfs/etc/x"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let d1 = digests(dir.path());
    assert_ne!(d1, d0);
    // A symlink's target is.
    std::os::unix::fs::symlink("x", dir.path().join("a/rootfs/etc/y")).expect("symlink");
    let d2 = digests(dir.path());
    assert_ne!(d2, d1);
    // A setting is.
    std::fs::write(
        dir.path().join("a/image.toml"),
        "from = \"debian:bookworm\"\nhostname = \"h\"\n",
    )
    .expect("write");
    assert_ne!(digests(dir.path()), d2);
}
