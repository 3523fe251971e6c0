//! Bootstraps a root from `.deb` files and prints the phase timings:
//! `cargo run --release --example bootstrap -- ROOT FILE.deb...`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(root) = args.next().map(PathBuf::from) else {
        eprintln!("usage: bootstrap ROOT FILE.deb...");
        return ExitCode::from(2);
    };
    let debs: Vec<kiln_dpkg::DebFile> = args
        .map(PathBuf::from)
        .map(|path| {
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            let name = file.split('_').next().unwrap_or_default().to_owned();
            kiln_dpkg::DebFile {
                name,
                path,
                essential: false,
                data_cache: None,
            }
        })
        .collect();
    let started = std::time::Instant::now();
    let result = kiln_dpkg::bootstrap(
        &root,
        &debs,
        &kiln_dpkg::AssembleOptions::default(),
        &|event| {
            if let kiln_dpkg::Event::Step { name } = event {
                eprintln!("{name}…");
            }
        },
    );
    match result {
        Ok(report) => {
            println!("{} packages, {} files", report.packages, report.files);
            for (phase, time) in &report.timings {
                println!("{phase:>10} {:>8.3} s", time.as_secs_f64());
            }
            println!("{:>10} {:>8.3} s", "total", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(error) => {
            let mut source: Option<&dyn std::error::Error> = Some(&error);
            while let Some(e) = source {
                eprintln!("{e}");
                source = e.source();
            }
            ExitCode::FAILURE
        }
    }
}
