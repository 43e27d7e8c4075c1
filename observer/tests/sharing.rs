//! Silent port sharing, as root with the real binary in a private network namespace: a
//! process joins the port of another one with a successful bind or listen, the event says
//! with whom and where the traffic now goes, and real traffic lands where it says.
//!
//! * UDP, SO_REUSEADDR on both: each unicast datagram reaches one socket; the one bound last
//!   takes them all (`udp-one-receiver`). 20 datagrams: 20 to the newcomer, 0 to the first.
//! * TCP, SO_REUSEPORT on both listeners: one group; 64 connections are spread over both
//!   (`reuseport-group`): each gets some, together all.

#[allow(unused_imports)]
mod common;

use common::{BOUND, Observer, Opt, Sock, in_netns, no_forks};
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// A python3 child that binds `proto` on 127.0.0.1:`port` with `opt` (SO_REUSEADDR or
/// SO_REUSEPORT) set, listening for TCP, prints `ready`, and when its standard input closes
/// counts what reached it without waiting (datagrams, or connections in its accept queue) and
/// prints the count.
fn first_holder(
    proto: &str,
    opt: &str,
    port: u16,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let code = "import socket, sys\n\
                proto, opt, port = sys.argv[1], sys.argv[2], int(sys.argv[3])\n\
                kind = socket.SOCK_STREAM if proto == 'tcp' else socket.SOCK_DGRAM\n\
                s = socket.socket(socket.AF_INET, kind)\n\
                s.setsockopt(socket.SOL_SOCKET, getattr(socket, opt), 1)\n\
                s.bind(('127.0.0.1', port))\n\
                if proto == 'tcp':\n\
                \x20   s.listen(128)\n\
                print('ready', flush=True)\n\
                sys.stdin.read()\n\
                s.setblocking(False)\n\
                n = 0\n\
                while True:\n\
                \x20   try:\n\
                \x20       s.accept() if proto == 'tcp' else s.recv(100)\n\
                \x20   except BlockingIOError:\n\
                \x20       break\n\
                \x20   n += 1\n\
                print(n, flush=True)\n";
    let guard = no_forks();
    let mut child = Command::new("python3")
        .args(["-c", code, proto, opt, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    drop(guard);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, out)
}

/// What the child counted, once its standard input is closed.
fn count_of(mut child: Child, mut out: BufReader<std::process::ChildStdout>) -> usize {
    drop(child.stdin.take());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    child.wait().unwrap();
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("child said {line:?}"))
}

/// The explanation of this process's event `op` on socket `ino`: in the event, or in the
/// explanation record that follows it on a loaded machine.
fn sharing_of(obs: &mut Observer, op: &str, ino: u64) -> Value {
    loop {
        let e = obs.take(1).remove(0);
        if e["op"] != op || e["sock_ino"] != ino {
            continue;
        }
        assert_eq!(e["result"], "OK", "{e}");
        if e["conflict"].is_object() {
            return e["conflict"].clone();
        }
        return obs.take_explanation(e["seq"].as_u64().unwrap())["conflict"].clone();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn udp_reuseaddr_newcomer_takes_every_unicast_datagram() {
    in_netns("share-udp", |c| {
        let mut obs = Observer::watch(c, &[]);
        let port = free_port();
        let (child, out) = first_holder("udp", "SO_REUSEADDR", port);
        let sock = Sock::udp4().set(Opt::ReuseAddr, true);
        assert_eq!(sock.bind(&format!("127.0.0.1:{port}")), 0);
        let conflict = sharing_of(&mut obs, "bind", AsRef::<common::SockId>::as_ref(&sock).ino);
        assert_eq!(conflict["verdict"], "shared", "{conflict}");
        let sharing = &conflict["sharing"];
        assert_eq!(sharing["protocol"], "udp", "{conflict}");
        assert_eq!(sharing["rule"], "udp-one-receiver", "{conflict}");
        let with = sharing["with"].as_array().unwrap();
        assert_eq!(with.len(), 1, "{conflict}");
        assert_eq!(with[0]["state"], "UNCONN");
        assert_eq!(with[0]["addr"], "127.0.0.1");
        assert_eq!(with[0]["port"], port);
        assert_eq!(with[0]["reuseaddr"], true);
        assert_eq!(with[0]["reuseport"], false);
        assert_eq!(with[0]["owners"][0]["pid"], child.id(), "{conflict}");

        // Where the datagrams land.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..20u8 {
            client.send_to(&[i], ("127.0.0.1", port)).unwrap();
        }
        let deadline = Instant::now() + BOUND;
        let mut got = Vec::new();
        while got.len() < 20 && Instant::now() < deadline {
            let mut b = [0u8; 8];
            // SAFETY: recv(2) into a local buffer of the length given, on our own socket.
            let n = unsafe {
                libc::recv(
                    sock.fd(),
                    b.as_mut_ptr().cast(),
                    b.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n == 1 {
                got.push(b[0]);
            }
        }
        assert_eq!(
            got,
            (0..20u8).collect::<Vec<_>>(),
            "the newcomer's datagrams"
        );
        assert_eq!(count_of(child, out), 0, "the first socket got datagrams");
        // The client's own bind (UDP) may follow; nothing else is asserted after this.
        let (_, status, stderr) = obs.stop_unchecked(libc::SIGTERM);
        assert!(status.success(), "{stderr}");
    });
}

#[test]
fn tcp_reuseport_listeners_split_the_connections() {
    in_netns("share-tcp", |c| {
        let mut obs = Observer::watch(c, &[]);
        let port = free_port();
        let (child, out) = first_holder("tcp", "SO_REUSEPORT", port);
        let sock = Sock::tcp4().set(Opt::ReusePort, true);
        assert_eq!(sock.bind(&format!("127.0.0.1:{port}")), 0);
        assert_eq!(sock.listen(), 0);
        let conflict = sharing_of(
            &mut obs,
            "listen",
            AsRef::<common::SockId>::as_ref(&sock).ino,
        );
        assert_eq!(conflict["verdict"], "shared", "{conflict}");
        let sharing = &conflict["sharing"];
        assert_eq!(sharing["protocol"], "tcp", "{conflict}");
        assert_eq!(sharing["rule"], "reuseport-group", "{conflict}");
        let with = sharing["with"].as_array().unwrap();
        assert_eq!(with.len(), 1, "{conflict}");
        assert_eq!(with[0]["state"], "LISTEN");
        assert_eq!(with[0]["reuseport"], true);
        assert_eq!(with[0]["owners"][0]["pid"], child.id(), "{conflict}");

        // Where the connections land: 64 distinct 4-tuples, hashed over two listeners.
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let conns: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // The handshakes are done (connect returned): every connection is in one of the two
        // accept queues.
        let mut ours = 0;
        // SAFETY: fcntl(2) on our own listener: make accept() return EAGAIN once empty.
        unsafe {
            let flags = libc::fcntl(sock.fd(), libc::F_GETFL);
            assert_eq!(
                libc::fcntl(sock.fd(), libc::F_SETFL, flags | libc::O_NONBLOCK),
                0
            );
        }
        loop {
            // SAFETY: accept4(2) on our own listener, without an address buffer.
            let fd = unsafe {
                libc::accept4(
                    sock.fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                break;
            }
            // SAFETY: our own new descriptor.
            unsafe { libc::close(fd) };
            ours += 1;
        }
        let theirs = count_of(child, out);
        assert_eq!(ours + theirs, conns.len(), "ours {ours}, theirs {theirs}");
        assert!(ours > 0 && theirs > 0, "ours {ours}, theirs {theirs}");
        // The client's own bind (UDP) may follow; nothing else is asserted after this.
        let (_, status, stderr) = obs.stop_unchecked(libc::SIGTERM);
        assert!(status.success(), "{stderr}");
    });
}
