//! `tally`: one binary for every role; the commands, their exit codes and
//! the code behind them are in the library (`src/lib.rs`), so the tests can
//! build it with the `dev-tools` feature.

fn main() -> std::process::ExitCode {
    tally_cli::main()
}
