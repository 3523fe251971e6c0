//! The `kiln` binary: parses the command line, runs a command, prints.
//!
//! This is the only crate that prints or exits; libraries return values and
//! diagnostics.

mod artifacts;
mod build;
mod cli;
mod engine;
mod flist_cmd;
mod init;
mod inspect;
mod keys;
mod manifest;
mod plan;
mod progress;
mod report;
mod sources;
mod staging;
mod store_cmd;
mod userns;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

/// How a command ended; maps onto the documented exit codes.
#[derive(Debug)]
pub enum Failure {
    /// A build failed (exit 1).
    Build(String),
    /// Bad usage or configuration; the text is already rendered (exit 2).
    Config(String),
}

/// What a command prints on success.
pub type Outcome = Result<String, Failure>;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let color = match cli.color {
        cli::ColorChoice::Always => true,
        cli::ColorChoice::Never => false,
        cli::ColorChoice::Auto => {
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let style = report::Style {
        color,
        width: if std::io::stderr().is_terminal() {
            terminal_width()
        } else {
            100
        },
    };
    // An ordinary user builds inside a user namespace where it is root
    // over its subordinate ids (as mmdebstrap's unshare mode does).
    if matches!(cli.command, cli::Command::Build(_) | cli::Command::Store(_)) {
        if let Some(code) = userns::reexec_if_unprivileged() {
            return code;
        }
    }
    // A build mounts overlays: in a mount namespace of its own, so every
    // mount dies with the process, even on SIGKILL. Must come before any
    // thread exists (the Ctrl-C handler below starts one).
    if matches!(cli.command, cli::Command::Build(_)) {
        if let Err(e) = kiln_layers::private_mount_namespace() {
            let _ = writeln!(
                std::io::stderr().lock(),
                "error: failed to make a private mount namespace: {e}"
            );
            return ExitCode::from(1);
        }
    }
    // Ctrl-C: the staged, unfinished results go; finished ones stay. Child
    // processes (dpkg in the target) get the signal from the terminal too,
    // and their mounts live in their own mount namespace.
    let _ = ctrlc::set_handler(|| {
        staging::remove_live();
        std::process::exit(130);
    });
    let result = match &cli.command {
        cli::Command::Plan(args) => plan::run(args, style),
        cli::Command::Build(args) => engine::run_build(args, style),
        cli::Command::Lock(args) => build::run_lock(args, style),
        cli::Command::Store(cmd) => store_cmd::run(cmd, style),
        cli::Command::Init(args) => init::run(args),
        cli::Command::Inspect(args) => inspect::run(args, style),
        cli::Command::Flist(cmd) => flist_cmd::run(cmd),
    };
    match result {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`kiln plan | head`) is not an error worth reporting.
            let _ = out.write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(Failure::Build(text)) => {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
            ExitCode::from(1)
        }
        Err(Failure::Config(text)) => {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
            ExitCode::from(2)
        }
    }
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}
