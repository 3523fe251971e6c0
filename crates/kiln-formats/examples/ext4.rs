//! Writes an ext4 image of one or more layer folders, for benchmarks:
//! `ext4 LAYER [LAYER…] OUT [--size BYTES] [--headroom BYTES] [--label L]
//! [--threads N]`, the layers bottom first.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_formats::{Ext4Options, Input, Spec, write_artifact};
use kiln_layers::LayerStack;

fn number<T: std::str::FromStr>(a: Option<std::ffi::OsString>) -> Option<T> {
    a.and_then(|n| n.to_str()?.parse().ok())
}

fn main() -> ExitCode {
    let mut paths = Vec::new();
    let mut options = Ext4Options::default();
    let mut threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--size") => options.size = number(args.next()),
            Some("--headroom") => options.headroom = number(args.next()),
            Some("--label") => options.label = args.next().map(|l| l.to_string_lossy().into()),
            Some("--threads") => threads = number(args.next()).unwrap_or(threads),
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let Some(out) = paths.pop().filter(|_| !paths.is_empty()) else {
        eprintln!(
            "usage: ext4 LAYER [LAYER…] OUT [--size BYTES] [--headroom BYTES] [--label L] [--threads N]"
        );
        return ExitCode::from(2);
    };
    let stack = LayerStack::new(paths);
    let input = Input {
        stack: &stack,
        epoch: 1_700_000_000,
        threads,
        cache_dir: None,
        seed: b"example",
        cancel: None,
        layer_ids: &[],
    };
    match write_artifact(&Spec::Ext4(options), &input, &out) {
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
