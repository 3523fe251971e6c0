//! Writes one artifact of a stack of layer folders, for benchmarks:
//!
//! ```text
//! cargo run --release -p kiln-formats --example write -- FORMAT OUT LAYER...
//! ```
//!
//! FORMAT is `tar`, `tar.gz`, `tar.zst`, `tar.xz`, `cpio.gz`, `cpio.zst`
//! or `overlay.cpio.gz`; LAYERs are bottom first. The epoch is
//! `SOURCE_DATE_EPOCH` (default: now); threads: all cores.
#![allow(clippy::print_stderr)]

use kiln_formats::{Compression, Input, Spec, write_artifact};
use kiln_layers::LayerStack;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: write FORMAT OUT LAYER...");
        std::process::exit(2);
    }
    let spec = match args[0].as_str() {
        "tar" => Spec::Tar {
            compression: Compression::None,
        },
        "tar.gz" => Spec::Tar {
            compression: Compression::GZIP,
        },
        "tar.zst" => Spec::Tar {
            compression: Compression::ZSTD,
        },
        "tar.xz" => Spec::Tar {
            compression: Compression::XZ,
        },
        "cpio.gz" => Spec::Cpio {
            compression: Compression::GZIP,
        },
        "cpio.zst" => Spec::Cpio {
            compression: Compression::ZSTD,
        },
        "overlay.cpio.gz" => Spec::OverlayCpio {
            compression: Compression::GZIP,
        },
        other => {
            eprintln!("unknown format {other}");
            std::process::exit(2);
        }
    };
    let stack = LayerStack::new(args[2..].iter().map(Into::into).collect());
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(i64::MAX);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let input = Input {
        stack: &stack,
        layer_ids: &[],
        epoch,
        threads,
        cache_dir: None,
        seed: b"example",
        cancel: None,
    };
    if let Err(e) = write_artifact(&spec, &input, args[1].as_ref()) {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        eprintln!("error: {text}");
        std::process::exit(1);
    }
}
