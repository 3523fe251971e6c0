//! `flist`: the database read back with the `sqlite3` CLI and SQL, every
//! block decoded here with aes-gcm, snap and blake2 (not the crate's
//! reader) and through the reader, the store's sharing and
//! reproducibility.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use kiln_formats::flist::{BLOCK_SIZE, EntryKind, Flist, FlistOptions, SCHEMA};
use kiln_formats::{Input, NodeKind, Spec, Tree, write_artifact};
use kiln_layers::LayerStack;

use super::{EPOCH, fixture_stack, have, run, sha256};

fn write(stack: &LayerStack, options: &FlistOptions, dest: &Path, threads: usize) {
    let input = Input {
        stack,
        epoch: EPOCH,
        threads,
        cache_dir: None,
        seed: b"flist",
        cancel: None,
        layer_ids: &[],
    };
    write_artifact(&Spec::Flist(options.clone()), &input, dest).unwrap();
}

fn blake2b256(bytes: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(bytes).into()
}

/// The inode number of tree node `index`: the writer numbers them in
/// tree order from 1.
fn ino_of_node(index: usize) -> i64 {
    i64::try_from(index).unwrap() + 1
}

/// Decodes a block from the store as rfs's `BlockStore::get` does, with
/// the checks a reader should make: the file hashes to the id, the
/// plain bytes to the key.
fn decode(store: &Path, id: &[u8], key: &[u8]) -> Vec<u8> {
    let name = hex::encode(id);
    let path = store.join(&name[..2]).join(&name);
    let sealed = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(blake2b256(&sealed), id, "{name}: id");
    let cipher = Aes256Gcm::new_from_slice(key).unwrap();
    let compressed = cipher
        .decrypt(Nonce::from_slice(&key[..12]), sealed.as_slice())
        .unwrap();
    let plain = snap::raw::Decoder::new()
        .decompress_vec(&compressed)
        .unwrap();
    assert_eq!(blake2b256(&plain), key, "{name}: key");
    plain
}

/// The block files of a store (not temporary files, which must not be
/// left behind).
fn block_files(store: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for shard in fs::read_dir(store).unwrap() {
        let shard = shard.unwrap().path();
        // The store's lock file, or a file of someone else's.
        if !shard.is_dir() {
            continue;
        }
        for file in fs::read_dir(&shard).unwrap() {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_str().unwrap().to_owned();
            assert!(!name.starts_with('.'), "left behind: {}", file.display());
            assert_eq!(name.len(), 64, "{}", file.display());
            assert_eq!(
                shard.file_name().unwrap().to_str().unwrap(),
                &name[..2],
                "{}",
                file.display()
            );
            out.insert(file);
        }
    }
    out
}

fn db(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// `(id, key)` of each block of `ino`, in file order.
fn blocks_of(conn: &rusqlite::Connection, ino: i64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut stmt = conn
        .prepare("select id, key from block where ino = ? order by rowid")
        .unwrap();
    stmt.query_map([ino], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The inode row rfs would record for each node, as text:
/// `ino|parent|name|size|uid|gid|mode|rdev|ctime|mtime|target hex`.
fn expected_rows(tree: &Tree) -> Vec<String> {
    let mut ino_of: HashMap<&str, usize> = HashMap::new();
    let mut rows = Vec::new();
    for (i, n) in tree.nodes.iter().enumerate() {
        let ino = i + 1;
        ino_of.insert(&n.path, ino);
        let (parent, name) = if n.path.is_empty() {
            (0, "/")
        } else {
            (ino_of[n.parent_path()], n.name())
        };
        let (size, rdev, target) = match &n.kind {
            NodeKind::Dir => (4096, 0, String::new()),
            NodeKind::File { size, .. } => (*size, 0, String::new()),
            NodeKind::HardLink { target } => match &tree.nodes[*target].kind {
                NodeKind::File { size, .. } => (*size, 0, String::new()),
                other => panic!("{other:?}"),
            },
            NodeKind::Symlink { target } => (target.len() as u64, 0, hex::encode(target)),
            NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
                (0, libc::makedev(*major, *minor), String::new())
            }
            _ => (0, 0, String::new()),
        };
        rows.push(format!(
            "{ino}|{parent}|{name}|{size}|{}|{}|{}|{rdev}|{}|{}|{target}",
            n.uid,
            n.gid,
            n.st_mode(),
            n.mtime,
            n.mtime
        ));
    }
    rows
}

/// The inode rows as the database holds them, in the same text form.
fn actual_rows(conn: &rusqlite::Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare(
            "select inode.ino, parent, name, size, uid, gid, mode, rdev, ctime, mtime,
                    coalesce(hex(extra.data), '')
             from inode left join extra on inode.ino = extra.ino order by inode.ino",
        )
        .unwrap();
    stmt.query_map([], |r| {
        let mut cols = Vec::new();
        for i in 0..10 {
            cols.push(
                r.get::<_, i64>(i)
                    .map(|v| v.to_string())
                    .or_else(|_| r.get(i))?,
            );
        }
        cols.push(r.get::<_, String>(10)?.to_lowercase());
        Ok(cols.join("|"))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn every_entry_is_stored_as_rfs_stores_it() {
    let (dir, stack) = fixture_stack();
    let store = dir.path().join("store");
    let dest = dir.path().join("root.fl");
    write(&stack, &FlistOptions::new(&store), &dest, 2);
    let tree = Tree::merged(&stack, EPOCH).unwrap();
    let conn = db(&dest);

    // Every type of SQLite value as rfs binds them: names are text, link
    // targets, ids and keys blobs, the rest integers.
    let types = |sql: &str| -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        types(
            "select distinct typeof(ino) || typeof(parent) || typeof(name) || typeof(size) \
             || typeof(uid) || typeof(gid) || typeof(mode) || typeof(rdev) || typeof(ctime) \
             || typeof(mtime) from inode"
        ),
        ["integerintegertextintegerintegerintegerintegerintegerintegerinteger"]
    );
    assert_eq!(types("select distinct typeof(data) from extra"), ["blob"]);
    assert_eq!(
        types("select distinct typeof(id) || length(id) || typeof(key) || length(key) from block"),
        ["blob32blob32"]
    );

    assert_eq!(actual_rows(&conn), expected_rows(&tree));
    let url = format!("dir://{}", store.display());
    let routes: Vec<(i64, i64, String)> = conn
        .prepare("select start, end, url from route")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(routes, [(0, 255, url)]);
    let tags: i64 = conn
        .query_row("select count(*) from tag", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tags, 0, "rfs pack writes no tags");

    // Every file's content, decoded here, block by block; hard links
    // are files of their own with the same blocks.
    let mut used = BTreeSet::new();
    for (i, n) in tree.nodes.iter().enumerate() {
        let source = match &n.kind {
            NodeKind::File { source, .. } => source,
            NodeKind::HardLink { target } => match &tree.nodes[*target].kind {
                NodeKind::File { source, .. } => source,
                _ => unreachable!(),
            },
            _ => {
                assert!(blocks_of(&conn, ino_of_node(i)).is_empty(), "{}", n.path);
                continue;
            }
        };
        let expected = fs::read(source).unwrap();
        let blocks = blocks_of(&conn, ino_of_node(i));
        assert_eq!(
            blocks.len(),
            expected.len().div_ceil(BLOCK_SIZE),
            "{}",
            n.path
        );
        let mut content = Vec::new();
        for (id, key) in &blocks {
            let plain = decode(&store, id, key);
            assert!(plain.len() <= BLOCK_SIZE);
            content.extend_from_slice(&plain);
            used.insert(store.join(&hex::encode(id)[..2]).join(hex::encode(id)));
        }
        assert_eq!(
            blake3::hash(&content),
            blake3::hash(&expected),
            "{}",
            n.path
        );
    }
    // The store holds exactly the blocks the flist names.
    assert_eq!(block_files(&store), used);
    let tool = tree
        .nodes
        .iter()
        .position(|n| n.path == "usr/bin/tool")
        .unwrap();
    let link = tree
        .nodes
        .iter()
        .position(|n| n.path == "usr/bin/tool-link")
        .unwrap();
    assert_eq!(
        blocks_of(&conn, ino_of_node(tool)),
        blocks_of(&conn, ino_of_node(link))
    );
}

#[test]
fn the_schema_is_rfs_schema() {
    if !have("sqlite3") {
        return;
    }
    let (dir, stack) = fixture_stack();
    let dest = dir.path().join("root.fl");
    write(
        &stack,
        &FlistOptions::new(dir.path().join("store")),
        &dest,
        1,
    );
    let reference = dir.path().join("reference.db");
    let mut child = Command::new("sqlite3")
        .arg(&reference)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), SCHEMA.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let schema = |db: &Path| -> Vec<String> {
        run(Command::new("sqlite3").arg(db).arg(".schema"))
            .split(";\n")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (ours, theirs) = (schema(&dest), schema(&reference));
    assert_eq!(ours, theirs);
    // rfs's tables, columns and indexes, by name.
    for table in [
        "CREATE TABLE inode (\n    ino INTEGER PRIMARY KEY AUTOINCREMENT,",
        "CREATE TABLE extra (\n    ino INTEGER PRIMARY KEY,\n    data VARCHAR(4096)\n)",
        "CREATE TABLE block (\n    ino INTEGER,\n    id VARCHAR(32),\n    key VARCHAR(32)\n)",
        "CREATE TABLE tag (\n    key VARCHAR(10) PRIMARY KEY,\n    value VARCHAR(255)\n)",
        "CREATE INDEX parents ON inode (parent)",
        "CREATE INDEX block_ino ON block (ino)",
        "CREATE TABLE route (\n    start integer, -- one byte hash prefix\n    end integer, -- one byte hash prefix\n    url VARCHAR(2048)\n)",
    ] {
        assert!(
            ours.iter().any(|s| s.starts_with(table)),
            "{table:?} not in {ours:#?}"
        );
    }
    assert_eq!(
        run(Command::new("sqlite3")
            .arg(&dest)
            .arg("PRAGMA integrity_check; PRAGMA journal_mode;")),
        "ok\ndelete\n"
    );
    let count = run(Command::new("sqlite3")
        .arg(&dest)
        .arg("select count(*) from inode"));
    let tree = Tree::merged(&stack, EPOCH).unwrap();
    assert_eq!(count.trim(), tree.nodes.len().to_string());
}

#[test]
fn the_reader_lists_entries_and_reads_files() {
    let (dir, stack) = fixture_stack();
    let store = dir.path().join("store");
    let dest = dir.path().join("root.fl");
    let mut options = FlistOptions::new(&store);
    options.store_url = Some("http://hub.example/store".into());
    options.tags.insert("description".into(), "a test".into());
    write(&stack, &options, &dest, 3);
    let tree = Tree::merged(&stack, EPOCH).unwrap();
    let flist = Flist::open(&dest).unwrap();
    assert_eq!(
        flist.tags().unwrap(),
        [("description".into(), "a test".into())]
    );
    let routes = flist.routes().unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(
        (routes[0].start, routes[0].end, routes[0].url.as_str()),
        (0, 255, "http://hub.example/store")
    );
    assert_eq!(flist.dir_store().unwrap(), None);

    let entries = flist.entries().unwrap();
    assert_eq!(entries.len(), tree.nodes.len());
    for (e, n) in entries.iter().zip(&tree.nodes) {
        assert_eq!(e.path, n.path);
        let kind = match n.kind {
            NodeKind::Dir => EntryKind::Dir,
            NodeKind::File { .. } | NodeKind::HardLink { .. } => EntryKind::File,
            NodeKind::Symlink { .. } => EntryKind::Symlink,
            NodeKind::CharDevice { .. } | NodeKind::Whiteout => EntryKind::CharDevice,
            NodeKind::BlockDevice { .. } => EntryKind::BlockDevice,
            NodeKind::Fifo => EntryKind::Fifo,
            NodeKind::Socket => EntryKind::Socket,
        };
        assert_eq!(
            (e.kind, e.mode, e.uid, e.gid, e.mtime),
            (kind, n.mode, n.uid, n.gid, n.mtime),
            "{}",
            n.path
        );
        match &n.kind {
            NodeKind::Symlink { target } => assert_eq!(e.target.as_ref(), Some(target)),
            _ => assert_eq!(e.target, None, "{}", n.path),
        }
        if let NodeKind::File { source, size } = &n.kind {
            assert_eq!(e.size, *size);
            let content = flist.read_file(&n.path, &store).unwrap();
            assert_eq!(content, fs::read(source).unwrap(), "{}", n.path);
        }
        if let NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } =
            n.kind
        {
            assert_eq!(e.rdev, libc::makedev(major, minor));
        }
        assert_eq!(flist.entry(&n.path).unwrap(), *e);
    }
    assert_eq!(
        flist.read_file("usr/bin/tool-link", &store).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    let err = flist.read_file("etc/nothing", &store).unwrap_err();
    assert!(
        err.to_string().contains("`etc/nothing` is not in it"),
        "{err}"
    );
    let err = flist.read_file("etc", &store).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

/// A stack of `base` below a new top layer holding `opt/<name>`.
fn stack_over(base: &Path, dir: &Path, name: &str, content: &[u8]) -> LayerStack {
    let top = dir.join(format!("top-{name}"));
    fs::create_dir_all(top.join("opt")).unwrap();
    fs::write(top.join("opt").join(name), content).unwrap();
    LayerStack::new(vec![base.to_path_buf(), top])
}

#[test]
fn images_sharing_a_base_share_its_blocks() {
    let (dir, base) = fixture_stack();
    let store = dir.path().join("store");
    let options = FlistOptions::new(&store);
    let noise = |seed: u32| -> Vec<u8> {
        (0..700_000u32)
            .map(|i| (i.wrapping_mul(seed).wrapping_add(i >> 7) >> 5) as u8)
            .collect()
    };
    let a = stack_over(&base.layers[0], dir.path(), "a", &noise(2_654_435_761));
    let b = stack_over(&base.layers[0], dir.path(), "b", &noise(40_503));
    write(&a, &options, &dir.path().join("a.fl"), 2);
    let after_a = block_files(&store);
    write(&b, &options, &dir.path().join("b.fl"), 2);
    let after_b = block_files(&store);
    // `b` adds the two blocks of its own 700 kB file, nothing else.
    assert!(after_b.is_superset(&after_a));
    assert_eq!(after_b.len(), after_a.len() + 2);

    // And both name the same blocks for every file of the base.
    let ids = |fl: &str| -> BTreeSet<Vec<u8>> {
        let conn = db(&dir.path().join(fl));
        let mut stmt = conn
            .prepare(
                "select block.id from block join inode on block.ino = inode.ino \
                 where inode.name not in ('a', 'b')",
            )
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(ids("a.fl"), ids("b.fl"));
}

#[test]
fn gc_keeps_exactly_the_blocks_of_the_kept_flists() {
    let (dir, base) = fixture_stack();
    let store = dir.path().join("store");
    let options = FlistOptions::new(&store);
    let own = |seed: u32| -> Vec<u8> {
        (0..600_000u32)
            .map(|i| (i.wrapping_mul(seed) >> 9) as u8)
            .collect()
    };
    let a = stack_over(&base.layers[0], dir.path(), "a", &own(2_654_435_761));
    let b = stack_over(&base.layers[0], dir.path(), "b", &own(40_503));
    write(&a, &options, &dir.path().join("a.fl"), 2);
    let only_a = block_files(&store);
    write(&b, &options, &dir.path().join("b.fl"), 2);
    let both = block_files(&store);
    assert_eq!(both.len(), only_a.len() + 2);
    // A dead writer's temporary file goes too; a file that is not the
    // store's stays.
    let shard = only_a.iter().next().unwrap().parent().unwrap().to_owned();
    let partial = shard.join(".0000.1-0.partial");
    fs::write(&partial, b"half a block").unwrap();
    fs::write(store.join("NOTES"), b"mine").unwrap();
    let fa = Flist::open(&dir.path().join("a.fl")).unwrap();
    let fb = Flist::open(&dir.path().join("b.fl")).unwrap();

    let all = kiln_formats::flist::gc_store(&store, &[fa, fb], false).unwrap();
    assert_eq!(
        (all.removed, all.kept, all.missing),
        (1, both.len() as u64, 0)
    );
    assert!(!partial.exists());
    assert_eq!(block_files(&store), both);

    let fa = Flist::open(&dir.path().join("a.fl")).unwrap();
    let dry = kiln_formats::flist::gc_store(&store, std::slice::from_ref(&fa), true).unwrap();
    assert_eq!((dry.removed, dry.kept), (2, only_a.len() as u64));
    assert_eq!(block_files(&store), both, "a dry run removes nothing");
    let done = kiln_formats::flist::gc_store(&store, std::slice::from_ref(&fa), false).unwrap();
    assert_eq!(done, dry);
    assert!(done.freed > 0);
    assert_eq!(block_files(&store), only_a);
    assert_eq!(fs::read(store.join("NOTES")).unwrap(), b"mine");
    // Everything of `a` still reads back; `b`'s own file does not.
    for entry in fa.entries().unwrap() {
        if entry.kind == EntryKind::File {
            let content = fa.read_file(&entry.path, &store).unwrap();
            assert_eq!(content.len() as u64, entry.size, "{}", entry.path);
        }
    }
    let fb = Flist::open(&dir.path().join("b.fl")).unwrap();
    assert!(fb.read_file("opt/b", &store).is_err());
    let again = kiln_formats::flist::gc_store(&store, &[fa, fb], true).unwrap();
    assert_eq!((again.removed, again.missing), (0, 2));
}

#[test]
fn writing_twice_gives_the_same_bytes_and_no_new_blocks() {
    let (dir, stack) = fixture_stack();
    let store = dir.path().join("store");
    let options = FlistOptions::new(&store);
    let (one, two) = (dir.path().join("one.fl"), dir.path().join("two.fl"));
    write(&stack, &options, &one, 1);
    let files = block_files(&store);
    let stamp = |files: &BTreeSet<PathBuf>| -> Vec<(u64, i64, i64)> {
        files
            .iter()
            .map(|f| {
                let m = fs::metadata(f).unwrap();
                (m.ino(), m.mtime(), m.mtime_nsec())
            })
            .collect()
    };
    let before = stamp(&files);
    write(&stack, &options, &two, 4);
    assert_eq!(sha256(&one), sha256(&two));
    assert_eq!(block_files(&store), files);
    assert_eq!(stamp(&files), before, "block files were rewritten");
    // Over the same path, too (write_artifact replaces it).
    write(&stack, &options, &one, 2);
    assert_eq!(sha256(&one), sha256(&two));
}

#[test]
fn a_big_file_spans_blocks_in_order_and_an_empty_one_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    fs::create_dir(&layer).unwrap();
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    fs::write(layer.join("big"), &big).unwrap();
    fs::write(layer.join("empty"), b"").unwrap();
    let stack = LayerStack::new(vec![layer]);
    let store = dir.path().join("store");
    let dest = dir.path().join("big.fl");
    write(&stack, &FlistOptions::new(&store), &dest, 2);

    let conn = db(&dest);
    let ino = |name: &str| -> i64 {
        conn.query_row("select ino from inode where name = ?", [name], |r| r.get(0))
            .unwrap()
    };
    let blocks = blocks_of(&conn, ino("big"));
    assert_eq!(blocks.len(), 10);
    for (i, (id, key)) in blocks.iter().enumerate() {
        let start = i * BLOCK_SIZE;
        let end = (start + BLOCK_SIZE).min(big.len());
        assert_eq!(decode(&store, id, key), &big[start..end], "block {i}");
    }
    assert!(blocks_of(&conn, ino("empty")).is_empty());

    let flist = Flist::open(&dest).unwrap();
    assert_eq!(flist.dir_store().unwrap(), Some(store.clone()));
    assert_eq!(flist.read_file("big", &store).unwrap(), big);
    assert_eq!(flist.read_file("empty", &store).unwrap(), b"");

    // A damaged block is caught by the reader.
    let name = hex::encode(&blocks[3].0);
    let path = store.join(&name[..2]).join(&name);
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    let err = flist.read_file("big", &store).unwrap_err();
    assert!(
        err.to_string().contains("does not hash to its id") && err.to_string().contains(&name),
        "{err}"
    );
}
