//! The `observer` binary: parse the command line, run, and turn the outcome into an exit
//! code (0 normal end, 1 runtime failure, 2 bad usage). Events go to stdout, everything else to
//! stderr.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Start-up parses the kernel's BTF (several MiB, in large buffers) and then runs for
    // months. glibc raises its mmap threshold after the first large free, so later large
    // buffers would land in the heap and stay counted in the process's memory; a fixed
    // threshold keeps every large buffer in its own mapping, returned to the system when freed.
    // (musl has no such threshold to move.)
    // SAFETY: mallopt only changes allocator tuning; it is called before any other thread runs.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024)
    };
    observer::cli::main()
}
