//! `kiln flist ls|cat`: a `ThreeFold` flist read back through its block
//! store, with kiln-formats' reader (every block checked against its id
//! and key before use); `kiln flist gc`: a store cleaned of the blocks no
//! kept flist names.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use kiln_formats::flist::{EntryKind, Flist};
use serde::Serialize;

use crate::cli::{FlistCatArgs, FlistCommand, FlistGcArgs, FlistLsArgs};
use crate::{Failure, Outcome};

pub fn run(cmd: &FlistCommand) -> Outcome {
    match cmd {
        FlistCommand::Ls(args) => ls(args),
        FlistCommand::Cat(args) => cat(args),
        FlistCommand::Gc(args) => gc(args),
    }
}

fn gc(args: &FlistGcArgs) -> Outcome {
    let flists = args
        .flists
        .iter()
        .map(|p| open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let store = match &args.store {
        Some(dir) => dir.clone(),
        None => {
            let mut stores = Vec::new();
            for (path, flist) in args.flists.iter().zip(&flists) {
                stores.push(store_of(path, flist, None)?);
            }
            stores.sort();
            stores.dedup();
            match stores.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(Failure::Config(format!(
                        "error: the flists route their blocks to different stores ({})\n  help: clean one store at a time with `--store DIR`\n",
                        stores
                            .iter()
                            .map(|s| format!("`{}`", s.display()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
    };
    if !store.is_dir() {
        return Err(Failure::Config(format!(
            "error: the store `{}` is not a folder\n",
            store.display()
        )));
    }
    let report =
        kiln_formats::flist::gc_store(&store, &flists, args.dry_run).map_err(|e| failed(&e))?;
    if args.json {
        let v = serde_json::json!({
            "store": store.display().to_string(),
            "dry_run": args.dry_run,
            "removed": report.removed, "freed": report.freed,
            "kept": report.kept, "kept_bytes": report.kept_bytes,
            "missing": report.missing,
        });
        return Ok(serde_json::to_string_pretty(&v).expect("plain data") + "\n");
    }
    let mut out = format!(
        "{} {} blocks ({}), kept {} blocks ({}) of {} flists in `{}`\n",
        if args.dry_run {
            "would remove"
        } else {
            "removed"
        },
        report.removed,
        crate::store_cmd::mb(report.freed),
        report.kept,
        crate::store_cmd::mb(report.kept_bytes),
        flists.len(),
        store.display()
    );
    if report.missing > 0 {
        out.push_str(&format!(
            "warning: the flists name {} blocks the store does not hold; `kiln flist cat` of their files fails\n",
            report.missing
        ));
    }
    Ok(out)
}

/// The directory store holding `flist`'s blocks: `explicit` (`--store`),
/// else the flist's own `dir://` route.
fn store_of(path: &Path, flist: &Flist, explicit: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    flist.dir_store().map_err(|e| failed(&e))?.ok_or_else(|| {
        Failure::Config(format!(
            "error: `{}` routes its blocks to no `dir://` store\n  help: name the folder that holds them with `--store DIR`\n",
            path.display()
        ))
    })
}

fn open(path: &Path) -> Result<Flist, Failure> {
    if !path.is_file() {
        return Err(Failure::Config(format!(
            "error: `{}` is not a file\n",
            path.display()
        )));
    }
    Flist::open(path).map_err(|e| {
        Failure::Config(format!(
            "error: `{}` is not a flist: {}\n",
            path.display(),
            kiln_build::chain(&e)
        ))
    })
}

fn failed(e: &kiln_formats::Error) -> Failure {
    Failure::Build(format!("error: {}\n", kiln_build::chain(e)))
}

#[derive(Serialize)]
struct JsonEntry<'a> {
    path: String,
    kind: &'static str,
    mode: String,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<std::borrow::Cow<'a, str>>,
}

fn kind_name(kind: EntryKind) -> (&'static str, char) {
    match kind {
        EntryKind::Dir => ("dir", 'd'),
        EntryKind::File => ("file", '-'),
        EntryKind::Symlink => ("symlink", 'l'),
        EntryKind::CharDevice => ("char-device", 'c'),
        EntryKind::BlockDevice => ("block-device", 'b'),
        EntryKind::Fifo => ("fifo", 'p'),
        EntryKind::Socket => ("socket", 's'),
        EntryKind::Unknown(_) => ("unknown", '?'),
    }
}

fn ls(args: &FlistLsArgs) -> Outcome {
    let flist = open(&args.flist)?;
    let entries = flist.entries().map_err(|e| failed(&e))?;
    if args.json {
        let list: Vec<JsonEntry<'_>> = entries
            .iter()
            .map(|e| JsonEntry {
                path: format!("/{}", e.path),
                kind: kind_name(e.kind).0,
                mode: format!("{:04o}", e.mode),
                uid: e.uid,
                gid: e.gid,
                size: e.size,
                mtime: e.mtime,
                target: e.target.as_deref().map(String::from_utf8_lossy),
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&list).expect("serializable") + "\n");
    }
    let mut out = String::new();
    for e in &entries {
        let (_, letter) = kind_name(e.kind);
        out.push_str(&format!(
            "{letter}{} {:>5} {:>5} {:>10} {} /{}",
            permissions(e.mode),
            e.uid,
            e.gid,
            e.size,
            kiln_build::manifest::rfc3339(e.mtime),
            e.path
        ));
        if let Some(t) = &e.target {
            out.push_str(&format!(" -> {}", String::from_utf8_lossy(t)));
        }
        out.push('\n');
    }
    Ok(out)
}

/// `rwxr-xr-x` with set-uid, set-gid and sticky as `ls` shows them.
fn permissions(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for (shift, special, set, unset) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => set,
            (false, true) => unset,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn cat(args: &FlistCatArgs) -> Outcome {
    let flist = open(&args.flist)?;
    let path = args.path.trim_start_matches('/');
    let entry = flist.entry(path).map_err(|e| {
        Failure::Config(format!(
            "error: `{}` has no `{}`: {}\n",
            args.flist.display(),
            args.path,
            kiln_build::chain(&e)
        ))
    })?;
    if entry.kind != EntryKind::File {
        return Err(Failure::Config(format!(
            "error: `{}` in `{}` is a {}, not a file\n",
            args.path,
            args.flist.display(),
            kind_name(entry.kind).0
        )));
    }
    let store = store_of(&args.flist, &flist, args.store.as_deref())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    flist
        .copy_file(path, &store, &mut out)
        .map_err(|e| failed(&e))?;
    out.flush()
        .map_err(|e| Failure::Build(format!("error: failed to write: {e}\n")))?;
    Ok(String::new())
}
