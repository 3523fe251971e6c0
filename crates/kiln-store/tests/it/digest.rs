//! The content digest: what it sees and what it does not.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_store::{NewLayer, Store, content_digest};
use proptest::prelude::*;
use rustix::fs::{AtFlags, CWD, FileType, Mode, Timestamps, XattrFlags};

/// Directories every generated tree has (parents before children).
const DIRS: [&str; 3] = ["d1", "d1/sub", "d2"];

#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>),
    Symlink(String),
    Whiteout,
    Fifo,
}

#[derive(Debug, Clone)]
struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
    xattr: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct Spec {
    dirs: Vec<Attrs>,
    entries: BTreeMap<String, (Node, Attrs)>,
    /// A hard link to the first regular file, at `d2/flink`.
    hard_link: bool,
}

fn attrs(dir: bool) -> impl Strategy<Value = Attrs> {
    let modes = if dir {
        prop::sample::select(vec![0o755, 0o700, 0o1777, 0o2755])
    } else {
        prop::sample::select(vec![0o644, 0o600, 0o755, 0o4755, 0o400])
    };
    (
        modes,
        0u32..3,
        0u32..3,
        prop::option::of(prop::collection::vec(any::<u8>(), 0..4)),
    )
        .prop_map(|(mode, uid, gid, xattr)| Attrs {
            mode,
            uid,
            gid,
            xattr,
        })
}

fn node() -> impl Strategy<Value = Node> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Node::File),
        1 => "[a-z/.]{1,12}".prop_map(Node::Symlink),
        1 => Just(Node::Whiteout),
        1 => Just(Node::Fifo),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let entry = (
        prop::sample::select(vec!["", "d1/", "d1/sub/", "d2/"]),
        "f[a-z]{0,4}",
        node(),
        attrs(false),
    );
    (
        prop::collection::vec(attrs(true), DIRS.len()),
        prop::collection::vec(entry, 1..10),
        prop::collection::vec(any::<u8>(), 1..50),
        any::<bool>(),
    )
        .prop_map(|(dirs, list, first, hard_link)| {
            let mut entries = BTreeMap::new();
            // At least one regular file with content.
            entries.insert("f0".to_owned(), (Node::File(first), plain()));
            for (dir, name, node, attrs) in list {
                entries.insert(format!("{dir}{name}"), (node, attrs));
            }
            Spec {
                dirs,
                entries,
                hard_link,
            }
        })
}

fn plain() -> Attrs {
    Attrs {
        mode: 0o644,
        uid: 0,
        gid: 0,
        xattr: None,
    }
}

/// Creates `spec` under `root` in the given entry order, with every mtime
/// set to `mtime`.
fn create(root: &Path, spec: &Spec, reverse: bool, mtime: i64) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in DIRS {
        std::fs::create_dir(root.join(dir)).unwrap();
    }
    let mut entries: Vec<_> = spec.entries.iter().collect();
    if reverse {
        entries.reverse();
    }
    for (rel, (node, attrs)) in entries {
        let path = root.join(rel);
        match node {
            Node::File(content) => std::fs::write(&path, content).unwrap(),
            Node::Symlink(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
            Node::Whiteout => mknod(&path, FileType::CharacterDevice),
            Node::Fifo => mknod(&path, FileType::Fifo),
        }
        apply(&path, attrs, matches!(node, Node::Symlink(_)));
    }
    if spec.hard_link {
        std::fs::hard_link(root.join("f0"), root.join("d2/flink")).unwrap();
    }
    // Directories last: their modes may forbid writing (not to root, but
    // to keep the order honest), and creating children bumps their mtimes.
    let mut dirs: Vec<_> = DIRS.iter().zip(&spec.dirs).collect();
    if reverse {
        dirs.reverse();
    }
    for (dir, attrs) in dirs {
        apply(&root.join(dir), attrs, false);
    }
    set_mtimes(root, mtime);
}

fn mknod(path: &Path, kind: FileType) {
    rustix::fs::mknodat(
        CWD,
        path,
        kind,
        Mode::from_raw_mode(0o644),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
}

fn apply(path: &Path, attrs: &Attrs, symlink: bool) {
    std::os::unix::fs::lchown(path, Some(attrs.uid), Some(attrs.gid)).unwrap();
    if !symlink {
        // After chown, which clears setuid bits.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(attrs.mode)).unwrap();
        if let Some(value) = &attrs.xattr {
            set_xattr(path, "trusted.kiln.test", value);
        }
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
}

fn set_mtimes(root: &Path, secs: i64) {
    let time = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() && !path.is_symlink() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
        rustix::fs::utimensat(CWD, &path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }
}

/// Ways to change a tree by one small thing.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    FlipByte,
    AppendByte,
    Mode,
    Setuid,
    Owner,
    Group,
    Xattr,
    XattrValue,
    Opaque,
    SymlinkTarget,
    Whiteout,
    WhiteoutToFile,
    Rename,
    Remove,
    HardLink,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop::sample::select(vec![
        Mutation::FlipByte,
        Mutation::AppendByte,
        Mutation::Mode,
        Mutation::Setuid,
        Mutation::Owner,
        Mutation::Group,
        Mutation::Xattr,
        Mutation::XattrValue,
        Mutation::Opaque,
        Mutation::SymlinkTarget,
        Mutation::Whiteout,
        Mutation::WhiteoutToFile,
        Mutation::Rename,
        Mutation::Remove,
        Mutation::HardLink,
    ])
}

/// Applies `m` to a tree created from `spec`.
fn mutate(root: &Path, spec: &Spec, m: Mutation) {
    let f0 = root.join("f0");
    match m {
        Mutation::FlipByte => {
            let mut content = std::fs::read(&f0).unwrap();
            content[0] ^= 1;
            std::fs::write(&f0, content).unwrap();
        }
        Mutation::AppendByte => {
            let mut content = std::fs::read(&f0).unwrap();
            content.push(0);
            std::fs::write(&f0, content).unwrap();
        }
        Mutation::Mode => {
            std::fs::set_permissions(&f0, std::fs::Permissions::from_mode(0o640)).unwrap();
        }
        Mutation::Setuid => {
            std::fs::set_permissions(&f0, std::fs::Permissions::from_mode(0o4644)).unwrap();
        }
        Mutation::Owner => std::os::unix::fs::lchown(&f0, Some(1000), None).unwrap(),
        Mutation::Group => std::os::unix::fs::lchown(&f0, None, Some(1000)).unwrap(),
        Mutation::Xattr => set_xattr(&f0, "security.capability", &CAP_NET_RAW),
        Mutation::XattrValue => {
            let value = spec.entries["f0"].1.xattr.clone().unwrap_or_default();
            let mut changed = value.clone();
            changed.push(b'x');
            set_xattr(&f0, "trusted.kiln.test", &changed);
        }
        Mutation::Opaque => set_xattr(&root.join("d1"), "trusted.overlay.opaque", b"y"),
        Mutation::SymlinkTarget => {
            let link = root.join("d1/zlink");
            match spec
                .entries
                .iter()
                .find(|(_, (n, _))| matches!(n, Node::Symlink(_)))
            {
                Some((rel, (Node::Symlink(target), _))) => {
                    let path = root.join(rel);
                    std::fs::remove_file(&path).unwrap();
                    std::os::unix::fs::symlink(format!("{target}x"), &path).unwrap();
                }
                _ => std::os::unix::fs::symlink("target", link).unwrap(),
            }
        }
        Mutation::Whiteout => mknod(&root.join("d2/zwhiteout"), FileType::CharacterDevice),
        Mutation::WhiteoutToFile => {
            match spec
                .entries
                .iter()
                .find(|(_, (n, _))| matches!(n, Node::Whiteout))
            {
                Some((rel, _)) => {
                    let path = root.join(rel);
                    std::fs::remove_file(&path).unwrap();
                    std::fs::write(&path, b"").unwrap();
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                        .unwrap();
                }
                None => mknod(&root.join("d1/zwhiteout"), FileType::CharacterDevice),
            }
        }
        Mutation::Rename => std::fs::rename(&f0, root.join("f0renamed")).unwrap(),
        Mutation::Remove => std::fs::remove_file(&f0).unwrap(),
        Mutation::HardLink => {
            if spec.hard_link {
                // The same name as a copy instead of a link.
                let link = root.join("d2/flink");
                std::fs::remove_file(&link).unwrap();
                std::fs::copy(&f0, &link).unwrap();
            } else {
                std::fs::hard_link(&f0, root.join("d2/flink")).unwrap();
            }
        }
    }
}

/// A valid `security.capability` (v2) value: `cap_net_raw=ep`.
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn independent_of_creation_order_mtimes_and_location(spec in spec()) {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("elsewhere/deeper/b");
        create(&a, &spec, false, 1_000);
        create(&b, &spec, true, 1_700_000_000);
        prop_assert_eq!(content_digest(&a).unwrap(), content_digest(&b).unwrap());
    }

    #[test]
    fn changes_with_any_change(spec in spec(), m in mutation()) {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        create(&a, &spec, false, 1_000);
        create(&b, &spec, false, 1_000);
        mutate(&b, &spec, m);
        prop_assert_ne!(content_digest(&a).unwrap(), content_digest(&b).unwrap(), "{:?}", m);
    }
}

#[test]
fn same_tree_in_two_stores_has_one_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let one = Store::open(&tmp.path().join("one")).unwrap();
    let two = Store::open(&tmp.path().join("x/y/two")).unwrap();
    let input = crate::key(1);
    let a = crate::build(&one, input, "base", None, &[("etc/os-release", 40)]);
    let b = crate::build(&two, input, "base", None, &[("etc/os-release", 40)]);
    assert_eq!(a.content, b.content);
    assert_eq!(a.meta.content_digest, b.meta.content_digest);
    assert_eq!(content_digest(&a.tree).unwrap(), a.content);
}

#[test]
fn many_files_hash_the_same_on_several_threads() {
    // Above the threshold for parallel hashing; compared with a tree built
    // in the other order.
    let tmp = tempfile::tempdir().unwrap();
    let spec_files: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("dir{}/file{i}", i % 7), crate::pattern(i * 13)))
        .collect();
    for (root, reverse) in [("a", false), ("b", true)] {
        let mut files = spec_files.clone();
        if reverse {
            files.reverse();
        }
        for (rel, content) in files {
            let path = tmp.path().join(root).join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
    }
    let a = content_digest(&tmp.path().join("a")).unwrap();
    assert_eq!(a, content_digest(&tmp.path().join("b")).unwrap());
    std::fs::write(tmp.path().join("b/dir3/file150"), b"changed").unwrap();
    assert_ne!(a, content_digest(&tmp.path().join("b")).unwrap());
}

#[test]
fn root_must_be_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = content_digest(&file).unwrap_err();
    assert!(
        matches!(err, kiln_store::Error::NotADirectory { .. }),
        "{err}"
    );
}

#[test]
fn commit_records_the_digest_of_the_staged_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let input = crate::key(2);
    let lock = store.lock(&input).unwrap();
    let stage = store.stage(&input).unwrap();
    mknod(&stage.tree().join("deleted"), FileType::CharacterDevice);
    std::fs::create_dir(stage.tree().join("opaque")).unwrap();
    set_xattr(&stage.tree().join("opaque"), "trusted.overlay.opaque", b"y");
    let before = content_digest(stage.tree()).unwrap();
    let layer = store
        .commit(
            &lock,
            stage,
            NewLayer {
                variant: "v".into(),
                parent: None,
                epoch: None,
            },
        )
        .unwrap();
    assert_eq!(layer.content, before);
    assert_eq!(layer.meta.files, 2);
}
