//! squashfs and overlay.squashfs, checked with squashfs-tools
//! (`unsquashfs`) and the kernel (loop mounts, overlayfs) against the
//! tree they were written from.

use std::fs;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_formats::{
    Input, NodeKind, Spec, SquashfsCompression, SquashfsOptions, Tree, write_artifact,
};
use kiln_layers::LayerStack;
use rustix::fs::{CWD, FileType, Mode, XattrFlags, lsetxattr, makedev, mknodat};

use crate::{EPOCH, have, run};
const BLOCK: usize = 128 * 1024;

/// Deterministic, moderately compressible bytes.
fn bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if i % 7 < 3 {
                b'a' + (i % 13) as u8
            } else {
                (x >> 16) as u8
            }
        })
        .collect()
}

fn mknod(path: &Path, kind: FileType, mode: u32, major: u32, minor: u32) {
    mknodat(
        CWD,
        path,
        kind,
        Mode::from_bits_truncate(mode),
        makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

fn xattr(path: &Path, name: &str, value: &[u8]) {
    lsetxattr(path, name, value, XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

/// A layer with every kind of entry squashfs stores.
fn fixture(root: &Path) {
    let d = |p: &str| {
        let p = root.join(p);
        fs::create_dir_all(&p).unwrap();
        p
    };
    let f = |p: &str, content: &[u8]| {
        let p = root.join(p);
        fs::write(&p, content).unwrap();
        p
    };
    d("files");
    f("files/empty", b"");
    f("files/tiny", b"hi\n");
    f("files/one-block", &bytes(BLOCK, 1));
    f("files/blocks-and-tail", &bytes(3 * BLOCK + 1234, 2));
    f("files/copy-of-blocks-and-tail", &bytes(3 * BLOCK + 1234, 2));
    let mut sparse = vec![0u8; 2 * BLOCK + 10];
    sparse.extend_from_slice(&bytes(BLOCK, 3));
    f("files/sparse", &sparse);
    f(
        "files/random",
        &(0..50_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<_>>(),
    );
    let linked = f("files/linked", b"one inode, three names\n");
    fs::hard_link(&linked, root.join("files/linked-2")).unwrap();
    d("other");
    fs::hard_link(&linked, root.join("other/linked-3")).unwrap();
    symlink("tiny", root.join("files/short-link")).unwrap();
    symlink("x".repeat(1000), root.join("files/long-link")).unwrap();
    d("dev");
    mknod(
        &root.join("dev/null"),
        FileType::CharacterDevice,
        0o666,
        1,
        3,
    );
    mknod(&root.join("dev/sda1"), FileType::BlockDevice, 0o660, 8, 1);
    mknod(
        &root.join("dev/big-minor"),
        FileType::CharacterDevice,
        0o600,
        300,
        70_000,
    );
    mknod(&root.join("dev/fifo"), FileType::Fifo, 0o644, 0, 0);
    drop(std::os::unix::net::UnixListener::bind(root.join("dev/socket")).unwrap());
    let setuid = f("files/setuid", b"#!/bin/sh\n");
    fs::set_permissions(&setuid, fs::Permissions::from_mode(0o4755)).unwrap();
    let setgid = d("setgid-dir");
    fs::set_permissions(&setgid, fs::Permissions::from_mode(0o2775)).unwrap();
    let sticky = d("tmp");
    fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).unwrap();
    let owned = f("files/owned", b"owned\n");
    lchown(&owned, Some(1000), Some(2000)).unwrap();
    lchown(root.join("files/short-link"), Some(123_456), Some(7)).unwrap();
    lchown(&setgid, Some(65534), Some(65534)).unwrap();
    xattr(&root.join("files/tiny"), "user.test", b"value");
    // CAP_NET_RAW, effective and permitted (version 2).
    let cap = [
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    xattr(&root.join("files/setuid"), "security.capability", &cap);
    xattr(&root.join("other"), "user.dir", b"on a directory");
    xattr(&root.join("dev/null"), "trusted.test", b"on a device");
    xattr(&root.join("files/short-link"), "trusted.link", b"on a link");
    d("many");
    for i in 0..400 {
        f(
            &format!("many/entry-with-a-longish-name-{i:04}"),
            format!("{i}\n").as_bytes(),
        );
    }
    let long = "n".repeat(255);
    f(&format!("files/{long}"), b"long name\n");
    let mut deep = String::from("deep");
    for i in 0..40 {
        deep.push_str(&format!("/level-{i}"));
    }
    d(&deep);
    f(&format!("{deep}/bottom"), b"bottom\n");
    d("ünïcødé-名前");
    f("ünïcødé-名前/файл", "çà et là\n".as_bytes());
}

/// Each node as one line: what a reader must see the same.
fn summary(tree: &Tree) -> Vec<String> {
    tree.nodes
        .iter()
        .map(|n| {
            let what = match &n.kind {
                NodeKind::Dir => "dir".to_owned(),
                NodeKind::File { source, .. } => {
                    format!("file {}", blake3::hash(&fs::read(source).unwrap()).to_hex())
                }
                NodeKind::HardLink { target } => format!("link to {}", tree.nodes[*target].path),
                NodeKind::Symlink { target } => {
                    format!("symlink {}", String::from_utf8_lossy(target))
                }
                NodeKind::CharDevice { major, minor } => format!("chr {major}:{minor}"),
                NodeKind::BlockDevice { major, minor } => format!("blk {major}:{minor}"),
                NodeKind::Fifo => "fifo".to_owned(),
                NodeKind::Socket => "socket".to_owned(),
                NodeKind::Whiteout => "whiteout".to_owned(),
            };
            format!(
                "{:?} {what} {:o} {}:{} {} {:?}",
                n.path, n.mode, n.uid, n.gid, n.mtime, n.xattrs
            )
        })
        .collect()
}

fn tree_of(dir: &Path) -> Tree {
    Tree::merged(&LayerStack::new(vec![dir.to_path_buf()]), EPOCH).unwrap()
}

fn write(spec: &Spec, stack: &LayerStack, threads: usize, cache: Option<&Path>, out: &Path) {
    let input = Input {
        stack,
        layer_ids: &[],
        epoch: EPOCH,
        threads,
        cache_dir: cache,
        seed: b"test",
        cancel: None,
    };
    write_artifact(spec, &input, out).unwrap();
}

/// Extracts `image` with unsquashfs, after checking it lists it.
fn unsquash(image: &Path, dest: &Path) -> Tree {
    run(Command::new("unsquashfs").arg("-stat").arg(image));
    run(Command::new("unsquashfs").arg("-lls").arg(image));
    run(Command::new("unsquashfs")
        .args(["-no-progress", "-xattrs", "-d"])
        .arg(dest)
        .arg(image));
    tree_of(dest)
}

struct Fixture {
    _temp: tempfile::TempDir,
    dir: PathBuf,
    stack: LayerStack,
}

fn with_fixture() -> Fixture {
    let temp = tempfile::tempdir().unwrap();
    let layer = temp.path().join("layer");
    fs::create_dir(&layer).unwrap();
    fixture(&layer);
    Fixture {
        dir: temp.path().to_path_buf(),
        stack: LayerStack::new(vec![layer]),
        _temp: temp,
    }
}

fn squashfs(compression: SquashfsCompression, level: Option<i32>) -> Spec {
    Spec::Squashfs(SquashfsOptions {
        compression,
        level,
        ..SquashfsOptions::default()
    })
}

#[test]
fn unsquashfs_reproduces_every_entry() {
    if !have("unsquashfs") {
        return;
    }
    let fx = with_fixture();
    let image = fx.dir.join("root.squashfs");
    write(
        &squashfs(SquashfsCompression::Zstd, None),
        &fx.stack,
        2,
        None,
        &image,
    );
    let expected = summary(&Tree::merged(&fx.stack, EPOCH).unwrap());
    let got = summary(&unsquash(&image, &fx.dir.join("out")));
    assert_eq!(got, expected);
    // Hard links share an inode with the right count.
    let listing = run(Command::new("unsquashfs").arg("-lls").arg(&image));
    assert!(listing.contains("files/linked"), "{listing}");
}

#[test]
fn every_compressor_is_read_back() {
    if !have("unsquashfs") {
        return;
    }
    let fx = with_fixture();
    let expected = summary(&Tree::merged(&fx.stack, EPOCH).unwrap());
    for (i, (compression, level)) in [
        (SquashfsCompression::Gzip, None),
        (SquashfsCompression::Gzip, Some(1)),
        (SquashfsCompression::Xz, None),
        (SquashfsCompression::Lz4, None),
        (SquashfsCompression::Zstd, Some(3)),
    ]
    .into_iter()
    .enumerate()
    {
        let image = fx.dir.join(format!("{i}.squashfs"));
        write(&squashfs(compression, level), &fx.stack, 2, None, &image);
        let got = summary(&unsquash(&image, &fx.dir.join(format!("out-{i}"))));
        assert_eq!(got, expected, "{compression:?} {level:?}");
    }
}

#[test]
fn same_tree_same_bytes_whatever_the_threads() {
    let fx = with_fixture();
    let spec = squashfs(SquashfsCompression::Zstd, None);
    let mut images = Vec::new();
    for (i, threads) in [1, 2, 2, 7].into_iter().enumerate() {
        let image = fx.dir.join(format!("{i}.squashfs"));
        write(&spec, &fx.stack, threads, None, &image);
        images.push(fs::read(&image).unwrap());
    }
    assert!(images.windows(2).all(|w| w[0] == w[1]));
    // mkfs_time is the epoch.
    assert_eq!(images[0][8..12], (EPOCH as u32).to_le_bytes());
}

#[test]
fn cached_blocks_give_the_same_bytes_and_corrupt_ones_are_not_used() {
    let fx = with_fixture();
    let spec = squashfs(SquashfsCompression::Zstd, None);
    let cache = fx.dir.join("cache");
    let cold = fx.dir.join("cold.squashfs");
    write(&spec, &fx.stack, 2, None, &cold);
    let cold = fs::read(&cold).unwrap();
    for i in 0..2 {
        let image = fx.dir.join(format!("cached-{i}.squashfs"));
        write(&spec, &fx.stack, 2, Some(&cache), &image);
        assert!(fs::read(&image).unwrap() == cold, "cache pass {i}");
    }
    // Damage every entry: flip a payload byte, or cut it short.
    let mut entries = Vec::new();
    for sub in fs::read_dir(cache.join("squashfs-blocks")).unwrap() {
        for e in fs::read_dir(sub.unwrap().path()).unwrap() {
            entries.push(e.unwrap().path());
        }
    }
    assert!(entries.len() >= 3, "{entries:?}");
    for (i, path) in entries.iter().enumerate() {
        let mut b = fs::read(path).unwrap();
        if i % 2 == 0 {
            let last = b.len() - 1;
            b[last] ^= 0xff;
        } else {
            b.truncate(b.len() / 2);
        }
        fs::write(path, b).unwrap();
    }
    let image = fx.dir.join("after-damage.squashfs");
    write(&spec, &fx.stack, 2, Some(&cache), &image);
    assert!(fs::read(&image).unwrap() == cold);
    // And the damaged entries were written again.
    let image = fx.dir.join("after-repair.squashfs");
    write(&spec, &fx.stack, 1, Some(&cache), &image);
    assert!(fs::read(&image).unwrap() == cold);
}

#[test]
fn bad_block_sizes_are_refused() {
    let fx = with_fixture();
    for block_size in [0, 1000, 2048, 3 * 4096, 2 * 1024 * 1024] {
        let spec = Spec::Squashfs(SquashfsOptions {
            block_size,
            ..SquashfsOptions::default()
        });
        let input = Input {
            stack: &fx.stack,
            layer_ids: &[],
            epoch: EPOCH,
            threads: 1,
            cache_dir: None,
            seed: b"test",
            cancel: None,
        };
        let err = write_artifact(&spec, &input, &fx.dir.join("x.squashfs")).unwrap_err();
        assert!(err.to_string().starts_with("Failed to"), "{err}");
    }
}

/// Mounts `image` read-only on `at`; `None` (with a message) when loop
/// devices are not available here.
#[allow(clippy::print_stderr)]
fn mount_loop(image: &Path, at: &Path) -> Option<Mounted> {
    fs::create_dir_all(at).unwrap();
    let out = Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(image)
        .arg(at)
        .output()
        .ok()?;
    if !out.status.success() {
        kiln_testkit::require::skip(&format!(
            "cannot loop-mount a squashfs here: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return None;
    }
    Some(Mounted(at.to_path_buf()))
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn the_kernel_mounts_it() {
    let fx = with_fixture();
    let image = fx.dir.join("root.squashfs");
    write(
        &squashfs(SquashfsCompression::Zstd, None),
        &fx.stack,
        2,
        None,
        &image,
    );
    let Some(mnt) = mount_loop(&image, &fx.dir.join("mnt")) else {
        return;
    };
    let expected = summary(&Tree::merged(&fx.stack, EPOCH).unwrap());
    // Every lookup goes through the directory (and its index).
    assert_eq!(summary(&tree_of(&mnt.0)), expected);
}

#[test]
fn overlay_squashfs_is_an_overlayfs_lower_layer() {
    let temp = tempfile::tempdir().unwrap();
    let (base, child) = (temp.path().join("base"), temp.path().join("child"));
    fs::create_dir(&base).unwrap();
    fixture(&base);
    // The child: a changed file, an added one, a deletion (whiteout), an
    // opaque directory that replaces `many`, and a deleted directory.
    fs::create_dir_all(child.join("files")).unwrap();
    fs::write(child.join("files/tiny"), b"changed\n").unwrap();
    fs::write(child.join("files/added"), bytes(200_000, 9)).unwrap();
    mknod(
        &child.join("files/empty"),
        FileType::CharacterDevice,
        0,
        0,
        0,
    );
    mknod(&child.join("deep"), FileType::CharacterDevice, 0, 0, 0);
    fs::create_dir(child.join("many")).unwrap();
    xattr(&child.join("many"), "trusted.overlay.opaque", b"y");
    fs::write(child.join("many/only-one"), b"alone\n").unwrap();

    let base_stack = LayerStack::new(vec![base.clone()]);
    let stack = base_stack.with(child.clone());
    let options = SquashfsOptions::default();
    let (base_img, ovl_img) = (temp.path().join("base.sqfs"), temp.path().join("ovl.sqfs"));
    write(
        &Spec::Squashfs(options.clone()),
        &base_stack,
        2,
        None,
        &base_img,
    );
    write(&Spec::OverlaySquashfs(options), &stack, 2, None, &ovl_img);

    if have("unsquashfs") {
        // The layer keeps its whiteouts and the opaque mark.
        let layer = summary(&Tree::layer(&stack, EPOCH).unwrap());
        let out = temp.path().join("ovl-out");
        run(Command::new("unsquashfs")
            .args(["-no-progress", "-xattrs", "-d"])
            .arg(&out)
            .arg(&ovl_img));
        let got = summary(&Tree::layer(&LayerStack::new(vec![out]), EPOCH).unwrap());
        assert_eq!(got, layer);
    }

    let Some(lower_base) = mount_loop(&base_img, &temp.path().join("m-base")) else {
        return;
    };
    let Some(lower_ovl) = mount_loop(&ovl_img, &temp.path().join("m-ovl")) else {
        return;
    };
    let merged = temp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={}:{}",
            lower_ovl.0.display(),
            lower_base.0.display()
        ))
        .arg(&merged)
        .status()
        .unwrap();
    assert!(status.success(), "mount -t overlay failed");
    let merged = Mounted(merged);
    // Hard links keep their identity through overlayfs only per layer:
    // compare names and content.
    let expected = summary(&Tree::merged(&stack, EPOCH).unwrap());
    let got = summary(&tree_of(&merged.0));
    drop(merged);
    assert_eq!(got, expected);
    assert!(expected.iter().any(|l| l.contains("only-one")));
    assert!(
        !expected
            .iter()
            .any(|l| l.contains("entry-with-a-longish-name"))
    );
}

#[test]
fn posix_acls_are_left_out_and_other_xattrs_kept() {
    if !have("unsquashfs") || !have("setfacl") || !have("getfattr") {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let layer = temp.path().join("layer");
    fs::create_dir_all(layer.join("var/log/journal")).unwrap();
    fs::write(layer.join("var/log/journal/f"), b"x").unwrap();
    // As systemd's tmpfiles set it on /var/log/journal.
    run(Command::new("setfacl")
        .args(["-m", "g:adm:rx,d:g:adm:rx"])
        .arg(layer.join("var/log/journal")));
    xattr(&layer.join("var/log/journal/f"), "user.kept", b"yes");
    let stack = LayerStack::new(vec![layer]);
    let image = temp.path().join("acl.squashfs");
    write(
        &squashfs(SquashfsCompression::Zstd, None),
        &stack,
        2,
        None,
        &image,
    );
    let out = temp.path().join("out");
    unsquash(&image, &out);
    let attrs = run(Command::new("getfattr")
        .args(["-d", "-m", "-", "--absolute-names"])
        .arg(out.join("var/log/journal"))
        .arg(out.join("var/log/journal/f")));
    assert!(!attrs.contains("posix_acl"), "{attrs}");
    assert!(attrs.contains("user.kept=\"yes\""), "{attrs}");
}
