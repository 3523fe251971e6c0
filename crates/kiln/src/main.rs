//! The `kiln` binary: parses the command line, runs a command, prints.
//!
//! This is the only crate that prints or exits; libraries return values and
//! diagnostics.

mod cli;
mod init;
mod plan;
mod report;

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
    let result = match &cli.command {
        cli::Command::Plan(args) => plan::run(args, style),
        cli::Command::Init(args) => init::run(args),
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
