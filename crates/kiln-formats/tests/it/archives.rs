//! tar and cpio artifacts, read back with GNU tar and GNU cpio.

use std::fs;
use std::path::Path;
use std::process::Command;

use kiln_formats::{Compression, Input, Spec, Tree, write_artifact};
use kiln_layers::{LayerStack, Overlay, private_mount_namespace};

use crate::{Compare, EPOCH, assert_same_tree, fixture, fixture_stack, have, is_root, run, sha256};

fn input(stack: &LayerStack, threads: usize) -> Input<'_> {
    Input {
        stack,
        layer_ids: &[],
        epoch: EPOCH,
        threads,
        cache_dir: None,
        seed: b"test",
        cancel: None,
    }
}

fn write(spec: &Spec, stack: &LayerStack, dest: &Path) {
    write_artifact(spec, &input(stack, 2), dest).unwrap();
}

#[test]
fn tar_lists_with_tar_and_extracts_to_the_same_tree() {
    if !have("tar") {
        return;
    }
    let (dir, stack) = fixture_stack();
    let out = dir.path().join("root.tar");
    write(
        &Spec::Tar {
            compression: Compression::None,
        },
        &stack,
        &out,
    );
    let listing = run(Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&out));
    assert!(
        listing.lines().next().unwrap().ends_with(" ./"),
        "{listing}"
    );
    assert!(
        listing.contains("-rwsr-xr-x 0/0"),
        "set-uid kept: {listing}"
    );
    assert!(
        listing.contains("./usr/bin/tool-link link to ./etc/tool-link2"),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("./etc/{}", "n".repeat(120))),
        "pax path"
    );
    assert!(
        !listing.contains("PaxHeaders"),
        "pax headers are not entries"
    );
    let extracted = dir.path().join("extracted");
    fs::create_dir(&extracted).unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&out)
        .arg("-C")
        .arg(&extracted));
    let expected = Tree::merged(&stack, EPOCH).unwrap();
    let actual = Tree::merged(&LayerStack::new(vec![extracted]), i64::MAX).unwrap();
    assert_same_tree(
        &expected,
        &actual,
        Compare {
            xattrs: is_root(),
            skip_sockets: true,
        },
    );
    // mtimes past the epoch were clamped.
    let newer = actual.nodes.iter().find(|n| n.path == "etc/newer").unwrap();
    assert_eq!(newer.mtime, EPOCH);
}

#[test]
fn compressed_tars_hold_the_plain_tar() {
    let (dir, stack) = fixture_stack();
    let plain = dir.path().join("root.tar");
    write(
        &Spec::Tar {
            compression: Compression::None,
        },
        &stack,
        &plain,
    );
    for (compression, ext, tool) in [
        (Compression::GZIP, "gz", "gzip"),
        (Compression::ZSTD, "zst", "zstd"),
        (Compression::XZ, "xz", "xz"),
    ] {
        if !have(tool) {
            continue;
        }
        let out = dir.path().join(format!("root.tar.{ext}"));
        write(&Spec::Tar { compression }, &stack, &out);
        let unpacked = dir.path().join(format!("unpacked-{ext}.tar"));
        let data = Command::new(tool).args(["-dc"]).arg(&out).output().unwrap();
        assert!(data.status.success(), "{tool} -dc failed");
        fs::write(&unpacked, &data.stdout).unwrap();
        assert_eq!(sha256(&unpacked), sha256(&plain), "{tool}");
        run(Command::new(tool).arg("-t").arg(&out));
    }
}

#[test]
fn archives_are_the_same_bytes_whatever_the_threads() {
    let (dir, stack) = fixture_stack();
    for spec in [
        Spec::Tar {
            compression: Compression::GZIP,
        },
        Spec::Tar {
            compression: Compression::ZSTD,
        },
        Spec::Tar {
            compression: Compression::XZ,
        },
        Spec::Cpio {
            compression: Compression::GZIP,
        },
    ] {
        let mut digests = Vec::new();
        for (i, threads) in [1, 2, 4, 2].into_iter().enumerate() {
            let out = dir.path().join(format!("a-{i}"));
            write_artifact(&spec, &input(&stack, threads), &out).unwrap();
            digests.push(sha256(&out));
        }
        assert!(
            digests.windows(2).all(|w| w[0] == w[1]),
            "{spec:?}: {digests:?}"
        );
    }
}

#[test]
fn gzip_of_many_blocks_decompresses_to_the_input() {
    // More than a few of pigz's 128 KiB blocks, some incompressible.
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    fs::create_dir(&layer).unwrap();
    let mut state = 0x1234_5678u32;
    let noise: Vec<u8> = (0..3_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    fs::write(layer.join("noise"), &noise).unwrap();
    fs::write(layer.join("text"), "kiln ".repeat(500_000)).unwrap();
    let stack = LayerStack::new(vec![layer]);
    let (plain, gz) = (dir.path().join("r.tar"), dir.path().join("r.tar.gz"));
    write(
        &Spec::Tar {
            compression: Compression::None,
        },
        &stack,
        &plain,
    );
    write(
        &Spec::Tar {
            compression: Compression::GZIP,
        },
        &stack,
        &gz,
    );
    run(Command::new("gzip").arg("-t").arg(&gz));
    let data = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert_eq!(data.stdout, fs::read(&plain).unwrap());
    // Within a few percent of single-threaded gzip.
    let reference = Command::new("gzip")
        .arg("-6c")
        .arg(&plain)
        .output()
        .unwrap();
    let (ours, theirs) = (
        fs::metadata(&gz).unwrap().len(),
        reference.stdout.len() as u64,
    );
    assert!(ours * 100 <= theirs * 102, "{ours} vs gzip's {theirs}");
}

#[test]
fn cpio_lists_with_cpio_and_extracts_to_the_same_tree() {
    if !have("cpio") {
        return;
    }
    let (dir, stack) = fixture_stack();
    let out = dir.path().join("root.cpio.gz");
    write(
        &Spec::Cpio {
            compression: Compression::GZIP,
        },
        &stack,
        &out,
    );
    let raw = Command::new("gzip")
        .arg("-dc")
        .arg(&out)
        .output()
        .unwrap()
        .stdout;
    let raw_path = dir.path().join("root.cpio");
    fs::write(&raw_path, &raw).unwrap();
    let listing = run(Command::new("cpio")
        .args(["-itv", "--numeric-uid-gid", "-F"])
        .arg(&raw_path));
    assert!(listing.contains("usr/bin/tool"), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwsr-xr-x   3 0        0")),
        "{listing}"
    );
    let extracted = dir.path().join("extracted");
    fs::create_dir(&extracted).unwrap();
    run(Command::new("cpio")
        .args(["-idmu", "--quiet", "--no-absolute-filenames", "-F"])
        .arg(&raw_path)
        .current_dir(&extracted));
    let expected = Tree::merged(&stack, EPOCH).unwrap();
    let mut actual = Tree::merged(&LayerStack::new(vec![extracted]), i64::MAX).unwrap();
    // Every mtime in the archive is at or before the epoch (same day).
    assert!(
        listing.lines().all(|l| l.contains("Nov 14  2023")),
        "{listing}"
    );
    // GNU cpio does not restore the mtimes of symbolic links and of
    // directories it later writes into; the listing above checked them.
    for (a, e) in actual.nodes.iter_mut().zip(&expected.nodes) {
        if matches!(
            a.kind,
            kiln_formats::NodeKind::Symlink { .. } | kiln_formats::NodeKind::Dir
        ) && a.path == e.path
        {
            a.mtime = e.mtime;
        }
    }
    assert_same_tree(
        &expected,
        &actual,
        Compare {
            xattrs: false,
            skip_sockets: true,
        },
    );
}

/// Builds a child layer over [`fixture`] with a real overlayfs: a file
/// deleted, a directory deleted, one replaced wholesale (opaque), files
/// added and changed.
fn child_layer(dir: &Path) -> LayerStack {
    let base = dir.join("base");
    let upper = dir.join("upper");
    let work = dir.join("work");
    let mnt = dir.join("mnt");
    for d in [&base, &upper, &work, &mnt] {
        fs::create_dir_all(d).unwrap();
    }
    fixture(&base);
    let stack = LayerStack::new(vec![base.clone()]);
    let overlay = Overlay::mount(&stack, &upper, &work, &mnt).unwrap();
    fs::remove_file(mnt.join("etc/tiny")).unwrap();
    fs::remove_dir_all(mnt.join("etc/deep")).unwrap();
    fs::remove_dir_all(mnt.join("var/big")).unwrap();
    fs::create_dir(mnt.join("var/big")).unwrap();
    fs::write(mnt.join("var/big/only"), b"replaced").unwrap();
    fs::write(mnt.join("etc/added"), b"new").unwrap();
    fs::write(mnt.join("usr/bin/block"), b"changed").unwrap();
    overlay.unmount().unwrap();
    LayerStack::new(vec![base, upper])
}

/// Writes the child's `overlay.cpio.gz`, unpacks it with GNU cpio into an
/// empty upper directory over `lower` (the parent's root: its layer folder
/// or its mounted squashfs) and checks that the overlay shows exactly the
/// child's root.
fn check_overlay_cpio(dir: &Path, stack: &LayerStack, lower: &Path) {
    let out = dir.join("child.overlay.cpio.gz");
    write(
        &Spec::OverlayCpio {
            compression: Compression::GZIP,
        },
        stack,
        &out,
    );
    let raw = Command::new("gzip")
        .arg("-dc")
        .arg(&out)
        .output()
        .unwrap()
        .stdout;
    let raw_path = dir.join("child.cpio");
    fs::write(&raw_path, raw).unwrap();
    let listing = run(Command::new("cpio").args(["-itv", "-F"]).arg(&raw_path));
    // The opaque directory became whiteouts of the parent's names.
    assert!(listing.contains("var/big/entry-0000"), "{listing}");
    assert!(
        !listing.contains("usr/bin/big"),
        "only the layer: {listing}"
    );
    let (upper, work, mnt) = (dir.join("upper2"), dir.join("work2"), dir.join("mnt2"));
    for d in [&upper, &work, &mnt] {
        fs::create_dir_all(d).unwrap();
    }
    run(Command::new("cpio")
        .args(["-idmu", "--quiet", "--no-absolute-filenames", "-F"])
        .arg(&raw_path)
        .current_dir(&upper));
    let parent = LayerStack::new(vec![lower.to_path_buf()]);
    let overlay = Overlay::mount(&parent, &upper, &work, &mnt).unwrap();
    let expected = Tree::merged(stack, EPOCH).unwrap();
    // The parent layer was never clamped: read the mount clamped too.
    let mut actual = Tree::merged(&LayerStack::new(vec![mnt.clone()]), EPOCH).unwrap();
    let from_child: std::collections::HashSet<String> = Tree::layer(stack, EPOCH)
        .unwrap()
        .nodes
        .into_iter()
        .map(|n| n.path)
        .collect();
    for (a, e) in actual.nodes.iter_mut().zip(&expected.nodes) {
        if a.path != e.path || !from_child.contains(&a.path) {
            continue;
        }
        // GNU cpio restores neither a symbolic link's mtime nor that of a
        // directory it writes into; newc carries no xattrs.
        if matches!(
            a.kind,
            kiln_formats::NodeKind::Symlink { .. } | kiln_formats::NodeKind::Dir
        ) {
            a.mtime = e.mtime;
        }
        a.xattrs.clone_from(&e.xattrs);
    }
    assert_same_tree(
        &expected,
        &actual,
        Compare {
            xattrs: true,
            skip_sockets: true,
        },
    );
    overlay.unmount().unwrap();
}

#[test]
fn overlay_cpio_over_the_parent_gives_the_child_root() {
    if !is_root() || !have("cpio") {
        kiln_testkit::require::skip("needs root and cpio");
        return;
    }
    std::thread::spawn(|| {
        private_mount_namespace().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stack = child_layer(dir.path());
        check_overlay_cpio(dir.path(), &stack, &stack.layers[0]);
    })
    .join()
    .unwrap();
}

#[test]
fn overlay_cpio_over_the_parents_squashfs_gives_the_child_root() {
    if !is_root() || !have("cpio") {
        kiln_testkit::require::skip("needs root and cpio");
        return;
    }
    std::thread::spawn(|| {
        private_mount_namespace().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stack = child_layer(dir.path());
        // The netboot way: the parent as a squashfs, mounted read-only.
        let parent = LayerStack::new(vec![stack.layers[0].clone()]);
        let image = dir.path().join("base.squashfs");
        write(
            &Spec::Squashfs(kiln_formats::SquashfsOptions::default()),
            &parent,
            &image,
        );
        let lower = dir.path().join("base-mnt");
        fs::create_dir(&lower).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(&image)
            .arg(&lower)
            .output()
            .unwrap();
        if !mounted.status.success() {
            kiln_testkit::require::skip(&format!(
                "cannot loop-mount a squashfs here: {}",
                String::from_utf8_lossy(&mounted.stderr)
            ));
            return;
        }
        check_overlay_cpio(dir.path(), &stack, &lower);
        run(Command::new("umount").arg(&lower));
    })
    .join()
    .unwrap();
}
