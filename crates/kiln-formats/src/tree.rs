//! The tree a writer writes: every entry of a root (or of one layer) with
//! the metadata formats store, in one deterministic order.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use kiln_layers::{LayerStack, MergedView};

use crate::error::Error;

/// The xattr overlayfs reads to treat a directory as opaque. Layer trees
/// carry it under this name whatever name the layer stored it under.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A regular file, read from `source` on the host.
    File {
        /// Its size in bytes.
        size: u64,
        /// The file in its layer.
        source: PathBuf,
    },
    /// Another name of the regular file at `target` (an index into
    /// [`Tree::nodes`], always an earlier [`NodeKind::File`]).
    HardLink {
        /// The first name of the file.
        target: usize,
    },
    /// A symbolic link.
    Symlink {
        /// Its target, as written.
        target: Vec<u8>,
    },
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// An overlayfs whiteout (a character device 0:0): the path is deleted
    /// from the layers below. Only in layer trees.
    Whiteout,
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its path relative to the root, `/`-separated, no leading `/`; the
    /// root is `""`.
    pub path: String,
    /// What it is.
    pub kind: NodeKind,
    /// Permission bits, with set-uid, set-gid and sticky (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time in seconds, clamped to the build's epoch.
    pub mtime: i64,
    /// Extended attributes (capabilities, ACLs, the opaque mark of a layer
    /// tree), sorted by name. overlayfs's own bookkeeping is left out.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Node {
    /// The last component of the path (`""` for the root).
    #[must_use]
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    /// The path of the directory holding it (`""` for a top-level entry).
    #[must_use]
    pub fn parent_path(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(p, _)| p)
    }

    /// The file type and permission bits as `st_mode`.
    #[must_use]
    pub fn st_mode(&self) -> u32 {
        let kind = match self.kind {
            NodeKind::Dir => libc::S_IFDIR,
            NodeKind::File { .. } | NodeKind::HardLink { .. } => libc::S_IFREG,
            NodeKind::Symlink { .. } => libc::S_IFLNK,
            NodeKind::CharDevice { .. } | NodeKind::Whiteout => libc::S_IFCHR,
            NodeKind::BlockDevice { .. } => libc::S_IFBLK,
            NodeKind::Fifo => libc::S_IFIFO,
            NodeKind::Socket => libc::S_IFSOCK,
        };
        kind | self.mode
    }

    /// Whether this directory is marked opaque (layer trees only).
    #[must_use]
    pub fn is_opaque(&self) -> bool {
        self.xattrs
            .iter()
            .any(|(k, v)| k == OPAQUE_XATTR && v.as_slice() == b"y")
    }
}

/// Opens a layer's regular file for reading, never following a link.
pub fn open_source(source: &Path) -> Result<File, Error> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(source)
        .map_err(|e| Error::io("open", source, e))
}

/// Every entry of a root or a layer, the root first, then depth-first with
/// each directory's entries sorted by name (bytes), a directory right
/// before its content: the order of [`Path`]'s `Ord`. Writers that sort
/// differently (squashfs, cpio) say so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// The entries.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The merged root of `stack`, as overlayfs shows it, read without
    /// mounting; mtimes later than `epoch` become `epoch`.
    pub fn merged(stack: &LayerStack, epoch: i64) -> Result<Self, Error> {
        let view = MergedView::new(stack);
        let mut nodes = Vec::new();
        let mut links = HashMap::new();
        for entry in view.walk() {
            let entry = entry?;
            let key = (entry.layer, entry.meta.dev(), entry.meta.ino());
            let node = node_of(
                entry.path,
                &entry.source,
                &entry.meta,
                epoch,
                false,
                &mut links,
                key,
                nodes.len(),
            )?;
            nodes.push(node);
        }
        Ok(Self { nodes })
    }

    /// The top layer of `stack` alone: what the variant changed over its
    /// parent, with whiteouts for deletions and the opaque mark
    /// ([`OPAQUE_XATTR`]) on directories that replace the parent's.
    pub fn layer(stack: &LayerStack, epoch: i64) -> Result<Self, Error> {
        let Some(top) = stack.layers.last() else {
            return Ok(Self::default());
        };
        let mut nodes = Vec::new();
        let mut links = HashMap::new();
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let source = if rel.is_empty() {
                top.clone()
            } else {
                top.join(&rel)
            };
            let meta = fs::symlink_metadata(&source).map_err(|e| Error::io("read", &source, e))?;
            let key = (0, meta.dev(), meta.ino());
            let node = node_of(
                rel.clone(),
                &source,
                &meta,
                epoch,
                true,
                &mut links,
                key,
                nodes.len(),
            )?;
            nodes.push(node);
            if meta.is_dir() {
                let mut names = Vec::new();
                for e in fs::read_dir(&source).map_err(|e| Error::io("read", &source, e))? {
                    let e = e.map_err(|e| Error::io("read", &source, e))?;
                    let name = e
                        .file_name()
                        .into_string()
                        .map_err(|n| Error::Unsupported {
                            format: "a tree",
                            path: source.join(n).display().to_string(),
                            reason: "the file name is not UTF-8".into(),
                        })?;
                    names.push(name);
                }
                names.sort_unstable();
                for name in names.into_iter().rev() {
                    pending.push(if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    });
                }
            }
        }
        Ok(Self { nodes })
    }

    /// For each node, the indices of its children (empty for all but
    /// directories), in tree order.
    #[must_use]
    pub fn children(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        let mut dirs: Vec<usize> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            let parent = node.parent_path();
            while let Some(&d) = dirs.last() {
                if self.nodes[d].path == parent {
                    break;
                }
                dirs.pop();
            }
            let p = dirs.last().copied().unwrap_or(0);
            out[p].push(i);
            if matches!(node.kind, NodeKind::Dir) {
                dirs.push(i);
            }
        }
        out
    }

    /// This layer tree with every opaque directory turned into explicit
    /// whiteouts for the names `lower` (the parent's merged root) has there
    /// and the layer does not, and the opaque mark dropped: the form for
    /// formats without xattrs (cpio), unpacked into an overlayfs upper
    /// directory.
    #[must_use]
    pub fn with_explicit_whiteouts(&self, lower: &Tree) -> Tree {
        let lower_children = lower.children();
        let lower_index: HashMap<&str, usize> = lower
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.path.as_str(), i))
            .collect();
        let own: std::collections::HashSet<&str> =
            self.nodes.iter().map(|n| n.path.as_str()).collect();
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let mut node = node.clone();
            if node.is_opaque() {
                node.xattrs.retain(|(k, _)| k != OPAQUE_XATTR);
                if let Some(&l) = lower_index.get(node.path.as_str()) {
                    for &c in &lower_children[l] {
                        let name = lower.nodes[c].path.as_str();
                        if !own.contains(name) {
                            nodes.push(Node {
                                path: name.to_owned(),
                                kind: NodeKind::Whiteout,
                                mode: 0,
                                uid: 0,
                                gid: 0,
                                mtime: node.mtime,
                                xattrs: Vec::new(),
                            });
                        }
                    }
                }
            }
            nodes.push(node);
        }
        // Hard links point at indices: sort with them carried along.
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        order.sort_by(|&a, &b| Path::new(&nodes[a].path).cmp(Path::new(&nodes[b].path)));
        let mut new_index = vec![0; nodes.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new;
        }
        let mut sorted: Vec<Node> = order.iter().map(|&i| nodes[i].clone()).collect();
        for node in &mut sorted {
            if let NodeKind::HardLink { target } = &mut node.kind {
                *target = new_index[*target];
            }
        }
        // The first name of a file must come first: swap if sorting moved
        // a link before its target.
        fix_link_order(&mut sorted);
        Tree { nodes: sorted }
    }

    /// How many names each regular file has (index: the node of its first
    /// name; other nodes have 1).
    #[must_use]
    pub fn link_counts(&self) -> Vec<u32> {
        let mut counts = vec![1u32; self.nodes.len()];
        for node in &self.nodes {
            if let NodeKind::HardLink { target } = node.kind {
                counts[target] += 1;
            }
        }
        counts
    }

    /// The sum of the sizes of the regular files (each counted once).
    #[must_use]
    pub fn content_size(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match n.kind {
                NodeKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

/// Makes every hard link point at a file that comes before it.
fn fix_link_order(nodes: &mut [Node]) {
    for i in 0..nodes.len() {
        if let NodeKind::HardLink { target } = nodes[i].kind
            && target > i
        {
            // `i` becomes the file, `target` and every other link to it
            // point at `i`.
            let file_kind = nodes[target].kind.clone();
            nodes[i].kind = file_kind;
            for node in nodes.iter_mut() {
                if let NodeKind::HardLink { target: t } = &mut node.kind
                    && *t == target
                {
                    *t = i;
                }
            }
            nodes[target].kind = NodeKind::HardLink { target: i };
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn node_of(
    path: String,
    source: &Path,
    meta: &Metadata,
    epoch: i64,
    layer: bool,
    links: &mut HashMap<(usize, u64, u64), usize>,
    key: (usize, u64, u64),
    index: usize,
) -> Result<Node, Error> {
    let ft = meta.file_type();
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_file() {
        if meta.nlink() > 1 {
            if let Some(&target) = links.get(&key) {
                NodeKind::HardLink { target }
            } else {
                links.insert(key, index);
                NodeKind::File {
                    size: meta.len(),
                    source: source.to_path_buf(),
                }
            }
        } else {
            NodeKind::File {
                size: meta.len(),
                source: source.to_path_buf(),
            }
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(source).map_err(|e| Error::io("read", source, e))?;
        NodeKind::Symlink {
            target: target.as_os_str().as_bytes().to_vec(),
        }
    } else if ft.is_char_device() {
        if layer && rdev == 0 {
            NodeKind::Whiteout
        } else {
            NodeKind::CharDevice { major, minor }
        }
    } else if ft.is_block_device() {
        NodeKind::BlockDevice { major, minor }
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else {
        NodeKind::Socket
    };
    let xattrs = read_xattrs(source, layer)?;
    Ok(Node {
        path,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime().min(epoch),
        xattrs,
    })
}

/// The xattrs of `path`, sorted, without overlayfs's (a layer tree keeps
/// the opaque mark, under [`OPAQUE_XATTR`]).
fn read_xattrs(path: &Path, layer: bool) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let io_err = |e: rustix::io::Errno| Error::io("read the xattrs of", path, e.into());
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(len) => break len,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(io_err(e)),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let overlay = name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.");
        if overlay && !(layer && (name == OPAQUE_XATTR || name == "user.overlay.opaque")) {
            continue;
        }
        let mut value = vec![0u8; 256];
        let n = loop {
            match rustix::fs::lgetxattr(path, OsStr::new(&name), &mut value[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(rustix::io::Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(io_err(e)),
            }
        };
        if n == usize::MAX {
            continue;
        }
        value.truncate(n);
        if overlay {
            if value == b"y" {
                out.push((OPAQUE_XATTR.to_owned(), value));
            }
        } else {
            out.push((name, value));
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}
