//! ext4 images, checked with e2fsprogs (`e2fsck`, `dumpe2fs`, `debugfs`)
//! and, as root, the kernel (read-only loop mounts) against the tree they
//! were written from.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_formats::{Error, Ext4Options, Input, NodeKind, Spec, Tree, write_artifact};
use kiln_layers::LayerStack;
use rustix::fs::{XattrFlags, lsetxattr};

use crate::{Compare, EPOCH, assert_same_tree, fixture_stack, have, is_root, run};

fn write(
    stack: &LayerStack,
    options: &Ext4Options,
    threads: usize,
    seed: &[u8],
    out: &Path,
) -> Result<(), Error> {
    let input = Input {
        stack,
        epoch: EPOCH,
        threads,
        cache_dir: None,
        seed,
        cancel: None,
        layer_ids: &[],
    };
    write_artifact(&Spec::Ext4(options.clone()), &input, out)
}

fn labelled(label: &str) -> Ext4Options {
    Ext4Options {
        label: Some(label.into()),
        ..Ext4Options::default()
    }
}

/// `e2fsck -fn` passes without a single complaint.
pub(crate) fn fsck(image: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let complaints: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("Pass ") && !l.contains(" files ("))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "e2fsck -fn {} ({}):\n{stdout}{}",
        image.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn debugfs(image: &Path, request: &str) -> String {
    run(Command::new("debugfs").arg("-R").arg(request).arg(image))
}

/// `dumpe2fs -h`'s `name: value` lines.
fn superblock(image: &Path) -> Vec<(String, String)> {
    run(Command::new("dumpe2fs").arg("-h").arg(image))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn field<'a>(sb: &'a [(String, String)], name: &str) -> &'a str {
    sb.iter()
        .find(|(k, _)| k == name)
        .map_or_else(|| panic!("no `{name}` in dumpe2fs -h"), |(_, v)| v.as_str())
}

/// Mounts `image` read-only on `at`; `None` (with a message) when that
/// cannot be done here.
#[allow(clippy::print_stderr)]
pub(crate) fn mount(image: &Path, at: &Path) -> Option<Mounted> {
    if !is_root() {
        kiln_testkit::require::skip("mounting an ext4 image needs root");
        return None;
    }
    fs::create_dir_all(at).unwrap();
    let out = Command::new("mount")
        .args(["-t", "ext4", "-o", "loop,ro"])
        .arg(image)
        .arg(at)
        .output()
        .ok()?;
    if !out.status.success() {
        kiln_testkit::require::skip(&format!(
            "cannot loop-mount an ext4 image here: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return None;
    }
    Some(Mounted(at.to_path_buf()))
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
pub(crate) struct Mounted(pub(crate) PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The tree of a mounted image, without the lost+found ext4 adds.
pub(crate) fn mounted_tree(mnt: &Path) -> Tree {
    let mut tree = Tree::merged(&LayerStack::new(vec![mnt.to_path_buf()]), EPOCH).unwrap();
    let at = tree
        .nodes
        .iter()
        .position(|n| n.path == "lost+found")
        .expect("an ext4 has lost+found");
    tree.nodes.remove(at);
    for n in &mut tree.nodes {
        if let NodeKind::HardLink { target } = &mut n.kind
            && *target > at
        {
            *target -= 1;
        }
    }
    tree
}

fn stack_of(dir: &Path) -> LayerStack {
    LayerStack::new(vec![dir.to_path_buf()])
}

#[test]
fn e2fsprogs_accept_and_list_every_entry() {
    if !have("e2fsck") || !have("debugfs") {
        return;
    }
    let (dir, stack) = fixture_stack();
    let image = dir.path().join("root.ext4");
    write(&stack, &labelled("kiln-root"), 2, b"test", &image).unwrap();
    fsck(&image);

    let sb = superblock(&image);
    let features = field(&sb, "Filesystem features");
    for f in [
        "has_journal",
        "ext_attr",
        "dir_index",
        "filetype",
        "extent",
        "64bit",
        "flex_bg",
        "sparse_super",
        "large_file",
        "huge_file",
        "dir_nlink",
        "extra_isize",
        "metadata_csum",
    ] {
        assert!(features.split(' ').any(|x| x == f), "{f} in {features}");
    }
    assert_eq!(field(&sb, "Filesystem volume name"), "kiln-root");
    assert_eq!(field(&sb, "Block size"), "4096");
    assert_eq!(field(&sb, "Inode size"), "256");
    assert_eq!(field(&sb, "Required extra isize"), "32");
    assert_eq!(field(&sb, "Checksum type"), "crc32c");
    assert_eq!(field(&sb, "Journal inode"), "8");
    assert_eq!(field(&sb, "Filesystem state"), "clean");
    let uuid = field(&sb, "Filesystem UUID");
    assert_eq!(uuid.len(), 36);
    assert_eq!(&uuid[14..15], "4", "a version-4 UUID: {uuid}");
    let len = fs::metadata(&image).unwrap().len();
    assert_eq!(len % (1 << 20), 0, "auto sizes are whole MiB");
    let blocks: u64 = field(&sb, "Block count").parse().unwrap();
    assert_eq!(blocks * 4096, len);
    let free: u64 = field(&sb, "Free blocks").parse().unwrap();
    // The default headroom: 64 MiB for a small tree, rounded up to a MiB.
    assert!(
        (64 << 20..65 << 20).contains(&(free * 4096)),
        "64 MiB headroom: {free} blocks"
    );
    // Inodes 12… in tree order, and one per entry (hard links share).
    let tree = Tree::merged(&stack, EPOCH).unwrap();
    let files = tree
        .nodes
        .iter()
        .filter(|n| !matches!(n.kind, NodeKind::HardLink { .. }))
        .count() as u64;
    let inodes: u64 = field(&sb, "Inode count").parse().unwrap();
    let free_inodes: u64 = field(&sb, "Free inodes").parse().unwrap();
    assert_eq!(
        inodes - free_inodes,
        files + 10,
        "11 reserved, the root among them"
    );
    // The superblock's times are the epoch.
    let raw = fs::read(&image).unwrap();
    for at in [0x2C, 0x30, 0x40, 0x108] {
        let t = u32::from_le_bytes(raw[1024 + at..1024 + at + 4].try_into().unwrap());
        assert_eq!(i64::from(t), EPOCH, "superblock time at {at:#x}");
    }

    // Hard links share the inode, with the count of their names.
    let stat = debugfs(&image, "stat /usr/bin/tool");
    assert!(stat.contains("Links: 3"), "{stat}");
    assert!(stat.contains("Mode:  04755"), "{stat}");
    assert!(stat.contains("Generation: 0"), "{stat}");
    let ino = |path: &str| {
        debugfs(&image, &format!("stat {path}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_eq!(ino("/usr/bin/tool"), ino("/etc/tool-link2"));
    assert_eq!(ino("/"), "2");
    assert_eq!(ino("/lost+found"), "11");
    // The first entry after the root.
    assert_eq!(ino(&format!("/{}", tree.nodes[1].path)), "12");
    // Every time of an inode is its clamped mtime.
    let stat = debugfs(&image, "stat /etc/tiny");
    for t in ["ctime", "atime", "mtime", "crtime"] {
        let want = format!("{t}: {:#010x}:00000000", EPOCH - 1000);
        assert!(stat.contains(&want), "{want} in {stat}");
    }
    let stat = debugfs(&image, "stat /etc/newer");
    assert!(stat.contains(&format!("mtime: {EPOCH:#010x}")), "{stat}");
    // Short symlinks live in the inode, long ones in a block.
    let stat = debugfs(&image, "stat /etc/short-link");
    assert!(
        stat.contains("Fast link dest: \"../usr/bin/tool\""),
        "{stat}"
    );
    let stat = debugfs(&image, "stat /etc/long-link");
    assert!(stat.contains("EXTENTS:"), "{stat}");
    // Empty files own no blocks.
    let stat = debugfs(&image, "stat /etc/empty");
    assert!(stat.contains("Blockcount: 0"), "{stat}");
    let listing = debugfs(&image, "ls -l /etc");
    // (debugfs escapes bytes past ASCII.)
    for name in [
        "tiny",
        "short-link",
        "long-link",
        "gr\\xc3\\xbc\\xc3\\x9fe",
        "fifo",
    ] {
        assert!(listing.contains(name), "{name} in {listing}");
    }
    let listing = debugfs(&image, "ls /var/big");
    assert_eq!(listing.matches("entry-").count(), 400, "{listing}");
    if is_root() {
        let stat = debugfs(&image, "stat /etc/tiny");
        assert!(stat.contains("User:  1000   Group:  1001"), "{stat}");
        let stat = debugfs(&image, "stat /etc/null");
        assert!(stat.contains("Device major/minor number: 01:03"), "{stat}");
        let ea = debugfs(&image, "ea_list /usr/bin/big");
        assert!(ea.contains("security.capability"), "{ea}");
    }
    let ea = debugfs(&image, "ea_get /etc/tiny user.kiln-test");
    assert!(ea.contains("value"), "{ea}");

    // rdump gives back every file, directory and symlink.
    let out = dir.path().join("rdump");
    fs::create_dir(&out).unwrap();
    debugfs(&image, &format!("rdump / {}", out.display()));
    for n in &tree.nodes {
        let got = out.join(&n.path);
        match &n.kind {
            NodeKind::File { source, .. } => {
                assert_eq!(
                    fs::read(&got).unwrap(),
                    fs::read(source).unwrap(),
                    "{}",
                    n.path
                );
            }
            NodeKind::HardLink { target } => {
                let NodeKind::File { source, .. } = &tree.nodes[*target].kind else {
                    unreachable!()
                };
                assert_eq!(
                    fs::read(&got).unwrap(),
                    fs::read(source).unwrap(),
                    "{}",
                    n.path
                );
            }
            NodeKind::Symlink { target } => {
                assert_eq!(
                    fs::read_link(&got).unwrap().as_os_str().as_encoded_bytes(),
                    target.as_slice()
                );
            }
            NodeKind::Dir => assert!(got.is_dir(), "{}", n.path),
            _ => {}
        }
        if !matches!(n.kind, NodeKind::Symlink { .. } | NodeKind::Dir)
            && got.exists()
            && !n.path.is_empty()
        {
            // (rdump chowns after chmod, which drops set-uid: that is
            // checked with `stat` above.)
            assert_eq!(
                fs::symlink_metadata(&got).unwrap().mode() & 0o777,
                n.mode & 0o777,
                "{}",
                n.path
            );
        }
    }
}

#[test]
fn the_superblock_is_what_mkfs_ext4_makes_of_the_same_size() {
    if !have("mkfs.ext4") || !have("dumpe2fs") {
        return;
    }
    let (dir, stack) = fixture_stack();
    for (i, size) in [None, Some(3u64 << 30)].into_iter().enumerate() {
        let image = dir.path().join(format!("kiln-{i}.ext4"));
        let options = Ext4Options {
            size,
            ..Ext4Options::default()
        };
        write(&stack, &options, 2, b"test", &image).unwrap();
        let len = fs::metadata(&image).unwrap().len();
        let reference = dir.path().join(format!("mkfs-{i}.ext4"));
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-O", "^resize_inode"])
            .arg(&reference)
            .arg(format!("{}k", len >> 10)));
        let (ours, theirs) = (superblock(&image), superblock(&reference));
        for name in [
            "Filesystem features",
            "Filesystem flags",
            "Default mount options",
            "Block count",
            "Reserved block count",
            "Inode count",
            "Inodes per group",
            "Inode size",
            "Required extra isize",
            "Desired extra isize",
            "Flex block group size",
            "Journal inode",
            "Journal backup",
            "Total journal size",
            "Total journal blocks",
            "Journal features",
            "Default directory hash",
            "Checksum type",
        ] {
            assert_eq!(
                field(&ours, name),
                field(&theirs, name),
                "{name} of {len} bytes"
            );
        }
    }
}

#[test]
fn the_kernel_mounts_it_and_shows_the_tree() {
    let (dir, stack) = fixture_stack();
    let image = dir.path().join("root.ext4");
    write(&stack, &Ext4Options::default(), 2, b"test", &image).unwrap();
    let Some(mnt) = mount(&image, &dir.path().join("mnt")) else {
        return;
    };
    let expected = Tree::merged(&stack, EPOCH).unwrap();
    let got = mounted_tree(&mnt.0);
    assert_same_tree(
        &expected,
        &got,
        Compare {
            xattrs: true,
            skip_sockets: false,
        },
    );
    // Link counts, and every time is the mtime.
    let meta = fs::symlink_metadata(mnt.0.join("usr/bin/tool")).unwrap();
    assert_eq!(meta.nlink(), 3);
    let meta = fs::symlink_metadata(mnt.0.join("etc/tiny")).unwrap();
    assert_eq!(
        (meta.mtime(), meta.ctime(), meta.atime()),
        (EPOCH - 1000, EPOCH - 1000, EPOCH - 1000)
    );
    let meta = fs::symlink_metadata(mnt.0.join("usr/bin")).unwrap();
    assert_eq!(meta.nlink(), 2);
    let meta = fs::symlink_metadata(mnt.0.join("etc")).unwrap();
    // etc's subdirectories: deep.
    assert_eq!(meta.nlink(), 3);
    if have("getfattr") {
        let attrs = run(Command::new("getfattr")
            .args(["-d", "-m", "-", "--absolute-names"])
            .arg(mnt.0.join("usr/bin/big"))
            .arg(mnt.0.join("etc/tiny")));
        assert!(attrs.contains("security.capability=0s"), "{attrs}");
        assert!(attrs.contains("user.kiln-test=\"value\""), "{attrs}");
    }
    drop(mnt);
    // Still clean after the kernel read it.
    if have("e2fsck") {
        fsck(&image);
    }
    // And the kernel writes to it: its bitmaps and counts are right.
    let copy = dir.path().join("rw.ext4");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&image)
        .arg(&copy));
    let mnt = dir.path().join("rw");
    fs::create_dir(&mnt).unwrap();
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&copy)
        .arg(&mnt));
    let rw = Mounted(mnt);
    fs::create_dir(rw.0.join("new")).unwrap();
    for i in 0..500 {
        fs::write(rw.0.join(format!("new/{i}")), vec![i as u8; i * 100]).unwrap();
    }
    fs::remove_dir_all(rw.0.join("var/big")).unwrap();
    fs::write(rw.0.join("etc/tiny"), b"rewritten").unwrap();
    drop(rw);
    if have("e2fsck") {
        fsck(&copy);
    }
}

#[test]
fn a_lost_found_of_the_tree_is_the_one_ext4_uses() {
    if !have("e2fsck") || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    fs::create_dir_all(layer.join("lost+found")).unwrap();
    fs::write(layer.join("lost+found/#123"), b"found\n").unwrap();
    fs::write(layer.join("after"), b"after\n").unwrap();
    let image = dir.path().join("lf.ext4");
    write(
        &stack_of(&layer),
        &Ext4Options::default(),
        2,
        b"test",
        &image,
    )
    .unwrap();
    fsck(&image);
    let stat = debugfs(&image, "stat /lost+found");
    assert!(stat.starts_with("Inode: 11 "), "{stat}");
    assert!(stat.contains("Size: 16384"), "{stat}");
    let listing = debugfs(&image, "ls /lost+found");
    assert!(listing.contains("#123"), "{listing}");
}

#[test]
fn same_tree_same_bytes_whatever_the_threads_and_the_path() {
    let (dir, stack) = fixture_stack();
    let mut images = Vec::new();
    for (i, threads) in [1, 2, 2].into_iter().enumerate() {
        let image = dir.path().join(format!("{i}.ext4"));
        write(&stack, &labelled("same"), threads, b"seed", &image).unwrap();
        images.push(blake3::hash(&fs::read(&image).unwrap()));
    }
    // The same tree copied somewhere else.
    let copy = dir.path().join("elsewhere/deeper/layer");
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(&stack.layers[0])
        .arg(&copy));
    let image = dir.path().join("copy.ext4");
    write(&stack_of(&copy), &labelled("same"), 2, b"seed", &image).unwrap();
    images.push(blake3::hash(&fs::read(&image).unwrap()));
    assert!(images.windows(2).all(|w| w[0] == w[1]), "{images:?}");

    // Another seed: another UUID and hash seed, nothing else.
    let other = dir.path().join("other.ext4");
    write(&stack, &labelled("same"), 2, b"another seed", &other).unwrap();
    assert_ne!(blake3::hash(&fs::read(&other).unwrap()), images[0]);
    if have("dumpe2fs") {
        let a = superblock(&dir.path().join("0.ext4"));
        let b = superblock(&other);
        assert_ne!(field(&a, "Filesystem UUID"), field(&b, "Filesystem UUID"));
        assert_ne!(
            field(&a, "Directory Hash Seed"),
            field(&b, "Directory Hash Seed")
        );
        assert_eq!(field(&a, "Block count"), field(&b, "Block count"));
    }
}

#[test]
fn sizes_and_labels_are_checked() {
    let (dir, stack) = fixture_stack();
    // A fixed size is the image's size.
    let image = dir.path().join("fixed.ext4");
    let options = Ext4Options {
        size: Some(100 << 20),
        ..Ext4Options::default()
    };
    write(&stack, &options, 2, b"test", &image).unwrap();
    assert_eq!(fs::metadata(&image).unwrap().len(), 100 << 20);
    if have("e2fsck") {
        fsck(&image);
    }
    // A last group too small for its own metadata is left out, as
    // mke2fs does; the file keeps the size asked for.
    let odd = dir.path().join("odd.ext4");
    let options = Ext4Options {
        size: Some((128 << 20) + 40 * 1024),
        ..Ext4Options::default()
    };
    write(&stack, &options, 2, b"test", &odd).unwrap();
    assert_eq!(fs::metadata(&odd).unwrap().len(), (128 << 20) + 40 * 1024);
    if have("e2fsck") {
        fsck(&odd);
        assert_eq!(field(&superblock(&odd), "Block count"), "32768");
    }
    // More headroom, a bigger image.
    let roomy = dir.path().join("roomy.ext4");
    let options = Ext4Options {
        headroom: Some(300 << 20),
        ..Ext4Options::default()
    };
    write(&stack, &options, 2, b"test", &roomy).unwrap();
    if have("dumpe2fs") {
        let sb = superblock(&roomy);
        let free: u64 = field(&sb, "Free blocks").parse().unwrap();
        assert!(
            (300 << 20..301 << 20).contains(&(free * 4096)),
            "300 MiB headroom: {free} blocks"
        );
    }

    // Too small: an error with both sizes, and no file left behind.
    let big = dir.path().join("big");
    fs::create_dir(&big).unwrap();
    fs::write(big.join("blob"), vec![1u8; 20 << 20]).unwrap();
    let small = dir.path().join("small.ext4");
    let options = Ext4Options {
        size: Some(16 << 20),
        ..Ext4Options::default()
    };
    let err = write(&stack_of(&big), &options, 2, b"test", &small).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::TooLarge { .. }), "{msg}");
    assert!(msg.contains(&(16u64 << 20).to_string()), "{msg}");
    assert!(msg.contains(" MiB)"), "{msg}");
    assert!(!small.exists());
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let err = write(&stack, &labelled("seventeen-bytes!!"), 2, b"test", &small).unwrap_err();
    assert!(matches!(err, Error::Options { .. }), "{err}");
    assert!(err.to_string().contains("seventeen-bytes!!"), "{err}");
    write(&stack, &labelled("sixteen-bytes!!!"), 2, b"test", &small).unwrap();
}

#[test]
fn a_file_over_512_mib_gets_an_indexed_extent_tree() {
    if !have("e2fsck") || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    fs::create_dir(&layer).unwrap();
    // Sparse on this side, so the test is cheap; a few marks to read back.
    let big = layer.join("big");
    let f = fs::File::create(&big).unwrap();
    let len = 600u64 << 20;
    f.set_len(len).unwrap();
    for at in [0, 4095, 128 << 20, (300 << 20) + 7, len - 1] {
        std::os::unix::fs::FileExt::write_all_at(&f, b"k", at).unwrap();
    }
    drop(f);
    fs::write(layer.join("after"), b"after the big one\n").unwrap();
    let image = dir.path().join("big.ext4");
    write(
        &stack_of(&layer),
        &Ext4Options::default(),
        2,
        b"test",
        &image,
    )
    .unwrap();
    fsck(&image);
    let stat = debugfs(&image, "stat /big");
    assert!(stat.contains("(ETB0)"), "an extent tree block: {stat}");
    assert!(stat.contains(&format!("Size: {len}")), "{stat}");
    // Sparse on this side too: only the marked blocks were written.
    let on_disk = fs::metadata(&image).unwrap().blocks() * 512;
    assert!(on_disk < 64 << 20, "{on_disk} bytes allocated");
    let extents = debugfs(&image, "ex /big");
    assert!(extents.lines().count() > 6, "{extents}");

    let back = dir.path().join("back");
    match mount(&image, &dir.path().join("mnt")) {
        Some(mnt) => {
            run(Command::new("cmp").arg(mnt.0.join("big")).arg(&big));
            run(Command::new("cmp")
                .arg(mnt.0.join("after"))
                .arg(layer.join("after")));
        }
        None => {
            debugfs(&image, &format!("dump /big {}", back.display()));
            run(Command::new("cmp").arg(&back).arg(&big));
        }
    }
}

#[test]
#[allow(clippy::print_stderr)]
fn a_file_of_200_gib_gets_two_index_levels() {
    if !have("e2fsck") || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    fs::create_dir(&layer).unwrap();
    let big = layer.join("big");
    let f = fs::File::create(&big).unwrap();
    let len = 200u64 << 30;
    if f.set_len(len).is_err() {
        kiln_testkit::require::skip("no 200 GiB sparse files here");
        return;
    }
    let mark = (150u64 << 30) + 12345;
    std::os::unix::fs::FileExt::write_all_at(&f, b"mark", mark).unwrap();
    drop(f);
    let image = dir.path().join("huge.ext4");
    if let Err(e) = write(
        &stack_of(&layer),
        &Ext4Options::default(),
        2,
        b"test",
        &image,
    ) {
        kiln_testkit::require::skip(&format!("no 250 GiB sparse image here: {e}"));
        return;
    }
    fsck(&image);
    let extents = debugfs(&image, "ex /big");
    assert!(extents.contains(" 0/ 2 "), "depth 2: {extents}");
    if let Some(mnt) = mount(&image, &dir.path().join("mnt")) {
        let f = fs::File::open(mnt.0.join("big")).unwrap();
        let mut got = [0u8; 6];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut got, mark - 1).unwrap();
        assert_eq!(&got, b"\0mark\0");
    }
}

#[test]
fn a_directory_of_5000_entries() {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    let many = layer.join("many");
    fs::create_dir_all(&many).unwrap();
    for i in 0..5000 {
        fs::write(
            many.join(format!("a-file-with-a-long-name-{i:05}")),
            i.to_string(),
        )
        .unwrap();
    }
    for i in 0..50 {
        fs::create_dir(many.join(format!("sub-{i}"))).unwrap();
    }
    // What the fixture lacks: a socket, a device past 8-bit numbers,
    // owners past 16 bits.
    drop(std::os::unix::net::UnixListener::bind(layer.join("socket")).unwrap());
    if is_root() {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            layer.join("big-dev"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_bits_truncate(0o600),
            rustix::fs::makedev(300, 70_000),
        )
        .unwrap();
        std::os::unix::fs::lchown(layer.join("socket"), Some(123_456), Some(654_321)).unwrap();
    }
    let image = dir.path().join("many.ext4");
    write(
        &stack_of(&layer),
        &Ext4Options::default(),
        2,
        b"test",
        &image,
    )
    .unwrap();
    if have("e2fsck") && have("debugfs") {
        fsck(&image);
        let listing = debugfs(&image, "ls /many");
        assert_eq!(listing.matches("a-file-with-a-long-name-").count(), 5000);
        let stat = debugfs(&image, "stat /many");
        assert!(stat.contains("Links: 52"), "{stat}");
    }
    if let Some(mnt) = mount(&image, &dir.path().join("mnt")) {
        let expected = Tree::merged(&stack_of(&layer), EPOCH).unwrap();
        assert_same_tree(
            &expected,
            &mounted_tree(&mnt.0),
            Compare {
                xattrs: true,
                skip_sockets: false,
            },
        );
        // Lookups by name, not only a listing.
        let name = mnt.0.join("many/a-file-with-a-long-name-04321");
        assert_eq!(fs::read_to_string(name).unwrap(), "4321");
    }
}

#[test]
fn xattrs_too_big_for_the_inode_go_to_a_shared_block() {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    fs::create_dir(&layer).unwrap();
    let value: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    for name in ["one", "two", "three"] {
        let p = layer.join(name);
        fs::write(&p, name).unwrap();
        lsetxattr(&p, "user.big", &value, XattrFlags::empty()).unwrap();
        lsetxattr(&p, "user.small", b"s", XattrFlags::empty()).unwrap();
    }
    lsetxattr(layer.join("three"), "user.other", b"x", XattrFlags::empty()).unwrap();
    fs::create_dir(layer.join("dir")).unwrap();
    lsetxattr(layer.join("dir"), "user.big", &value, XattrFlags::empty()).unwrap();
    if is_root() {
        // Fast and slow symlinks and a fifo, all with the same block.
        std::os::unix::fs::symlink("short", layer.join("fast")).unwrap();
        std::os::unix::fs::symlink("s".repeat(100), layer.join("slow")).unwrap();
        run(Command::new("mkfifo").arg(layer.join("pipe")));
        for name in ["fast", "slow", "pipe"] {
            lsetxattr(layer.join(name), "trusted.big", &value, XattrFlags::empty()).unwrap();
        }
    }
    let image = dir.path().join("xattrs.ext4");
    write(
        &stack_of(&layer),
        &Ext4Options::default(),
        2,
        b"test",
        &image,
    )
    .unwrap();
    if have("e2fsck") && have("debugfs") {
        fsck(&image);
        let acl = |path: &str| {
            let stat = debugfs(&image, &format!("stat {path}"));
            let at = stat.find("File ACL: ").expect("a File ACL line") + 10;
            stat[at..].split_whitespace().next().unwrap().to_owned()
        };
        assert_ne!(acl("/one"), "0");
        assert_eq!(acl("/one"), acl("/two"), "identical sets share a block");
        assert_ne!(acl("/one"), acl("/three"));
        let ea = debugfs(&image, "ea_get -f /dev/stdout /two user.big");
        assert!(!ea.is_empty());
    }
    if let Some(mnt) = mount(&image, &dir.path().join("mnt")) {
        let expected = Tree::merged(&stack_of(&layer), EPOCH).unwrap();
        assert_same_tree(
            &expected,
            &mounted_tree(&mnt.0),
            Compare {
                xattrs: true,
                skip_sockets: false,
            },
        );
    }
}

#[test]
fn posix_acls_survive() {
    if !have("setfacl") || !have("getfacl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    fs::create_dir_all(layer.join("shared")).unwrap();
    fs::write(layer.join("shared/file"), b"acl\n").unwrap();
    let setfacl = |args: &[&str], path: &str| {
        run(Command::new("setfacl").args(args).arg(layer.join(path)));
    };
    setfacl(&["-m", "u:1000:r,g:100:rw,m::rw"], "shared/file");
    setfacl(&["-m", "u:1234:rwx", "-d", "-m", "g:100:rx,o::-"], "shared");
    let getfacl = |root: &Path| {
        run(Command::new("getfacl")
            .args(["-n", "-R", "-p"])
            .current_dir(root)
            .arg("shared"))
    };
    let expected = getfacl(&layer);
    assert!(expected.contains("user:1000:r--"), "{expected}");
    let image = dir.path().join("acl.ext4");
    write(
        &stack_of(&layer),
        &Ext4Options::default(),
        2,
        b"test",
        &image,
    )
    .unwrap();
    if have("e2fsck") {
        fsck(&image);
    }
    if let Some(mnt) = mount(&image, &dir.path().join("mnt")) {
        assert_eq!(getfacl(&mnt.0), expected);
    }
}
