//! The `observer` binary: parse the command line, run, and turn the outcome into an exit
//! code (0 normal end, 1 runtime failure, 2 bad usage). Events go to stdout, everything else to
//! stderr.

use std::process::ExitCode;

fn main() -> ExitCode {
    observer::cli::main()
}
