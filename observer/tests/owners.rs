//! The cost-bounded parts of a lookup against the real kernel, as root, each in a private
//! network namespace:
//!
//! * sock_diag asked for one port (the `S_COND` bytecode filter) lists exactly the sockets on
//!   that port — listening, bound-only, UDP — and none of a busy neighbouring port.
//! * A listener's SO_REUSEADDR and SO_REUSEPORT come out right (from the socket iterator) and
//!   its owner is found, pid and fd, while this process holds 5000 unrelated descriptors.

// Only part of the shared harness is used here.
#[allow(unused_imports)]
mod common;

use common::{in_netns, own_description};
use observer::conflict::rules::{Request, TCP_CLOSE, TCP_LISTEN};
use observer::conflict::socktable;
use observer::conflict::{Query, diagnose};
use observer::model::{Owner, Proto};
use observer::netns::Netns;
use socket2::{Domain, Socket, Type};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

fn tcp(addr: &str, reuse: bool) -> Socket {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_reuse_address(reuse).unwrap();
    s.set_reuse_port(reuse).unwrap();
    s.bind(&addr.parse::<SocketAddr>().unwrap().into())
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    s
}

fn udp(addr: &str) -> Socket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
    s.bind(&addr.parse::<SocketAddr>().unwrap().into())
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    s
}

/// (address, port, state) of every socket the dump lists.
fn listed(proto: Proto, port: u16) -> BTreeSet<(IpAddr, u16, u8)> {
    socktable::dump(proto, Some(port))
        .expect("sock_diag dump")
        .into_iter()
        .map(|s| (s.addr, s.port, s.state))
        .collect()
}

#[test]
fn a_port_dump_lists_that_port_only() {
    in_netns("owners-dump", |_| {
        let listener = tcp("127.0.0.1:7100", false);
        listener.listen(8).unwrap();
        let _bound = tcp("127.0.0.2:7100", false);
        // A busy neighbour: a listener with established connections on 7101.
        let other = tcp("127.0.0.1:7101", false);
        other.listen(64).unwrap();
        let mut conns = Vec::new();
        for _ in 0..20 {
            let c = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            c.connect(&"127.0.0.1:7101".parse::<SocketAddr>().unwrap().into())
                .unwrap();
            conns.push((c, other.accept().unwrap().0));
        }
        let _u1 = udp("127.0.0.1:7100");
        let _u2 = udp("127.0.0.1:7101");

        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo2: IpAddr = "127.0.0.2".parse().unwrap();
        let tcp_7100 = listed(Proto::Tcp, 7100);
        // Asking for state bit TCP_BOUND_INACTIVE lists bound-only TCP sockets (6.12+); the
        // kernel reports them in their real state, TCP_CLOSE.
        assert_eq!(
            tcp_7100,
            BTreeSet::from([(lo, 7100, TCP_LISTEN), (lo2, 7100, TCP_CLOSE)])
        );
        assert_eq!(
            listed(Proto::Udp, 7100),
            BTreeSet::from([(lo, 7100, TCP_CLOSE)])
        );
        // The neighbour: its listener and the server side of each connection (the client
        // sides have ephemeral local ports).
        let tcp_7101 = socktable::dump(Proto::Tcp, Some(7101)).unwrap();
        assert_eq!(tcp_7101.len(), 1 + conns.len(), "{tcp_7101:?}");
        assert!(tcp_7101.iter().all(|s| s.port == 7101));
        // The unfiltered dump still lists everything (the port-0 report needs it).
        let all = socktable::dump(Proto::Tcp, None).unwrap();
        assert_eq!(all.len(), 2 + 1 + 2 * conns.len(), "{all:?}");
    });
}

/// Raises this process's open-file soft limit to `n` if it is below.
fn allow_open_files(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim` only.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur < n {
        assert!(
            lim.rlim_max >= n,
            "RLIMIT_NOFILE hard limit {} < {n}",
            lim.rlim_max
        );
        lim.rlim_cur = n;
        // SAFETY: setrlimit reads `lim` only.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    }
}

/// 2500 pipes (5000 descriptors) and `sockets` UDP sockets none of the lookup is about.
fn unrelated(sockets: usize) -> (Vec<OwnedFd>, Vec<Socket>) {
    let mut pipes = Vec::new();
    for _ in 0..2500 {
        let (r, w) = std::io::pipe().expect("pipe");
        pipes.push(OwnedFd::from(r));
        pipes.push(OwnedFd::from(w));
    }
    let socks = (0..sockets)
        .map(|_| Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap())
        .collect();
    (pipes, socks)
}

#[test]
fn holder_options_and_owner_with_many_unrelated_descriptors() {
    allow_open_files(8192);
    in_netns("owners-many-fds", |_| {
        let _noise = unrelated(1000);
        let listener = tcp("127.0.0.1:7200", true);
        listener.listen(8).unwrap();
        let plain = tcp("127.0.0.2:7200", false);
        plain.listen(8).unwrap();
        let _more_noise = unrelated(0);
        for (addr, reuse) in [("127.0.0.1", true), ("127.0.0.2", false)] {
            let query = Query {
                request: Request {
                    proto: Proto::Tcp,
                    addr: addr.parse().unwrap(),
                    port: 7200,
                    reuseaddr: false,
                    reuseport: false,
                    v6only: false,
                    bound_dev_if: 0,
                    uid: 0,
                },
                netns: Netns::Current,
                exclude_inode: None,
                all: false,
            };
            let conflict = diagnose(&query).expect("diagnose");
            assert_eq!(conflict.verdict, "in_use", "{conflict:?}");
            assert!(conflict.notes.is_empty(), "{:?}", conflict.notes);
            assert_eq!(conflict.holders.len(), 1, "{conflict:?}");
            let h = &conflict.holders[0];
            assert_eq!((h.state, h.port), ("LISTEN", 7200));
            assert_eq!(h.addr, addr.parse::<IpAddr>().unwrap());
            assert_eq!((h.reuseaddr, h.reuseport), (Some(reuse), Some(reuse)));
            let fd = if reuse { &listener } else { &plain }.as_raw_fd();
            let (comm, cmdline) = own_description();
            assert_eq!(
                h.owners,
                [Owner {
                    pid: std::process::id(),
                    comm: comm.into(),
                    cmdline: cmdline.into(),
                    fd,
                }]
            );
        }
    });
}

/// The inode of the socket `pid` holds as descriptor `fd` (`socket:[N]`).
fn socket_inode_of(pid: u32, fd: i32) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    let link = link.to_str().unwrap();
    link.strip_prefix("socket:[")
        .and_then(|l| l.strip_suffix(']'))
        .unwrap_or_else(|| panic!("{link}"))
        .parse()
        .unwrap()
}

/// A python3 child that listens on 127.0.0.1:`port` in a network namespace of its own
/// (`unshare -n`), or that waits holding `inherit` as its standard input; it prints `ready
/// NETNS_INODE FD` and waits for a signal. Returns it, its namespace and the socket's fd.
fn waiting_child(port: Option<u16>, inherit: Option<OwnedFd>) -> (std::process::Child, u64, i32) {
    waiting_child_with(port.map(|_| "-n"), port, inherit)
}

/// `waiting_child`, under `unshare FLAG` when given.
fn waiting_child_with(
    unshare: Option<&str>,
    port: Option<u16>,
    inherit: Option<OwnedFd>,
) -> (std::process::Child, u64, i32) {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let code = "import os, signal, socket, sys\n\
                fd = 0\n\
                if len(sys.argv) > 1:\n\
                \x20   s = socket.socket()\n\
                \x20   s.bind(('127.0.0.1', int(sys.argv[1])))\n\
                \x20   s.listen()\n\
                \x20   fd = s.fileno()\n\
                print('ready', os.stat('/proc/self/ns/net').st_ino, fd, flush=True)\n\
                signal.pause()\n";
    let mut cmd = match unshare {
        Some(flag) => {
            let mut c = Command::new("unshare");
            c.args([flag, "python3", "-c", code]);
            c
        }
        None => {
            let mut c = Command::new("python3");
            c.args(["-c", code]);
            c
        }
    };
    cmd.args(port.map(|p| p.to_string()));
    if let Some(fd) = inherit {
        cmd.stdin(Stdio::from(fd));
    }
    let guard = common::no_forks();
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("python3");
    drop(guard);
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let [_, ino, fd] = words[..] else {
        panic!("child said {line:?}");
    };
    (child, ino.parse().unwrap(), fd.parse().unwrap())
}

/// `waiting_child` holding `fd` as its standard input, in a network namespace of its own.
fn waiting_child_in_own_netns(fd: OwnedFd) -> (std::process::Child, u64, i32) {
    waiting_child_with(Some("-n"), None, Some(fd))
}

fn end(mut child: std::process::Child) {
    // SAFETY: kill(2) on our own child, by pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
}

/// The kernel walk (`iter/task_file`) reports the sockets of the namespace and port asked
/// about only, every process holding one (a child sharing the listener is a second owner),
/// and the lookup says nothing of a fallback to `/proc`.
#[test]
fn the_kernel_walk_finds_every_owner_of_the_port_in_that_namespace_only() {
    use observer::conflict::owners::{self, Scope};
    in_netns("owners-walk", |caller| {
        let listener = tcp("127.0.0.1:7300", false);
        listener.listen(8).unwrap();
        let shared = OwnedFd::from(listener.try_clone().unwrap());
        let (sharer, _, _) = waiting_child(None, Some(shared));
        // The same port in another namespace, held by another process.
        let (stranger, stranger_ns, stranger_fd) = waiting_child(Some(7300), None);
        let stranger_ino = socket_inode_of(stranger.id(), stranger_fd);
        let ours = socket_inode_of(std::process::id(), listener.as_raw_fd());
        let here = Scope {
            netns_ino: caller.netns,
            port: 7300,
        };
        let found = owners::find(&BTreeSet::from([ours, stranger_ino]), here);
        assert_eq!(found.fallback, None);
        let pids = |f: &owners::Found, ino: u64| -> Vec<(u32, i32)> {
            f.owners
                .get(&ino)
                .map(|os| os.iter().map(|o| (o.pid, o.fd)).collect())
                .unwrap_or_default()
        };
        let mut want = vec![(std::process::id(), listener.as_raw_fd()), (sharer.id(), 0)];
        want.sort();
        let mut got = pids(&found, ours);
        got.sort();
        assert_eq!(got, want);
        // The stranger's socket is on the port, but not in this namespace.
        assert_eq!(pids(&found, stranger_ino), []);
        let there = Scope {
            netns_ino: stranger_ns,
            port: 7300,
        };
        let found = owners::find(&BTreeSet::from([ours, stranger_ino]), there);
        assert_eq!(pids(&found, stranger_ino), [(stranger.id(), stranger_fd)]);
        assert_eq!(pids(&found, ours), []);
        // Another port of this namespace: nothing.
        let other = Scope {
            netns_ino: caller.netns,
            port: 7301,
        };
        assert!(
            owners::find(&BTreeSet::from([ours]), other)
                .owners
                .is_empty()
        );
        end(sharer);
        end(stranger);
        // A holder in another namespace (the socket passed to it, as systemd passes one to a
        // service with a private network): the walk of this namespace's processes finds the
        // entries here, the file's references say there is one more, and the walk of every
        // process finds it.
        let (exile, exile_ns, _) =
            waiting_child_in_own_netns(OwnedFd::from(listener.try_clone().unwrap()));
        assert_ne!(exile_ns, caller.netns);
        let found = owners::find(&BTreeSet::from([ours]), here);
        assert_eq!(found.fallback, None);
        let mut want = vec![(std::process::id(), listener.as_raw_fd()), (exile.id(), 0)];
        want.sort();
        let mut got = pids(&found, ours);
        got.sort();
        assert_eq!(got, want);
        end(exile);
    });
}
