//! Helpers shared by the tests: layer folders, snapshots of trees, mounts
//! and a cached Debian root.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use kiln_layers::{LayerStack, MergedView, Overlay};
use rustix::fs::{CWD, FileType, Mode, XattrFlags, makedev, mknodat};
use tempfile::TempDir;

/// Whether tests that need a Debian root (built from the archive once)
/// are skipped.
pub fn skip_network() -> bool {
    kiln_testkit::require::network_tests_skipped()
        || kiln_testkit::require::lacks_root("Debian roots and overlay mounts")
}

/// A temporary folder on a disk file system (overlayfs needs one that
/// supports its upper directories and trusted xattrs).
pub fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("kiln-layers-tmp-")
        .tempdir_in("/var/tmp")
        .expect("temporary folder")
}

/// One entry of a layer made by a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file with its content and mode.
    File(Vec<u8>, u32),
    /// A directory with its mode.
    Dir(u32),
    /// An opaque directory with its mode.
    Opaque(u32),
    /// A symbolic link to the target.
    Link(String),
    /// An overlayfs whiteout.
    Whiteout,
}

/// Makes a whiteout at `path`.
pub fn whiteout(path: &Path) {
    mknodat(
        CWD,
        path,
        FileType::CharacterDevice,
        Mode::empty(),
        makedev(0, 0),
    )
    .expect("mknod whiteout");
}

/// Marks the directory `path` opaque.
pub fn set_opaque(path: &Path) {
    rustix::fs::lsetxattr(path, "trusted.overlay.opaque", b"y", XattrFlags::empty())
        .expect("set opaque xattr");
}

/// Creates `entries` below `dir` (parents as 0755 directories). An entry
/// below one that is not a directory in the same layer is skipped; returns
/// the entries made.
pub fn make_layer(dir: &Path, entries: &[(String, Node)]) -> Vec<(String, Node)> {
    fs::create_dir_all(dir).unwrap();
    let mut sorted: Vec<&(String, Node)> = entries.iter().collect();
    sorted.sort_by_key(|(p, _)| p.matches('/').count());
    let mut made = Vec::new();
    'entries: for (path, node) in sorted {
        let mut parent = PathBuf::new();
        let components: Vec<&str> = path.split('/').collect();
        for c in &components[..components.len() - 1] {
            parent.push(c);
            let full = dir.join(&parent);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => continue 'entries,
                Err(_) => {
                    fs::create_dir(&full).unwrap();
                    fs::set_permissions(&full, fs::Permissions::from_mode(0o755)).unwrap();
                }
            }
        }
        let full = dir.join(path);
        if fs::symlink_metadata(&full).is_ok() {
            continue; // first one wins
        }
        match node {
            Node::File(content, bits) => {
                fs::write(&full, content).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(*bits)).unwrap();
            }
            Node::Dir(bits) | Node::Opaque(bits) => {
                fs::create_dir(&full).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(*bits)).unwrap();
                if matches!(node, Node::Opaque(_)) {
                    set_opaque(&full);
                }
            }
            Node::Link(target) => std::os::unix::fs::symlink(target, &full).unwrap(),
            Node::Whiteout => whiteout(&full),
        }
        made.push((path.clone(), node.clone()));
    }
    made
}

/// What a snapshot records of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Relative path.
    pub path: String,
    /// `d`, `f`, `l`, `c`, `?`.
    pub kind: char,
    /// Permission bits (not for symlinks).
    pub mode: u32,
    /// Size of files and symlinks.
    pub size: u64,
    /// Content of a file, target of a link.
    pub data: Vec<u8>,
}

fn kind_of(meta: &fs::Metadata) -> char {
    let t = meta.file_type();
    if t.is_dir() {
        'd'
    } else if t.is_file() {
        'f'
    } else if t.is_symlink() {
        'l'
    } else if std::os::unix::fs::FileTypeExt::is_char_device(&t) {
        'c'
    } else {
        '?'
    }
}

fn item(path: String, meta: &fs::Metadata, data: Vec<u8>) -> Item {
    let kind = kind_of(meta);
    Item {
        path,
        kind,
        mode: if kind == 'l' { 0 } else { meta.mode() & 0o7777 },
        size: if kind == 'd' { 0 } else { meta.size() },
        data,
    }
}

/// Every entry below `dir` (not `dir` itself), depth-first, each folder's
/// entries sorted by name.
pub fn snapshot_fs(dir: &Path) -> Vec<Item> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<Item>) {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            // overlayfs lists a whiteout of a directory that is not merged
            // (one only a single layer has) but finds nothing there: a
            // whiteout that hides nothing. Lookups decide.
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            let data = if meta.is_file() {
                fs::read(&path).unwrap()
            } else if meta.file_type().is_symlink() {
                fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            out.push(item(child.clone(), &meta, data));
            if meta.is_dir() {
                walk(&path, &child, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out
}

/// The same as [`snapshot_fs`] of a mount of `view`'s stack, read through
/// [`MergedView::walk`].
pub fn snapshot_view(view: &MergedView) -> Vec<Item> {
    let mut out = Vec::new();
    for entry in view.walk() {
        let entry = entry.expect("walk");
        if entry.path.is_empty() {
            continue;
        }
        let data = if entry.meta.is_file() {
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut view.open(&entry.path).unwrap(), &mut content).unwrap();
            content
        } else if entry.meta.file_type().is_symlink() {
            view.read_link(&entry.path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else {
            Vec::new()
        };
        out.push(item(entry.path.clone(), &entry.meta, data));
    }
    out
}

/// An overlay of a stack with a fresh upper directory, in a temporary
/// folder.
pub struct Mounted {
    /// The mount (first: fields drop in order, and the folder can only be
    /// removed once it is unmounted).
    pub overlay: Overlay,
    /// Holds `upper`, `work` and `merged`.
    pub dir: TempDir,
}

impl Mounted {
    /// Mounts `stack` with a fresh upper directory.
    pub fn new(stack: &LayerStack) -> Self {
        let dir = tempdir();
        for d in ["upper", "work", "merged"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        let overlay = Overlay::mount(
            stack,
            &dir.path().join("upper"),
            &dir.path().join("work"),
            &dir.path().join("merged"),
        )
        .expect("mount overlay");
        Self { overlay, dir }
    }

    /// The merged view (the mount point).
    pub fn merged(&self) -> PathBuf {
        self.dir.path().join("merged")
    }

    /// The upper directory: the new layer.
    pub fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }
}

/// Where the Debian roots of the provisioning tests are cached.
pub const ROOT_CACHE: &str = "/var/tmp/kiln-layers-test-root";

/// Builds one root at a time.
static BUILD: Mutex<()> = Mutex::new(());

/// A bookworm `minbase` root (`flavour` `minbase`), or one with systemd
/// (`systemd`), built once with mmdebstrap from the host's apt sources and
/// cached under [`ROOT_CACHE`]. Tests must not change it: they mount it as
/// a lower layer.
pub fn debian_root(flavour: &str) -> PathBuf {
    let _guard = BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = Path::new(ROOT_CACHE).join(flavour);
    if root.join("usr/bin/dpkg").is_file() {
        return root;
    }
    if Command::new("mmdebstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        let status = Command::new("apt-get")
            .args(["install", "-y", "-qq", "mmdebstrap"])
            .status()
            .expect("apt-get runs");
        assert!(status.success(), "failed to install mmdebstrap");
    }
    fs::create_dir_all(ROOT_CACHE).unwrap();
    let staging = Path::new(ROOT_CACHE).join(format!(".build-{}-{flavour}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let mut command = Command::new("mmdebstrap");
    command.args(["--quiet", "--variant=minbase", "--mode=root"]);
    if flavour == "systemd" {
        command.arg("--include=systemd");
    }
    command.arg("bookworm").arg(&staging);
    let output = command.output().expect("mmdebstrap runs");
    assert!(
        output.status.success(),
        "mmdebstrap failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Another process may have won the race; its root is as good.
    if fs::rename(&staging, &root).is_err() {
        fs::remove_dir_all(&staging).unwrap();
    }
    root
}
