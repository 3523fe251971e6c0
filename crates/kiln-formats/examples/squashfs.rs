//! Writes a squashfs of one or more layer folders, for benchmarks:
//! `squashfs LAYER [LAYER…] OUT [--cache CACHE] [--threads N]`, the
//! layers bottom first.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_formats::{Input, Spec, SquashfsOptions, write_artifact};
use kiln_layers::LayerStack;

fn main() -> ExitCode {
    let mut paths = Vec::new();
    let mut cache = None;
    let mut threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--cache") => cache = args.next().map(PathBuf::from),
            Some("--threads") => {
                threads = args
                    .next()
                    .and_then(|n| n.to_str()?.parse().ok())
                    .unwrap_or(threads);
            }
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let Some(out) = paths.pop().filter(|_| !paths.is_empty()) else {
        eprintln!("usage: squashfs LAYER [LAYER…] OUT [--cache CACHE] [--threads N]");
        return ExitCode::from(2);
    };
    let stack = LayerStack::new(paths);
    let input = Input {
        stack: &stack,
        layer_ids: &[],
        epoch: 1_700_000_000,
        threads,
        cache_dir: cache.as_deref(),
        seed: b"example",
        cancel: None,
    };
    match write_artifact(&Spec::Squashfs(SquashfsOptions::default()), &input, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
