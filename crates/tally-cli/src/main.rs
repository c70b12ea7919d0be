//! `tally`: one binary for every role.
//!
//! Exit codes: 0 success; 1 the operation failed (the message says why);
//! 2 usage error (from clap).

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;

#[derive(Parser)]
#[command(name = "tally", version, about = "Tally: offline central bank digital currency")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tell the whole story in one command.
    Demo {
        #[command(subcommand)]
        story: Option<Story>,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum Story {
    /// Offline payments between cards, phones and IoT devices (no server).
    Offline,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { story } => match story.unwrap_or(Story::Offline) {
            Story::Offline => demo::offline(),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (e.g. `| head`) is not an error worth reporting.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "tally: {e}");
            ExitCode::from(1)
        }
    }
}
