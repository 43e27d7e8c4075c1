//! A server that cannot get its port and exits at once, as most do, against a TIME_WAIT socket
//! that had SO_REUSEADDR: its explanation still reads the holder's flags (the lookup enters
//! the namespace through the handle taken when the event was read, not through the dead
//! process) and offers the fix that works. Looped: it must hold every time.

#[allow(unused_imports)]
mod common;

use common::{BOUND, Observer, bind_and_exit, in_netns};
use socket2::{Domain, Socket, Type};
use std::net::{SocketAddr, SocketAddrV4, TcpListener};
use std::time::Instant;

const ROUNDS: u16 = 25;

/// Waits (bounded) until the namespace's TCP table shows a TIME_WAIT socket on local `port`.
fn wait_time_wait(port: u16) {
    let deadline = Instant::now() + BOUND;
    let want = format!(":{port:04X} ");
    loop {
        let table = std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap();
        // local_address is the second column, st (06 = TIME_WAIT) the fourth.
        if table.lines().skip(1).any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && format!("{} ", cols[1]).ends_with(&want) && cols[3] == "06"
        }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no TIME_WAIT on port {port} within {BOUND:?}"
        );
        std::thread::yield_now();
    }
}

/// A TIME_WAIT socket on 127.0.0.1:`port` whose socket had SO_REUSEADDR: a client bound
/// there connects to `server` and closes first.
fn time_wait_with_reuseaddr(port: u16, server: &TcpListener) {
    let client = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    client.set_reuse_address(true).unwrap();
    let local: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    client.bind(&local.into()).unwrap();
    client
        .connect(&server.local_addr().unwrap().into())
        .unwrap();
    let (accepted, _) = server.accept().unwrap();
    drop(client);
    drop(accepted);
    wait_time_wait(port);
}

#[test]
fn an_exited_server_still_gets_its_holders_flags_and_the_fix() {
    in_netns("restart-tw", |c| {
        let server = TcpListener::bind("127.0.0.1:7400").unwrap();
        let mut obs = Observer::watch(c, &[]);
        for round in 0..ROUNDS {
            let port = 7401 + round;
            time_wait_with_reuseaddr(port, &server);
            let child = bind_and_exit(c, SocketAddrV4::new([127, 0, 0, 1].into(), port));
            assert_eq!(child.errno, libc::EADDRINUSE, "round {round}");
            let events = obs.take_explained(2);
            assert_eq!(
                events[0]["result"], "OK",
                "the client's bind: {}",
                events[0]
            );
            let failed = &events[1];
            assert_eq!(failed["pid"], child.caller.pid, "round {round}: {failed}");
            assert_eq!(failed["result"], "EADDRINUSE", "round {round}: {failed}");
            let conflict = &failed["conflict"];
            assert_eq!(conflict["verdict"], "in_use", "round {round}: {conflict}");
            let holder = &conflict["holders"][0];
            assert_eq!(holder["state"], "TIME_WAIT", "round {round}: {conflict}");
            assert_eq!(holder["reuseaddr"], true, "round {round}: {conflict}");
            assert_eq!(holder["reuseport"], false, "round {round}: {conflict}");
            let fixes: Vec<&str> = conflict["fixes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|f| f.as_str())
                .collect();
            assert!(
                fixes.contains(&"set SO_REUSEADDR on this socket"),
                "round {round}: {conflict}"
            );
        }
        let summary = obs.stop();
        assert_eq!(summary["conflict_lookups"], u64::from(ROUNDS), "{summary}");
    });
}
