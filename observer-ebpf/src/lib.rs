//! Library target of the kernel-program crate: empty on purpose. It exists so that `observer`
//! can name this crate as a build-dependency (for rebuilds) without building the programs for
//! the host; the programs themselves are the `observer` binary in `main.rs`.
#![no_std]
