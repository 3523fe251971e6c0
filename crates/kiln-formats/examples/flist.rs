//! Lists or reads an flist with `kiln_formats::flist`:
//!
//! ```text
//! cargo run -p kiln-formats --example flist -- ls FLIST
//! cargo run -p kiln-formats --example flist -- cat FLIST PATH [STORE]
//! cargo run -p kiln-formats --example flist -- pack FLIST STORE ROOT [EPOCH]
//! ```
//!
//! `cat` reads blocks from `STORE`, or from the flist's `dir://` route.
//! `pack` writes the flist of the folder `ROOT` (one layer).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kiln_formats::flist::{EntryKind, Flist, FlistOptions};
use kiln_formats::{Input, Spec, write_artifact};
use kiln_layers::LayerStack;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["ls", flist] => ls(Path::new(flist)),
        ["cat", flist, path] => cat(Path::new(flist), path, None),
        ["cat", flist, path, store] => cat(Path::new(flist), path, Some(PathBuf::from(store))),
        ["pack", flist, store, root] => pack(flist, store, root, 0),
        ["pack", flist, store, root, epoch] => match epoch.parse() {
            Ok(epoch) => pack(flist, store, root, epoch),
            Err(e) => Err(format!("bad epoch `{epoch}`: {e}").into()),
        },
        _ => {
            eprintln!(
                "usage: flist ls FLIST | flist cat FLIST PATH [STORE] | flist pack FLIST STORE ROOT [EPOCH]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut source = e.source();
            eprint!("error: {e}");
            while let Some(s) = source {
                eprint!(": {s}");
                source = s.source();
            }
            eprintln!();
            ExitCode::FAILURE
        }
    }
}

type Result = std::result::Result<(), Box<dyn std::error::Error>>;

fn ls(path: &Path) -> Result {
    let flist = Flist::open(path)?;
    let mut out = std::io::stdout().lock();
    for e in flist.entries()? {
        let kind = match e.kind {
            EntryKind::Dir => 'd',
            EntryKind::File => '-',
            EntryKind::Symlink => 'l',
            EntryKind::CharDevice => 'c',
            EntryKind::BlockDevice => 'b',
            EntryKind::Fifo => 'p',
            EntryKind::Socket => 's',
            EntryKind::Unknown(_) => '?',
        };
        let target = e
            .target
            .as_deref()
            .map(|t| format!(" -> {}", String::from_utf8_lossy(t)))
            .unwrap_or_default();
        writeln!(
            out,
            "{kind}{:04o} {:>5}:{:<5} {:>10} {:>11} /{}{target}",
            e.mode, e.uid, e.gid, e.size, e.mtime, e.path
        )?;
    }
    Ok(())
}

fn cat(path: &Path, file: &str, store: Option<PathBuf>) -> Result {
    let flist = Flist::open(path)?;
    let store = match store {
        Some(s) => s,
        None => flist
            .dir_store()?
            .ok_or("the flist has no dir:// route: name the store")?,
    };
    let mut out = std::io::stdout().lock();
    flist.copy_file(file.trim_start_matches('/'), &store, &mut out)?;
    out.flush()?;
    Ok(())
}

fn pack(flist: &str, store: &str, root: &str, epoch: i64) -> Result {
    let stack = LayerStack::new(vec![PathBuf::from(root)]);
    let input = Input {
        stack: &stack,
        epoch,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        cache_dir: None,
        seed: b"",
        cancel: None,
        layer_ids: &[],
    };
    let spec = Spec::Flist(FlistOptions::new(store));
    write_artifact(&spec, &input, Path::new(flist))?;
    Ok(())
}
