//! The `kiln` binary: parses the command line, runs a command, prints.
//!
//! This is the only crate that prints or exits; libraries return values and
//! diagnostics.

mod boot_cmd;
mod build_cmd;
mod cli;
mod flist_cmd;
mod init;
mod inspect;
mod plan;
mod progress;
mod publish_cmd;
mod report;
mod serve_cmd;
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
    /// Stopped by Ctrl-C or SIGTERM (exit 130).
    Cancelled(String),
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
    if matches!(
        cli.command,
        cli::Command::Build(_)
            | cli::Command::Store(_)
            | cli::Command::Publish(_)
            | cli::Command::Test(_)
    ) {
        if let Some(code) = userns::reexec_if_unprivileged() {
            return code;
        }
    }
    // A build mounts overlays: in a mount namespace of its own, so every
    // mount dies with the process, even on SIGKILL. Must come before any
    // thread exists (the Ctrl-C handler below starts one).
    if matches!(
        cli.command,
        cli::Command::Build(_) | cli::Command::Publish(_) | cli::Command::Test(_)
    ) {
        if let Err(e) = kiln_layers::private_mount_namespace() {
            let _ = writeln!(
                std::io::stderr().lock(),
                "error: failed to make a private mount namespace: {e}"
            );
            return ExitCode::from(1);
        }
    }
    // Ctrl-C or SIGTERM: the build stops cleanly (running scripts are
    // killed, nothing half-built enters the store, finished outputs stay).
    // A second one does not wait: the staged, unfinished results go and
    // kiln exits; child processes die with it (PR_SET_PDEATHSIG), their
    // mounts with their mount namespace.
    let cancel = kiln_build::CancelToken::new();
    let on_signal = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if on_signal.is_cancelled() {
            kiln_build::remove_live();
            std::process::exit(130);
        }
        on_signal.cancel_with("interrupted");
    });
    let result = match &cli.command {
        cli::Command::Plan(args) => plan::run(args, style),
        cli::Command::Build(args) => build_cmd::run_build(args, style, &cancel),
        cli::Command::Lock(args) => build_cmd::run_lock(args, style),
        cli::Command::Serve(args) => serve_cmd::run(args),
        cli::Command::Store(cmd) => store_cmd::run(cmd, style),
        cli::Command::Init(args) => init::run(args),
        cli::Command::Inspect(args) => inspect::run(args, style),
        cli::Command::Flist(cmd) => flist_cmd::run(cmd),
        cli::Command::Publish(args) => publish_cmd::run_publish(args, style, &cancel),
        cli::Command::Images(args) => publish_cmd::run_images(args, style),
        cli::Command::Lifecycle(cmd) => publish_cmd::run_lifecycle(cmd, style),
        cli::Command::BootServer(args) => boot_cmd::run_boot_server(args, style),
        cli::Command::ConnectStdio { addr } => boot_cmd::connect_stdio(*addr),
        cli::Command::Boot(args) => boot_cmd::run_boot(args, style),
        cli::Command::Test(args) => boot_cmd::run_test(args, style, &cancel),
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
        Err(Failure::Cancelled(text)) => {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
            ExitCode::from(130)
        }
    }
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}
