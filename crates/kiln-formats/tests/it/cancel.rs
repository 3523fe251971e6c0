//! Writers stop when the build's cancel flag is set while they write,
//! not only before they start, and leave no file behind.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_formats::flist::FlistOptions;
use kiln_formats::{Compression, Ext4Options, Input, Spec, write_artifact};
use kiln_layers::LayerStack;

use crate::EPOCH;

/// A layer of 64 files of 8 MiB (512 MiB, not zeros: ext4 skips zero
/// blocks): seconds for each writer below, so a flag set after 200 ms
/// lands mid-write.
fn big_layer() -> (tempfile::TempDir, LayerStack) {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    fs::create_dir(&layer).unwrap();
    let content: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8 | 1).collect();
    for i in 0..64 {
        fs::write(layer.join(format!("f{i:02}")), &content).unwrap();
    }
    let stack = LayerStack::new(vec![layer]);
    (dir, stack)
}

fn cancelled_mid_write(spec: &Spec, stack: &LayerStack, dest: &std::path::Path) {
    let flag = AtomicBool::new(false);
    let input = Input {
        stack,
        layer_ids: &[],
        epoch: EPOCH,
        threads: 2,
        cache_dir: None,
        seed: b"test",
        cancel: Some(&flag),
    };
    let start = Instant::now();
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            flag.store(true, Ordering::SeqCst);
        });
        write_artifact(spec, &input, dest)
    });
    let took = start.elapsed();
    assert!(
        matches!(result, Err(kiln_formats::Error::Cancelled)),
        "{spec:?}: {result:?} after {took:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "{spec:?} stopped after {took:?}"
    );
    assert!(!dest.exists());
    let leftovers: Vec<_> = fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn tar_cpio_ext4_and_flist_writers_stop_mid_write_when_cancelled() {
    let (dir, stack) = big_layer();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let gzip = Compression::Gzip { level: 9 };
    cancelled_mid_write(
        &Spec::Tar { compression: gzip },
        &stack,
        &out.join("root.tar.gz"),
    );
    cancelled_mid_write(
        &Spec::Cpio { compression: gzip },
        &stack,
        &out.join("root.cpio.gz"),
    );
    cancelled_mid_write(
        &Spec::Ext4(Ext4Options {
            size: None,
            headroom: None,
            label: None,
        }),
        &stack,
        &out.join("root.ext4"),
    );
    cancelled_mid_write(
        &Spec::Flist(FlistOptions::new(out.join("store"))),
        &stack,
        &out.join("root.flist"),
    );
}
