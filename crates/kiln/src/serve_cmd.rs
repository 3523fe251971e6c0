//! `kiln serve` and `kiln serve token create`.

use crate::cli::{ServeArgs, ServeCommand, TokenCommand};
use crate::{Failure, Outcome};

fn failure(e: &kiln_serve::Error) -> Failure {
    let text = format!("error: {e}\n");
    if e.is_config() {
        Failure::Config(text)
    } else {
        Failure::Build(text)
    }
}

pub fn run(args: &ServeArgs) -> Outcome {
    let config = kiln_serve::Config::load(&args.config).map_err(|e| failure(&e))?;
    match &args.command {
        None => {
            let summary = format!(
                "{} repositories, {} workers, data in {}",
                config.repos.len(),
                config.workers,
                config.data_dir.display()
            );
            kiln_serve::serve(config, |addr| {
                use std::io::Write as _;
                // The first line on stderr: scripts and tests wait for it.
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "kiln serve: listening on http://{addr} ({summary})"
                );
            })
            .map_err(|e| failure(&e))?;
            Ok(String::new())
        }
        Some(ServeCommand::Token(TokenCommand::Create { name })) => {
            match kiln_serve::create_token(&config, name).map_err(|e| failure(&e))? {
                Some(token) => Ok(format!("{token}\n")),
                None => Err(Failure::Config(format!(
                    "error: a token named `{name}` exists already\n"
                ))),
            }
        }
    }
}
