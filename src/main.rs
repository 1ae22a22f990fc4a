//! The `sdlab` command.

mod cli;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use sdlab::text::printable;

fn main() -> ExitCode {
    let parsed = match cli::Cli::try_parse() {
        Ok(parsed) => parsed,
        Err(err) if !err.use_stderr() => {
            // --help and --version
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("{}", clap_message(&err));
            return ExitCode::from(2);
        }
    };
    match cli::run(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Errors quote prompts, names and paths from files: nothing in them may
            // drive the terminal.
            eprintln!("error: {}", printable(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}

/// clap's message without its tips. Most errors say it all on the first line; a
/// missing argument's first line only announces the list, so the list and the usage
/// line come with it.
fn clap_message(err: &clap::Error) -> String {
    let rendered = err.to_string();
    let mut lines = rendered.lines().filter(|l| !l.trim().is_empty());
    if err.kind() == ErrorKind::MissingRequiredArgument {
        lines.take_while(|l| !l.starts_with("For more information")).collect::<Vec<_>>().join("\n")
    } else {
        lines.next().unwrap_or("invalid arguments").to_string()
    }
}
