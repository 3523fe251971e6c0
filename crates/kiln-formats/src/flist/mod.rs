//! `flist`: `ThreeFold`'s flists as `rfs pack` (threefoldtech/rfs 0.2.0, the
//! Rust rewrite) writes them, and a reader for them.
//!
//! An flist is a `SQLite` database that describes a file system — every
//! entry's name, parent, type and mode, owner, size, times, a link's
//! target — and names each regular file's content as a list of blocks;
//! the blocks themselves live in a *store* that the flist's `route`
//! table points at. `rfs mount` serves the tree with FUSE and fetches
//! blocks as they are read.
//!
//! The writer ([`Spec::Flist`](crate::Spec::Flist)) describes the merged
//! root of a variant: the database is created with rfs's own schema
//! ([`SCHEMA`]), the root is inode 1 (named `/`, parent 0) and the other
//! entries follow in [`Tree`](crate::Tree) order, so inode numbers and
//! rows are fixed by the tree. Files are cut into [`BLOCK_SIZE`] blocks,
//! encoded as rfs encodes them (see [`encode_block`]) on `Input::threads`
//! threads and put into a directory store laid out as rfs's `dir` store
//! lays it out ([`block_path`]). A block already in the store is not
//! written again, so images that share a base share its blocks.
//!
//! What rfs stores, and how this writer fills it from a tree:
//!
//! | column | value |
//! | --- | --- |
//! | `inode.mode` | `st_mode`: file type and permission bits |
//! | `inode.size` | a file's size, a link target's length, 4096 for a directory (what ext4 reports and rfs copies), 0 otherwise |
//! | `inode.rdev` | a device's `makedev(major, minor)`, else 0 |
//! | `inode.mtime`, `inode.ctime` | the node's mtime, clamped to the epoch (trees keep no ctime) |
//! | `extra.data` | a symbolic link's target (a blob) |
//! | `block` | `(ino, id, key)` per block, 32-byte blobs, in file order |
//! | `route` | `(0, 255, store URL)` |
//! | `tag` | [`FlistOptions::tags`]; `rfs pack` writes none |
//!
//! A hard link is a regular file of its own with the same blocks, as
//! `rfs pack` records it. Extended attributes are not kept: the format
//! has no place for them.
//!
//! The same tree, options and epoch give the same bytes: rows are
//! inserted in one fixed order in one transaction, the page size is
//! fixed, the journal is off (no WAL) and nothing records the time of
//! writing. The bytes depend on the bundled `SQLite`, whose version is part
//! of [`FlistOptions::identity`].
//!
//! The reader ([`Flist`]) lists entries and reads files back from a
//! directory store, checking every block against its id and key.
//! [`gc_store`] removes the blocks of a store that no kept flist names;
//! writers and it coordinate through the store's [`LOCK_FILE`].
//!
//! Matched against rfs's sources (crate version 0.2.0): `schema/schema.sql`
//! (the `block (ino, id, key)` form), `fungi/meta.rs` (column types and
//! bindings, root inode, `Writer::new`), `pack.rs` (512 KiB blocks, one
//! inode per name, routes before inodes, no tags), `store/bs.rs` (block
//! encoding), `store/dir.rs` and `store/http.rs` (the sharded layout, with
//! the flat one as fallback), `store/mod.rs` and `store/router.rs`
//! (inclusive first-byte ranges, `0x00..=0xff` by default).
//!
//! ```no_run
//! use kiln_formats::flist::{EntryKind, Flist, FlistOptions};
//! use kiln_formats::{Input, Spec, write_artifact};
//! use kiln_layers::LayerStack;
//!
//! let stack = LayerStack::new(vec!["store/layers/base/tree".into()]);
//! let input = Input { stack: &stack, layer_ids: &[], epoch: 1_700_000_000, threads: 2, cache_dir: None, seed: b"key", cancel: None };
//! let options = FlistOptions::new("/var/lib/kiln/flist-store");
//! write_artifact(&Spec::Flist(options), &input, "out/base.fl".as_ref())?;
//!
//! let flist = Flist::open("out/base.fl".as_ref())?;
//! for entry in flist.entries()? {
//!     if entry.kind == EntryKind::File {
//!         let content = flist.read_file(&entry.path, "/var/lib/kiln/flist-store".as_ref())?;
//!         assert_eq!(content.len() as u64, entry.size);
//!     }
//! }
//! # Ok::<(), kiln_formats::Error>(())
//! ```

mod block;
mod gc;
mod read;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use block::{BLOCK_SIZE, BlockRef, block_path, decode_block, encode_block, fetch_block};
pub use gc::{GcReport, LOCK_FILE, gc_store};
pub use read::{Entry, EntryKind, Flist, Route};
pub(crate) use write::FlistWriter;

/// rfs's flist schema (`schema/schema.sql`), executed as it is when an
/// flist is created.
pub const SCHEMA: &str = include_str!("schema.sql");

/// Options of an flist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlistOptions {
    /// The directory store the blocks are written to, shared by every
    /// flist written there (created if missing).
    pub store_dir: PathBuf,
    /// The store URL recorded in the flist's route table, where readers
    /// fetch blocks: `dir:///var/lib/kiln/flist-store`, or
    /// `http://hub.example/store` when `store_dir` is served over HTTP.
    /// `None`: `dir://` and the absolute path of `store_dir`. Written as
    /// given: a URL with a password keeps it.
    pub store_url: Option<String>,
    /// Flist-wide tags (`description`, `author`, …), written in key
    /// order.
    pub tags: BTreeMap<String, String>,
}

impl FlistOptions {
    /// Blocks in `store_dir`, the route pointing at it, no tags.
    #[must_use]
    pub fn new(store_dir: impl Into<PathBuf>) -> Self {
        Self {
            store_dir: store_dir.into(),
            store_url: None,
            tags: BTreeMap::new(),
        }
    }

    /// The store URL the route table records.
    #[must_use]
    pub fn store_url(&self) -> String {
        match &self.store_url {
            Some(url) => url.clone(),
            None => format!("dir://{}", absolute(&self.store_dir).display()),
        }
    }

    /// A stable description of the options and the writer's version; it
    /// names the store, so an flist reused from a cache has its blocks
    /// in the store this build writes to.
    pub(crate) fn identity(&self) -> String {
        format!(
            "v1 store={} url={} tags={:?} sqlite={}",
            absolute(&self.store_dir).display(),
            self.store_url(),
            self.tags,
            rusqlite::version(),
        )
    }
}

/// `path` made absolute against the current directory (not resolving
/// links); `path` itself if that fails.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
