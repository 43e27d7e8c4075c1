//! Rebuild the kernel programs when the `bpf-linker` binary changes: the crate depends on it,
//! but cargo has no way to declare a dependency on a binary.
use which::which;

fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => {
            println!("cargo:rerun-if-env-changed=PATH");
            println!("cargo:warning=bpf-linker not found on PATH (run `cargo xtask setup`)");
        }
    }
}
