//! kiln-formats' integration tests: artifacts read back with the field's
//! own tools (tar, cpio, …) and compared entry by entry with the tree they
//! were written from.
#![allow(clippy::print_stderr)]

mod archives;
mod cancel;
mod disk;
mod ext4;
mod flist;
mod oci;
mod squashfs;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_formats::{NodeKind, Tree};
use kiln_layers::LayerStack;

/// The epoch fixtures are written with: some of their mtimes are later.
pub(crate) const EPOCH: i64 = 1_700_000_000;

/// Whether `tool` is installed (see [`kiln_testkit::require`]: a missing
/// tool fails the test under `CI` or `KILN_REQUIRE_TOOLS=1`).
pub(crate) fn have(tool: &str) -> bool {
    kiln_testkit::require::have(tool)
}

/// Whether the tests run as root (devices, owners, trusted xattrs).
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn set_mtime(path: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

/// Fills `root` with one of everything a root filesystem holds: files of
/// many sizes, hard links, symbolic links, devices, a fifo, xattrs,
/// set-uid bits, owners, long and non-ASCII names, a big directory.
pub(crate) fn fixture(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("etc/deep/a/b/c/d/e/f/g")).unwrap();
    fs::create_dir_all(root.join("var/big")).unwrap();
    fs::write(root.join("etc/empty"), b"").unwrap();
    fs::write(root.join("etc/tiny"), b"x").unwrap();
    fs::write(root.join("etc/deep/a/b/c/d/e/f/g/file"), b"deep\n").unwrap();
    let big: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(root.join("usr/bin/big"), &big).unwrap();
    fs::write(root.join("usr/bin/block"), vec![7u8; 128 * 1024]).unwrap();
    fs::write(root.join("usr/bin/zeros"), vec![0u8; 300 * 1024]).unwrap();
    fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-link")).unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("etc/tool-link2")).unwrap();
    symlink("../usr/bin/tool", root.join("etc/short-link")).unwrap();
    symlink("x".repeat(300), root.join("etc/long-link")).unwrap();
    let long_name = "n".repeat(120);
    fs::write(root.join("etc").join(&long_name), b"long name").unwrap();
    let long_dir = root.join("d".repeat(90)).join("e".repeat(90));
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join("f".repeat(60)), b"long path").unwrap();
    fs::write(root.join("etc/grüße-ünïcödé"), b"utf-8").unwrap();
    for i in 0..400 {
        fs::write(root.join(format!("var/big/entry-{i:04}")), format!("{i}")).unwrap();
    }
    fs::write(root.join("etc/newer"), b"from the future").unwrap();
    set_mtime(&root.join("etc/newer"), EPOCH + 1000);
    set_mtime(&root.join("etc/tiny"), EPOCH - 1000);
    rustix::fs::lsetxattr(
        root.join("etc/tiny"),
        "user.kiln-test",
        b"value",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    if is_root() {
        // cap_net_raw+ep, as `setcap` writes it (VFS_CAP_REVISION_2).
        let cap: [u8; 20] = [
            0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0,
            0, 0, 0,
        ];
        rustix::fs::lsetxattr(
            root.join("usr/bin/big"),
            "security.capability",
            &cap,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        std::os::unix::fs::chown(root.join("etc/tiny"), Some(1000), Some(1001)).unwrap();
        std::os::unix::fs::lchown(root.join("etc/short-link"), Some(5), Some(6)).unwrap();
        run(Command::new("mknod")
            .arg(root.join("etc/null"))
            .args(["c", "1", "3"]));
        run(Command::new("mknod")
            .arg(root.join("etc/loop9"))
            .args(["b", "7", "9"]));
    }
    run(Command::new("mkfifo").arg(root.join("etc/fifo")));
    set_mtime(root, EPOCH - 5);
}

/// A stack of one layer holding [`fixture`], in a new temporary folder.
pub(crate) fn fixture_stack() -> (tempfile::TempDir, LayerStack) {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    fs::create_dir(&layer).unwrap();
    fixture(&layer);
    let stack = LayerStack::new(vec![layer]);
    (dir, stack)
}

/// What must match between the tree written and the tree read back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Compare {
    /// Extended attributes (not in cpio).
    pub(crate) xattrs: bool,
    /// Fifos, devices etc. (not `user.*` xattrs)
    pub(crate) skip_sockets: bool,
}

/// Asserts that `actual` (read back from an extracted artifact) holds
/// exactly `expected`'s entries with the same type, mode, owner, mtime,
/// size, content, link target, device numbers, xattrs and hard-link
/// structure.
pub(crate) fn assert_same_tree(expected: &Tree, actual: &Tree, cmp: Compare) {
    let describe = |t: &Tree| -> Vec<String> {
        let paths: Vec<&str> = t.nodes.iter().map(|n| n.path.as_str()).collect();
        t.nodes
            .iter()
            .filter(|n| !(cmp.skip_sockets && n.kind == NodeKind::Socket))
            .map(|n| {
                let kind = match &n.kind {
                    NodeKind::Dir => "dir".to_string(),
                    NodeKind::File { source, size } => {
                        format!("file {size} {}", content_hash(source))
                    }
                    NodeKind::HardLink { target } => format!("link to {}", paths[*target]),
                    NodeKind::Symlink { target } => {
                        format!("symlink {}", String::from_utf8_lossy(target))
                    }
                    other => format!("{other:?}"),
                };
                let xattrs = if cmp.xattrs {
                    format!("{:?}", n.xattrs)
                } else {
                    String::new()
                };
                // The root's mtime is the extraction folder's own.
                let mtime = if n.path.is_empty() { 0 } else { n.mtime };
                format!(
                    "{:?} {kind} mode={:o} {}:{} mtime={mtime} {xattrs}",
                    n.path, n.mode, n.uid, n.gid
                )
            })
            .collect()
    };
    let (e, a) = (describe(expected), describe(actual));
    if e != a {
        let missing: Vec<_> = e.iter().filter(|x| !a.contains(x)).collect();
        let extra: Vec<_> = a.iter().filter(|x| !e.contains(x)).collect();
        panic!(
            "trees differ:\nexpected but not found:\n{missing:#?}\nfound but not expected:\n{extra:#?}"
        );
    }
}

fn content_hash(path: &PathBuf) -> String {
    blake3::hash(&fs::read(path).unwrap()).to_hex()[..16].to_string()
}

/// The sha256 of a file, as `sha256sum` prints it.
pub(crate) fn sha256(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))[..64].to_string()
}
