//! `cargo xtask`: drives the project. It installs what a fresh machine lacks (`setup`), runs
//! the test suite (`test`) and the demo (`demo`). It builds nothing itself: `cargo build` does,
//! through `observer/build.rs`.

mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and running the observer needs (idempotent).
    Setup,
    /// Set up, then run formatting and lint checks and every test (root needed).
    Test,
    /// Set up, build, and run every scenario under the observer (root needed).
    Demo {
        /// Scenario names (all when none is named).
        names: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Setup => setup::all(),
        Command::Test => setup::all().and_then(|()| test()),
        Command::Demo { names } => setup::all().and_then(|()| demo(&names)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the observer (and its kernel programs, through build.rs) and runs its demo.
fn demo(names: &[String]) -> Result<()> {
    use util::{cargo, run};
    run(cargo().args(["build", "--release", "--package", "observer"]))?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("xtask has no parent directory"))?;
    run(
        std::process::Command::new(root.join("target/release/observer"))
            .arg("demo")
            .args(names),
    )
}

/// Formatting, lints on both sides, then the unit and root integration tests.
fn test() -> Result<()> {
    use std::process::Command;
    use util::{cargo, run};
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // `+nightly` only works through the rustup proxy; `rustup run` works from any cargo.
    run(Command::new("rustup").args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "--package",
        "observer-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["test", "--all-targets"]))?;
    Ok(())
}
