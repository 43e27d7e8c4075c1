//! Many sockets in the way, a bounded answer: `observer why` against a port with hundreds of
//! TIME_WAIT sockets left by a server that closed its connections first groups them (one
//! holder with its count), the table stays short, and `--all` lists every socket.

#[allow(unused_imports)]
mod common;

use common::in_netns;
use common::proc::run_observer;
use serde_json::Value;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};

const CONNECTIONS: usize = 300;

/// `n` connections to `server`, each closed by the server's side first: TIME_WAIT sockets on
/// the server's port. Returns when the last client has seen its end.
fn server_closes_first(server: &TcpListener, n: usize) {
    for _ in 0..n {
        let mut client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let (accepted, _) = server.accept().unwrap();
        drop(accepted);
        // The server's FIN: read returns 0 once it has arrived.
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).unwrap(), 0);
    }
}

fn why(args: &[&str]) -> (Option<i32>, Vec<String>) {
    let (status, out, stderr) = run_observer(args);
    assert!(stderr.is_empty(), "stderr: {stderr}");
    (status.code(), out)
}

#[test]
fn hundreds_of_time_wait_sockets_are_one_group() {
    in_netns("many-tw", |_| {
        let server = TcpListener::bind("127.0.0.1:7500").unwrap();
        server_closes_first(&server, CONNECTIONS);
        drop(server);
        let (code, out) = why(&["why", "127.0.0.1:7500", "--json"]);
        assert_eq!(code, Some(3), "EADDRINUSE: {out:?}");
        let v: Value = serde_json::from_str(&out[0]).unwrap();
        let holders = v["conflict"]["holders"].as_array().unwrap();
        assert_eq!(holders.len(), 1, "{v}");
        assert_eq!(holders[0]["state"], "TIME_WAIT", "{v}");
        assert_eq!(holders[0]["count"], CONNECTIONS, "{v}");

        let (_, table) = why(&["why", "127.0.0.1:7500"]);
        assert!(
            table[1].starts_with(&format!("  {CONNECTIONS} sockets like this: tcp TIME_WAIT 127.0.0.1:7500 (the first goes in ")),
            "{table:#?}"
        );
        assert!(table.len() < 15, "{table:#?}");

        let (_, all) = why(&["why", "127.0.0.1:7500", "--json", "--all"]);
        let v: Value = serde_json::from_str(&all[0]).unwrap();
        let holders = v["conflict"]["holders"].as_array().unwrap();
        assert_eq!(holders.len(), CONNECTIONS, "--all: every socket");
        assert!(holders.iter().all(|h| h["count"] == 1));
    });
}
