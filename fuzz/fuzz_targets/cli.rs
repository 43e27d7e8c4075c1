//! The command line: any arguments (NUL-separated in the input, any bytes, not only UTF-8).
//! Parsing never panics; a refusal makes one non-empty line (what `observer` prints on
//! stderr before exiting 2); and `why ADDR:PORT` accepts exactly what a socket
//! address parses as.

#![no_main]

use clap::Parser as _;
use libfuzzer_sys::fuzz_target;
use observer::cli::{Cli, Command};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt as _;

fuzz_target!(|data: &[u8]| {
    let args: Vec<&OsStr> = std::iter::once(OsStr::new("observer"))
        .chain(data.split(|b| *b == 0).map(OsStr::from_bytes))
        .collect();
    let parsed = Cli::try_parse_from(&args);
    // `observer why X` alone: accepted exactly when X is a socket address, and as that one.
    if let [_, why, addr] = args.as_slice() {
        let addr = addr.to_str().and_then(|a| a.parse::<SocketAddr>().ok());
        if *why == "why" {
            match (&parsed, addr) {
                (Ok(cli), Some(addr)) => match &cli.command {
                    Command::Why(w) => assert_eq!(w.addr, Some(addr)),
                    other => panic!("`why` parsed as {other:?}"),
                },
                (Err(_), None) => {}
                (Ok(_), None) => panic!("accepted {args:?}"),
                (Err(err), Some(_)) => panic!("refused {args:?}: {err}"),
            }
        }
    }
    // A refusal is one non-empty line on stderr (`observer: LINE (see ...)`).
    if let Err(err) = parsed
        && err.use_stderr()
    {
        let line = observer::cli::usage_line(&err);
        assert!(!line.trim().is_empty() && !line.contains('\n'), "{line:?}");
    }
});
