//! Reads flists: their entries, blocks, routes and tags, and a file's
//! content from a directory store.

#![allow(
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "SQLite integers are i64: sizes, modes, device and inode numbers go through them with `as`, both ways, as rfs does"
)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use super::block::{BlockRef, fetch_block};
use crate::error::Error;

/// What an entry is, from its mode's file type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file (a hard link is one too).
    File,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A file type this crate does not know (the mode's `S_IFMT` bits).
    Unknown(u32),
}

impl EntryKind {
    fn of_mode(mode: u32) -> Self {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Self::Dir,
            libc::S_IFREG => Self::File,
            libc::S_IFLNK => Self::Symlink,
            libc::S_IFCHR => Self::CharDevice,
            libc::S_IFBLK => Self::BlockDevice,
            libc::S_IFIFO => Self::Fifo,
            libc::S_IFSOCK => Self::Socket,
            other => Self::Unknown(other),
        }
    }
}

/// One entry of an flist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its inode number (the root is 1).
    pub ino: u64,
    /// Its path relative to the root, `/`-separated, no leading `/`; the
    /// root is `""` (as in [`Tree`](crate::Tree)).
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits, with set-uid, set-gid and sticky (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes as recorded (a file's content length).
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Change time, seconds.
    pub ctime: i64,
    /// The device number of a device (`makedev(major, minor)`).
    pub rdev: u64,
    /// A symbolic link's target.
    pub target: Option<Vec<u8>>,
}

/// A route: the store that serves blocks whose id starts with a byte in
/// `start..=end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The first byte of the range.
    pub start: u8,
    /// The last byte of the range (inclusive).
    pub end: u8,
    /// The store's URL (`dir:///path`, `http://…`, `zdb://…`).
    pub url: String,
}

/// An open flist.
#[derive(Debug)]
pub struct Flist {
    conn: Connection,
    path: PathBuf,
}

/// The columns every inode query selects, in [`Flist::entry_of`]'s order.
const INODE_COLUMNS: &str = "inode.ino, inode.parent, inode.name, inode.size, inode.uid, \
     inode.gid, inode.mode, inode.rdev, inode.ctime, inode.mtime, extra.data \
     from inode left join extra on inode.ino = extra.ino";

impl Flist {
    /// Opens the flist at `path` read-only.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| Error::Database {
            action: "open",
            path: path.to_path_buf(),
            source,
        })?;
        let flist = Self {
            conn,
            path: path.to_path_buf(),
        };
        // Fail here, not at the first query, on a file that is no flist.
        flist
            .conn
            .query_row("select count(*) from inode", [], |_| Ok(()))
            .map_err(flist.db("read"))?;
        Ok(flist)
    }

    fn db(&self, action: &'static str) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |source| Error::Database {
            action,
            path: self.path.clone(),
            source,
        }
    }

    fn malformed(&self, reason: String) -> Error {
        Error::Flist {
            path: self.path.clone(),
            reason,
        }
    }

    /// Every entry, in [`Tree`](crate::Tree) order: the root first, then
    /// depth-first with each directory's entries sorted by name.
    pub fn entries(&self) -> Result<Vec<Entry>, Error> {
        let mut stmt = self
            .conn
            .prepare(&format!("select {INODE_COLUMNS}"))
            .map_err(self.db("read the inodes of"))?;
        let rows: Vec<(i64, Entry, String)> = stmt
            .query_map([], |row| {
                let (parent, name, entry) = Self::entry_of(row)?;
                Ok((parent, entry, name))
            })
            .map_err(self.db("read the inodes of"))?
            .collect::<Result<_, _>>()
            .map_err(self.db("read the inodes of"))?;
        let index: HashMap<u64, usize> = rows
            .iter()
            .enumerate()
            .map(|(i, (_, e, _))| (e.ino, i))
            .collect();
        // Paths from parent links; a root is an inode whose parent is 0.
        let mut paths: Vec<Option<String>> = vec![None; rows.len()];
        for start in 0..rows.len() {
            let mut chain = Vec::new();
            let mut at = start;
            let base = loop {
                if let Some(p) = &paths[at] {
                    break p.clone();
                }
                let (parent, entry, _) = &rows[at];
                if *parent == 0 {
                    paths[at] = Some(String::new());
                    break String::new();
                }
                chain.push(at);
                if chain.len() > rows.len() {
                    return Err(self.malformed(format!("inode {} is its own ancestor", entry.ino)));
                }
                at = *index.get(&(*parent as u64)).ok_or_else(|| {
                    self.malformed(format!(
                        "inode {} has parent {parent}, which does not exist",
                        entry.ino
                    ))
                })?;
            };
            let mut path = base;
            for &i in chain.iter().rev() {
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(&rows[i].2);
                paths[i] = Some(path.clone());
            }
        }
        let mut entries: Vec<Entry> = rows
            .into_iter()
            .zip(paths)
            .map(|((_, mut e, _), p)| {
                e.path = p.unwrap_or_default();
                e
            })
            .collect();
        entries.sort_by(|a, b| {
            Path::new(&a.path)
                .cmp(Path::new(&b.path))
                .then(a.ino.cmp(&b.ino))
        });
        Ok(entries)
    }

    /// The entry at `path` (relative to the root, `""` for the root),
    /// found by name from the root as rfs looks entries up.
    pub fn entry(&self, path: &str) -> Result<Entry, Error> {
        let mut entry = self
            .conn
            .query_row(
                &format!(
                    "select {INODE_COLUMNS} where inode.parent = 0 order by inode.ino limit 1"
                ),
                [],
                |row| Self::entry_of(row).map(|(_, _, e)| e),
            )
            .optional()
            .map_err(self.db("read the inodes of"))?
            .ok_or_else(|| self.malformed("it has no root inode".into()))?;
        let mut stmt = self
            .conn
            .prepare(&format!(
                "select {INODE_COLUMNS} where inode.parent = ? and inode.name = ?"
            ))
            .map_err(self.db("read the inodes of"))?;
        let mut so_far = String::new();
        for name in path.split('/').filter(|n| !n.is_empty()) {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(name);
            let parent = entry.ino as i64;
            entry = stmt
                .query_row(rusqlite::params![parent, name], |row| {
                    Self::entry_of(row).map(|(_, _, e)| e)
                })
                .optional()
                .map_err(self.db("read the inodes of"))?
                .ok_or_else(|| self.malformed(format!("`{so_far}` is not in it")))?;
        }
        entry.path = so_far;
        Ok(entry)
    }

    /// Reads one row of [`INODE_COLUMNS`]: the parent, the name and the
    /// entry (its `path` left empty).
    fn entry_of(row: &Row<'_>) -> rusqlite::Result<(i64, String, Entry)> {
        let mode: i64 = row.get(6)?;
        let mode = mode as u32;
        let target = match row.get_ref(10)? {
            ValueRef::Blob(b) => Some(b.to_vec()),
            ValueRef::Text(t) => Some(t.to_vec()),
            _ => None,
        };
        let name: String = row.get(2)?;
        Ok((
            row.get(1)?,
            name,
            Entry {
                ino: row.get::<_, i64>(0)? as u64,
                path: String::new(),
                kind: EntryKind::of_mode(mode),
                mode: mode & 0o7777,
                uid: row.get(4)?,
                gid: row.get(5)?,
                size: row.get::<_, i64>(3)? as u64,
                ctime: row.get(8)?,
                mtime: row.get(9)?,
                rdev: row.get::<_, i64>(7)? as u64,
                target,
            },
        ))
    }

    /// The blocks of inode `ino`, in file order.
    pub fn blocks(&self, ino: u64) -> Result<Vec<BlockRef>, Error> {
        let mut stmt = self
            .conn
            .prepare("select id, key from block where ino = ? order by rowid")
            .map_err(self.db("read the blocks of"))?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = stmt
            .query_map([ino as i64], |row| Ok((bytes(row, 0)?, bytes(row, 1)?)))
            .map_err(self.db("read the blocks of"))?
            .collect::<Result<_, _>>()
            .map_err(self.db("read the blocks of"))?;
        rows.into_iter()
            .map(|(id, key)| {
                let (Ok(id), Ok(key)) = (id.as_slice().try_into(), key.as_slice().try_into())
                else {
                    return Err(self.malformed(format!(
                        "a block of inode {ino} has an id or key that is not 32 bytes"
                    )));
                };
                Ok(BlockRef { id, key })
            })
            .collect()
    }

    /// Every block id the flist names, once each.
    pub fn block_ids(&self) -> Result<Vec<[u8; 32]>, Error> {
        let mut stmt = self
            .conn
            .prepare("select distinct id from block order by id")
            .map_err(self.db("read the blocks of"))?;
        let rows: Vec<Vec<u8>> = stmt
            .query_map([], |row| bytes(row, 0))
            .map_err(self.db("read the blocks of"))?
            .collect::<Result<_, _>>()
            .map_err(self.db("read the blocks of"))?;
        rows.into_iter()
            .map(|id| {
                id.as_slice()
                    .try_into()
                    .map_err(|_| self.malformed("a block id is not 32 bytes".to_owned()))
            })
            .collect()
    }

    /// The routes, in table order.
    pub fn routes(&self) -> Result<Vec<Route>, Error> {
        let mut stmt = self
            .conn
            .prepare("select start, end, url from route order by rowid")
            .map_err(self.db("read the routes of"))?;
        stmt.query_map([], |row| {
            Ok(Route {
                start: row.get(0)?,
                end: row.get(1)?,
                url: row.get(2)?,
            })
        })
        .map_err(self.db("read the routes of"))?
        .collect::<Result<_, _>>()
        .map_err(self.db("read the routes of"))
    }

    /// The tags, by key.
    pub fn tags(&self) -> Result<Vec<(String, String)>, Error> {
        let mut stmt = self
            .conn
            .prepare("select key, value from tag order by key")
            .map_err(self.db("read the tags of"))?;
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(self.db("read the tags of"))?
            .collect::<Result<_, _>>()
            .map_err(self.db("read the tags of"))
    }

    /// The folder of the first `dir://` route: where this machine finds
    /// the blocks, if they are in a local directory store.
    pub fn dir_store(&self) -> Result<Option<PathBuf>, Error> {
        Ok(self
            .routes()?
            .into_iter()
            .find_map(|r| r.url.strip_prefix("dir://").map(PathBuf::from)))
    }

    /// Writes the content of the regular file at `path` to `out`, block
    /// by block, fetched from the directory store at `store_dir` and
    /// verified; returns its length.
    pub fn copy_file(
        &self,
        path: &str,
        store_dir: &Path,
        out: &mut dyn Write,
    ) -> Result<u64, Error> {
        let entry = self.entry(path)?;
        if entry.kind != EntryKind::File {
            return Err(self.malformed(format!("`{path}` is not a regular file")));
        }
        let mut written = 0u64;
        for block in self.blocks(entry.ino)? {
            let plain = fetch_block(store_dir, &block)?;
            out.write_all(&plain)
                .map_err(|e| Error::io("write", "the output", e))?;
            written += plain.len() as u64;
        }
        if written != entry.size {
            return Err(self.malformed(format!(
                "the blocks of `{path}` hold {written} bytes, its size is {}",
                entry.size
            )));
        }
        Ok(written)
    }

    /// The content of the regular file at `path`; see
    /// [`Flist::copy_file`].
    pub fn read_file(&self, path: &str, store_dir: &Path) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.copy_file(path, store_dir, &mut out)?;
        Ok(out)
    }
}

/// A blob or text column as bytes.
fn bytes(row: &Row<'_>, i: usize) -> rusqlite::Result<Vec<u8>> {
    match row.get_ref(i)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b.to_vec()),
        other => Err(rusqlite::Error::InvalidColumnType(
            i,
            "id".into(),
            other.data_type(),
        )),
    }
}
