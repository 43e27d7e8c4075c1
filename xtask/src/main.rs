//! `cargo xtask`: drives the project. It installs what a fresh machine lacks (`setup`), runs
//! the test suite (`test`), the demo (`demo`), the benchmark (`bench`) and the checks on
//! other kernels under qemu (`vm-test`). It builds nothing itself: `cargo build` does, through
//! `observer/build.rs`.

mod bench;
mod setup;
mod util;
mod vm;

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
    /// Install what building, running and testing the observer needs (idempotent).
    Setup,
    /// Set up, then run formatting and lint checks and every test (root needed).
    Test {
        /// How long the soak test runs, in seconds (default 60).
        #[arg(long, value_name = "SECS")]
        soak: Option<u64>,
    },
    /// Set up, build, and run every scenario under the observer (root needed).
    Demo {
        /// Scenario names (all when none is named).
        names: Vec<String>,
    },
    /// Set up, build, and measure what the observer costs; writes BENCH.md (root needed).
    Bench {
        /// Interleaved rounds of every load under every watcher.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
        rounds: u64,
        /// Length of the full-rate throughput run, in seconds.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Leave out the scale part (`observer why` on a host with a million descriptors and
        /// 100k sockets on a port; a thousand namespaces failing at once).
        #[arg(long)]
        no_scale: bool,
        /// Only the scale part, printed (BENCH.md is left as it is).
        #[arg(long, conflicts_with = "no_scale")]
        only_scale: bool,
        /// Only this load's rows, e.g. `connect` (no throughput run, no scale part), printed
        /// (BENCH.md is left as it is).
        #[arg(long, value_name = "MODE", conflicts_with = "only_scale")]
        only_load: Option<String>,
    },
    /// Set up, then run the scenario checks under every backend on Debian's 6.1 and 6.12
    /// kernels (qemu) and under the tracepoint backend here; fail on any mismatch (root needed).
    VmTest,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Setup => setup::all().and_then(|()| setup::test_tools()),
        Command::Test { soak } => setup::all().and_then(|()| test(soak)),
        Command::Demo { names } => setup::all().and_then(|()| demo(&names)),
        Command::Bench {
            rounds,
            seconds,
            no_scale,
            only_scale,
            only_load,
        } => setup::all().and_then(|()| {
            bench::bench(&bench::Options {
                rounds: rounds as usize,
                seconds: seconds as f64,
                scale: !no_scale,
                only_scale,
                only_load,
            })
        }),
        Command::VmTest => setup::all().and_then(|()| vm::vm_test()),
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
    let root = root()?;
    run(
        std::process::Command::new(root.join("target/release/observer"))
            .arg("demo")
            .args(names),
    )
}

/// The workspace root.
fn root() -> Result<std::path::PathBuf> {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("xtask has no parent directory"))
}

/// Formatting, lints on both sides, then the unit and root integration tests.
fn test(soak_secs: Option<u64>) -> Result<()> {
    use std::process::Command;
    use util::{cargo, run};
    setup::test_tools()?;
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
    let mut tests = cargo();
    tests.args(["test", "--all-targets"]);
    if let Some(secs) = soak_secs {
        tests.env("OBSERVER_SOAK_SECS", secs.to_string());
    }
    run(&mut tests)?;
    Ok(())
}
