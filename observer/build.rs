//! Builds the kernel programs (`observer-ebpf`) for `bpfel-unknown-none` with aya-build and
//! leaves the object in `OUT_DIR`, where the collector embeds it.
//!
//! Needs nightly with `rust-src` and `bpf-linker` on PATH (`cargo xtask setup` installs both).
use anyhow::{Context as _, anyhow};
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = Path::new(&manifest)
        .parent()
        .ok_or_else(|| anyhow!("{manifest} has no parent"))?
        .join("observer-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    // aya-build relays every line the inner cargo writes to stderr as a `cargo:warning`, so a
    // first build printed each "Compiling ..." of the eBPF build as a warning. Quiet, that
    // cargo writes only what is wrong (its errors and rustc's diagnostics, relayed as
    // warnings, as they should be); cargo's own progress bar shows `observer(build)` meanwhile.
    // SAFETY: the build script is single-threaded here: nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    let package = aya_build::Package {
        name: "observer-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
        .context("building the kernel programs failed (is `cargo xtask setup` done?)")
}
