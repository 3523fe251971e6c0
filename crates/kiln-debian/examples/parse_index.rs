//! Times parsing a `Packages` file: `cargo run --release --example parse_index -- Packages.xz`.
#![allow(clippy::print_stdout)]

use std::io::Read;
use std::time::Instant;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: parse_index <Packages[.xz]>");
    let raw = std::fs::read(&path).expect("readable file");
    let start = Instant::now();
    let mut text = String::new();
    if std::path::Path::new(&path)
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("xz"))
    {
        liblzma::read::XzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .expect("valid xz");
    } else {
        text = String::from_utf8(raw).expect("UTF-8");
    }
    let decompressed = start.elapsed();
    let start = Instant::now();
    let packages = kiln_debian::index::parse_packages(&text, &path).expect("valid index");
    let parsed = start.elapsed();
    println!(
        "{} stanzas, {} bytes: decompress {decompressed:?}, parse {parsed:?}",
        packages.len(),
        text.len()
    );
}
